/* bench_side.c - the Cohort side of the side-by-side benchmark against PyTorch
 * (bench/side_by_side.sh runs it next to bench/torch_side.py on the same checkpoints).
 *
 *   bench_side make-ckpt --shape tiny|small|medium|smollm2 --out DIR [--seed N]
 *       write the shape's random-init policy as a Hugging Face folder (config.json,
 *       model.safetensors F32, tokenizer.json when the vocabulary is the built-in one)
 *   bench_side logits --ckpt DIR --out FILE
 *       forward over the fixed check batch (2 x 12 tokens, see check_token) and write its
 *       logits [2, 12, V] as raw little-endian float32 (torch_side.py compares them)
 *   bench_side run --ckpt DIR --shape NAME [--threads N] [--batch B --seq T]
 *                  [--prompt-len P --new-tokens N] [--min-time S] [--min-iters K]
 *                  [--no-learner]
 *                  [--no-sampler] [--grpo --grpo-dir DIR --grpo-steps K]
 *       (each measurement: one untimed warm-up iteration, then at least --min-iters (2) timed
 *       ones and at least --min-time (2) seconds)
 *       JSON lines, one per measurement: the machine bounds (OpenBLAS sgemm peak, memory read
 *       bandwidth over a buffer the size of the weights one decoded token reads, and over
 *       256 MiB), learner tokens/s (forward + GRPO loss + backward + AdamW), sampler tokens/s
 *       (1 and 16 completions of one prompt), and with --grpo whole single-process GRPO steps
 *       of cohort-train's trainer (addition, 3 digits, 32 prompts x 8 completions).
 *
 * The learner batch is a pure function of (b, t) that torch_side.py reproduces exactly:
 * token (b, t) = 3 + (b * 7919 + t * 104729 + 13) mod (V - 3); the first T/4 tokens of each
 * row are the prompt; groups of 4 rows (or all rows when B is not a multiple of 4); reward of
 * row b = b mod 2; behaviour log-prob of completion token k of row b =
 * -ln V + 0.05 * ((b + k) mod 5 - 2). The loss of the first step is printed, so both sides'
 * learning rules can be compared on the same numbers.
 */
#include <cblas.h>
#include <getopt.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checkpoint.h"
#include "cli.h"
#include "linalg.h"
#include "loss.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "sampler.h"
#include "tokenizer.h"
#include "trainer.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int die(const char *what, const coh_err *err)
{
    fprintf(stderr, "bench_side: %s: %s\n", what, err ? err->msg : "failed");
    return 1;
}

/* ---- shapes -------------------------------------------------------------------------- */

static int shape_config(const char *name, model_config *c, coh_err *err)
{
    if (!strcmp(name, "tiny")) {
        *c = model_config_default(98);
    } else if (!strcmp(name, "small") || !strcmp(name, "medium")) {
        int big = name[0] == 'm';
        *c = model_config_default(98);
        c->dim = big ? 512 : 256;
        c->n_layers = big ? 8 : 6;
        c->n_heads = 8;
        c->n_kv_heads = 4;
        c->hidden_dim = (c->dim * 8 / 3 + 63) / 64 * 64;
    } else if (!strcmp(name, "smollm2")) {
        *c = model_config_default(49152);
        c->dim = 576;
        c->n_layers = 30;
        c->n_heads = 9;
        c->n_kv_heads = 3;
        c->hidden_dim = 1536;
        c->tie_embeddings = 1;
        c->rope_theta = 100000.0f;
    } else {
        return coh_fail(err, COH_EINVAL,
                        "unknown shape '%s' (known: tiny, small, medium, smollm2)", name);
    }
    c->max_seq = 256;
    return model_config_validate(c, err);
}

/* ---- machine bounds ------------------------------------------------------------------ */

/* Best-of-3 sgemm GFLOP/s for an m x n x k product (C = A B^T, the model's layout). */
static double sgemm_rate(int m, int n, int k)
{
    float *A = malloc(sizeof(float) * (size_t)m * k), *B = malloc(sizeof(float) * (size_t)n * k),
          *C = malloc(sizeof(float) * (size_t)m * n);
    if (!A || !B || !C) {
        free(A);
        free(B);
        free(C);
        return 0.0;
    }
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
        } while (dt < 0.25);
        double g = 2.0 * m * n * k * iters / dt / 1e9;
        if (g > best)
            best = g;
    }
    free(A);
    free(B);
    free(C);
    return best;
}

