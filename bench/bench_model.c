/* bench_model.c - learner and sampler throughput of the policy model, next to the machine's
 * own OpenBLAS sgemm peak measured in the same run.
 *
 *   bench_model [--threads N] [--quick] [--smollm2] [--config config.json]
 *
 * Sizes: dim 256 x 6 layers and 512 x 8 (vocabulary 98); --smollm2 adds SmolLM2-135M's shape
 * (hidden 576, 30 layers, 9 heads, 3 KV heads, MLP 1536, vocabulary 49152, tied; random
 * weights) at 1 and 2 threads, --config FILE any config.json instead of the built-in sizes.
 *
 * For each model size it prints
 *   learner: tokens/s of forward + backward + AdamW over a batch, achieved GFLOP/s, ratio to
 *            the sgemm peak;
 *   sampler: tokens/s decoding batch 1 and 16 completions of one prompt (KV cache), achieved
 *            GFLOP/s and ratio to the same peak (decoding one row is bandwidth-bound, so
 *            the sgemv rate on the model's largest matrix is printed as the fairer limit).
 * FLOPs are counted from the shapes: 2*m*n*k per matrix product (attention included,
 * over the causal half actually needed); backward = 2 x forward.
 */
#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "linalg.h"
#include "mm.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "sampler.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Best-of-3 sgemm GFLOP/s for an m x n x k product (C = A B^T, the model's layout). */
static double sgemm_peak(int m, int n, int k)
{
    float *A = malloc(sizeof(float) * (size_t)m * k), *B = malloc(sizeof(float) * (size_t)n * k),
          *C = malloc(sizeof(float) * (size_t)m * n);
    for (size_t i = 0; i < (size_t)m * k; i++)
        A[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < (size_t)n * k; i++)
        B[i] = (float)(i % 7) * 0.01f;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        int iters = 0;
        double t0 = now_s(), dt;
        do {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, A, k, B, k, 0.0f,
                        C, n);
            iters++;
            dt = now_s() - t0;
        } while (dt < 0.3);
        double g = 2.0 * m * n * k * iters / dt / 1e9;
        if (g > best)
            best = g;
    }
    free(A);
    free(B);
    free(C);
    return best;
}

/* sgemv GFLOP/s on an [o, i] matrix (batch-1 decoding's kernel). */
static double sgemv_rate(int o, int in)
{
    float *W = malloc(sizeof(float) * (size_t)o * in), *x = malloc(sizeof(float) * in),
          *y = malloc(sizeof(float) * o);
    for (size_t i = 0; i < (size_t)o * in; i++)
        W[i] = 0.001f * (float)(i % 11);
    for (int i = 0; i < in; i++)
        x[i] = 1.0f;
    int iters = 0;
    double t0 = now_s(), dt;
    do {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, o, in, 1.0f, W, in, x, 1, 0.0f, y, 1);
        iters++;
        dt = now_s() - t0;
    } while (dt < 0.3);
    free(W);
    free(x);
    free(y);
    return 2.0 * o * in * iters / dt / 1e9;
}

/* Forward FLOPs of one sequence of T tokens (attention over the causal half). */
static double forward_flops(const model_config *c, int T)
{
    double D = c->dim, F = c->hidden_dim, V = c->vocab_size, hd = D / c->n_heads;
    double qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    double per_tok = 2.0 * (D * qd + 2 * D * kvd + qd * D + 3 * D * F) * c->n_layers + 2.0 * D * V;
    double att = 2.0 * 2.0 * c->n_heads * hd * (T * (T + 1) / 2.0) * c->n_layers;
    return per_tok * T + att;
}

/* FLOPs of decoding one token at position pos. */
static double decode_flops(const model_config *c, int pos)
{
    double D = c->dim, F = c->hidden_dim, V = c->vocab_size, hd = D / c->n_heads;
    double qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    return 2.0 * (D * qd + 2 * D * kvd + qd * D + 3 * D * F) * c->n_layers + 2.0 * D * V +
           2.0 * 2.0 * c->n_heads * hd * (pos + 1) * c->n_layers;
}

