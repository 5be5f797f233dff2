/* sampler.c - batched autoregressive sampling with a KV cache (see sampler.h).
 *
 * The sampler runs its own forward over a few rows at a time (forward_rows): each row is one
 * token at one position of one KV-cache row. Prefill feeds the prompt's positions as rows
 * (chunks of up to PF_ROWS) into one cache row and computes logits for the last position
 * only; the prefix is then copied to every row of the group. Decoding advances all live rows
 * one position per step, every weight matrix streamed once per step for all rows
 * (gv_linear, common/gemv.h), the lm_head included. Nothing is allocated per token.
 */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gemv.h"
#include "linalg.h"
#include "mm.h"
#include "private/model_internal.h"

/* Prefill runs the prompt in chunks of up to PF_ROWS positions. */
#define PF_ROWS 64
/* The draw scans block sums of SM_BLOCK probabilities before scanning one block. */
#define SM_BLOCK 256
/* Rows from which a Linear layer goes to OpenBLAS's sgemm instead of gv_linear. */
#define GEMM_MIN_ROWS 32

struct sampler {
    const model *m;
    int max_batch, max_seq, max_rows; /* max_rows = max(max_batch, min(max_seq, PF_ROWS)) */
    float *kc, *vc;          /* [L, max_batch, max_seq, kvd] */
    float *x, *xn, *q, *k, *v, *ao, *gate, *up; /* [max_rows, .] */
    float *logits;           /* [max_batch, V] */
    float *att;              /* [H / KVH, max_seq] attention probabilities of one KV head */
    float *e;                /* [V] exp(logits / T - max) of one row */
    double *bsum;            /* [V / SM_BLOCK rounded up] block sums of e */
    int *rows;               /* live rows: index into the caller's n rows (= cache row) */
    int *cur;                /* [max_rows] input token per row of a forward */
    int *crow;               /* [max_rows] cache row per row of a forward */
    int *pos;                /* [max_rows] position per row of a forward */
    int *plen;               /* [max_batch] prompt length per row */
    struct sm_pi { double p; int i; } *order; /* [V] for top-k / top-p */
    float *slab;
};

sample_params sample_params_default(void)
{
    sample_params p = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .max_new_tokens = 16,
                       .eos_id = 2};
    return p;
}

static int is_stop(const sample_params *p, int t)
{
    if (t == p->eos_id)
        return 1;
    for (int i = 0; i < p->n_stop; i++)
        if (t == p->stop_ids[i])
            return 1;
    return 0;
}

int sample_params_use_eos(sample_params *p, const model_config *c, coh_err *err)
{
    sample_params next = *p;
    if (next.n_stop < 0 || next.n_stop > SAMPLE_MAX_STOP)
        return coh_fail(err, COH_EINVAL, "sample_params n_stop = %d is outside 0..%d",
                        next.n_stop, SAMPLE_MAX_STOP);
    for (int i = 0; i < c->n_eos; i++) {
        int id = c->eos_ids[i];
        if (is_stop(&next, id))
            continue;
        if (next.n_stop == SAMPLE_MAX_STOP)
            return coh_fail(err, COH_ERANGE,
                            "the model's eos_token_id list does not fit in the sampler's %d "
                            "stop ids",
                            SAMPLE_MAX_STOP);
        next.stop_ids[next.n_stop++] = id;
    }
    *p = next;
    return COH_OK;
}

