/* test_gemv.c - the decoding kernels of common/gemv.h, every instruction-set variant this CPU
 * runs, against double-precision references: odd sizes (vector tails, partial tiles),
 * leading dimensions larger than the rows, accumulate vs overwrite, exp / softmax sums,
 * SwiGLU. */
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
#include "rng.h"

static const gv_isa all_isas[] = {GV_ISA_GENERIC, GV_ISA_AVX2, GV_ISA_AVX512};

static void fill(float *x, size_t n, rng *r, double scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(rng_normal(r) * scale);
}

static void check_nt(int N, int n_in, int n_out, int pad, int acc, rng *r)
{
    int ldx = n_in + pad, ldw = n_in + 2 * pad, ldy = n_out + pad;
    float *x = malloc(sizeof(float) * (size_t)N * ldx);
    float *W = malloc(sizeof(float) * (size_t)n_out * ldw);
    float *y = malloc(sizeof(float) * (size_t)N * ldy);
    float *y0 = malloc(sizeof(float) * (size_t)N * ldy);
    fill(x, (size_t)N * ldx, r, 1.0);
    fill(W, (size_t)n_out * ldw, r, 1.0);
    fill(y0, (size_t)N * ldy, r, 1.0);
    memcpy(y, y0, sizeof(float) * (size_t)N * ldy);
    gv_matmul_nt(y, ldy, x, ldx, W, ldw, N, n_in, n_out, acc);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < ldy; j++) {
            float got = y[(size_t)i * ldy + j];
            if (j >= n_out) { /* padding untouched */
                assert_true(got == y0[(size_t)i * ldy + j]);
                continue;
            }
            double ref = acc ? y0[(size_t)i * ldy + j] : 0.0, mag = fabs(ref);
            for (int k = 0; k < n_in; k++) {
                double t = (double)x[(size_t)i * ldx + k] * W[(size_t)j * ldw + k];
                ref += t;
                mag += fabs(t);
            }
            if (fabs(got - ref) > 1e-5 * mag + 1e-6)
                fail_msg("%s nt N=%d in=%d out=%d acc=%d: y[%d,%d] = %.7g, want %.7g",
                         gv_isa_name(), N, n_in, n_out, acc, i, j, (double)got, ref);
        }
    free(x);
    free(W);
    free(y);
    free(y0);
}

static void check_nn(int N, int J, int n, int pad, rng *r)
{
    int ldp = J + pad, ldv = n + pad, ldy = n + 2 * pad;
    float *P = malloc(sizeof(float) * (size_t)N * ldp);
    float *V = malloc(sizeof(float) * (size_t)J * ldv);
    float *y = malloc(sizeof(float) * (size_t)N * ldy);
    fill(P, (size_t)N * ldp, r, 1.0);
    fill(V, (size_t)J * ldv, r, 1.0);
    for (size_t i = 0; i < (size_t)N * ldy; i++)
        y[i] = 7.0f;
    gv_matmul_nn(y, ldy, P, ldp, V, ldv, N, J, n);
    for (int i = 0; i < N; i++)
        for (int d = 0; d < ldy; d++) {
            float got = y[(size_t)i * ldy + d];
            if (d >= n) {
                assert_true(got == 7.0f);
                continue;
            }
            double ref = 0.0, mag = 0.0;
            for (int j = 0; j < J; j++) {
                double t = (double)P[(size_t)i * ldp + j] * V[(size_t)j * ldv + d];
                ref += t;
                mag += fabs(t);
            }
            if (fabs(got - ref) > 1e-5 * mag + 1e-6)
                fail_msg("%s nn N=%d J=%d n=%d: y[%d,%d] = %.7g, want %.7g", gv_isa_name(), N,
                         J, n, i, d, (double)got, ref);
        }
    free(P);
    free(V);
    free(y);
}

static void test_matmul(void **state)
{
    (void)state;
    static const int Ns[] = {1, 2, 3, 4, 5, 7, 8, 16, 17};
    static const int ins[] = {1, 5, 8, 16, 33, 64, 100};
    static const int outs[] = {1, 3, 4, 8, 9, 13, 37};
    int tested = 0;
    for (size_t v = 0; v < sizeof all_isas / sizeof *all_isas; v++) {
        if (gv_select(all_isas[v]) != 0)
            continue;
        tested++;
        rng r;
        rng_init(&r, 5 + v);
        for (size_t a = 0; a < sizeof Ns / sizeof *Ns; a++)
            for (size_t b = 0; b < sizeof ins / sizeof *ins; b++)
                for (size_t c = 0; c < sizeof outs / sizeof *outs; c++)
                    check_nt(Ns[a], ins[b], outs[c], (int)(a + c) % 3, (int)(a + b + c) % 2, &r);
        static const int Js[] = {1, 2, 7, 70};
        static const int ns[] = {1, 8, 15, 16, 33, 64, 70, 130};
        for (int N = 1; N <= 3; N++)
            for (size_t b = 0; b < sizeof Js / sizeof *Js; b++)
                for (size_t c = 0; c < sizeof ns / sizeof *ns; c++)
                    check_nn(N, Js[b], ns[c], (int)(b + c) % 2, &r);
    }
    assert_true(tested >= 1);
    gv_select(GV_ISA_GENERIC);
    assert_string_equal(gv_isa_name(), "generic");
}

