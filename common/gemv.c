/* gemv.c - decoding kernels in three instruction-set variants (see gemv.h).
 *
 * Each variant is a set of functions compiled with its own target attribute; the tile
 * helpers are always_inline with compile-time tile sizes, so every call site becomes a
 * straight-line register tile (AVX-512: 4 rows of W x 4 rows of x, 16 accumulators; one row
 * of x: 8 rows of W). While a tile is multiplied, the next block of W is prefetched, spread
 * over the tiles of the block. The variant is chosen once (pthread_once) from
 * __builtin_cpu_supports.
 */
#include "gemv.h"

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#define GV_AVX2 __attribute__((target("avx2,fma")))
#define GV_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq")))
#define GV_INLINE static inline __attribute__((always_inline))

/* Cephes expf: exp(x) = 2^n exp(r), r = x - n ln 2 in [-ln2/2, ln2/2], degree-5 polynomial. */
#define GV_EXP_LO (-87.33654f)
#define GV_EXP_HI 88.0f
#define GV_LOG2E 1.44269504088896341f
#define GV_LN2_HI 0.693359375f
#define GV_LN2_LO (-2.12194440e-4f)
#define GV_P0 1.9875691500e-4f
#define GV_P1 1.3981999507e-3f
#define GV_P2 8.3334519073e-3f
#define GV_P3 4.1665795894e-2f
#define GV_P4 1.6666665459e-1f
#define GV_P5 5.0000001201e-1f

typedef struct gv_ops {
    const char *name;
    void (*mm_nt)(float *, int, const float *, int, const float *, int, int, int, int, int);
    void (*mm_nn)(float *, int, const float *, int, const float *, int, int, int, int);
    float (*max)(const float *, int);
    double (*exp_sum)(float *, const float *, int, float, float, double *);
    void (*scale)(float *, int, float);
    void (*silu_mul)(float *, const float *, size_t);
} gv_ops;

/* ---- generic C ------------------------------------------------------------------------ */

static void mm_nt_generic(float *y, int ldy, const float *x, int ldx, const float *W, int ldw,
                          int N, int n_in, int n_out, int acc)
{
    for (int j = 0; j < n_out; j++) {
        const float *w = W + (size_t)j * ldw;
        for (int i = 0; i < N; i++) {
            const float *xi = x + (size_t)i * ldx;
            float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
            int k = 0;
            for (; k + 4 <= n_in; k += 4) {
                s0 += w[k] * xi[k];
                s1 += w[k + 1] * xi[k + 1];
                s2 += w[k + 2] * xi[k + 2];
                s3 += w[k + 3] * xi[k + 3];
            }
            float s = (s0 + s1) + (s2 + s3);
            for (; k < n_in; k++)
                s += w[k] * xi[k];
            float *o = y + (size_t)i * ldy + j;
            *o = acc ? *o + s : s;
        }
    }
}

static void mm_nn_generic(float *y, int ldy, const float *P, int ldp, const float *V, int ldv,
                          int N, int J, int n)
{
    for (int i = 0; i < N; i++) {
        float *o = y + (size_t)i * ldy;
        for (int d = 0; d < n; d++)
            o[d] = 0.0f;
        for (int j = 0; j < J; j++) {
            float p = P[(size_t)i * ldp + j];
            const float *v = V + (size_t)j * ldv;
            for (int d = 0; d < n; d++)
                o[d] += p * v[d];
        }
    }
}

static float max_generic(const float *x, int n)
{
    float m = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > m || x[i] != x[i])
            m = x[i];
    return m;
}

static double exp_sum_generic(float *e, const float *x, int n, float scale, float shift,
                              double *sum_ez)
{
    double s = 0.0, sz = 0.0;
    for (int i = 0; i < n; i++) {
        float z = x[i] * scale;
        e[i] = expf(z - shift);
        s += e[i];
        sz += (double)e[i] * z;
    }
    if (sum_ez)
        *sum_ez = sz;
    return s;
}

