/* model.c - Llama-style transformer: parameter table, batched forward and backward.
 *
 * Notation: B sequences of T positions, N = B*T rows; D model dim, F MLP dim, H heads,
 * KVH key/value heads, hd head dim (config head_dim, else D / H), qd = H * hd, kvd = KVH * hd,
 * V vocabulary. All matrices row-major.
 *
 * Compute: the linear layers go through la_linear* (linalg.h: Cohort's AVX-512 product of
 * mm.h where the CPU has it, else OpenBLAS); RMSNorm, RoPE, SwiGLU and the causal softmax
 * through kern.h's vectorised kernels. Attention, when hd is a multiple of 16 and mm.h is
 * available, uses mm_att_* per (sequence, KV head) pair (the key block transposed once for
 * the grp query heads sharing it, the causal upper triangle skipped), split over the worker
 * pool (mm_parallel) as many ways as OpenBLAS has threads, at most MODEL_ATT_PARTS; otherwise
 * one la_sgemm per (sequence, head) as before. Results do not depend on the thread count.
 */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern.h"
#include "linalg.h"
#include "mm.h"
#include "private/model_internal.h"
#include "rng.h"

/* Parts (threads) of the attention over the worker pool: each has its own scratch. */
#define MODEL_ATT_PARTS 2

struct model {
    model_config c;
    size_t n_params;
    float *params;
    int n_tensors;
    model_tensor *tensors;
    model__layer *layers;
    size_t off_embed, off_norm, off_head;
    float *rope_cos, *rope_sin; /* [max_seq, hd/2] */
};

/* Per-layer saved activations. */
typedef struct ws_layer {
    float *x;      /* [N, D]   input of the layer (residual stream) */
    float *rstd1;  /* [N] */
    float *xn1;    /* [N, D] */
    float *q;      /* [N, H*hd]   after RoPE */
    float *k;      /* [N, KVH*hd] after RoPE */
    float *v;      /* [N, KVH*hd] */
    float *att;    /* [B, H, T, T] softmax probabilities (upper triangle 0) */
    float *ao;     /* [N, H*hd]  attention output before o_proj */
    float *xmid;   /* [N, D]     residual after attention */
    float *rstd2;  /* [N] */
    float *xn2;    /* [N, D] */
    float *gate;   /* [N, F] */
    float *up;     /* [N, F] */
    float *hact;   /* [N, F]     silu(gate) * up */
} ws_layer;

struct model_ws {
    int max_B, max_T;
    int B, T;       /* shape of the last forward (0 before any) */
    int *tokens;    /* [max_B * max_T] copy of the last forward's tokens */
    ws_layer *layer;
    float *xout;    /* [N, D] residual after the last layer */
    float *rstdf;   /* [N] */
    float *xnf;     /* [N, D] */
    float *logits;  /* [N, V] */
    float *dlogits; /* [N, V] */
    /* backward scratch */
    float *dres, *dxn, *dq, *dk, *dv, *dao, *dS, *dgate, *dup;
    /* dS above and kt: MODEL_ATT_PARTS copies, one per part of the threaded attention */
    float *kt; /* [hd, max_T] one head's keys (values) transposed, for mm_att_* */
    float *slab;
};

/* ---- configuration helpers -------------------------------------------------------------- */

const model_config *model_get_config(const model *m) { return &m->c; }
size_t model_num_params(const model *m) { return m->n_params; }
float *model_params(model *m) { return m->params; }
const float *model_params_const(const model *m) { return m->params; }
int model_num_tensors(const model *m) { return m->n_tensors; }

const model_tensor *model_tensor_at(const model *m, int i)
{
    return (i >= 0 && i < m->n_tensors) ? &m->tensors[i] : NULL;
}

const model_tensor *model_find_tensor(const model *m, const char *name)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return &m->tensors[i];
    return NULL;
}

const model__layer *model__layers(const model *m) { return m->layers; }
size_t model__off_embed(const model *m) { return m->off_embed; }
size_t model__off_norm(const model *m) { return m->off_norm; }
size_t model__off_head(const model *m) { return m->off_head; }
const float *model__rope_cos(const model *m) { return m->rope_cos; }
const float *model__rope_sin(const model *m) { return m->rope_sin; }

