/* main_reward.c - cohort-reward: the Reward service.
 *
 * Serves cohort.v1.Reward (Score, Status) and grpc.health.v1.Health, and optionally a
 * Prometheus page (--metrics-listen). A Score call goes through these stages, all driven
 * from the libuv loop thread:
 *
 *   on_score      validate the request (INVALID_ARGUMENT naming the item), check every
 *                 item's metadata_json (invalid JSON: that item ITEM_FAILED), give every
 *                 item its deadline (min of the call's deadline less a margin, timeout_ms,
 *                 the route's timeout_ms) and arm the reply timer;
 *   remote        items routed to custom verifiers go to the verifier pool (vpool.h:
 *                 concurrent, batched, health-aware, each call with the item's deadline);
 *                 the pool's threads report back through a uv_async;
 *   local         built-in verifiers, length penalty and reward model run on the libuv
 *                 thread pool (scorer.h), for unrouted items at once, for routed items once
 *                 their verdicts are in;
 *   reply         when every item is done, or when the timer fires (items not done are
 *                 ITEM_TIMED_OUT): always before the call's own deadline.
 *
 * A job (one Score call) is reference-counted: the call, the timer handle, each pool
 * submission and each thread-pool work hold a reference; the job is freed at zero, so a
 * late verdict after the reply (or after the caller cancelled) is simply dropped.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "cli.h"
#include "cohort/v1/reward.pb-c.h"
#include "cohort/v1/verifier.pb-c.h"
#include "fsutil.h"
#include "grpc/health/v1/health.pb-c.h"
#include "promserve.h"
#include "rpc.h"
#include "scorer.h"
#include "tsan.h"
#include "vpool.h"

#define MAX_SCORERS 16
#define MAX_ITEMS 4096
#define MAX_ITEM_ID 128
#define MAX_TIMEOUT_MS 600000
#define REPLY_GRACE_MS 30 /* reply timer slack after the last item deadline (no call deadline) */

/* ---- the network of the verifier pool (gRPC) -------------------------------------------- */

typedef struct net_ctx {
    const char *default_token; /* --verifier-token, for verifiers without their own */
} net_ctx;

static void *net_open(void *ctx, const scorer_verifier_config *cfg, const char *endpoint,
                      coh_err *err)
{
    net_ctx *nc = ctx;
    rpc_channel_config cc = {.bearer_token = cfg->token ? cfg->token : nc->default_token,
                             .tls_ca_file = cfg->tls_ca_file,
                             .tls_server_name = cfg->tls_server_name};
    rpc_channel *ch = NULL;
    if (rpc_channel_create(endpoint, &cc, &ch, err))
        return NULL;
    return ch;
}

static void net_close(void *ctx, void *conn)
{
    (void)ctx;
    rpc_channel_destroy(conn);
}

static void fill_request(Cohort__V1__VerifyRequest *req, const scorer_item *item)
{
    cohort__v1__verify_request__init(req);
    req->task = (char *)item->task;
    req->prompt = (char *)item->prompt;
    req->completion = (char *)item->completion;
    req->metadata_json = (char *)(item->metadata_json ? item->metadata_json : "");
    req->answer = (char *)(item->answer ? item->answer : "");
    req->prompt_tokens = (int32_t *)item->prompt_tokens;
    req->n_prompt_tokens = item->prompt_tokens ? item->n_prompt_tokens : 0;
    req->completion_tokens = (int32_t *)item->completion_tokens;
    req->n_completion_tokens = item->completion_tokens ? item->n_completion_tokens : 0;
}

static void copy_reply(scorer_remote_reply *out, const Cohort__V1__VerifyReply *r)
{
    out->score = r->score;
    out->passed = r->passed;
    snprintf(out->details, sizeof out->details, "%s", r->details ? r->details : "");
}

static vpool_code map_status(const rpc_status *st)
{
    switch (st->code) {
    case GRPC_STATUS_OK: return VPOOL_OK;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
    case GRPC_STATUS_CANCELLED: return VPOOL_TIMED_OUT;
    case GRPC_STATUS_UNAVAILABLE: return VPOOL_UNAVAILABLE;
    case GRPC_STATUS_UNIMPLEMENTED: return VPOOL_UNIMPLEMENTED;
    case GRPC_STATUS_NOT_FOUND: return VPOOL_NOT_FOUND;
    default: return VPOOL_FAILED;
    }
}

static vpool_code net_call(void *ctx, void *conn, const scorer_item *const *items, size_t n,
                           int batch, int64_t timeout_ms, scorer_remote_reply *replies,
                           char *msg, size_t msg_len)
{
    (void)ctx;
    rpc_channel *ch = conn;
    ProtobufCMessage *rep = NULL;
    rpc_status st;
    memset(&st, 0, sizeof st);
    vpool_code rc;
    if (!batch) {
        Cohort__V1__VerifyRequest req;
        fill_request(&req, items[0]);
        rpc_unary_msg(ch, "/cohort.v1.Verifier/Verify", &req.base,
                      &cohort__v1__verify_reply__descriptor, timeout_ms, &rep, &st);
        rc = map_status(&st);
        if (rc == VPOOL_OK)
            copy_reply(&replies[0], (Cohort__V1__VerifyReply *)rep);
    } else {
        Cohort__V1__VerifyRequest *reqs = calloc(n, sizeof *reqs);
        Cohort__V1__VerifyRequest **ptrs = calloc(n, sizeof *ptrs);
        if (!reqs || !ptrs) {
            free(reqs);
            free(ptrs);
            snprintf(msg, msg_len, "out of memory in cohort-reward");
            return VPOOL_FAILED;
        }
        for (size_t i = 0; i < n; i++) {
            fill_request(&reqs[i], items[i]);
            ptrs[i] = &reqs[i];
        }
        Cohort__V1__VerifyBatchRequest breq = COHORT__V1__VERIFY_BATCH_REQUEST__INIT;
        breq.n_requests = n;
        breq.requests = ptrs;
        rpc_unary_msg(ch, "/cohort.v1.Verifier/VerifyBatch", &breq.base,
                      &cohort__v1__verify_batch_reply__descriptor, timeout_ms, &rep, &st);
        free(reqs);
        free(ptrs);
        rc = map_status(&st);
        if (rc == VPOOL_OK) {
            Cohort__V1__VerifyBatchReply *br = (Cohort__V1__VerifyBatchReply *)rep;
            if (br->n_replies != n) {
                snprintf(st.message, sizeof st.message,
                         "VerifyBatch returned %zu replies for %zu requests", br->n_replies, n);
                st.code = GRPC_STATUS_INTERNAL;
                rc = VPOOL_FAILED;
            } else {
                for (size_t i = 0; i < n; i++)
                    copy_reply(&replies[i], br->replies[i]);
            }
        }
    }
    if (rc != VPOOL_OK)
        snprintf(msg, msg_len, "%s: %.150s", rpc_status_name(st.code), st.message);
    rpc_msg_free(rep);
    return rc;
}

