/* test_model.c - the transformer: finite-difference gradient checks of every tensor (plain
 * Llama, Qwen2 q/k/v biases, Llama attention_bias q/k/v/o biases, llama3 RoPE scaling with an
 * explicit head_dim), padding invariance, KV-cache sampling parity with the full forward for
 * every family, seeded sampling, stop ids, the vocabulary limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "rng.h"
#include "sampler.h"
#include "softmax.h"

static model_config tiny_config(int tie, int kv_heads)
{
    model_config c = {.vocab_size = 11, .dim = 8, .hidden_dim = 12, .n_layers = 2, .n_heads = 2,
                      .n_kv_heads = kv_heads, .max_seq = 16, .tie_embeddings = tie,
                      .rms_eps = 1e-5f, .rope_theta = 10000.0f};
    return c;
}

/* Qwen2: q/k/v biases, GQA (4 query heads on 2 kv heads), tied embeddings. */
static model_config qwen2_config(void)
{
    model_config c = {.vocab_size = 11, .dim = 8, .hidden_dim = 12, .n_layers = 2, .n_heads = 4,
                      .n_kv_heads = 2, .max_seq = 16, .tie_embeddings = 1, .rms_eps = 1e-6f,
                      .rope_theta = 10000.0f, .family = MODEL_FAMILY_QWEN2, .qkv_bias = 1};
    return c;
}

/* Llama 3 style: rope_scaling llama3, head_dim 6 with 3 heads on hidden 8, and attention_bias
 * (q/k/v/o biases). With theta 100 the three frequencies have wavelengths 6.3, 29 and 135;
 * original context 32 with factors 1 and 4 puts them in the three llama3 bands (kept,
 * smoothed, divided by factor). */
static model_config llama3_config(void)
{
    model_config c = {.vocab_size = 11, .dim = 8, .hidden_dim = 12, .n_layers = 2, .n_heads = 3,
                      .n_kv_heads = 1, .max_seq = 16, .tie_embeddings = 0, .rms_eps = 1e-5f,
                      .rope_theta = 100.0f, .head_dim = 6, .qkv_bias = 1, .o_bias = 1,
                      .rope_type = MODEL_ROPE_LLAMA3, .rope_factor = 8.0f,
                      .rope_low_freq_factor = 1.0f, .rope_high_freq_factor = 4.0f,
                      .rope_orig_max_pos = 32};
    return c;
}

/* Random parameters large enough that attention and SwiGLU are far from linear. */
static model *random_model(const model_config *c, uint64_t seed)
{
    model *m = NULL;
    coh_err err;
    int rc = model_create(c, &m, &err);
    if (rc != COH_OK)
        fail_msg("model_create: %s", err.msg);
    rng r;
    rng_init(&r, seed);
    float *p = model_params(m);
    for (int i = 0; i < model_num_tensors(m); i++) {
        const model_tensor *t = model_tensor_at(m, i);
        int bias = strstr(t->name, ".bias") != NULL;
        for (size_t j = 0; j < t->numel; j++)
            p[t->offset + j] = t->ndim == 1 && !bias ? (float)(1.0 + 0.3 * rng_normal(&r))
                                                     : (float)(0.5 * rng_normal(&r));
    }
    return m;
}

static model *tiny_model(int tie, int kv_heads, uint64_t seed)
{
    model_config c = tiny_config(tie, kv_heads);
    return random_model(&c, seed);
}

/* loss = sum over rows and vocab of logits * R, in double */
static double probe_loss(model *m, model_ws *ws, const int *tok, int B, int T, const float *R)
{
    coh_err err;
    assert_int_equal(model_forward(m, ws, tok, B, T, &err), COH_OK);
    const float *lg = model_ws_logits(ws);
    double s = 0.0;
    for (int i = 0; i < B * T * model_get_config(m)->vocab_size; i++)
        s += (double)lg[i] * R[i];
    return s;
}

static void check_model_gradients(model *m);

