/* sampler.c - batched autoregressive sampling with a KV cache (see sampler.h).
 *
 * Prefill runs the prompt once through model_forward (batch 1) and copies its keys/values
 * into every row's cache; decoding then advances all live rows one position per step.
 */
#include "sampler.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "linalg.h"
#include "private/model_internal.h"
#include "softmax.h"

struct sampler {
    const model *m;
    int max_batch, max_seq;
    model_ws *pre;           /* prefill workspace: 1 x max_seq */
    float *kc, *vc;          /* [L, max_batch, max_seq, kvd] */
    float *x, *xn, *q, *k, *v, *ao, *gate, *up, *logits; /* per live row scratch */
    float *scores;           /* [max_seq] */
    int *rows;               /* live rows: index into the caller's n rows */
    int *cur;                /* [max_batch] last sampled token per live slot */
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
    int rc = model_ws_create(m, 1, max_seq, &s->pre, err);
    if (rc) {
        free(s);
        return rc;
    }
    size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t hd = (size_t)model_config_head_dim(c), qd = (size_t)c->n_heads * hd,
           kvd = (size_t)c->n_kv_heads * hd, nb = (size_t)max_batch;
    size_t cache = (size_t)c->n_layers * nb * (size_t)max_seq * kvd;
    size_t total = 2 * cache + nb * (2 * D + 2 * qd + 2 * kvd + 2 * F + V) + (size_t)max_seq;
    s->slab = malloc(total * sizeof(float));
    s->rows = malloc(nb * sizeof(int));
    s->cur = malloc(nb * sizeof(int));
    s->order = malloc(V * sizeof *s->order);
    if (!s->slab || !s->rows || !s->cur || !s->order) {
        sampler_destroy(s);
        return coh_fail(err, COH_ENOMEM, "sampler_create: cannot allocate %.1f MB of KV cache",
                        (double)total * 4.0 / 1e6);
    }
    float *p = s->slab;
#define TAKE(dst, n) (dst = p, p += (n))
    TAKE(s->kc, cache);
    TAKE(s->vc, cache);
    TAKE(s->x, nb * D);
    TAKE(s->xn, nb * D);
    TAKE(s->q, nb * qd);
    TAKE(s->ao, nb * qd);
    TAKE(s->k, nb * kvd);
    TAKE(s->v, nb * kvd);
    TAKE(s->gate, nb * F);
    TAKE(s->up, nb * F);
    TAKE(s->logits, nb * V);
    TAKE(s->scores, (size_t)max_seq);
#undef TAKE
    *out = s;
    return COH_OK;
}

void sampler_destroy(sampler *s)
{
    if (!s)
        return;
    model_ws_destroy(s->pre);
    free(s->slab);
    free(s->rows);
    free(s->cur);
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

/* Draw one id from softmax(logits[0..V) / T) restricted to ids < p->vocab_limit (when set)
 * and renormalised, optionally truncated by top-k / top-p. */
static int draw(sampler *s, const float *logits, int V, const sample_params *p, rng *r)
{
    if (p->vocab_limit > 0 && p->vocab_limit < V)
        V = p->vocab_limit; /* the rows beyond are never candidates */
    double lse = sm_logsumexp(logits, V, p->temperature);
    double inv_t = 1.0 / (double)p->temperature;
    double u = rng_uniform(r);
    if (p->top_k <= 0 && p->top_p >= 1.0f) {
        double acc = 0.0;
        for (int i = 0; i < V; i++) {
            acc += exp((double)logits[i] * inv_t - lse);
            if (u < acc)
                return i;
        }
        /* rounding left u beyond the total: the most likely id */
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best])
                best = i;
        return best;
    }
    for (int i = 0; i < V; i++) {
        s->order[i].p = exp((double)logits[i] * inv_t - lse);
        s->order[i].i = i;
    }
    qsort(s->order, (size_t)V, sizeof *s->order, cmp_pi);
    int keep = V;
    if (p->top_k > 0 && p->top_k < keep)
        keep = p->top_k;
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
    for (int i = 0; i < keep; i++) {
        acc += s->order[i].p;
        if (target < acc)
            return s->order[i].i;
    }
    return s->order[keep - 1].i;
}