static void scale_generic(float *x, int n, float a)
{
    for (int i = 0; i < n; i++)
        x[i] *= a;
}

static void silu_mul_generic(float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static const gv_ops ops_generic = {"generic",     mm_nt_generic, mm_nn_generic,   max_generic,
                                   exp_sum_generic, scale_generic, silu_mul_generic};

/* ---- AVX2 + FMA ------------------------------------------------------------------------ */

static const int32_t gv_mask_tbl[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

GV_INLINE GV_AVX2 __m256i mask8(int rem) /* lanes [0, rem) on, rem in 1..8 */
{
    return _mm256_loadu_si256((const __m256i *)(gv_mask_tbl + 8 - rem));
}

GV_INLINE GV_AVX2 float hsum8(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

/* [hsum(a), hsum(b), hsum(c), hsum(d)] */
GV_INLINE GV_AVX2 __m128 hsum8x4(__m256 a, __m256 b, __m256 c, __m256 d)
{
    __m256 t0 = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
    __m256 t1 = _mm256_add_ps(_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
    __m256 u = _mm256_add_ps(_mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
}

/* y[c, r] for an R x C tile: W rows r < R, x rows c < C; R is 1 or a multiple of 4. */
GV_INLINE GV_AVX2 void nt8_tile(int R, int C, float *y, int ldy, const float *x, int ldx,
                                const float *W, int ldw, int n, int acc, const float *pf)
{
    __m256 s[8][2];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++)
            s[r][c] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 xv[2];
        if (pf && (k & 15) == 0)
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                if (C == 1)
                    _mm_prefetch((const char *)(pf + (size_t)r * ldw + k), _MM_HINT_T0);
                else
                    _mm_prefetch((const char *)(pf + (size_t)r * ldw + k), _MM_HINT_T1);
            }
#pragma GCC unroll 2
        for (int c = 0; c < C; c++)
            xv[c] = _mm256_loadu_ps(x + (size_t)c * ldx + k);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m256 w = _mm256_loadu_ps(W + (size_t)r * ldw + k);
#pragma GCC unroll 2
            for (int c = 0; c < C; c++)
                s[r][c] = _mm256_fmadd_ps(w, xv[c], s[r][c]);
        }
    }
    if (k < n) {
        __m256i m = mask8(n - k);
        __m256 xv[2];
#pragma GCC unroll 2
        for (int c = 0; c < C; c++)
            xv[c] = _mm256_maskload_ps(x + (size_t)c * ldx + k, m);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m256 w = _mm256_maskload_ps(W + (size_t)r * ldw + k, m);
#pragma GCC unroll 2
            for (int c = 0; c < C; c++)
                s[r][c] = _mm256_fmadd_ps(w, xv[c], s[r][c]);
        }
    }
#pragma GCC unroll 2
    for (int c = 0; c < C; c++) {
        float *o = y + (size_t)c * ldy;
        if (R == 1) {
            float v = hsum8(s[0][c]);
            *o = acc ? *o + v : v;
            continue;
        }
#pragma GCC unroll 2
        for (int r = 0; r < R; r += 4) {
            __m128 v = hsum8x4(s[r][c], s[r + 1][c], s[r + 2][c], s[r + 3][c]);
            if (acc)
                v = _mm_add_ps(v, _mm_loadu_ps(o + r));
            _mm_storeu_ps(o + r, v);
        }
    }
}

/* The next R rows of W after row j, to prefetch while rows j.. are multiplied (NULL past the
 * end). */
#define GV_NEXT(R) (j + 2 * (R) <= n_out ? w + (size_t)(R) * ldw : NULL)

