/* mm.h - Cohort's own single-precision matrix product for CPUs with AVX-512.
 *
 * OpenBLAS 0.3.21 runs its AVX2 ("Haswell") kernels wherever OPENBLAS_CORETYPE says so, and
 * that variable is the deployment's to set. On a CPU with AVX-512 this module's product
 * (packed panels, a 12 x 32 register-blocked micro-kernel) is about 1.5x faster than those
 * kernels, so linalg.c sends its products here when mm_available() says yes; otherwise
 * OpenBLAS does the work as before.
 *
 * mm_sgemm computes C = alpha op(A) op(B) + beta C, row-major, like cblas_sgemm: op(A) is
 * M x K (A is M x K with leading dimension lda, or K x M when trans_a), op(B) is K x N (B is
 * K x N, or N x K when trans_b), C is M x N with leading dimension ldc. beta == 0 never reads
 * C (it may hold garbage). The sums are taken in a different order than OpenBLAS's, so
 * results differ in the last bits.
 *
 * Packing buffers (about 1.2 MB each) come from a pool of 8 kept for the life of the
 * process: any number of threads may call mm_sgemm at once and no allocation happens after
 * the first calls (a caller that finds the pool empty, or out of memory, gets cblas_sgemm).
 *
 * Threads: with threads > 1 a product of at least 4 MFLOP is cut into `threads` column (or
 * row) ranges computed by the caller and threads - 1 workers (at most 7), started on first
 * use and kept, sleeping, for the life of the process. The caller sizes this by the same
 * setting as OpenBLAS's pool (linalg.c passes openblas_get_num_threads()), and the two never
 * compute at once: a product runs either here or in OpenBLAS. The same workers run
 * mm_parallel's tasks (model.c's attention, the optimizer). One task at a time uses the
 * workers; a concurrent caller computes alone.
 *
 * Returns -1 (and does nothing) when the CPU lacks AVX-512 or COHORT_KERN asks for a
 * narrower set (kern.h): the caller then uses OpenBLAS. Otherwise 0.
 */
#ifndef COHORT_MM_H
#define COHORT_MM_H

/* A task cut into parts: fn(ctx, part, parts) for part in [0, parts), each part on its own
 * thread, all done when mm_parallel returns. */
typedef void (*mm_task_fn)(void *ctx, int part, int parts);
/* Run fn in min(threads, 8) parts on the caller and the pool's workers (started on first
 * use). When another task holds the workers, or threads <= 1, runs fn(ctx, 0, 1) on the
 * caller. Returns the number of parts used. Works on any CPU. */
int mm_parallel(int threads, mm_task_fn fn, void *ctx);

/* 1 when mm_sgemm runs on this CPU. */
int mm_available(void);

int mm_sgemm(int threads, int trans_a, int trans_b, int M, int N, int K, float alpha,
             const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* Causal attention products of one head over T positions with head dimension hd, for
 * model.c. Only when mm_available() and hd is a multiple of 16 (else they must not be
 * called). Single-threaded, no allocation; row-major with the leading dimensions given.
 *   mm_att_qk:  S[i, j] = alpha sum_d A[i, d] Bt[d, j] for j <= i (at least; columns past i
 *               up to the next multiple of 16 may be written too, others are left alone).
 *               S is [T, T], Bt is [hd, T] (ld T), A is [T, hd] (ld lda).
 *   mm_att_pv:  O[i, :] (=|+= when acc) alpha sum_j P[i, j] V[j, :], P [T, T] with
 *               P[i, j] == 0 for j > i (only j < i rounded up to a block of 4 are read).
 *   mm_att_ptv: Y[j, :] += alpha sum_i P[i, j] X[i, :], P as above (the transpose product). */
void mm_att_qk(int T, int hd, float alpha, const float *A, int lda, const float *Bt, float *S);
void mm_att_pv(int T, int hd, float alpha, const float *P, const float *V, int ldv, float *O,
               int ldo, int acc);
void mm_att_ptv(int T, int hd, float alpha, const float *P, const float *X, int ldx, float *Y,
                int ldy);

#endif