/* One decode step for n live slots at position pos; inputs s->cur, outputs s->logits. */
static void decode_step(sampler *s, int n, int pos)
{
    const model *m = s->m;
    const model_config *c = model_get_config(m);
    const float *P = model_params_const(m);
    const model__layer *layers = model__layers(m);
    int D = c->dim, F = c->hidden_dim, V = c->vocab_size, H = c->n_heads, KVH = c->n_kv_heads;
    int hd = model_config_head_dim(c), qd = H * hd, kvd = KVH * hd, grp = H / KVH;
    size_t row_stride = (size_t)s->max_seq * kvd, layer_stride = (size_t)s->max_batch * row_stride;
    float scale = 1.0f / sqrtf((float)hd);

    for (int a = 0; a < n; a++)
        memcpy(s->x + (size_t)a * D, P + model__off_embed(m) + (size_t)s->cur[a] * D,
               (size_t)D * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        const model__layer *W = &layers[l];
        model__rmsnorm(s->xn, NULL, s->x, P + W->attn_norm, n, D, c->rms_eps);
        la_linear(s->q, s->xn, P + W->wq, n, D, qd, 0);
        la_linear(s->k, s->xn, P + W->wk, n, D, kvd, 0);
        la_linear(s->v, s->xn, P + W->wv, n, D, kvd, 0);
        if (c->qkv_bias) {
            model__add_bias(s->q, P + W->bq, n, qd);
            model__add_bias(s->k, P + W->bk, n, kvd);
            model__add_bias(s->v, P + W->bv, n, kvd);
        }
        model__rope(s->q, n, 1, pos, H, hd, model__rope_cos(m), model__rope_sin(m), 0);
        model__rope(s->k, n, 1, pos, KVH, hd, model__rope_cos(m), model__rope_sin(m), 0);
        for (int a = 0; a < n; a++) {
            float *kc = s->kc + (size_t)l * layer_stride + (size_t)s->rows[a] * row_stride;
            float *vc = s->vc + (size_t)l * layer_stride + (size_t)s->rows[a] * row_stride;
            memcpy(kc + (size_t)pos * kvd, s->k + (size_t)a * kvd, (size_t)kvd * sizeof(float));
            memcpy(vc + (size_t)pos * kvd, s->v + (size_t)a * kvd, (size_t)kvd * sizeof(float));
            for (int h = 0; h < H; h++) {
                int kh = h / grp;
                const float *q = s->q + (size_t)a * qd + (size_t)h * hd;
                cblas_sgemv(CblasRowMajor, CblasNoTrans, pos + 1, hd, scale, kc + (size_t)kh * hd,
                            kvd, q, 1, 0.0f, s->scores, 1);
                float mx = s->scores[0];
                for (int j = 1; j <= pos; j++)
                    if (s->scores[j] > mx)
                        mx = s->scores[j];
                double sum = 0.0;
                for (int j = 0; j <= pos; j++) {
                    s->scores[j] = expf(s->scores[j] - mx);
                    sum += s->scores[j];
                }
                float inv = (float)(1.0 / sum);
                for (int j = 0; j <= pos; j++)
                    s->scores[j] *= inv;
                cblas_sgemv(CblasRowMajor, CblasTrans, pos + 1, hd, 1.0f, vc + (size_t)kh * hd,
                            kvd, s->scores, 1, 0.0f, s->ao + (size_t)a * qd + (size_t)h * hd, 1);
            }
        }
        la_linear(s->x, s->ao, P + W->wo, n, qd, D, 1);
        if (c->o_bias)
            model__add_bias(s->x, P + W->bo, n, D);
        model__rmsnorm(s->xn, NULL, s->x, P + W->mlp_norm, n, D, c->rms_eps);
        la_linear(s->gate, s->xn, P + W->gate, n, D, F, 0);
        la_linear(s->up, s->xn, P + W->up, n, D, F, 0);
        for (size_t i = 0; i < (size_t)n * F; i++) {
            float g = s->gate[i];
            s->gate[i] = g / (1.0f + expf(-g)) * s->up[i];
        }
        la_linear(s->x, s->gate, P + W->down, n, F, D, 1);
    }
    model__rmsnorm(s->xn, NULL, s->x, P + model__off_norm(m), n, D, c->rms_eps);
    la_linear(s->logits, s->xn, P + model__off_head(m), n, D, V, 0);
}

int sampler_generate(sampler *s, const int *prompt, int prompt_len, int n,
                     const sample_params *p, rng *r, int *tokens, float *logp, float *entropy,
                     int *len, coh_err *err)
{
    const model_config *c = model_get_config(s->m);
    int V = c->vocab_size;
    if (n <= 0 || n > s->max_batch)
        return coh_fail(err, COH_EINVAL, "asked for %d completions; this sampler holds 1..%d",
                        n, s->max_batch);
    if (prompt_len <= 0)
        return coh_fail(err, COH_EINVAL, "empty prompt: a prompt needs at least <bos>");
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
    if (prompt_len + p->max_new_tokens > s->max_seq)
        return coh_fail(err, COH_ERANGE,
                        "prompt of %d tokens + %d new tokens exceeds the sampler's %d positions",
                        prompt_len, p->max_new_tokens, s->max_seq);

    int rc = model_forward(s->m, s->pre, prompt, 1, prompt_len, err);
    if (rc)
        return rc;
    int kvd = c->n_kv_heads * model_config_head_dim(c);
    size_t row_stride = (size_t)s->max_seq * kvd, layer_stride = (size_t)s->max_batch * row_stride;
    for (int l = 0; l < c->n_layers; l++) {
        const float *k = model__ws_k(s->pre, l), *v = model__ws_v(s->pre, l);
        for (int i = 0; i < n; i++) {
            memcpy(s->kc + (size_t)l * layer_stride + (size_t)i * row_stride, k,
                   (size_t)prompt_len * kvd * sizeof(float));
            memcpy(s->vc + (size_t)l * layer_stride + (size_t)i * row_stride, v,
                   (size_t)prompt_len * kvd * sizeof(float));
        }
    }
    const float *first = model_ws_logits(s->pre) + (size_t)(prompt_len - 1) * V;
    for (int i = 0; i < n; i++) {
        s->rows[i] = i;
        len[i] = 0;
        memcpy(s->logits + (size_t)i * V, first, (size_t)V * sizeof(float));
    }
    int live = n, M = p->max_new_tokens;
    for (int step = 0; step < M && live > 0; step++) {
        int keep = 0;
        for (int a = 0; a < live; a++) {
            int row = s->rows[a];
            const float *lg = s->logits + (size_t)a * V;
            int t = draw(s, lg, V, p, r);
            float lp, ent;
            sm_logp_entropy(lg, V, p->temperature, t, &lp, &ent);
            tokens[(size_t)row * M + step] = t;
            if (logp)
                logp[(size_t)row * M + step] = lp;
            if (entropy)
                entropy[(size_t)row * M + step] = ent;
            len[row] = step + 1;
            if (!is_stop(p, t) && step + 1 < M) {
                s->rows[keep] = row;
                s->cur[keep] = t;
                keep++;
            }
        }
        live = keep;
        if (live > 0)
            decode_step(s, live, prompt_len + step);
    }
    return COH_OK;
}