static vpool_health net_health(void *ctx, void *conn, int64_t timeout_ms)
{
    (void)ctx;
    static const char *const services[] = {"cohort.v1.Verifier", ""};
    for (int k = 0; k < 2; k++) {
        Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        req.service = (char *)services[k];
        ProtobufCMessage *rep = NULL;
        rpc_status st;
        rpc_unary_msg(conn, "/grpc.health.v1.Health/Check", &req.base,
                      &grpc__health__v1__health_check_response__descriptor, timeout_ms, &rep, &st);
        int status = rep ? (int)((Grpc__Health__V1__HealthCheckResponse *)rep)->status : 0;
        rpc_msg_free(rep);
        switch (st.code) {
        case GRPC_STATUS_OK:
            return status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                       ? VPOOL_HEALTH_SERVING
                       : VPOOL_HEALTH_NOT_SERVING;
        case GRPC_STATUS_NOT_FOUND: continue; /* try the whole server, "" */
        case GRPC_STATUS_UNAVAILABLE:
        case GRPC_STATUS_DEADLINE_EXCEEDED: return VPOOL_HEALTH_UNREACHABLE;
        default: return VPOOL_HEALTH_NONE; /* UNIMPLEMENTED and the like: no health service */
        }
    }
    return VPOOL_HEALTH_NOT_SERVING; /* neither name is known: not serving */
}

/* scorer_remote_fn that is never meant to run: the pool calls the verifiers and hands the
 * verdicts to scorer_score_verdicts. */
static int no_direct_call(void *ctx, const char *endpoint, const scorer_item *item,
                          int timeout_ms, scorer_remote_reply *reply, int *timed_out,
                          int *unavailable, int *unknown_task, coh_err *err)
{
    (void)ctx, (void)endpoint, (void)item, (void)timeout_ms, (void)reply, (void)timed_out;
    (void)unavailable, (void)unknown_task;
    return coh_fail(err, COH_ESTATE, "internal error: verifier called outside the pool");
}

/* ---- the service ------------------------------------------------------------------------ */

typedef struct sub_note { /* a finished pool submission, on its way to the loop */
    struct sub_note *next;
    struct job *job;
} sub_note;

typedef struct service {
    uv_loop_t *loop;
    rpc_server *server;
    vpool *pool;
    net_ctx net;
    int n_scorers, nv;
    scorer *scorers[MAX_SCORERS];
    int busy[MAX_SCORERS];
    pthread_mutex_t mu; /* scorer pool and the note list */
    pthread_cond_t cv;
    sub_note *notes;
    uv_async_t notes_async;
    /* counters, loop thread only */
    long requests, requests_invalid, items, items_failed, items_timed_out, items_unknown;
    double t_start;
    uv_signal_t sigint, sigterm;
    uv_timer_t stats_timer, prom_timer;
    prom_server *prom;
    int stopping;
} service;

static scorer *take_scorer(service *s, int *idx)
{
    pthread_mutex_lock(&s->mu);
    for (;;) {
        for (int i = 0; i < s->n_scorers; i++)
            if (!s->busy[i]) {
                s->busy[i] = 1;
                *idx = i;
                pthread_mutex_unlock(&s->mu);
                return s->scorers[i];
            }
        pthread_cond_wait(&s->cv, &s->mu);
    }
}