typedef struct bw_job {
    const uint64_t *p;
    size_t n;     /* words */
    int passes;
    uint64_t sum; /* kept so that the reads are not optimised away */
} bw_job;

/* XOR-reduce the job's words with 256-bit loads (8 accumulators: 256 bytes in flight per
 * iteration), the fastest plain read this CPU does; bw_read falls back to SSE2. */
__attribute__((target("avx2"))) static void bw_read_avx2(bw_job *j)
{
    __m256i a[8];
    for (int k = 0; k < 8; k++)
        a[k] = _mm256_setzero_si256();
    size_t n32 = j->n / 32 * 32;
    for (int r = 0; r < j->passes; r++) {
        const uint64_t *p = j->p;
        for (size_t i = 0; i < n32; i += 32)
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++)
                a[k] = _mm256_xor_si256(a[k], _mm256_loadu_si256((const __m256i *)(p + i + 4 * k)));
    }
    for (int k = 1; k < 8; k++)
        a[0] = _mm256_xor_si256(a[0], a[k]);
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)out, a[0]);
    j->sum = out[0] ^ out[1] ^ out[2] ^ out[3];
}

static void *bw_read(void *arg)
{
    bw_job *j = arg;
    if (__builtin_cpu_supports("avx2")) {
        bw_read_avx2(j);
        return NULL;
    }
    __m128i a[8];
    for (int k = 0; k < 8; k++)
        a[k] = _mm_setzero_si128();
    size_t n16 = j->n / 16 * 16;
    for (int r = 0; r < j->passes; r++) {
        const uint64_t *p = j->p;
        for (size_t i = 0; i < n16; i += 16)
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++)
                a[k] = _mm_xor_si128(a[k], _mm_loadu_si128((const __m128i *)(p + i + 2 * k)));
    }
    for (int k = 1; k < 8; k++)
        a[0] = _mm_xor_si128(a[0], a[k]);
    uint64_t out[2];
    _mm_storeu_si128((__m128i *)out, a[0]);
    j->sum = out[0] ^ out[1];
    return NULL;
}

/* Read bandwidth (GB/s, best of 3) over a buffer of `bytes`, split across `threads` threads
 * (the benchmark's own threads, run while OpenBLAS is idle). Returns 0 on failure. */
static double read_bandwidth(size_t bytes, int threads)
{
    if (bytes < 4096)
        bytes = 4096;
    size_t words = (bytes + 255) / 256 * 32; /* whole 256-byte blocks */
    uint64_t *buf = malloc(words * sizeof(uint64_t));
    if (!buf)
        return 0.0;
    for (size_t i = 0; i < words; i++)
        buf[i] = i * 0x9e3779b97f4a7c15ull;
    int passes = 1;
    double best = 0;
    uint64_t sink = 0;
    for (int rep = 0; rep < 4; rep++) {
        bw_job jobs[16];
        pthread_t th[16];
        if (threads > 16)
            threads = 16;
        size_t per = words / 32 / (size_t)threads * 32;
        double t0 = now_s();
        for (int i = 0; i < threads; i++) {
            jobs[i].p = buf + per * (size_t)i;
            jobs[i].n = i == threads - 1 ? words - per * (size_t)i : per;
            jobs[i].passes = passes;
            if (i > 0 && pthread_create(&th[i], NULL, bw_read, &jobs[i])) {
                free(buf);
                return 0.0;
            }
        }
        bw_read(&jobs[0]);
        for (int i = 1; i < threads; i++)
            pthread_join(th[i], NULL);
        double dt = now_s() - t0;
        for (int i = 0; i < threads; i++)
            sink ^= jobs[i].sum;
        if (dt < 0.05) { /* too short to time: more passes, and this rep does not count */
            passes = passes * 2 + (int)(0.1 / (dt + 1e-6));
            rep--;
            continue;
        }
        double g = (double)words * 8.0 * passes / dt / 1e9;
        if (g > best)
            best = g;
    }
    free(buf);
    if (sink == 42) /* never: keeps sink alive */
        fprintf(stderr, " ");
    return best;
}

