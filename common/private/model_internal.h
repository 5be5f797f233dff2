/* model_internal.h - what the sampler (common/) needs of the model beyond model.h.
 * Not for use outside common/. */
#ifndef COHORT_MODEL_INTERNAL_H
#define COHORT_MODEL_INTERNAL_H

#include "model.h"

/* Offsets (in floats, into the parameter slab) of one layer's tensors. The biases bq, bk, bv
 * exist only when the config's qkv_bias is set, bo only when o_bias is (else they are 0). */
typedef struct model__layer {
    size_t attn_norm, wq, wk, wv, wo, mlp_norm, gate, up, down;
    size_t bq, bk, bv, bo;
} model__layer;

const model__layer *model__layers(const model *m);
size_t model__off_embed(const model *m);
size_t model__off_norm(const model *m);
size_t model__off_head(const model *m); /* == embed offset when tied */
/* RoPE tables [max_seq, head_dim / 2], with the config's rope_scaling applied. */
const float *model__rope_cos(const model *m);
const float *model__rope_sin(const model *m);

/* Kernels shared by the batched forward and the decoder. */
/* out[N, D] = x * rstd * w, rstd[N] saved (may be NULL). */
void model__rmsnorm(float *out, float *rstd, const float *x, const float *w, int N, int D, float eps);
/* Rotate each head of x[N, nh * hd] in place; row n is at position pos0 + n % T (T rows per
 * sequence). inverse = 1 applies the transpose (the backward). */
void model__rope(float *x, int N, int T, int pos0, int nh, int hd, const float *cos_t,
                 const float *sin_t, int inverse);

/* x[N, n] += b[n] on every row (a Linear layer's bias). */
void model__add_bias(float *x, const float *b, int N, int n);

/* Keys / values (after RoPE) of layer l from the last model_forward, [B*T, KVH*hd]. */
const float *model__ws_k(const model_ws *ws, int l);
const float *model__ws_v(const model_ws *ws, int l);

#endif