static void give_scorer(service *s, int idx)
{
    pthread_mutex_lock(&s->mu);
    s->busy[idx] = 0;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- Score: the job --------------------------------------------------------------------- */

typedef struct job {
    service *svc;
    rpc_call *call; /* NULL once answered or cancelled */
    Cohort__V1__ScoreRequest *req;
    size_t n;
    scorer_item *items;
    int *budget_ms;           /* per item; <= 0: no time at all */
    int *n_routes;            /* per item: verifiers routed */
    unsigned char *done;      /* per item, loop thread: result final */
    scorer_result *results;   /* per item, written by thread-pool work */
    scorer_verdict *verdicts; /* n * nv */
    vpool_item *vitems;       /* n * nv (slices per verifier) */
    size_t n_done;
    int remote_left; /* pool submissions outstanding */
    int refs;
    int64_t t_arrived; /* vpool_now_ms() when the call arrived */
    uv_timer_t timer;
} job;

typedef struct local_work {
    uv_work_t work;
    job *j;
    size_t n;
    size_t idx[]; /* items to score */
} local_work;

static void job_unref(job *j)
{
    if (--j->refs > 0)
        return;
    rpc_msg_free(&j->req->base);
    free(j->items);
    free(j->budget_ms);
    free(j->n_routes);
    free(j->done);
    free(j->results);
    free(j->verdicts);
    free(j->vitems);
    free(j);
}

static void on_timer_closed(uv_handle_t *h) { job_unref(h->data); }

static void set_item(scorer_result *r, score_status st, const char *fmt, const char *a, long b)
{
    memset(r, 0, sizeof *r);
    r->status = st;
    snprintf(r->detail, sizeof r->detail, fmt, a, b);
}

/* Answer the call with what is done; items not done are ITEM_TIMED_OUT. */
static void job_reply(job *j)
{
    service *s = j->svc;
    size_t n = j->n;
    Cohort__V1__ItemResult *res = calloc(n, sizeof *res);
    Cohort__V1__ItemResult **resp = calloc(n, sizeof *resp);
    Cohort__V1__RewardComponent *comps = calloc(n * SCORER_MAX_COMPONENTS, sizeof *comps);
    Cohort__V1__RewardComponent **compp = calloc(n * SCORER_MAX_COMPONENTS, sizeof *compp);
    scorer_result *late = calloc(n, sizeof *late);
    if (!res || !resp || !comps || !compp || !late) {
        rpc_call_fail(j->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                      "cohort-reward is out of memory; retry later");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const scorer_result *r = &j->results[i];
        if (!j->done[i]) { /* a worker may still write results[i]: answer from a copy */
            set_item(&late[i], SCORE_TIMED_OUT,
                     "no result within the item's deadline of %s%ld ms (the smallest of the "
                     "call's deadline less a margin, timeout_ms and the route's timeout_ms)",
                     "", (long)j->budget_ms[i]);
            r = &late[i];
        }
        Cohort__V1__ItemResult *o = &res[i];
        cohort__v1__item_result__init(o);
        o->item_id = j->req->items[i]->item_id;
        o->status = (Cohort__V1__ItemStatus)r->status;
        o->reward = r->reward;
        o->detail = (char *)r->detail;
        o->latency_ms = r->latency_ms;
        o->n_components = (size_t)r->n_components;
        o->components = compp + i * SCORER_MAX_COMPONENTS;
        for (int k = 0; k < r->n_components; k++) {
            Cohort__V1__RewardComponent *c = &comps[i * SCORER_MAX_COMPONENTS + (size_t)k];
            cohort__v1__reward_component__init(c);
            c->name = (char *)r->comp[k].name;
            c->value = r->comp[k].value;
            c->weight = r->comp[k].weight;
            o->components[k] = c;
        }
        resp[i] = o;
        s->items++;
        s->items_failed += r->status == SCORE_FAILED;
        s->items_timed_out += r->status == SCORE_TIMED_OUT;
        s->items_unknown += r->status == SCORE_UNKNOWN_TASK;
    }
    Cohort__V1__ScoreReply reply = COHORT__V1__SCORE_REPLY__INIT;
    reply.n_results = n;
    reply.results = resp;
    s->requests++;
    rpc_call_reply_msg(j->call, &reply.base);
out:
    free(res);
    free(resp);
    free(comps);
    free(compp);
    free(late);
}

/* The call is over (answered or cancelled): drop it, stop the timer. */
static void job_close_call(job *j)
{
    j->call = NULL;
    uv_timer_stop(&j->timer);
    uv_close((uv_handle_t *)&j->timer, on_timer_closed);
    job_unref(j); /* the call's reference */
}

static void job_check(job *j)
{
    if (j->call && j->n_done == j->n) {
        job_reply(j);
        job_close_call(j);
    }
}

static void on_job_timer(uv_timer_t *t)
{
    job *j = t->data;
    if (j->call) {
        job_reply(j);
        job_close_call(j);
    }
}

static void on_job_cancel(rpc_call *call, void *data)
{
    (void)call;
    job *j = data;
    if (j->call)
        job_close_call(j);
}

static void local_run(uv_work_t *w)
{
    COH_TSAN_ACQUIRE(w); /* libuv's queue hand-off is invisible to TSan: see common/tsan.h */
    local_work *lw = w->data;
    job *j = lw->j;
    int idx;
    scorer *sc = take_scorer(j->svc, &idx);
    for (size_t k = 0; k < lw->n; k++) {
        size_t i = lw->idx[k];
        const scorer_verdict *vd =
            j->n_routes[i] > 0 ? &j->verdicts[i * (size_t)j->svc->nv] : NULL;
        coh_err err;
        if (scorer_score_verdicts(sc, &j->items[i], vd, &j->results[i], &err)) {
            memset(&j->results[i], 0, sizeof j->results[i]);
            j->results[i].status = SCORE_FAILED;
            snprintf(j->results[i].detail, sizeof j->results[i].detail, "%.200s", err.msg);
        }
        if (vd) /* a routed item: its time includes the verifiers' */
            j->results[i].latency_ms = (double)(vpool_now_ms() - j->t_arrived);
    }
    give_scorer(j->svc, idx);
    COH_TSAN_RELEASE(w);
}

static void local_done(uv_work_t *w, int status)
{
    COH_TSAN_ACQUIRE(w);
    local_work *lw = w->data;
    job *j = lw->j;
    for (size_t k = 0; k < lw->n; k++) {
        size_t i = lw->idx[k];
        if (status != 0)
            set_item(&j->results[i], SCORE_FAILED, "%snot scored: cohort-reward is stopping%ld",
                     "", 0L);
        if (!j->done[i]) {
            j->done[i] = 1;
            j->n_done++;
        }
    }
    free(lw);
    job_check(j);
    job_unref(j);
}

/* Score items sel[0..n) on the thread pool. */
static void start_local(job *j, const size_t *sel, size_t n)
{
    if (n == 0)
        return;
    local_work *lw = malloc(sizeof *lw + n * sizeof(size_t));
    if (lw) {
        lw->j = j;
        lw->n = n;
        memcpy(lw->idx, sel, n * sizeof(size_t));
        lw->work.data = lw;
        j->refs++;
        COH_TSAN_RELEASE(&lw->work);
        if (uv_queue_work(j->svc->loop, &lw->work, local_run, local_done) == 0)
            return;
        j->refs--;
        free(lw);
    }
    for (size_t k = 0; k < n; k++) {
        set_item(&j->results[sel[k]], SCORE_FAILED, "%scohort-reward cannot queue work%ld", "",
                 0L);
        j->done[sel[k]] = 1;
        j->n_done++;
    }
}

/* Every verdict of the job is in: score the routed items locally. */
static void remote_all_done(job *j)
{
    size_t *sel = malloc(j->n * sizeof *sel), m = 0;
    if (!sel) {
        for (size_t i = 0; i < j->n; i++)
            if (j->n_routes[i] > 0 && !j->done[i]) {
                set_item(&j->results[i], SCORE_FAILED, "%sout of memory%ld", "", 0L);
                j->done[i] = 1;
                j->n_done++;
            }
        return;
    }
    for (size_t i = 0; i < j->n; i++)
        if (j->n_routes[i] > 0 && !j->done[i])
            sel[m++] = i;
    start_local(j, sel, m);
    free(sel);
}

/* vpool_done_cb, on a pool thread: hand the note to the loop. */
static void on_submission_done(void *data)
{
    sub_note *nt = data;
    service *s = nt->job->svc;
    pthread_mutex_lock(&s->mu);
    nt->next = s->notes;
    s->notes = nt;
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->notes_async);
}

