/* rclient.c - Reward.Score for one group (see rclient.h). */
#include "rclient.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actlog.h"

#define M_SCORE "/cohort.v1.Reward/Score"
#define RCLIENT_RETRY_S 30.0
#define RCLIENT_MAX_ITEMS 4096

struct rclient {
    rpc_channel *rch;
    const char *addr;
    int timeout_ms;
};

struct rclient_scores {
    int n;
    int call_failed;
    rclient_item *items;
    Cohort__V1__ScoreReply *reply;
    char detail[512]; /* the call's failure, shared by every item */
};

static double rclient_now_(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int rclient_create(rpc_channel *rch, const char *addr, int timeout_ms, rclient **out,
                   coh_err *err)
{
    *out = NULL;
    if (!rch || timeout_ms < 1 || timeout_ms > 600000)
        return coh_fail(err, COH_EINVAL,
                        "rclient_create: needs a channel and a timeout in [1, 600000] ms (got "
                        "%d)",
                        timeout_ms);
    rclient *rc = calloc(1, sizeof *rc);
    if (!rc)
        return coh_fail(err, COH_ENOMEM, "out of memory for the reward client");
    rc->rch = rch;
    rc->addr = addr ? addr : "the reward service";
    rc->timeout_ms = timeout_ms;
    *out = rc;
    return COH_OK;
}

void rclient_destroy(rclient *rc) { free(rc); }

int rclient_scores_count(const rclient_scores *sc) { return sc->n; }
const rclient_item *rclient_scores_item(const rclient_scores *sc, int i) { return &sc->items[i]; }
int rclient_scores_call_failed(const rclient_scores *sc) { return sc->call_failed; }

void rclient_scores_destroy(rclient_scores *sc)
{
    if (!sc)
        return;
    rpc_msg_free(sc->reply ? &sc->reply->base : NULL);
    free(sc->items);
    free(sc);
}

/* The result for item id: at index i when the service kept the order, else searched. */
static const Cohort__V1__ItemResult *rclient_find_(const Cohort__V1__ScoreReply *r, int i,
                                                   const char *id)
{
    if ((size_t)i < r->n_results && r->results[i]->item_id &&
        strcmp(r->results[i]->item_id, id) == 0)
        return r->results[i];
    for (size_t k = 0; k < r->n_results; k++)
        if (r->results[k]->item_id && strcmp(r->results[k]->item_id, id) == 0)
            return r->results[k];
    return NULL;
}

/* Fill item from the service's result (NULL = none came back). */
static void rclient_item_from_(rclient_item *it, const Cohort__V1__ItemResult *res)
{
    memset(it, 0, sizeof *it);
    if (!res) {
        it->status = COHORT__V1__ITEM_STATUS__ITEM_FAILED;
        it->detail = "the reward service returned no result for this item";
        return;
    }
    it->status = res->status == COHORT__V1__ITEM_STATUS__ITEM_STATUS_UNSPECIFIED
                     ? COHORT__V1__ITEM_STATUS__ITEM_FAILED
                     : res->status;
    it->reward = res->reward;
    it->n_components = res->n_components;
    it->components = res->components;
    it->detail = res->detail ? res->detail : "";
    if (it->status == COHORT__V1__ITEM_STATUS__ITEM_OK && !isfinite(it->reward)) {
        it->status = COHORT__V1__ITEM_STATUS__ITEM_FAILED;
        it->detail = "the reward service returned a non-finite reward";
    }
    if (it->status != COHORT__V1__ITEM_STATUS__ITEM_OK)
        it->reward = 0;
}

int rclient_score(rclient *rc, session *s, const rclient_group *g, rclient_scores **out,
                  double *latency_ms)
{
    *out = NULL;
    if (latency_ms)
        *latency_ms = 0;
    if (!g || g->n < 1 || g->n > RCLIENT_MAX_ITEMS || !g->texts || !g->lens || !g->truncated)
        return COH_EINVAL;
    int G = g->n, rc_ = COH_ENOMEM;
    rclient_scores *sc = calloc(1, sizeof *sc);
    Cohort__V1__RewardItem *items = calloc((size_t)G, sizeof *items);
    Cohort__V1__RewardItem **itemp = calloc((size_t)G, sizeof *itemp);
    char(*ids)[48] = calloc((size_t)G, sizeof *ids);
    if (!sc || !items || !itemp || !ids)
        goto out;
    sc->n = G;
    sc->items = calloc((size_t)G, sizeof *sc->items);
    if (!sc->items)
        goto out;
    for (int i = 0; i < G; i++) {
        cohort__v1__reward_item__init(&items[i]);
        snprintf(ids[i], sizeof ids[i], "%llu/%d", (unsigned long long)g->lease_id, i);
        items[i].item_id = ids[i];
        items[i].task = (char *)(g->task ? g->task : "");
        items[i].prompt = (char *)(g->prompt ? g->prompt : "");
        items[i].completion = g->texts[i];
        items[i].answer = (char *)(g->answer ? g->answer : "");
        items[i].metadata_json = (char *)(g->metadata_json ? g->metadata_json : "");
        items[i].completion_num_tokens = g->lens[i];
        items[i].truncated = g->truncated[i] != 0;
        if (g->prompt_tokens && g->n_prompt > 0) {
            items[i].prompt_tokens = (int32_t *)g->prompt_tokens;
            items[i].n_prompt_tokens = (size_t)g->n_prompt;
        }
        if (g->tokens && g->tokens[i]) {
            items[i].completion_tokens = (int32_t *)g->tokens[i];
            items[i].n_completion_tokens = (size_t)g->lens[i];
        }
        itemp[i] = &items[i];
    }
    Cohort__V1__ScoreRequest req = COHORT__V1__SCORE_REQUEST__INIT;
    req.n_items = (size_t)G;
    req.items = itemp;
    req.timeout_ms = (uint32_t)rc->timeout_ms;
    long backoff = 250;
    double t_start = rclient_now_();
    for (int attempt = 1;; attempt++) {
        ProtobufCMessage *rep = NULL;
        rpc_status st;
        double t0 = rclient_now_();
        rpc_unary_msg(rc->rch, M_SCORE, &req.base, &cohort__v1__score_reply__descriptor,
                      rc->timeout_ms + 1000, &rep, &st);
        if (latency_ms)
            *latency_ms = (rclient_now_() - t0) * 1000.0;
        if (st.code == GRPC_STATUS_OK && rep) {
            sc->reply = (Cohort__V1__ScoreReply *)rep;
            for (int i = 0; i < G; i++)
                rclient_item_from_(&sc->items[i], rclient_find_(sc->reply, i, ids[i]));
            rc_ = COH_OK;
            goto out;
        }
        rpc_msg_free(rep);
        int retry = st.code == GRPC_STATUS_UNAVAILABLE ||
                    st.code == GRPC_STATUS_RESOURCE_EXHAUSTED;
        if (retry && rclient_now_() - t_start < RCLIENT_RETRY_S) {
            AWARN("Reward.Score at %s (attempt %d): %s: %s; retrying in %ld ms", rc->addr,
                  attempt, rpc_status_name(st.code), st.message, backoff);
            int stop;
            if (s) {
                stop = session_sleep_ms(s, backoff);
            } else {
                struct timespec ts = {backoff / 1000, (backoff % 1000) * 1000000L};
                nanosleep(&ts, NULL);
                stop = 0;
            }
            if (stop) {
                rc_ = -1;
                goto out;
            }
            backoff = session_next_backoff(backoff);
            continue;
        }
        /* report every item as failed / timed out, never as a reward of 0 */
        Cohort__V1__ItemStatus fail = st.code == GRPC_STATUS_DEADLINE_EXCEEDED
                                          ? COHORT__V1__ITEM_STATUS__ITEM_TIMED_OUT
                                          : COHORT__V1__ITEM_STATUS__ITEM_FAILED;
        snprintf(sc->detail, sizeof sc->detail, "Reward.Score at %s: %s: %.300s", rc->addr,
                 rpc_status_name(st.code), st.message);
        AWARN("%s; submitting the group's items as %s", sc->detail,
              fail == COHORT__V1__ITEM_STATUS__ITEM_TIMED_OUT ? "timed out" : "failed");
        sc->call_failed = 1;
        for (int i = 0; i < G; i++) {
            memset(&sc->items[i], 0, sizeof sc->items[i]);
            sc->items[i].status = fail;
            sc->items[i].detail = sc->detail;
        }
        rc_ = COH_OK;
        goto out;
    }
out:
    free(items);
    free(itemp);
    free(ids);
    if (rc_ == COH_OK)
        *out = sc;
    else
        rclient_scores_destroy(sc);
    return rc_;
}
