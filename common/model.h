/* model.h - the Llama-style decoder-only policy: parameters, batched forward and backward.
 *
 * Architecture (DESIGN.md): token embedding; per layer RMSNorm -> causal grouped-query
 * self-attention with rotary embeddings (Hugging Face rotate_half, non-interleaved) -> residual;
 * RMSNorm -> SwiGLU MLP down(silu(gate(x)) * up(x)) -> residual; final RMSNorm; lm_head
 * (optionally tied to the embedding). Linear weights are stored as Hugging Face does,
 * [out_features, in_features], so y = x W^T (+ b).
 *
 * Families (config.json "architectures"): LlamaForCausalLM (optionally attention_bias: biases
 * on q/k/v/o), Qwen2ForCausalLM (biases on q/k/v, always), MistralForCausalLM (no sliding
 * window). Every family may set an explicit head_dim (H * head_dim need not equal D) and Llama
 * 3 rope_scaling (rope_type "llama3"). Anything else is refused by name when the config is
 * read; the forward, the backward and the sampler implement exactly these variants.
 *
 * Memory: all parameters live in one float slab (model_params); each named tensor is a view
 * at a fixed offset. A gradient slab of the same size uses the same offsets, so
 * grads + tensor->offset is the gradient of that tensor.
 *
 * Batches: B sequences padded to a common length T, tokens row-major [B, T]. Every sequence
 * starts at position 0. Attention is causal, so padding after a sequence's end never changes
 * its logits; callers simply ignore the padded positions.
 *
 * Threads: matrix products go through linalg.h (common/mm.h's AVX-512 product where the CPU
 * has it, else OpenBLAS); element-wise work through kern.h's vectorised kernels. With more
 * than one thread (OpenBLAS's setting, openblas_set_num_threads) attention and the large
 * products are split over mm.h's worker pool, sized by that same setting; the two pools never
 * compute at once.
 */
#ifndef COHORT_MODEL_H
#define COHORT_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* ---- configuration ----------------------------------------------------------------- */

/* Model family: the "architectures" entry of config.json (its model_type in brackets). */
typedef enum model_family {
    MODEL_FAMILY_LLAMA = 0,   /* LlamaForCausalLM (llama) */
    MODEL_FAMILY_QWEN2 = 1,   /* Qwen2ForCausalLM (qwen2): q/k/v biases */
    MODEL_FAMILY_MISTRAL = 2, /* MistralForCausalLM (mistral), without a sliding window */
} model_family;

/* rope_scaling.rope_type */
typedef enum model_rope_type {
    MODEL_ROPE_DEFAULT = 0, /* no rope_scaling: inv_freq[i] = theta^(-2i / head_dim) */
    MODEL_ROPE_LLAMA3 = 1,  /* Llama 3.1: long wavelengths divided by factor, smooth between */
} model_rope_type;

#define MODEL_MAX_EOS 8 /* eos_token_id entries kept (Llama 3 lists 3) */

/* Every field zero except the first ten means plain Llama with head_dim = D / H, so older
 * code that fills only those keeps its meaning. */
typedef struct model_config {
    int vocab_size;        /* V */
    int dim;               /* D, hidden_size */
    int hidden_dim;        /* F, intermediate_size */
    int n_layers;          /* L, num_hidden_layers */
    int n_heads;           /* H, num_attention_heads */
    int n_kv_heads;        /* KVH, num_key_value_heads; H % KVH == 0 */
    int max_seq;           /* max_position_embeddings */
    int tie_embeddings;    /* tie_word_embeddings: lm_head shares model.embed_tokens.weight */
    float rms_eps;         /* rms_norm_eps */
    float rope_theta;      /* rope_theta */
    int family;            /* model_family */
    int head_dim;          /* hd, head_dim; 0 = D / H (then H must divide D) */
    int qkv_bias;          /* 1: q/k/v_proj carry biases (Qwen2: always; Llama: attention_bias) */
    int o_bias;            /* 1: o_proj carries a bias (Llama attention_bias; never Qwen2) */
    int rope_type;         /* model_rope_type */
    float rope_factor;           /* llama3: rope_scaling.factor (> 0) */
    float rope_low_freq_factor;  /* llama3: rope_scaling.low_freq_factor (> 0) */
    float rope_high_freq_factor; /* llama3: rope_scaling.high_freq_factor (> low) */
    int rope_orig_max_pos;       /* llama3: rope_scaling.original_max_position_embeddings */
    int n_eos;                   /* entries of eos_ids; 0 = none given */
    int eos_ids[MODEL_MAX_EOS];  /* eos_token_id (int or list; generation_config.json wins) */
} model_config;

