/* admit.c - admission of submitted groups (see admit.h). */
#include "admit.h"

#include <grpc/status.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trainer.h"

static const struct {
    int status;
    const char *reason;
    int drop;
} k_verdicts[ADMIT_N] = {
    [ADMIT_BUFFERED] = {GRPC_STATUS_OK, "buffered", -1},
    [ADMIT_REWARD_FAILED] = {GRPC_STATUS_OK, "reward_failed", TRAINER_DROP_REWARD_FAILED},
    [ADMIT_UNKNOWN_ACTOR] = {GRPC_STATUS_NOT_FOUND, "unknown_actor", TRAINER_DROP_LEASE_LOST},
    [ADMIT_LEASE_UNKNOWN] = {GRPC_STATUS_NOT_FOUND, "lease_unknown", TRAINER_DROP_LEASE_LOST},
    [ADMIT_LEASE_EXPIRED] = {GRPC_STATUS_NOT_FOUND, "lease_expired",
                             TRAINER_DROP_LEASE_EXPIRED},
    [ADMIT_LEASE_RETURNED] = {GRPC_STATUS_NOT_FOUND, "lease_returned", TRAINER_DROP_LEASE_LOST},
    [ADMIT_LEASE_DROPPED] = {GRPC_STATUS_NOT_FOUND, "lease_dropped", TRAINER_DROP_LEASE_LOST},
    [ADMIT_LEASE_COMPLETED] = {GRPC_STATUS_ALREADY_EXISTS, "lease_completed", -1},
    [ADMIT_LEASE_NOT_YOURS] = {GRPC_STATUS_INVALID_ARGUMENT, "lease_not_yours",
                               TRAINER_DROP_LEASE_LOST},
    [ADMIT_TEMPERATURE] = {GRPC_STATUS_FAILED_PRECONDITION, "temperature_mismatch",
                           TRAINER_DROP_TEMPERATURE},
    [ADMIT_STALE] = {GRPC_STATUS_FAILED_PRECONDITION, "stale_version", TRAINER_DROP_STALE},
    [ADMIT_INVALID] = {GRPC_STATUS_INVALID_ARGUMENT, "invalid_group", TRAINER_DROP_INVALID},
    [ADMIT_FULL] = {GRPC_STATUS_RESOURCE_EXHAUSTED, "buffer_full", -1},
    [ADMIT_INTERNAL] = {GRPC_STATUS_INTERNAL, "internal", -1},
};

int admit_status(admit_verdict v) { return v < ADMIT_N ? k_verdicts[v].status : GRPC_STATUS_INTERNAL; }
const char *admit_reason(admit_verdict v) { return v < ADMIT_N ? k_verdicts[v].reason : "internal"; }
int admit_drop(admit_verdict v) { return v < ADMIT_N ? k_verdicts[v].drop : -1; }

/* The lease table's answer as a verdict. */
static admit_verdict lease_verdict_(int rc, const lease_info *info)
{
    switch (rc) {
    case COH_OK: return ADMIT_BUFFERED;
    case COH_ENOTFOUND: return ADMIT_LEASE_UNKNOWN;
    case COH_EINVAL: return ADMIT_LEASE_NOT_YOURS;
    default: break;
    }
    switch (info->state) {
    case LEASE_COMPLETED: return ADMIT_LEASE_COMPLETED;
    case LEASE_RETURNED: return ADMIT_LEASE_RETURNED;
    case LEASE_DROPPED: return ADMIT_LEASE_DROPPED;
    default: return ADMIT_LEASE_EXPIRED; /* expired, or live past its deadline */
    }
}

static void settle_(const admit_env *env, const admit_request *req)
{
    lease_complete(env->leases, req->lease_id, req->actor, env->now_ms, NULL, NULL);
}