GV_AVX2 static void mm_nt_avx2(float *y, int ldy, const float *x, int ldx, const float *W,
                               int ldw, int N, int n_in, int n_out, int acc)
{
    int j = 0;
    if (N == 1) {
        for (; j + 8 <= n_out; j += 8) {
            const float *w = W + (size_t)j * ldw;
            nt8_tile(8, 1, y + j, ldy, x, ldx, w, ldw, n_in, acc, GV_NEXT(8));
        }
        for (; j < n_out; j++)
            nt8_tile(1, 1, y + j, ldy, x, ldx, W + (size_t)j * ldw, ldw, n_in, acc, NULL);
        return;
    }
    for (; j + 4 <= n_out; j += 4) {
        const float *w = W + (size_t)j * ldw, *pf = GV_NEXT(4);
        int i = 0;
        for (; i + 2 <= N; i += 2, pf = NULL)
            nt8_tile(4, 2, y + (size_t)i * ldy + j, ldy, x + (size_t)i * ldx, ldx, w, ldw, n_in,
                     acc, pf);
        if (i < N)
            nt8_tile(4, 1, y + (size_t)i * ldy + j, ldy, x + (size_t)i * ldx, ldx, w, ldw, n_in,
                     acc, pf);
    }
    for (; j < n_out; j++) {
        const float *w = W + (size_t)j * ldw;
        int i = 0;
        for (; i + 2 <= N; i += 2)
            nt8_tile(1, 2, y + (size_t)i * ldy + j, ldy, x + (size_t)i * ldx, ldx, w, ldw, n_in,
                     acc, NULL);
        if (i < N)
            nt8_tile(1, 1, y + (size_t)i * ldy + j, ldy, x + (size_t)i * ldx, ldx, w, ldw, n_in,
                     acc, NULL);
    }
}

GV_AVX2 static void mm_nn_avx2(float *y, int ldy, const float *P, int ldp, const float *V,
                               int ldv, int N, int J, int n)
{
    for (int i = 0; i < N; i++) {
        const float *p = P + (size_t)i * ldp;
        float *o = y + (size_t)i * ldy;
        int d = 0;
        for (; d + 32 <= n; d += 32) {
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int j = 0; j < J; j++) {
                __m256 pj = _mm256_broadcast_ss(p + j);
                const float *v = V + (size_t)j * ldv + d;
                a0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v), a0);
                a1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 8), a1);
                a2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 16), a2);
                a3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 24), a3);
            }
            _mm256_storeu_ps(o + d, a0);
            _mm256_storeu_ps(o + d + 8, a1);
            _mm256_storeu_ps(o + d + 16, a2);
            _mm256_storeu_ps(o + d + 24, a3);
        }
        for (; d < n; d += 8) {
            __m256i m = mask8(n - d < 8 ? n - d : 8);
            __m256 a0 = _mm256_setzero_ps();
            for (int j = 0; j < J; j++)
                a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j),
                                     _mm256_maskload_ps(V + (size_t)j * ldv + d, m), a0);
            _mm256_maskstore_ps(o + d, m, a0);
        }
    }
}

GV_AVX2 static float max_avx2(const float *x, int n)
{
    __m256 m = _mm256_set1_ps(x[0]);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        m = _mm256_max_ps(_mm256_loadu_ps(x + i), m);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(_mm_movehl_ps(h, h), h);
    h = _mm_max_ss(_mm_movehdup_ps(h), h);
    float r = _mm_cvtss_f32(h);
    for (; i < n; i++)
        if (x[i] > r || x[i] != x[i])
            r = x[i];
    return r;
}

GV_INLINE GV_AVX2 __m256 exp8(__m256 x)
{
    x = _mm256_max_ps(_mm256_set1_ps(GV_EXP_LO), x); /* NaN stays NaN */
    x = _mm256_min_ps(_mm256_set1_ps(GV_EXP_HI), x);
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(GV_LOG2E)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(GV_LN2_HI), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(GV_LN2_LO), x);
    __m256 z = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(GV_P0);
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(GV_P1));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(GV_P2));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(GV_P3));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(GV_P4));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(GV_P5));
    p = _mm256_fmadd_ps(p, z, x);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

