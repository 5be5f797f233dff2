/* kern.h - vectorised element-wise kernels of the model, the loss and the optimizer, with
 * runtime CPU dispatch.
 *
 * The build targets x86-64-v2 (SSE4.2), so the compiler never emits AVX on its own. Each
 * kernel is compiled three times from one template (kern_impl.h): portable scalar code,
 * AVX2 + FMA (8 lanes) and AVX-512 (16 lanes). The first call picks the widest set the CPU
 * runs (__builtin_cpu_supports), once per process; COHORT_KERN=scalar|avx2|avx512 in the
 * environment forces a narrower set (for tests and comparisons; a set the CPU lacks is
 * never chosen).
 *
 * Numerics: sums are accumulated in float vector lanes (rows of a few thousand elements at
 * most), except kern_sumsq and kern_exp_sums, which accumulate in double. exp is a degree-6
 * polynomial after range reduction (Cephes expf; a few ulp), arguments clamped to [-87, 88].
 * Results can differ from the scalar set in the last bits; every set gives the same result
 * for a row whatever the number of rows in the call (the sampler relies on this).
 *
 * Pure functions: no allocation, no I/O, no threads; any pointer may be unaligned.
 */
#ifndef COHORT_KERN_H
#define COHORT_KERN_H

#include <stddef.h>

/* The chosen instruction set: "scalar", "avx2" or "avx512". */
const char *kern_isa(void);

/* RMSNorm of N rows of D: rstd[n] = 1 / sqrt(mean(x^2) + eps) (rstd may be NULL),
 * out = x * rstd * w. out may equal x. */
void kern_rmsnorm(float *out, float *rstd, const float *x, const float *w, int N, int D,
                  float eps);
/* Backward of kern_rmsnorm given dout: dx += d/dx, dw[D] += sum over rows of dout*x*rstd. */
void kern_rmsnorm_bwd(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int D);

/* h[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)). */
void kern_swiglu(float *h, const float *gate, const float *up, size_t n);
/* Backward of kern_swiglu given dh: dup = dh * silu(g), dgate = dh * up * silu'(g).
 * dgate may equal dh. */
void kern_swiglu_bwd(float *dgate, float *dup, const float *dh, const float *gate,
                     const float *up, size_t n);

/* Rotary embedding of n_vec vectors of hd floats (pairs i, i + hd/2), each vector v at
 * x + k * hd for k in [0, n_vec), all at the same position: cos_t/sin_t hold hd/2 floats.
 * inverse = 1 applies the transpose. */
void kern_rope(float *x, int n_vec, int hd, const float *cos_t, const float *sin_t, int inverse);

/* In-place softmax of row[0..len) (len >= 1); row[len..width) is set to 0. */
void kern_softmax_row(float *row, int len, int width);
/* Softmax backward in place: dp[j] = p[j] * (dp[j] - sum_k p[k] dp[k]) over [0, len);
 * dp[len..width) is set to 0. */
void kern_softmax_bwd_row(float *dp, const float *p, int len, int width);

/* log-sum-exp of x[0..n) * scale (scale > 0), accumulated in float lanes. */
float kern_logsumexp(const float *x, int n, float scale);

/* kern_max_scaled: max over [0, n) of x[i] * scale (scale > 0).
 * kern_exp_sums: with t_i = x_i * scale - shift and e_i = exp(t_i) (in float lanes, sums in
 * double): *sum_e = sum e_i and, when sum_ez is not NULL, *sum_ez = sum e_i t_i. */
float kern_max_scaled(const float *x, int n, float scale);
void kern_exp_sums(const float *x, int n, float scale, float shift, double *sum_e,
                   double *sum_ez);
/* d[i] += scale * p_i * (a + b * (z_i - lse)), p_i = exp(z_i - lse), z = x * scale: the
 * gradient of a softmax-based loss over one row (softmax.c's sm_backward). */
void kern_softmax_grad(float *d, const float *x, int n, float scale, float lse, float a, float b);

/* sum of g[i]^2 over [0, n), accumulated in double. */
double kern_sumsq(const float *g, size_t n);

/* One AdamW update of n parameters (see optim.h), all in float:
 *   g *= gscale (written back when gscale != 1), m = b1 m + (1 - b1) g,
 *   v = b2 v + (1 - b2) g^2, p = p * keep - step * m / (sqrt(v) * isbc2 + eps)
 * with keep = 1 - lr * wd, step = lr / (1 - b1^t), isbc2 = 1 / sqrt(1 - b2^t). */
typedef struct kern_adamw_k {
    float b1, omb1, b2, omb2, gscale, keep, step, isbc2, eps;
} kern_adamw_k;
void kern_adamw(float *p, float *g, float *m, float *v, size_t n, const kern_adamw_k *k);

#endif