/* ---- lifecycle ------------------------------------------------------------------------------ */

static size_t add_tensor(model *m, const char *name, int ndim, int s0, int s1)
{
    model_tensor *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = s0;
    t->shape[1] = ndim == 2 ? s1 : 0;
    t->numel = (size_t)s0 * (size_t)(ndim == 2 ? s1 : 1);
    t->offset = m->n_params;
    m->n_params += t->numel;
    return t->offset;
}

/* Inverse frequency i of hd / 2, as transformers' rope init functions compute it:
 * default  inv_freq[i] = theta^(-2i / hd);
 * llama3   (_compute_llama3_parameters) with wavelen = 2 pi / inv_freq,
 *          low_wl = orig / low_freq_factor, high_wl = orig / high_freq_factor:
 *          wavelen < high_wl: unchanged; wavelen > low_wl: inv_freq / factor; otherwise
 *          (1 - s) inv_freq / factor + s inv_freq with s = (orig / wavelen - low) / (high - low).
 * transformers computes these in float32; double here differs by float rounding only. */
static double rope_inv_freq(const model_config *c, int i, int hd)
{
    double inv = pow((double)c->rope_theta, -2.0 * i / (double)hd);
    if (c->rope_type != MODEL_ROPE_LLAMA3)
        return inv;
    double factor = c->rope_factor, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
    double orig = (double)c->rope_orig_max_pos;
    double wavelen = 6.283185307179586 / inv, low_wl = orig / lo, high_wl = orig / hi;
    if (wavelen < high_wl)
        return inv;
    if (wavelen > low_wl)
        return inv / factor;
    double sm = (orig / wavelen - lo) / (hi - lo);
    return (1.0 - sm) * inv / factor + sm * inv;
}

int model_create(const model_config *c, model **out, coh_err *err)
{
    *out = NULL;
    int rc = model_config_validate(c, err);
    if (rc)
        return rc;
    model *m = calloc(1, sizeof *m);
    if (!m)
        return coh_fail(err, COH_ENOMEM, "model_create: out of memory");
    m->c = *c;
    int L = c->n_layers, D = c->dim, F = c->hidden_dim, V = c->vocab_size;
    int hd = model_config_head_dim(c), qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    m->tensors = calloc((size_t)(13 * L + 3), sizeof *m->tensors);
    m->layers = calloc((size_t)L, sizeof *m->layers);
    if (!m->tensors || !m->layers)
        goto fail_nomem;

    char name[MODEL_NAME_MAX];
    m->off_embed = add_tensor(m, "model.embed_tokens.weight", 2, V, D);
    for (int l = 0; l < L; l++) {
        model__layer *ly = &m->layers[l];
#define LAYER_TENSOR(field, suffix, nd, a, b)                                   \
    snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix);               \
    ly->field = add_tensor(m, name, nd, a, b)
        LAYER_TENSOR(attn_norm, "input_layernorm.weight", 1, D, 0);
        LAYER_TENSOR(wq, "self_attn.q_proj.weight", 2, qd, D);
        if (c->qkv_bias) {
            LAYER_TENSOR(bq, "self_attn.q_proj.bias", 1, qd, 0);
        }
        LAYER_TENSOR(wk, "self_attn.k_proj.weight", 2, kvd, D);
        if (c->qkv_bias) {
            LAYER_TENSOR(bk, "self_attn.k_proj.bias", 1, kvd, 0);
        }
        LAYER_TENSOR(wv, "self_attn.v_proj.weight", 2, kvd, D);
        if (c->qkv_bias) {
            LAYER_TENSOR(bv, "self_attn.v_proj.bias", 1, kvd, 0);
        }
        LAYER_TENSOR(wo, "self_attn.o_proj.weight", 2, D, qd);
        if (c->o_bias) {
            LAYER_TENSOR(bo, "self_attn.o_proj.bias", 1, D, 0);
        }
        LAYER_TENSOR(mlp_norm, "post_attention_layernorm.weight", 1, D, 0);
        LAYER_TENSOR(gate, "mlp.gate_proj.weight", 2, F, D);
        LAYER_TENSOR(up, "mlp.up_proj.weight", 2, F, D);
        LAYER_TENSOR(down, "mlp.down_proj.weight", 2, D, F);
#undef LAYER_TENSOR
    }
    m->off_norm = add_tensor(m, "model.norm.weight", 1, D, 0);
    m->off_head = c->tie_embeddings ? m->off_embed : add_tensor(m, "lm_head.weight", 2, V, D);

    m->params = calloc(m->n_params, sizeof(float));
    int half = hd / 2;
    m->rope_cos = malloc((size_t)c->max_seq * (size_t)half * sizeof(float));
    m->rope_sin = malloc((size_t)c->max_seq * (size_t)half * sizeof(float));
    if (!m->params || !m->rope_cos || !m->rope_sin)
        goto fail_nomem;
    for (int i = 0; i < half; i++) {
        double inv = rope_inv_freq(c, i, hd);
        for (int p = 0; p < c->max_seq; p++) {
            double a = (double)p * inv;
            m->rope_cos[(size_t)p * half + i] = (float)cos(a);
            m->rope_sin[(size_t)p * half + i] = (float)sin(a);
        }
    }
    *out = m;
    return COH_OK;

