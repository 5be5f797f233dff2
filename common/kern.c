/* kern.c - runtime-dispatched element-wise kernels (see kern.h).
 *
 * kern_impl.h is included three times below, between macro definitions that map its vector
 * layer onto plain floats, AVX2 + FMA intrinsics and AVX-512 intrinsics. The AVX variants
 * are compiled under "#pragma GCC target" so that the rest of the program keeps the
 * x86-64-v2 baseline; they only run after __builtin_cpu_supports said the CPU has them.
 */
#include "kern.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define KERN_X86 1
#include <immintrin.h>
#else
#define KERN_X86 0
#endif

/* ---- scalar ------------------------------------------------------------------------------ */

#define KERN_W 1
#define KF(name) name##_scalar
#define VT float
#define VLD(p) (*(p))
#define VST(p, v) (*(p) = (v))
#define VSET(x) (x)
#define VZERO 0.0f
#define VADD(a, b) ((a) + (b))
#define VSUB(a, b) ((a) - (b))
#define VMUL(a, b) ((a) * (b))
#define VDIV(a, b) ((a) / (b))
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VMAX(a, b) ((a) > (b) ? (a) : (b))
#define VSQRT(a) sqrtf(a)
#define VHSUM(a) (a)
#define VHMAX(a) (a)
#define VEXP(a) expf(a)
#include "kern_impl.h"

static void exp_sums_scalar(const float *x, int n, float scale, float shift, double *sum_e,
                            double *sum_ez)
{
    double se = 0.0, sz = 0.0;
    for (int i = 0; i < n; i++) {
        float t = x[i] * scale - shift;
        double e = expf(t);
        se += e;
        sz += e * t;
    }
    *sum_e = se;
    if (sum_ez)
        *sum_ez = sz;
}

static double sumsq_scalar(const float *g, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)g[i] * (double)g[i];
    return s;
}

#undef KERN_W
#undef KF
#undef VT
#undef VLD
#undef VST
#undef VSET
#undef VZERO
#undef VADD
#undef VSUB
#undef VMUL
#undef VDIV
#undef VFMA
#undef VMAX
#undef VSQRT
#undef VHSUM
#undef VHMAX
#undef VEXP

#if KERN_X86
/* exp constants (Cephes expf): exp(x) = 2^n exp(r), r = x - n ln2 in two parts */
#define KERN_EXP_LO -87.0f
#define KERN_EXP_HI 88.0f
#define KERN_LOG2E 1.44269504088896341f
#define KERN_LN2_HI 0.693359375f
#define KERN_LN2_LO -2.12194440e-4f
#define KERN_P0 1.9875691500e-4f
#define KERN_P1 1.3981999507e-3f
#define KERN_P2 8.3334519073e-3f
#define KERN_P3 4.1665795894e-2f
#define KERN_P4 1.6666665459e-1f
#define KERN_P5 5.0000001201e-1f

/* ---- AVX2 + FMA -------------------------------------------------------------------------- */

#pragma GCC push_options
#pragma GCC target("avx2,fma")

