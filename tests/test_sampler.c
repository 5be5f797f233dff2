/* test_sampler.c - the sampler's own forward and softmax (common/sampler.c, common/gemv.c)
 * against the learner's view (model_forward + sm_logp_entropy) where test_model.c's tiny
 * models do not reach: a vocabulary of several softmax blocks with a vocab_limit, prompts
 * longer than one prefill chunk, every kernel variant of this CPU; sampler_generate_multi
 * (several prompts in one batch); reproducibility; non-finite weights. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemv.h"
#include "model.h"
#include "rng.h"
#include "sampler.h"
#include "softmax.h"

/* GQA (6 heads on 2), head_dim 8, vocabulary 700 (three blocks of the draw). */
static model *mid_model(uint64_t seed, int vocab, int family)
{
    model_config c = {.vocab_size = vocab, .dim = 48, .hidden_dim = 72, .n_layers = 2,
                      .n_heads = 6, .n_kv_heads = 2, .max_seq = 160, .tie_embeddings = 1,
                      .rms_eps = 1e-5f, .rope_theta = 10000.0f, .family = family,
                      .qkv_bias = family == MODEL_FAMILY_QWEN2};
    model *m = NULL;
    coh_err err;
    if (model_create(&c, &m, &err))
        fail_msg("model_create: %s", err.msg);
    model_init_random(m, seed);
    /* larger than the 0.02 init so that the distributions are far from uniform */
    float *p = model_params(m);
    for (size_t i = 0; i < model_num_params(m); i++)
        p[i] *= 12.0f;
    const model_tensor *t = model_find_tensor(m, "model.norm.weight");
    for (int i = 0; i < t->shape[0]; i++)
        p[t->offset + i] = 1.0f;
    for (int l = 0; l < c.n_layers; l++) {
        char name[MODEL_NAME_MAX];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        t = model_find_tensor(m, name);
        for (int i = 0; i < t->shape[0]; i++)
            p[t->offset + i] = 1.0f;
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        t = model_find_tensor(m, name);
        for (int i = 0; i < t->shape[0]; i++)
            p[t->offset + i] = 1.0f;
    }
    return m;
}

/* Every row's recorded log-probabilities (and entropies, when given) against a full forward
 * of prompt + completion. Returns the largest |diff| of the log-probabilities. */
static double check_rows(model *m, const int *prompt, int plen, int n, const int *tok,
                         const float *lp, const float *ent, const int *len, int M,
                         const sample_params *sp)
{
    const model_config *c = model_get_config(m);
    int V = c->vocab_size;
    model_ws *ws = NULL;
    coh_err err;
    assert_int_equal(model_ws_create(m, 1, plen + M, &ws, &err), COH_OK);
    int *seq = malloc(sizeof(int) * (size_t)(plen + M));
    double worst = 0.0;
    for (int i = 0; i < n; i++) {
        assert_true(len[i] >= 1 && len[i] <= M);
        memcpy(seq, prompt, sizeof(int) * (size_t)plen);
        for (int k = 0; k < len[i]; k++) {
            seq[plen + k] = tok[i * M + k];
            if (sp->vocab_limit > 0)
                assert_true(tok[i * M + k] < sp->vocab_limit);
        }
        assert_int_equal(model_forward(m, ws, seq, 1, plen + len[i], &err), COH_OK);
        for (int k = 0; k < len[i]; k++) {
            float full_lp, full_ent;
            sm_logp_entropy(model_ws_logits(ws) + (size_t)(plen + k - 1) * V, V,
                            sp->temperature, seq[plen + k], &full_lp, &full_ent);
            double d = fabs((double)full_lp - lp[i * M + k]);
            worst = d > worst ? d : worst;
            if (d > 2e-5 || (ent && fabsf(full_ent - ent[i * M + k]) > 2e-5f))
                fail_msg("%s row %d token %d: sampler logp %.8f entropy %.8f, full forward "
                         "%.8f %.8f",
                         gv_isa_name(), i, k, (double)lp[i * M + k],
                         ent ? (double)ent[i * M + k] : 0.0, (double)full_lp,
                         (double)full_ent);
        }
    }
    free(seq);
    model_ws_destroy(ws);
    return worst;
}

