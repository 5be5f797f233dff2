/* checkpoint.h - a policy checkpoint folder a Hugging Face user recognises.
 *
 *   DIR/config.json        model_config_save (architectures: the model's family)
 *   DIR/model.safetensors  every parameter under its Hugging Face name, F32
 *                          (lm_head.weight omitted when tied; *_proj.bias when the family
 *                          has attention biases)
 *   DIR/tokenizer.json     the built-in tokenizer, when one is given
 *
 * Loading also reads DIR/generation_config.json when present: its eos_token_id (an int or a
 * list) replaces config.json's in the model's config (model_config_load_generation).
 *
 * Loading accepts F32/F16/BF16 tensors and a folder without tokenizer.json. Every tensor the
 * config implies must be present with the right shape; a missing, extra-shaped or unknown
 * tensor is refused with a message that names it.
 */
#ifndef COHORT_CHECKPOINT_H
#define COHORT_CHECKPOINT_H

#include "err.h"
#include "model.h"
#include "tokenizer.h"

#define CKPT_CONFIG "config.json"
#define CKPT_WEIGHTS "model.safetensors"
#define CKPT_SCORE "score.weight"
#define CKPT_GENERATION "generation_config.json"

/* Create dir if needed and write the three files, each atomically. tok may be NULL. */
int ckpt_save(const char *dir, const model *m, const tokenizer *tok, coh_err *err);
/* Load config + weights; *tok_out (if tok_out non-NULL) is NULL when the folder has no
 * tokenizer.json. On failure *m_out is NULL. */
int ckpt_load(const char *dir, model **m_out, tokenizer **tok_out, coh_err *err);

/* A Hugging Face LlamaForSequenceClassification folder (a reward model): the Llama body
 * (model.* tensors, no lm_head) and score.weight of shape [1, hidden_size]. *m_out is the
 * body (its lm_head is unused), *score_out the hidden_size weights of the score head
 * (malloc'd). *tok_out is NULL when the folder has no tokenizer.json. */
int ckpt_load_seqcls(const char *dir, model **m_out, float **score_out, tokenizer **tok_out,
                     coh_err *err);

/* The same two files in memory, for weight broadcast: config_json (malloc'd text) and
 * weights (a malloc'd safetensors blob with its CRC-32), both owned by the caller. */
int ckpt_to_buffer(const model *m, char **config_json, void **weights, size_t *weights_len,
                   coh_err *err);
/* Build a model from such a pair, with every check ckpt_load makes. */
int ckpt_from_buffer(const char *config_json, size_t config_len, const void *weights,
                     size_t weights_len, model **m_out, coh_err *err);

#endif
