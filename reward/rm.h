/* rm.h - the reward-model component: a Hugging Face LlamaForSequenceClassification checkpoint
 * (the Llama body plus score.weight of shape [1, hidden]) read at the last token.
 *
 * score(sequence) = score.weight . h_last, h_last the final hidden state (after the final
 * RMSNorm) at the sequence's last token, as transformers computes it for an unpadded input.
 * Text is scored as <bos> prompt completion with the folder's tokenizer.json.
 * One rm_model handle is used by one thread at a time.
 */
#ifndef COHORT_RM_H
#define COHORT_RM_H

#include "err.h"

typedef struct rm_model rm_model; /* opaque */

/* Load a reward-model folder (config.json, model.safetensors, optional tokenizer.json). */
int rm_load(const char *dir, rm_model **out, coh_err *err);
void rm_destroy(rm_model *r);

/* Score ids[0..n); COH_ERANGE for ids outside the vocabulary or n > max_position_embeddings. */
int rm_score_tokens(rm_model *r, const int *ids, int n, double *score, coh_err *err);
/* Score <bos> prompt completion; COH_ENOTFOUND when the folder has no tokenizer.json,
 * COH_EINVAL for characters the tokenizer does not know, COH_ERANGE when too long. */
int rm_score_text(rm_model *r, const char *prompt, const char *completion, double *score,
                  coh_err *err);

#endif