static void check_all_gradients(int tie, int kv_heads)
{
    check_model_gradients(tiny_model(tie, kv_heads, 7));
}

/* Up to 12 coordinates of every tensor of m (freed here) against central differences. */
static void check_model_gradients(model *m)
{
    const model_config *c = model_get_config(m);
    int B = 2, T = 6, V = c->vocab_size;
    int tok[12] = {1, 3, 4, 5, 9, 10, 1, 7, 7, 2, 0, 6};
    model_ws *ws = NULL;
    coh_err err;
    assert_int_equal(model_ws_create(m, B, T, &ws, &err), COH_OK);
    rng r;
    rng_init(&r, 99);
    float *R = malloc(sizeof(float) * (size_t)B * T * V);
    for (int i = 0; i < B * T * V; i++)
        R[i] = (float)rng_normal(&r);
    size_t n = model_num_params(m);
    float *g = calloc(n, sizeof(float));
    probe_loss(m, ws, tok, B, T, R);
    assert_int_equal(model_backward(m, ws, R, g, &err), COH_OK);

    float *p = model_params(m);
    int checked = 0;
    for (int ti = 0; ti < model_num_tensors(m); ti++) {
        const model_tensor *t = model_tensor_at(m, ti);
        /* up to 12 coordinates of every tensor, spread over it */
        int samples = t->numel < 12 ? (int)t->numel : 12;
        for (int s = 0; s < samples; s++) {
            size_t j = t->offset + (size_t)rng_below(&r, t->numel);
            float keep = p[j];
            float h = 3e-3f; /* small enough for curvature, large enough for float rounding */
            p[j] = keep + h;
            double lp = probe_loss(m, ws, tok, B, T, R);
            p[j] = keep - h;
            double lm = probe_loss(m, ws, tok, B, T, R);
            p[j] = keep;
            double fd = (lp - lm) / (2.0 * (double)h);
            double tol = 2e-3 + 2e-2 * fabs(fd);
            if (fabs(fd - g[j]) > tol)
                fail_msg("%s[%zu]: backward %.6g, finite difference %.6g", t->name,
                         j - t->offset, (double)g[j], fd);
            checked++;
        }
    }
    assert_true(checked > 100);
    free(R);
    free(g);
    model_ws_destroy(ws);
    model_destroy(m);
}

static void test_gradients_untied_gqa(void **state) { (void)state; check_all_gradients(0, 1); }
static void test_gradients_tied_mha(void **state) { (void)state; check_all_gradients(1, 2); }

/* The families' extra tensors are there and their gradients match finite differences. */
static void test_gradients_qwen2_biases(void **state)
{
    (void)state;
    model_config c = qwen2_config();
    model *m = random_model(&c, 21);
    assert_non_null(model_find_tensor(m, "model.layers.1.self_attn.q_proj.bias"));
    assert_non_null(model_find_tensor(m, "model.layers.0.self_attn.k_proj.bias"));
    assert_int_equal(model_find_tensor(m, "model.layers.0.self_attn.v_proj.bias")->numel, 4);
    assert_null(model_find_tensor(m, "model.layers.0.self_attn.o_proj.bias"));
    assert_null(model_find_tensor(m, "lm_head.weight"));
    check_model_gradients(m);
}

static void test_gradients_llama3_rope_head_dim(void **state)
{
    (void)state;
    model_config c = llama3_config();
    model *m = random_model(&c, 23);
    const model_tensor *q = model_find_tensor(m, "model.layers.0.self_attn.q_proj.weight");
    const model_tensor *o = model_find_tensor(m, "model.layers.0.self_attn.o_proj.weight");
    assert_int_equal(q->shape[0], 18); /* 3 heads x head_dim 6, not hidden 8 */
    assert_int_equal(q->shape[1], 8);
    assert_int_equal(o->shape[0], 8);
    assert_int_equal(o->shape[1], 18);
    assert_int_equal(model_find_tensor(m, "model.layers.1.self_attn.o_proj.bias")->numel, 8);
    check_model_gradients(m);
}