GV_AVX2 static double exp_sum_avx2(float *e, const float *x, int n, float scale, float shift,
                                   double *sum_ez)
{
    __m256 sc = _mm256_set1_ps(scale), sh = _mm256_set1_ps(shift);
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, t0 = s0, t1 = s0;
    for (int i = 0; i < n; i += 8) {
        __m256i m = mask8(n - i < 8 ? n - i : 8);
        __m256 xv = _mm256_maskload_ps(x + i, m);
        __m256 ev = exp8(_mm256_fmsub_ps(xv, sc, sh));
        ev = _mm256_and_ps(ev, _mm256_castsi256_ps(m)); /* lanes past n add 0 */
        _mm256_maskstore_ps(e + i, m, ev);
        __m256d e0 = _mm256_cvtps_pd(_mm256_castps256_ps128(ev));
        __m256d e1 = _mm256_cvtps_pd(_mm256_extractf128_ps(ev, 1));
        s0 = _mm256_add_pd(s0, e0);
        s1 = _mm256_add_pd(s1, e1);
        if (sum_ez) {
            __m256 z = _mm256_mul_ps(xv, sc);
            t0 = _mm256_fmadd_pd(e0, _mm256_cvtps_pd(_mm256_castps256_ps128(z)), t0);
            t1 = _mm256_fmadd_pd(e1, _mm256_cvtps_pd(_mm256_extractf128_ps(z, 1)), t1);
        }
    }
    double buf[4];
    _mm256_storeu_pd(buf, _mm256_add_pd(s0, s1));
    double s = (buf[0] + buf[1]) + (buf[2] + buf[3]);
    if (sum_ez) {
        _mm256_storeu_pd(buf, _mm256_add_pd(t0, t1));
        *sum_ez = (buf[0] + buf[1]) + (buf[2] + buf[3]);
    }
    return s;
}

GV_AVX2 static void scale_avx2(float *x, int n, float a)
{
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), av));
    for (; i < n; i++)
        x[i] *= a;
}

GV_AVX2 static void silu_mul_avx2(float *g, const float *u, size_t n)
{
    __m256 one = _mm256_set1_ps(1.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i);
        __m256 d = _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv)));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(gv, d), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static const gv_ops ops_avx2 = {"avx2",       mm_nt_avx2, mm_nn_avx2,   max_avx2,
                                exp_sum_avx2, scale_avx2, silu_mul_avx2};

/* ---- AVX-512 ---------------------------------------------------------------------------- */

GV_INLINE GV_AVX512 __mmask16 mask16(int rem) /* lanes [0, rem) on, rem in 1..16 */
{
    return (__mmask16)((1u << rem) - 1u);
}

GV_INLINE GV_AVX512 float hsum16(__m512 v)
{
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    b = _mm_add_ss(b, _mm_movehdup_ps(b));
    return _mm_cvtss_f32(b);
}

/* [hsum(a), hsum(b), hsum(c), hsum(d)] */
GV_INLINE GV_AVX512 __m128 hsum16x4(__m512 a, __m512 b, __m512 c, __m512 d)
{
    __m512 t0 = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    __m512 t1 = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    __m512 u = _mm512_add_ps(_mm512_shuffle_ps(t0, t1, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 2, 3, 2)));
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(u), _mm512_extractf32x8_ps(u, 1));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* y[c, r] for an R x C tile: W rows r < R, x rows c < C; R is 1 or a multiple of 4. */
GV_INLINE GV_AVX512 void nt16_tile(int R, int C, float *y, int ldy, const float *x, int ldx,
                                   const float *W, int ldw, int n, int acc, const float *pf,
                                   int npf)
{
    __m512 s[8][4];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            s[r][c] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= n; k += 16) {
        __m512 xv[4];
        /* the one-row kernel (R = 8) prefetches into L1; tiles of several rows of x into L2,
         * as those rows streaming through L1 would evict the lines before their use */
        for (int r = 0; r < npf; r++) {
            if (R == 8)
                _mm_prefetch((const char *)(pf + (size_t)r * ldw + k), _MM_HINT_T0);
            else
                _mm_prefetch((const char *)(pf + (size_t)r * ldw + k), _MM_HINT_T1);
        }
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            xv[c] = _mm512_loadu_ps(x + (size_t)c * ldx + k);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512 w = _mm512_loadu_ps(W + (size_t)r * ldw + k);
#pragma GCC unroll 4
            for (int c = 0; c < C; c++)
                s[r][c] = _mm512_fmadd_ps(w, xv[c], s[r][c]);
        }
    }
    if (k < n) {
        __mmask16 m = mask16(n - k);
        __m512 xv[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            xv[c] = _mm512_maskz_loadu_ps(m, x + (size_t)c * ldx + k);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512 w = _mm512_maskz_loadu_ps(m, W + (size_t)r * ldw + k);
#pragma GCC unroll 4
            for (int c = 0; c < C; c++)
                s[r][c] = _mm512_fmadd_ps(w, xv[c], s[r][c]);
        }
    }
