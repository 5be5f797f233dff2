/* test_optim.c - AdamW steps against hand-computed values, decoupled weight decay per
 * segment, global grad-norm clipping, non-finite gradients, and the learning-rate schedule
 * of learner/optim.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "optim.h"

#define NEAR(a, b, tol) assert_true(fabs((double)(a) - (double)(b)) <= (tol))
/* moments: betas are floats (0.99f is not 0.99), so compare to 1e-6 relative */
#define NEAR_REL(a, b) NEAR(a, b, 1e-6 * fabs((double)(b)) + 1e-12)

static optim_config plain_config(float lr)
{
    optim_config c = optim_config_default();
    c.lr = lr;
    c.grad_clip = 0.0f; /* off */
    return c;
}

static void test_defaults_and_names(void **state)
{
    (void)state;
    optim_config c = optim_config_default();
    NEAR(c.lr, 1e-3, 1e-10);
    NEAR(c.beta1, 0.9, 1e-7);
    NEAR(c.beta2, 0.99, 1e-7);
    NEAR(c.eps, 1e-8, 1e-15);
    assert_true(c.weight_decay == 0.0f);
    assert_true(c.grad_clip == 1.0f);
    assert_int_equal(c.warmup_steps, 0);
    assert_int_equal(c.schedule, SCHED_CONSTANT);

    optim_schedule s;
    coh_err err;
    for (int i = SCHED_CONSTANT; i <= SCHED_COSINE; i++) {
        assert_int_equal(optim_parse_schedule(optim_schedule_name((optim_schedule)i), &s, &err),
                         COH_OK);
        assert_int_equal(s, i);
    }
    assert_string_equal(optim_schedule_name(SCHED_COSINE), "cosine");
    assert_int_equal(optim_parse_schedule("exponential", &s, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "linear"));

    const float g[3] = {3.0f, 4.0f, 12.0f};
    NEAR(optim_grad_norm(g, 3), 13.0, 1e-12);
}

/* Two steps of AdamW (lr 0.1, betas 0.9/0.99, eps 1e-8, no decay, no clip), by hand:
 * step 1: m = 0.1 g, v = 0.01 g^2, mhat = g, vhat = g^2, so p moves by -0.1 sign(g);
 * step 2 for p0 (g1 = 0.1, g2 = 0.2): m = 0.9*0.01 + 0.1*0.2 = 0.029,
 * v = 0.99*1e-4 + 0.01*0.04 = 4.99e-4, mhat = 0.029/0.19, vhat = 4.99e-4/0.0199,
 * p = 0.9 - 0.1 * mhat / (sqrt(vhat) + 1e-8) = 0.80361253. */
static void test_two_steps_by_hand(void **state)
{
    (void)state;
    float p[3] = {1.0f, -2.0f, 0.5f};
    float g1[3] = {0.1f, -0.2f, 0.3f};
    float g2[3] = {0.2f, 0.1f, -0.3f};
    optim_config c = plain_config(0.1f);
    adamw *o;
    coh_err err;
    adamw_stats st;
    assert_int_equal(adamw_create(3, NULL, 0, &o, &err), COH_OK);
    assert_int_equal(adamw_size(o), 3);
    assert_int_equal(adamw_steps(o), 0);

    assert_int_equal(adamw_step(o, &c, p, g1, 0.0f, &st, &err), COH_OK);
    assert_int_equal(adamw_steps(o), 1);
    NEAR(p[0], 0.9, 1e-6);
    NEAR(p[1], -1.9, 1e-6);
    NEAR(p[2], 0.4, 1e-6);
    NEAR_REL(adamw_m(o)[1], -0.02);
    NEAR_REL(adamw_v(o)[2], 9e-4);
    NEAR(st.lr, 0.1, 1e-8);
    NEAR(st.grad_norm, sqrt(0.01 + 0.04 + 0.09), 1e-7);
    assert_true(st.clip_scale == 1.0);
    assert_int_equal(st.skipped, 0);

    assert_int_equal(adamw_step(o, &c, p, g2, 0.0f, &st, &err), COH_OK);
    assert_int_equal(adamw_steps(o), 2);
    NEAR(p[0], 0.80361253, 1e-6);
    NEAR(p[1], -1.87333006, 1e-6);
    NEAR(p[2], 0.40526316, 1e-6);
    NEAR_REL(adamw_m(o)[0], 0.029);
    NEAR_REL(adamw_m(o)[1], -0.008);
    NEAR_REL(adamw_v(o)[0], 4.99e-4);
    NEAR_REL(adamw_v(o)[2], 1.791e-3);
    adamw_destroy(o);
}