/* llama3 scaling changes the logits (it is applied), and leaves position 0 alone. */
static void test_rope_scaling_applied(void **state)
{
    (void)state;
    model_config c = llama3_config(), plain = c;
    plain.rope_type = MODEL_ROPE_DEFAULT;
    model *a = random_model(&c, 29), *b = random_model(&plain, 29);
    int V = c.vocab_size, tok[8] = {1, 4, 2, 9, 7, 3, 3, 5};
    model_ws *wa = NULL, *wb = NULL;
    coh_err err;
    assert_int_equal(model_ws_create(a, 1, 8, &wa, &err), COH_OK);
    assert_int_equal(model_ws_create(b, 1, 8, &wb, &err), COH_OK);
    assert_int_equal(model_forward(a, wa, tok, 1, 8, &err), COH_OK);
    assert_int_equal(model_forward(b, wb, tok, 1, 8, &err), COH_OK);
    const float *la = model_ws_logits(wa), *lb = model_ws_logits(wb);
    for (int v = 0; v < V; v++) /* one position: RoPE is the identity at 0 */
        assert_true(fabsf(la[v] - lb[v]) <= 1e-5f * (1.0f + fabsf(la[v])));
    double diff = 0.0;
    for (int i = V; i < 8 * V; i++)
        diff = fmax(diff, fabs((double)la[i] - lb[i]));
    assert_true(diff > 1e-3);
    model_ws_destroy(wa);
    model_ws_destroy(wb);
    model_destroy(a);
    model_destroy(b);
}

/* Backward accumulates: two backward passes give twice the gradient. */
static void test_backward_accumulates(void **state)
{
    (void)state;
    model *m = tiny_model(0, 2, 3);
    int V = model_get_config(m)->vocab_size, tok[4] = {1, 2, 3, 4};
    model_ws *ws = NULL;
    coh_err err;
    assert_int_equal(model_ws_create(m, 1, 4, &ws, &err), COH_OK);
    float *R = calloc((size_t)4 * V, sizeof(float));
    for (int i = 0; i < 4 * V; i++)
        R[i] = (float)((i % 7) - 3) * 0.1f;
    size_t n = model_num_params(m);
    float *g1 = calloc(n, sizeof(float)), *g2 = calloc(n, sizeof(float));
    probe_loss(m, ws, tok, 1, 4, R);
    model_backward(m, ws, R, g1, &err);
    model_backward(m, ws, R, g2, &err);
    model_backward(m, ws, R, g2, &err);
    for (size_t i = 0; i < n; i++)
        assert_true(fabsf(2.0f * g1[i] - g2[i]) <= 1e-5f * (1.0f + fabsf(g2[i])));
    free(R);
    free(g1);
    free(g2);
    model_ws_destroy(ws);
    model_destroy(m);
}

/* A sequence's logits do not depend on trailing padding or on the other rows. */
static void test_padding_invariance(void **state)
{
    (void)state;
    model *m = tiny_model(0, 1, 5);
    int V = model_get_config(m)->vocab_size;
    model_ws *a = NULL, *b = NULL;
    coh_err err;
    assert_int_equal(model_ws_create(m, 1, 4, &a, &err), COH_OK);
    assert_int_equal(model_ws_create(m, 2, 8, &b, &err), COH_OK);
    int s1[4] = {1, 5, 6, 7};
    int s2[16] = {1, 9, 9, 9, 9, 9, 9, 9, /* */ 1, 5, 6, 7, 0, 0, 0, 0};
    assert_int_equal(model_forward(m, a, s1, 1, 4, &err), COH_OK);
    assert_int_equal(model_forward(m, b, s2, 2, 8, &err), COH_OK);
    const float *la = model_ws_logits(a), *lb = model_ws_logits(b) + (size_t)8 * V;
    for (int i = 0; i < 4 * V; i++)
        assert_true(fabsf(la[i] - lb[i]) <= 1e-5f * (1.0f + fabsf(la[i])));
    model_ws_destroy(a);
    model_ws_destroy(b);
    model_destroy(m);
}

