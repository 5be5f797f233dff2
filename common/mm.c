/* mm.c - packed AVX-512 sgemm (see mm.h).
 *
 * The classic blocked structure: for each NC-wide panel of op(B) and each KC-deep slice of
 * K, the slice of op(B) is packed into NR-wide column strips (k-major), then for each MC-tall
 * block of op(A) the block is packed into MR-tall row strips (k-major), and the micro-kernel
 * multiplies one A strip by one B strip into an MR x NR tile of C held in 24 zmm registers.
 * Strips at the matrix edges are zero-padded; their tiles go through a small buffer.
 */
#include "mm.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kern.h"

#define MM_MR 12
#define MM_NR 32
#define MM_KC 256
#define MM_MC 144 /* multiple of MM_MR */
#define MM_NC 1024 /* multiple of MM_NR */
#define MM_POOL 8
#define MM_MAXT 8 /* parts of mm_parallel */

/* ---- buffer pool ------------------------------------------------------------------------- */

static pthread_mutex_t g_pool_mu = PTHREAD_MUTEX_INITIALIZER;
static float *g_pool[MM_POOL];
static int g_pool_used[MM_POOL];

static float *pool_get(int *slot)
{
    float *buf = NULL;
    pthread_mutex_lock(&g_pool_mu);
    for (int i = 0; i < MM_POOL && !buf; i++) {
        if (g_pool_used[i])
            continue;
        if (!g_pool[i]) {
            void *p = NULL;
            size_t bytes = sizeof(float) * ((size_t)MM_MC * MM_KC + (size_t)MM_KC * MM_NC);
            if (posix_memalign(&p, 64, bytes) != 0)
                break;
            g_pool[i] = p;
        }
        g_pool_used[i] = 1;
        buf = g_pool[i];
        *slot = i;
    }
    pthread_mutex_unlock(&g_pool_mu);
    return buf;
}

static void pool_put(int slot)
{
    pthread_mutex_lock(&g_pool_mu);
    g_pool_used[slot] = 0;
    pthread_mutex_unlock(&g_pool_mu);
}

int mm_available(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    return strcmp(kern_isa(), "avx512") == 0;
#else
    return 0;
#endif
}

/* ---- worker pool ----------------------------------------------------------------------------
 * The caller runs part 0 and the workers parts 1 .. parts-1. One task at a time uses the
 * workers (a concurrent caller runs its task as one part on its own thread). Workers sleep on
 * a condition variable between tasks and live as long as the process. */

typedef struct mm_task {
    mm_task_fn fn;
    void *ctx;
    int parts;
} mm_task;

static pthread_mutex_t g_mt_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_mt_work = PTHREAD_COND_INITIALIZER;
static pthread_cond_t g_mt_done = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t g_mt_busy = PTHREAD_MUTEX_INITIALIZER;
static int g_mt_workers;       /* started so far */
static mm_task *g_mt_task;     /* under g_mt_mu */
static unsigned long g_mt_gen; /* bumped per task, under g_mt_mu */
static int g_mt_pending;       /* worker parts not finished, under g_mt_mu */

static void *worker_main(void *arg)
{
    int part = (int)(size_t)arg; /* 1 .. MM_MAXT-1 */
    unsigned long seen = 0;
    pthread_mutex_lock(&g_mt_mu);
    for (;;) {
        while (g_mt_gen == seen)
            pthread_cond_wait(&g_mt_work, &g_mt_mu);
        seen = g_mt_gen;
        mm_task *t = g_mt_task;
        if (!t || part >= t->parts)
            continue;
        pthread_mutex_unlock(&g_mt_mu);
        t->fn(t->ctx, part, t->parts);
        pthread_mutex_lock(&g_mt_mu);
        if (--g_mt_pending == 0)
            pthread_cond_signal(&g_mt_done);
    }
    return NULL;
}

/* A child of fork() has none of the workers: start afresh (mutexes re-initialised, since a
 * thread of the parent may have held them at the fork). */
static void pool_atfork_child(void)
{
    pthread_mutex_init(&g_mt_mu, NULL);
    pthread_mutex_init(&g_mt_busy, NULL);
    pthread_cond_init(&g_mt_work, NULL);
    pthread_cond_init(&g_mt_done, NULL);
    g_mt_workers = 0;
    g_mt_task = NULL;
    g_mt_pending = 0;
}

