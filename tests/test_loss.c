/* test_loss.c - advantages, loss values and the exact gradient of learner/loss.c.
 *
 * Advantages and single-token losses are checked against values worked out by hand; the
 * batch loss of every estimator x aggregation against an independent per-token evaluation
 * written here; and its gradient w.r.t. the logits against double-precision central
 * differences, with tokens inside and outside the clip range.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loss.h"
#include "rng.h"
#include "softmax.h"

#define NEAR(a, b, tol) assert_true(fabs((double)(a) - (double)(b)) <= (tol))

/* ---- names ---- */

static void test_names(void **state)
{
    (void)state;
    coh_err err;
    loss_estimator e;
    loss_aggregation a;
    loss_mode m;
    for (int i = EST_GRPO; i <= EST_REINFORCE_PP; i++) {
        assert_int_equal(loss_parse_estimator(loss_estimator_name((loss_estimator)i), &e, &err),
                         COH_OK);
        assert_int_equal(e, i);
    }
    for (int i = AGG_TOKEN_MEAN; i <= AGG_CONSTANT; i++) {
        assert_int_equal(
            loss_parse_aggregation(loss_aggregation_name((loss_aggregation)i), &a, &err), COH_OK);
        assert_int_equal(a, i);
    }
    assert_int_equal(loss_parse_mode("sft", &m, &err), COH_OK);
    assert_int_equal(m, LOSS_SFT);
    assert_string_equal(loss_estimator_name(EST_REINFORCE_PP), "reinforce_pp");
    assert_string_equal(loss_aggregation_name(AGG_SEQ_MEAN_TOKEN_MEAN), "seq_mean_token_mean");
    assert_int_equal(loss_parse_estimator("ppo", &e, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "rloo"));
    assert_int_equal(loss_parse_aggregation("sum", &a, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "token_mean"));
    assert_int_equal(loss_parse_mode(NULL, &m, &err), COH_EINVAL);

    loss_config c = loss_config_default();
    assert_int_equal(c.mode, LOSS_RL);
    assert_int_equal(c.estimator, EST_GRPO);
    assert_int_equal(c.aggregation, AGG_TOKEN_MEAN);
    NEAR(c.eps_low, 0.2, 1e-7);
    NEAR(c.eps_high, 0.2, 1e-7);
    assert_true(c.beta == 0.0f && c.entropy_coef == 0.0f && c.temperature == 1.0f);
    assert_int_equal(c.max_new_tokens, 16);
    assert_false(loss_needs_ref(&c));
    c.beta = 0.1f;
    assert_true(loss_needs_ref(&c));
    c.mode = LOSS_SFT;
    assert_false(loss_needs_ref(&c));
}

/* ---- group advantages ---- */

static void test_group_advantages(void **state)
{
    (void)state;
    const double R[4] = {1, 0, 0, 1};
    double a[4];
    coh_err err;
    /* mean 0.5; sample std sqrt(4 * 0.25 / 3) = 0.5773503 */
    double g = 0.5 / (sqrt(1.0 / 3.0) + 1e-4);
    assert_int_equal(loss_group_advantages(EST_GRPO, R, 4, a, &err), COH_OK);
    NEAR(a[0], g, 1e-12);
    NEAR(a[1], -g, 1e-12);
    NEAR(a[2], -g, 1e-12);
    NEAR(a[3], g, 1e-12);
    NEAR(g, 0.8658758, 1e-6);

    assert_int_equal(loss_group_advantages(EST_DRGRPO, R, 4, a, &err), COH_OK);
    NEAR(a[0], 0.5, 1e-15);
    NEAR(a[1], -0.5, 1e-15);

    /* rloo: 1 - (0+0+1)/3 = 2/3; 0 - (1+0+1)/3 = -2/3 */
    assert_int_equal(loss_group_advantages(EST_RLOO, R, 4, a, &err), COH_OK);
    NEAR(a[0], 2.0 / 3.0, 1e-15);
    NEAR(a[1], -2.0 / 3.0, 1e-15);
    NEAR(a[2], -2.0 / 3.0, 1e-15);
    NEAR(a[3], 2.0 / 3.0, 1e-15);

    const double R3[3] = {2, 5, -1};
    assert_int_equal(loss_group_advantages(EST_RLOO, R3, 3, a, &err), COH_OK);
    NEAR(a[0], 2 - 2.0, 1e-15);  /* others mean (5 - 1)/2 = 2 */
    NEAR(a[1], 5 - 0.5, 1e-15);  /* (2 - 1)/2 */
    NEAR(a[2], -1 - 3.5, 1e-15); /* (2 + 5)/2 */
    /* grpo on {2,5,-1}: mean 2, sample var (0 + 9 + 9)/2 = 9, std 3 */
    assert_int_equal(loss_group_advantages(EST_GRPO, R3, 3, a, &err), COH_OK);
    NEAR(a[0], 0.0, 1e-15);
    NEAR(a[1], 3.0 / (3.0 + 1e-4), 1e-12);
    NEAR(a[2], -3.0 / (3.0 + 1e-4), 1e-12);

    assert_int_equal(loss_group_advantages(EST_REINFORCE, R3, 3, a, &err), COH_OK);
    NEAR(a[0], 2, 0);
    NEAR(a[1], 5, 0);
    NEAR(a[2], -1, 0);

    /* a group of one: no relative signal */
    const double R1[1] = {0.7};
    for (int e = EST_GRPO; e <= EST_RLOO; e++) {
        a[0] = 99;
        assert_int_equal(loss_group_advantages((loss_estimator)e, R1, 1, a, &err), COH_OK);
        assert_true(a[0] == 0.0);
    }
    assert_int_equal(loss_group_advantages(EST_REINFORCE, R1, 1, a, &err), COH_OK);
    NEAR(a[0], 0.7, 0);

    assert_int_equal(loss_group_advantages(EST_REINFORCE_PP, R, 4, a, &err), COH_EINVAL);
    assert_int_equal(loss_group_advantages(EST_GRPO, R, 0, a, &err), COH_EINVAL);
    const double Rbad[3] = {1, NAN, 0};
    assert_int_equal(loss_group_advantages(EST_GRPO, Rbad, 3, a, &err), COH_ENONFINITE);
    assert_non_null(strstr(err.msg, "reward 1"));
}

