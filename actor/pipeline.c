/* pipeline.c - lease -> sample -> score -> submit (see pipeline.h). */
#include "pipeline.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actlog.h"
#include "cohort/v1/learner.pb-c.h"
#include "model.h"
#include "policy.h"
#include "rng.h"
#include "sampler.h"
#include "stops.h"
#include "tokenizer.h"

#define M_LEASE "/cohort.v1.Learner/LeasePrompts"
#define M_SUBMIT "/cohort.v1.Learner/SubmitGroup"
#define M_RETURN "/cohort.v1.Learner/ReturnLeases"

/* One lease the actor holds. */
typedef struct pipeline_lease {
    uint64_t owner;                 /* actor_id that leased it */
    const Cohort__V1__Lease *lease; /* points into a LeaseReply */
    int settled;                    /* the learner settled it, or it must not be returned */
} pipeline_lease;

struct pipeline {
    session *s;
    vtrack *vt;
    rclient *rc;
    pipeline_config cfg;
    policy *cur;
    sampler *smp;
    int smp_rows, smp_seq;
    rng r;
    /* buffers for one group */
    int *tokens, *lens, *prompt;
    float *logp;
    size_t cap_tokens, cap_prompt, cap_logp, cap_lens;
};

static double pipeline_now_(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- outcomes -------------------------------------------------------------------------- */

pipeline_outcome pipeline_submit_outcome(const rpc_status *st)
{
    switch (st->code) {
    case GRPC_STATUS_OK:
        return PIPELINE_SETTLED;
    case GRPC_STATUS_NOT_FOUND:
        return session_is_unknown_actor(st) ? PIPELINE_DROP_REREGISTER : PIPELINE_DROP;
    case GRPC_STATUS_ALREADY_EXISTS:
        return PIPELINE_DUPLICATE;
    case GRPC_STATUS_FAILED_PRECONDITION:
        return PIPELINE_STALE;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
    case GRPC_STATUS_DEADLINE_EXCEEDED:
    case GRPC_STATUS_UNAVAILABLE:
        return PIPELINE_RETRY;
    case GRPC_STATUS_UNAUTHENTICATED:
        return PIPELINE_FATAL;
    default:
        return PIPELINE_RETURN;
    }
}

const char *pipeline_outcome_name(pipeline_outcome o)
{
    switch (o) {
    case PIPELINE_SETTLED: return "settled";
    case PIPELINE_DROP: return "drop";
    case PIPELINE_DROP_REREGISTER: return "drop_reregister";
    case PIPELINE_DUPLICATE: return "duplicate";
    case PIPELINE_STALE: return "stale";
    case PIPELINE_RETRY: return "retry";
    case PIPELINE_RETURN: return "return";
    case PIPELINE_FATAL: return "fatal";
    }
    return "unknown";
}

/* ---- create / destroy ------------------------------------------------------------------ */

int pipeline_create(session *s, vtrack *vt, rclient *rc, const pipeline_config *cfg,
                    pipeline **out, coh_err *err)
{
    *out = NULL;
    if (!s || !vt || !rc || !cfg || cfg->prompts_per_lease < 1 ||
        cfg->prompts_per_lease > 1024 || cfg->max_groups < 0)
        return coh_fail(err, COH_EINVAL,
                        "pipeline_create: needs a session, a vtrack, a reward client, "
                        "prompts_per_lease in [1, 1024] and max_groups >= 0");
    pipeline *pl = calloc(1, sizeof *pl);
    if (!pl)
        return coh_fail(err, COH_ENOMEM, "out of memory for the lease pipeline");
    pl->s = s;
    pl->vt = vt;
    pl->rc = rc;
    pl->cfg = *cfg;
    rng_init(&pl->r, cfg->seed);
    *out = pl;
    return COH_OK;
}

void pipeline_destroy(pipeline *pl)
{
    if (!pl)
        return;
    sampler_destroy(pl->smp);
    policy_destroy(pl->cur);
    free(pl->tokens);
    free(pl->lens);
    free(pl->logp);
    free(pl->prompt);
    free(pl);
}

static int pipeline_grow_(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    void *q = realloc(*p, need * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = need;
    return 0;
}

/* Adopt the pending policy, if any. Returns 1 if the policy changed. */
static int pipeline_adopt_(pipeline *pl, policy *p)
{
    if (!p)
        p = vtrack_take(pl->vt);
    if (!p)
        return 0;
    sampler_destroy(pl->smp);
    pl->smp = NULL;
    pl->smp_rows = pl->smp_seq = 0;
    if (!pl->cur)
        ALOG("sampling with version %lld", (long long)policy_version(p));
    policy_destroy(pl->cur);
    pl->cur = p;
    return 1;
}

/* Give leases back to the learner (best effort): those not settled and leased under the
 * current actor id. Marks all of them settled. */
static void pipeline_return_(pipeline *pl, pipeline_lease *hl, int n)
{
    uint64_t id = session_identity(pl->s, NULL);
    uint64_t *ids = malloc((size_t)(n > 0 ? n : 1) * sizeof *ids);
    if (!ids)
        return;
    size_t k = 0;
    for (int i = 0; i < n; i++)
        if (!hl[i].settled && hl[i].owner == id)
            ids[k++] = hl[i].lease->lease_id;
    for (int i = 0; i < n; i++)
        hl[i].settled = 1;
    if (k == 0) {
        free(ids);
        return;
    }
    Cohort__V1__ReturnLeasesRequest req = COHORT__V1__RETURN_LEASES_REQUEST__INIT;
    req.actor_id = id;
    req.n_lease_ids = k;
    req.lease_ids = ids;
    ProtobufCMessage *rep = NULL;
    rpc_status st;
    rpc_unary_msg(session_channel(pl->s), M_RETURN, &req.base,
                  &cohort__v1__return_leases_reply__descriptor, 5000, &rep, &st);
    if (st.code == GRPC_STATUS_OK && rep)
        ALOG("returned %d of %zu leases", ((Cohort__V1__ReturnLeasesReply *)rep)->returned, k);
    else
        AWARN("ReturnLeases (%zu leases): %s: %s", k, rpc_status_name(st.code), st.message);
    rpc_msg_free(rep);
    free(ids);
}

/* ---- submit ---------------------------------------------------------------------------- */

/* Submit req for lease hl until the learner settles it (or it must be given back). Returns
 * -1 when the actor is stopping, else 0. */
static int pipeline_submit_(pipeline *pl, pipeline_lease *hl,
                            const Cohort__V1__SubmitGroupRequest *req, double rsum, long rn)
{
    const Cohort__V1__Lease *L = hl->lease;
    long backoff = 250;
    for (int attempt = 1;; attempt++) {
        ProtobufCMessage *rep = NULL;
        rpc_status st;
        rpc_unary_msg(session_channel(pl->s), M_SUBMIT, &req->base,
                      &cohort__v1__submit_group_reply__descriptor, 5000, &rep, &st);
        if (st.code == GRPC_STATUS_OK && !rep) { /* cannot happen: OK carries a reply */
            st.code = GRPC_STATUS_INTERNAL;
            snprintf(st.message, sizeof st.message, "no reply");
        }
        pipeline_outcome o = pipeline_submit_outcome(&st);
        if (o == PIPELINE_RETRY && session_stopping(pl->s))
            o = PIPELINE_RETURN; /* the caller gives it back */
        switch (o) {
        case PIPELINE_SETTLED: {
            Cohort__V1__SubmitGroupReply *r = (Cohort__V1__SubmitGroupReply *)rep;
            hl->settled = 1;
            session_count_submitted(pl->s, r->accepted, rsum, rn);
            if (!r->accepted)
                ALOG("group of lease %llu not used: %s", (unsigned long long)L->lease_id,
                     r->message ? r->message : "");
            rpc_msg_free(rep);
            return 0;
        }
        case PIPELINE_DROP:
        case PIPELINE_DROP_REREGISTER:
            rpc_msg_free(rep);
            hl->settled = 1;
            AWARN("SubmitGroup lease %llu: %s: %s; group dropped",
                  (unsigned long long)L->lease_id, rpc_status_name(st.code), st.message);
            if (o == PIPELINE_DROP_REREGISTER && session_register(pl->s, hl->owner))
                return -1;
            return 0;
        case PIPELINE_DUPLICATE:
            rpc_msg_free(rep);
            hl->settled = 1;
            return 0;
        case PIPELINE_STALE:
            rpc_msg_free(rep);
            hl->settled = 1;
            session_count_dropped(pl->s);
            ALOG("SubmitGroup lease %llu refused (%s); group dropped",
                 (unsigned long long)L->lease_id, st.message);
            return 0;
        case PIPELINE_RETRY:
            rpc_msg_free(rep);
            if (attempt == 1 || attempt % 10 == 0)
                AWARN("SubmitGroup lease %llu (attempt %d): %s: %s; retrying in %ld ms",
                      (unsigned long long)L->lease_id, attempt, rpc_status_name(st.code),
                      st.message, backoff);
            if (session_sleep_ms(pl->s, backoff))
                return -1;
            backoff = session_next_backoff(backoff);
            continue;
        case PIPELINE_FATAL:
        case PIPELINE_RETURN:
            rpc_msg_free(rep);
            /* the lease stays valid: give it back so that its prompt is not held forever
             * (heartbeats would renew it); when stopping, the caller gives it back */
            AWARN("SubmitGroup lease %llu: %s: %s", (unsigned long long)L->lease_id,
                  rpc_status_name(st.code), st.message);
            if (o == PIPELINE_FATAL)
                session_stop(pl->s, 1);
            if (!session_stopping(pl->s))
                pipeline_return_(pl, hl, 1);
            return 0;
        }
    }
}

/* ---- one lease ------------------------------------------------------------------------- */

/* Sample, score and submit one lease. Marks it settled when the learner has settled it (or
 * when it must not be returned). Returns -1 when stopping. */
static int pipeline_lease_(pipeline *pl, pipeline_lease *hl)
{
    const Cohort__V1__Lease *L = hl->lease;
    session_params par;
    session_params_get(pl->s, &par);
    int G = par.group_size;
    sample_params sp = par.sample;
    const model_config *cfg = model_get_config(policy_model(pl->cur));
    tokenizer *tok = policy_tokenizer(pl->cur);
    coh_err err;
    coh_err_clear(&err);

    /* prompt ids: the learner's, or the prompt encoded with the policy's tokenizer */
    size_t plen_cap = L->n_prompt_tokens ? L->n_prompt_tokens : strlen(L->prompt) + 1;
    if (pipeline_grow_((void **)&pl->prompt, &pl->cap_prompt, plen_cap + 1, sizeof(int))) {
        AWARN("out of memory; returning lease %llu", (unsigned long long)L->lease_id);
        pipeline_return_(pl, hl, 1);
        return 0;
    }
    int plen = 0;
    if (L->n_prompt_tokens) {
        for (size_t i = 0; i < L->n_prompt_tokens; i++)
            pl->prompt[plen++] = L->prompt_tokens[i];
    } else {
        int bos = tok_add_bos(tok) && tok_bos_id(tok) >= 0;
        pl->prompt[0] = tok_bos_id(tok);
        int n = 0;
        if (tok_encode(tok, L->prompt, pl->prompt + bos, (int)plen_cap, &n, &err)) {
            AWARN("lease %llu (%s): cannot encode the prompt: %s; returning it",
                  (unsigned long long)L->lease_id, L->prompt_id, err.msg);
            pipeline_return_(pl, hl, 1);
            return 0;
        }
        plen = n + bos;
    }
    for (int i = 0; i < plen; i++)
        if (pl->prompt[i] < 0 || pl->prompt[i] >= cfg->vocab_size) {
            AWARN("lease %llu (%s): prompt token %d outside the vocabulary [0, %d); returning "
                  "it",
                  (unsigned long long)L->lease_id, L->prompt_id, pl->prompt[i],
                  cfg->vocab_size);
            pipeline_return_(pl, hl, 1);
            return 0;
        }
    /* ids the tokenizer has no text for (a vocabulary padded past it) are never sampled */
    if (tok_vocab_size(tok) > 0 && tok_vocab_size(tok) < cfg->vocab_size)
        sp.vocab_limit = tok_vocab_size(tok);
    int need = plen + sp.max_new_tokens;
    if (need > cfg->max_seq) {
        AWARN("lease %llu (%s): %d prompt tokens + %d new tokens exceed the model's %d "
              "positions; returning it",
              (unsigned long long)L->lease_id, L->prompt_id, plen, sp.max_new_tokens,
              cfg->max_seq);
        pipeline_return_(pl, hl, 1);
        return 0;
    }
    if (!pl->smp || pl->smp_rows < G || pl->smp_seq < need) {
        sampler_destroy(pl->smp);
        pl->smp = NULL;
        int seq = ((need + 63) / 64) * 64;
        if (seq < pl->smp_seq)
            seq = pl->smp_seq;
        if (seq > cfg->max_seq)
            seq = cfg->max_seq;
        if (sampler_create(policy_model(pl->cur), G, seq, &pl->smp, &err)) {
            AWARN("cannot create the sampler: %s", err.msg);
            pl->smp_rows = pl->smp_seq = 0;
            pipeline_return_(pl, hl, 1);
            return 0;
        }
        pl->smp_rows = G;
        pl->smp_seq = seq;
    }
    size_t M = (size_t)sp.max_new_tokens;
    if (pipeline_grow_((void **)&pl->tokens, &pl->cap_tokens, (size_t)G * M, sizeof(int)) ||
        pipeline_grow_((void **)&pl->logp, &pl->cap_logp, (size_t)G * M, sizeof(float)) ||
        pipeline_grow_((void **)&pl->lens, &pl->cap_lens, (size_t)G, sizeof(int))) {
        AWARN("out of memory; returning lease %llu", (unsigned long long)L->lease_id);
        pipeline_return_(pl, hl, 1);
        return 0;
    }
    double t0 = pipeline_now_();
    if (sampler_generate(pl->smp, pl->prompt, plen, G, &sp, &pl->r, pl->tokens, pl->logp, NULL,
                         pl->lens, &err)) {
        AWARN("lease %llu (%s): sampling failed: %s; returning it",
              (unsigned long long)L->lease_id, L->prompt_id, err.msg);
        pipeline_return_(pl, hl, 1);
        return 0;
    }
    double sample_ms = (pipeline_now_() - t0) * 1000.0;
    long long ntok = 0;
    for (int i = 0; i < G; i++)
        ntok += pl->lens[i];
    session_count_sampled(pl->s, ntok, G);

    /* decode */
    size_t tcap = M * 64 + 16; /* a token's text may be long (code, byte-level BPE) */
    char **texts = calloc((size_t)G, sizeof *texts);
    int *trunc = calloc((size_t)G, sizeof *trunc);
    int32_t *tok32 = malloc((size_t)G * M * sizeof *tok32);
    Cohort__V1__ScoredCompletion *scs = calloc((size_t)G, sizeof *scs);
    Cohort__V1__ScoredCompletion **scp = calloc((size_t)G, sizeof *scp);
    rclient_scores *scores = NULL;
    int rc = 0;
    if (!texts || !trunc || !tok32 || !scs || !scp)
        goto fail_mem;
    for (int i = 0; i < G; i++) {
        int *row = pl->tokens + (size_t)i * M;
        int n = pl->lens[i], which = -1;
        if (par.stop.n > 0) {
            /* end at a stop string: ids and log-probabilities cut after the token that
             * completes it; the text is the kept tokens', stop string included */
            int cut = stops_cut(tok, row, n, &par.stop, &which, &err);
            if (cut < 0) {
                AWARN("lease %llu (%s): %s", (unsigned long long)L->lease_id, L->prompt_id,
                      err.msg);
                goto fail_mem;
            }
            n = pl->lens[i] = cut;
        }
        int has_eos = 0;
        for (int k = 0; which < 0 && n > 0 && k < sp.n_stop; k++)
            has_eos |= row[n - 1] == sp.stop_ids[k];
        if (which < 0 && n > 0 && row[n - 1] == sp.eos_id)
            has_eos = 1;
        trunc[i] = which < 0 && !has_eos;
        texts[i] = malloc(tcap);
        if (!texts[i])
            goto fail_mem;
        tok_decode(tok, row, has_eos ? n - 1 : n, texts[i], tcap);
        for (int t = 0; t < n; t++) {
            tok32[(size_t)i * M + t] = row[t];
            float *lp = &pl->logp[(size_t)i * M + t];
            if (*lp > 0.0f)
                *lp = 0.0f; /* rounding: a log-probability is never positive */
        }
    }

    /* score: the texts and the exact ids (the prompt as leased, the completions as sampled) */
    const int32_t **rows = calloc((size_t)G, sizeof *rows);
    int32_t *ptok = malloc((size_t)(plen > 0 ? plen : 1) * sizeof *ptok);
    if (!rows || !ptok) {
        free(rows);
        free(ptok);
        goto fail_mem;
    }
    for (int i = 0; i < G; i++)
        rows[i] = tok32 + (size_t)i * M;
    for (int i = 0; i < plen; i++)
        ptok[i] = pl->prompt[i];
    rclient_group grp = {.lease_id = L->lease_id, .task = L->task, .prompt = L->prompt,
                         .answer = L->answer, .metadata_json = L->metadata_json, .n = G,
                         .texts = texts, .lens = pl->lens, .truncated = trunc,
                         .prompt_tokens = ptok, .n_prompt = plen,
                         .tokens = (const int32_t *const *)rows};
    double reward_ms = 0;
    int src = rclient_score(pl->rc, pl->s, &grp, &scores, &reward_ms);
    free(rows);
    free(ptok);
    if (src == -1) {
        rc = -1;
        goto out; /* stopping: the lease is returned by the caller */
    }
    if (src)
        goto fail_mem;

    /* submit */
    double rsum = 0;
    long rn = 0;
    for (int i = 0; i < G; i++) {
        const rclient_item *it = rclient_scores_item(scores, i);
        Cohort__V1__ScoredCompletion *c = &scs[i];
        cohort__v1__scored_completion__init(c);
        c->n_completion_tokens = (size_t)pl->lens[i];
        c->completion_tokens = tok32 + (size_t)i * M;
        c->n_behaviour_logprobs = (size_t)pl->lens[i];
        c->behaviour_logprobs = pl->logp + (size_t)i * M;
        c->policy_version = policy_version(pl->cur);
        c->status = it->status;
        c->reward = it->reward;
        c->n_components = it->n_components;
        c->components = it->components;
        c->detail = (char *)it->detail;
        if (it->status == COHORT__V1__ITEM_STATUS__ITEM_OK) {
            rsum += it->reward;
            rn++;
        }
        scp[i] = c;
    }
    Cohort__V1__SubmitGroupRequest req = COHORT__V1__SUBMIT_GROUP_REQUEST__INIT;
    req.actor_id = hl->owner;
    req.lease_id = L->lease_id;
    req.n_completions = (size_t)G;
    req.completions = scp;
    req.temperature = par.temperature;
    req.reward_latency_ms = reward_ms;
    req.sample_ms = sample_ms;
    rc = pipeline_submit_(pl, hl, &req, rsum, rn);
    goto out;
fail_mem:
    AWARN("out of memory; returning lease %llu", (unsigned long long)L->lease_id);
    pipeline_return_(pl, hl, 1);
out:
    if (texts)
        for (int i = 0; i < G; i++)
            free(texts[i]);
    free(texts);
    free(trunc);
    free(tok32);
    free(scs);
    free(scp);
    rclient_scores_destroy(scores);
    return rc;
}

/* ---- the loop -------------------------------------------------------------------------- */

long pipeline_run(pipeline *pl)
{
    session *s = pl->s;
    pipeline_adopt_(pl, vtrack_wait_policy(pl->vt)); /* the first verified version */
    long groups = 0, backoff = 200;
    long max = pl->cfg.max_groups;
    while (pl->cur && !session_stopping(s) && (max <= 0 || groups < max)) {
        pipeline_adopt_(pl, NULL);
        if (policy_version(pl->cur) > vtrack_learner_version(pl->vt)) {
            /* the learner restarted from an older checkpoint: wait for its version */
            if (session_sleep_ms(s, 100))
                break;
            continue;
        }
        uint64_t id = session_identity(s, NULL);
        Cohort__V1__LeaseRequest req = COHORT__V1__LEASE_REQUEST__INIT;
        req.actor_id = id;
        int want = pl->cfg.prompts_per_lease;
        if (max > 0 && max - groups < want)
            want = (int)(max - groups);
        req.max_prompts = want;
        ProtobufCMessage *rep = NULL;
        rpc_status st;
        rpc_unary_msg(session_channel(s), M_LEASE, &req.base, &cohort__v1__lease_reply__descriptor,
                      5000, &rep, &st);
        if (st.code != GRPC_STATUS_OK || !rep) {
            rpc_msg_free(rep);
            if (session_is_unknown_actor(&st)) {
                if (session_register(s, id))
                    break;
                continue;
            }
            if (st.code == GRPC_STATUS_UNAUTHENTICATED) {
                AWARN("LeasePrompts: %s: %s", rpc_status_name(st.code), st.message);
                session_stop(s, 1);
                break;
            }
            AWARN("LeasePrompts: %s: %s; retrying in %ld ms", rpc_status_name(st.code),
                  st.message, backoff);
            if (session_sleep_ms(s, backoff))
                break;
            backoff = session_next_backoff(backoff);
            continue;
        }
        backoff = 200;
        Cohort__V1__LeaseReply *lr = (Cohort__V1__LeaseReply *)rep;
        session_set_paused(s, lr->paused);
        if (lr->n_leases == 0) {
            long ms = lr->retry_after_ms ? lr->retry_after_ms : 200;
            rpc_msg_free(rep);
            if (session_sleep_ms(s, ms))
                break;
            continue;
        }
        int n = (int)lr->n_leases;
        pipeline_lease *hl = calloc((size_t)n, sizeof *hl);
        if (!hl) {
            rpc_msg_free(rep);
            break;
        }
        for (int i = 0; i < n; i++) {
            hl[i].owner = id;
            hl[i].lease = lr->leases[i];
        }
        for (int i = 0; i < n && !session_stopping(s); i++) {
            if (session_identity(s, NULL) != id) { /* registered again: these leases are gone */
                for (int k = i; k < n; k++)
                    hl[k].settled = 1;
                break;
            }
            pipeline_adopt_(pl, NULL); /* a newer verified version, between groups */
            if (pipeline_lease_(pl, &hl[i]) < 0)
                break;
            groups++;
        }
        pipeline_return_(pl, hl, n); /* whatever was not submitted (stop, re-register) */
        free(hl);
        rpc_msg_free(rep);
    }
    return groups;
}