static void bench_config(model_config c, int batch, int T, int quick, double peak)
{
    if (c.max_seq < T + 64)
        c.max_seq = T + 64;
    int dim = c.dim, layers = c.n_layers, heads = c.n_heads, kv_heads = c.n_kv_heads;
    model *m = NULL;
    coh_err err;
    if (model_create(&c, &m, &err)) {
        fprintf(stderr, "bench: %s\n", err.msg);
        exit(1);
    }
    model_init_random(m, 1);
    size_t n = model_num_params(m);
    printf("\nmodel dim %d x %d layers, %d heads (%d kv), mlp %d, vocab %d: %.2fM parameters "
           "(%.1f MB)\n",
           dim, layers, heads, kv_heads, c.hidden_dim, c.vocab_size, (double)n / 1e6,
           (double)n * 4 / 1e6);

    /* learner: forward + backward + AdamW */
    model_ws *ws = NULL;
    model_ws_create(m, batch, T, &ws, &err);
    int *tok = malloc(sizeof(int) * (size_t)batch * T);
    rng r;
    rng_init(&r, 3);
    for (int i = 0; i < batch * T; i++)
        tok[i] = 3 + (int)rng_below(&r, (uint32_t)(c.vocab_size - 3));
    float *g = calloc(n, sizeof(float));
    optim_segment seg = {0, n, 1};
    adamw *opt = NULL;
    adamw_create(n, &seg, 1, &opt, &err);
    optim_config oc = optim_config_default();
    oc.lr = 1e-6f;
    size_t V = (size_t)c.vocab_size;
    float *dl = model_ws_dlogits(ws);
    for (size_t i = 0; i < (size_t)batch * T * V; i++)
        dl[i] = 1e-4f * (float)((int)(i % 5) - 2);
    int steps = 0;
    double t0 = now_s(), dt;
    do {
        model_forward(m, ws, tok, batch, T, &err);
        memset(g, 0, n * sizeof(float));
        model_backward(m, ws, dl, g, &err);
        adamw_stats st;
        adamw_step(opt, &oc, model_params(m), g, 0.0f, &st, &err);
        steps++;
        dt = now_s() - t0;
    } while (dt < (quick ? 1.0 : 3.0) || steps < 2);
    double toks = (double)steps * batch * T / dt;
    double gf = 3.0 * forward_flops(&c, T) * batch * steps / dt / 1e9;
    printf("  learner (fwd+bwd+AdamW), batch %d x %d tokens: %8.0f tokens/s  %6.1f GFLOP/s  "
           "= %.2f of sgemm peak\n",
           batch, T, toks, gf, gf / peak);

    /* sampler */
    int prompt_len = 16, new_tokens = quick ? 32 : 48;
    int prompt[16];
    for (int i = 0; i < prompt_len; i++)
        prompt[i] = 3 + i;
    sample_params sp = sample_params_default();
    sp.max_new_tokens = new_tokens;
    sp.eos_id = -1;
    int nrows[2] = {1, 16};
    for (int k = 0; k < 2; k++) {
        int rows = nrows[k];
        sampler *s = NULL;
        sampler_create(m, rows, prompt_len + new_tokens, &s, &err);
        int *out = malloc(sizeof(int) * (size_t)rows * new_tokens), *len = malloc(sizeof(int) * rows);
        float *lp = malloc(sizeof(float) * (size_t)rows * new_tokens);
        int calls = 0;
        t0 = now_s();
        do {
            sampler_generate(s, prompt, prompt_len, rows, &sp, &r, out, lp, NULL, len, &err);
            calls++;
            dt = now_s() - t0;
        } while (dt < (quick ? 1.0 : 3.0));
        double fl = forward_flops(&c, prompt_len);
        for (int p = 0; p < new_tokens - 1; p++)
            fl += rows * decode_flops(&c, prompt_len + p);
        double tps = (double)calls * rows * new_tokens / dt;
        double sgf = fl * calls / dt / 1e9;
        printf("  sampler, %2d completion%s of one prompt (%d new tokens): %8.0f tokens/s  %6.1f "
               "GFLOP/s  = %.2f of sgemm peak\n",
               rows, rows > 1 ? "s" : " ", new_tokens, tps, sgf, sgf / peak);
        free(out);
        free(len);
        free(lp);
        sampler_destroy(s);
    }
    double gv = sgemv_rate(c.hidden_dim, dim);
    printf("  (batch-1 limit: sgemv on the %d x %d MLP matrix runs at %.1f GFLOP/s here)\n",
           c.hidden_dim, dim, gv);
    adamw_destroy(opt);
    free(g);
    free(tok);
    model_ws_destroy(ws);
    model_destroy(m);
}