/* ---- batch advantages ---- */

static int tok_dummy[16];

static loss_seq mkseq(int group, int prompt_len, int len, double reward)
{
    loss_seq s;
    memset(&s, 0, sizeof s);
    s.tokens = tok_dummy;
    s.group = group;
    s.prompt_len = prompt_len;
    s.len = len;
    s.reward = reward;
    return s;
}

/* every completion token of b carries value a, every other entry of row b is 0 */
static void assert_row(const float *adv, int T, const loss_seq *s, int b, double a, double tol)
{
    for (int k = 0; k < T; k++) {
        double want = k < s->len - s->prompt_len ? a : 0.0;
        if (fabs((double)adv[b * T + k] - want) > tol)
            fail_msg("adv[%d][%d] = %g, expected %g", b, k, (double)adv[b * T + k], want);
    }
}

static void test_batch_advantages_groups(void **state)
{
    (void)state;
    enum { B = 5, T = 6 };
    /* non-contiguous groups: 7 = {b0, b2}, 3 = {b1, b3} (all equal), 9 = {b4} (size one) */
    loss_seq s[B] = {mkseq(7, 2, 5, 1.0), mkseq(3, 1, 6, 2.0), mkseq(7, 3, 4, 0.0),
                     mkseq(3, 2, 3, 2.0), mkseq(9, 1, 3, 4.0)};
    loss_config c = loss_config_default();
    float adv[B * T];
    int use[B];
    loss_adv_stats st;
    coh_err err;

    /* grpo: group 7 mean 0.5, sample std sqrt(0.5) */
    double g = 0.5 / (sqrt(0.5) + 1e-4);
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, &st, &err), COH_OK);
    assert_row(adv, T, &s[0], 0, g, 1e-6);
    assert_row(adv, T, &s[1], 1, 0.0, 0);
    assert_row(adv, T, &s[2], 2, -g, 1e-6);
    assert_row(adv, T, &s[3], 3, 0.0, 0);
    assert_row(adv, T, &s[4], 4, 0.0, 0);
    assert_int_equal(st.groups, 3);
    assert_int_equal(st.zero_signal_groups, 2);
    assert_int_equal(st.dropped_groups, 0);
    assert_int_equal(st.used_seqs, 5);
    for (int b = 0; b < B; b++)
        assert_int_equal(use[b], 1);

    /* dynamic sampling drops the all-equal group and the group of one */
    c.drop_zero_signal = 1;
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, &st, &err), COH_OK);
    assert_int_equal(st.groups, 3);
    assert_int_equal(st.zero_signal_groups, 2);
    assert_int_equal(st.dropped_groups, 2);
    assert_int_equal(st.used_seqs, 2);
    const int want_use[B] = {1, 0, 1, 0, 0};
    for (int b = 0; b < B; b++)
        assert_int_equal(use[b], want_use[b]);
    assert_row(adv, T, &s[0], 0, g, 1e-6);
    assert_row(adv, T, &s[2], 2, -g, 1e-6);

    /* reinforce keeps R for an undropped all-equal group, 0 once dropped */
    c.estimator = EST_REINFORCE;
    c.drop_zero_signal = 0;
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, &st, &err), COH_OK);
    assert_row(adv, T, &s[1], 1, 2.0, 0);
    assert_row(adv, T, &s[4], 4, 4.0, 0);
    assert_row(adv, T, &s[2], 2, 0.0, 0);
    c.drop_zero_signal = 1;
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, &st, &err), COH_OK);
    assert_row(adv, T, &s[1], 1, 0.0, 0);
    assert_row(adv, T, &s[4], 4, 0.0, 0);
    assert_row(adv, T, &s[0], 0, 1.0, 0);

    /* rloo and drgrpo with the same groups */
    c.drop_zero_signal = 0;
    c.estimator = EST_RLOO;
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, &st, &err), COH_OK);
    assert_row(adv, T, &s[0], 0, 1.0, 0);
    assert_row(adv, T, &s[2], 2, -1.0, 0);
    assert_row(adv, T, &s[4], 4, 0.0, 0);
    c.estimator = EST_DRGRPO;
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, &st, &err), COH_OK);
    assert_row(adv, T, &s[0], 0, 0.5, 0);
    assert_row(adv, T, &s[2], 2, -0.5, 0);
    assert_row(adv, T, &s[1], 1, 0.0, 0);

    /* an all-equal group of inexact doubles still gets exactly 0 */
    loss_seq e[3] = {mkseq(1, 1, 2, 0.1), mkseq(1, 1, 2, 0.1), mkseq(1, 1, 2, 0.1)};
    c.estimator = EST_GRPO;
    assert_int_equal(loss_advantages(&c, e, 3, 2, adv, use, &st, &err), COH_OK);
    for (int i = 0; i < 6; i++)
        assert_true(adv[i] == 0.0f);
    assert_int_equal(st.zero_signal_groups, 1);

    /* SFT: every advantage 1, every sequence used, no zero-signal accounting */
    c.mode = LOSS_SFT;
    c.drop_zero_signal = 1;
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, &st, &err), COH_OK);
    for (int b = 0; b < B; b++) {
        assert_int_equal(use[b], 1);
        assert_row(adv, T, &s[b], b, 1.0, 0);
    }
    assert_int_equal(st.used_seqs, B);
    assert_int_equal(st.dropped_groups, 0);
}