static void run_parity(model *m, int plen, int n, float temperature, int vocab_limit, int top_k)
{
    int M = 12, V = model_get_config(m)->vocab_size;
    int *prompt = malloc(sizeof(int) * (size_t)plen);
    for (int i = 0; i < plen; i++)
        prompt[i] = (i * 37 + 5) % V;
    sample_params sp = sample_params_default();
    sp.max_new_tokens = M;
    sp.temperature = temperature;
    sp.vocab_limit = vocab_limit;
    sp.top_k = top_k;
    sp.eos_id = -1;
    sampler *s = NULL;
    coh_err err;
    assert_int_equal(sampler_create(m, n, plen + M, &s, &err), COH_OK);
    int *tok = malloc(sizeof(int) * (size_t)n * M), *len = malloc(sizeof(int) * (size_t)n);
    float *lp = malloc(sizeof(float) * (size_t)n * M), *ent = malloc(sizeof(float) * (size_t)n * M);
    rng r;
    rng_init(&r, 99);
    if (sampler_generate(s, prompt, plen, n, &sp, &r, tok, lp, ent, len, &err))
        fail_msg("sampler_generate: %s", err.msg);
    double worst = check_rows(m, prompt, plen, n, tok, lp, ent, len, M, &sp);
    printf("%s: prompt %d, %d rows, T %.1f, vocab_limit %d, top_k %d: largest |logp diff| "
           "%.2g\n",
           gv_isa_name(), plen, n, (double)temperature, vocab_limit, top_k, worst);
    /* the distributions are not degenerate: the rows differ */
    if (n > 1)
        assert_memory_not_equal(tok, tok + M, sizeof(int) * (size_t)M);
    free(prompt);
    free(tok);
    free(len);
    free(lp);
    free(ent);
    sampler_destroy(s);
}

/* Every kernel variant: a vocabulary of three draw blocks cut by vocab_limit inside the
 * second one; prompts inside one prefill chunk, of one whole chunk (through sgemm) and of
 * two chunks. */
static void test_parity_variants(void **state)
{
    (void)state;
    static const gv_isa isas[] = {GV_ISA_GENERIC, GV_ISA_AVX2, GV_ISA_AVX512};
    for (size_t v = 0; v < sizeof isas / sizeof *isas; v++) {
        if (gv_select(isas[v]) != 0)
            continue;
        model *m = mid_model(3, 700, MODEL_FAMILY_LLAMA);
        run_parity(m, 5, 4, 1.0f, 0, 0);
        run_parity(m, 3, 3, 0.7f, 300, 0);
        run_parity(m, 64, 2, 1.3f, 0, 0);
        run_parity(m, 100, 3, 1.0f, 650, 40);
        model_destroy(m);
        m = mid_model(4, 130, MODEL_FAMILY_QWEN2);
        run_parity(m, 70, 5, 0.9f, 0, 0);
        model_destroy(m);
    }
    /* back to the best variant for the tests below */
    if (gv_select(GV_ISA_AVX512) != 0 && gv_select(GV_ISA_AVX2) != 0)
        assert_int_equal(gv_select(GV_ISA_GENERIC), 0);
}

/* Several prompts in one batch: each row matches the full forward of its own prompt; one
 * prompt is exactly sampler_generate; the same seed gives the same samples. */
static void test_multi(void **state)
{
    (void)state;
    model *m = mid_model(5, 300, MODEL_FAMILY_LLAMA);
    int M = 10, n = 3, np = 3;
    int p0[4] = {1, 2, 3, 4}, p1[1] = {7}, p2[70];
    for (int i = 0; i < 70; i++)
        p2[i] = (i * 11 + 3) % 300;
    const int *prompts[3] = {p0, p1, p2};
    int lens[3] = {4, 1, 70};
    sample_params sp = sample_params_default();
    sp.max_new_tokens = M;
    sp.eos_id = 9;
    sampler *s = NULL;
    coh_err err;
    assert_int_equal(sampler_create(m, 9, 80, &s, &err), COH_OK);
    int tok[9 * 10], len[9], tok2[9 * 10], len2[9];
    float lp[9 * 10], ent[9 * 10], lp2[9 * 10];
    rng r;
    rng_init(&r, 7);
    assert_int_equal(sampler_generate_multi(s, prompts, lens, np, n, &sp, &r, tok, lp, ent, len,
                                            &err),
                     COH_OK);
    for (int j = 0; j < np; j++)
        check_rows(m, prompts[j], lens[j], n, tok + j * n * M, lp + j * n * M,
                   ent + j * n * M, len + j * n, M, &sp);
    for (int i = 0; i < np * n; i++)
        for (int k = 0; k < len[i] - 1; k++)
            assert_int_not_equal(tok[i * M + k], 9); /* a row ends at its EOS */
    rng_init(&r, 7);
    assert_int_equal(sampler_generate_multi(s, prompts, lens, np, n, &sp, &r, tok2, lp2, NULL,
                                            len2, &err),
                     COH_OK);
    assert_memory_equal(len, len2, sizeof len);
    for (int i = 0; i < np * n; i++) {
        assert_memory_equal(tok + i * M, tok2 + i * M, sizeof(int) * (size_t)len[i]);
        assert_memory_equal(lp + i * M, lp2 + i * M, sizeof(float) * (size_t)len[i]);
    }
    /* one prompt: the same draws as sampler_generate */
    rng_init(&r, 8);
    assert_int_equal(sampler_generate_multi(s, prompts + 2, lens + 2, 1, 4, &sp, &r, tok, lp,
                                            NULL, len, &err),
                     COH_OK);
    rng_init(&r, 8);
    assert_int_equal(sampler_generate(s, p2, 70, 4, &sp, &r, tok2, lp2, NULL, len2, &err),
                     COH_OK);
    assert_memory_equal(len, len2, 4 * sizeof(int));
    for (int i = 0; i < 4; i++)
        assert_memory_equal(tok + i * M, tok2 + i * M, sizeof(int) * (size_t)len[i]);
    /* bad requests */
    assert_int_equal(sampler_generate_multi(s, prompts, lens, 3, 4, &sp, &r, tok, lp, NULL, len,
                                            &err),
                     COH_EINVAL);
    assert_non_null(strstr(err.msg, "9 rows"));
    int bad_lens[3] = {4, 0, 70};
    assert_int_equal(sampler_generate_multi(s, prompts, bad_lens, 3, 1, &sp, &r, tok, lp, NULL,
                                            len, &err),
                     COH_EINVAL);
    assert_non_null(strstr(err.msg, "prompt 1 of 3"));
    int bad[2] = {1, 300};
    const int *bp[2] = {p0, bad};
    int bl[2] = {4, 2};
    assert_int_equal(sampler_generate_multi(s, bp, bl, 2, 2, &sp, &r, tok, lp, NULL, len, &err),
                     COH_ERANGE);
    assert_non_null(strstr(err.msg, "outside the vocabulary"));
    sampler_destroy(s);
    model_destroy(m);
}

