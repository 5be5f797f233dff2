/* linalg.c - OpenBLAS-backed kernels (see linalg.h). */
#include "linalg.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mm.h"

void la_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc)
{
    if (mm_sgemm(openblas_get_num_threads(), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb,
                 beta, C, ldc) == 0)
        return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void la_linear(float *y, const float *x, const float *W, int N, int n_in, int n_out, int acc)
{
    if (N == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n_out, n_in, 1.0f, W, n_in, x, 1, acc ? 1.0f : 0.0f, y, 1);
    else
        la_sgemm(0, 1, N, n_out, n_in, 1.0f, x, n_in, W, n_in, acc ? 1.0f : 0.0f, y, n_out);
}

void la_linear_dx(float *dx, const float *dy, const float *W, int N, int n_in, int n_out, int acc)
{
    if (N == 1)
        cblas_sgemv(CblasRowMajor, CblasTrans, n_out, n_in, 1.0f, W, n_in, dy, 1, acc ? 1.0f : 0.0f, dx, 1);
    else
        la_sgemm(0, 0, N, n_in, n_out, 1.0f, dy, n_out, W, n_in, acc ? 1.0f : 0.0f, dx, n_in);
}

void la_linear_dw(float *dW, const float *dy, const float *x, int N, int n_in, int n_out)
{
    la_sgemm(1, 0, n_out, n_in, N, 1.0f, dy, n_out, x, n_in, 1.0f, dW, n_in);
}

const char *la_blas_corename(void) { return openblas_get_corename(); }
const char *la_blas_config(void) { return openblas_get_config(); }
int la_blas_threads(void) { return openblas_get_num_threads(); }

void la_set_threads(int n)
{
    if (n > 0)
        openblas_set_num_threads(n);
}

void la_blas_autoselect(char **argv)
{
    if (getenv("OPENBLAS_CORETYPE") || getenv("COHORT_KEEP_BLAS_KERNELS"))
        return;
    const char *core = openblas_get_corename();
    if (!core || (strcmp(core, "Prescott") != 0 && strcmp(core, "Core2") != 0 &&
                  strcmp(core, "Nehalem") != 0 && strcmp(core, "Sandybridge") != 0))
        return;
    __builtin_cpu_init();
    const char *pick = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        pick = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        pick = "Haswell";
    if (!pick)
        return;
    fprintf(stderr,
            "note: OpenBLAS chose its generic %s kernels on a CPU that runs %s kernels; "
            "restarting with OPENBLAS_CORETYPE=%s (set OPENBLAS_CORETYPE or "
            "COHORT_KEEP_BLAS_KERNELS=1 to choose yourself)\n",
            core, pick, pick);
    setenv("OPENBLAS_CORETYPE", pick, 1);
    /* exec the binary by its real path, so that the process keeps its name (ps, pgrep) */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        execv(self, argv);
    }
    execv("/proc/self/exe", argv);
    fprintf(stderr, "note: re-exec failed; continuing with %s kernels\n", core);
}
