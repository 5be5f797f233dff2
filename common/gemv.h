/* gemv.h - vectorised kernels for decoding: matrix times a few rows, attention over a KV
 * cache, and the exponential sums of a softmax.
 *
 * Why not OpenBLAS: a decoder multiplies every weight matrix by 1..16 rows per token.
 * cblas_sgemm with so few rows packs the whole matrix each call (4-8 GFLOP/s at one row), and
 * sgemv takes one row only; these kernels stream each weight row once for all the rows of
 * the batch, at the speed of memory.
 *
 * Instruction sets: each kernel is compiled three times - generic C (the build's baseline,
 * x86-64-v2), AVX2+FMA and AVX-512 (F, VL, BW, DQ) - and the best one the CPU supports is
 * chosen once, at the first call (gv_isa_name says which). Results differ between variants
 * by float rounding only (summation order); one variant is always deterministic.
 *
 * Threads: no kernel starts threads or keeps state; all are safe to call concurrently.
 * gv_select (tests, benchmarks) must not race with other calls.
 */
#ifndef COHORT_GEMV_H
#define COHORT_GEMV_H

#include <stddef.h>

typedef enum gv_isa {
    GV_ISA_GENERIC = 0,
    GV_ISA_AVX2 = 1,   /* AVX2 + FMA */
    GV_ISA_AVX512 = 2, /* AVX-512 F, VL, BW, DQ */
} gv_isa;

/* The variant in use ("generic", "avx2", "avx512"). */
const char *gv_isa_name(void);
/* 1 when this CPU runs isa. */
int gv_isa_supported(gv_isa isa);
/* Use isa from now on (tests and benchmarks compare the variants). Returns 0, or -1 (and
 * changes nothing) when the CPU does not support it. Not thread-safe. */
int gv_select(gv_isa isa);

/* y[N, n_out] (=|+=) x[N, n_in] W[n_out, n_in]^T with leading dimensions (row strides, in
 * floats) ldy >= n_out, ldx >= n_in, ldw >= n_in; acc = 0 overwrites y, 1 adds into it.
 * Efficient for N up to a few dozen rows: each row of W is read once per 4 rows of x
 * (once in all for N <= 4), so the whole batch costs one pass over W when W fits in cache. */
void gv_matmul_nt(float *y, int ldy, const float *x, int ldx, const float *W, int ldw, int N,
                  int n_in, int n_out, int acc);
/* The contiguous case of gv_matmul_nt, shaped like la_linear: a Linear layer. */
void gv_linear(float *y, const float *x, const float *W, int N, int n_in, int n_out, int acc);

/* y[N, n] = P[N, J] V[J, n] (overwrites y): the weighted sum of value rows. Leading
 * dimensions ldy >= n, ldp >= J, ldv >= n. */
void gv_matmul_nn(float *y, int ldy, const float *P, int ldp, const float *V, int ldv, int N,
                  int J, int n);

/* max of x[0..n), n >= 1 (a NaN in x may be missed: gv_exp_sum of it is NaN). */
float gv_max(const float *x, int n);
/* e[i] = exp(x[i] * scale - shift) for i in [0, n); returns the sum of e in double. When
 * sum_ez is not NULL, *sum_ez = the sum of e[i] * (x[i] * scale), also in double (the
 * softmax's expectation of its argument, for entropies). e may be x (in place). The argument
 * is formed in float; exp itself has a relative error of a few float ulps; arguments below
 * about -87 give tiny positive values, not 0; a NaN argument gives a NaN sum. */
double gv_exp_sum(float *e, const float *x, int n, float scale, float shift, double *sum_ez);
/* x[0..n) *= a. */
void gv_scale(float *x, int n, float a);
/* g[i] = silu(g[i]) * u[i] = g[i] / (1 + exp(-g[i])) * u[i] for i in [0, n): SwiGLU. */
void gv_silu_mul(float *g, const float *u, size_t n);

#endif