static inline __m256 exp_avx2(__m256 x)
{
    /* max/min with the constant first: a NaN x passes through */
    x = _mm256_min_ps(_mm256_set1_ps(KERN_EXP_HI), _mm256_max_ps(_mm256_set1_ps(KERN_EXP_LO), x));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(KERN_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(KERN_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(KERN_LN2_LO), r);
    __m256 p = _mm256_set1_ps(KERN_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(KERN_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(KERN_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(KERN_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(KERN_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(KERN_P5));
    __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static inline float hsum_avx2(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hmax_avx2(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define KERN_W 8
#define KF(name) name##_avx2
#define VT __m256
#define VLD(p) _mm256_loadu_ps(p)
#define VST(p, v) _mm256_storeu_ps((p), (v))
#define VSET(x) _mm256_set1_ps(x)
#define VZERO _mm256_setzero_ps()
#define VADD _mm256_add_ps
#define VSUB _mm256_sub_ps
#define VMUL _mm256_mul_ps
#define VDIV _mm256_div_ps
#define VFMA _mm256_fmadd_ps
#define VMAX _mm256_max_ps
#define VSQRT _mm256_sqrt_ps
#define VHSUM hsum_avx2
#define VHMAX hmax_avx2
#define VEXP exp_avx2
#include "kern_impl.h"

static void exp_sums_avx2(const float *x, int n, float scale, float shift, double *sum_e,
                          double *sum_ez)
{
    __m256d e0 = _mm256_setzero_pd(), e1 = e0, z0 = e0, z1 = e0;
    __m256 vs = _mm256_set1_ps(scale), vh = _mm256_set1_ps(shift);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 z = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs), vh);
        __m256 e = exp_avx2(z);
        __m256d elo = _mm256_cvtps_pd(_mm256_castps256_ps128(e)),
                ehi = _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1));
        e0 = _mm256_add_pd(e0, elo);
        e1 = _mm256_add_pd(e1, ehi);
        z0 = _mm256_fmadd_pd(elo, _mm256_cvtps_pd(_mm256_castps256_ps128(z)), z0);
        z1 = _mm256_fmadd_pd(ehi, _mm256_cvtps_pd(_mm256_extractf128_ps(z, 1)), z1);
    }
    double te[4], tz[4];
    _mm256_storeu_pd(te, _mm256_add_pd(e0, e1));
    _mm256_storeu_pd(tz, _mm256_add_pd(z0, z1));
    double se = (te[0] + te[1]) + (te[2] + te[3]), sz = (tz[0] + tz[1]) + (tz[2] + tz[3]);
    for (; i < n; i++) {
        float t = x[i] * scale - shift;
        double e = expf(t);
        se += e;
        sz += e * t;
    }
    *sum_e = se;
    if (sum_ez)
        *sum_ez = sz;
}

static double sumsq_avx2(const float *g, size_t n)
{
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256d x0 = _mm256_cvtps_pd(_mm_loadu_ps(g + i)), x1 = _mm256_cvtps_pd(_mm_loadu_ps(g + i + 4));
        a0 = _mm256_fmadd_pd(x0, x0, a0);
        a1 = _mm256_fmadd_pd(x1, x1, a1);
    }
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(a0, a1));
    double s = (t[0] + t[1]) + (t[2] + t[3]);
    for (; i < n; i++)
        s += (double)g[i] * (double)g[i];
    return s;
}

#undef KERN_W
#undef KF
#undef VT
#undef VLD
#undef VST
#undef VSET
#undef VZERO
#undef VADD
#undef VSUB
#undef VMUL
#undef VDIV
#undef VFMA
#undef VMAX
#undef VSQRT
#undef VHSUM
#undef VHMAX
#undef VEXP
#pragma GCC pop_options

/* ---- AVX-512 ----------------------------------------------------------------------------- */

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512vl,avx512bw,avx512dq")

static inline __m512 exp_avx512(__m512 x)
{
    x = _mm512_min_ps(_mm512_set1_ps(KERN_EXP_HI), _mm512_max_ps(_mm512_set1_ps(KERN_EXP_LO), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(KERN_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(KERN_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(KERN_LN2_LO), r);
    __m512 p = _mm512_set1_ps(KERN_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(KERN_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(KERN_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(KERN_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(KERN_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(KERN_P5));
    __m512 y = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

static inline float hsum_avx512(__m512 v)
{
    __m256 s = _mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    t = _mm_add_ps(t, _mm_movehl_ps(t, t));
    t = _mm_add_ss(t, _mm_movehdup_ps(t));
    return _mm_cvtss_f32(t);
}

static inline float hmax_avx512(__m512 v)
{
    __m256 s = _mm256_max_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 t = _mm_max_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    t = _mm_max_ps(t, _mm_movehl_ps(t, t));
    t = _mm_max_ss(t, _mm_movehdup_ps(t));
    return _mm_cvtss_f32(t);
}

#define KERN_W 16
#define KF(name) name##_avx512
#define VT __m512
#define VLD(p) _mm512_loadu_ps(p)
#define VST(p, v) _mm512_storeu_ps((p), (v))
#define VSET(x) _mm512_set1_ps(x)
#define VZERO _mm512_setzero_ps()
#define VADD _mm512_add_ps
#define VSUB _mm512_sub_ps
#define VMUL _mm512_mul_ps
#define VDIV _mm512_div_ps
#define VFMA _mm512_fmadd_ps
#define VMAX _mm512_max_ps
#define VSQRT _mm512_sqrt_ps
#define VHSUM hsum_avx512
#define VHMAX hmax_avx512
#define VEXP exp_avx512
#include "kern_impl.h"

static void exp_sums_avx512(const float *x, int n, float scale, float shift, double *sum_e,
                            double *sum_ez)
{
    __m512d e0 = _mm512_setzero_pd(), e1 = e0, z0 = e0, z1 = e0;
    __m512 vs = _mm512_set1_ps(scale), vh = _mm512_set1_ps(shift);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 z = _mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vs), vh);
        __m512 e = exp_avx512(z);
        __m512d elo = _mm512_cvtps_pd(_mm512_castps512_ps256(e)),
                ehi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)));
        __m512d zlo = _mm512_cvtps_pd(_mm512_castps512_ps256(z)),
                zhi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(z), 1)));
        e0 = _mm512_add_pd(e0, elo);
        e1 = _mm512_add_pd(e1, ehi);
        z0 = _mm512_fmadd_pd(elo, zlo, z0);
        z1 = _mm512_fmadd_pd(ehi, zhi, z1);
    }
    double se = _mm512_reduce_add_pd(_mm512_add_pd(e0, e1)),
           sz = _mm512_reduce_add_pd(_mm512_add_pd(z0, z1));
    for (; i < n; i++) {
        float t = x[i] * scale - shift;
        double e = expf(t);
        se += e;
        sz += e * t;
    }
    *sum_e = se;
    if (sum_ez)
        *sum_ez = sz;
}