int sampler_create(const model *m, int max_batch, int max_seq, sampler **out, coh_err *err)
{
    *out = NULL;
    const model_config *c = model_get_config(m);
    if (max_batch <= 0 || max_seq <= 1 || max_seq > c->max_seq)
        return coh_fail(err, COH_EINVAL,
                        "sampler for %d rows of %d positions: need >= 1 row and 2..%d positions "
                        "(max_position_embeddings)",
                        max_batch, max_seq, c->max_seq);
    sampler *s = calloc(1, sizeof *s);
    if (!s)
        return coh_fail(err, COH_ENOMEM, "sampler_create: out of memory");
    s->m = m;
    s->max_batch = max_batch;
    s->max_seq = max_seq;
    int pf = max_seq < PF_ROWS ? max_seq : PF_ROWS;
    s->max_rows = max_batch > pf ? max_batch : pf;
    size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t hd = (size_t)model_config_head_dim(c), qd = (size_t)c->n_heads * hd,
           kvd = (size_t)c->n_kv_heads * hd, nb = (size_t)max_batch, nr = (size_t)s->max_rows;
    size_t grp = (size_t)(c->n_heads / c->n_kv_heads), nblk = (V + SM_BLOCK - 1) / SM_BLOCK;
    size_t cache = (size_t)c->n_layers * nb * (size_t)max_seq * kvd;
    size_t total = 2 * cache + nr * (2 * D + 2 * qd + 2 * kvd + 2 * F) + nb * V +
                   grp * (size_t)max_seq + V;
    s->slab = malloc(total * sizeof(float));
    s->bsum = malloc(nblk * sizeof(double));
    s->rows = malloc(nb * sizeof(int));
    s->cur = malloc(nr * sizeof(int));
    s->crow = malloc(nr * sizeof(int));
    s->pos = malloc(nr * sizeof(int));
    s->plen = malloc(nb * sizeof(int));
    s->order = malloc(V * sizeof *s->order);
    if (!s->slab || !s->bsum || !s->rows || !s->cur || !s->crow || !s->pos || !s->plen ||
        !s->order) {
        sampler_destroy(s);
        return coh_fail(err, COH_ENOMEM, "sampler_create: cannot allocate %.1f MB of KV cache",
                        (double)total * 4.0 / 1e6);
    }
    float *p = s->slab;
#define TAKE(dst, n) (dst = p, p += (n))
    TAKE(s->kc, cache);
    TAKE(s->vc, cache);
    TAKE(s->x, nr * D);
    TAKE(s->xn, nr * D);
    TAKE(s->q, nr * qd);
    TAKE(s->ao, nr * qd);
    TAKE(s->k, nr * kvd);
    TAKE(s->v, nr * kvd);
    TAKE(s->gate, nr * F);
    TAKE(s->up, nr * F);
    TAKE(s->logits, nb * V);
    TAKE(s->att, grp * (size_t)max_seq);
    TAKE(s->e, V);
#undef TAKE
    *out = s;
    return COH_OK;
}

void sampler_destroy(sampler *s)
{
    if (!s)
        return;
    free(s->slab);
    free(s->bsum);
    free(s->rows);
    free(s->cur);
    free(s->crow);
    free(s->pos);
    free(s->plen);
    free(s->order);
    free(s);
}

static int cmp_pi(const void *a, const void *b)
{
    const struct sm_pi *x = a, *y = b;
    if (x->p != y->p)
        return x->p > y->p ? -1 : 1;
    return x->i - y->i;
}

static void swap_pi(struct sm_pi *a, int i, int j)
{
    struct sm_pi t = a[i];
    a[i] = a[j];
    a[j] = t;
}

/* Reorder a[0..n) so that a[0..k) hold the k first entries of cmp_pi's order (by probability,
 * then id: a total order), in no particular order: quickselect, O(n) on average, so that
 * top-k (greedy evaluation: k = 1) does not sort the whole vocabulary. */
static void select_top(struct sm_pi *a, int n, int k)
{
    int lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (cmp_pi(&a[mid], &a[lo]) < 0)
            swap_pi(a, lo, mid);
        if (cmp_pi(&a[hi], &a[lo]) < 0)
            swap_pi(a, lo, hi);
        if (cmp_pi(&a[mid], &a[hi]) < 0)
            swap_pi(a, mid, hi); /* a[hi]: the median of the three, the pivot */
        int st = lo;
        for (int i = lo; i < hi; i++)
            if (cmp_pi(&a[i], &a[hi]) < 0)
                swap_pi(a, i, st++);
        swap_pi(a, st, hi);
        if (st == want)
            return;
        if (want < st)
            hi = st - 1;
        else
            lo = st + 1;
    }
}

/* One row's step: draw a token from logits[0..V) and its log-probability (and entropy).
 *
 * One pass of vectorised exponentials: e[i] = exp(z_i - zmax) with z = logits / T, their sum
 * S over all V ids (lse = zmax + log S, for the recorded log-probability of the full
 * distribution) and the block sums over the candidates (ids < vocab_limit, when set). The
 * draw compares u * S_candidates with the running sum of e: block sums first, then one
 * block. Top-k / top-p sort the candidates' probabilities (top-k: only the k largest). */