#pragma GCC unroll 4
    for (int c = 0; c < C; c++) {
        float *o = y + (size_t)c * ldy;
        if (R == 1) {
            float v = hsum16(s[0][c]);
            *o = acc ? *o + v : v;
            continue;
        }
#pragma GCC unroll 2
        for (int r = 0; r < R; r += 4) {
            __m128 v = hsum16x4(s[r][c], s[r + 1][c], s[r + 2][c], s[r + 3][c]);
            if (acc)
                v = _mm_add_ps(v, _mm_loadu_ps(o + r));
            _mm_storeu_ps(o + r, v);
        }
    }
}

/* One block of R rows of W against all N rows of x, in tiles of 4 rows of x. The tiles
 * share the prefetching of pf (the next block, NULL for none): each prefetches a few of its
 * rows, so that the requests to memory spread over the whole block. */
#define GV_NT16_CALL(R, C)                                                                    \
    do {                                                                                     \
        int r0_ = pass_ * per_ < R ? pass_ * per_ : R;                                       \
        int r1_ = r0_ + per_ < R ? r0_ + per_ : R;                                           \
        nt16_tile(R, C, y + (size_t)i_ * ldy + j, ldy, x + (size_t)i_ * ldx, ldx, w, ldw, n_in, \
                  acc, pf_ ? pf_ + (size_t)r0_ * ldw : NULL, pf_ ? r1_ - r0_ : 0);           \
        pass_++;                                                                             \
    } while (0)
#define GV_NT16_BLOCK(R, pf)                                                                 \
    do {                                                                                     \
        const float *pf_ = (pf);                                                             \
        int passes_ = (N + 3) / 4, per_ = (R + passes_ - 1) / passes_, pass_ = 0, i_ = 0;    \
        for (; i_ + 4 <= N; i_ += 4)                                                         \
            GV_NT16_CALL(R, 4);                                                                 \
        switch (N - i_) {                                                                    \
        case 3:                                                                              \
            GV_NT16_CALL(R, 3);                                                                 \
            break;                                                                           \
        case 2:                                                                              \
            GV_NT16_CALL(R, 2);                                                                 \
            break;                                                                           \
        case 1:                                                                              \
            GV_NT16_CALL(R, 1);                                                                 \
            break;                                                                           \
        default:                                                                             \
            break;                                                                           \
        }                                                                                    \
    } while (0)

GV_AVX512 static void mm_nt_avx512(float *y, int ldy, const float *x, int ldx, const float *W,
                                   int ldw, int N, int n_in, int n_out, int acc)
{
    int j = 0;
    if (N == 1) {
        for (; j + 8 <= n_out; j += 8) {
            const float *w = W + (size_t)j * ldw, *pf = GV_NEXT(8);
            nt16_tile(8, 1, y + j, ldy, x, ldx, w, ldw, n_in, acc, pf, pf ? 8 : 0);
        }
        for (; j < n_out; j++)
            nt16_tile(1, 1, y + j, ldy, x, ldx, W + (size_t)j * ldw, ldw, n_in, acc, NULL, 0);
        return;
    }
    for (; j + 4 <= n_out; j += 4) {
        const float *w = W + (size_t)j * ldw;
        GV_NT16_BLOCK(4, GV_NEXT(4));
    }
    for (; j < n_out; j++) {
        const float *w = W + (size_t)j * ldw;
        GV_NT16_BLOCK(1, NULL);
    }
}

