/* linalg.h - the few dense kernels the model needs, on top of OpenBLAS (and mm.h).
 *
 * Shapes follow Hugging Face Linear: W is [n_out, n_in] (out, in) row-major, y = x W^T.
 * Every function is pure: no allocation, no I/O. "acc" arguments choose between
 * overwriting (0) and adding into (1) the output.
 */
#ifndef COHORT_LINALG_H
#define COHORT_LINALG_H

#include <stddef.h>

/* C[M, N] = alpha op(A) op(B) + beta C, row-major, as cblas_sgemm (trans_* = 1: transposed).
 * On a CPU with AVX-512 this runs mm_sgemm (mm.h; about 1.5x faster than OpenBLAS's AVX2
 * kernels) on as many threads as OpenBLAS's pool has; otherwise cblas_sgemm.
 * beta == 0 never reads C. */
void la_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);
/* y[N, n_out] (=|+=) x[N, n_in] W[n_out, n_in]^T. Uses sgemv when N == 1 (several times faster). */
void la_linear(float *y, const float *x, const float *W, int N, int n_in, int n_out, int acc);
/* dx[N, n_in] (=|+=) dy[N, n_out] W[n_out, n_in]. */
void la_linear_dx(float *dx, const float *dy, const float *W, int N, int n_in, int n_out, int acc);
/* dW[n_out, n_in] += dy[N, n_out]^T x[N, n_in]. */
void la_linear_dw(float *dW, const float *dy, const float *x, int N, int n_in, int n_out);

/* OpenBLAS facts for benchmarks and logs: kernel set ("Haswell", ...), thread count. */
const char *la_blas_corename(void);
const char *la_blas_config(void);
int la_blas_threads(void);
/* OpenBLAS 0.3.21 does not recognise some newer CPUs and falls back to its generic
 * "Prescott" kernels, 3-5x slower than the AVX2/AVX-512 ones the CPU can run. Called first
 * thing in main(): when OPENBLAS_CORETYPE is unset, COHORT_KEEP_BLAS_KERNELS is unset, and
 * OpenBLAS chose a generic kernel set on a CPU with AVX-512 (or AVX2), set OPENBLAS_CORETYPE
 * to SkylakeX (or Haswell) and re-execute the program (OpenBLAS reads the variable only when
 * it loads). Prints one line to stderr saying so. Returns only when nothing is to be done or
 * the re-exec failed. */
void la_blas_autoselect(char **argv);
/* Size OpenBLAS's thread pool. n <= 0 leaves it alone. mm.h's products use the same number
 * of threads (their own workers, never at the same time as OpenBLAS's). */
void la_set_threads(int n);

#endif