static int sample_row(sampler *s, const float *logits, int V, const sample_params *p, rng *r,
                      int want_ent, int *tok, float *logp, float *ent, coh_err *err)
{
    int lim = p->vocab_limit > 0 && p->vocab_limit < V ? p->vocab_limit : V;
    double inv_t = 1.0 / (double)p->temperature;
    float sc = (float)inv_t;
    float shift = gv_max(logits, V) * sc;
    double S_lim = 0.0, ez = 0.0, bez = 0.0;
    int nblk = 0;
    for (int b = 0; b < lim; b += SM_BLOCK) {
        int n = lim - b < SM_BLOCK ? lim - b : SM_BLOCK;
        double bs = gv_exp_sum(s->e + b, logits + b, n, sc, shift, want_ent ? &bez : NULL);
        s->bsum[nblk++] = bs;
        S_lim += bs;
        ez += bez;
    }
    double S = S_lim;
    if (lim < V) {
        S += gv_exp_sum(s->e + lim, logits + lim, V - lim, sc, shift, want_ent ? &bez : NULL);
        ez += bez;
    }
    if (!isfinite(S) || !(S_lim > 0.0))
        return coh_fail(err, COH_ENONFINITE,
                        "the policy's logits are not finite (NaN or infinite weights?); cannot "
                        "sample");
    double lse = (double)shift + log(S);
    double u = rng_uniform(r);
    int t = -1;
    if (p->top_k <= 0 && p->top_p >= 1.0f) {
        double target = u * S_lim, acc = 0.0;
        for (int b = 0; b < nblk && t < 0; b++) {
            if (target >= acc + s->bsum[b]) {
                acc += s->bsum[b];
                continue;
            }
            int i0 = b * SM_BLOCK, i1 = i0 + SM_BLOCK < lim ? i0 + SM_BLOCK : lim;
            double a = acc;
            for (int i = i0; i < i1; i++) {
                a += s->e[i];
                if (target < a && s->e[i] > 0.0f) {
                    t = i;
                    break;
                }
            }
            acc += s->bsum[b]; /* rounding left target in this block's tail: go on */
        }
        if (t < 0) { /* rounding left u beyond the total: the most likely id */
            t = 0;
            for (int i = 1; i < lim; i++)
                if (logits[i] > logits[t])
                    t = i;
        }
    } else {
        for (int i = 0; i < lim; i++) {
            s->order[i].p = (double)s->e[i] / S_lim;
            s->order[i].i = i;
        }
        int keep = lim;
        if (p->top_k > 0 && p->top_k < keep) {
            keep = p->top_k;
            select_top(s->order, lim, keep);
        }
        qsort(s->order, (size_t)keep, sizeof *s->order, cmp_pi);
        double mass = 0.0;
        int k;
        for (k = 0; k < keep; k++) {
            mass += s->order[k].p;
            if (mass >= (double)p->top_p) {
                k++;
                break;
            }
        }
        keep = k;
        double total = 0.0;
        for (int i = 0; i < keep; i++)
            total += s->order[i].p;
        double acc = 0.0, target = u * total;
        t = s->order[keep - 1].i;
        for (int i = 0; i < keep; i++) {
            acc += s->order[i].p;
            if (target < acc) {
                t = s->order[i].i;
                break;
            }
        }
    }
    *tok = t;
    *logp = (float)((double)logits[t] * inv_t - lse);
    *ent = want_ent ? (float)(lse - ez / S) : 0.0f;
    return COH_OK;
}

/* A few rows times W split by output columns (rows of W) over the threads of mm_parallel:
 * each part streams its own slice of W, and no two parts write the same output element. */
typedef struct linear_task {
    float *y;
    const float *x, *W;
    int N, n_in, n_out, acc;
} linear_task;

static void linear_part(void *ctx, int part, int parts)
{
    const linear_task *t = ctx;
    /* slices of whole 16-row blocks, so every part runs the kernels' full-width paths */
    int blocks = (t->n_out + 15) / 16;
    int lo = (int)((long)blocks * part / parts) * 16, hi = (int)((long)blocks * (part + 1) / parts) * 16;
    if (hi > t->n_out)
        hi = t->n_out;
    if (lo >= hi)
        return;
    gv_matmul_nt(t->y + lo, t->n_out, t->x, t->n_in, t->W + (size_t)lo * t->n_in, t->n_in, t->N,
                 t->n_in, hi - lo, t->acc);
}

/* Weights (floats) below which waking a second thread costs more than it saves: splitting
 * a 256 x 688 matrix (small policies) made 2 threads slower than 1; 512 x 1376 gained. */