static void bench_size(int dim, int layers, int heads, int kv_heads, int batch, int T, int quick,
                       double peak)
{
    model_config c = model_config_default(98);
    c.dim = dim;
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = kv_heads;
    c.hidden_dim = (dim * 8 / 3 + 63) / 64 * 64;
    bench_config(c, batch, T, quick, peak);
}

int main(int argc, char **argv)
{
    int threads = 1, quick = 0, smollm2 = 0, opt;
    const char *config = NULL;
    static const struct option opts[] = {{"threads", 1, 0, 't'}, {"quick", 0, 0, 'q'},
                                         {"smollm2", 0, 0, 's'}, {"config", 1, 0, 'c'},
                                         {0, 0, 0, 0}};
    while ((opt = getopt_long(argc, argv, "t:q", opts, NULL)) != -1) {
        coh_err err;
        if (opt == 't') {
            if (cli_parse_int("--threads", optarg, 1, 256, &threads, &err)) {
                fprintf(stderr, "bench_model: %s\n", err.msg);
                return 2;
            }
        } else if (opt == 'q') {
            quick = 1;
        } else if (opt == 's') {
            smollm2 = 1;
        } else if (opt == 'c') {
            config = optarg;
        } else {
            fprintf(stderr, "usage: bench_model [--threads N] [--quick] [--smollm2] "
                            "[--config config.json]\n");
            return 2;
        }
    }
    model_config given;
    if (config) {
        coh_err err;
        if (model_config_load(config, &given, &err)) {
            fprintf(stderr, "bench_model: %s\n", err.msg);
            return 2;
        }
    }
    la_set_threads(threads);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("OpenBLAS kernels: %s (OPENBLAS_CORETYPE=%s); config: %s\n", la_blas_corename(),
           ct ? ct : "unset", la_blas_config());
    printf("thread pools: OpenBLAS %d thread(s); Cohort's products: %s, its pool %d worker(s) "
           "besides the caller (the same setting; never computing at once with OpenBLAS)\n",
           la_blas_threads(), mm_available() ? "own AVX-512 kernel (common/mm.h)" : "OpenBLAS",
           la_blas_threads() > 1 ? la_blas_threads() - 1 : 0);
    double peak = sgemm_peak(512, 512, 512);
    double peak_big = sgemm_peak(1024, 1024, 1024);
    if (peak_big > peak)
        peak = peak_big;
    printf("sgemm peak (best of 512^3 and 1024^3, C = A B^T): %.1f GFLOP/s on %d thread(s)\n",
           peak, la_blas_threads());
    if (config) {
        printf("\nconfig %s", config);
        bench_config(given, 4, 64, quick, peak);
        return 0;
    }
    bench_size(256, 6, 8, 4, 16, 64, quick, peak);
    bench_size(512, 8, 8, 4, 8, 64, quick, peak);
    if (smollm2) {
        /* the real-scale shape, at 1 and 2 threads (each next to its own sgemm peak) */
        model_config c = model_config_default(49152);
        c.dim = 576;
        c.n_layers = 30;
        c.n_heads = 9;
        c.n_kv_heads = 3;
        c.hidden_dim = 1536;
        c.tie_embeddings = 1;
        c.rope_theta = 100000.0f;
        for (int th = 1; th <= 2; th++) {
            la_set_threads(th);
            double pk = sgemm_peak(512, 512, 512), pk2 = sgemm_peak(1024, 1024, 1024);
            if (pk2 > pk)
                pk = pk2;
            printf("\nSmolLM2-135M shape (random weights), %d OpenBLAS thread(s), sgemm peak "
                   "%.1f GFLOP/s",
                   la_blas_threads(), pk);
            bench_config(c, 4, 64, quick, pk);
        }
        la_set_threads(threads);
    }
    return 0;
}