static void test_weight_decay_segments(void **state)
{
    (void)state;
    /* [0,2) decayed, [2,4) not decayed, [4,6) in no segment (never decayed) */
    const optim_segment segs[2] = {{2, 2, 0}, {0, 2, 1}}; /* given out of order */
    float p[6] = {2.0f, -4.0f, 2.0f, -4.0f, 2.0f, -4.0f};
    float g[6] = {0};
    optim_config c = plain_config(0.1f);
    c.weight_decay = 0.1f;
    adamw *o;
    coh_err err;
    adamw_stats st;
    assert_int_equal(adamw_create(6, segs, 2, &o, &err), COH_OK);
    /* zero gradient: the Adam term is 0, only the decay -lr*wd*p = -0.01 p acts */
    assert_int_equal(adamw_step(o, &c, p, g, 0.0f, &st, &err), COH_OK);
    NEAR(p[0], 1.98, 1e-6);
    NEAR(p[1], -3.96, 1e-6);
    assert_true(p[2] == 2.0f && p[3] == -4.0f && p[4] == 2.0f && p[5] == -4.0f);

    /* with a gradient: p - lr * (g / (|g| + eps) + wd p) = 1.98 - 0.1 * (1 + 0.198) */
    for (int i = 0; i < 6; i++)
        g[i] = 0.5f;
    assert_int_equal(adamw_step(o, &c, p, g, 0.0f, &st, &err), COH_OK);
    /* step 2 with m1 = v1 = 0: m = 0.05, v = 0.0025, mhat = 0.05/0.19, vhat = 0.0025/0.0199 */
    double upd = (0.05 / 0.19) / (sqrt(0.0025 / 0.0199) + 1e-8);
    NEAR(p[0], 1.98 - 0.1 * (upd + 0.1 * 1.98), 1e-6);
    NEAR(p[1], -3.96 - 0.1 * (upd - 0.1 * 3.96), 1e-6);
    NEAR(p[2], 2.0 - 0.1 * upd, 1e-6);
    NEAR(p[5], -4.0 - 0.1 * upd, 1e-6);
    adamw_destroy(o);

    /* one plain step with decay, first step: 2 - 0.1 * (1 + 0.1 * 2) = 1.88 */
    const optim_segment all[1] = {{0, 1, 1}};
    float q[1] = {2.0f}, h[1] = {0.5f};
    assert_int_equal(adamw_create(1, all, 1, &o, &err), COH_OK);
    assert_int_equal(adamw_step(o, &c, q, h, 0.0f, &st, &err), COH_OK);
    NEAR(q[0], 1.88, 1e-6);
    adamw_destroy(o);
}

static void test_bad_segments(void **state)
{
    (void)state;
    adamw *o = NULL;
    coh_err err;
    const optim_segment out_of_range[1] = {{4, 3, 1}};
    assert_int_equal(adamw_create(6, out_of_range, 1, &o, &err), COH_ERANGE);
    assert_null(o);
    assert_non_null(strstr(err.msg, "6 parameters"));
    const optim_segment overlap[2] = {{0, 3, 1}, {2, 2, 0}};
    assert_int_equal(adamw_create(6, overlap, 2, &o, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "overlap"));
    assert_int_equal(adamw_create(0, NULL, 0, &o, &err), COH_EINVAL);
    assert_int_equal(adamw_create(6, NULL, 1, &o, &err), COH_EINVAL);
    const optim_segment huge[1] = {{1, (size_t)-1, 1}};
    assert_int_equal(adamw_create(6, huge, 1, &o, &err), COH_ERANGE);
}