/* The head dimension hd: c->head_dim when set, else dim / n_heads. */
int model_config_head_dim(const model_config *c);
/* "LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"; "?" for a bad value. */
const char *model_family_arch(int family);
/* "llama", "qwen2", "mistral" (config.json model_type); "?" for a bad value. */
const char *model_family_type(int family);

/* A config with the defaults of a small built-in policy (dim 64, 2 layers, 4 heads, ...). */
model_config model_config_default(int vocab_size);
/* Check every field; on failure err says which field and what range is allowed. */
int model_config_validate(const model_config *c, coh_err *err);
/* Read / write the Hugging Face config.json fields listed in DESIGN.md.
 * Reading accepts files written elsewhere (extra keys are ignored; missing optional keys
 * take Llama defaults: n_kv_heads = n_heads, rms_norm_eps 1e-6, rope_theta 10000,
 * tie_word_embeddings false; no "architectures" means model_type, and neither means Llama).
 * Keys that would change the model in a way Cohort does not implement are refused with
 * COH_EUNSUPPORTED naming the key and its value: another architecture or model_type, a
 * rope_scaling type other than "default"/"llama3", a real sliding window, partial rotary
 * embeddings, mlp_bias, an activation other than silu. eos_token_id may be an int or a list.
 * Writing is atomic (temp file, fsync, rename). */
int model_config_load(const char *path, model_config *out, coh_err *err);
int model_config_save(const char *path, const model_config *c, coh_err *err);
/* The same JSON in memory: *out is malloc'd text (free it); parse reads such text. */
int model_config_to_json(const model_config *c, char **out, coh_err *err);
int model_config_parse(const char *text, size_t len, model_config *out, coh_err *err);
/* Apply a Hugging Face generation_config.json to c: when it has eos_token_id (an int or a
 * list), that list replaces c's (transformers lets generation_config.json win). Other keys
 * are ignored. On failure c is unchanged. */
int model_config_load_generation(const char *path, model_config *c, coh_err *err);

/* ---- parameters -------------------------------------------------------------------- */

#define MODEL_NAME_MAX 96

typedef struct model_tensor {
    char name[MODEL_NAME_MAX]; /* Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight" */
    int ndim;                  /* 1 or 2 */
    int shape[2];              /* [out, in] for matrices, [n] for norms */
    size_t numel;
    size_t offset;             /* offset in floats into the parameter (and gradient) slab */
} model_tensor;

typedef struct model model; /* opaque */

/* Create a model with all parameters zero. *out is NULL on failure. */
int model_create(const model_config *c, model **out, coh_err *err);
/* Free everything; NULL is fine. */
void model_destroy(model *m);
/* Deterministic random initialisation: matrices N(0, 0.02) (output projections scaled by
 * 1/sqrt(2L)), norm weights 1, biases 0 (as transformers initialises them). */
void model_init_random(model *m, uint64_t seed);
/* A deep copy (for the frozen reference policy). */
int model_clone(const model *m, model **out, coh_err *err);

const model_config *model_get_config(const model *m);
size_t model_num_params(const model *m);
float *model_params(model *m);
const float *model_params_const(const model *m);
int model_num_tensors(const model *m);
const model_tensor *model_tensor_at(const model *m, int i);
/* NULL if no tensor has that name. */
const model_tensor *model_find_tensor(const model *m, const char *name);

/* ---- batched forward / backward -------------------------------------------------------- */

/* Activation workspace for batches of up to max_B sequences of up to max_T tokens.
 * Reused across steps; never reallocated inside forward/backward. */
typedef struct model_ws model_ws;

int model_ws_create(const model *m, int max_B, int max_T, model_ws **out, coh_err *err);
void model_ws_destroy(model_ws *ws);

/* Forward over tokens [B, T] (row-major, ids in [0, V)). Returns COH_EINVAL / COH_ERANGE with
 * a message for bad shapes or ids. On success model_ws_logits(ws) holds [B, T, V] logits:
 * row (b, t) predicts token (b, t + 1). The activations needed by model_backward are kept. */
int model_forward(const model *m, model_ws *ws, const int *tokens, int B, int T, coh_err *err);
/* Logits of the last forward, [B, T, V]. */
float *model_ws_logits(model_ws *ws);
/* Final hidden states of the last forward (after the final RMSNorm, before lm_head),
 * [B, T, D]: what a sequence-classification head (a reward model) reads. */
const float *model_ws_hidden(const model_ws *ws);
/* A [B, T, V] buffer for the caller's dL/dlogits, owned by ws. */
float *model_ws_dlogits(model_ws *ws);

/* Backward of the last forward given dL/dlogits [B, T, V] (may be model_ws_dlogits(ws)).
 * ADDS the gradient of every parameter into grads (a slab of model_num_params floats);
 * the caller zeroes it when it wants a fresh gradient. */
int model_backward(const model *m, model_ws *ws, const float *dlogits, float *grads, coh_err *err);

#endif