#define LINEAR_SPLIT_MIN (1 << 19)

/* y = x W^T for the N rows of a forward: gv_linear for a few rows (one pass over W, split
 * over the thread setting's threads when W is large), the blocked product (la_linear,
 * threaded) for many. */
static void linear(float *y, const float *x, const float *W, int N, int n_in, int n_out, int acc)
{
    if (N >= GEMM_MIN_ROWS) {
        la_linear(y, x, W, N, n_in, n_out, acc);
        return;
    }
    int threads = la_blas_threads();
    if (threads > 1 && (size_t)n_in * (size_t)n_out >= LINEAR_SPLIT_MIN && n_out >= 32) {
        linear_task t = {y, x, W, N, n_in, n_out, acc};
        mm_parallel(threads, linear_part, &t);
        return;
    }
    gv_linear(y, x, W, N, n_in, n_out, acc);
}

/* Forward n rows: row a feeds token s->cur[a] at position s->pos[a] of cache row s->crow[a].
 * Every row's keys / values are stored in the cache first, then each row attends over its
 * cache row's positions 0..pos[a] (so rows of one cache row at consecutive positions - a
 * prompt chunk - see each other causally). Rows [first_out, n) get logits, in
 * out[a - first_out]; first_out = n computes none. */
static void forward_rows(sampler *s, int n, int first_out, float *out)
{
    const model *m = s->m;
    const model_config *c = model_get_config(m);
    const float *P = model_params_const(m);
    const model__layer *layers = model__layers(m);
    int D = c->dim, F = c->hidden_dim, V = c->vocab_size, H = c->n_heads, KVH = c->n_kv_heads;
    int hd = model_config_head_dim(c), qd = H * hd, kvd = KVH * hd, grp = H / KVH;
    size_t row_stride = (size_t)s->max_seq * kvd, layer_stride = (size_t)s->max_batch * row_stride;
    float scale = 1.0f / sqrtf((float)hd);
    const float *cos_t = model__rope_cos(m), *sin_t = model__rope_sin(m);

    for (int a = 0; a < n; a++)
        memcpy(s->x + (size_t)a * D, P + model__off_embed(m) + (size_t)s->cur[a] * D,
               (size_t)D * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        const model__layer *W = &layers[l];
        model__rmsnorm(s->xn, NULL, s->x, P + W->attn_norm, n, D, c->rms_eps);
        linear(s->q, s->xn, P + W->wq, n, D, qd, 0);
        linear(s->k, s->xn, P + W->wk, n, D, kvd, 0);
        linear(s->v, s->xn, P + W->wv, n, D, kvd, 0);
        if (c->qkv_bias) {
            model__add_bias(s->q, P + W->bq, n, qd);
            model__add_bias(s->k, P + W->bk, n, kvd);
            model__add_bias(s->v, P + W->bv, n, kvd);
        }
        float *kl = s->kc + (size_t)l * layer_stride, *vl = s->vc + (size_t)l * layer_stride;
        for (int a = 0; a < n; a++) {
            model__rope(s->q + (size_t)a * qd, 1, 1, s->pos[a], H, hd, cos_t, sin_t, 0);
            model__rope(s->k + (size_t)a * kvd, 1, 1, s->pos[a], KVH, hd, cos_t, sin_t, 0);
            size_t at = (size_t)s->crow[a] * row_stride + (size_t)s->pos[a] * kvd;
            memcpy(kl + at, s->k + (size_t)a * kvd, (size_t)kvd * sizeof(float));
            memcpy(vl + at, s->v + (size_t)a * kvd, (size_t)kvd * sizeof(float));
        }
        for (int a = 0; a < n; a++) {
            const float *kc = kl + (size_t)s->crow[a] * row_stride;
            const float *vc = vl + (size_t)s->crow[a] * row_stride;
            int J = s->pos[a] + 1;
            for (int kh = 0; kh < KVH; kh++) {
                /* the grp query heads of KV head kh: scores [grp, J], then P V */
                const float *q = s->q + (size_t)a * qd + (size_t)kh * grp * hd;
                gv_matmul_nt(s->att, s->max_seq, q, hd, kc + (size_t)kh * hd, kvd, grp, hd, J,
                             0);
                for (int g = 0; g < grp; g++) {
                    float *row = s->att + (size_t)g * s->max_seq;
                    float mx = gv_max(row, J);
                    double sum = gv_exp_sum(row, row, J, scale, mx * scale, NULL);
                    gv_scale(row, J, (float)(1.0 / sum));
                }
                gv_matmul_nn(s->ao + (size_t)a * qd + (size_t)kh * grp * hd, hd, s->att,
                             s->max_seq, vc + (size_t)kh * hd, kvd, grp, J, hd);
            }
        }
        linear(s->x, s->ao, P + W->wo, n, qd, D, 1);
        if (c->o_bias)
            model__add_bias(s->x, P + W->bo, n, D);
        model__rmsnorm(s->xn, NULL, s->x, P + W->mlp_norm, n, D, c->rms_eps);
        linear(s->gate, s->xn, P + W->gate, n, D, F, 0);
        linear(s->up, s->xn, P + W->up, n, D, F, 0);
        gv_silu_mul(s->gate, s->up, (size_t)n * F);
        linear(s->x, s->gate, P + W->down, n, F, D, 1);
    }
    int no = n - first_out;
    if (no <= 0)
        return;
    model__rmsnorm(s->xn, NULL, s->x + (size_t)first_out * D, P + model__off_norm(m), no, D,
                   c->rms_eps);
    linear(out, s->xn, P + model__off_head(m), no, D, V, 0);
}