static void drain_notes(service *s)
{
    pthread_mutex_lock(&s->mu);
    sub_note *nt = s->notes;
    s->notes = NULL;
    pthread_mutex_unlock(&s->mu);
    while (nt) {
        sub_note *next = nt->next;
        job *j = nt->job;
        free(nt);
        if (--j->remote_left == 0 && j->call)
            remote_all_done(j);
        job_check(j);
        job_unref(j); /* the submission's reference */
        nt = next;
    }
}

static void on_notes(uv_async_t *a) { drain_notes(a->data); }

/* ---- Score: validation and start ---------------------------------------------------------- */

typedef struct id_ref {
    const char *id;
    size_t i;
} id_ref;

static int cmp_id(const void *a, const void *b)
{
    const id_ref *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

/* Check the request as reward.proto says; on a bad one write the message and return -1. */
static int validate(const Cohort__V1__ScoreRequest *req, char *msg, size_t cap)
{
    if (req->n_items == 0) {
        snprintf(msg, cap, "ScoreRequest has no items: send 1 to %d", MAX_ITEMS);
        return -1;
    }
    if (req->n_items > MAX_ITEMS) {
        snprintf(msg, cap, "ScoreRequest has %zu items; at most %d per call", req->n_items,
                 MAX_ITEMS);
        return -1;
    }
    if (req->timeout_ms > MAX_TIMEOUT_MS) {
        snprintf(msg, cap, "timeout_ms %u is above the limit of %d ms", req->timeout_ms,
                 MAX_TIMEOUT_MS);
        return -1;
    }
    for (size_t i = 0; i < req->n_items; i++) {
        const Cohort__V1__RewardItem *it = req->items[i];
        if (!it->item_id[0]) {
            snprintf(msg, cap, "item %zu has an empty item_id (every item needs a unique one)",
                     i);
            return -1;
        }
        if (strlen(it->item_id) > MAX_ITEM_ID) {
            snprintf(msg, cap, "item %zu: item_id \"%.40s...\" is longer than %d bytes", i,
                     it->item_id, MAX_ITEM_ID);
            return -1;
        }
        if (!it->task[0]) {
            snprintf(msg, cap, "item %zu (item_id \"%.128s\") has no task name", i, it->item_id);
            return -1;
        }
        if (it->completion_num_tokens < 0) {
            snprintf(msg, cap, "item %zu (item_id \"%.128s\") has completion_num_tokens %d < 0",
                     i, it->item_id, it->completion_num_tokens);
            return -1;
        }
    }
    id_ref *ids = malloc(req->n_items * sizeof *ids);
    if (!ids) {
        snprintf(msg, cap, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < req->n_items; i++)
        ids[i] = (id_ref){req->items[i]->item_id, i};
    qsort(ids, req->n_items, sizeof *ids, cmp_id);
    int bad = 0;
    size_t first = 0, second = 0;
    for (size_t k = 1; k < req->n_items; k++)
        if (strcmp(ids[k - 1].id, ids[k].id) == 0 && (!bad || ids[k].i < second)) {
            bad = 1;
            first = ids[k - 1].i;
            second = ids[k].i;
        }
    if (bad)
        snprintf(msg, cap, "item %zu has the same item_id \"%.128s\" as item %zu (item_ids must "
                 "be unique within a request)", second, req->items[second]->item_id, first);
    free(ids);
    return bad ? -1 : 0;
}

static job *job_alloc(service *s, Cohort__V1__ScoreRequest *req)
{
    job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    size_t n = req->n_items, nv = (size_t)(s->nv > 0 ? s->nv : 1);
    j->svc = s;
    j->req = req;
    j->n = n;
    j->items = calloc(n, sizeof *j->items);
    j->budget_ms = calloc(n, sizeof *j->budget_ms);
    j->n_routes = calloc(n, sizeof *j->n_routes);
    j->done = calloc(n, 1);
    j->results = calloc(n, sizeof *j->results);
    j->verdicts = calloc(n * nv, sizeof *j->verdicts);
    j->vitems = calloc(n * nv, sizeof *j->vitems);
    j->refs = 1;
    if (!j->items || !j->budget_ms || !j->n_routes || !j->done || !j->results || !j->verdicts ||
        !j->vitems) {
        j->req = NULL;
        free(j->items);
        free(j->budget_ms);
        free(j->n_routes);
        free(j->done);
        free(j->results);
        free(j->verdicts);
        free(j->vitems);
        free(j);
        return NULL;
    }
    return j;
}

static void on_score(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    service *s = data;
    int64_t t_now = vpool_now_ms();
    int64_t caller_left = rpc_call_deadline_ms(call);
    size_t len = 0;
    const uint8_t *bytes = rpc_call_request(call, &len);
    Cohort__V1__ScoreRequest *req =
        (Cohort__V1__ScoreRequest *)rpc_unpack(&cohort__v1__score_request__descriptor, bytes, len);
    if (!req) {
        s->requests_invalid++;
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "malformed ScoreRequest: the bytes are not a cohort.v1.ScoreRequest");
        return;
    }
    char msg[400];
    if (validate(req, msg, sizeof msg)) {
        s->requests_invalid++;
        rpc_msg_free(&req->base);
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, msg);
        return;
    }
    job *j = job_alloc(s, req);
    if (!j) {
        rpc_msg_free(&req->base);
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "cohort-reward is out of memory");
        return;
    }
    j->t_arrived = t_now;
    j->call = call;
    rpc_call_on_cancel(call, on_job_cancel, j);
    uv_timer_init(s->loop, &j->timer);
    j->timer.data = j;
    j->refs++; /* the timer handle's reference, dropped in its close callback */

    /* the caller's deadline, less a margin for the reply's way back */
    int64_t cap = INT64_MAX, margin = 0;
    if (caller_left != INT64_MAX) {
        margin = caller_left / 10;
        margin = margin < 20 ? 20 : margin > 250 ? 250 : margin;
        cap = caller_left - margin;
    }
    int64_t req_budget = req->timeout_ms ? (int64_t)req->timeout_ms
                                         : (int64_t)scorer_default_timeout_ms(s->scorers[0]);
    int64_t latest = 0;
    size_t *local_sel = malloc(j->n * sizeof *local_sel), n_local = 0;
    int routes[32];
    for (size_t i = 0; i < j->n; i++) {
        const Cohort__V1__RewardItem *it = req->items[i];
        j->items[i] = (scorer_item){.task = it->task,
                                    .prompt = it->prompt,
                                    .completion = it->completion,
                                    .answer = it->answer,
                                    .metadata_json = it->metadata_json,
                                    .prompt_tokens = it->prompt_tokens,
                                    .completion_tokens = it->completion_tokens,
                                    .n_prompt_tokens = it->n_prompt_tokens,
                                    .n_completion_tokens = it->n_completion_tokens};
        int nr = scorer_routes(s->scorers[0], it->task, routes, 32);
        int64_t b = req_budget < cap ? req_budget : cap;
        for (int k = 0; k < nr && k < 32; k++) {
            int64_t rt = scorer_verifier(s->scorers[0], routes[k])->timeout_ms;
            b = rt < b ? rt : b;
        }
        j->budget_ms[i] = (int)b;
        j->items[i].timeout_ms = b > 0 ? (int)b : 1; /* the code sandbox ends by it too */
        if (b > latest)
            latest = b;
        if (it->metadata_json[0]) {
            cJSON *m = cJSON_Parse(it->metadata_json);
            if (!m) {
                const char *at = cJSON_GetErrorPtr();
                long off = at && at >= it->metadata_json ? (long)(at - it->metadata_json) : 0;
                set_item(&j->results[i], SCORE_FAILED,
                         "metadata_json is not valid JSON (%.40s... at byte %ld); the item "
                         "was not sent to any verifier",
                         it->metadata_json, off);
                j->done[i] = 1;
                j->n_done++;
                continue;
            }
            cJSON_Delete(m);
        }
        if (b <= 0) {
            set_item(&j->results[i], SCORE_TIMED_OUT,
                     "%sthe call's deadline left no time to score (%ld ms left before the "
                     "reply margin)",
                     "", (long)b);
            j->done[i] = 1;
            j->n_done++;
            continue;
        }
        j->n_routes[i] = nr;
        if (nr == 0 && local_sel)
            local_sel[n_local++] = i;
    }
    /* remote: one submission per verifier with the job's items routed to it */
    size_t used = 0;
    for (int v = 0; v < s->nv; v++) {
        size_t first = used;
        int64_t dl = INT64_MAX;
        int budget = 0;
        for (size_t i = 0; i < j->n; i++) {
            if (j->done[i] || j->n_routes[i] == 0 ||
                strcmp(scorer_verifier(s->scorers[0], v)->task, req->items[i]->task) != 0)
                continue;
            j->vitems[used].item = &j->items[i];
            j->vitems[used].verdict = &j->verdicts[i * (size_t)s->nv + (size_t)v];
            used++;
            if (t_now + j->budget_ms[i] < dl) {
                dl = t_now + j->budget_ms[i];
                budget = j->budget_ms[i];
            }
        }
        if (used == first)
            continue;
        sub_note *nt = calloc(1, sizeof *nt);
        if (nt) {
            nt->job = j;
            j->refs++;
            j->remote_left++;
            if (vpool_submit(s->pool, v, &j->vitems[first], used - first, dl, budget,
                             on_submission_done, nt) == COH_OK)
                continue;
            j->refs--;
            j->remote_left--;
            free(nt);
        }
        for (size_t k = first; k < used; k++) {
            j->vitems[k].verdict->status = SCORE_FAILED;
            snprintf(j->vitems[k].verdict->error, sizeof j->vitems[k].verdict->error,
                     "could not be called: out of memory");
        }
    }
    if (!local_sel) {
        for (size_t i = 0; i < j->n; i++)
            if (!j->done[i] && j->n_routes[i] == 0) {
                set_item(&j->results[i], SCORE_FAILED, "%sout of memory%ld", "", 0L);
                j->done[i] = 1;
                j->n_done++;
            }
    }
    start_local(j, local_sel, n_local);
    free(local_sel);
    if (j->remote_left == 0)
        remote_all_done(j);
    /* the reply timer: after the last item deadline, and before the caller's deadline */
    int64_t at = latest + (caller_left != INT64_MAX ? margin / 2 : REPLY_GRACE_MS);
    at -= vpool_now_ms() - t_now;
    uv_timer_start(&j->timer, on_job_timer, at > 0 ? (uint64_t)at : 0, 0);
    job_check(j);
}