static pthread_once_t g_mt_once = PTHREAD_ONCE_INIT;
static void pool_register_atfork(void) { pthread_atfork(NULL, NULL, pool_atfork_child); }

/* Start workers so that parts - 1 exist; returns the number of parts usable. */
static int ensure_workers(int parts)
{
    pthread_once(&g_mt_once, pool_register_atfork);
    pthread_mutex_lock(&g_mt_mu);
    while (g_mt_workers < parts - 1) {
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &at, worker_main, (void *)(size_t)(g_mt_workers + 1));
        pthread_attr_destroy(&at);
        if (rc != 0)
            break;
        g_mt_workers++;
    }
    int n = g_mt_workers + 1;
    pthread_mutex_unlock(&g_mt_mu);
    return n < parts ? n : parts;
}

int mm_parallel(int threads, mm_task_fn fn, void *ctx)
{
    int parts = threads < MM_MAXT ? threads : MM_MAXT;
    if (parts <= 1 || pthread_mutex_trylock(&g_mt_busy) != 0) {
        fn(ctx, 0, 1);
        return 1;
    }
    parts = ensure_workers(parts);
    mm_task t = {fn, ctx, parts};
    if (parts > 1) {
        pthread_mutex_lock(&g_mt_mu);
        g_mt_task = &t;
        g_mt_pending = parts - 1;
        g_mt_gen++;
        pthread_cond_broadcast(&g_mt_work);
        pthread_mutex_unlock(&g_mt_mu);
    }
    fn(ctx, 0, parts);
    if (parts > 1) {
        pthread_mutex_lock(&g_mt_mu);
        while (g_mt_pending > 0)
            pthread_cond_wait(&g_mt_done, &g_mt_mu);
        g_mt_task = NULL;
        pthread_mutex_unlock(&g_mt_mu);
    }
    pthread_mutex_unlock(&g_mt_busy);
    return parts;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* ---- packing ----------------------------------------------------------------------------- */

/* op(A)[i0 .. i0+mc, p0 .. p0+kc) into strips of MM_MR rows: dst[s*kc*MR + k*MR + r]. */
static void pack_a(float *dst, const float *A, int lda, int trans, int i0, int mc, int p0, int kc)
{
    for (int s = 0; s < mc; s += MM_MR) {
        int mr = mc - s < MM_MR ? mc - s : MM_MR;
        float *d = dst + (size_t)s * kc;
        if (trans && mr == MM_MR) { /* op(A)(i, k) = A[k * lda + i]: the strip's rows are contiguous */
            for (int k = 0; k < kc; k++) {
                const float *src = A + (size_t)(p0 + k) * lda + i0 + s;
                float *o = d + (size_t)k * MM_MR;
                _mm_storeu_ps(o, _mm_loadu_ps(src));
                _mm_storeu_ps(o + 4, _mm_loadu_ps(src + 4));
                _mm_storeu_ps(o + 8, _mm_loadu_ps(src + 8));
            }
        } else if (trans) {
            for (int k = 0; k < kc; k++) {
                const float *src = A + (size_t)(p0 + k) * lda + i0 + s;
                float *o = d + (size_t)k * MM_MR;
                int r = 0;
                for (; r < mr; r++)
                    o[r] = src[r];
                for (; r < MM_MR; r++)
                    o[r] = 0.0f;
            }
        } else if (mr == MM_MR) { /* 4 x 4 transposes: rows r..r+3, columns k..k+3 */
            const float *r0 = A + (size_t)(i0 + s) * lda + p0;
            int k = 0;
            for (; k + 4 <= kc; k += 4)
                for (int r = 0; r < MM_MR; r += 4) {
                    const float *c = r0 + (size_t)r * lda + k;
                    __m128 x0 = _mm_loadu_ps(c), x1 = _mm_loadu_ps(c + lda),
                           x2 = _mm_loadu_ps(c + (size_t)2 * lda), x3 = _mm_loadu_ps(c + (size_t)3 * lda);
                    _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
                    float *o = d + (size_t)k * MM_MR + r;
                    _mm_storeu_ps(o, x0);
                    _mm_storeu_ps(o + MM_MR, x1);
                    _mm_storeu_ps(o + 2 * MM_MR, x2);
                    _mm_storeu_ps(o + 3 * MM_MR, x3);
                }
            for (; k < kc; k++)
                for (int r = 0; r < MM_MR; r++)
                    d[(size_t)k * MM_MR + r] = r0[(size_t)r * lda + k];
        } else {
            for (int k = 0; k < kc; k++) {
                float *o = d + (size_t)k * MM_MR;
                int r = 0;
                for (; r < mr; r++)
                    o[r] = A[(size_t)(i0 + s + r) * lda + p0 + k];
                for (; r < MM_MR; r++)
                    o[r] = 0.0f;
            }
        }
    }
}

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512vl,avx512bw,avx512dq")

/* op(B)[p0 .. p0+kc, j0 .. j0+nc) into strips of MM_NR columns: dst[s*kc*NR + k*NR + j]. */
static void pack_b(float *dst, const float *B, int ldb, int trans, int j0, int nc, int p0, int kc)
{
    for (int s = 0; s < nc; s += MM_NR) {
        int nr = nc - s < MM_NR ? nc - s : MM_NR;
        float *d = dst + (size_t)s * kc;
        if (!trans) { /* op(B)(k, j) = B[k * ldb + j]: strip rows are contiguous */
            if (nr == MM_NR) {
                for (int k = 0; k < kc; k++) {
                    const float *src = B + (size_t)(p0 + k) * ldb + j0 + s;
                    _mm512_store_ps(d + (size_t)k * MM_NR, _mm512_loadu_ps(src));
                    _mm512_store_ps(d + (size_t)k * MM_NR + 16, _mm512_loadu_ps(src + 16));
                }
            } else {
                for (int k = 0; k < kc; k++) {
                    const float *src = B + (size_t)(p0 + k) * ldb + j0 + s;
                    float *o = d + (size_t)k * MM_NR;
                    int j = 0;
                    for (; j < nr; j++)
                        o[j] = src[j];
                    for (; j < MM_NR; j++)
                        o[j] = 0.0f;
                }
            }
        } else { /* op(B)(k, j) = B[j * ldb + k]: a transposing copy */
            if (nr < MM_NR)
                memset(d, 0, sizeof(float) * (size_t)kc * MM_NR);
            int j = 0;
            for (; j + 4 <= nr; j += 4) { /* 4 x 4 transposes: rows j..j+3, columns k..k+3 */
                const float *src = B + (size_t)(j0 + s + j) * ldb + p0;
                int k = 0;
                for (; k + 4 <= kc; k += 4) {
                    const float *c = src + k;
                    __m128 x0 = _mm_loadu_ps(c), x1 = _mm_loadu_ps(c + ldb),
                           x2 = _mm_loadu_ps(c + (size_t)2 * ldb), x3 = _mm_loadu_ps(c + (size_t)3 * ldb);
                    _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
                    float *o = d + (size_t)k * MM_NR + j;
                    _mm_storeu_ps(o, x0);
                    _mm_storeu_ps(o + MM_NR, x1);
                    _mm_storeu_ps(o + 2 * MM_NR, x2);
                    _mm_storeu_ps(o + 3 * MM_NR, x3);
                }
                for (; k < kc; k++)
                    for (int jj = 0; jj < 4; jj++)
                        d[(size_t)k * MM_NR + j + jj] = src[(size_t)jj * ldb + k];
            }
            for (; j < nr; j++) {
                const float *src = B + (size_t)(j0 + s + j) * ldb + p0;
                for (int k = 0; k < kc; k++)
                    d[(size_t)k * MM_NR + j] = src[k];
            }
        }
    }
}

/* C[mr x nr] = alpha * (A strip x B strip) + beta * C over kc. */
static void ukernel(int kc, const float *a, const float *b, float *C, int ldc, int mr, int nr,
                    float alpha, float beta)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00,
           c61 = c00, c70 = c00, c71 = c00, c80 = c00, c81 = c00, c90 = c00, c91 = c00,
           ca0 = c00, ca1 = c00, cb0 = c00, cb1 = c00;
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), av;
#define MM_ROW(r, x)                                                                          \
    av = _mm512_set1_ps(a[r]);                                                                \
    c##x##0 = _mm512_fmadd_ps(av, b0, c##x##0);                                               \
    c##x##1 = _mm512_fmadd_ps(av, b1, c##x##1)
        MM_ROW(0, 0);
        MM_ROW(1, 1);
        MM_ROW(2, 2);
        MM_ROW(3, 3);
        MM_ROW(4, 4);
        MM_ROW(5, 5);
        MM_ROW(6, 6);
        MM_ROW(7, 7);
        MM_ROW(8, 8);
        MM_ROW(9, 9);
        MM_ROW(10, a);
        MM_ROW(11, b);
