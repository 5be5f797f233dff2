/* linalg.h - the few dense kernels the model needs, all on top of OpenBLAS.
 *
 * Shapes follow Hugging Face Linear: W is [n_out, n_in] (out, in) row-major, y = x W^T.
 * Every function is pure: no allocation, no I/O. "acc" arguments choose between
 * overwriting (0) and adding into (1) the output.
 */
#ifndef COHORT_LINALG_H
#define COHORT_LINALG_H

#include <stddef.h>

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
/* Size OpenBLAS's thread pool (the only pool Cohort's math uses). n <= 0 leaves it alone. */
void la_set_threads(int n);

#endif