static void test_batch_advantages_group_of_one(void **state)
{
    (void)state;
    enum { B = 3, T = 4 };
    loss_seq s[B] = {mkseq(5, 1, 3, 3.0), mkseq(6, 1, 4, 1.0), mkseq(6, 2, 4, 0.0)};
    loss_config c = loss_config_default();
    float adv[B * T];
    int use[B];
    loss_adv_stats st;
    coh_err err;
    double g = 0.5 / (sqrt(0.5) + 1e-4);
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, &st, &err), COH_OK);
    assert_row(adv, T, &s[0], 0, 0.0, 0);
    assert_row(adv, T, &s[1], 1, g, 1e-6);
    assert_row(adv, T, &s[2], 2, -g, 1e-6);
    assert_int_equal(st.groups, 2);
    assert_int_equal(st.zero_signal_groups, 1);
    c.estimator = EST_RLOO;
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, &st, &err), COH_OK);
    assert_row(adv, T, &s[0], 0, 0.0, 0);
    assert_row(adv, T, &s[1], 1, 1.0, 0);
    c.estimator = EST_REINFORCE;
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, &st, &err), COH_OK);
    assert_row(adv, T, &s[0], 0, 3.0, 0);
}

static void test_reinforce_pp_by_hand(void **state)
{
    (void)state;
    enum { B = 4, T = 4 };
    const float beh0[2] = {-1.0f, -2.0f}, ref0[2] = {-1.5f, -1.0f};
    const float beh1[1] = {-0.5f}, ref1[1] = {-0.5f};
    const float beh2[1] = {-0.25f}, ref2[1] = {-0.75f};
    const float beh3[1] = {-0.3f}, ref3[1] = {-0.3f};
    /* group 0 = {s0, s3} (rewards 1, 0.5), group 1 = {s1, s2} (all 0: zero-signal) */
    loss_seq s[B] = {mkseq(0, 1, 3, 1.0), mkseq(1, 2, 3, 0.0), mkseq(1, 3, 4, 0.0),
                     mkseq(0, 1, 2, 0.5)};
    s[0].behaviour_logp = beh0;
    s[0].ref_logp = ref0;
    s[1].behaviour_logp = beh1;
    s[1].ref_logp = ref1;
    s[2].behaviour_logp = beh2;
    s[2].ref_logp = ref2;
    s[3].behaviour_logp = beh3;
    s[3].ref_logp = ref3;
    loss_config c = loss_config_default();
    c.estimator = EST_REINFORCE_PP;
    c.beta = 0.1f;
    float adv[B * T];
    int use[B];
    loss_adv_stats st;
    coh_err err;

    /* per-token rewards: s0 k0 -0.1*(-1+1.5) = -0.05, k1 -0.1*(-2+1) + 1 = 1.1;
     * s1 k0 0; s2 k0 -0.1*(-0.25+0.75) = -0.05; s3 k0 0.5.
     * Returns (summed to the end): {1.05, 1.1}, {0}, {-0.05}, {0.5}; mean 2.6 / 5 = 0.52. */
    const double x[5] = {1.05, 1.1, 0.0, -0.05, 0.5};
    double mean = 0.52, var = 0.0;
    for (int i = 0; i < 5; i++)
        var += (x[i] - mean) * (x[i] - mean);
    double sd = sqrt(var / 5.0); /* population std */
    NEAR(var, 0.53 * 0.53 + 0.58 * 0.58 + 0.52 * 0.52 + 0.57 * 0.57 + 0.02 * 0.02, 1e-12);
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, &st, &err), COH_OK);
    NEAR(adv[0 * T + 0], (1.05 - mean) / (sd + 1e-8), 2e-6);
    NEAR(adv[0 * T + 1], (1.10 - mean) / (sd + 1e-8), 2e-6);
    NEAR(adv[1 * T + 0], (0.00 - mean) / (sd + 1e-8), 2e-6);
    NEAR(adv[2 * T + 0], (-0.05 - mean) / (sd + 1e-8), 2e-6);
    NEAR(adv[3 * T + 0], (0.50 - mean) / (sd + 1e-8), 2e-6);
    assert_true(adv[0 * T + 2] == 0.0f && adv[1 * T + 1] == 0.0f && adv[3 * T + 1] == 0.0f);
    assert_int_equal(st.groups, 2);
    assert_int_equal(st.zero_signal_groups, 1);
    assert_int_equal(st.dropped_groups, 0);
    assert_int_equal(st.used_seqs, 4);

    /* dropping group 1 whitens over the tokens of s0 and s3 only: {1.05, 1.1, 0.5} */
    c.drop_zero_signal = 1;
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, &st, &err), COH_OK);
    assert_int_equal(use[0], 1);
    assert_int_equal(use[1], 0);
    assert_int_equal(use[2], 0);
    assert_int_equal(use[3], 1);
    assert_int_equal(st.dropped_groups, 1);
    double m2 = 2.65 / 3.0;
    double sd2 = sqrt(((1.05 - m2) * (1.05 - m2) + (1.1 - m2) * (1.1 - m2) +
                       (0.5 - m2) * (0.5 - m2)) / 3.0);
    NEAR(adv[0], (1.05 - m2) / (sd2 + 1e-8), 2e-6);
    NEAR(adv[1], (1.10 - m2) / (sd2 + 1e-8), 2e-6);
    NEAR(adv[3 * T], (0.50 - m2) / (sd2 + 1e-8), 2e-6);
    assert_true(adv[T] == 0.0f && adv[2 * T] == 0.0f);

    /* one token in the batch: only centred, i.e. 0 */
    c.drop_zero_signal = 0;
    assert_int_equal(loss_advantages(&c, &s[1], 1, T, adv, use, &st, &err), COH_OK);
    assert_true(adv[0] == 0.0f);

    /* beta = 0: returns are the sequence reward alone (no reference needed) */
    c.beta = 0.0f;
    s[0].ref_logp = NULL;
    assert_int_equal(loss_advantages(&c, s, 2, T, adv, use, &st, &err), COH_OK);
    /* returns {1, 1, 0}: mean 2/3, population std sqrt(2)/3 */
    double sd3 = sqrt(2.0) / 3.0;
    NEAR(adv[0], (1.0 - 2.0 / 3.0) / (sd3 + 1e-8), 1e-5);
    NEAR(adv[T], (0.0 - 2.0 / 3.0) / (sd3 + 1e-8), 1e-5);

    /* with beta > 0 a missing or non-finite reference is refused */
    c.beta = 0.1f;
    assert_int_equal(loss_advantages(&c, s, 2, T, adv, use, &st, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "ref_logp"));
    const float bad[2] = {-1.0f, INFINITY};
    s[0].ref_logp = bad;
    assert_int_equal(loss_advantages(&c, s, 2, T, adv, use, &st, &err), COH_ENONFINITE);
    assert_non_null(strstr(err.msg, "sequence 0 token 1"));
    s[0].ref_logp = ref0;
    s[0].behaviour_logp = bad;
    assert_int_equal(loss_advantages(&c, s, 2, T, adv, use, &st, &err), COH_ENONFINITE);
    assert_non_null(strstr(err.msg, "behaviour"));
}