#undef MM_ROW
        a += MM_MR;
        b += MM_NR;
    }
    float tile[MM_MR * MM_NR] __attribute__((aligned(64)));
    int direct = mr == MM_MR && nr == MM_NR;
    float *out = direct ? C : tile;
    int ldo = direct ? ldc : MM_NR;
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    int use_beta = direct && beta != 0.0f;
#define MM_OUT(r, x)                                                                          \
    do {                                                                                      \
        float *o = out + (size_t)(r) * ldo;                                                   \
        __m512 v0 = _mm512_mul_ps(c##x##0, va), v1 = _mm512_mul_ps(c##x##1, va);              \
        if (use_beta) {                                                                       \
            v0 = _mm512_fmadd_ps(_mm512_loadu_ps(o), vb, v0);                                 \
            v1 = _mm512_fmadd_ps(_mm512_loadu_ps(o + 16), vb, v1);                            \
        }                                                                                     \
        _mm512_storeu_ps(o, v0);                                                              \
        _mm512_storeu_ps(o + 16, v1);                                                         \
    } while (0)
    MM_OUT(0, 0);
    MM_OUT(1, 1);
    MM_OUT(2, 2);
    MM_OUT(3, 3);
    MM_OUT(4, 4);
    MM_OUT(5, 5);
    MM_OUT(6, 6);
    MM_OUT(7, 7);
    MM_OUT(8, 8);
    MM_OUT(9, 9);
    MM_OUT(10, a);
    MM_OUT(11, b);
#undef MM_OUT
    if (!direct)
        for (int r = 0; r < mr; r++)
            for (int j = 0; j < nr; j++) {
                float *o = C + (size_t)r * ldc + j;
                *o = beta != 0.0f ? tile[r * MM_NR + j] + beta * *o : tile[r * MM_NR + j];
            }
}

