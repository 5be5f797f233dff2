/* rpc_health.c - the standard grpc.health.v1.Health service (Check and Watch) on an
 * rpc_server. State lives in the server's extension slot and is only touched on the loop
 * thread.
 *
 * Watch: each stream is a watcher that remembers the last status it sent. A send goes out
 * when the stream starts and whenever rpc_health_set changes its service; while a send is
 * in flight a change is picked up by the send's completion. A watcher is forgotten when its
 * call is cancelled (on_cancel) or a send fails (then the call is finished).
 */
#include "rpc.h"
#include "private/rpc_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"

#define ST_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define ST_NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define ST_UNKNOWN_SERVICE GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN

typedef struct health_entry {
    char *service;
    int status;
} health_entry;

typedef struct watcher {
    struct watcher *prev, *next;
    struct health *h;
    rpc_call *call;
    char *service;
    int sent_status; /* -1 before the first send */
    int sending;
} watcher;

typedef struct health {
    health_entry *entries;
    size_t n, cap;
    watcher *watchers; /* doubly linked */
} health;

static health_entry *find_entry(health *h, const char *service)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->entries[i].service, service) == 0)
            return &h->entries[i];
    return NULL;
}

static int current_status(health *h, const char *service)
{
    health_entry *e = find_entry(h, service);
    return e ? e->status : ST_UNKNOWN_SERVICE;
}

static void health_free(void *p)
{
    health *h = p;
    if (!h)
        return;
    /* Every watch call is gone before the server is destroyed, so the list is empty. */
    for (size_t i = 0; i < h->n; i++)
        free(h->entries[i].service);
    free(h->entries);
    free(h);
}

/* ---- Check ---- */

static void on_check(rpc_call *call, rpc_event ev, void *data)
{
    health *h = data;
    (void)ev;
    Grpc__Health__V1__HealthCheckRequest *req = (Grpc__Health__V1__HealthCheckRequest *)
        rpc_call_unpack_request(call, &grpc__health__v1__health_check_request__descriptor);
    if (!req)
        return; /* answered INVALID_ARGUMENT */
    const char *svc = req->service ? req->service : "";
    health_entry *e = find_entry(h, svc);
    if (!e) {
        char msg[300];
        snprintf(msg, sizeof msg, "unknown service '%.200s'", svc);
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, msg);
    } else {
        Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        resp.status = e->status;
        rpc_call_reply_msg(call, &resp.base);
    }
    rpc_msg_free(&req->base);
}

/* ---- Watch ---- */

static void watcher_unlink_free(watcher *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        w->h->watchers = w->next;
    if (w->next)
        w->next->prev = w->prev;
    free(w->service);
    free(w);
}

static void watch_sent(rpc_call *call, int ok, void *data);

/* Send the current status if it differs from the last one sent and no send is in flight. */
static void watcher_push(watcher *w)
{
    if (w->sending)
        return;
    int st = current_status(w->h, w->service);
    if (st == w->sent_status)
        return;
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = st;
    if (rpc_call_send_msg(w->call, &resp.base, watch_sent, w) == COH_OK) {
        w->sending = 1;
        w->sent_status = st;
    }
    /* else: the call is cancelled; on_cancel (or the failed send) will clean up */
}

static void watch_sent(rpc_call *call, int ok, void *data)
{
    watcher *w = data;
    w->sending = 0;
    if (!ok) {
        watcher_unlink_free(w);
        rpc_call_finish(call, GRPC_STATUS_CANCELLED, "watch cancelled");
        return;
    }
    watcher_push(w);
}

static void watch_cancelled(rpc_call *call, void *data)
{
    (void)call;
    watcher_unlink_free(data);
}

static void on_watch(rpc_call *call, rpc_event ev, void *data)
{
    health *h = data;
    (void)ev;
    Grpc__Health__V1__HealthCheckRequest *req = (Grpc__Health__V1__HealthCheckRequest *)
        rpc_call_unpack_request(call, &grpc__health__v1__health_check_request__descriptor);
    if (!req)
        return;
    watcher *w = calloc(1, sizeof *w);
    char *svc = strdup(req->service ? req->service : "");
    rpc_msg_free(&req->base);
    if (!w || !svc) {
        free(w);
        free(svc);
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "health watch: out of memory");
        return;
    }
    w->h = h;
    w->call = call;
    w->service = svc;
    w->sent_status = -1;
    w->next = h->watchers;
    if (h->watchers)
        h->watchers->prev = w;
    h->watchers = w;
    rpc_call_on_cancel(call, watch_cancelled, w);
    watcher_push(w);
}

/* ---- public ---- */

int rpc_health_register(rpc_server *s, coh_err *err)
{
    if (!s)
        return coh_fail(err, COH_EINVAL, "rpc_health_register: no server");
    if (rpc__server_ext(s))
        return coh_fail(err, COH_ESTATE, "rpc_health_register: already registered");
    health *h = calloc(1, sizeof *h);
    if (!h)
        return coh_fail(err, COH_ENOMEM, "rpc_health_register: out of memory");
    int rc = rpc__server_add_method_ex(s, "/grpc.health.v1.Health/Check", RPC_UNARY, on_check, h,
                                       1, err);
    if (rc == COH_OK)
        rc = rpc__server_add_method_ex(s, "/grpc.health.v1.Health/Watch", RPC_SERVER_STREAM,
                                       on_watch, h, 1, err);
    if (rc != COH_OK) {
        /* a registered Check keeps pointing at h: keep h alive with the server */
        rpc__server_set_ext(s, h, health_free);
        return rc;
    }
    rpc__server_set_ext(s, h, health_free);
    return rpc_health_set(s, "", 1);
}

int rpc_health_set(rpc_server *s, const char *service, int serving)
{
    health *h = s ? rpc__server_ext(s) : NULL;
    if (!h)
        return COH_ESTATE;
    if (!service)
        service = "";
    int st = serving ? ST_SERVING : ST_NOT_SERVING;
    health_entry *e = find_entry(h, service);
    if (!e) {
        if (h->n == h->cap) {
            size_t cap = h->cap ? 2 * h->cap : 8;
            health_entry *ne = realloc(h->entries, cap * sizeof *ne);
            if (!ne)
                return COH_ENOMEM;
            h->entries = ne;
            h->cap = cap;
        }
        char *name = strdup(service);
        if (!name)
            return COH_ENOMEM;
        e = &h->entries[h->n++];
        e->service = name;
        e->status = -1;
    }
    if (e->status == st)
        return COH_OK;
    e->status = st;
    for (watcher *w = h->watchers; w;) {
        watcher *next = w->next; /* pushing never frees w, but stay safe */
        if (strcmp(w->service, service) == 0)
            watcher_push(w);
        w = next;
    }
    return COH_OK;
}