static void test_advantages_rejects(void **state)
{
    (void)state;
    enum { B = 2, T = 4 };
    loss_seq s[B] = {mkseq(0, 1, 3, 1.0), mkseq(0, 1, 4, NAN)};
    loss_config c = loss_config_default();
    float adv[B * T];
    int use[B];
    coh_err err;
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, NULL, &err), COH_ENONFINITE);
    assert_non_null(strstr(err.msg, "sequence 1"));
    assert_non_null(strstr(err.msg, "reward"));
    s[1].reward = INFINITY;
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, NULL, &err), COH_ENONFINITE);
    s[1].reward = 0.0;
    s[1].len = 5;
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, NULL, &err), COH_ESHAPE);
    assert_non_null(strstr(err.msg, "sequence 1"));
    s[1].len = 1;
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, NULL, &err), COH_ESHAPE);
    s[1].len = 3;
    s[1].prompt_len = 0;
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, NULL, &err), COH_ESHAPE);
    assert_non_null(strstr(err.msg, "prompt_len"));
    s[1].prompt_len = 1;
    assert_int_equal(loss_advantages(&c, s, 0, T, adv, use, NULL, &err), COH_ESHAPE);
    assert_int_equal(loss_advantages(&c, s, B, T, adv, use, NULL, &err), COH_OK);
}

/* ---- single-token loss values ---- */

/* one sequence: prompt {0}, completion {target}; logits row 0 is the one that counts */
typedef struct one_tok {
    int tokens[2];
    float logits[2 * 3];
    float dlogits[2 * 3];
    float beh, ref, adv[2];
    int use;
    loss_seq s;
} one_tok;

static void one_tok_init(one_tok *o, const float row[3], int target)
{
    memset(o, 0, sizeof *o);
    o->tokens[0] = 0;
    o->tokens[1] = target;
    memcpy(o->logits, row, 3 * sizeof(float));
    o->logits[3] = 0.3f; /* row 1 predicts nothing */
    o->logits[4] = -1.0f;
    o->logits[5] = 2.0f;
    o->use = 1;
    o->s.tokens = o->tokens;
    o->s.prompt_len = 1;
    o->s.len = 2;
    o->s.behaviour_logp = &o->beh;
    o->s.ref_logp = &o->ref;
}