static void test_grad_clipping(void **state)
{
    (void)state;
    float p[2] = {0.0f, 0.0f};
    float g[2] = {3.0f, 4.0f}; /* norm 5 */
    optim_config c = plain_config(0.1f);
    c.grad_clip = 1.0f;
    adamw *o;
    coh_err err;
    adamw_stats st;
    assert_int_equal(adamw_create(2, NULL, 0, &o, &err), COH_OK);
    assert_int_equal(adamw_step(o, &c, p, g, 0.0f, &st, &err), COH_OK);
    double scale = 1.0 / (5.0 + 1e-6);
    NEAR(st.grad_norm, 5.0, 1e-12); /* reported before clipping */
    NEAR(st.clip_scale, scale, 1e-12);
    NEAR(g[0], 3.0 * scale, 1e-7); /* clipped in place */
    NEAR(g[1], 4.0 * scale, 1e-7);
    NEAR_REL(adamw_m(o)[0], 0.1 * 3.0 * scale);
    NEAR_REL(adamw_v(o)[1], 0.01 * 16.0 * scale * scale);

    /* under the threshold nothing is scaled */
    float g2[2] = {0.3f, 0.4f};
    assert_int_equal(adamw_step(o, &c, p, g2, 0.0f, &st, &err), COH_OK);
    assert_true(st.clip_scale == 1.0);
    NEAR(st.grad_norm, 0.5, 1e-7);
    assert_true(g2[0] == 0.3f && g2[1] == 0.4f);

    /* clipping off: a huge gradient stays as it is */
    c.grad_clip = 0.0f;
    float g3[2] = {300.0f, 400.0f};
    assert_int_equal(adamw_step(o, &c, p, g3, 0.0f, &st, &err), COH_OK);
    assert_true(st.clip_scale == 1.0);
    NEAR(st.grad_norm, 500.0, 1e-9);
    assert_true(g3[0] == 300.0f);
    adamw_destroy(o);
}

static void test_nonfinite_gradient_skips(void **state)
{
    (void)state;
    float p[3] = {1.0f, 2.0f, 3.0f};
    float g[3] = {0.1f, 0.2f, 0.3f};
    optim_config c = plain_config(0.1f);
    c.grad_clip = 0.05f; /* would clip (and so write grads) if the step went ahead */
    adamw *o;
    coh_err err;
    adamw_stats st;
    assert_int_equal(adamw_create(3, NULL, 0, &o, &err), COH_OK);
    assert_int_equal(adamw_step(o, &c, p, g, 0.0f, &st, &err), COH_OK);
    float p0[3], m0[3], v0[3];
    memcpy(p0, p, sizeof p);
    memcpy(m0, adamw_m(o), sizeof m0);
    memcpy(v0, adamw_v(o), sizeof v0);

    const float bad_values[3] = {NAN, INFINITY, -INFINITY};
    for (int j = 0; j < 3; j++) {
        float bad[3] = {0.5f, bad_values[j], 0.25f};
        st.skipped = 0;
        assert_int_equal(adamw_step(o, &c, p, bad, 0.0f, &st, &err), COH_ENONFINITE);
        assert_int_equal(err.code, COH_ENONFINITE);
        assert_non_null(strstr(err.msg, "element 1"));
        assert_int_equal(st.skipped, 1);
        assert_int_equal(adamw_steps(o), 1);
        assert_memory_equal(p, p0, sizeof p0);
        assert_memory_equal(adamw_m(o), m0, sizeof m0);
        assert_memory_equal(adamw_v(o), v0, sizeof v0);
        assert_true(bad[0] == 0.5f && bad[2] == 0.25f); /* not clipped either */
    }
    /* and the next good step proceeds as step 2 */
    assert_int_equal(adamw_step(o, &c, p, g, 0.0f, &st, &err), COH_OK);
    assert_int_equal(adamw_steps(o), 2);
    adamw_destroy(o);
}

