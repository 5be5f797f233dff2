/* pipeline.h - the actor's lease pipeline: LeasePrompts -> sample group_size completions per
 * prompt with the newest verified policy -> Reward.Score -> SubmitGroup, one lease at a time,
 * and how every SubmitGroup outcome settles the lease.
 *
 * Settling (pipeline_submit_outcome maps the gRPC status codes documented for SubmitGroup in
 * proto/cohort/v1/learner.proto, never message text, to a typed outcome):
 *   OK                    the lease is settled (accepted or valid but unused);
 *   NOT_FOUND             unknown / expired lease: drop the group, settled; for an unknown
 *                         actor (session_is_unknown_actor) also register again;
 *   ALREADY_EXISTS        already submitted and accepted (a retry after a lost reply): settled;
 *   FAILED_PRECONDITION   stale version or another temperature: drop (counted), settled;
 *   RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, UNAVAILABLE: retry the same lease with back-off;
 *   UNAUTHENTICATED       stop the actor (fatal); the lease goes back;
 *   anything else (INVALID_ARGUMENT, ...): the lease stays valid but this group cannot be
 *                         fixed: give the lease back (ReturnLeases) so its prompt is not held.
 * A lease the pipeline cannot serve (prompt outside the vocabulary or too long for the model,
 * sampling failure, out of memory) is given back at once. Leases still unsettled when the
 * actor stops or registers again are given back (those of a replaced actor id are simply
 * forgotten: the learner dropped them with the old id).
 *
 * Threads: pipeline_run runs on one thread (the sampling loop); it adopts a newer verified
 * policy from the vtrack only between groups. Ownership: the session, vtrack and rclient are
 * borrowed and must outlive the pipeline; the policy in use belongs to the pipeline.
 */
#ifndef COHORT_ACTOR_PIPELINE_H
#define COHORT_ACTOR_PIPELINE_H

#include <stdint.h>

#include "err.h"
#include "rclient.h"
#include "rpc.h"
#include "session.h"
#include "vtrack.h"

/* What a SubmitGroup status means for the lease. */
typedef enum pipeline_outcome {
    PIPELINE_SETTLED,            /* OK: settled (see the reply's accepted flag) */
    PIPELINE_DROP,               /* NOT_FOUND (lease): group dropped, lease settled */
    PIPELINE_DROP_REREGISTER,    /* NOT_FOUND (unknown actor): dropped, register again */
    PIPELINE_DUPLICATE,          /* ALREADY_EXISTS: settled earlier, nothing to do */
    PIPELINE_STALE,              /* FAILED_PRECONDITION: dropped and counted, settled */
    PIPELINE_RETRY,              /* RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED / UNAVAILABLE */
    PIPELINE_RETURN,             /* INVALID_ARGUMENT and the rest: give the lease back */
    PIPELINE_FATAL               /* UNAUTHENTICATED: stop the actor, give the lease back */
} pipeline_outcome;

/* The outcome of a SubmitGroup call that ended with status st. */
pipeline_outcome pipeline_submit_outcome(const rpc_status *st);
/* Short name of an outcome ("retry"); never NULL. */
const char *pipeline_outcome_name(pipeline_outcome o);

typedef struct pipeline pipeline; /* opaque */

typedef struct pipeline_config {
    uint64_t seed;         /* sampling RNG seed */
    int prompts_per_lease; /* LeaseRequest.max_prompts, in [1, 1024] */
    long max_groups;       /* stop after this many groups; 0 = until the session stops */
} pipeline_config;

/* s, vt and rc are borrowed. COH_EINVAL for a bad config, COH_ENOMEM. */
int pipeline_create(session *s, vtrack *vt, rclient *rc, const pipeline_config *cfg,
                    pipeline **out, coh_err *err);
/* Frees the policy in use and the buffers. NULL is fine. */
void pipeline_destroy(pipeline *pl);

/* The sampling loop: wait for the first verified policy, then lease, sample, score and submit
 * until the session stops or max_groups groups were done. Returns the number of groups done
 * (submitted or settled otherwise). */
long pipeline_run(pipeline *pl);

#endif