static void test_one_token_loss_by_hand(void **state)
{
    (void)state;
    const float row[3] = {1.0f, 2.0f, 0.5f};
    one_tok o;
    one_tok_init(&o, row, 1);
    /* by hand: lse = log(e + e^2 + e^0.5), logp = 2 - lse, H = lse - sum p z */
    double lse = log(exp(1.0) + exp(2.0) + exp(0.5));
    double logp = 2.0 - lse;
    double H = lse - (exp(1.0 - lse) * 1.0 + exp(2.0 - lse) * 2.0 + exp(0.5 - lse) * 0.5);
    NEAR(logp, -0.4643688, 1e-6);
    o.beh = (float)(logp - log(1.3)); /* ratio 1.3 > 1 + 0.2: clipped at 1.2 for A > 0 */
    o.ref = (float)(logp - 0.2);
    o.adv[0] = 1.0f;
    loss_config c = loss_config_default();
    c.beta = 0.1f;
    c.entropy_coef = 0.01f;
    loss_stats st;
    coh_err err;
    assert_int_equal(loss_compute(&c, &o.s, 1, 2, o.adv, &o.use, o.logits, 3, o.dlogits, &st,
                                  &err),
                     COH_OK);
    double kl = exp(-0.2) + 0.2 - 1.0;
    double want = -(1.2 * 1.0 - 0.1 * kl) - 0.01 * H;
    NEAR(st.loss, want, 2e-6);
    NEAR(st.kl, kl, 1e-6);
    NEAR(st.clip_frac, 1.0, 0);
    NEAR(st.ratio_mean, 1.3, 1e-6);
    NEAR(st.entropy, H, 1e-6);
    NEAR(st.logp_mean, logp, 1e-6);
    NEAR(st.max_abs_logp_diff, log(1.3), 1e-6);
    assert_int_equal(st.tokens, 1);
    /* clipped: only KL and entropy push on the logits; d/dz of logp_a = onehot - p */
    double gl = 0.1 * (1.0 - exp(-0.2)); /* beta * d kl / d logp */
    for (int i = 0; i < 3; i++) {
        double zi = row[i], p = exp(zi - lse);
        double d = gl * ((i == 1) - p) - 0.01 * (-p * (zi - lse + H));
        NEAR(o.dlogits[i], d, 1e-6);
    }
    for (int i = 3; i < 6; i++)
        assert_true(o.dlogits[i] == 0.0f);

    /* A < 0, ratio 1 (inside the range), temperature 2: loss = -r A = 1 */
    c = loss_config_default();
    c.temperature = 2.0f;
    double lse2 = log(exp(0.5) + exp(1.0) + exp(0.25));
    double logp2 = 1.0 - lse2;
    float lp;
    sm_logp_entropy(row, 3, 2.0f, 1, &lp, NULL);
    NEAR(lp, logp2, 1e-6);
    o.beh = lp;
    o.adv[0] = -1.0f;
    assert_int_equal(loss_compute(&c, &o.s, 1, 2, o.adv, &o.use, o.logits, 3, o.dlogits, &st,
                                  &err),
                     COH_OK);
    NEAR(st.loss, 1.0, 1e-7);
    NEAR(st.clip_frac, 0.0, 0);
    /* d loss / d logp = -r A = 1; d logp / d z_i = (onehot - p_i) / T */
    for (int i = 0; i < 3; i++) {
        double p = exp(row[i] / 2.0 - lse2);
        NEAR(o.dlogits[i], ((i == 1) - p) / 2.0, 1e-6);
    }

    /* SFT: -logp, no behaviour needed */
    c = loss_config_default();
    c.mode = LOSS_SFT;
    o.s.behaviour_logp = NULL;
    o.s.ref_logp = NULL;
    assert_int_equal(loss_compute(&c, &o.s, 1, 2, NULL, NULL, o.logits, 3, o.dlogits, &st, &err),
                     COH_OK);
    NEAR(st.loss, -logp, 1e-6);
    NEAR(o.dlogits[1], -(1.0 - exp(2.0 - lse)), 1e-6);
}

static void test_k3_kl(void **state)
{
    (void)state;
    const float row[3] = {0.2f, -1.0f, 1.5f};
    one_tok o;
    one_tok_init(&o, row, 2);
    float lp;
    sm_logp_entropy(row, 3, 1.0f, 2, &lp, NULL);
    loss_config c = loss_config_default();
    c.beta = 0.5f;
    loss_stats st;
    coh_err err;
    o.beh = lp; /* ratio exactly 1 */
    o.adv[0] = 0.0f;

    /* ref == logp: the k3 estimator is exactly 0, and so is the loss */
    o.ref = lp;
    assert_int_equal(loss_compute(&c, &o.s, 1, 2, o.adv, &o.use, o.logits, 3, o.dlogits, &st,
                                  &err),
                     COH_OK);
    assert_true(st.kl == 0.0);
    assert_true(st.loss == 0.0);
    for (int i = 0; i < 6; i++)
        assert_true(o.dlogits[i] == 0.0f);

    /* ref = logp + 0.3: kl = e^0.3 - 0.3 - 1 = 0.0498588; loss = beta * kl */
    o.ref = lp + 0.3f;
    double d = (double)o.ref - (double)lp;
    double kl = exp(d) - d - 1.0;
    NEAR(kl, 0.0498588, 1e-6);
    assert_int_equal(loss_compute(&c, &o.s, 1, 2, o.adv, &o.use, o.logits, 3, o.dlogits, &st,
                                  &err),
                     COH_OK);
    NEAR(st.kl, kl, 1e-9);
    NEAR(st.loss, 0.5 * kl, 1e-9);

    /* reinforce_pp keeps KL out of the loss (it is in the reward) but still reports it */
    c.estimator = EST_REINFORCE_PP;
    assert_int_equal(loss_compute(&c, &o.s, 1, 2, o.adv, &o.use, o.logits, 3, o.dlogits, &st,
                                  &err),
                     COH_OK);
    assert_true(st.loss == 0.0);
    NEAR(st.kl, kl, 1e-9);

    /* beta = 0: no KL and no reference needed */
    c.estimator = EST_GRPO;
    c.beta = 0.0f;
    o.s.ref_logp = NULL;
    assert_int_equal(loss_compute(&c, &o.s, 1, 2, o.adv, &o.use, o.logits, 3, o.dlogits, &st,
                                  &err),
                     COH_OK);
    assert_true(st.kl == 0.0 && st.loss == 0.0);
}

/* ---- the batch: independent evaluation and finite differences ---- */

enum { FB = 5, FT = 7, FV = 5 };

typedef struct fd_batch {
    int tokens[FB][FT];
    float beh[FB][FT], ref[FB][FT];
    double ratio[FB][FT];
    float logits[FB * FT * FV];
    loss_seq s[FB];
} fd_batch;

static const double ratio_cycle[6] = {0.5, 1.0, 1.1, 1.6, 0.7, 1.3};

/* Random logits and tokens; behaviour log-probs chosen so that each token has a known
 * ratio, away from the clip boundaries 0.8 and 1.2; ref = logp + noise. */