/* ---- Status and metrics -------------------------------------------------------------------- */

static void on_status(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    service *s = data;
    Cohort__V1__RewardStatus st = COHORT__V1__REWARD_STATUS__INIT;
    st.requests = (uint64_t)s->requests;
    st.requests_invalid = (uint64_t)s->requests_invalid;
    st.items = (uint64_t)s->items;
    st.items_failed = (uint64_t)s->items_failed;
    st.items_timed_out = (uint64_t)s->items_timed_out;
    st.items_unknown_task = (uint64_t)s->items_unknown;
    st.uptime_s = (double)(vpool_now_ms() - (int64_t)s->t_start) / 1e3;
    int nv = s->nv;
    vpool_verifier_stats *vs = calloc((size_t)(nv ? nv : 1), sizeof *vs);
    Cohort__V1__VerifierStatus *v = calloc((size_t)(nv ? nv : 1), sizeof *v);
    Cohort__V1__VerifierStatus **vp = calloc((size_t)(nv ? nv : 1), sizeof *vp);
    Cohort__V1__VerifierEndpointStatus *e =
        calloc((size_t)(nv ? nv : 1) * SCORER_MAX_ENDPOINTS, sizeof *e);
    Cohort__V1__VerifierEndpointStatus **ep =
        calloc((size_t)(nv ? nv : 1) * SCORER_MAX_ENDPOINTS, sizeof *ep);
    if (!vs || !v || !vp || !e || !ep) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "cohort-reward is out of memory");
        goto out;
    }
    for (int i = 0; i < nv; i++) {
        vpool_stats(s->pool, i, &vs[i]);
        const scorer_verifier_config *cfg = scorer_verifier(s->scorers[0], i);
        Cohort__V1__VerifierStatus *o = &v[i];
        cohort__v1__verifier_status__init(o);
        o->name = (char *)vs[i].name;
        o->task = (char *)vs[i].task;
        o->items = (uint64_t)vs[i].items;
        o->ok = (uint64_t)vs[i].ok;
        o->failed = (uint64_t)vs[i].failed;
        o->timed_out = (uint64_t)vs[i].timed_out;
        o->no_endpoint = (uint64_t)vs[i].no_endpoint;
        o->in_flight = (uint32_t)vs[i].in_flight;
        o->ejections = (uint64_t)vs[i].ejections;
        o->latency_p50_ms = vs[i].latency_p50_ms;
        o->latency_p99_ms = vs[i].latency_p99_ms;
        o->timeout_ms = (uint32_t)cfg->timeout_ms;
        o->max_in_flight = (uint32_t)cfg->max_in_flight;
        o->weight = cfg->weight;
        o->n_endpoints = (size_t)vs[i].n_endpoints;
        o->endpoints = ep + (size_t)i * SCORER_MAX_ENDPOINTS;
        for (int k = 0; k < vs[i].n_endpoints; k++) {
            const vpool_endpoint_stats *x = &vs[i].ep[k];
            Cohort__V1__VerifierEndpointStatus *y = &e[(size_t)i * SCORER_MAX_ENDPOINTS + (size_t)k];
            cohort__v1__verifier_endpoint_status__init(y);
            y->address = (char *)x->address;
            y->state = (char *)x->state;
            y->in_rotation = x->in_rotation;
            y->batch = x->batch;
            y->in_flight = (uint32_t)x->in_flight;
            y->queued = (uint32_t)x->queued;
            y->calls = (uint64_t)x->calls;
            y->ok = (uint64_t)x->ok;
            y->errors = (uint64_t)x->errors;
            y->timeouts = (uint64_t)x->timeouts;
            y->ejections = (uint64_t)x->ejections;
            y->latency_p50_ms = x->latency_p50_ms;
            y->latency_p99_ms = x->latency_p99_ms;
            o->endpoints[k] = y;
        }
        vp[i] = o;
    }
    st.n_verifiers = (size_t)nv;
    st.verifiers = vp;
    rpc_call_reply_msg(call, &st.base);