/* ---- FLOPs and bytes from the shapes (as bench_model counts them) --------------------- */

static double forward_flops(const model_config *c, int T)
{
    double D = c->dim, F = c->hidden_dim, V = c->vocab_size, hd = model_config_head_dim(c);
    double qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    double per_tok = 2.0 * (D * qd + 2 * D * kvd + qd * D + 3 * D * F) * c->n_layers + 2.0 * D * V;
    double att = 2.0 * 2.0 * c->n_heads * hd * (T * (T + 1) / 2.0) * c->n_layers;
    return per_tok * T + att;
}

/* Bytes one decoded token reads: every matrix and norm once (the input embedding only one
 * row, unless it is also the lm_head), plus the KV cache up to position pos. */
static double decode_bytes(const model *m, int pos)
{
    const model_config *c = model_get_config(m);
    double params = (double)model_num_params(m);
    if (!c->tie_embeddings)
        params -= (double)c->vocab_size * c->dim - c->dim;
    double hd = model_config_head_dim(c);
    double kv = 2.0 * c->n_layers * c->n_kv_heads * hd * (pos + 1);
    return 4.0 * (params + kv);
}

/* ---- the fixed batches --------------------------------------------------------------- */

static int check_token(int b, int t, int V) { return 3 + (b * 7919 + t * 104729 + 13) % (V - 3); }

/* ---- make-ckpt, logits --------------------------------------------------------------- */

static int cmd_make_ckpt(const char *shape, const char *out, uint64_t seed)
{
    coh_err err;
    model_config c;
    if (shape_config(shape, &c, &err))
        return die("shape", &err);
    model *m = NULL;
    if (model_create(&c, &m, &err))
        return die("model_create", &err);
    model_init_random(m, seed);
    tokenizer *tok = NULL;
    if (c.vocab_size == 98 && tok_create_default(&tok, &err)) {
        model_destroy(m);
        return die("tokenizer", &err);
    }
    int rc = ckpt_save(out, m, tok, &err);
    tok_destroy(tok);
    model_destroy(m);
    if (rc)
        return die("ckpt_save", &err);
    printf("{\"side\":\"cohort\",\"event\":\"ckpt\",\"shape\":\"%s\",\"dir\":\"%s\"}\n", shape, out);
    return 0;
}

static int cmd_logits(const char *dir, const char *out)
{
    coh_err err;
    model *m = NULL;
    if (ckpt_load(dir, &m, NULL, &err))
        return die(dir, &err);
    int B = 2, T = 12, V = model_get_config(m)->vocab_size;
    int tok[24];
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            tok[b * T + t] = check_token(b, t, V);
    model_ws *ws = NULL;
    if (model_ws_create(m, B, T, &ws, &err) || model_forward(m, ws, tok, B, T, &err)) {
        model_ws_destroy(ws);
        model_destroy(m);
        return die("forward", &err);
    }
    FILE *f = fopen(out, "wb");
    size_t n = (size_t)B * T * V;
    int ok = f && fwrite(model_ws_logits(ws), sizeof(float), n, f) == n;
    if (f && fclose(f))
        ok = 0;
    model_ws_destroy(ws);
    model_destroy(m);
    if (!ok) {
        fprintf(stderr, "bench_side: cannot write logits to %s\n", out);
        return 1;
    }
    return 0;
}

/* ---- run ----------------------------------------------------------------------------- */

typedef struct run_opts {
    const char *ckpt, *shape, *grpo_dir;
    int threads, batch, seq, prompt_len, new_tokens, learner, sampler, grpo, grpo_steps;
    int min_iters; /* timed iterations at least (after the untimed warm-up) */
    double min_time;
} run_opts;

static void emit(const run_opts *o, const char *line, double value, const char *unit,
                 const char *extra)
{
    printf("{\"side\":\"cohort\",\"shape\":\"%s\",\"threads\":%d,\"line\":\"%s\",\"value\":%.6g,"
           "\"unit\":\"%s\"%s%s}\n",
           o->shape, o->threads, line, value, unit, extra && *extra ? "," : "",
           extra ? extra : "");
    fflush(stdout);
}