static void test_forward_rejects_bad_input(void **state)
{
    (void)state;
    model *m = tiny_model(0, 1, 5);
    model_ws *ws = NULL;
    coh_err err;
    assert_int_equal(model_ws_create(m, 1, 4, &ws, &err), COH_OK);
    int bad[4] = {1, 2, 11, 3};
    assert_int_equal(model_forward(m, ws, bad, 1, 4, &err), COH_ERANGE);
    assert_non_null(strstr(err.msg, "vocabulary"));
    int neg[4] = {1, -1, 2, 3};
    assert_int_equal(model_forward(m, ws, neg, 1, 4, &err), COH_ERANGE);
    assert_int_equal(model_forward(m, ws, bad, 1, 5, &err), COH_ESHAPE);
    assert_int_equal(model_forward(m, ws, bad, 2, 4, &err), COH_ESHAPE);
    float g[1];
    model_ws *fresh = NULL;
    assert_int_equal(model_ws_create(m, 1, 4, &fresh, &err), COH_OK);
    assert_int_equal(model_backward(m, fresh, NULL, g, &err), COH_ESTATE);
    model_ws_destroy(fresh);
    model_config c = tiny_config(0, 3); /* 2 heads not divisible by 3 kv heads */
    model *m2 = NULL;
    assert_int_not_equal(model_create(&c, &m2, &err), COH_OK);
    assert_null(m2);
    model_ws_destroy(ws);
    model_destroy(m);
}

/* The log-probabilities the sampler records equal those of a full forward over the same
 * tokens (the learner's view), for every row, including GQA and top-p sampling. */
static void check_parity(model *m, float temperature, float top_p, int top_k);

static void check_sampler_parity(int kv_heads, float temperature, float top_p, int top_k)
{
    check_parity(tiny_model(0, kv_heads, 11), temperature, top_p, top_k);
}

/* The sampler's log-probabilities against the full forward on m (freed here). */
static void check_parity(model *m, float temperature, float top_p, int top_k)
{
    /* smaller weights so that the distribution is not degenerate */
    float *p = model_params(m);
    for (size_t i = 0; i < model_num_params(m); i++)
        p[i] *= 0.5f;
    const model_config *c = model_get_config(m);
    int V = c->vocab_size, n = 5, plen = 3, prompt[3] = {1, 4, 8};
    sample_params sp = sample_params_default();
    sp.max_new_tokens = 9;
    sp.temperature = temperature;
    sp.top_p = top_p;
    sp.top_k = top_k;
    sp.eos_id = 2;
    sampler *s = NULL;
    coh_err err;
    assert_int_equal(sampler_create(m, n, 16, &s, &err), COH_OK);
    int tok[5 * 9], len[5];
    float lp[5 * 9], ent[5 * 9];
    rng r;
    rng_init(&r, 1234);
    assert_int_equal(sampler_generate(s, prompt, plen, n, &sp, &r, tok, lp, ent, len, &err), COH_OK);

    model_ws *ws = NULL;
    assert_int_equal(model_ws_create(m, 1, 16, &ws, &err), COH_OK);
    int any_long = 0;
    for (int i = 0; i < n; i++) {
        int seq[16], T = plen + len[i];
        memcpy(seq, prompt, sizeof prompt);
        for (int k = 0; k < len[i]; k++)
            seq[plen + k] = tok[i * 9 + k];
        if (len[i] >= 4)
            any_long = 1;
        for (int k = 0; k < len[i] - 1; k++)
            assert_int_not_equal(tok[i * 9 + k], 2); /* stops at EOS */
        assert_int_equal(model_forward(m, ws, seq, 1, T, &err), COH_OK);
        for (int k = 0; k < len[i]; k++) {
            float full_lp, full_ent;
            sm_logp_entropy(model_ws_logits(ws) + (size_t)(plen + k - 1) * V, V, temperature,
                            seq[plen + k], &full_lp, &full_ent);
            if (fabsf(full_lp - lp[i * 9 + k]) > 2e-5f || fabsf(full_ent - ent[i * 9 + k]) > 2e-5f)
                fail_msg("row %d token %d: sampler logp %.8f full forward %.8f", i, k,
                         (double)lp[i * 9 + k], (double)full_lp);
        }
    }
    assert_true(any_long);
    model_ws_destroy(ws);
    sampler_destroy(s);
    model_destroy(m);
}

