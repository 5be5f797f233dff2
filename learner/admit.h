/* admit.h - admission of submitted groups: the learner's rules for SubmitGroup, as a typed
 * verdict.
 *
 * admit_submission takes a decoded submission and decides, in this order:
 *   1. the actor is registered                        (else ADMIT_UNKNOWN_ACTOR)
 *   2. the lease is live and the actor's               (else one ADMIT_LEASE_* verdict)
 *   3. it was sampled at the learner's temperature     (else ADMIT_TEMPERATURE; lease settled;
 *                                                        a temperature that is not a positive
 *                                                        finite number: ADMIT_INVALID, the
 *                                                        lease stays)
 *   4. the group is well formed and fresh              (else ADMIT_INVALID, the lease stays
 *      (groupbuf.h's gbuf_validate)                      valid for a fixed resubmission, or
 *                                                        ADMIT_STALE, the lease settled)
 *   5. every item was scored                           (else ADMIT_REWARD_FAILED: valid but
 *                                                        unusable; lease settled, not buffered)
 *   6. the buffer has room                             (else ADMIT_FULL: nothing changed; the
 *                                                        caller holds the call and retries)
 *   7. commit (the caller's durable log, may be NULL)  (else ADMIT_INTERNAL: nothing changed)
 *   8. buffered, lease completed                       ADMIT_BUFFERED
 * Each verdict maps to exactly one gRPC status (admit_status), one reason token sent as the
 * trailing metadata "cohort-reason" (admit_reason) and at most one drop reason of trainer.h
 * (admit_drop, -1 for none: a duplicate, a full buffer or an internal error loses nothing).
 *
 * Invariant: only ADMIT_BUFFERED changes the buffer; only BUFFERED, TEMPERATURE, STALE and
 * REWARD_FAILED settle (complete) the lease. Not thread-safe (the learner's loop thread).
 */
#ifndef COHORT_ADMIT_H
#define COHORT_ADMIT_H

#include <stdint.h>

#include "actors.h"
#include "err.h"
#include "groupbuf.h"
#include "lease.h"
#include "prompts.h"

typedef enum admit_verdict {
    ADMIT_BUFFERED = 0,    /* OK, accepted */
    ADMIT_REWARD_FAILED,   /* OK, accepted = false */
    ADMIT_UNKNOWN_ACTOR,   /* NOT_FOUND       unknown_actor */
    ADMIT_LEASE_UNKNOWN,   /* NOT_FOUND       lease_unknown (another run's, or a typo) */
    ADMIT_LEASE_EXPIRED,   /* NOT_FOUND       lease_expired (its prompt went out again) */
    ADMIT_LEASE_RETURNED,  /* NOT_FOUND       lease_returned */
    ADMIT_LEASE_DROPPED,   /* NOT_FOUND       lease_dropped (its actor was declared dead) */
    ADMIT_LEASE_COMPLETED, /* ALREADY_EXISTS  lease_completed (a retry after a lost reply) */
    ADMIT_LEASE_NOT_YOURS, /* INVALID_ARGUMENT lease_not_yours */
    ADMIT_TEMPERATURE,     /* FAILED_PRECONDITION temperature_mismatch */
    ADMIT_STALE,           /* FAILED_PRECONDITION stale_version */
    ADMIT_INVALID,         /* INVALID_ARGUMENT invalid_group */
    ADMIT_FULL,            /* RESOURCE_EXHAUSTED buffer_full */
    ADMIT_INTERNAL,        /* INTERNAL        internal (out of memory, the log failed) */
    ADMIT_N
} admit_verdict;

int admit_status(admit_verdict v);        /* the grpc_status_code value */
const char *admit_reason(admit_verdict v);/* the reason token, e.g. "lease_expired" */
int admit_drop(admit_verdict v);          /* a trainer_drop_reason, or -1 */

/* One completion as submitted. */
typedef struct admit_item {
    const int32_t *tokens;
    int n_tokens;
    const float *logp;
    int n_logp;
    int64_t version;  /* < 0 is malformed */
    double reward;
    int scored;       /* 1 when the reward service scored it (ITEM_OK) */
} admit_item;

typedef struct admit_request {
    uint64_t actor, lease_id;
    double temperature;
    int n;
    const admit_item *items;
} admit_request;

/* Make an accepted group durable before it is acknowledged: called once, after every check
 * passed and room was found, with g->seq and g->actor set. Return COH_OK or an error (the
 * submission is then refused with ADMIT_INTERNAL and nothing changes). */
typedef int (*admit_commit_fn)(void *ctx, const gbuf_group *g, coh_err *err);

/* What admission works on (the learner's own state; all kept, not owned). */
typedef struct admit_env {
    actors *actors;
    lease_table *leases;
    gbuf *buf;
    const gbuf_config *bcfg;
    const psrc *prompts;
    double temperature;  /* the learner's current sampling temperature */
    uint64_t version;    /* the learner's current policy version */
    uint64_t now_ms;
    uint64_t next_seq;   /* the acceptance number a buffered group gets */
    admit_commit_fn commit;
    void *commit_ctx;
} admit_env;

/* Decide on one submission (see the file comment); err gets the message for the caller.
 * *prompt (may be NULL) gets the lease's prompt index when the lease was found. */
admit_verdict admit_submission(const admit_env *env, const admit_request *req,
                               uint64_t *prompt, coh_err *err);

#endif