static int bench_learner(const run_opts *o, model *m)
{
    coh_err err;
    const model_config *c = model_get_config(m);
    int B = o->batch, T = o->seq, V = c->vocab_size, P = T / 4, G = B % 4 == 0 ? 4 : B;
    size_t n = model_num_params(m);
    int *tok = malloc(sizeof(int) * (size_t)B * T), *use = malloc(sizeof(int) * (size_t)B);
    float *beh = malloc(sizeof(float) * (size_t)B * T), *adv = malloc(sizeof(float) * (size_t)B * T);
    float *g = malloc(sizeof(float) * n);
    loss_seq *seqs = calloc((size_t)B, sizeof(loss_seq));
    model_ws *ws = NULL;
    adamw *opt = NULL;
    int rc = 1;
    if (!tok || !use || !beh || !adv || !g || !seqs) {
        fprintf(stderr, "bench_side: learner: out of memory\n");
        goto out;
    }
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            tok[b * T + t] = check_token(b, t, V);
            beh[b * T + t] = -logf((float)V) + 0.05f * (float)((b + t) % 5 - 2);
        }
        seqs[b].tokens = tok + (size_t)b * T;
        seqs[b].group = b / G;
        seqs[b].prompt_len = P;
        seqs[b].len = T;
        seqs[b].reward = (double)(b % 2);
        seqs[b].behaviour_logp = beh + (size_t)b * T;
        seqs[b].ref_logp = NULL;
    }
    optim_segment seg = {0, n, 1};
    if (model_ws_create(m, B, T, &ws, &err) || adamw_create(n, &seg, 1, &opt, &err)) {
        die("learner setup", &err);
        goto out;
    }
    loss_config lc = loss_config_default();
    lc.mode = LOSS_RL;
    lc.max_new_tokens = T - P;
    optim_config oc = optim_config_default();
    oc.lr = 1e-5f;
    oc.beta2 = 0.99f;
    oc.grad_clip = 1.0f;
    int steps = 0;
    double loss0 = 0, t0 = 0, dt = 0;
    /* one untimed warm-up step (its loss is the one compared with PyTorch's), then timed */
    for (;;) {
        loss_adv_stats as;
        loss_stats ls;
        adamw_stats st;
        if (model_forward(m, ws, tok, B, T, &err) ||
            loss_advantages(&lc, seqs, B, T, adv, use, &as, &err) ||
            loss_compute(&lc, seqs, B, T, adv, use, model_ws_logits(ws), V, model_ws_dlogits(ws),
                         &ls, &err)) {
            die("learner forward/loss", &err);
            goto out;
        }
        memset(g, 0, n * sizeof(float));
        if (model_backward(m, ws, model_ws_dlogits(ws), g, &err) ||
            adamw_step(opt, &oc, model_params(m), g, 0.0f, &st, &err)) {
            die("learner backward/AdamW", &err);
            goto out;
        }
        if (t0 == 0) {
            loss0 = ls.loss;
            t0 = now_s();
            continue;
        }
        steps++;
        dt = now_s() - t0;
        if (dt >= o->min_time && steps >= o->min_iters)
            break;
    }
    double flops = 3.0 * forward_flops(c, T) * B;
    char extra[256];
    snprintf(extra, sizeof extra,
             "\"batch\":%d,\"seq\":%d,\"steps\":%d,\"gflops\":%.4g,\"loss0\":%.9g", B, T, steps,
             flops * steps / dt / 1e9, loss0);
    emit(o, "learner", (double)steps * B * T / dt, "tokens/s", extra);
    rc = 0;
out:
    adamw_destroy(opt);
    model_ws_destroy(ws);
    free(tok);
    free(use);
    free(beh);
    free(adv);
    free(g);
    free(seqs);
    return rc;
}