#pragma GCC pop_options

/* One thread's product (any sizes >= 1). */
static void sgemm_1(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                   int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    int slot = 0;
    float *buf = pool_get(&slot);
    if (!buf) { /* no packing buffer (out of memory, or more callers than the pool holds) */
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C,
                    ldc);
        return;
    }
    float *Ap = buf, *Bp = buf + (size_t)MM_MC * MM_KC;
    for (int jc = 0; jc < N; jc += MM_NC) {
        int nc = N - jc < MM_NC ? N - jc : MM_NC;
        for (int pc = 0; pc < K; pc += MM_KC) {
            int kc = K - pc < MM_KC ? K - pc : MM_KC;
            float bet = pc == 0 ? beta : 1.0f;
            pack_b(Bp, B, ldb, trans_b, jc, nc, pc, kc);
            for (int ic = 0; ic < M; ic += MM_MC) {
                int mc = M - ic < MM_MC ? M - ic : MM_MC;
                pack_a(Ap, A, lda, trans_a, ic, mc, pc, kc);
                for (int jr = 0; jr < nc; jr += MM_NR) {
                    int nr = nc - jr < MM_NR ? nc - jr : MM_NR;
                    const float *bs = Bp + (size_t)jr * kc;
                    for (int ir = 0; ir < mc; ir += MM_MR) {
                        int mr = mc - ir < MM_MR ? mc - ir : MM_MR;
                        ukernel(kc, Ap + (size_t)ir * kc, bs,
                                C + (size_t)(ic + ir) * ldc + jc + jr, ldc, mr, nr, alpha, bet);
                    }
                }
            }
        }
    }
    pool_put(slot);
}