static void fd_batch_init(fd_batch *f, float temperature, uint64_t seed)
{
    static const int group[FB] = {0, 1, 0, 1, 2};
    static const int plen[FB] = {2, 1, 3, 2, 1};
    static const int len[FB] = {7, 4, 5, 6, 3};
    static const double reward[FB] = {1.0, -0.5, 0.0, 2.0, 1.0};
    rng r;
    rng_init(&r, seed);
    memset(f, 0, sizeof *f);
    for (size_t i = 0; i < (size_t)FB * FT * FV; i++)
        f->logits[i] = (float)(1.5 * rng_normal(&r));
    int n = 0;
    for (int b = 0; b < FB; b++) {
        loss_seq *s = &f->s[b];
        for (int t = 0; t < FT; t++)
            f->tokens[b][t] = (int)rng_below(&r, FV);
        s->tokens = f->tokens[b];
        s->group = group[b];
        s->prompt_len = plen[b];
        s->len = len[b];
        s->reward = reward[b];
        s->behaviour_logp = f->beh[b];
        s->ref_logp = f->ref[b];
        for (int k = 0; k < len[b] - plen[b]; k++) {
            const float *row = f->logits + ((size_t)b * FT + plen[b] + k - 1) * FV;
            float lp;
            sm_logp_entropy(row, FV, temperature, f->tokens[b][plen[b] + k], &lp, NULL);
            f->ratio[b][k] = ratio_cycle[n++ % 6];
            f->beh[b][k] = (float)(lp - log(f->ratio[b][k]));
            f->ref[b][k] = (float)(lp + 0.3 * rng_normal(&r));
        }
    }
}

/* The loss written out token by token, straight from the formulas of loss.h. */
static double reference_loss(const loss_config *c, const fd_batch *f, const float *adv,
                             const int *use, long *n_clipped)
{
    double num[FB] = {0}, total = 0.0;
    int ntok[FB] = {0}, nseq = 0;
    long ntot = 0;
    *n_clipped = 0;
    for (int b = 0; b < FB; b++) {
        const loss_seq *s = &f->s[b];
        if (!use[b])
            continue;
        nseq++;
        for (int k = 0; k < s->len - s->prompt_len; k++) {
            const float *row = f->logits + ((size_t)b * FT + s->prompt_len + k - 1) * FV;
            float lpf, hf;
            sm_logp_entropy(row, FV, c->temperature, s->tokens[s->prompt_len + k], &lpf, &hf);
            double lp = lpf, H = hf, lt;
            if (c->mode == LOSS_SFT) {
                lt = -lp - c->entropy_coef * H;
            } else {
                double A = adv[b * FT + k];
                double r = exp(lp - s->behaviour_logp[k]);
                double rc = fmin(fmax(r, 1.0 - c->eps_low), 1.0 + c->eps_high);
                double surr = fmin(r * A, rc * A);
                if (rc * A < r * A)
                    (*n_clipped)++;
                double kl = 0.0;
                if (c->beta > 0 && c->estimator != EST_REINFORCE_PP) {
                    double d = s->ref_logp[k] - lp;
                    kl = exp(d) - d - 1.0;
                }
                lt = -(surr - c->beta * kl) - c->entropy_coef * H;
            }
            num[b] += lt;
            ntok[b]++;
            total += lt;
            ntot++;
        }
    }
    switch (c->aggregation) {
    case AGG_TOKEN_MEAN:
        return total / ntot;
    case AGG_SEQ_MEAN_TOKEN_MEAN: {
        double m = 0.0;
        for (int b = 0; b < FB; b++)
            if (use[b])
                m += num[b] / ntok[b];
        return m / nseq;
    }
    case AGG_CONSTANT:
        return total / ((double)nseq * c->max_new_tokens);
    }
    return NAN;
}

static double eval_loss(const loss_config *c, const fd_batch *f, const float *adv,
                        const int *use, float *scratch)
{
    loss_stats st;
    coh_err err;
    int rc = loss_compute(c, f->s, FB, FT, adv, use, f->logits, FV, scratch, &st, &err);
    if (rc != COH_OK)
        fail_msg("loss_compute: %s", err.msg);
    return st.loss;
}

/* Central differences in double on the float logits against the analytic dlogits. */
static void fd_check(const loss_config *c, fd_batch *f, const float *adv, const int *use,
                     const char *label)
{
    enum { N = FB * FT * FV };
    float d[N], scratch[N];
    loss_stats st;
    coh_err err;
    assert_int_equal(loss_compute(c, f->s, FB, FT, adv, use, f->logits, FV, d, &st, &err),
                     COH_OK);
    const double h = 1e-2;
    for (int i = 0; i < N; i++) {
        float save = f->logits[i];
        float up = (float)(save + h), dn = (float)(save - h);
        f->logits[i] = up;
        double lp = eval_loss(c, f, adv, use, scratch);
        f->logits[i] = dn;
        double lm = eval_loss(c, f, adv, use, scratch);
        f->logits[i] = save;
        double fd = (lp - lm) / ((double)up - (double)dn);
        double tol = 2e-5 + 5e-3 * fabs((double)d[i]);
        double e = fabs(fd - (double)d[i]);
        if (e > tol)
            fail_msg("%s: dlogits[%d] (seq %d row %d col %d) = %.8g but finite difference "
                     "gives %.8g",
                     label, i, i / (FT * FV), (i / FV) % FT, i % FV, (double)d[i], fd);
    }
}