fail_nomem:
    model_destroy(m);
    return coh_fail(err, COH_ENOMEM, "model_create: out of memory for %d layers x dim %d",
                    c->n_layers, c->dim);
}

void model_destroy(model *m)
{
    if (!m)
        return;
    free(m->params);
    free(m->tensors);
    free(m->layers);
    free(m->rope_cos);
    free(m->rope_sin);
    free(m);
}

void model_init_random(model *m, uint64_t seed)
{
    rng r;
    rng_init(&r, seed);
    double out_scale = 1.0 / sqrt(2.0 * m->c.n_layers);
    for (int i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        if (t->ndim == 1) {
            size_t nl = strlen(t->name);
            float v = nl > 5 && strcmp(t->name + nl - 5, ".bias") == 0 ? 0.0f : 1.0f;
            for (size_t j = 0; j < t->numel; j++)
                p[j] = v;
            continue;
        }
        double sd = 0.02;
        if (strstr(t->name, "o_proj") || strstr(t->name, "down_proj"))
            sd *= out_scale;
        for (size_t j = 0; j < t->numel; j++)
            p[j] = (float)(sd * rng_normal(&r));
    }
}

int model_clone(const model *m, model **out, coh_err *err)
{
    int rc = model_create(&m->c, out, err);
    if (rc)
        return rc;
    memcpy((*out)->params, m->params, m->n_params * sizeof(float));
    return COH_OK;
}

/* ---- workspace ---------------------------------------------------------------------------- */