GV_AVX512 static void mm_nn_avx512(float *y, int ldy, const float *P, int ldp, const float *V,
                                   int ldv, int N, int J, int n)
{
    for (int i = 0; i < N; i++) {
        const float *p = P + (size_t)i * ldp;
        float *o = y + (size_t)i * ldy;
        int d = 0;
        for (; d + 64 <= n; d += 64) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int j = 0; j < J; j++) {
                __m512 pj = _mm512_set1_ps(p[j]);
                const float *v = V + (size_t)j * ldv + d;
                a0 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(v), a0);
                a1 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(v + 16), a1);
                a2 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(v + 32), a2);
                a3 = _mm512_fmadd_ps(pj, _mm512_loadu_ps(v + 48), a3);
            }
            _mm512_storeu_ps(o + d, a0);
            _mm512_storeu_ps(o + d + 16, a1);
            _mm512_storeu_ps(o + d + 32, a2);
            _mm512_storeu_ps(o + d + 48, a3);
        }
        for (; d < n; d += 16) {
            __mmask16 m = mask16(n - d < 16 ? n - d : 16);
            __m512 a0 = _mm512_setzero_ps();
            for (int j = 0; j < J; j++)
                a0 = _mm512_fmadd_ps(_mm512_set1_ps(p[j]),
                                     _mm512_maskz_loadu_ps(m, V + (size_t)j * ldv + d), a0);
            _mm512_mask_storeu_ps(o + d, m, a0);
        }
    }
}

GV_AVX512 static float max_avx512(const float *x, int n)
{
    __m512 m = _mm512_set1_ps(x[0]);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        m = _mm512_max_ps(_mm512_loadu_ps(x + i), m);
    if (i < n)
        m = _mm512_max_ps(_mm512_mask_loadu_ps(m, mask16(n - i), x + i), m);
    __m256 a = _mm256_max_ps(_mm512_extractf32x8_ps(m, 1), _mm512_castps512_ps256(m));
    __m128 h = _mm_max_ps(_mm256_extractf128_ps(a, 1), _mm256_castps256_ps128(a));
    h = _mm_max_ps(_mm_movehl_ps(h, h), h);
    h = _mm_max_ss(_mm_movehdup_ps(h), h);
    return _mm_cvtss_f32(h);
}

GV_INLINE GV_AVX512 __m512 exp16(__m512 x)
{
    x = _mm512_max_ps(_mm512_set1_ps(GV_EXP_LO), x); /* NaN stays NaN */
    x = _mm512_min_ps(_mm512_set1_ps(GV_EXP_HI), x);
    __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(GV_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(GV_LN2_HI), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(GV_LN2_LO), x);
    __m512 z = _mm512_mul_ps(x, x);
    __m512 p = _mm512_set1_ps(GV_P0);
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(GV_P1));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(GV_P2));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(GV_P3));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(GV_P4));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(GV_P5));
    p = _mm512_fmadd_ps(p, z, x);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, fx);
}

GV_AVX512 static double exp_sum_avx512(float *e, const float *x, int n, float scale,
                                       float shift, double *sum_ez)
{
    __m512 sc = _mm512_set1_ps(scale), sh = _mm512_set1_ps(shift);
    __m512d s0 = _mm512_setzero_pd(), s1 = s0, t0 = s0, t1 = s0;
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = mask16(n - i < 16 ? n - i : 16);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        __m512 ev = _mm512_maskz_mov_ps(m, exp16(_mm512_fmsub_ps(xv, sc, sh)));
        _mm512_mask_storeu_ps(e + i, m, ev);
        __m512d e0 = _mm512_cvtps_pd(_mm512_castps512_ps256(ev));
        __m512d e1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(ev, 1));
        s0 = _mm512_add_pd(s0, e0);
        s1 = _mm512_add_pd(s1, e1);
        if (sum_ez) {
            __m512 z = _mm512_mul_ps(xv, sc);
            t0 = _mm512_fmadd_pd(e0, _mm512_cvtps_pd(_mm512_castps512_ps256(z)), t0);
            t1 = _mm512_fmadd_pd(e1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(z, 1)), t1);
        }
    }
    double s = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    if (sum_ez)
        *sum_ez = _mm512_reduce_add_pd(_mm512_add_pd(t0, t1));
    return s;
}