out:
    free(vs);
    free(v);
    free(vp);
    free(e);
    free(ep);
}

/* Append printf output to a growing buffer; *ok drops to 0 on allocation failure. */
static void bprintf(char **buf, size_t *len, size_t *cap, int *ok, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void bprintf(char **buf, size_t *len, size_t *cap, int *ok, const char *fmt, ...)
{
    if (!*ok)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            *ok = 0;
            return;
        }
        if ((size_t)n < *cap - *len) {
            *len += (size_t)n;
            return;
        }
        size_t ncap = *cap * 2 + (size_t)n;
        char *nb = realloc(*buf, ncap);
        if (!nb) {
            *ok = 0;
            return;
        }
        *buf = nb;
        *cap = ncap;
    }
}

/* Prometheus label value: backslash, quote and newline escaped (into out, cap bytes). */
static const char *label(const char *v, char *out, size_t cap)
{
    size_t o = 0;
    for (; *v && o + 3 < cap; v++) {
        if (*v == '\\' || *v == '"' || *v == '\n') {
            out[o++] = '\\';
            out[o++] = *v == '\n' ? 'n' : *v;
        } else {
            out[o++] = *v;
        }
    }
    out[o] = '\0';
    return out;
}

/* The Prometheus page (text format 0.0.4), documented in the README. */
static char *render_metrics(service *s, size_t *len_out)
{
    size_t len = 0, cap = 4096;
    int ok = 1;
    char *b = malloc(cap);
    if (!b)
        return NULL;
    b[0] = '\0';
#define P(...) bprintf(&b, &len, &cap, &ok, __VA_ARGS__)
    P("# HELP cohort_reward_requests_total Score calls answered.\n"
      "# TYPE cohort_reward_requests_total counter\ncohort_reward_requests_total %ld\n",
      s->requests);
    P("# HELP cohort_reward_requests_invalid_total Score calls refused as INVALID_ARGUMENT.\n"
      "# TYPE cohort_reward_requests_invalid_total counter\n"
      "cohort_reward_requests_invalid_total %ld\n", s->requests_invalid);
    P("# HELP cohort_reward_items_total Items answered, by status.\n"
      "# TYPE cohort_reward_items_total counter\n"
      "cohort_reward_items_total{status=\"ok\"} %ld\n"
      "cohort_reward_items_total{status=\"failed\"} %ld\n"
      "cohort_reward_items_total{status=\"timed_out\"} %ld\n"
      "cohort_reward_items_total{status=\"unknown_task\"} %ld\n",
      s->items - s->items_failed - s->items_timed_out - s->items_unknown, s->items_failed,
      s->items_timed_out, s->items_unknown);
    vpool_verifier_stats *vs = calloc((size_t)(s->nv ? s->nv : 1), sizeof *vs);
    if (!vs) {
        free(b);
        return NULL;
    }
    for (int i = 0; i < s->nv; i++)
        vpool_stats(s->pool, i, &vs[i]);
    static const struct {
        const char *name, *type, *help;
        int per_ep;
    } fam[] = {
        {"cohort_reward_verifier_items_total", "counter", "Items sent to the verifier, by outcome.", 0},
        {"cohort_reward_verifier_latency_ms", "gauge", "Per-item latency of recent items (submit to verdict), by quantile.", 0},
        {"cohort_reward_verifier_in_flight", "gauge", "Calls in flight to the verifier.", 0},
        {"cohort_reward_endpoint_up", "gauge", "1 while the endpoint is in the rotation.", 1},
        {"cohort_reward_endpoint_calls_total", "counter", "Calls to the endpoint, by outcome.", 1},
        {"cohort_reward_endpoint_ejections_total", "counter", "Times the endpoint was taken out of the rotation.", 1},
        {"cohort_reward_endpoint_in_flight", "gauge", "Calls in flight to the endpoint.", 1},
        {"cohort_reward_endpoint_queued", "gauge", "Calls waiting for an in-flight slot.", 1},
        {"cohort_reward_endpoint_latency_ms", "gauge", "Latency of recent calls, by quantile.", 1},
    };
    for (size_t f = 0; f < sizeof fam / sizeof *fam && s->nv > 0; f++) {
        P("# HELP %s %s\n# TYPE %s %s\n", fam[f].name, fam[f].help, fam[f].name, fam[f].type);
        for (int i = 0; i < s->nv; i++) {
            const vpool_verifier_stats *x = &vs[i];
            char vn[160];
            label(x->name, vn, sizeof vn);
            if (!fam[f].per_ep) {
                const char *nm = fam[f].name;
                if (f == 0) {
                    P("%s{verifier=\"%s\",outcome=\"ok\"} %ld\n", nm, vn, x->ok);
                    P("%s{verifier=\"%s\",outcome=\"failed\"} %ld\n", nm, vn, x->failed);
                    P("%s{verifier=\"%s\",outcome=\"timed_out\"} %ld\n", nm, vn, x->timed_out);
                    P("%s{verifier=\"%s\",outcome=\"no_endpoint\"} %ld\n", nm, vn,
                      x->no_endpoint);
                } else if (f == 1) {
                    P("%s{verifier=\"%s\",quantile=\"0.5\"} %.17g\n", nm, vn, x->latency_p50_ms);
                    P("%s{verifier=\"%s\",quantile=\"0.99\"} %.17g\n", nm, vn, x->latency_p99_ms);
                } else {
                    P("%s{verifier=\"%s\"} %d\n", nm, vn, x->in_flight);
                }
                continue;
            }
            for (int k = 0; k < x->n_endpoints; k++) {
                const vpool_endpoint_stats *y = &x->ep[k];
                char en[600];
                label(y->address, en, sizeof en);
                const char *nm = fam[f].name;
                if (f == 3)
                    P("%s{verifier=\"%s\",endpoint=\"%s\",state=\"%s\"} %d\n", nm, vn, en,
                      y->state, y->in_rotation);
                else if (f == 4) {
                    P("%s{verifier=\"%s\",endpoint=\"%s\",outcome=\"ok\"} %ld\n", nm, vn, en, y->ok);
                    P("%s{verifier=\"%s\",endpoint=\"%s\",outcome=\"error\"} %ld\n", nm, vn, en,
                      y->errors);
                    P("%s{verifier=\"%s\",endpoint=\"%s\",outcome=\"timeout\"} %ld\n", nm, vn, en,
                      y->timeouts);
                } else if (f == 5)
                    P("%s{verifier=\"%s\",endpoint=\"%s\"} %ld\n", nm, vn, en, y->ejections);
                else if (f == 6)
                    P("%s{verifier=\"%s\",endpoint=\"%s\"} %d\n", nm, vn, en, y->in_flight);
                else if (f == 7)
                    P("%s{verifier=\"%s\",endpoint=\"%s\"} %d\n", nm, vn, en, y->queued);
                else {
                    P("%s{verifier=\"%s\",endpoint=\"%s\",quantile=\"0.5\"} %.17g\n", nm, vn, en,
                      y->latency_p50_ms);
                    P("%s{verifier=\"%s\",endpoint=\"%s\",quantile=\"0.99\"} %.17g\n", nm, vn, en,
                      y->latency_p99_ms);
                }
            }
        }
    }
#undef P
    free(vs);
    if (!ok) {
        free(b);
        return NULL;
    }
    *len_out = len;
    return b;
}

