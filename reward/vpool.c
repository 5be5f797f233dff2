/* vpool.c - custom Verifier endpoints: queues, worker threads, health, metrics (vpool.h).
 *
 * One mutex guards the whole pool (queues, states, counters); it is never held across a
 * network call. Each endpoint has a FIFO of units (one unit = one call: a single item, or a
 * contiguous range of a submission's items for VerifyBatch) and a set of worker threads,
 * created on demand up to max_in_flight, that sleep on the endpoint's condition variable.
 * A submission counts its unsettled units; the thread that settles the last one runs done.
 */
#include "vpool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LAT_RING 512 /* latency samples kept for percentiles */
#define MSG_LEN 200

typedef struct submission {
    vpool_item *items;
    size_t n;
    int64_t deadline;
    int budget_ms;
    int v;
    size_t units_left; /* guarded by the pool mutex */
    int64_t t0;
    vpool_done_cb done;
    void *data;
} submission;

typedef struct unit {
    struct unit *next;
    submission *sub;
    size_t first, n;
    int batch;      /* send as VerifyBatch */
    unsigned tried; /* endpoints already tried (bit per endpoint) */
} unit;

typedef struct lat_ring {
    double v[LAT_RING];
    int n, next;
} lat_ring;

typedef enum ep_state { EP_UNKNOWN, EP_SERVING, EP_NOT_SERVING, EP_UNREACHABLE } ep_state;

typedef struct endpoint {
    struct vpool *pool;
    int v, e;
    const char *addr;
    void *conn;
    ep_state state;
    int batch_ok; /* 0 once VerifyBatch answered UNIMPLEMENTED */
    unit *head, *tail;
    int queued, n_threads, n_idle, in_flight;
    pthread_t threads[64];
    pthread_cond_t cv;
    long calls, ok, errors, timeouts, ejections;
    lat_ring lat;
} endpoint;

typedef struct vverifier {
    const scorer_verifier_config *cfg;
    int rr; /* next endpoint in the rotation */
    endpoint ep[SCORER_MAX_ENDPOINTS];
    long items, ok, failed, timed_out, no_endpoint;
    lat_ring lat;
} vverifier;

struct vpool {
    pthread_mutex_t mu;
    pthread_cond_t health_cv;
    vpool_net net;
    int n;
    vverifier *v;
    int stopping;
    int health_ms;
    int health_started;
    pthread_t health_thread;
};

static const char *const state_names[] = {"unknown", "serving", "not_serving", "unreachable"};

int64_t vpool_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int in_rotation(const endpoint *ep)
{
    return ep->state == EP_UNKNOWN || ep->state == EP_SERVING;
}