/* Run prompt[0..prompt_len) through the model into cache row crow (chunks of up to
 * max_rows positions); the last position's logits land in s->logits row out_row. */
static void prefill(sampler *s, const int *prompt, int prompt_len, int crow, int out_row)
{
    const model_config *c = model_get_config(s->m);
    int V = c->vocab_size;
    for (int p0 = 0; p0 < prompt_len; p0 += s->max_rows) {
        int n = prompt_len - p0 < s->max_rows ? prompt_len - p0 : s->max_rows;
        for (int a = 0; a < n; a++) {
            s->cur[a] = prompt[p0 + a];
            s->crow[a] = crow;
            s->pos[a] = p0 + a;
        }
        int last = p0 + n == prompt_len;
        forward_rows(s, n, last ? n - 1 : n, s->logits + (size_t)out_row * V);
    }
}

/* Copy positions [0, len) of cache row src to cache row dst, every layer. */
static void copy_prefix(sampler *s, int src, int dst, int len)
{
    const model_config *c = model_get_config(s->m);
    size_t kvd = (size_t)c->n_kv_heads * model_config_head_dim(c);
    size_t row_stride = (size_t)s->max_seq * kvd, layer_stride = (size_t)s->max_batch * row_stride;
    for (int l = 0; l < c->n_layers; l++) {
        size_t o = (size_t)l * layer_stride;
        memcpy(s->kc + o + (size_t)dst * row_stride, s->kc + o + (size_t)src * row_stride,
               (size_t)len * kvd * sizeof(float));
        memcpy(s->vc + o + (size_t)dst * row_stride, s->vc + o + (size_t)src * row_stride,
               (size_t)len * kvd * sizeof(float));
    }
}

static int check_params(const sampler *s, const sample_params *p, coh_err *err)
{
    int V = model_get_config(s->m)->vocab_size;
    if (!(p->temperature > 0.0f) || !(p->top_p > 0.0f && p->top_p <= 1.0f) || p->top_k < 0 ||
        p->max_new_tokens <= 0)
        return coh_fail(err, COH_EINVAL,
                        "bad sampling parameters (temperature %g must be > 0, top_p %g in (0,1], "
                        "top_k %d >= 0, max_new_tokens %d > 0)",
                        (double)p->temperature, (double)p->top_p, p->top_k, p->max_new_tokens);
    if (p->n_stop < 0 || p->n_stop > SAMPLE_MAX_STOP)
        return coh_fail(err, COH_EINVAL, "bad sampling parameters: n_stop = %d is outside 0..%d",
                        p->n_stop, SAMPLE_MAX_STOP);
    if (p->vocab_limit < 0 || p->vocab_limit > V)
        return coh_fail(err, COH_EINVAL,
                        "bad sampling parameters: vocab_limit = %d is outside 0..%d (0 = the "
                        "whole vocabulary)",
                        p->vocab_limit, V);
    return COH_OK;
}