static void test_sampler_parity(void **state)
{
    (void)state;
    check_sampler_parity(2, 1.0f, 1.0f, 0);
    check_sampler_parity(1, 0.7f, 1.0f, 0);
    check_sampler_parity(1, 1.3f, 0.9f, 5);
}

/* The KV-cache decoder applies the biases, head_dim and scaled RoPE as the forward does. */
static void test_sampler_parity_families(void **state)
{
    (void)state;
    model_config q = qwen2_config(), l3 = llama3_config();
    check_parity(random_model(&q, 31), 1.0f, 1.0f, 0);
    check_parity(random_model(&l3, 37), 0.8f, 0.95f, 0);
}

/* A row stops at eos_id or at any id of the model's eos_token_id list. */
static void test_sampler_stop_ids(void **state)
{
    (void)state;
    model_config c = tiny_config(0, 1);
    c.n_eos = 3;
    c.eos_ids[0] = 4;
    c.eos_ids[1] = 6;
    c.eos_ids[2] = 4; /* a repeat is kept once */
    model *m = random_model(&c, 41);
    float *p = model_params(m);
    for (size_t i = 0; i < model_num_params(m); i++)
        p[i] *= 0.3f;
    sample_params sp = sample_params_default();
    sp.max_new_tokens = 12;
    sp.eos_id = 9;
    coh_err err;
    assert_int_equal(sample_params_use_eos(&sp, model_get_config(m), &err), COH_OK);
    assert_int_equal(sp.n_stop, 2);
    assert_int_equal(sp.stop_ids[0], 4);
    assert_int_equal(sp.stop_ids[1], 6);
    sampler *s = NULL;
    assert_int_equal(sampler_create(m, 8, 16, &s, &err), COH_OK);
    int prompt[2] = {1, 3}, tok[8 * 12], len[8], ended[11] = {0};
    rng r;
    rng_init(&r, 77);
    for (int round = 0; round < 6; round++) {
        assert_int_equal(sampler_generate(s, prompt, 2, 8, &sp, &r, tok, NULL, NULL, len, &err),
                         COH_OK);
        for (int i = 0; i < 8; i++) {
            for (int k = 0; k + 1 < len[i]; k++) {
                int t = tok[i * 12 + k];
                assert_true(t != 4 && t != 6 && t != 9);
            }
            int last = tok[i * 12 + len[i] - 1];
            if (len[i] < 12) {
                assert_true(last == 4 || last == 6 || last == 9);
                ended[last]++;
            }
        }
    }
    assert_true(ended[4] > 0 && ended[6] > 0 && ended[9] > 0); /* each one stopped a row */
    /* a list longer than the room is refused, leaving the parameters unchanged */
    model_config big = c;
    big.n_eos = MODEL_MAX_EOS;
    for (int i = 0; i < MODEL_MAX_EOS; i++)
        big.eos_ids[i] = i;
    sp.n_stop = SAMPLE_MAX_STOP - 1;
    sample_params keep = sp;
    assert_int_equal(sample_params_use_eos(&sp, &big, &err), COH_ERANGE);
    assert_memory_equal(&keep, &sp, sizeof sp);
    sp.n_stop = SAMPLE_MAX_STOP + 1;
    assert_int_equal(sampler_generate(s, prompt, 2, 1, &sp, &r, tok, NULL, NULL, len, &err),
                     COH_EINVAL);
    assert_non_null(strstr(err.msg, "n_stop"));
    sampler_destroy(s);
    model_destroy(m);
}