static void test_batch_all_estimators_aggregations(void **state)
{
    (void)state;
    fd_batch f;
    const float temperature = 0.8f;
    fd_batch_init(&f, temperature, 1234);
    for (int e = EST_GRPO; e <= EST_REINFORCE_PP; e++) {
        for (int a = AGG_TOKEN_MEAN; a <= AGG_CONSTANT; a++) {
            loss_config c = loss_config_default();
            c.estimator = (loss_estimator)e;
            c.aggregation = (loss_aggregation)a;
            c.beta = 0.05f;
            c.entropy_coef = 0.05f;
            c.temperature = temperature;
            c.max_new_tokens = 8;
            c.drop_zero_signal = 1; /* seq 4 is a group of one: dropped */
            float adv[FB * FT];
            int use[FB];
            loss_adv_stats ast;
            coh_err err;
            assert_int_equal(loss_advantages(&c, f.s, FB, FT, adv, use, &ast, &err), COH_OK);
            assert_int_equal(use[4], 0);
            assert_int_equal(ast.used_seqs, 4);

            char label[96];
            snprintf(label, sizeof label, "%s/%s", loss_estimator_name(c.estimator),
                     loss_aggregation_name(c.aggregation));
            float d[FB * FT * FV];
            loss_stats st;
            assert_int_equal(
                loss_compute(&c, f.s, FB, FT, adv, use, f.logits, FV, d, &st, &err), COH_OK);
            long n_clipped;
            double want = reference_loss(&c, &f, adv, use, &n_clipped);
            if (fabs(st.loss - want) > 1e-6 * (1.0 + fabs(want)))
                fail_msg("%s: loss %.9g, by the formulas %.9g", label, st.loss, want);
            assert_int_equal(st.tokens, 14);
            /* clip count from the chosen ratios and the advantage signs */
            long by_choice = 0;
            for (int b = 0; b < FB; b++)
                for (int k = 0; use[b] && k < f.s[b].len - f.s[b].prompt_len; k++) {
                    double A = adv[b * FT + k], r = f.ratio[b][k];
                    by_choice += (A > 0 && r > 1.2) || (A < 0 && r < 0.8);
                }
            assert_int_equal(n_clipped, by_choice);
            NEAR(st.clip_frac, (double)by_choice / 14.0, 1e-12);
            if (e == EST_GRPO) /* both branches are exercised */
                assert_true(by_choice > 0 && by_choice < 14);
            /* the dropped sequence has no gradient */
            for (int i = 4 * FT * FV; i < FB * FT * FV; i++)
                assert_true(d[i] == 0.0f);
            fd_check(&c, &f, adv, use, label);
        }
    }
}

static void test_sft_gradient(void **state)
{
    (void)state;
    fd_batch f;
    fd_batch_init(&f, 1.0f, 99);
    int use[FB] = {1, 1, 1, 1, 1};
    for (int a = AGG_TOKEN_MEAN; a <= AGG_CONSTANT; a++) {
        loss_config c = loss_config_default();
        c.mode = LOSS_SFT;
        c.aggregation = (loss_aggregation)a;
        c.entropy_coef = 0.05f;
        c.max_new_tokens = 6;
        for (int b = 0; b < FB; b++)
            f.s[b].behaviour_logp = f.s[b].ref_logp = NULL;
        float adv[FB * FT];
        int u[FB];
        coh_err err;
        assert_int_equal(loss_advantages(&c, f.s, FB, FT, adv, u, NULL, &err), COH_OK);
        float d[FB * FT * FV];
        loss_stats st;
        assert_int_equal(loss_compute(&c, f.s, FB, FT, adv, u, f.logits, FV, d, &st, &err),
                         COH_OK);
        long nc;
        double want = reference_loss(&c, &f, adv, use, &nc);
        NEAR(st.loss, want, 1e-6 * (1.0 + fabs(want)));
        assert_int_equal(st.tokens, 16);
        NEAR(st.clip_frac, 0.0, 0);
        /* adv and use may be left out in SFT mode */
        assert_int_equal(loss_compute(&c, f.s, FB, FT, NULL, NULL, f.logits, FV, d, &st, &err),
                         COH_OK);
        NEAR(st.loss, want, 1e-6 * (1.0 + fabs(want)));
        char label[64];
        snprintf(label, sizeof label, "sft/%s", loss_aggregation_name(c.aggregation));
        fd_check(&c, &f, adv, use, label);
    }
}

/* ---- rejected input ---- */

static int all_zero(const float *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (d[i] != 0.0f)
            return 0;
    return 1;
}