static void test_lr_schedule(void **state)
{
    (void)state;
    optim_config c = optim_config_default();
    c.lr = 1.0f;
    /* constant, no warm-up */
    NEAR(optim_lr_at(&c, 0), 1.0, 0);
    NEAR(optim_lr_at(&c, 1000), 1.0, 0);

    /* warm-up 4: lr * (step + 1) / 4, then the schedule over [4, 14] */
    c.warmup_steps = 4;
    c.total_steps = 14;
    c.min_lr_ratio = 0.1f;
    NEAR(optim_lr_at(&c, 0), 0.25, 1e-7);
    NEAR(optim_lr_at(&c, 1), 0.5, 1e-7);
    NEAR(optim_lr_at(&c, 3), 1.0, 1e-7);
    NEAR(optim_lr_at(&c, 4), 1.0, 1e-7);
    NEAR(optim_lr_at(&c, 50), 1.0, 1e-7); /* constant stays */

    c.schedule = SCHED_LINEAR;
    NEAR(optim_lr_at(&c, 0), 0.25, 1e-7);
    NEAR(optim_lr_at(&c, 4), 1.0, 1e-7);
    NEAR(optim_lr_at(&c, 6), 0.1 + 0.9 * 0.8, 1e-6);
    NEAR(optim_lr_at(&c, 9), 0.55, 1e-6);
    NEAR(optim_lr_at(&c, 14), 0.1, 1e-7);
    NEAR(optim_lr_at(&c, 100), 0.1, 1e-7);

    c.schedule = SCHED_COSINE;
    NEAR(optim_lr_at(&c, 2), 0.75, 1e-7);
    NEAR(optim_lr_at(&c, 4), 1.0, 1e-7);
    NEAR(optim_lr_at(&c, 6), 0.1 + 0.45 * (1.0 + cos(0.2 * M_PI)), 1e-6); /* 0.9140576 */
    NEAR(optim_lr_at(&c, 9), 0.55, 1e-6);
    NEAR(optim_lr_at(&c, 14), 0.1, 1e-7);
    NEAR(optim_lr_at(&c, 20), 0.1, 1e-7);

    /* no warm-up, cosine to zero over 10 steps */
    c.warmup_steps = 0;
    c.total_steps = 10;
    c.min_lr_ratio = 0.0f;
    NEAR(optim_lr_at(&c, 0), 1.0, 1e-7);
    NEAR(optim_lr_at(&c, 5), 0.5, 1e-6);
    NEAR(optim_lr_at(&c, 10), 0.0, 1e-7);
    /* total_steps <= 0: no decay */
    c.total_steps = 0;
    NEAR(optim_lr_at(&c, 5), 1.0, 0);
}

static void test_step_uses_schedule(void **state)
{
    (void)state;
    optim_config c = plain_config(1.0f);
    c.warmup_steps = 2;
    float p[1] = {0.0f}, g[1] = {1.0f};
    adamw *o;
    coh_err err;
    adamw_stats st;
    assert_int_equal(adamw_create(1, NULL, 0, &o, &err), COH_OK);
    assert_int_equal(adamw_step(o, &c, p, g, 0.0f, &st, &err), COH_OK);
    NEAR(st.lr, 0.5, 1e-7); /* step 0 of a 2-step warm-up */
    NEAR(p[0], -0.5, 1e-6);
    assert_int_equal(adamw_step(o, &c, p, g, 0.0f, &st, &err), COH_OK);
    NEAR(st.lr, 1.0, 1e-7);
    assert_int_equal(adamw_step(o, &c, p, g, 0.25f, &st, &err), COH_OK);
    NEAR(st.lr, 0.25, 1e-7); /* override */
    /* resuming: the schedule follows the restored step count */
    adamw_set_steps(o, 0);
    assert_int_equal(adamw_step(o, &c, p, g, 0.0f, &st, &err), COH_OK);
    NEAR(st.lr, 0.5, 1e-7);
    assert_int_equal(adamw_steps(o), 1);
    adamw_destroy(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_names),
        cmocka_unit_test(test_two_steps_by_hand),
        cmocka_unit_test(test_weight_decay_segments),
        cmocka_unit_test(test_bad_segments),
        cmocka_unit_test(test_grad_clipping),
        cmocka_unit_test(test_nonfinite_gradient_skips),
        cmocka_unit_test(test_lr_schedule),
        cmocka_unit_test(test_step_uses_schedule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
