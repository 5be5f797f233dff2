/* test_grpo_grad.c - the whole learning rule through the whole model: the gradient of the
 * aggregated GRPO-family loss with respect to every parameter tensor, checked against
 * central finite differences, for every estimator x every aggregation, with beta > 0,
 * entropy on, and tokens inside and outside the clip range; SFT too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loss.h"
#include "model.h"
#include "rng.h"
#include "softmax.h"

#define B 6
#define T 7
#define PLEN 3

typedef struct fixture {
    model *m, *ref;
    model_ws *ws;
    int tokens[B * T];
    int len[B];
    float beh[B][T], reflp[B][T];
    float adv[B * T];
    int use[B];
    loss_seq seqs[B];
} fixture;

static const float ratios[] = {0.5f, 1.0f, 1.1f, 1.6f, 0.9f, 1.35f};

static void logp_of(model *m, model_ws *ws, fixture *f, float temp, float out[B][T])
{
    coh_err err;
    assert_int_equal(model_forward(m, ws, f->tokens, B, T, &err), COH_OK);
    int V = model_get_config(m)->vocab_size;
    for (int b = 0; b < B; b++)
        for (int k = 0; k < f->len[b] - PLEN; k++) {
            int pos = PLEN + k;
            sm_logp_entropy(model_ws_logits(ws) + ((size_t)b * T + pos - 1) * V, V, temp,
                            f->tokens[b * T + pos], &out[b][k], NULL);
        }
}

static fixture *make_fixture(float temp)
{
    fixture *f = calloc(1, sizeof *f);
    model_config c = {.vocab_size = 9, .dim = 8, .hidden_dim = 12, .n_layers = 1, .n_heads = 2,
                      .n_kv_heads = 1, .max_seq = 16, .tie_embeddings = 0, .rms_eps = 1e-5f,
                      .rope_theta = 10000.0f};
    coh_err err;
    assert_int_equal(model_create(&c, &f->m, &err), COH_OK);
    rng r;
    rng_init(&r, 21);
    float *p = model_params(f->m);
    for (size_t i = 0; i < model_num_params(f->m); i++)
        p[i] = (float)(0.4 * rng_normal(&r));
    for (int i = 0; i < model_num_tensors(f->m); i++) {
        const model_tensor *t = model_tensor_at(f->m, i);
        if (t->ndim == 1)
            for (size_t j = 0; j < t->numel; j++)
                p[t->offset + j] = 1.0f + 0.2f * (float)rng_normal(&r);
    }
    assert_int_equal(model_clone(f->m, &f->ref, &err), COH_OK);
    float *q = model_params(f->ref);
    for (size_t i = 0; i < model_num_params(f->ref); i++)
        q[i] += (float)(0.1 * rng_normal(&r));
    assert_int_equal(model_ws_create(f->m, B, T, &f->ws, &err), COH_OK);
    for (int b = 0; b < B; b++) {
        f->len[b] = PLEN + 2 + b % 3; /* 5..7 tokens: different completion lengths */
        for (int t = 0; t < T; t++)
            f->tokens[b * T + t] = t < f->len[b] ? (t == 0 ? 1 : 2 + (int)rng_below(&r, 7)) : 0;
    }
    float cur[B][T];
    logp_of(f->m, f->ws, f, temp, cur);
    logp_of(f->ref, f->ws, f, temp, f->reflp);
    for (int b = 0; b < B; b++)
        for (int k = 0; k < f->len[b] - PLEN; k++)
            /* behaviour log-prob chosen so that r = exp(logp - beh) takes the listed ratios */
            f->beh[b][k] = cur[b][k] - logf(ratios[(b + k) % 6]);
    static const double rewards[B] = {1.0, 0.0, 0.5, 0.0, 1.0, 1.0};
    for (int b = 0; b < B; b++) {
        f->seqs[b] = (loss_seq){.tokens = f->tokens + b * T, .group = b / 3, .prompt_len = PLEN,
                                .len = f->len[b], .reward = rewards[b],
                                .behaviour_logp = f->beh[b], .ref_logp = f->reflp[b]};
    }
    return f;
}