static void test_exp_sums(void **state)
{
    (void)state;
    static const int ns[] = {1, 7, 8, 15, 16, 17, 255, 1000};
    for (size_t v = 0; v < sizeof all_isas / sizeof *all_isas; v++) {
        if (gv_select(all_isas[v]) != 0)
            continue;
        rng r;
        rng_init(&r, 77);
        for (size_t a = 0; a < sizeof ns / sizeof *ns; a++) {
            int n = ns[a];
            float *x = malloc(sizeof(float) * (size_t)n), *e = malloc(sizeof(float) * (size_t)n);
            fill(x, (size_t)n, &r, 6.0);
            x[n / 2] = -200.0f; /* far below the max: a tiny value, not NaN */
            float mx = gv_max(x, n), ref_mx = x[0];
            for (int i = 1; i < n; i++)
                ref_mx = x[i] > ref_mx ? x[i] : ref_mx;
            assert_true(mx == ref_mx);
            float scale = 1.0f / 0.7f, shift = mx * scale;
            double ez = 0.0, s = gv_exp_sum(e, x, n, scale, shift, &ez);
            double rs = 0.0, rez = 0.0;
            for (int i = 0; i < n; i++) {
                double z = (double)x[i] * scale, ref = exp(z - shift);
                rs += ref;
                rez += ref * z;
                /* the kernels round z = x * scale and z - shift to float */
                if (fabs(e[i] - ref) > (1e-6 + (fabs(z) + fabs(z - shift)) * 1.2e-7) * ref + 1e-37)
                    fail_msg("%s exp(%g) = %.9g, want %.9g", gv_isa_name(), z - shift,
                             (double)e[i], ref);
            }
            assert_true(fabs(s - rs) <= 5e-6 * rs);
            assert_true(fabs(ez - rez) <= 5e-6 * fabs(rez) + 5e-6 * rs);
            /* in place, without the expectation */
            memcpy(e, x, sizeof(float) * (size_t)n);
            double s2 = gv_exp_sum(e, e, n, scale, shift, NULL);
            assert_true(s2 == s);
            gv_scale(e, n, 0.5f);
            for (int i = 0; i < n; i++)
                assert_true(fabsf(e[i] - 0.5f * (float)exp((double)x[i] * scale - shift)) <=
                            5e-6f);
            /* SwiGLU */
            float *g = malloc(sizeof(float) * (size_t)n);
            fill(g, (size_t)n, &r, 4.0);
            g[0] = -100.0f;
            memcpy(e, g, sizeof(float) * (size_t)n);
            gv_silu_mul(e, x, (size_t)n);
            for (int i = 0; i < n; i++) {
                double ref = (double)g[i] / (1.0 + exp(-(double)g[i])) * x[i];
                if (fabs(e[i] - ref) > 1e-6 * fabs(ref) + 1e-7)
                    fail_msg("%s silu(%g) * %g = %.9g, want %.9g", gv_isa_name(), (double)g[i],
                             (double)x[i], (double)e[i], ref);
            }
            /* a NaN argument gives a NaN sum */
            x[n - 1] = NAN;
            assert_true(isnan(gv_exp_sum(e, x, n, 1.0f, 0.0f, NULL)));
            free(g);
            free(x);
            free(e);
        }
    }
    gv_select(GV_ISA_GENERIC);
}

static void test_select(void **state)
{
    (void)state;
    assert_int_equal(gv_isa_supported(GV_ISA_GENERIC), 1);
    assert_int_equal(gv_select(GV_ISA_GENERIC), 0);
    for (size_t v = 0; v < sizeof all_isas / sizeof *all_isas; v++)
        assert_int_equal(gv_select(all_isas[v]), gv_isa_supported(all_isas[v]) ? 0 : -1);
    assert_int_equal(gv_select((gv_isa)99), -1);
    printf("kernels: %s (avx2 %d, avx512 %d)\n", gv_isa_name(), gv_isa_supported(GV_ISA_AVX2),
           gv_isa_supported(GV_ISA_AVX512));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_exp_sums),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