static int bench_sampler(const run_opts *o, model *m)
{
    coh_err err;
    int P = o->prompt_len, N = o->new_tokens;
    int *prompt = malloc(sizeof(int) * (size_t)P);
    if (!prompt)
        return 1;
    for (int i = 0; i < P; i++)
        prompt[i] = 3 + i;
    sample_params sp = sample_params_default();
    sp.temperature = 1.0f;
    sp.max_new_tokens = N;
    sp.eos_id = -1;
    rng r;
    rng_init(&r, 7);
    int nrows[2] = {1, 16};
    for (int k = 0; k < 2; k++) {
        int rows = nrows[k];
        sampler *s = NULL;
        int *out = malloc(sizeof(int) * (size_t)rows * N), *len = malloc(sizeof(int) * rows);
        float *lp = malloc(sizeof(float) * (size_t)rows * N);
        if (!out || !len || !lp || sampler_create(m, rows, P + N, &s, &err)) {
            free(out);
            free(len);
            free(lp);
            free(prompt);
            return die("sampler setup", &err);
        }
        int calls = 0;
        double t0 = 0, dt = 0;
        for (;;) {
            if (sampler_generate(s, prompt, P, rows, &sp, &r, out, lp, NULL, len, &err)) {
                sampler_destroy(s);
                free(out);
                free(len);
                free(lp);
                free(prompt);
                return die("sampler_generate", &err);
            }
            if (t0 == 0) { /* untimed warm-up call */
                t0 = now_s();
                continue;
            }
            calls++;
            dt = now_s() - t0;
            if (dt >= o->min_time && calls >= o->min_iters)
                break;
        }
        char extra[160];
        snprintf(extra, sizeof extra,
                 "\"rows\":%d,\"prompt_len\":%d,\"new_tokens\":%d,\"calls\":%d", rows, P, N,
                 calls);
        emit(o, rows == 1 ? "sampler1" : "sampler16", (double)calls * rows * N / dt, "tokens/s",
             extra);
        sampler_destroy(s);
        free(out);
        free(len);
        free(lp);
    }
    free(prompt);
    return 0;
}

static int bench_grpo(const run_opts *o)
{
    coh_err err;
    trainer_config c = trainer_config_default();
    snprintf(c.out_dir, sizeof c.out_dir, "%s", o->grpo_dir);
    snprintf(c.task, sizeof c.task, "addition");
    c.task_cfg.digits = 3;
    snprintf(c.init_from, sizeof c.init_from, "%s", o->ckpt);
    c.sft_steps = 0;
    c.raft_steps = 0;
    c.rl_steps = o->grpo_steps + 1000; /* never the last step: no final checkpoint inside */
    c.prompts_per_step = 32;
    c.group_size = 8;
    c.eval_every = 0;
    c.ckpt_every = 0;
    c.quiet = 1;
    trainer *t = NULL;
    if (trainer_create(&c, 0, &t, &err))
        return die("trainer_create (GRPO step)", &err);
    trainer_metrics mt;
    double t0 = 0, reward = 0, tokens = 0, sample_s = 0;
    int steps = 0;
    for (int i = 0; i <= o->grpo_steps; i++) {
        if (trainer_step(t, &mt, &err)) {
            trainer_destroy(t);
            return die("trainer_step", &err);
        }
        if (i == 0) { /* untimed warm-up step */
            t0 = now_s();
            continue;
        }
        steps++;
        reward += mt.reward_mean;
        tokens += mt.learner_tokens_per_s;
        sample_s += mt.sampler_tokens_per_s;
    }
    double dt = now_s() - t0;
    trainer_destroy(t);
    char extra[200];
    snprintf(extra, sizeof extra,
             "\"steps\":%d,\"prompts\":32,\"group\":8,\"reward_mean\":%.4f,"
             "\"learner_tokens_per_s\":%.1f,\"sampler_tokens_per_s\":%.1f",
             steps, reward / steps, tokens / steps, sample_s / steps);
    emit(o, "grpo_step", steps / dt, "steps/s", extra);
    return 0;
}