admit_verdict admit_submission(const admit_env *env, const admit_request *req,
                               uint64_t *prompt, coh_err *err)
{
    if (actors_check(env->actors, req->actor) != ACTORS_OK) {
        coh_fail(err, COH_ENOTFOUND, "unknown actor %016llx: register again",
                 (unsigned long long)req->actor);
        return ADMIT_UNKNOWN_ACTOR;
    }
    lease_info info;
    memset(&info, 0, sizeof info);
    int rc = lease_check(env->leases, req->lease_id, req->actor, env->now_ms, &info, err);
    if (rc != COH_OK)
        return lease_verdict_(rc, &info);
    if (prompt)
        *prompt = info.prompt;
    if (!isfinite(req->temperature) || req->temperature <= 0) {
        /* malformed, not a mismatch: refused like any invalid group, the lease stays */
        coh_fail(err, COH_EINVAL,
                 "temperature %g is not a positive finite number: send the temperature the "
                 "group was sampled at (the last heartbeat's)",
                 req->temperature);
        return ADMIT_INVALID;
    }
    if (!(fabs(req->temperature - env->temperature) <= 1e-6)) {
        coh_fail(err, COH_ESTATE,
                 "group sampled at temperature %g, the learner's is %g: sample with the "
                 "parameters of the last heartbeat",
                 req->temperature, env->temperature);
        settle_(env, req);
        return ADMIT_TEMPERATURE;
    }
    int n = req->n;
    gbuf_completion *cs = calloc(n > 0 ? (size_t)n : 1, sizeof *cs);
    int cap = env->bcfg->max_seq > 2 ? env->bcfg->max_seq : 2;
    int *ptok = malloc((size_t)cap * sizeof *ptok);
    if (!cs || !ptok) {
        free(cs);
        free(ptok);
        coh_fail(err, COH_ENOMEM, "learner out of memory; retry later");
        return ADMIT_INTERNAL;
    }
    int unscored = 0;
    for (int i = 0; i < n; i++) {
        const admit_item *x = &req->items[i];
        cs[i].tokens = (const int *)x->tokens;
        cs[i].n_tokens = x->n_tokens;
        cs[i].logp = x->logp;
        cs[i].n_logp = x->n_logp;
        cs[i].version = x->version < 0 ? UINT64_MAX : (uint64_t)x->version;
        cs[i].reward = x->scored ? x->reward : 0.0;
        unscored += !x->scored;
    }
    admit_verdict v = ADMIT_BUFFERED;
    int np = psrc_tokens(env->prompts, info.prompt, ptok, cap, err);
    if (np < 0) {
        v = ADMIT_INTERNAL;
    } else {
        gbuf_group g = {.prompt = info.prompt, .lease_id = req->lease_id, .actor = req->actor,
                        .seq = env->next_seq, .prompt_tokens = ptok, .n_prompt = np,
                        .completions = cs, .n_completions = n};
        rc = gbuf_validate(env->bcfg, &g, env->version, err);
        if (rc == COH_ESTATE) {
            v = ADMIT_STALE;
            settle_(env, req);
        } else if (rc != COH_OK) {
            v = ADMIT_INVALID;
        } else if (unscored) {
            coh_fail(err, COH_ESTATE, "reward_failed: %d item(s) were not scored; the group is "
                     "kept out of training", unscored);
            v = ADMIT_REWARD_FAILED;
            settle_(env, req);
        } else if (gbuf_count(env->buf) >= gbuf_capacity(env->buf)) {
            coh_fail(err, COH_EFULL, "the buffer holds %d groups, its capacity",
                     gbuf_count(env->buf));
            v = ADMIT_FULL;
        } else if (env->commit && (rc = env->commit(env->commit_ctx, &g, err)) != COH_OK) {
            v = ADMIT_INTERNAL;
        } else if ((rc = gbuf_push(env->buf, &g, env->version, err)) != COH_OK) {
            v = rc == COH_EFULL ? ADMIT_FULL : ADMIT_INTERNAL;
        } else {
            settle_(env, req);
            coh_err_clear(err);
        }
    }
    free(cs);
    free(ptok);
    return v;
}