static double sumsq_avx512(const float *g, size_t n)
{
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512d x0 = _mm512_cvtps_pd(_mm256_loadu_ps(g + i));
        __m512d x1 = _mm512_cvtps_pd(_mm256_loadu_ps(g + i + 8));
        a0 = _mm512_fmadd_pd(x0, x0, a0);
        a1 = _mm512_fmadd_pd(x1, x1, a1);
    }
    double t[8];
    _mm512_storeu_pd(t, _mm512_add_pd(a0, a1));
    double s = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
    for (; i < n; i++)
        s += (double)g[i] * (double)g[i];
    return s;
}

#undef KERN_W
#undef KF
#undef VT
#undef VLD
#undef VST
#undef VSET
#undef VZERO
#undef VADD
#undef VSUB
#undef VMUL
#undef VDIV
#undef VFMA
#undef VMAX
#undef VSQRT
#undef VHSUM
#undef VHMAX
#undef VEXP
#pragma GCC pop_options
#endif /* KERN_X86 */

/* ---- dispatch ---------------------------------------------------------------------------- */

typedef struct kern_ops {
    const char *name;
    void (*rmsnorm)(float *, float *, const float *, const float *, int, int, float);
    void (*rmsnorm_bwd)(float *, float *, const float *, const float *, const float *,
                        const float *, int, int);
    void (*swiglu)(float *, const float *, const float *, size_t);
    void (*swiglu_bwd)(float *, float *, const float *, const float *, const float *, size_t);
    void (*rope)(float *, int, int, const float *, const float *, int);
    void (*softmax_row)(float *, int, int);
    void (*softmax_bwd_row)(float *, const float *, int, int);
    float (*logsumexp)(const float *, int, float);
    double (*sumsq)(const float *, size_t);
    float (*max_scaled)(const float *, int, float);
    void (*exp_sums)(const float *, int, float, float, double *, double *);
    void (*softmax_grad)(float *, const float *, int, float, float, float, float);
    void (*adamw)(float *, float *, float *, float *, size_t, const kern_adamw_k *);
} kern_ops;