static int check_prompt(const sampler *s, const int *prompt, int prompt_len,
                        const sample_params *p, coh_err *err)
{
    int V = model_get_config(s->m)->vocab_size;
    if (prompt_len <= 0)
        return coh_fail(err, COH_EINVAL, "empty prompt: a prompt needs at least <bos>");
    if (prompt_len + p->max_new_tokens > s->max_seq)
        return coh_fail(err, COH_ERANGE,
                        "prompt of %d tokens + %d new tokens exceeds the sampler's %d positions",
                        prompt_len, p->max_new_tokens, s->max_seq);
    for (int i = 0; i < prompt_len; i++)
        if (prompt[i] < 0 || prompt[i] >= V)
            return coh_fail(err, COH_ERANGE,
                            "token id %d at sequence 0 position %d is outside the vocabulary "
                            "[0, %d)",
                            prompt[i], i, V);
    return COH_OK;
}

/* Decode the n rows whose first logits are in s->logits[0..n): row i continues the prompt
 * of length s->plen[i] in cache row i and writes its outputs at row i of the caller's arrays. */
static int decode(sampler *s, int n, const sample_params *p, rng *r,
                  int *tokens, float *logp, float *entropy, int *len, coh_err *err)
{
    int V = model_get_config(s->m)->vocab_size;
    for (int i = 0; i < n; i++) {
        s->rows[i] = i;
        len[i] = 0;
    }
    int live = n, M = p->max_new_tokens;
    for (int step = 0; step < M && live > 0; step++) {
        int keep = 0;
        for (int a = 0; a < live; a++) {
            int row = s->rows[a], t = 0;
            float lp = 0.0f, ent = 0.0f;
            int rc = sample_row(s, s->logits + (size_t)a * V, V, p, r, entropy != NULL, &t, &lp,
                                &ent, err);
            if (rc)
                return rc;
            tokens[(size_t)row * M + step] = t;
            if (logp)
                logp[(size_t)row * M + step] = lp;
            if (entropy)
                entropy[(size_t)row * M + step] = ent;
            len[row] = step + 1;
            if (!is_stop(p, t) && step + 1 < M) {
                s->rows[keep] = row;
                s->cur[keep] = t;
                s->crow[keep] = row;
                s->pos[keep] = s->plen[row] + step;
                keep++;
            }
        }
        live = keep;
        if (live > 0)
            forward_rows(s, live, 0, s->logits);
    }
    return COH_OK;
}

int sampler_generate_multi(sampler *s, const int *const *prompts, const int *prompt_lens,
                           int n_prompts, int n, const sample_params *p, rng *r, int *tokens,
                           float *logp, float *entropy, int *len, coh_err *err)
{
    if (n_prompts <= 0 || n <= 0 || n > s->max_batch / n_prompts)
        return coh_fail(err, COH_EINVAL,
                        "asked for %d completions of each of %d prompts; this sampler holds 1..%d "
                        "rows in all",
                        n, n_prompts, s->max_batch);
    int rc = check_params(s, p, err);
    for (int j = 0; !rc && j < n_prompts; j++) {
        rc = check_prompt(s, prompts[j], prompt_lens[j], p, err);
        if (rc && n_prompts > 1)
            coh_wrap(err, rc, "prompt %d of %d", j, n_prompts);
    }
    if (rc)
        return rc;
    int V = model_get_config(s->m)->vocab_size;
    for (int j = 0; j < n_prompts; j++) {
        int first = j * n;
        prefill(s, prompts[j], prompt_lens[j], first, first);
        for (int i = 0; i < n; i++) {
            s->plen[first + i] = prompt_lens[j];
            if (i == 0)
                continue;
            copy_prefix(s, first, first + i, prompt_lens[j]);
            memcpy(s->logits + (size_t)(first + i) * V, s->logits + (size_t)first * V,
                   (size_t)V * sizeof(float));
        }
    }
    return decode(s, n_prompts * n, p, r, tokens, logp, entropy, len, err);
}

int sampler_generate(sampler *s, const int *prompt, int prompt_len, int n,
                     const sample_params *p, rng *r, int *tokens, float *logp, float *entropy,
                     int *len, coh_err *err)
{
    if (n <= 0 || n > s->max_batch)
        return coh_fail(err, COH_EINVAL, "asked for %d completions; this sampler holds 1..%d",
                        n, s->max_batch);
    return sampler_generate_multi(s, &prompt, &prompt_len, 1, n, p, r, tokens, logp, entropy,
                                  len, err);
}
