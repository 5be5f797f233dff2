/* sampler.h - autoregressive sampling with a KV cache.
 *
 * sampler_generate samples n completions of one prompt as one batch: the prompt is prefilled
 * once and its keys/values are shared by all n rows, then the rows decode in lock step
 * (rows that emitted EOS drop out). For every sampled token it records the log-probability
 * under the temperature-scaled distribution softmax(logits / T) - the full distribution,
 * before any top-k / top-p truncation - which is exactly what the learner recomputes.
 *
 * Stopping: a row ends after it samples eos_id or any of stop_ids[0..n_stop) (a model's
 * eos_token_id list: sample_params_use_eos), or after max_new_tokens.
 *
 * Vocabulary limit: a model's vocab_size may exceed the tokenizer's ids (embedding rows padded
 * for speed, as in Qwen2). With vocab_limit > 0 only ids < vocab_limit are ever sampled: the
 * draw (and top-k / top-p) use softmax(logits / T) restricted to those ids and renormalised.
 * Like top-k / top-p truncation, this does not change the recorded log-probability, which
 * stays that of the full distribution over all V ids (what the learner recomputes).
 *
 * The sampler reads the model's parameters at call time: a model updated in place between
 * calls is sampled with its new weights. Sampling with the same seed is reproducible (on one
 * machine: the vectorised kernels of common/gemv.h differ between instruction sets by float
 * rounding, which can change a draw that falls on a boundary).
 *
 * Speed: the sampler has its own decoder forward (no model_ws): every weight matrix, the
 * lm_head included, is streamed once per decoding step for all live rows (common/gemv.h);
 * the softmax, the draw, the log-probability and the entropy take one vectorised pass over
 * the vocabulary per row. The recorded log-probabilities equal the learner's recomputation
 * (model_forward + sm_logp_entropy) up to float rounding (tests: |diff| <= 2e-5).
 *
 * Threads: a sampler is used by one thread at a time. Its kernels run on the calling thread;
 * only prompt chunks of 32+ positions go through OpenBLAS (and its threads).
 */
#ifndef COHORT_SAMPLER_H
#define COHORT_SAMPLER_H

#include "err.h"
#include "model.h"
#include "rng.h"

#define SAMPLE_MAX_STOP 8 /* stop ids besides eos_id */

/* Fields left zero by an initializer keep the older meaning: no extra stop ids, no limit. */
typedef struct sample_params {
    float temperature;  /* > 0; 1 = the model's distribution */
    int top_k;          /* 0 = off */
    float top_p;        /* 1 = off; in (0, 1] */
    int max_new_tokens; /* > 0 */
    int eos_id;         /* generation of a row stops after it samples this id; -1 = never */
    int n_stop;         /* 0..SAMPLE_MAX_STOP entries of stop_ids */
    int stop_ids[SAMPLE_MAX_STOP]; /* a row also stops after sampling any of these */
    int vocab_limit;    /* > 0: only ids < vocab_limit are sampled (<= V); 0 = all V ids */
} sample_params;

sample_params sample_params_default(void);
/* Add the model's eos_token_id list (model_config eos_ids) to p's stop ids, skipping ids
 * already there. COH_ERANGE (p unchanged) when they do not fit in SAMPLE_MAX_STOP. */
int sample_params_use_eos(sample_params *p, const model_config *c, coh_err *err);

typedef struct sampler sampler; /* opaque: KV cache and scratch for up to max_batch rows */

/* Room for max_batch rows of up to max_seq positions (prompt + completion). */
int sampler_create(const model *m, int max_batch, int max_seq, sampler **out, coh_err *err);
void sampler_destroy(sampler *s);

/* Sample n completions of prompt[0..prompt_len).
 * OUT tokens  [n, p->max_new_tokens] sampled ids (row i valid up to len[i]),
 * OUT logp    [n, p->max_new_tokens] log-probability of each sampled id (may be NULL),
 * OUT entropy [n, p->max_new_tokens] entropy of each step's distribution (may be NULL),
 * OUT len     [n] tokens generated per row, including the EOS if one was sampled.
 * Errors: n > max_batch, prompt_len + max_new_tokens > max_seq, bad ids, bad params
 * (n_stop outside 0..SAMPLE_MAX_STOP, vocab_limit outside 0..V). */
int sampler_generate(sampler *s, const int *prompt, int prompt_len, int n,
                     const sample_params *p, rng *r, int *tokens, float *logp,
                     float *entropy, int *len, coh_err *err);

/* Sample n completions of each of n_prompts prompts in one batch: each prompt is prefilled
 * once, then all n_prompts * n rows decode in lock step, one forward per token for all live
 * rows (the weights are read once per step for the whole batch, as for one prompt).
 * Completion i of prompt j is row j * n + i of the outputs:
 * OUT tokens, logp, entropy [n_prompts * n, p->max_new_tokens], len [n_prompts * n] (as
 * sampler_generate). Needs n_prompts * n <= max_batch and every prompt_lens[j] +
 * max_new_tokens <= max_seq. With n_prompts = 1 it is sampler_generate (same draws for the
 * same rng state); otherwise rows draw in row order at every step, so a prompt's samples
 * depend on the other prompts of the call. */
int sampler_generate_multi(sampler *s, const int *const *prompts, const int *prompt_lens,
                           int n_prompts, int n, const sample_params *p, rng *r, int *tokens,
                           float *logp, float *entropy, int *len, coh_err *err);

#endif