/* ---- threaded product ---------------------------------------------------------------------
 * A product of at least MM_MT_MIN_FLOPS is cut into column (or row) ranges of whole
 * micro-tiles, one per part of mm_parallel. */

#define MM_MT_MIN_FLOPS 4e6

typedef struct mm_job {
    int trans_a, trans_b, M, N, K, lda, ldb, ldc, split_n;
    float alpha, beta;
    const float *A, *B;
    float *C;
} mm_job;

static void gemm_part(void *ctx, int p, int parts)
{
    const mm_job *j = ctx;
    int unit = j->split_n ? MM_NR : MM_MR, total = j->split_n ? j->N : j->M;
    int units = (total + unit - 1) / unit;
    int u0 = (int)((long)units * p / parts), u1 = (int)((long)units * (p + 1) / parts);
    int lo = u0 * unit, hi = u1 * unit < total ? u1 * unit : total;
    if (hi <= lo)
        return;
    if (j->split_n) {
        const float *B = j->trans_b ? j->B + (size_t)lo * j->ldb : j->B + lo;
        sgemm_1(j->trans_a, j->trans_b, j->M, hi - lo, j->K, j->alpha, j->A, j->lda, B, j->ldb,
                j->beta, j->C + lo, j->ldc);
    } else {
        const float *A = j->trans_a ? j->A + lo : j->A + (size_t)lo * j->lda;
        sgemm_1(j->trans_a, j->trans_b, hi - lo, j->N, j->K, j->alpha, A, j->lda, j->B, j->ldb,
                j->beta, j->C + (size_t)lo * j->ldc, j->ldc);
    }
}

int mm_sgemm(int threads, int trans_a, int trans_b, int M, int N, int K, float alpha,
             const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (!mm_available())
        return -1;
    if (M <= 0 || N <= 0)
        return 0;
    if (K <= 0) { /* C = beta C */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                C[(size_t)i * ldc + j] = beta != 0.0f ? beta * C[(size_t)i * ldc + j] : 0.0f;
        return 0;
    }
    int split_n = N >= M;
    int units = split_n ? (N + MM_NR - 1) / MM_NR : (M + MM_MR - 1) / MM_MR;
    if (threads > units)
        threads = units;
    if (threads <= 1 || 2.0 * M * N * K < MM_MT_MIN_FLOPS) {
        sgemm_1(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return 0;
    }
    mm_job j = {trans_a, trans_b, M, N, K, lda, ldb, ldc, split_n, alpha, beta, A, B, C};
    mm_parallel(threads, gemm_part, &j);
    return 0;
}

/* ---- causal attention products -----------------------------------------------------------
 * Rows in blocks of 4 (a short last block repeats its last row and stores only the valid
 * ones), columns in chunks of up to 4 vectors of 16 held in registers: MM_QK_CHUNK(NV) and
 * MM_PV_CHUNK(NV) instantiate a chunk of NV vectors, so that the accumulators stay in
 * registers. */

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512vl,avx512bw,avx512dq")

static inline __mmask16 tail_mask(int n) /* lanes [0, n) of 16 */
{
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}

/* S[i, jc .. jc + 16 NV) = alpha sum_d A[i, d] Bt[d, j] for the 4 rows a0..a3 (pointers),
 * columns limited to [0, ncol) with ncol - jc <= 16 NV. */
#define MM_QK_CHUNK(NV)                                                                       \
    static void qk_chunk_##NV(int hd, float alpha, const float *a0, const float *a1,          \
                              const float *a2, const float *a3, const float *Bt, int ldb,     \
                              int jc, int ncol, float *s0, float *s1, float *s2, float *s3,   \
                              int nr)                                                         \
    {                                                                                         \
        __m512 acc[4][NV];                                                                    \
        __mmask16 mk[NV];                                                                     \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                                  \
        {                                                                                     \
            mk[v] = tail_mask(ncol - jc - 16 * v);                                            \
            acc[0][v] = acc[1][v] = acc[2][v] = acc[3][v] = _mm512_setzero_ps();              \
        }                                                                                     \
        for (int d = 0; d < hd; d++) {                                                        \
            const float *b = Bt + (size_t)d * ldb + jc;                                       \
            __m512 x0 = _mm512_set1_ps(a0[d]), x1 = _mm512_set1_ps(a1[d]),                  \
                   x2 = _mm512_set1_ps(a2[d]), x3 = _mm512_set1_ps(a3[d]);                  \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                              \
            {                                                                                 \
                __m512 bv = _mm512_maskz_loadu_ps(mk[v], b + 16 * v);                         \
                acc[0][v] = _mm512_fmadd_ps(x0, bv, acc[0][v]);                               \
                acc[1][v] = _mm512_fmadd_ps(x1, bv, acc[1][v]);                               \
                acc[2][v] = _mm512_fmadd_ps(x2, bv, acc[2][v]);                               \
                acc[3][v] = _mm512_fmadd_ps(x3, bv, acc[3][v]);                               \
            }                                                                                 \
        }                                                                                     \
        __m512 va = _mm512_set1_ps(alpha);                                                    \
        float *so[4] = {s0, s1, s2, s3};                                                      \
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++)                                   \
        {                                                                                     \
            if (r < nr) {                                                                     \
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                          \
                    _mm512_mask_storeu_ps(so[r] + jc + 16 * v, mk[v],                         \
                                          _mm512_mul_ps(acc[r][v], va));                      \
            }                                                                                 \
        }                                                                                     \
    }