/* Rows of the embedding beyond the tokenizer's ids are never sampled, with or without top-k /
 * top-p; the recorded log-probability stays that of the full distribution. */
static void test_sampler_vocab_limit(void **state)
{
    (void)state;
    model *m = tiny_model(0, 2, 43);
    const model_config *c = model_get_config(m);
    int V = c->vocab_size, limit = 5;
    /* make the ids beyond the limit the likely ones: without the limit they win */
    float *p = model_params(m);
    const model_tensor *head = model_find_tensor(m, "lm_head.weight");
    for (int v = 0; v < V; v++)
        for (int d = 0; d < c->dim; d++)
            p[head->offset + (size_t)v * c->dim + d] *= v >= limit ? 1.0f : 0.1f;
    sampler *s = NULL;
    coh_err err;
    assert_int_equal(sampler_create(m, 8, 16, &s, &err), COH_OK);
    model_ws *ws = NULL;
    assert_int_equal(model_ws_create(m, 1, 16, &ws, &err), COH_OK);
    sample_params sp = sample_params_default();
    sp.max_new_tokens = 10;
    sp.eos_id = -1;
    int prompt[2] = {1, 3}, tok[80], len[8], beyond = 0;
    float lp[80];
    rng r;
    rng_init(&r, 5);
    assert_int_equal(sampler_generate(s, prompt, 2, 8, &sp, &r, tok, lp, NULL, len, &err),
                     COH_OK);
    for (int i = 0; i < 80; i++)
        beyond += tok[i] >= limit;
    assert_true(beyond > 20); /* without a limit these ids are sampled often */
    struct { int top_k; float top_p; } modes[] = {{0, 1.0f}, {3, 1.0f}, {0, 0.8f}, {1, 1.0f}};
    for (size_t mo = 0; mo < sizeof modes / sizeof modes[0]; mo++) {
        sp.vocab_limit = limit;
        sp.top_k = modes[mo].top_k;
        sp.top_p = modes[mo].top_p;
        assert_int_equal(sampler_generate(s, prompt, 2, 8, &sp, &r, tok, lp, NULL, len, &err),
                         COH_OK);
        for (int i = 0; i < 8; i++) {
            int seq[12] = {1, 3};
            for (int k = 0; k < len[i]; k++) {
                if (tok[i * 10 + k] >= limit)
                    fail_msg("mode %zu row %d: sampled id %d beyond vocab_limit %d", mo, i,
                             tok[i * 10 + k], limit);
                seq[2 + k] = tok[i * 10 + k];
            }
            assert_int_equal(model_forward(m, ws, seq, 1, 2 + len[i], &err), COH_OK);
            for (int k = 0; k < len[i]; k++) {
                float full;
                sm_logp_entropy(model_ws_logits(ws) + (size_t)(1 + k) * V, V, 1.0f, seq[2 + k],
                                &full, NULL);
                assert_true(fabsf(full - lp[i * 10 + k]) <= 2e-5f);
            }
        }
    }
    sp.vocab_limit = V + 1;
    assert_int_equal(sampler_generate(s, prompt, 2, 1, &sp, &r, tok, NULL, NULL, len, &err),
                     COH_EINVAL);
    assert_non_null(strstr(err.msg, "vocab_limit"));
    model_ws_destroy(ws);
    sampler_destroy(s);
    model_destroy(m);
}