static void free_fixture(fixture *f)
{
    model_ws_destroy(f->ws);
    model_destroy(f->m);
    model_destroy(f->ref);
    free(f);
}

static double loss_at(fixture *f, const loss_config *lc, loss_stats *st)
{
    coh_err err;
    assert_int_equal(model_forward(f->m, f->ws, f->tokens, B, T, &err), COH_OK);
    if (loss_compute(lc, f->seqs, B, T, f->adv, f->use, model_ws_logits(f->ws),
                     model_get_config(f->m)->vocab_size, model_ws_dlogits(f->ws), st, &err))
        fail_msg("loss_compute: %s", err.msg);
    return st->loss;
}

static void check(loss_mode mode, loss_estimator est, loss_aggregation agg)
{
    loss_config lc = loss_config_default();
    lc.mode = mode;
    lc.estimator = est;
    lc.aggregation = agg;
    lc.beta = 0.2f;
    lc.entropy_coef = 0.05f;
    lc.temperature = 0.8f;
    lc.max_new_tokens = 5;
    fixture *f = make_fixture(lc.temperature);
    coh_err err;
    loss_adv_stats as;
    if (loss_advantages(&lc, f->seqs, B, T, f->adv, f->use, &as, &err))
        fail_msg("loss_advantages: %s", err.msg);
    loss_stats st;
    loss_at(f, &lc, &st);
    if (mode == LOSS_RL) {
        assert_true(st.clip_frac > 0.1 && st.clip_frac < 0.9); /* both sides of the clip */
        if (est != EST_REINFORCE_PP)
            assert_true(st.kl > 0.0);
    }
    size_t n = model_num_params(f->m);
    float *g = calloc(n, sizeof(float));
    assert_int_equal(model_backward(f->m, f->ws, model_ws_dlogits(f->ws), g, &err), COH_OK);
    float *p = model_params(f->m);
    rng r;
    rng_init(&r, 77);
    double worst = 0;
    for (int ti = 0; ti < model_num_tensors(f->m); ti++) {
        const model_tensor *t = model_tensor_at(f->m, ti);
        for (int s = 0; s < 6; s++) {
            size_t j = t->offset + (size_t)rng_below(&r, t->numel);
            float keep = p[j], h = 3e-3f;
            p[j] = keep + h;
            double lp = loss_at(f, &lc, &st);
            p[j] = keep - h;
            double lm = loss_at(f, &lc, &st);
            p[j] = keep;
            double fd = (lp - lm) / (2.0 * (double)h);
            double diff = fabs(fd - g[j]);
            if (diff > worst)
                worst = diff;
            if (diff > 1e-4 + 3e-2 * fabs(fd))
                fail_msg("%s %s/%s: %s[%zu] backward %.7g, finite difference %.7g",
                         loss_mode_name(mode), loss_estimator_name(est),
                         loss_aggregation_name(agg), t->name, j - t->offset, (double)g[j], fd);
        }
    }
    free(g);
    free_fixture(f);
}

static void test_every_estimator_and_aggregation(void **state)
{
    (void)state;
    const loss_estimator ests[] = {EST_GRPO, EST_DRGRPO, EST_RLOO, EST_REINFORCE,
                                   EST_REINFORCE_PP};
    const loss_aggregation aggs[] = {AGG_TOKEN_MEAN, AGG_SEQ_MEAN_TOKEN_MEAN, AGG_CONSTANT};
    for (size_t e = 0; e < sizeof ests / sizeof *ests; e++)
        for (size_t a = 0; a < sizeof aggs / sizeof *aggs; a++)
            check(LOSS_RL, ests[e], aggs[a]);
}

static void test_sft(void **state)
{
    (void)state;
    check(LOSS_SFT, EST_GRPO, AGG_TOKEN_MEAN);
    check(LOSS_SFT, EST_GRPO, AGG_SEQ_MEAN_TOKEN_MEAN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_estimator_and_aggregation),
        cmocka_unit_test(test_sft),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