MM_QK_CHUNK(1)
MM_QK_CHUNK(2)
MM_QK_CHUNK(3)
MM_QK_CHUNK(4)

void mm_att_qk(int T, int hd, float alpha, const float *A, int lda, const float *Bt, float *S)
{
    for (int i0 = 0; i0 < T; i0 += 4) {
        int nr = T - i0 < 4 ? T - i0 : 4;
        const float *a[4];
        float *s[4];
        for (int r = 0; r < 4; r++) {
            int i = i0 + (r < nr ? r : nr - 1);
            a[r] = A + (size_t)i * lda;
            s[r] = S + (size_t)i * T;
        }
        int ncol = i0 + nr; /* causal: row i needs columns [0, i] */
        for (int jc = 0; jc < ncol; jc += 64) {
            int nv = (ncol - jc + 15) / 16;
            if (nv >= 4)
                qk_chunk_4(hd, alpha, a[0], a[1], a[2], a[3], Bt, T, jc, ncol, s[0], s[1], s[2], s[3], nr);
            else if (nv == 3)
                qk_chunk_3(hd, alpha, a[0], a[1], a[2], a[3], Bt, T, jc, ncol, s[0], s[1], s[2], s[3], nr);
            else if (nv == 2)
                qk_chunk_2(hd, alpha, a[0], a[1], a[2], a[3], Bt, T, jc, ncol, s[0], s[1], s[2], s[3], nr);
            else
                qk_chunk_1(hd, alpha, a[0], a[1], a[2], a[3], Bt, T, jc, ncol, s[0], s[1], s[2], s[3], nr);
        }
    }
}

/* Y[rows, c0 .. c0 + 16 NV) (=|+=) alpha sum_k W[r][k] X[k, c], k over [k0, k1), for the 4
 * weight rows w0..w3 (w_r[k] read at w_r + k * wstride) into the output rows y0..y3. */