static void test_sampler_seeded(void **state)
{
    (void)state;
    model *m = tiny_model(1, 1, 13);
    float *p = model_params(m);
    for (size_t i = 0; i < model_num_params(m); i++)
        p[i] *= 0.3f;
    sampler *s = NULL;
    coh_err err;
    assert_int_equal(sampler_create(m, 4, 16, &s, &err), COH_OK);
    sample_params sp = sample_params_default();
    sp.max_new_tokens = 10;
    sp.eos_id = -1;
    int prompt[2] = {1, 3};
    int t1[40], t2[40], t3[40], l1[4], l2[4], l3[4];
    float p1[40], p2[40];
    rng r;
    rng_init(&r, 42);
    assert_int_equal(sampler_generate(s, prompt, 2, 4, &sp, &r, t1, p1, NULL, l1, &err), COH_OK);
    rng_init(&r, 42);
    assert_int_equal(sampler_generate(s, prompt, 2, 4, &sp, &r, t2, p2, NULL, l2, &err), COH_OK);
    rng_init(&r, 43);
    assert_int_equal(sampler_generate(s, prompt, 2, 4, &sp, &r, t3, NULL, NULL, l3, &err), COH_OK);
    assert_memory_equal(t1, t2, sizeof t1);
    assert_memory_equal(p1, p2, sizeof p1);
    assert_memory_equal(l1, l2, sizeof l1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(l1[i], 10);
    assert_memory_not_equal(t1, t3, sizeof t1);
    /* rows of one call differ from each other (independent draws) */
    assert_memory_not_equal(t1, t1 + 10, 10 * sizeof(int));
    /* bad requests */
    assert_int_equal(sampler_generate(s, prompt, 2, 5, &sp, &r, t1, NULL, NULL, l1, &err), COH_EINVAL);
    sp.max_new_tokens = 15;
    assert_int_equal(sampler_generate(s, prompt, 2, 1, &sp, &r, t1, NULL, NULL, l1, &err), COH_ERANGE);
    sp.max_new_tokens = 4;
    sp.temperature = 0.0f;
    assert_int_equal(sampler_generate(s, prompt, 2, 1, &sp, &r, t1, NULL, NULL, l1, &err), COH_EINVAL);
    sampler_destroy(s);
    model_destroy(m);
}

/* top-k = 1 is greedy: always the argmax of the full forward. */
static void test_sampler_greedy(void **state)
{
    (void)state;
    model *m = tiny_model(0, 2, 17);
    int V = model_get_config(m)->vocab_size;
    sampler *s = NULL;
    coh_err err;
    assert_int_equal(sampler_create(m, 2, 16, &s, &err), COH_OK);
    sample_params sp = sample_params_default();
    sp.top_k = 1;
    sp.max_new_tokens = 6;
    sp.eos_id = -1;
    int prompt[1] = {1}, tok[12], len[2];
    rng r;
    rng_init(&r, 5);
    assert_int_equal(sampler_generate(s, prompt, 1, 2, &sp, &r, tok, NULL, NULL, len, &err), COH_OK);
    assert_memory_equal(tok, tok + 6, 6 * sizeof(int));
    model_ws *ws = NULL;
    assert_int_equal(model_ws_create(m, 1, 7, &ws, &err), COH_OK);
    int seq[7] = {1};
    memcpy(seq + 1, tok, 6 * sizeof(int));
    assert_int_equal(model_forward(m, ws, seq, 1, 7, &err), COH_OK);
    for (int k = 0; k < 6; k++) {
        const float *lg = model_ws_logits(ws) + (size_t)k * V;
        int best = 0;
        for (int v = 1; v < V; v++)
            if (lg[v] > lg[best])
                best = v;
        assert_int_equal(seq[k + 1], best);
    }
    model_ws_destroy(ws);
    sampler_destroy(s);
    model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients_untied_gqa),
        cmocka_unit_test(test_gradients_tied_mha),
        cmocka_unit_test(test_gradients_qwen2_biases),
        cmocka_unit_test(test_gradients_llama3_rope_head_dim),
        cmocka_unit_test(test_rope_scaling_applied),
        cmocka_unit_test(test_backward_accumulates),
        cmocka_unit_test(test_padding_invariance),
        cmocka_unit_test(test_forward_rejects_bad_input),
        cmocka_unit_test(test_sampler_parity),
        cmocka_unit_test(test_sampler_parity_families),
        cmocka_unit_test(test_sampler_stop_ids),
        cmocka_unit_test(test_sampler_vocab_limit),
        cmocka_unit_test(test_sampler_seeded),
        cmocka_unit_test(test_sampler_greedy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