#define KERN_OPS(sfx, label)                                                                  \
    {                                                                                         \
        label, rmsnorm_##sfx, rmsnorm_bwd_##sfx, swiglu_##sfx, swiglu_bwd_##sfx, rope_##sfx,  \
            softmax_row_##sfx, softmax_bwd_row_##sfx, logsumexp_##sfx, sumsq_##sfx,           \
            max_scaled_##sfx, exp_sums_##sfx, softmax_grad_##sfx, adamw_##sfx                 \
    }

static const kern_ops ops_scalar = KERN_OPS(scalar, "scalar");
#if KERN_X86
static const kern_ops ops_avx2 = KERN_OPS(avx2, "avx2");
static const kern_ops ops_avx512 = KERN_OPS(avx512, "avx512");
#endif

static const kern_ops *g_ops = &ops_scalar;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void kern_pick(void)
{
#if KERN_X86
    __builtin_cpu_init();
    int has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int has512 = has2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    const char *want = getenv("COHORT_KERN");
    if (want && strcmp(want, "scalar") == 0)
        has2 = has512 = 0;
    else if (want && strcmp(want, "avx2") == 0)
        has512 = 0;
    g_ops = has512 ? &ops_avx512 : has2 ? &ops_avx2 : &ops_scalar;
#endif
}

static const kern_ops *ops(void)
{
    pthread_once(&g_once, kern_pick);
    return g_ops;
}

const char *kern_isa(void) { return ops()->name; }

void kern_rmsnorm(float *out, float *rstd, const float *x, const float *w, int N, int D, float eps)
{
    ops()->rmsnorm(out, rstd, x, w, N, D, eps);
}

void kern_rmsnorm_bwd(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int D)
{
    ops()->rmsnorm_bwd(dx, dw, dout, x, w, rstd, N, D);
}

void kern_swiglu(float *h, const float *gate, const float *up, size_t n)
{
    ops()->swiglu(h, gate, up, n);
}

void kern_swiglu_bwd(float *dgate, float *dup, const float *dh, const float *gate,
                     const float *up, size_t n)
{
    ops()->swiglu_bwd(dgate, dup, dh, gate, up, n);
}

void kern_rope(float *x, int n_vec, int hd, const float *cos_t, const float *sin_t, int inverse)
{
    ops()->rope(x, n_vec, hd, cos_t, sin_t, inverse);
}

void kern_softmax_row(float *row, int len, int width) { ops()->softmax_row(row, len, width); }

void kern_softmax_bwd_row(float *dp, const float *p, int len, int width)
{
    ops()->softmax_bwd_row(dp, p, len, width);
}

float kern_logsumexp(const float *x, int n, float scale) { return ops()->logsumexp(x, n, scale); }

double kern_sumsq(const float *g, size_t n) { return ops()->sumsq(g, n); }

void kern_adamw(float *p, float *g, float *m, float *v, size_t n, const kern_adamw_k *k)
{
    ops()->adamw(p, g, m, v, n, k);
}

float kern_max_scaled(const float *x, int n, float scale) { return ops()->max_scaled(x, n, scale); }

void kern_exp_sums(const float *x, int n, float scale, float shift, double *sum_e, double *sum_ez)
{
    ops()->exp_sums(x, n, scale, shift, sum_e, sum_ez);
}

void kern_softmax_grad(float *d, const float *x, int n, float scale, float lse, float a, float b)
{
    ops()->softmax_grad(d, x, n, scale, lse, a, b);
}
