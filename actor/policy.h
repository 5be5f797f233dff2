/* policy.h - one verified policy version as the actor samples with it: the model, the
 * tokenizer that goes with it, its version number and the CRC-32 of its weights blob.
 *
 * Ownership: a policy owns its model and tokenizer (policy_create takes them over, also when
 * it fails) and is immutable once made. It is handed from one thread to another whole (the
 * downloader makes it, vtrack holds it, the sampling loop adopts it); only its current owner
 * may use or destroy it. No locking inside.
 */
#ifndef COHORT_ACTOR_POLICY_H
#define COHORT_ACTOR_POLICY_H

#include <stdint.h>

#include "err.h"
#include "model.h"
#include "tokenizer.h"

typedef struct policy policy; /* opaque */

/* Bundle m and tok (both non-NULL, both taken over) as version `version` whose weights blob
 * had CRC-32 `checksum`. COH_EINVAL for a NULL model/tokenizer or a negative version,
 * COH_ENOMEM; on failure m and tok are destroyed and *out is NULL. */
int policy_create(int64_t version, uint32_t checksum, model *m, tokenizer *tok, policy **out,
                  coh_err *err);
/* Free the policy, its model and its tokenizer. NULL is fine. */
void policy_destroy(policy *p);

int64_t policy_version(const policy *p);
uint32_t policy_checksum(const policy *p);
model *policy_model(const policy *p);         /* owned by p */
tokenizer *policy_tokenizer(const policy *p); /* owned by p */

/* The tokenizer a weights manifest carries: json is tokenizer.json text; NULL or "" means the
 * run has none, which gives the default tokenizer. */
int policy_load_tokenizer(const char *json, tokenizer **out, coh_err *err);

#endif