GV_AVX512 static void scale_avx512(float *x, int n, float a)
{
    __m512 av = _mm512_set1_ps(a);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = mask16(n - i < 16 ? n - i : 16);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), av));
    }
}

GV_AVX512 static void silu_mul_avx512(float *g, const float *u, size_t n)
{
    __m512 one = _mm512_set1_ps(1.0f);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 gv = _mm512_loadu_ps(g + i);
        __m512 d = _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv)));
        _mm512_storeu_ps(g + i, _mm512_mul_ps(_mm512_div_ps(gv, d), _mm512_loadu_ps(u + i)));
    }
    for (; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static const gv_ops ops_avx512 = {"avx512",       mm_nt_avx512, mm_nn_avx512,   max_avx512,
                                  exp_sum_avx512, scale_avx512, silu_mul_avx512};

/* ---- dispatch ------------------------------------------------------------------------------ */

static const gv_ops *gv_ops_cur = &ops_generic;
static pthread_once_t gv_once = PTHREAD_ONCE_INIT;

int gv_isa_supported(gv_isa isa)
{
    __builtin_cpu_init();
    switch (isa) {
    case GV_ISA_GENERIC:
        return 1;
    case GV_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case GV_ISA_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    }
    return 0;
}

static void gv_init(void)
{
    if (gv_isa_supported(GV_ISA_AVX512))
        gv_ops_cur = &ops_avx512;
    else if (gv_isa_supported(GV_ISA_AVX2))
        gv_ops_cur = &ops_avx2;
    else
        gv_ops_cur = &ops_generic;
}

static const gv_ops *ops(void)
{
    pthread_once(&gv_once, gv_init);
    return gv_ops_cur;
}

int gv_select(gv_isa isa)
{
    ops();
    if (!gv_isa_supported(isa))
        return -1;
    gv_ops_cur = isa == GV_ISA_AVX512 ? &ops_avx512 : isa == GV_ISA_AVX2 ? &ops_avx2
                                                                         : &ops_generic;
    return 0;
}

const char *gv_isa_name(void) { return ops()->name; }

void gv_matmul_nt(float *y, int ldy, const float *x, int ldx, const float *W, int ldw, int N,
                  int n_in, int n_out, int acc)
{
    if (N > 0 && n_out > 0)
        ops()->mm_nt(y, ldy, x, ldx, W, ldw, N, n_in, n_out, acc);
}

void gv_linear(float *y, const float *x, const float *W, int N, int n_in, int n_out, int acc)
{
    gv_matmul_nt(y, n_out, x, n_in, W, n_in, N, n_in, n_out, acc);
}

void gv_matmul_nn(float *y, int ldy, const float *P, int ldp, const float *V, int ldv, int N,
                  int J, int n)
{
    if (N > 0 && n > 0)
        ops()->mm_nn(y, ldy, P, ldp, V, ldv, N, J, n);
}

float gv_max(const float *x, int n) { return ops()->max(x, n); }

double gv_exp_sum(float *e, const float *x, int n, float scale, float shift, double *sum_ez)
{
    if (n <= 0) {
        if (sum_ez)
            *sum_ez = 0.0;
        return 0.0;
    }
    return ops()->exp_sum(e, x, n, scale, shift, sum_ez);
}

void gv_scale(float *x, int n, float a)
{
    if (n > 0)
        ops()->scale(x, n, a);
}

void gv_silu_mul(float *g, const float *u, size_t n)
{
    if (n > 0)
        ops()->silu_mul(g, u, n);
}
