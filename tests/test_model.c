/* test_model.c - the transformer: finite-difference gradient checks of every tensor,
 * padding invariance, KV-cache sampling parity with the full forward, seeded sampling. */
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

/* Random parameters large enough that attention and SwiGLU are far from linear. */
static model *tiny_model(int tie, int kv_heads, uint64_t seed)
{
    model_config c = tiny_config(tie, kv_heads);
    model *m = NULL;
    coh_err err;
    assert_int_equal(model_create(&c, &m, &err), COH_OK);
    rng r;
    rng_init(&r, seed);
    float *p = model_params(m);
    for (int i = 0; i < model_num_tensors(m); i++) {
        const model_tensor *t = model_tensor_at(m, i);
        for (size_t j = 0; j < t->numel; j++)
            p[t->offset + j] = t->ndim == 1 ? (float)(1.0 + 0.3 * rng_normal(&r))
                                            : (float)(0.5 * rng_normal(&r));
    }
    return m;
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

static void check_all_gradients(int tie, int kv_heads)
{
    model *m = tiny_model(tie, kv_heads, 7);
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
static void check_sampler_parity(int kv_heads, float temperature, float top_p, int top_k)
{
    model *m = tiny_model(0, kv_heads, 11);
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
        cmocka_unit_test(test_backward_accumulates),
        cmocka_unit_test(test_padding_invariance),
        cmocka_unit_test(test_forward_rejects_bad_input),
        cmocka_unit_test(test_sampler_parity),
        cmocka_unit_test(test_sampler_seeded),
        cmocka_unit_test(test_sampler_greedy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
