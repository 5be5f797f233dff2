/* linalg.c - OpenBLAS-backed kernels (see linalg.h). */
#include "linalg.h"

#include <cblas.h>

void la_linear(float *y, const float *x, const float *W, int N, int n_in, int n_out, int acc)
{
    if (N == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n_out, n_in, 1.0f, W, n_in, x, 1, acc ? 1.0f : 0.0f, y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, n_out, n_in, 1.0f, x, n_in, W, n_in,
                    acc ? 1.0f : 0.0f, y, n_out);
}

void la_linear_dx(float *dx, const float *dy, const float *W, int N, int n_in, int n_out, int acc)
{
    if (N == 1)
        cblas_sgemv(CblasRowMajor, CblasTrans, n_out, n_in, 1.0f, W, n_in, dy, 1, acc ? 1.0f : 0.0f, dx, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, n_in, n_out, 1.0f, dy, n_out, W, n_in,
                    acc ? 1.0f : 0.0f, dx, n_in);
}

void la_linear_dw(float *dW, const float *dy, const float *x, int N, int n_in, int n_out)
{
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, N, 1.0f, dy, n_out, x, n_in, 1.0f, dW, n_in);
}

const char *la_blas_corename(void) { return openblas_get_corename(); }
const char *la_blas_config(void) { return openblas_get_config(); }
int la_blas_threads(void) { return openblas_get_num_threads(); }

void la_set_threads(int n)
{
    if (n > 0)
        openblas_set_num_threads(n);
}