static void publish_metrics(service *s)
{
    if (!s->prom)
        return;
    size_t len = 0;
    char *page = render_metrics(s, &len);
    if (page) {
        coh_err err;
        prom_server_publish(s->prom, page, len, &err);
        free(page);
    }
}

static void on_prom_timer(uv_timer_t *t) { publish_metrics(t->data); }

/* ---- lifecycle ---------------------------------------------------------------------------- */

static void log_stats(service *s)
{
    fprintf(stderr,
            "cohort-reward: %ld requests, %ld items (%ld failed, %ld timed out, %ld unknown "
            "task), %ld requests refused\n",
            s->requests, s->items, s->items_failed, s->items_timed_out, s->items_unknown,
            s->requests_invalid);
    for (int v = 0; s->pool && v < s->nv; v++) {
        vpool_verifier_stats st;
        vpool_stats(s->pool, v, &st);
        fprintf(stderr,
                "cohort-reward: verifier %s (task %s): %ld calls, %ld ok, %ld failed, %ld timed "
                "out, latency p50 %.1f ms p99 %.1f ms, %ld ejections\n",
                st.name, st.task, st.items, st.ok, st.failed, st.timed_out, st.latency_p50_ms,
                st.latency_p99_ms, st.ejections);
    }
}

static void on_stats_timer(uv_timer_t *t) { log_stats(t->data); }