int model_ws_create(const model *m, int max_B, int max_T, model_ws **out, coh_err *err)
{
    *out = NULL;
    const model_config *c = &m->c;
    if (max_B <= 0 || max_T <= 0 || max_T > c->max_seq)
        return coh_fail(err, COH_EINVAL,
                        "workspace for %d sequences of %d tokens: need at least 1 of each and at "
                        "most max_position_embeddings = %d tokens",
                        max_B, max_T, c->max_seq);
    size_t N = (size_t)max_B * (size_t)max_T, D = (size_t)c->dim, F = (size_t)c->hidden_dim;
    size_t hd = (size_t)model_config_head_dim(c), qd = (size_t)c->n_heads * hd,
           kvd = (size_t)c->n_kv_heads * hd, V = (size_t)c->vocab_size;
    size_t att = (size_t)max_B * (size_t)c->n_heads * (size_t)max_T * (size_t)max_T;
    size_t per_layer = N * (4 * D + qd + 2 * kvd + qd + 3 * F + 2) + att;
    size_t total = per_layer * (size_t)c->n_layers + N * (2 * D + 1 + 2 * V) +
                   /* scratch */ N * (2 * D + 2 * qd + 2 * kvd + 2 * F) +
                   MODEL_ATT_PARTS * ((size_t)max_T * max_T + hd * (size_t)max_T);
    model_ws *ws = calloc(1, sizeof *ws);
    if (!ws)
        return coh_fail(err, COH_ENOMEM, "model_ws_create: out of memory");
    ws->max_B = max_B;
    ws->max_T = max_T;
    ws->layer = calloc((size_t)c->n_layers, sizeof *ws->layer);
    ws->tokens = calloc(N, sizeof(int));
    ws->slab = malloc(total * sizeof(float));
    if (!ws->layer || !ws->tokens || !ws->slab) {
        model_ws_destroy(ws);
        return coh_fail(err, COH_ENOMEM,
                        "model_ws_create: cannot allocate %.1f MB of activations for %d x %d "
                        "tokens; use a smaller batch",
                        (double)total * 4.0 / 1e6, max_B, max_T);
    }
    float *p = ws->slab;
#define TAKE(dst, n) (dst = p, p += (n))
    for (int l = 0; l < c->n_layers; l++) {
        ws_layer *ly = &ws->layer[l];
        TAKE(ly->x, N * D);
        TAKE(ly->rstd1, N);
        TAKE(ly->xn1, N * D);
        TAKE(ly->q, N * qd);
        TAKE(ly->k, N * kvd);
        TAKE(ly->v, N * kvd);
        TAKE(ly->att, att);
        TAKE(ly->ao, N * qd);
        TAKE(ly->xmid, N * D);
        TAKE(ly->rstd2, N);
        TAKE(ly->xn2, N * D);
        TAKE(ly->gate, N * F);
        TAKE(ly->up, N * F);
        TAKE(ly->hact, N * F);
    }
    TAKE(ws->xout, N * D);
    TAKE(ws->rstdf, N);
    TAKE(ws->xnf, N * D);
    TAKE(ws->logits, N * V);
    TAKE(ws->dlogits, N * V);
    TAKE(ws->dres, N * D);
    TAKE(ws->dxn, N * D);
    TAKE(ws->dq, N * qd);
    TAKE(ws->dao, N * qd);
    TAKE(ws->dk, N * kvd);
    TAKE(ws->dv, N * kvd);
    TAKE(ws->dgate, N * F);
    TAKE(ws->dup, N * F);
    TAKE(ws->dS, MODEL_ATT_PARTS * (size_t)max_T * max_T);
    TAKE(ws->kt, MODEL_ATT_PARTS * hd * max_T);
#undef TAKE
    *out = ws;
    return COH_OK;
}

void model_ws_destroy(model_ws *ws)
{
    if (!ws)
        return;
    free(ws->layer);
    free(ws->tokens);
    free(ws->slab);
    free(ws);
}

float *model_ws_logits(model_ws *ws) { return ws->logits; }
float *model_ws_dlogits(model_ws *ws) { return ws->dlogits; }
const float *model_ws_hidden(const model_ws *ws) { return ws->xnf; }
const float *model__ws_k(const model_ws *ws, int l) { return ws->layer[l].k; }
const float *model__ws_v(const model_ws *ws, int l) { return ws->layer[l].v; }

/* ---- kernels ------------------------------------------------------------------------------ */

void model__rmsnorm(float *out, float *rstd, const float *x, const float *w, int N, int D, float eps)
{
    kern_rmsnorm(out, rstd, x, w, N, D, eps);
}

void model__rope(float *x, int N, int T, int pos0, int nh, int hd, const float *cos_t,
                 const float *sin_t, int inverse)
{
    int half = hd / 2;
    for (int n = 0; n < N; n++) {
        int pos = pos0 + n % T;
        kern_rope(x + (size_t)n * nh * hd, nh, hd, cos_t + (size_t)pos * half,
                  sin_t + (size_t)pos * half, inverse);
    }
}

void model__add_bias(float *x, const float *b, int N, int n)
{
    for (int r = 0; r < N; r++) {
        float *row = x + (size_t)r * n;
        for (int j = 0; j < n; j++)
            row[j] += b[j];
    }
}