#define MM_PV_CHUNK(NV)                                                                       \
    static void pv_chunk_##NV(int k0, int k1, float alpha, const float *const *w, int wstride, \
                              const float *X, int ldx, int c0, float *const *y, int nr,       \
                              int acc_out)                                                    \
    {                                                                                         \
        __m512 acc[4][NV];                                                                    \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[0][v] = acc[1][v] =          \
            acc[2][v] = acc[3][v] = _mm512_setzero_ps();                                      \
        for (int k = k0; k < k1; k++) {                                                       \
            const float *x = X + (size_t)k * ldx + c0;                                        \
            size_t o = (size_t)k * wstride;                                                   \
            __m512 x0 = _mm512_set1_ps(w[0][o]), x1 = _mm512_set1_ps(w[1][o]),                \
                   x2 = _mm512_set1_ps(w[2][o]), x3 = _mm512_set1_ps(w[3][o]);                \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                              \
            {                                                                                 \
                __m512 xv = _mm512_loadu_ps(x + 16 * v);                                      \
                acc[0][v] = _mm512_fmadd_ps(x0, xv, acc[0][v]);                               \
                acc[1][v] = _mm512_fmadd_ps(x1, xv, acc[1][v]);                               \
                acc[2][v] = _mm512_fmadd_ps(x2, xv, acc[2][v]);                               \
                acc[3][v] = _mm512_fmadd_ps(x3, xv, acc[3][v]);                               \
            }                                                                                 \
        }                                                                                     \
        __m512 va = _mm512_set1_ps(alpha);                                                    \
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++)                                   \
        {                                                                                     \
            if (r < nr) {                                                                     \
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                          \
                {                                                                             \
                    float *yp = y[r] + c0 + 16 * v;                                           \
                    __m512 t = _mm512_mul_ps(acc[r][v], va);                                  \
                    if (acc_out)                                                              \
                        t = _mm512_add_ps(t, _mm512_loadu_ps(yp));                            \
                    _mm512_storeu_ps(yp, t);                                                  \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }
MM_PV_CHUNK(1)
MM_PV_CHUNK(2)
MM_PV_CHUNK(3)
MM_PV_CHUNK(4)

static void pv_cols(int hd, int k0, int k1, float alpha, const float *const *w, int wstride,
                    const float *X, int ldx, float *const *y, int nr, int acc_out)
{
    for (int c0 = 0; c0 < hd; c0 += 64) {
        int nv = (hd - c0) / 16;
        if (nv >= 4)
            pv_chunk_4(k0, k1, alpha, w, wstride, X, ldx, c0, y, nr, acc_out);
        else if (nv == 3)
            pv_chunk_3(k0, k1, alpha, w, wstride, X, ldx, c0, y, nr, acc_out);
        else if (nv == 2)
            pv_chunk_2(k0, k1, alpha, w, wstride, X, ldx, c0, y, nr, acc_out);
        else
            pv_chunk_1(k0, k1, alpha, w, wstride, X, ldx, c0, y, nr, acc_out);
    }
}

void mm_att_pv(int T, int hd, float alpha, const float *P, const float *V, int ldv, float *O,
               int ldo, int acc)
{
    for (int i0 = 0; i0 < T; i0 += 4) {
        int nr = T - i0 < 4 ? T - i0 : 4;
        const float *w[4];
        float *y[4];
        for (int r = 0; r < 4; r++) {
            int i = i0 + (r < nr ? r : nr - 1);
            w[r] = P + (size_t)i * T;
            y[r] = O + (size_t)i * ldo;
        }
        /* P[i, j] = 0 for j > i: columns [0, i0 + nr) cover every row of the block */
        pv_cols(hd, 0, i0 + nr, alpha, w, 1, V, ldv, y, nr, acc);
    }
}

void mm_att_ptv(int T, int hd, float alpha, const float *P, const float *X, int ldx, float *Y,
                int ldy)
{
    for (int j0 = 0; j0 < T; j0 += 4) {
        int nr = T - j0 < 4 ? T - j0 : 4;
        const float *w[4];
        float *y[4];
        for (int r = 0; r < 4; r++) {
            int j = j0 + (r < nr ? r : nr - 1);
            w[r] = P + j; /* column j of P, read at row k: P[k * T + j] */
            y[r] = Y + (size_t)j * ldy;
        }
        /* P[i, j] = 0 for i < j: rows [j0, T) cover every column of the block */
        pv_cols(hd, j0, T, alpha, w, T, X, ldx, y, nr, 1);
    }
}

#pragma GCC pop_options

#else

int mm_sgemm(int threads, int trans_a, int trans_b, int M, int N, int K, float alpha,
             const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    return -1;
}

void mm_att_qk(int T, int hd, float alpha, const float *A, int lda, const float *Bt, float *S) {}
void mm_att_pv(int T, int hd, float alpha, const float *P, const float *V, int ldv, float *O,
               int ldo, int acc)
{
}
void mm_att_ptv(int T, int hd, float alpha, const float *P, const float *X, int ldx, float *Y,
                int ldy)
{
}

#endif