static void on_server_done(rpc_server *srv, void *data)
{
    (void)srv;
    service *s = data;
    uv_close((uv_handle_t *)&s->stats_timer, NULL);
    uv_close((uv_handle_t *)&s->prom_timer, NULL);
    log_stats(s);
    /* every queued verifier call is settled and every running one ends by its deadline */
    vpool_destroy(s->pool);
    s->pool = NULL;
    drain_notes(s);
    uv_close((uv_handle_t *)&s->notes_async, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    service *s = h->data;
    if (s->stopping)
        return;
    s->stopping = 1;
    fprintf(stderr, "cohort-reward: signal %d, shutting down\n", signum);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_timer_stop(&s->stats_timer);
    uv_timer_stop(&s->prom_timer);
    rpc_server_shutdown(s->server, on_server_done, s);
}

#define STATS_EVERY_MAX 86400 /* --stats-every: at most a day (0 = never) */

static void usage(FILE *f)
{
    fprintf(f, "usage: cohort-reward [--listen HOST:PORT] [--config reward.json] [--workers N]\n"
               "                     [--token T] [--tls-cert PEM --tls-key PEM]\n"
               "                     [--verifier-token T] [--stats-every SECONDS]\n"
               "                     [--metrics-listen HOST:PORT]\n"
               "Serves cohort.v1.Reward (default 0.0.0.0:50052) and grpc.health.v1.Health.\n"
               "The config routes tasks to custom Verifier services (per verifier: endpoints,\n"
               "weight, timeout_ms, max_in_flight, token_file / token_env, tls_ca_file), sets\n"
               "component weights and an optional reward model (see the README, \"Services\").\n"
               "--verifier-token is the token for verifiers that have none of their own.\n"
               "--metrics-listen serves a Prometheus page at http://HOST:PORT/metrics.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", 1, 0, 'l'},         {"config", 1, 0, 'c'},      {"workers", 1, 0, 'w'},
        {"token", 1, 0, 't'},          {"tls-cert", 1, 0, 'C'},    {"tls-key", 1, 0, 'K'},
        {"verifier-token", 1, 0, 'v'}, {"stats-every", 1, 0, 's'}, {"metrics-listen", 1, 0, 'm'},
        {"help", 0, 0, 'h'},           {0, 0, 0, 0}};
    const char *listen = "0.0.0.0:50052", *config = NULL, *token = getenv("COHORT_TOKEN");
    const char *cert = NULL, *key = NULL, *vtoken = NULL, *metrics = NULL;
    int workers = 4, stats_every = 30, opt;
    coh_err aerr;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case 'l':
            listen = optarg;
            bad = cli_check_address("--listen", optarg, 0, &aerr);
            break;
        case 'c': config = optarg; break;
        case 'w':
            bad = cli_parse_int("--workers", optarg, 1, MAX_SCORERS, &workers, &aerr);
            break;
        case 't': token = optarg; break;
        case 'C': cert = optarg; break;
        case 'K': key = optarg; break;
        case 'v': vtoken = optarg; break;
        case 'm':
            metrics = optarg;
            bad = cli_check_address("--metrics-listen", optarg, 0, &aerr);
            break;
        case 's':
            bad = cli_parse_int("--stats-every", optarg, 0, STATS_EVERY_MAX, &stats_every, &aerr);
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (bad) {
            fprintf(stderr, "cohort-reward: %s\n", aerr.msg);
            return 2;
        }
    }
    char wbuf[16];
    snprintf(wbuf, sizeof wbuf, "%d", workers);
    setenv("UV_THREADPOOL_SIZE", wbuf, 1); /* read when the pool first starts */

    coh_err err;
    coh_err_clear(&err);
    char *cfg_text = NULL;
    size_t cfg_len = 0;
    if (config && fs_read_all(config, &cfg_text, &cfg_len, &err)) {
        fprintf(stderr, "cohort-reward: %s\n", err.msg);
        return 1;
    }
    rpc_global_init();
    static service s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    s.net.default_token = vtoken;
    s.t_start = (double)vpool_now_ms();
    int rc = 1, async_open = 0;
    for (int i = 0; i < workers; i++) {
        /* remote verifiers are called by the pool, never by the scorers themselves */
        if (scorer_create(cfg_text, no_direct_call, NULL, &s.scorers[i], &err)) {
            fprintf(stderr, "cohort-reward: %s\n", err.msg);
            goto out;
        }
        s.n_scorers++;
    }
    s.nv = scorer_num_verifiers(s.scorers[0]);
    vpool_net net = {.ctx = &s.net, .open = net_open, .close = net_close, .call = net_call,
                     .health = net_health};
    if (vpool_create(s.scorers[0], &net, scorer_health_check_ms(s.scorers[0]), &s.pool, &err)) {
        fprintf(stderr, "cohort-reward: %s\n", err.msg);
        goto out;
    }
    if (metrics && prom_server_start(metrics, &s.prom, &err)) {
        fprintf(stderr, "cohort-reward: --metrics-listen: %s\n", err.msg);
        goto out;
    }
    s.loop = uv_default_loop();
    uv_async_init(s.loop, &s.notes_async, on_notes);
    s.notes_async.data = &s;
    async_open = 1;
    rpc_server_config sc = {.listen_address = listen, .max_receive_bytes = 16 << 20,
                            .tls_cert_file = cert, .tls_key_file = key, .bearer_token = token};
    if (rpc_server_create(s.loop, &sc, &s.server, &err) ||
        rpc_server_add_method(s.server, "/cohort.v1.Reward/Score", RPC_UNARY, on_score, &s,
                              &err) ||
        rpc_server_add_method(s.server, "/cohort.v1.Reward/Status", RPC_UNARY, on_status, &s,
                              &err) ||
        rpc_health_register(s.server, &err) || rpc_server_start(s.server, &err)) {
        fprintf(stderr, "cohort-reward: %s\n", err.msg);
        goto out;
    }
    rpc_health_set(s.server, "cohort.v1.Reward", 1);
    fprintf(stderr, "cohort-reward: serving cohort.v1.Reward on port %d (%d workers, %d custom "
                    "verifiers)\n",
            rpc_server_port(s.server), workers, s.nv);
    if (s.prom)
        fprintf(stderr, "cohort-reward: Prometheus metrics on port %d (/metrics)\n",
                prom_server_port(s.prom));
    uv_signal_init(s.loop, &s.sigint);
    uv_signal_init(s.loop, &s.sigterm);
    s.sigint.data = s.sigterm.data = &s;
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    uv_timer_init(s.loop, &s.stats_timer);
    s.stats_timer.data = &s;
    if (stats_every > 0)
        uv_timer_start(&s.stats_timer, on_stats_timer, (uint64_t)stats_every * 1000,
                       (uint64_t)stats_every * 1000);
    uv_timer_init(s.loop, &s.prom_timer);
    s.prom_timer.data = &s;
    if (s.prom) {
        publish_metrics(&s);
        uv_timer_start(&s.prom_timer, on_prom_timer, 500, 500);
    }
    async_open = 0; /* closed by on_server_done from here on */
    uv_run(s.loop, UV_RUN_DEFAULT);
    rc = 0;
out:
    if (async_open) {
        uv_close((uv_handle_t *)&s.notes_async, NULL);
        uv_run(s.loop, UV_RUN_DEFAULT);
    }
    vpool_destroy(s.pool);
    rpc_server_destroy(s.server);
    prom_server_stop(s.prom);
    if (s.loop)
        uv_loop_close(s.loop);
    for (int i = 0; i < s.n_scorers; i++)
        scorer_destroy(s.scorers[i]);
    free(cfg_text);
    rpc_global_shutdown();
    return rc;
}