/* db[n] += sum over the N rows of dy[N, n]: the gradient of a bias. */
static void bias_backward(float *db, const float *dy, int N, int n)
{
    for (int r = 0; r < N; r++) {
        const float *row = dy + (size_t)r * n;
        for (int j = 0; j < n; j++)
            db[j] += row[j];
    }
}

/* ---- attention with mm_att_* (AVX-512, hd a multiple of 16) ------------------------------ */

static int att_fast(int hd) { return hd % 16 == 0 && mm_available(); }

/* dst[hd, T] = the hd columns of head kh of x[T, ld] (one sequence), transposed. */
static void head_transpose(float *dst, const float *x, int ld, int T, int hd)
{
    for (int t = 0; t < T; t++) {
        const float *row = x + (size_t)t * ld;
        for (int d = 0; d < hd; d++)
            dst[(size_t)d * T + t] = row[d];
    }
}

/* One call runs the (sequence, KV head) pairs [u0, u1) of B * KVH with its own scratch kt
 * ([hd, T]) and dS ([T, T], backward only). */
static void attention_forward_fast(ws_layer *a, float *kt, int u0, int u1, int T, int H, int KVH,
                                   int hd, float scale)
{
    int qd = H * hd, kvd = KVH * hd, grp = H / KVH;
    for (int u = u0; u < u1; u++) {
        int b = u / KVH, kh = u % KVH;
        const float *k = a->k + (size_t)b * T * kvd + (size_t)kh * hd;
        const float *v = a->v + (size_t)b * T * kvd + (size_t)kh * hd;
        head_transpose(kt, k, kvd, T, hd);
        for (int h = kh * grp; h < (kh + 1) * grp; h++) {
            float *S = a->att + ((size_t)b * H + h) * T * T;
            const float *q = a->q + (size_t)b * T * qd + (size_t)h * hd;
            mm_att_qk(T, hd, scale, q, qd, kt, S);
            for (int i = 0; i < T; i++)
                kern_softmax_row(S + (size_t)i * T, i + 1, T);
            mm_att_pv(T, hd, 1.0f, S, v, kvd, a->ao + (size_t)b * T * qd + (size_t)h * hd, qd, 0);
        }
    }
}

/* ws->dao -> ws->dq (overwritten), ws->dk and ws->dv (added into). */
static void attention_backward_fast(const ws_layer *a, model_ws *ws, float *kt, float *dS, int u0,
                                    int u1, int T, int H, int KVH, int hd, float scale)
{
    int qd = H * hd, kvd = KVH * hd, grp = H / KVH;
    for (int u = u0; u < u1; u++) {
        int b = u / KVH, kh = u % KVH;
        const float *k = a->k + (size_t)b * T * kvd + (size_t)kh * hd;
        const float *v = a->v + (size_t)b * T * kvd + (size_t)kh * hd;
        float *dk = ws->dk + (size_t)b * T * kvd + (size_t)kh * hd;
        float *dv = ws->dv + (size_t)b * T * kvd + (size_t)kh * hd;
        head_transpose(kt, v, kvd, T, hd);
        for (int h = kh * grp; h < (kh + 1) * grp; h++) {
            const float *S = a->att + ((size_t)b * H + h) * T * T;
            const float *q = a->q + (size_t)b * T * qd + (size_t)h * hd;
            const float *dO = ws->dao + (size_t)b * T * qd + (size_t)h * hd;
            float *dq = ws->dq + (size_t)b * T * qd + (size_t)h * hd;
            mm_att_qk(T, hd, 1.0f, dO, qd, kt, dS);      /* dP = dO V^T */
            mm_att_ptv(T, hd, 1.0f, S, dO, qd, dv, kvd); /* dV += P^T dO */
            for (int i = 0; i < T; i++)
                kern_softmax_bwd_row(dS + (size_t)i * T, S + (size_t)i * T, i + 1, T);
            mm_att_pv(T, hd, scale, dS, k, kvd, dq, qd, 0); /* dQ = scale dS K */
            mm_att_ptv(T, hd, scale, dS, q, qd, dk, kvd);   /* dK += scale dS^T Q */
        }
    }
}