static void test_loss_rejects_nonfinite(void **state)
{
    (void)state;
    fd_batch f;
    fd_batch_init(&f, 1.0f, 7);
    loss_config c = loss_config_default();
    c.beta = 0.1f;
    float adv[FB * FT];
    int use[FB];
    float d[FB * FT * FV];
    loss_stats st;
    coh_err err;
    assert_int_equal(loss_advantages(&c, f.s, FB, FT, adv, use, NULL, &err), COH_OK);
    const size_t n = (size_t)FB * FT * FV;

    f.beh[3][2] = NAN;
    for (size_t i = 0; i < n; i++)
        d[i] = 7.0f;
    assert_int_equal(loss_compute(&c, f.s, FB, FT, adv, use, f.logits, FV, d, &st, &err),
                     COH_ENONFINITE);
    assert_int_equal(err.code, COH_ENONFINITE);
    assert_non_null(strstr(err.msg, "sequence 3 token 2"));
    assert_non_null(strstr(err.msg, "behaviour"));
    assert_true(all_zero(d, n));
    f.beh[3][2] = -INFINITY;
    assert_int_equal(loss_compute(&c, f.s, FB, FT, adv, use, f.logits, FV, d, &st, &err),
                     COH_ENONFINITE);
    f.beh[3][2] = -1.0f;

    f.ref[1][0] = NAN;
    assert_int_equal(loss_compute(&c, f.s, FB, FT, adv, use, f.logits, FV, d, &st, &err),
                     COH_ENONFINITE);
    assert_non_null(strstr(err.msg, "reference"));
    f.ref[1][0] = -1.0f;

    adv[2 * FT + 1] = INFINITY;
    assert_int_equal(loss_compute(&c, f.s, FB, FT, adv, use, f.logits, FV, d, &st, &err),
                     COH_ENONFINITE);
    assert_non_null(strstr(err.msg, "sequence 2 token 1: advantage"));
    adv[2 * FT + 1] = 0.5f;

    /* a non-finite logit in a row that carries a loss term (seq 0, prompt 2: row 1) */
    for (size_t i = 0; i < n; i++)
        d[i] = 7.0f;
    f.logits[(0 * FT + 4) * FV + 3] = NAN;
    assert_int_equal(loss_compute(&c, f.s, FB, FT, adv, use, f.logits, FV, d, &st, &err),
                     COH_ENONFINITE);
    assert_non_null(strstr(err.msg, "sequence 0 token 3"));
    assert_true(all_zero(d, n));
    f.logits[(0 * FT + 4) * FV + 3] = 0.0f;

    /* a ratio that overflows double */
    f.beh[0][0] = -1e4f;
    adv[0] = -1.0f;
    assert_int_equal(loss_compute(&c, f.s, FB, FT, adv, use, f.logits, FV, d, &st, &err),
                     COH_ENONFINITE);
    assert_true(all_zero(d, n));
    f.beh[0][0] = -1.0f;

    assert_int_equal(loss_compute(&c, f.s, FB, FT, adv, use, f.logits, FV, d, &st, &err),
                     COH_OK);
}

static void test_loss_rejects_shapes(void **state)
{
    (void)state;
    fd_batch f;
    fd_batch_init(&f, 1.0f, 8);
    loss_config c = loss_config_default();
    c.beta = 0.1f;
    float adv[FB * FT];
    int use[FB];
    float d[FB * FT * FV];
    loss_stats st;
    coh_err err;
    assert_int_equal(loss_advantages(&c, f.s, FB, FT, adv, use, NULL, &err), COH_OK);
#define CALL() loss_compute(&c, f.s, FB, FT, adv, use, f.logits, FV, d, &st, &err)
    f.s[1].prompt_len = 0;
    assert_int_equal(CALL(), COH_ESHAPE);
    assert_non_null(strstr(err.msg, "sequence 1"));
    f.s[1].prompt_len = 1;
    f.s[2].len = FT + 1;
    assert_int_equal(CALL(), COH_ESHAPE);
    assert_non_null(strstr(err.msg, "exceeds"));
    f.s[2].len = f.s[2].prompt_len;
    assert_int_equal(CALL(), COH_ESHAPE);
    f.s[2].len = 5;
    f.tokens[3][4] = FV;
    assert_int_equal(CALL(), COH_EINVAL);
    assert_non_null(strstr(err.msg, "vocabulary"));
    f.tokens[3][4] = -1;
    assert_int_equal(CALL(), COH_EINVAL);
    f.tokens[3][4] = 0;
    f.s[0].behaviour_logp = NULL;
    assert_int_equal(CALL(), COH_EINVAL);
    assert_non_null(strstr(err.msg, "behaviour"));
    f.s[0].behaviour_logp = f.beh[0];
    f.s[0].ref_logp = NULL;
    assert_int_equal(CALL(), COH_EINVAL);
    assert_non_null(strstr(err.msg, "reference"));
    f.s[0].ref_logp = f.ref[0];
    c.temperature = 0.0f;
    assert_int_equal(CALL(), COH_EINVAL);
    assert_non_null(strstr(err.msg, "temperature"));
    c.temperature = 1.0f;
    c.aggregation = AGG_CONSTANT;
    c.max_new_tokens = 0;
    assert_int_equal(CALL(), COH_EINVAL);
    c.max_new_tokens = 8;
    assert_int_equal(loss_compute(&c, f.s, FB, FT, adv, use, f.logits, 0, d, &st, &err),
                     COH_ESHAPE);
    assert_int_equal(loss_compute(&c, f.s, 0, FT, adv, use, f.logits, FV, d, &st, &err),
                     COH_ESHAPE);
    assert_int_equal(CALL(), COH_OK);
#undef CALL
}

static void test_all_dropped(void **state)
{
    (void)state;
    fd_batch f;
    fd_batch_init(&f, 1.0f, 3);
    loss_config c = loss_config_default();
    float adv[FB * FT] = {0};
    int use[FB] = {0, 0, 0, 0, 0};
    float d[FB * FT * FV];
    loss_stats st;
    coh_err err;
    for (int i = 0; i < FB * FT * FV; i++)
        d[i] = 1.0f;
    assert_int_equal(loss_compute(&c, f.s, FB, FT, adv, use, f.logits, FV, d, &st, &err),
                     COH_OK);
    assert_true(st.loss == 0.0);
    assert_int_equal(st.tokens, 0);
    assert_true(all_zero(d, (size_t)FB * FT * FV));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_group_advantages),
        cmocka_unit_test(test_batch_advantages_groups),
        cmocka_unit_test(test_batch_advantages_group_of_one),
        cmocka_unit_test(test_reinforce_pp_by_hand),
        cmocka_unit_test(test_advantages_rejects),
        cmocka_unit_test(test_one_token_loss_by_hand),
        cmocka_unit_test(test_k3_kl),
        cmocka_unit_test(test_batch_all_estimators_aggregations),
        cmocka_unit_test(test_sft_gradient),
        cmocka_unit_test(test_loss_rejects_nonfinite),
        cmocka_unit_test(test_loss_rejects_shapes),
        cmocka_unit_test(test_all_dropped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