static void lat_add(lat_ring *r, double ms)
{
    r->v[r->next] = ms;
    r->next = (r->next + 1) % LAT_RING;
    if (r->n < LAT_RING)
        r->n++;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* p50 and p99 (nearest rank) of the ring. */
static void lat_pct(const lat_ring *r, double *p50, double *p99)
{
    *p50 = *p99 = 0.0;
    if (r->n == 0)
        return;
    double tmp[LAT_RING];
    memcpy(tmp, r->v, sizeof(double) * (size_t)r->n);
    qsort(tmp, (size_t)r->n, sizeof(double), cmp_double);
    int i50 = (r->n * 50 + 99) / 100 - 1, i99 = (r->n * 99 + 99) / 100 - 1;
    *p50 = tmp[i50 < 0 ? 0 : i50];
    *p99 = tmp[i99 < 0 ? 0 : i99];
}

/* Move an endpoint to a new state (mutex held); leaving the rotation is an ejection. */
static void set_state(endpoint *ep, ep_state st, const char *why)
{
    if (ep->state == st)
        return;
    int was = in_rotation(ep);
    ep->state = st;
    if (was && !in_rotation(ep)) {
        ep->ejections++;
        fprintf(stderr, "cohort-reward: verifier %s endpoint %s taken out of rotation (%s)\n",
                ep->pool->v[ep->v].cfg->name, ep->addr, why);
    } else if (!was && in_rotation(ep)) {
        fprintf(stderr, "cohort-reward: verifier %s endpoint %s back in rotation (%s)\n",
                ep->pool->v[ep->v].cfg->name, ep->addr, why);
    }
}

/* ---- settling ------------------------------------------------------------------------- */

/* Write the verdicts of u (mutex NOT held), then count the unit settled; runs done when it
 * was the submission's last. Frees u. */
static void settle(vpool *p, unit *u, score_status st, const scorer_remote_reply *replies,
                   const char *msg)
{
    submission *sub = u->sub;
    for (size_t i = 0; i < u->n; i++) {
        scorer_verdict *vd = sub->items[u->first + i].verdict;
        memset(vd, 0, sizeof *vd);
        vd->status = st;
        if (st == SCORE_OK)
            vd->reply = replies[i];
        else
            snprintf(vd->error, sizeof vd->error, "%s", msg);
    }
    double dt = (double)(vpool_now_ms() - sub->t0);
    pthread_mutex_lock(&p->mu);
    vverifier *vv = &p->v[sub->v];
    for (size_t i = 0; i < u->n; i++)
        lat_add(&vv->lat, dt);
    vv->ok += st == SCORE_OK ? (long)u->n : 0;
    vv->timed_out += st == SCORE_TIMED_OUT ? (long)u->n : 0;
    vv->failed += st == SCORE_FAILED || st == SCORE_UNKNOWN_TASK ? (long)u->n : 0;
    int last = --sub->units_left == 0;
    pthread_mutex_unlock(&p->mu);
    free(u);
    if (last) {
        sub->done(sub->data);
        free(sub);
    }
}

static void settle_timed_out(vpool *p, unit *u)
{
    char msg[MSG_LEN];
    snprintf(msg, sizeof msg, "gave no answer within %d ms", u->sub->budget_ms);
    settle(p, u, SCORE_TIMED_OUT, NULL, msg);
}

/* ---- queues --------------------------------------------------------------------------- */

static void *worker_main(void *arg);

/* Append u to ep's queue and make sure a thread will take it (mutex held). */
static void enqueue(endpoint *ep, unit *u, int at_head)
{
    u->next = NULL;
    if (at_head) {
        u->next = ep->head;
        ep->head = u;
        if (!ep->tail)
            ep->tail = u;
    } else {
        if (ep->tail)
            ep->tail->next = u;
        else
            ep->head = u;
        ep->tail = u;
    }
    ep->queued++;
    int max = ep->pool->v[ep->v].cfg->max_in_flight;
    if (ep->n_idle < ep->queued && ep->n_threads < max && ep->n_threads < 64) {
        if (pthread_create(&ep->threads[ep->n_threads], NULL, worker_main, ep) == 0) {
            ep->n_threads++;
            ep->n_idle++;
        }
    }
    pthread_cond_signal(&ep->cv);
}

/* The next endpoint of verifier vv in the rotation not in the mask `tried`, or NULL. */
static endpoint *pick(vverifier *vv, unsigned tried)
{
    int n = vv->cfg->n_endpoints;
    for (int k = 0; k < n; k++) {
        int e = (vv->rr + k) % n;
        if (!(tried & (1u << e)) && in_rotation(&vv->ep[e])) {
            vv->rr = (e + 1) % n;
            return &vv->ep[e];
        }
    }
    return NULL;
}

static void describe_endpoints(const vverifier *vv, char *buf, size_t cap)
{
    size_t o = (size_t)snprintf(buf, cap, "has no serving endpoint (");
    for (int e = 0; e < vv->cfg->n_endpoints && o < cap; e++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%s %s", e ? ", " : "", vv->ep[e].addr,
                              state_names[vv->ep[e].state]);
    if (o < cap)
        snprintf(buf + o, cap - o, ")");
}

/* ---- one call ------------------------------------------------------------------------- */

/* Split a batch unit into single-item units queued at the head of ep (mutex held). Out of
 * memory, the items not split off stay in u as a batch: tried again until their deadline. */
static void split_unit(endpoint *ep, unit *u)
{
    for (size_t i = u->n; i-- > 1;) {
        unit *one = malloc(sizeof *one);
        if (!one)
            break;
        *one = *u;
        one->first = u->first + i;
        one->n = 1;
        one->batch = 0;
        u->n--;
        /* the submission now has one more unit to settle */
        u->sub->units_left++;
        enqueue(ep, one, 1);
    }
    u->batch = u->n > 1; /* only when an allocation failed */
    enqueue(ep, u, 1);
}

static void run_unit(vpool *p, endpoint *ep, unit *u)
{
    submission *sub = u->sub;
    int64_t left = sub->deadline - vpool_now_ms();
    if (left <= 0) {
        settle_timed_out(p, u);
        return;
    }
    const scorer_item **its = malloc(u->n * sizeof *its);
    scorer_remote_reply *replies = calloc(u->n, sizeof *replies);
    if (!its || !replies) {
        free(its);
        free(replies);
        settle(p, u, SCORE_FAILED, NULL, "out of memory in cohort-reward");
        return;
    }
    for (size_t i = 0; i < u->n; i++)
        its[i] = sub->items[u->first + i].item;
    char msg[MSG_LEN] = "";
    int64_t t0 = vpool_now_ms();
    vpool_code rc = p->net.call(p->net.ctx, ep->conn, its, u->n, u->batch, left, replies, msg,
                                sizeof msg);
    double dt = (double)(vpool_now_ms() - t0);
    free(its);

    pthread_mutex_lock(&p->mu);
    ep->calls++;
    lat_add(&ep->lat, dt);
    if (rc == VPOOL_OK)
        ep->ok++;
    else if (rc == VPOOL_TIMED_OUT)
        ep->timeouts++;
    else if (rc != VPOOL_UNIMPLEMENTED || !u->batch)
        ep->errors++;
    if (rc == VPOOL_UNIMPLEMENTED && u->batch && !p->stopping) {
        /* no VerifyBatch there: remember it and send the items one by one */
        if (ep->batch_ok)
            fprintf(stderr, "cohort-reward: verifier %s endpoint %s has no VerifyBatch; "
                            "using Verify\n", p->v[ep->v].cfg->name, ep->addr);
        ep->batch_ok = 0;
        split_unit(ep, u);
        pthread_mutex_unlock(&p->mu);
        free(replies);
        return;
    }
    if (rc == VPOOL_UNAVAILABLE) {
        set_state(ep, EP_UNREACHABLE, "a call found it unavailable");
        u->tried |= 1u << ep->e;
        endpoint *next = NULL;
        if (!p->stopping && sub->deadline - vpool_now_ms() > 0)
            next = pick(&p->v[ep->v], u->tried);
        if (next) {
            u->batch = u->n > 1 && next->batch_ok;
            if (u->n > 1 && !u->batch) {
                split_unit(next, u);
            } else {
                enqueue(next, u, 1);
            }
            pthread_mutex_unlock(&p->mu);
            free(replies);
            return;
        }
    }
    pthread_mutex_unlock(&p->mu);

    char why[MSG_LEN + 64];
    switch (rc) {
    case VPOOL_OK:
        settle(p, u, SCORE_OK, replies, "");
        break;
    case VPOOL_TIMED_OUT:
        settle_timed_out(p, u);
        break;
    case VPOOL_NOT_FOUND:
        settle(p, u, SCORE_UNKNOWN_TASK, NULL, msg);
        break;
    default:
        snprintf(why, sizeof why, "failed: %s", msg);
        settle(p, u, SCORE_FAILED, NULL, why);
        break;
    }
    free(replies);
}

static void *worker_main(void *arg)
{
    endpoint *ep = arg;
    vpool *p = ep->pool;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!ep->head && !p->stopping)
            pthread_cond_wait(&ep->cv, &p->mu);
        if (!ep->head)
            break; /* stopping and nothing left */
        unit *u = ep->head;
        ep->head = u->next;
        if (!ep->head)
            ep->tail = NULL;
        ep->queued--;
        ep->n_idle--;
        ep->in_flight++;
        int stopping = p->stopping;
        pthread_mutex_unlock(&p->mu);
        if (stopping)
            settle(p, u, SCORE_FAILED, NULL, "not called: cohort-reward is shutting down");
        else
            run_unit(p, ep, u);
        pthread_mutex_lock(&p->mu);
        ep->in_flight--;
        ep->n_idle++;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- health --------------------------------------------------------------------------- */

static void *health_main(void *arg)
{
    vpool *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        for (int v = 0; v < p->n && !p->stopping; v++)
            for (int e = 0; e < p->v[v].cfg->n_endpoints && !p->stopping; e++) {
                endpoint *ep = &p->v[v].ep[e];
                pthread_mutex_unlock(&p->mu);
                int64_t to = p->health_ms < 1000 ? (p->health_ms > 100 ? p->health_ms : 100)
                                                 : 1000;
                vpool_health h = p->net.health(p->net.ctx, ep->conn, to);
                pthread_mutex_lock(&p->mu);
                switch (h) {
                case VPOOL_HEALTH_SERVING:
                    set_state(ep, EP_SERVING, "health: SERVING");
                    break;
                case VPOOL_HEALTH_NOT_SERVING:
                    set_state(ep, EP_NOT_SERVING, "health: NOT_SERVING");
                    break;
                case VPOOL_HEALTH_UNREACHABLE:
                    set_state(ep, EP_UNREACHABLE, "health: unreachable");
                    break;
                case VPOOL_HEALTH_NONE:
                    /* reachable, no health service: serving as far as we can tell */
                    set_state(ep, EP_SERVING, "reachable, no health service");
                    break;
                }
            }
        if (p->stopping)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = (int64_t)ts.tv_nsec + (int64_t)p->health_ms * 1000000;
        ts.tv_sec += (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&p->health_cv, &p->mu, &ts);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

int vpool_create(const scorer *s, const vpool_net *net, int health_interval_ms, vpool **out,
                 coh_err *err)
{
    *out = NULL;
    vpool *p = calloc(1, sizeof *p);
    int n = scorer_num_verifiers(s);
    if (!p || !(p->v = calloc(n > 0 ? (size_t)n : 1, sizeof *p->v))) {
        free(p);
        return coh_fail(err, COH_ENOMEM, "out of memory for the verifier pool");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->health_cv, NULL);
    p->net = *net;
    p->n = n;
    p->health_ms = health_interval_ms;
    int rc = COH_OK;
    for (int v = 0; v < n; v++) {
        vverifier *vv = &p->v[v];
        vv->cfg = scorer_verifier(s, v);
        for (int e = 0; e < vv->cfg->n_endpoints; e++) {
            endpoint *ep = &vv->ep[e];
            ep->pool = p;
            ep->v = v;
            ep->e = e;
            ep->addr = vv->cfg->endpoints[e];
            ep->batch_ok = 1;
            pthread_cond_init(&ep->cv, NULL);
            if (!rc && !(ep->conn = net->open(net->ctx, vv->cfg, ep->addr, err)))
                rc = coh_wrap(err, err ? err->code : COH_EIO, "verifier %s endpoint %s",
                              vv->cfg->name, ep->addr);
        }
    }
    if (!rc && n > 0 && health_interval_ms > 0) {
        if (pthread_create(&p->health_thread, NULL, health_main, p) != 0)
            rc = coh_fail(err, COH_EIO, "cannot start the verifier health thread");
        else
            p->health_started = 1;
    }
    if (rc) {
        vpool_destroy(p);
        return rc;
    }
    *out = p;
    return COH_OK;
}

void vpool_destroy(vpool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->health_cv);
    for (int v = 0; v < p->n; v++)
        for (int e = 0; e < p->v[v].cfg->n_endpoints; e++)
            pthread_cond_broadcast(&p->v[v].ep[e].cv);
    pthread_mutex_unlock(&p->mu);
    if (p->health_started)
        pthread_join(p->health_thread, NULL);
    for (int v = 0; v < p->n; v++)
        for (int e = 0; e < p->v[v].cfg->n_endpoints; e++) {
            endpoint *ep = &p->v[v].ep[e];
            /* threads drain the queue (settling units as "shutting down") and exit; the
             * count cannot grow any more: enqueue happens only while not stopping */
            for (int t = 0; t < ep->n_threads; t++)
                pthread_join(ep->threads[t], NULL);
            if (ep->conn)
                p->net.close(p->net.ctx, ep->conn);
            pthread_cond_destroy(&ep->cv);
        }
    pthread_cond_destroy(&p->health_cv);
    pthread_mutex_destroy(&p->mu);
    free(p->v);
    free(p);
}

/* ---- submitting ----------------------------------------------------------------------- */

int vpool_submit(vpool *p, int v, vpool_item *items, size_t n, int64_t deadline_ms,
                 int budget_ms, vpool_done_cb done, void *data)
{
    if (v < 0 || v >= p->n || n == 0 || !done)
        return COH_EINVAL;
    submission *sub = calloc(1, sizeof *sub);
    if (!sub)
        return COH_ENOMEM;
    sub->items = items;
    sub->n = n;
    sub->deadline = deadline_ms;
    sub->budget_ms = budget_ms;
    sub->v = v;
    sub->t0 = vpool_now_ms();
    sub->done = done;
    sub->data = data;
    vverifier *vv = &p->v[v];

    pthread_mutex_lock(&p->mu);
    vv->items += (long)n;
    endpoint *eps[SCORER_MAX_ENDPOINTS];
    int k = 0;
    if (!p->stopping)
        for (endpoint *ep; k < vv->cfg->n_endpoints && (ep = pick(vv, 0)) != NULL;) {
            int dup = 0;
            for (int j = 0; j < k; j++)
                dup |= eps[j] == ep;
            if (dup)
                break;
            eps[k++] = ep;
        }
    if (k == 0 || deadline_ms - vpool_now_ms() <= 0) {
        char msg[MSG_LEN];
        score_status st = SCORE_TIMED_OUT;
        if (p->stopping) {
            st = SCORE_FAILED;
            snprintf(msg, sizeof msg, "not called: cohort-reward is shutting down");
        } else if (k == 0) {
            st = SCORE_FAILED;
            vv->no_endpoint += (long)n;
            describe_endpoints(vv, msg, sizeof msg);
        } else {
            snprintf(msg, sizeof msg, "gave no answer within %d ms", budget_ms);
        }
        sub->units_left = 1;
        pthread_mutex_unlock(&p->mu);
        unit *u = calloc(1, sizeof *u);
        if (!u) { /* settle by hand */
            for (size_t i = 0; i < n; i++) {
                memset(items[i].verdict, 0, sizeof *items[i].verdict);
                items[i].verdict->status = st;
                snprintf(items[i].verdict->error, sizeof items[i].verdict->error, "%s", msg);
            }
            done(data);
            free(sub);
            return COH_OK;
        }
        u->sub = sub;
        u->n = n;
        settle(p, u, st, NULL, msg);
        return COH_OK;
    }
    /* k endpoints share the items: contiguous chunks, as even as can be */
    size_t first = 0;
    sub->units_left = 1; /* held while queuing, so no thread can finish the submission yet */
    for (int j = 0; j < k; j++) {
        size_t share = n / (size_t)k + ((size_t)j < n % (size_t)k);
        if (share == 0)
            continue;
        endpoint *ep = eps[j];
        int batch = share > 1 && ep->batch_ok;
        for (size_t i = 0; i < share;) {
            unit *u = calloc(1, sizeof *u);
            size_t cnt = batch ? share : 1;
            if (!u) { /* settle the rest of the chunk as failed */
                for (size_t q = first + i; q < first + share; q++) {
                    memset(items[q].verdict, 0, sizeof *items[q].verdict);
                    items[q].verdict->status = SCORE_FAILED;
                    snprintf(items[q].verdict->error, sizeof items[q].verdict->error,
                             "out of memory in cohort-reward");
                }
                break;
            }
            u->sub = sub;
            u->first = first + i;
            u->n = cnt;
            u->batch = batch;
            sub->units_left++;
            enqueue(ep, u, 0);
            i += cnt;
        }
        first += share;
    }
    int last = --sub->units_left == 0;
    pthread_mutex_unlock(&p->mu);
    if (last) {
        done(data);
        free(sub);
    }
    return COH_OK;
}

/* ---- metrics -------------------------------------------------------------------------- */

int vpool_num_verifiers(const vpool *p) { return p ? p->n : 0; }

void vpool_stats(vpool *p, int v, vpool_verifier_stats *o)
{
    memset(o, 0, sizeof *o);
    pthread_mutex_lock(&p->mu);
    vverifier *vv = &p->v[v];
    o->name = vv->cfg->name;
    o->task = vv->cfg->task;
    o->items = vv->items;
    o->ok = vv->ok;
    o->failed = vv->failed;
    o->timed_out = vv->timed_out;
    o->no_endpoint = vv->no_endpoint;
    lat_pct(&vv->lat, &o->latency_p50_ms, &o->latency_p99_ms);
    o->n_endpoints = vv->cfg->n_endpoints;
    for (int e = 0; e < o->n_endpoints; e++) {
        const endpoint *ep = &vv->ep[e];
        vpool_endpoint_stats *x = &o->ep[e];
        x->address = ep->addr;
        x->state = state_names[ep->state];
        x->in_rotation = in_rotation(ep);
        x->batch = ep->batch_ok;
        x->in_flight = ep->in_flight;
        x->queued = ep->queued;
        x->calls = ep->calls;
        x->ok = ep->ok;
        x->errors = ep->errors;
        x->timeouts = ep->timeouts;
        x->ejections = ep->ejections;
        lat_pct(&ep->lat, &x->latency_p50_ms, &x->latency_p99_ms);
        o->in_flight += ep->in_flight;
        o->ejections += ep->ejections;
    }
    pthread_mutex_unlock(&p->mu);
}