/* Both directions over the worker pool (mm_parallel): parts split the B * KVH pairs. */
typedef struct att_task {
    ws_layer *a;
    model_ws *ws;
    int backward, B, T, H, KVH, hd;
    float scale;
} att_task;

static void att_part(void *ctx, int p, int parts)
{
    const att_task *t = ctx;
    int units = t->B * t->KVH, u0 = (int)((long)units * p / parts),
        u1 = (int)((long)units * (p + 1) / parts);
    float *kt = t->ws->kt + (size_t)p * t->hd * t->ws->max_T;
    float *dS = t->ws->dS + (size_t)p * t->ws->max_T * t->ws->max_T;
    if (t->backward)
        attention_backward_fast(t->a, t->ws, kt, dS, u0, u1, t->T, t->H, t->KVH, t->hd, t->scale);
    else
        attention_forward_fast(t->a, kt, u0, u1, t->T, t->H, t->KVH, t->hd, t->scale);
}

static void attention_fast(ws_layer *a, model_ws *ws, int backward, int B, int T, int H, int KVH,
                           int hd, float scale)
{
    att_task t = {a, ws, backward, B, T, H, KVH, hd, scale};
    int threads = la_blas_threads();
    if (threads > MODEL_ATT_PARTS)
        threads = MODEL_ATT_PARTS;
    if (threads > B * KVH)
        threads = B * KVH;
    mm_parallel(threads, att_part, &t);
}

/* ---- forward ------------------------------------------------------------------------------ */