/* Top-k selects without sorting the vocabulary: every draw is among the k largest logits of
 * the full forward (k = 1: the argmax), within vocab_limit. */
static void test_top_k(void **state)
{
    (void)state;
    model *m = mid_model(8, 700, MODEL_FAMILY_LLAMA);
    int V = 700, M = 8, n = 4, plen = 3, prompt[3] = {5, 6, 7};
    sampler *s = NULL;
    coh_err err;
    assert_int_equal(sampler_create(m, n, plen + M, &s, &err), COH_OK);
    model_ws *ws = NULL;
    assert_int_equal(model_ws_create(m, 1, plen + M, &ws, &err), COH_OK);
    static const int ks[] = {1, 3, 50};
    static const int limits[] = {0, 500};
    for (size_t a = 0; a < sizeof ks / sizeof *ks; a++)
        for (size_t b = 0; b < sizeof limits / sizeof *limits; b++) {
            sample_params sp = sample_params_default();
            sp.max_new_tokens = M;
            sp.eos_id = -1;
            sp.top_k = ks[a];
            sp.vocab_limit = limits[b];
            int lim = limits[b] ? limits[b] : V;
            int tok[4 * 8], len[4];
            rng r;
            rng_init(&r, 31 + a);
            assert_int_equal(sampler_generate(s, prompt, plen, n, &sp, &r, tok, NULL, NULL, len,
                                              &err),
                             COH_OK);
            for (int i = 0; i < n; i++) {
                int seq[11];
                memcpy(seq, prompt, sizeof prompt);
                memcpy(seq + plen, tok + i * M, sizeof(int) * (size_t)M);
                assert_int_equal(model_forward(m, ws, seq, 1, plen + M, &err), COH_OK);
                for (int k = 0; k < M; k++) {
                    const float *lg = model_ws_logits(ws) + (size_t)(plen + k - 1) * V;
                    int t = seq[plen + k], above = 0;
                    assert_true(t >= 0 && t < lim);
                    for (int j = 0; j < lim; j++)
                        above += lg[j] > lg[t] + 1e-4f; /* clearly larger than the draw's */
                    if (above >= ks[a])
                        fail_msg("top_k %d: row %d token %d = %d has %d larger logits", ks[a],
                                 i, k, t, above);
                }
            }
        }
    model_ws_destroy(ws);
    sampler_destroy(s);
    model_destroy(m);
}

/* Weights that overflow give a clear error, not NaN log-probabilities. */
static void test_nonfinite(void **state)
{
    (void)state;
    model *m = mid_model(6, 50, MODEL_FAMILY_LLAMA);
    const model_tensor *t = model_find_tensor(m, "model.norm.weight");
    model_params(m)[t->offset + 3] = NAN;
    sampler *s = NULL;
    coh_err err;
    assert_int_equal(sampler_create(m, 2, 16, &s, &err), COH_OK);
    sample_params sp = sample_params_default();
    sp.max_new_tokens = 4;
    int prompt[2] = {1, 2}, tok[8], len[2];
    float lp[8];
    rng r;
    rng_init(&r, 1);
    assert_int_equal(sampler_generate(s, prompt, 2, 2, &sp, &r, tok, lp, NULL, len, &err),
                     COH_ENONFINITE);
    assert_non_null(strstr(err.msg, "not finite"));
    sampler_destroy(s);
    model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity_variants),
        cmocka_unit_test(test_multi),
        cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_nonfinite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