static int cmd_run(const run_opts *o)
{
    coh_err err;
    la_set_threads(o->threads);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("{\"side\":\"cohort\",\"event\":\"blas\",\"corename\":\"%s\",\"coretype_env\":\"%s\","
           "\"blas_threads\":%d,\"config\":\"%s\"}\n",
           la_blas_corename(), ct ? ct : "unset", la_blas_threads(), la_blas_config());
    model *m = NULL;
    if (ckpt_load(o->ckpt, &m, NULL, &err))
        return die(o->ckpt, &err);
    const model_config *c = model_get_config(m);
    if (o->seq > c->max_seq || o->prompt_len + o->new_tokens > c->max_seq) {
        fprintf(stderr,
                "bench_side: --seq %d or --prompt-len + --new-tokens %d exceed the checkpoint's "
                "max_position_embeddings %d\n",
                o->seq, o->prompt_len + o->new_tokens, c->max_seq);
        model_destroy(m);
        return 2;
    }
    /* bounds at this thread count, measured before and again after the measurements (on a
     * shared machine the other cores' load moves them: the better of the two is the bound) */
    double wbytes = decode_bytes(m, o->prompt_len + o->new_tokens / 2);
    double pk = 0, bw_model = 0, bw_dram = 0;
    double fl_tok = 3.0 * forward_flops(c, o->seq) / o->seq;
    double dflops = forward_flops(c, 1) + 4.0 * c->n_heads * model_config_head_dim(c) *
                                              (o->prompt_len + o->new_tokens / 2) * c->n_layers;
    int rc = 0;
    for (int pass = 0; pass < 2; pass++) {
        double p1 = sgemm_rate(512, 512, 512), p2 = sgemm_rate(1024, 1024, 1024);
        double b1 = read_bandwidth((size_t)wbytes, o->threads);
        double b2 = read_bandwidth((size_t)256 << 20, o->threads);
        pk = fmax(pk, fmax(p1, p2));
        bw_model = fmax(bw_model, b1);
        bw_dram = fmax(bw_dram, b2);
        if (pass == 1)
            break;
        if (o->learner)
            rc = bench_learner(o, m);
        if (!rc && o->sampler)
            rc = bench_sampler(o, m);
        if (rc)
            break;
    }
    model_destroy(m);
    if (!rc && o->grpo)
        rc = bench_grpo(o);
    if (rc)
        return rc;
    char extra[200];
    snprintf(extra, sizeof extra, "\"flops_per_token\":%.6g", fl_tok);
    emit(o, "sgemm_peak", pk, "GFLOP/s", extra);
    snprintf(extra, sizeof extra, "\"bytes_per_token\":%.6g,\"bw_dram_gbs\":%.4g", wbytes,
             bw_dram);
    emit(o, "read_bw", bw_model, "GB/s", extra);
    /* tokens/s bounds: the learner at the sgemm peak; batch-1 decode at read bandwidth; 16
     * rows in lock step read the weights once per step for all rows, unless the products'
     * FLOPs at the sgemm peak take longer */
    emit(o, "bound_learner", pk * 1e9 / fl_tok, "tokens/s", NULL);
    emit(o, "bound_sampler1", bw_model * 1e9 / wbytes, "tokens/s", NULL);
    double b16 = 16.0 * bw_model * 1e9 / wbytes, c16 = pk * 1e9 / dflops;
    emit(o, "bound_sampler16", b16 < c16 ? b16 : c16, "tokens/s", NULL);
    return rc;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_side make-ckpt --shape tiny|small|medium|smollm2 --out DIR [--seed N]\n"
            "       bench_side logits --ckpt DIR --out FILE\n"
            "       bench_side run --ckpt DIR --shape NAME [--threads N] [--batch B] [--seq T]\n"
            "                  [--prompt-len P] [--new-tokens N] [--min-time S] [--min-iters K]\n"
            "                  [--no-learner]"
            "                  [--no-sampler] [--grpo --grpo-dir DIR --grpo-steps K]\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    const char *cmd = argv[1];
    run_opts o = {.ckpt = NULL, .shape = "?", .grpo_dir = NULL, .threads = 1, .batch = 16,
                  .seq = 64, .prompt_len = 16, .new_tokens = 48, .learner = 1, .sampler = 1,
                  .grpo = 0, .grpo_steps = 3, .min_iters = 2, .min_time = 2.0};
    const char *out = NULL;
    uint64_t seed = 1;
    enum { O_SHAPE = 1, O_OUT, O_SEED, O_CKPT, O_THREADS, O_BATCH, O_SEQ, O_PLEN, O_NEW, O_MINT,
           O_NOLEARN, O_NOSAMP, O_GRPO, O_GDIR, O_GSTEPS, O_MINI };
    static const struct option opts[] = {
        {"shape", 1, 0, O_SHAPE},       {"out", 1, 0, O_OUT},
        {"seed", 1, 0, O_SEED},         {"ckpt", 1, 0, O_CKPT},
        {"threads", 1, 0, O_THREADS},   {"batch", 1, 0, O_BATCH},
        {"seq", 1, 0, O_SEQ},           {"prompt-len", 1, 0, O_PLEN},
        {"new-tokens", 1, 0, O_NEW},    {"min-time", 1, 0, O_MINT},
        {"no-learner", 0, 0, O_NOLEARN}, {"no-sampler", 0, 0, O_NOSAMP},
        {"grpo", 0, 0, O_GRPO},         {"grpo-dir", 1, 0, O_GDIR},
        {"grpo-steps", 1, 0, O_GSTEPS}, {"min-iters", 1, 0, O_MINI},
        {0, 0, 0, 0}};
    optind = 2;
    int opt;
    coh_err err;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int rc = 0;
        switch (opt) {
        case O_SHAPE: o.shape = optarg; break;
        case O_OUT: out = optarg; break;
        case O_SEED: rc = cli_parse_u64("--seed", optarg, 0, UINT64_MAX, &seed, &err); break;
        case O_CKPT: o.ckpt = optarg; break;
        case O_THREADS: rc = cli_parse_int("--threads", optarg, 1, 64, &o.threads, &err); break;
        case O_BATCH: rc = cli_parse_int("--batch", optarg, 2, 4096, &o.batch, &err); break;
        case O_SEQ: rc = cli_parse_int("--seq", optarg, 4, 65536, &o.seq, &err); break;
        case O_PLEN: rc = cli_parse_int("--prompt-len", optarg, 1, 65536, &o.prompt_len, &err); break;
        case O_NEW: rc = cli_parse_int("--new-tokens", optarg, 1, 65536, &o.new_tokens, &err); break;
        case O_MINT:
            rc = cli_parse_double("--min-time", optarg, 0.0, 3600.0, 0, 0, &o.min_time, &err);
            break;
        case O_NOLEARN: o.learner = 0; break;
        case O_NOSAMP: o.sampler = 0; break;
        case O_GRPO: o.grpo = 1; break;
        case O_GDIR: o.grpo_dir = optarg; break;
        case O_MINI: rc = cli_parse_int("--min-iters", optarg, 1, 100000, &o.min_iters, &err); break;
        case O_GSTEPS: rc = cli_parse_int("--grpo-steps", optarg, 1, 100000, &o.grpo_steps, &err); break;
        default: usage(); return 2;
        }
        if (rc) {
            fprintf(stderr, "bench_side: %s\n", err.msg);
            return 2;
        }
    }
    if (!strcmp(cmd, "make-ckpt")) {
        if (!out || !strcmp(o.shape, "?")) {
            fprintf(stderr, "bench_side make-ckpt: --shape and --out are required\n");
            return 2;
        }
        return cmd_make_ckpt(o.shape, out, seed);
    }
    if (!strcmp(cmd, "logits")) {
        if (!o.ckpt || !out) {
            fprintf(stderr, "bench_side logits: --ckpt and --out are required\n");
            return 2;
        }
        return cmd_logits(o.ckpt, out);
    }
    if (!strcmp(cmd, "run")) {
        if (!o.ckpt) {
            fprintf(stderr, "bench_side run: --ckpt is required\n");
            return 2;
        }
        if (o.grpo && !o.grpo_dir) {
            fprintf(stderr, "bench_side run: --grpo needs --grpo-dir (a scratch run folder)\n");
            return 2;
        }
        return cmd_run(&o);
    }
    fprintf(stderr, "bench_side: unknown command '%s'\n", cmd);
    usage();
    return 2;
}