int model_forward(const model *m, model_ws *ws, const int *tokens, int B, int T, coh_err *err)
{
    const model_config *c = &m->c;
    if (B <= 0 || T <= 0 || B > ws->max_B || T > ws->max_T)
        return coh_fail(err, COH_ESHAPE,
                        "forward over %d x %d tokens, but the workspace holds at most %d x %d",
                        B, T, ws->max_B, ws->max_T);
    int N = B * T, D = c->dim, F = c->hidden_dim, V = c->vocab_size, H = c->n_heads,
        KVH = c->n_kv_heads, hd = model_config_head_dim(c), qd = H * hd, kvd = KVH * hd,
        grp = H / KVH;
    for (int i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return coh_fail(err, COH_ERANGE,
                            "token id %d at sequence %d position %d is outside the vocabulary "
                            "[0, %d)",
                            tokens[i], i / T, i % T, V);
    ws->B = B;
    ws->T = T;
    memcpy(ws->tokens, tokens, (size_t)N * sizeof(int));
    const float *P = m->params;
    float scale = 1.0f / sqrtf((float)hd);

    float *x0 = c->n_layers > 0 ? ws->layer[0].x : ws->xout;
    for (int i = 0; i < N; i++)
        memcpy(x0 + (size_t)i * D, P + m->off_embed + (size_t)tokens[i] * D, (size_t)D * sizeof(float));

    for (int l = 0; l < c->n_layers; l++) {
        const model__layer *W = &m->layers[l];
        ws_layer *a = &ws->layer[l];
        float *xnext = l + 1 < c->n_layers ? ws->layer[l + 1].x : ws->xout;

        model__rmsnorm(a->xn1, a->rstd1, a->x, P + W->attn_norm, N, D, c->rms_eps);
        la_linear(a->q, a->xn1, P + W->wq, N, D, qd, 0);
        la_linear(a->k, a->xn1, P + W->wk, N, D, kvd, 0);
        la_linear(a->v, a->xn1, P + W->wv, N, D, kvd, 0);
        if (c->qkv_bias) {
            model__add_bias(a->q, P + W->bq, N, qd);
            model__add_bias(a->k, P + W->bk, N, kvd);
            model__add_bias(a->v, P + W->bv, N, kvd);
        }
        model__rope(a->q, N, T, 0, H, hd, m->rope_cos, m->rope_sin, 0);
        model__rope(a->k, N, T, 0, KVH, hd, m->rope_cos, m->rope_sin, 0);

        if (att_fast(hd))
            attention_fast(a, ws, 0, B, T, H, KVH, hd, scale);
        else
            for (int b = 0; b < B; b++)
                for (int h = 0; h < H; h++) {
                    int kh = h / grp;
                    float *S = a->att + ((size_t)b * H + h) * T * T;
                    const float *q = a->q + (size_t)b * T * qd + (size_t)h * hd;
                    const float *k = a->k + (size_t)b * T * kvd + (size_t)kh * hd;
                    const float *v = a->v + (size_t)b * T * kvd + (size_t)kh * hd;
                    la_sgemm(0, 1, T, T, hd, scale, q, qd, k, kvd, 0.0f, S, T);
                    for (int i = 0; i < T; i++)
                        kern_softmax_row(S + (size_t)i * T, i + 1, T);
                    la_sgemm(0, 0, T, hd, T, 1.0f, S, T, v, kvd, 0.0f,
                             a->ao + (size_t)b * T * qd + (size_t)h * hd, qd);
                }
        memcpy(a->xmid, a->x, (size_t)N * D * sizeof(float));
        la_linear(a->xmid, a->ao, P + W->wo, N, qd, D, 1);
        if (c->o_bias)
            model__add_bias(a->xmid, P + W->bo, N, D);

        model__rmsnorm(a->xn2, a->rstd2, a->xmid, P + W->mlp_norm, N, D, c->rms_eps);
        la_linear(a->gate, a->xn2, P + W->gate, N, D, F, 0);
        la_linear(a->up, a->xn2, P + W->up, N, D, F, 0);
        kern_swiglu(a->hact, a->gate, a->up, (size_t)N * F);
        memcpy(xnext, a->xmid, (size_t)N * D * sizeof(float));
        la_linear(xnext, a->hact, P + W->down, N, F, D, 1);
    }
    model__rmsnorm(ws->xnf, ws->rstdf, ws->xout, P + m->off_norm, N, D, c->rms_eps);
    la_linear(ws->logits, ws->xnf, P + m->off_head, N, D, V, 0);
    return COH_OK;
}

/* ---- backward ----------------------------------------------------------------------------- */

int model_backward(const model *m, model_ws *ws, const float *dlogits, float *grads, coh_err *err)
{
    const model_config *c = &m->c;
    int B = ws->B, T = ws->T;
    if (B <= 0)
        return coh_fail(err, COH_ESTATE, "model_backward called before model_forward");
    int N = B * T, D = c->dim, F = c->hidden_dim, V = c->vocab_size, H = c->n_heads,
        KVH = c->n_kv_heads, hd = model_config_head_dim(c), qd = H * hd, kvd = KVH * hd,
        grp = H / KVH;
    const float *P = m->params;
    float scale = 1.0f / sqrtf((float)hd);
    float *dres = ws->dres, *dxn = ws->dxn;

    /* lm_head and final norm */
    la_linear_dw(grads + m->off_head, dlogits, ws->xnf, N, D, V);
    la_linear_dx(dxn, dlogits, P + m->off_head, N, D, V, 0);
    memset(dres, 0, (size_t)N * D * sizeof(float));
    kern_rmsnorm_bwd(dres, grads + m->off_norm, dxn, ws->xout, P + m->off_norm, ws->rstdf, N, D);

    for (int l = c->n_layers - 1; l >= 0; l--) {
        const model__layer *W = &m->layers[l];
        ws_layer *a = &ws->layer[l];

        /* MLP: xnext = xmid + down(hact); dres is d/dxnext and stays as the residual part */
        la_linear_dw(grads + W->down, dres, a->hact, N, F, D);
        float *dh = ws->dgate; /* reuse: dh then dgate in place */
        la_linear_dx(dh, dres, P + W->down, N, F, D, 0);
        kern_swiglu_bwd(ws->dgate, ws->dup, dh, a->gate, a->up, (size_t)N * F);
        la_linear_dw(grads + W->gate, ws->dgate, a->xn2, N, D, F);
        la_linear_dw(grads + W->up, ws->dup, a->xn2, N, D, F);
        la_linear_dx(dxn, ws->dgate, P + W->gate, N, D, F, 0);
        la_linear_dx(dxn, ws->dup, P + W->up, N, D, F, 1);
        kern_rmsnorm_bwd(dres, grads + W->mlp_norm, dxn, a->xmid, P + W->mlp_norm, a->rstd2, N, D);

        /* attention: xmid = x + o_proj(ao); dres is now d/dxmid */
        la_linear_dw(grads + W->wo, dres, a->ao, N, qd, D);
        if (c->o_bias)
            bias_backward(grads + W->bo, dres, N, D);
        la_linear_dx(ws->dao, dres, P + W->wo, N, qd, D, 0);
        memset(ws->dk, 0, (size_t)N * kvd * sizeof(float));
        memset(ws->dv, 0, (size_t)N * kvd * sizeof(float));
        if (att_fast(hd))
            attention_fast(a, ws, 1, B, T, H, KVH, hd, scale);
        else
            for (int b = 0; b < B; b++)
                for (int h = 0; h < H; h++) {
                    int kh = h / grp;
                    const float *S = a->att + ((size_t)b * H + h) * T * T;
                    const float *q = a->q + (size_t)b * T * qd + (size_t)h * hd;
                    const float *k = a->k + (size_t)b * T * kvd + (size_t)kh * hd;
                    const float *v = a->v + (size_t)b * T * kvd + (size_t)kh * hd;
                    const float *dO = ws->dao + (size_t)b * T * qd + (size_t)h * hd;
                    float *dq = ws->dq + (size_t)b * T * qd + (size_t)h * hd;
                    float *dk = ws->dk + (size_t)b * T * kvd + (size_t)kh * hd;
                    float *dv = ws->dv + (size_t)b * T * kvd + (size_t)kh * hd;
                    float *dS = ws->dS;
                    /* dP = dO V^T ; dV += P^T dO */
                    la_sgemm(0, 1, T, T, hd, 1.0f, dO, qd, v, kvd, 0.0f, dS, T);
                    la_sgemm(1, 0, T, hd, T, 1.0f, S, T, dO, qd, 1.0f, dv, kvd);
                    /* softmax backward: dS = P * (dP - sum_j P dP) */
                    for (int i = 0; i < T; i++)
                        kern_softmax_bwd_row(dS + (size_t)i * T, S + (size_t)i * T, i + 1, T);
                    /* dQ = scale dS K ; dK += scale dS^T Q */
                    la_sgemm(0, 0, T, hd, T, scale, dS, T, k, kvd, 0.0f, dq, qd);
                    la_sgemm(1, 0, T, hd, T, scale, dS, T, q, qd, 1.0f, dk, kvd);
                }
        model__rope(ws->dq, N, T, 0, H, hd, m->rope_cos, m->rope_sin, 1);
        model__rope(ws->dk, N, T, 0, KVH, hd, m->rope_cos, m->rope_sin, 1);
        if (c->qkv_bias) { /* dq, dk, dv are now gradients of the projections' outputs */
            bias_backward(grads + W->bq, ws->dq, N, qd);
            bias_backward(grads + W->bk, ws->dk, N, kvd);
            bias_backward(grads + W->bv, ws->dv, N, kvd);
        }
        la_linear_dw(grads + W->wq, ws->dq, a->xn1, N, D, qd);
        la_linear_dw(grads + W->wk, ws->dk, a->xn1, N, D, kvd);
        la_linear_dw(grads + W->wv, ws->dv, a->xn1, N, D, kvd);
        la_linear_dx(dxn, ws->dq, P + W->wq, N, D, qd, 0);
        la_linear_dx(dxn, ws->dk, P + W->wk, N, D, kvd, 1);
        la_linear_dx(dxn, ws->dv, P + W->wv, N, D, kvd, 1);
        kern_rmsnorm_bwd(dres, grads + W->attn_norm, dxn, a->x, P + W->attn_norm, a->rstd1, N, D);
    }
    /* embedding: scatter-add (tied heads accumulate into the same rows) */
    float *gE = grads + m->off_embed;
    for (int i = 0; i < N; i++) {
        float *g = gE + (size_t)ws->tokens[i] * D;
        const float *d = dres + (size_t)i * D;
        for (int j = 0; j < D; j++)
            g[j] += d[j];
    }
    return COH_OK;
}
