/* rpc_server.c - a gRPC C-core server driven by a libuv loop (see rpc.h).
 *
 * Threads. One completion queue (CQ) per server, drained by a dedicated thread that only
 * forwards {tag, ok} to the loop: it links the tag into an intrusive FIFO under a mutex and
 * calls uv_async_send. The loop's async callback takes the whole FIFO and dispatches each
 * tag, so every handler and every grpc_call_start_batch runs on the loop thread (which also
 * satisfies gRPC's rule that batches on one call are serialized by the caller).
 *
 * Tags. A tag is an rpc_tag embedded in its owner; its kind field says what completed:
 *   c->t_main  kind TAG_NEW_CALL  the accept slot matched a call (request_*_call)
 *              kind TAG_MAIN      the call's one outstanding batch finished; c->op says
 *                                 which (OP_RECV, OP_SEND or OP_FINAL)
 *   c->t_close kind TAG_CLOSE     RECV_CLOSE_ON_SERVER, started once when the call arrives,
 *                                 finishes when the call ends (cancelled flag)
 *   s->shutdown_tag TAG_SHUTDOWN  grpc_server_shutdown_and_notify finished
 * So a call context has at most two tags in flight: t_close, and t_main for at most one
 * batch. The FIFO link (next) lives in the tag, so forwarding allocates nothing.
 *
 * Call lifetime. A context is freed when (1) no batch is in flight, (2) RECV_CLOSE has
 * completed, and (3) the handler no longer holds it (answered, or released by on_cancel).
 * Freeing earlier would let a late tag touch freed memory.
 *
 * Shutdown (order from the verified notes): shutdown_and_notify + cancel_all_calls; accept
 * slots come back with ok=0 and are freed; the shutdown tag destroys the grpc_server; the
 * CQ is shut down only once the shutdown tag arrived AND no call context is left (a handler
 * may still answer a cancelled call, which starts a batch on the CQ); the CQ thread then
 * sees GRPC_QUEUE_SHUTDOWN, flags done and wakes the loop, which closes the async handle,
 * joins the thread, destroys the CQ and runs the done callback.
 *
 * ThreadSanitizer. gRPC's own synchronisation is invisible to TSan (Debian's libgrpc is not
 * instrumented), so every tag is released (tsan.h) on the loop thread just before gRPC gets
 * it and acquired on the CQ thread where grpc_completion_queue_next returns it; the FIFO
 * hand-off to the loop is ordered by the bridge mutex (and annotated at uv_async_send too).
 */
#include "fsutil.h"
#include "rpc.h"
#include "private/rpc_internal.h"
#include "tsan.h"

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HEALTH_PREFIX "/grpc.health.v1.Health/"
#define DEFAULT_REQUESTS_PER_METHOD 8
#define GENERIC_REQUESTS 2

/* ---- types ---- */

typedef enum { TAG_NEW_CALL, TAG_MAIN, TAG_CLOSE, TAG_SHUTDOWN } tag_kind;

typedef struct rpc_tag {
    struct rpc_tag *next; /* FIFO link, CQ thread -> loop */
    tag_kind kind;
    int ok;
} rpc_tag;

typedef enum { OP_NONE, OP_RECV, OP_SEND, OP_FINAL } main_op;

typedef struct rpc_method {
    char *name;
    rpc_kind kind;
    rpc_handler_cb handler;
    void *data;
    int is_public;
    void *handle; /* from grpc_server_register_method; NULL for the generic slot */
} rpc_method;

typedef enum { S_CREATED, S_RUNNING, S_STOPPING, S_DOWN } server_state;

/* The async bridge is allocated apart from the server so that its uv handle can be closed
 * (and freed in the close callback) independently of the server's lifetime. */
typedef struct bridge {
    uv_async_t async;
    pthread_mutex_t mu;
    rpc_tag *head, *tail; /* completed tags, oldest first */
    int cq_done;          /* the CQ thread saw GRPC_QUEUE_SHUTDOWN */
    rpc_server *srv;      /* NULL when start failed and the bridge is just being closed */
    pthread_t thread;
    int thread_started;
} bridge;

struct rpc_server {
    uv_loop_t *loop;
    grpc_server *gs;
    grpc_completion_queue *cq;
    rpc_method *methods;
    size_t n_methods, cap_methods;
    rpc_method generic; /* unregistered method names -> UNIMPLEMENTED */
    char *listen;
    char *token; /* bearer token, or NULL */
    size_t token_len;
    char *tls_cert, *tls_key; /* PEM text, or NULL */
    grpc_channel_args args;
    grpc_arg arg_store[2];
    int requests_per_method;
    server_state state;
    atomic_int port;
    atomic_int active; /* accepted calls not yet freed */
    int live;          /* call contexts incl. idle accept slots (loop thread) */
    int shutdown_seen;
    int cq_shutdown_called;
    rpc_tag shutdown_tag;
    bridge *br;
    rpc_server_done_cb done;
    void *done_data;
    void *ext;
    void (*ext_free)(void *);
};

struct rpc_call {
    rpc_server *srv;
    rpc_method *method;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details; /* filled for generic calls only */
    grpc_byte_buffer *recv_buf;
    rpc_tag t_main, t_close;
    int close_cancelled; /* RECV_CLOSE_ON_SERVER output */
    main_op op;          /* what t_main is waiting for */
    grpc_byte_buffer *send_buf;
    grpc_slice status_details;
    int has_status_details;
    /* an answer given while a batch was in flight, sent when it completes */
    int final_deferred;
    grpc_byte_buffer *final_buf;
    grpc_status_code final_code;
    char *final_msg;
    char final_reason[RPC_REASON_LEN]; /* "" = no cohort-reason trailer */
    grpc_metadata trailer;             /* cohort-reason, while the final batch runs */
    int has_trailer;
    grpc_slice req; /* request / current client-stream message */
    int has_req;
    unsigned accepted : 1, md_sent : 1, close_pending : 1, answered : 1, cancelled : 1,
        cancel_notified : 1, owned : 1, at_end : 1, paused : 1;
    int in_cb; /* nesting depth of user callbacks running on this call */
    rpc_sent_cb sent_cb;
    void *sent_data;
    rpc_cancel_cb cancel_cb;
    void *cancel_data;
    void *user;
    char *peer;
};

/* ---- private prototypes ---- */

static void dispatch(rpc_server *s, rpc_tag *t);
static void call_settle(rpc_call *c);
static void server_maybe_stop_cq(rpc_server *s);
static int start_final(rpc_call *c);

#define CALL_OF(tagptr, field) ((rpc_call *)((char *)(tagptr) - offsetof(rpc_call, field)))

static void log_err(const char *what, grpc_call_error e)
{
    fprintf(stderr, "rpc: %s failed: %s\n", what, grpc_call_error_to_string(e));
}

/* ---------------------------------------------------------------------------------------
 * CQ thread and the loop bridge
 * ------------------------------------------------------------------------------------- */

static void *cq_thread_main(void *arg)
{
    bridge *b = arg;
    grpc_completion_queue *cq = b->srv->cq;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        rpc_tag *t = ev.tag;
        COH_TSAN_ACQUIRE(t); /* released where the tag went to gRPC */
        t->ok = ev.success;
        t->next = NULL;
        pthread_mutex_lock(&b->mu);
        if (b->tail)
            b->tail->next = t;
        else
            b->head = t;
        b->tail = t;
        pthread_mutex_unlock(&b->mu);
        COH_TSAN_RELEASE(b);
        uv_async_send(&b->async);
    }
    /* Send under the lock: once the loop sees cq_done (under the same lock) this thread
     * never touches the handle again, so the loop may close it. */
    pthread_mutex_lock(&b->mu);
    b->cq_done = 1;
    COH_TSAN_RELEASE(b);
    uv_async_send(&b->async);
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

static void bridge_closed(uv_handle_t *h)
{
    bridge *b = h->data;
    rpc_server *s = b->srv;
    if (b->thread_started)
        pthread_join(b->thread, NULL);
    pthread_mutex_destroy(&b->mu);
    free(b);
    if (!s)
        return;
    s->br = NULL;
    grpc_completion_queue_destroy(s->cq);
    s->cq = NULL;
    s->state = S_DOWN;
    if (s->done)
        s->done(s, s->done_data); /* may destroy s */
}

static void on_async(uv_async_t *h)
{
    bridge *b = h->data;
    COH_TSAN_ACQUIRE(b); /* released by the CQ thread before uv_async_send */
    pthread_mutex_lock(&b->mu);
    rpc_tag *list = b->head;
    b->head = b->tail = NULL;
    int done = b->cq_done;
    pthread_mutex_unlock(&b->mu);
    while (list) {
        rpc_tag *t = list;
        list = t->next; /* dispatch may free the tag's owner */
        dispatch(b->srv, t);
    }
    if (done && !uv_is_closing((uv_handle_t *)h))
        uv_close((uv_handle_t *)h, bridge_closed);
}

/* ---------------------------------------------------------------------------------------
 * Accept slots
 * ------------------------------------------------------------------------------------- */

static int post_request(rpc_server *s, rpc_method *m)
{
    rpc_call *c = calloc(1, sizeof *c);
    if (!c)
        return COH_ENOMEM;
    c->srv = s;
    c->method = m;
    grpc_metadata_array_init(&c->md);
    grpc_call_details_init(&c->details);
    c->t_main.kind = TAG_NEW_CALL;
    c->t_close.kind = TAG_CLOSE;
    grpc_call_error e;
    COH_TSAN_RELEASE(&c->t_main);
    if (m->handle) {
        e = grpc_server_request_registered_call(
            s->gs, m->handle, &c->call, &c->deadline, &c->md,
            m->kind == RPC_CLIENT_STREAM ? NULL : &c->recv_buf, s->cq, s->cq, &c->t_main);
    } else {
        e = grpc_server_request_call(s->gs, &c->call, &c->details, &c->md, s->cq, s->cq,
                                     &c->t_main);
    }
    if (e != GRPC_CALL_OK) {
        log_err("grpc_server_request_call", e);
        grpc_metadata_array_destroy(&c->md);
        grpc_call_details_destroy(&c->details);
        free(c);
        return COH_EIO;
    }
    s->live++;
    return COH_OK;
}

static void call_free(rpc_call *c)
{
    rpc_server *s = c->srv;
    if (c->call)
        grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    if (c->recv_buf)
        grpc_byte_buffer_destroy(c->recv_buf);
    if (c->send_buf)
        grpc_byte_buffer_destroy(c->send_buf);
    if (c->final_buf)
        grpc_byte_buffer_destroy(c->final_buf);
    if (c->has_status_details)
        grpc_slice_unref(c->status_details);
    if (c->has_trailer)
        grpc_slice_unref(c->trailer.value);
    if (c->has_req)
        grpc_slice_unref(c->req);
    free(c->final_msg);
    if (c->peer)
        gpr_free(c->peer);
    if (c->accepted)
        atomic_fetch_sub(&s->active, 1);
    free(c);
    s->live--;
    server_maybe_stop_cq(s);
}

/* ---------------------------------------------------------------------------------------
 * Batches (one t_main batch at a time per call)
 * ------------------------------------------------------------------------------------- */

static int start_main(rpc_call *c, grpc_op *ops, size_t n, main_op what)
{
    c->t_main.kind = TAG_MAIN;
    COH_TSAN_RELEASE(&c->t_main);
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->t_main, NULL);
    if (e != GRPC_CALL_OK) {
        /* No tag will come for this batch; give up on the call. */
        log_err("grpc_call_start_batch", e);
        grpc_call_cancel(c->call, NULL);
        c->cancelled = 1;
        return COH_EIO;
    }
    c->op = what;
    return COH_OK;
}

static int start_recv(rpc_call *c)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;
    return start_main(c, &op, 1, OP_RECV);
}

/* Send the stored answer (final_buf / final_code / final_msg / final_reason) as the last
 * batch. */
static int start_final(rpc_call *c)
{
    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->md_sent = 1;
    }
    if (c->final_buf) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->final_buf;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = c->final_code;
    if (c->final_msg && c->final_msg[0]) {
        c->status_details = grpc_slice_from_copied_string(c->final_msg);
        c->has_status_details = 1;
        ops[n].data.send_status_from_server.status_details = &c->status_details;
    }
    if (c->final_reason[0]) {
        c->trailer.key = grpc_slice_from_static_string(RPC_REASON_KEY);
        c->trailer.value = grpc_slice_from_copied_string(c->final_reason);
        c->has_trailer = 1;
        ops[n].data.send_status_from_server.trailing_metadata_count = 1;
        ops[n].data.send_status_from_server.trailing_metadata = &c->trailer;
    }
    n++;
    c->send_buf = c->final_buf;
    c->final_buf = NULL;
    free(c->final_msg);
    c->final_msg = NULL;
    return start_main(c, ops, n, OP_FINAL);
}

/* Record the handler's answer and send it now or after the batch in flight. Releases the
 * handle. Takes ownership of reply. reason: a valid token (checked by the caller) or NULL. */
static int answer(rpc_call *c, grpc_status_code code, const char *reason, const char *msg,
                  grpc_byte_buffer *reply)
{
    c->answered = 1;
    c->owned = 0;
    if (c->cancelled) {
        if (reply)
            grpc_byte_buffer_destroy(reply);
        return COH_ESTATE;
    }
    c->final_code = code;
    snprintf(c->final_reason, sizeof c->final_reason, "%s", reason ? reason : "");
    c->final_buf = reply;
    c->final_msg = (msg && msg[0]) ? strdup(msg) : NULL;
    if (c->op != OP_NONE) {
        c->final_deferred = 1;
        return COH_OK;
    }
    return start_final(c);
}

/* ---------------------------------------------------------------------------------------
 * Events
 * ------------------------------------------------------------------------------------- */

static void invoke_handler(rpc_call *c, rpc_event ev)
{
    c->in_cb++;
    c->method->handler(c, ev, c->method->data);
    c->in_cb--;
}

/* Notify a cancellation to the holder, and free the context once nothing refers to it. */
static void call_settle(rpc_call *c)
{
    if (c->in_cb)
        return;
    if (c->cancelled && c->owned && !c->answered && !c->cancel_notified && c->op == OP_NONE) {
        c->cancel_notified = 1;
        if (c->cancel_cb) {
            c->in_cb++;
            c->cancel_cb(c, c->cancel_data);
            c->in_cb--;
            c->owned = 0;
        }
    }
    if (c->final_deferred && c->op == OP_NONE) {
        c->final_deferred = 0;
        if (!c->cancelled)
            start_final(c);
    }
    if (!c->owned && c->op == OP_NONE && !c->close_pending && !c->final_deferred)
        call_free(c);
}

static const char *auth_problem(rpc_server *s, const rpc_call *c)
{
    size_t n;
    const uint8_t *v = rpc_call_metadata(c, "authorization", &n);
    if (!v)
        return "missing bearer token: this server requires metadata "
               "'authorization: Bearer <token>'";
    if (n < 7 || strncasecmp((const char *)v, "Bearer ", 7) != 0)
        return "malformed authorization metadata: expected 'Bearer <token>'";
    v += 7;
    n -= 7;
    /* constant-time comparison, so the token cannot be guessed byte by byte */
    unsigned diff = (unsigned)(n != s->token_len);
    for (size_t i = 0; i < s->token_len; i++)
        diff |= (unsigned)(s->token[i] ^ (n ? v[i % n] : 0));
    return diff ? "invalid bearer token" : NULL;
}

static void on_new_call(rpc_call *c, int ok)
{
    rpc_server *s = c->srv;
    if (!ok) { /* the server is shutting down: the slot is cancelled */
        call_free(c);
        return;
    }
    if (s->state == S_RUNNING)
        post_request(s, c->method); /* keep the accept slots topped up */
    c->accepted = 1;
    atomic_fetch_add(&s->active, 1);
    if (!c->method->handle)
        c->deadline = c->details.deadline;

    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    COH_TSAN_RELEASE(&c->t_close);
    grpc_call_error e = grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL);
    if (e == GRPC_CALL_OK)
        c->close_pending = 1;
    else
        log_err("RECV_CLOSE_ON_SERVER", e);

    if (!c->method->handle) {
        char msg[256];
        const grpc_slice *m = &c->details.method;
        snprintf(msg, sizeof msg, "unknown method %.*s: this server does not implement it",
                 (int)GRPC_SLICE_LENGTH(*m), (const char *)GRPC_SLICE_START_PTR(*m));
        answer(c, GRPC_STATUS_UNIMPLEMENTED, NULL, msg, NULL);
        call_settle(c);
        return;
    }
    if (s->token && !c->method->is_public) {
        const char *why = auth_problem(s, c);
        if (why) {
            answer(c, GRPC_STATUS_UNAUTHENTICATED, NULL, why, NULL);
            call_settle(c);
            return;
        }
    }
    if (c->method->kind == RPC_CLIENT_STREAM) {
        c->owned = 1;
        start_recv(c);
        call_settle(c);
        return;
    }
    if (!c->recv_buf) {
        answer(c, GRPC_STATUS_INTERNAL, NULL,
               "request message missing (cancelled, or larger than the server accepts)", NULL);
        call_settle(c);
        return;
    }
    int rc = rpc__buffer_read(c->recv_buf, &c->req);
    grpc_byte_buffer_destroy(c->recv_buf);
    c->recv_buf = NULL;
    if (rc != COH_OK) {
        answer(c, GRPC_STATUS_INTERNAL, NULL, "could not read the request message", NULL);
        call_settle(c);
        return;
    }
    c->has_req = 1;
    c->owned = 1;
    invoke_handler(c, RPC_EV_REQUEST);
    call_settle(c);
}

static void on_main_done(rpc_call *c, int ok)
{
    main_op what = c->op;
    c->op = OP_NONE;
    switch (what) {
    case OP_RECV: {
        grpc_byte_buffer *b = c->recv_buf;
        c->recv_buf = NULL;
        if (!ok) {
            c->cancelled = 1;
        } else if (c->answered || c->cancelled) {
            /* answered while the read was in flight: drop the message */
        } else if (b) {
            if (rpc__buffer_read(b, &c->req) != COH_OK) {
                answer(c, GRPC_STATUS_INTERNAL, NULL, "could not read a request message", NULL);
            } else {
                c->has_req = 1;
                invoke_handler(c, RPC_EV_MESSAGE);
                grpc_slice_unref(c->req);
                c->has_req = 0;
                if (!c->answered && !c->cancelled && !c->paused)
                    start_recv(c);
            }
        } else {
            c->at_end = 1;
            invoke_handler(c, RPC_EV_END);
        }
        if (b)
            grpc_byte_buffer_destroy(b);
        break;
    }
    case OP_SEND: {
        grpc_byte_buffer_destroy(c->send_buf);
        c->send_buf = NULL;
        if (!ok)
            c->cancelled = 1;
        rpc_sent_cb cb = c->sent_cb;
        c->sent_cb = NULL;
        if (cb) {
            c->in_cb++;
            cb(c, ok, c->sent_data);
            c->in_cb--;
        }
        break;
    }
    case OP_FINAL:
        if (c->send_buf) {
            grpc_byte_buffer_destroy(c->send_buf);
            c->send_buf = NULL;
        }
        if (c->has_status_details) {
            grpc_slice_unref(c->status_details);
            c->has_status_details = 0;
        }
        if (c->has_trailer) {
            grpc_slice_unref(c->trailer.value);
            c->has_trailer = 0;
        }
        break;
    case OP_NONE:
        fprintf(stderr, "rpc: completion for a call with no batch in flight\n");
        break;
    }
    call_settle(c);
}

static void on_close_done(rpc_call *c, int ok)
{
    c->close_pending = 0;
    if (!ok || c->close_cancelled)
        c->cancelled = 1;
    call_settle(c);
}

static void on_shutdown_tag(rpc_server *s)
{
    s->shutdown_seen = 1;
    grpc_server_destroy(s->gs);
    s->gs = NULL;
    server_maybe_stop_cq(s);
}

static void dispatch(rpc_server *s, rpc_tag *t)
{
    switch (t->kind) {
    case TAG_SHUTDOWN:
        on_shutdown_tag(s);
        break;
    case TAG_NEW_CALL:
        on_new_call(CALL_OF(t, t_main), t->ok);
        break;
    case TAG_MAIN:
        on_main_done(CALL_OF(t, t_main), t->ok);
        break;
    case TAG_CLOSE:
        on_close_done(CALL_OF(t, t_close), t->ok);
        break;
    }
}

static void server_maybe_stop_cq(rpc_server *s)
{
    if (s->state == S_STOPPING && s->shutdown_seen && s->live == 0 && !s->cq_shutdown_called) {
        s->cq_shutdown_called = 1;
        grpc_completion_queue_shutdown(s->cq);
    }
}

/* ---------------------------------------------------------------------------------------
 * Server lifecycle
 * ------------------------------------------------------------------------------------- */

int rpc_server_create(uv_loop_t *loop, const rpc_server_config *cfg, rpc_server **out,
                      coh_err *err)
{
    *out = NULL;
    if (!loop || !cfg || !cfg->listen_address || !cfg->listen_address[0])
        return coh_fail(err, COH_EINVAL, "rpc server: a loop and a listen address are required");
    if (!cfg->tls_cert_file != !cfg->tls_key_file)
        return coh_fail(err, COH_EINVAL,
                        "rpc server: TLS needs both a certificate file and a key file");
    rpc_server *s = calloc(1, sizeof *s);
    if (!s)
        return coh_fail(err, COH_ENOMEM, "rpc server: out of memory");
    s->loop = loop;
    s->state = S_CREATED;
    s->requests_per_method =
        cfg->requests_per_method > 0 ? cfg->requests_per_method : DEFAULT_REQUESTS_PER_METHOD;
    s->shutdown_tag.kind = TAG_SHUTDOWN;
    s->generic.name = "(unknown method)";
    s->generic.kind = RPC_UNARY;
    atomic_init(&s->port, 0);
    atomic_init(&s->active, 0);
    int rc;
    s->listen = strdup(cfg->listen_address);
    if (!s->listen) {
        rc = coh_fail(err, COH_ENOMEM, "rpc server: out of memory");
        goto fail;
    }
    if (cfg->bearer_token && cfg->bearer_token[0]) {
        s->token = strdup(cfg->bearer_token);
        if (!s->token) {
            rc = coh_fail(err, COH_ENOMEM, "rpc server: out of memory");
            goto fail;
        }
        s->token_len = strlen(s->token);
    }
    if (cfg->tls_cert_file) {
        size_t n;
        rc = fs_read_all(cfg->tls_cert_file, &s->tls_cert, &n, err);
        if (rc == COH_OK)
            rc = fs_read_all(cfg->tls_key_file, &s->tls_key, &n, err);
        if (rc != COH_OK) {
            coh_wrap(err, rc, "rpc server: TLS");
            goto fail;
        }
    }
    size_t na = 0;
    if (cfg->max_receive_bytes) {
        s->arg_store[na].type = GRPC_ARG_INTEGER;
        s->arg_store[na].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
        s->arg_store[na].value.integer = cfg->max_receive_bytes < 0 ? -1 : cfg->max_receive_bytes;
        na++;
    }
    if (cfg->max_send_bytes) {
        s->arg_store[na].type = GRPC_ARG_INTEGER;
        s->arg_store[na].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
        s->arg_store[na].value.integer = cfg->max_send_bytes < 0 ? -1 : cfg->max_send_bytes;
        na++;
    }
    s->args.num_args = na;
    s->args.args = s->arg_store;

    grpc_init();
    s->gs = grpc_server_create(&s->args, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->gs, s->cq, NULL);
    *out = s;
    return COH_OK;
fail:
    free(s->listen);
    free(s->token);
    free(s->tls_cert);
    free(s->tls_key);
    free(s);
    return rc;
}

int rpc__server_add_method_ex(rpc_server *s, const char *full_name, rpc_kind kind,
                              rpc_handler_cb handler, void *method_data, int is_public,
                              coh_err *err)
{
    if (!s || !full_name || !handler)
        return coh_fail(err, COH_EINVAL, "rpc_server_add_method: missing argument");
    if (s->state != S_CREATED)
        return coh_fail(err, COH_ESTATE, "rpc_server_add_method(%s): server already started",
                        full_name);
    if (full_name[0] != '/' || !strchr(full_name + 1, '/') || full_name[strlen(full_name) - 1] == '/')
        return coh_fail(err, COH_EINVAL,
                        "rpc_server_add_method: '%s' is not a full method name "
                        "(\"/package.Service/Method\")", full_name);
    if (kind != RPC_UNARY && kind != RPC_SERVER_STREAM && kind != RPC_CLIENT_STREAM)
        return coh_fail(err, COH_EINVAL, "rpc_server_add_method(%s): bad kind %d", full_name,
                        (int)kind);
    for (size_t i = 0; i < s->n_methods; i++)
        if (strcmp(s->methods[i].name, full_name) == 0)
            return coh_fail(err, COH_EINVAL, "rpc_server_add_method: %s registered twice",
                            full_name);
    if (s->n_methods == s->cap_methods) {
        size_t cap = s->cap_methods ? 2 * s->cap_methods : 8;
        rpc_method *m = realloc(s->methods, cap * sizeof *m);
        if (!m)
            return coh_fail(err, COH_ENOMEM, "rpc_server_add_method: out of memory");
        s->methods = m;
        s->cap_methods = cap;
    }
    rpc_method *m = &s->methods[s->n_methods];
    memset(m, 0, sizeof *m);
    m->name = strdup(full_name);
    if (!m->name)
        return coh_fail(err, COH_ENOMEM, "rpc_server_add_method: out of memory");
    m->kind = kind;
    m->handler = handler;
    m->data = method_data;
    m->is_public = is_public;
    m->handle = grpc_server_register_method(
        s->gs, m->name, NULL,
        kind == RPC_CLIENT_STREAM ? GRPC_SRM_PAYLOAD_NONE : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
        0);
    if (!m->handle) {
        free(m->name);
        return coh_fail(err, COH_EINVAL, "rpc_server_add_method: gRPC refused %s", full_name);
    }
    s->n_methods++;
    return COH_OK;
}

int rpc_server_add_method(rpc_server *s, const char *full_name, rpc_kind kind,
                          rpc_handler_cb handler, void *method_data, coh_err *err)
{
    int is_public = full_name && strncmp(full_name, HEALTH_PREFIX, strlen(HEALTH_PREFIX)) == 0;
    return rpc__server_add_method_ex(s, full_name, kind, handler, method_data, is_public, err);
}

int rpc_server_start(rpc_server *s, coh_err *err)
{
    if (!s)
        return coh_fail(err, COH_EINVAL, "rpc_server_start: no server");
    if (s->state != S_CREATED || atomic_load(&s->port) != 0)
        return coh_fail(err, COH_ESTATE, "rpc_server_start: server already started");
    grpc_server_credentials *creds;
    if (s->tls_cert) {
        grpc_ssl_pem_key_cert_pair pair = {s->tls_key, s->tls_cert};
        creds = grpc_ssl_server_credentials_create(NULL, &pair, 1, 0, NULL);
        if (!creds)
            return coh_fail(err, COH_EINVAL, "rpc server: gRPC refused the TLS certificate/key");
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    int port = grpc_server_add_http2_port(s->gs, s->listen, creds);
    grpc_server_credentials_release(creds);
    if (port <= 0)
        return coh_fail(err, COH_EIO,
                        "rpc server: cannot listen on '%s' (bad address, or port in use)",
                        s->listen);
    atomic_store(&s->port, port);

    bridge *b = calloc(1, sizeof *b);
    if (!b)
        return coh_fail(err, COH_ENOMEM, "rpc server: out of memory");
    if (pthread_mutex_init(&b->mu, NULL) != 0) {
        free(b);
        return coh_fail(err, COH_ENOMEM, "rpc server: cannot create a mutex");
    }
    int uerr = uv_async_init(s->loop, &b->async, on_async);
    if (uerr < 0) {
        pthread_mutex_destroy(&b->mu);
        free(b);
        return coh_fail(err, COH_EIO, "rpc server: uv_async_init: %s", uv_strerror(uerr));
    }
    b->async.data = b;
    b->srv = s;
    if (pthread_create(&b->thread, NULL, cq_thread_main, b) != 0) {
        b->srv = NULL; /* freed by its close callback; the server stays unstarted */
        uv_close((uv_handle_t *)&b->async, bridge_closed);
        return coh_fail(err, COH_ENOMEM, "rpc server: cannot start the completion-queue thread");
    }
    b->thread_started = 1;
    s->br = b;
    grpc_server_start(s->gs);
    s->state = S_RUNNING;
    for (size_t i = 0; i < s->n_methods; i++)
        for (int k = 0; k < s->requests_per_method; k++)
            post_request(s, &s->methods[i]);
    for (int k = 0; k < GENERIC_REQUESTS; k++)
        post_request(s, &s->generic);
    return COH_OK;
}

int rpc_server_port(const rpc_server *s)
{
    return s ? atomic_load(&((rpc_server *)s)->port) : 0;
}

int rpc_server_active_calls(const rpc_server *s)
{
    return s ? atomic_load(&((rpc_server *)s)->active) : 0;
}

int rpc_server_shutdown(rpc_server *s, rpc_server_done_cb done, void *data)
{
    if (!s || s->state != S_RUNNING)
        return COH_ESTATE;
    s->state = S_STOPPING;
    s->done = done;
    s->done_data = data;
    COH_TSAN_RELEASE(&s->shutdown_tag);
    grpc_server_shutdown_and_notify(s->gs, s->cq, &s->shutdown_tag);
    grpc_server_cancel_all_calls(s->gs);
    return COH_OK;
}

/* Tear down a grpc_server that never ran its CQ thread: everything happens on this thread. */
static void shutdown_unstarted(rpc_server *s)
{
    if (s->gs) {
        grpc_server_shutdown_and_notify(s->gs, s->cq, &s->shutdown_tag);
        for (;;) {
            grpc_event ev =
                grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_QUEUE_SHUTDOWN ||
                (ev.type == GRPC_OP_COMPLETE && ev.tag == &s->shutdown_tag))
                break;
        }
        grpc_server_destroy(s->gs);
        s->gs = NULL;
    }
    if (s->cq) {
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(s->cq);
        s->cq = NULL;
    }
}

void rpc_server_destroy(rpc_server *s)
{
    if (!s)
        return;
    if (s->state == S_RUNNING || s->state == S_STOPPING) {
        fprintf(stderr, "rpc: rpc_server_destroy on a running server (call rpc_server_shutdown "
                        "and wait for its callback); leaking it\n");
        return;
    }
    if (s->state == S_CREATED)
        shutdown_unstarted(s);
    if (s->ext_free)
        s->ext_free(s->ext);
    for (size_t i = 0; i < s->n_methods; i++)
        free(s->methods[i].name);
    free(s->methods);
    free(s->listen);
    free(s->token);
    free(s->tls_cert);
    free(s->tls_key);
    free(s);
    grpc_shutdown();
}

void rpc__server_set_ext(rpc_server *s, void *ext, void (*free_fn)(void *))
{
    s->ext = ext;
    s->ext_free = free_fn;
}

void *rpc__server_ext(const rpc_server *s)
{
    return s->ext;
}

/* ---------------------------------------------------------------------------------------
 * Calls
 * ------------------------------------------------------------------------------------- */

const uint8_t *rpc_call_request(const rpc_call *c, size_t *len)
{
    static const uint8_t empty[1];
    if (!c->has_req) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = GRPC_SLICE_LENGTH(c->req);
    const uint8_t *p = GRPC_SLICE_START_PTR(c->req);
    return p ? p : empty;
}

ProtobufCMessage *rpc_call_unpack_request(rpc_call *c, const ProtobufCMessageDescriptor *desc)
{
    size_t n;
    const uint8_t *p = rpc_call_request(c, &n);
    char why[160];
    if (p && rpc_wire_check(desc, p, n, why, sizeof why)) {
        char msg[320];
        snprintf(msg, sizeof msg, "malformed request: not a valid %s (%zu bytes): %s",
                 desc ? desc->name : "message", n, why);
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
        return NULL;
    }
    ProtobufCMessage *m = p ? rpc_unpack(desc, p, n) : NULL;
    if (!m) {
        char msg[256];
        snprintf(msg, sizeof msg, "malformed request: not a valid %s (%zu bytes)",
                 desc ? desc->name : "message", n);
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
    }
    return m;
}

const char *rpc_call_method(const rpc_call *c)
{
    return c->method->name;
}

const char *rpc_call_peer(rpc_call *c)
{
    if (!c->peer)
        c->peer = grpc_call_get_peer(c->call);
    return c->peer ? c->peer : "unknown";
}

const uint8_t *rpc_call_metadata(const rpc_call *c, const char *key, size_t *len)
{
    for (size_t i = 0; i < c->md.count; i++) {
        if (grpc_slice_str_cmp(c->md.metadata[i].key, key) == 0) {
            /* through a pointer: a short slice keeps its bytes inline, so a copy of the
             * slice struct would hand out a pointer into this stack frame */
            const grpc_slice *v = &c->md.metadata[i].value;
            if (len)
                *len = GRPC_SLICE_LENGTH(*v);
            return GRPC_SLICE_START_PTR(*v);
        }
    }
    if (len)
        *len = 0;
    return NULL;
}

int64_t rpc_call_deadline_ms(const rpc_call *c)
{
    if (gpr_time_cmp(c->deadline, gpr_inf_future(c->deadline.clock_type)) == 0)
        return INT64_MAX;
    gpr_timespec d = gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC);
    gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC));
    return (int64_t)left.tv_sec * 1000 + left.tv_nsec / 1000000;
}

void rpc_call_set_data(rpc_call *c, void *data)
{
    c->user = data;
}

void *rpc_call_data(const rpc_call *c)
{
    return c->user;
}

void rpc_call_on_cancel(rpc_call *c, rpc_cancel_cb cb, void *data)
{
    c->cancel_cb = cb;
    c->cancel_data = data;
}

int rpc_call_cancelled(const rpc_call *c)
{
    return c->cancelled;
}

int rpc_call_pause(rpc_call *c)
{
    if (c->method->kind != RPC_CLIENT_STREAM)
        return COH_EINVAL;
    if (!c->in_cb || c->answered || c->at_end)
        return COH_ESTATE;
    c->paused = 1;
    return COH_OK;
}

int rpc_call_resume(rpc_call *c)
{
    if (c->method->kind != RPC_CLIENT_STREAM)
        return COH_EINVAL;
    if (!c->paused)
        return COH_ESTATE;
    c->paused = 0;
    if (c->cancelled)
        return COH_ESTATE; /* no more messages will come: answer to release the call */
    /* Inside a handler callback, the read restarts when the callback returns. */
    if (c->in_cb || c->answered || c->at_end || c->op != OP_NONE)
        return COH_OK;
    int rc = start_recv(c);
    call_settle(c);
    return rc;
}

/* Common tail of the answering functions: the context may be freeable now (e.g. the call
 * had been cancelled); c must not be used after this. */
static int answered_return(rpc_call *c, int rc)
{
    call_settle(c);
    return rc;
}

int rpc_call_reply(rpc_call *c, const uint8_t *bytes, size_t len)
{
    if (c->method->kind == RPC_SERVER_STREAM || (!bytes && len))
        return COH_EINVAL;
    grpc_byte_buffer *b = c->cancelled ? NULL : rpc__buffer_from_bytes(bytes, len);
    return answered_return(c, answer(c, GRPC_STATUS_OK, NULL, NULL, b));
}

int rpc_call_reply_msg(rpc_call *c, const ProtobufCMessage *msg)
{
    if (c->method->kind == RPC_SERVER_STREAM || !msg)
        return COH_EINVAL;
    grpc_byte_buffer *b = c->cancelled ? NULL : rpc__buffer_from_msg(msg);
    return answered_return(c, answer(c, GRPC_STATUS_OK, NULL, NULL, b));
}

int rpc_call_fail(rpc_call *c, grpc_status_code code, const char *message)
{
    return rpc_call_fail_reason(c, code, NULL, message);
}

int rpc_call_fail_reason(rpc_call *c, grpc_status_code code, const char *reason,
                         const char *message)
{
    if (code == GRPC_STATUS_OK || (reason && reason[0] && !rpc_reason_valid(reason)))
        return COH_EINVAL;
    return answered_return(c, answer(c, code, reason, message, NULL));
}

int rpc_call_finish(rpc_call *c, grpc_status_code code, const char *message)
{
    return rpc_call_finish_reason(c, code, NULL, message);
}

int rpc_call_finish_reason(rpc_call *c, grpc_status_code code, const char *reason,
                           const char *message)
{
    if (c->method->kind != RPC_SERVER_STREAM && code == GRPC_STATUS_OK)
        return COH_EINVAL; /* unary and client streams answer OK with rpc_call_reply */
    if (reason && reason[0] && !rpc_reason_valid(reason))
        return COH_EINVAL;
    return answered_return(c, answer(c, code, reason, message, NULL));
}

static int send_buffer(rpc_call *c, grpc_byte_buffer *b, rpc_sent_cb cb, void *data)
{
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->md_sent = 1;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = b;
    n++;
    c->send_buf = b;
    c->sent_cb = cb;
    c->sent_data = data;
    int rc = start_main(c, ops, n, OP_SEND);
    if (rc != COH_OK) {
        c->send_buf = NULL;
        c->sent_cb = NULL;
        grpc_byte_buffer_destroy(b);
    }
    return rc;
}

int rpc_call_send(rpc_call *c, const uint8_t *bytes, size_t len, rpc_sent_cb cb, void *data)
{
    if (c->method->kind != RPC_SERVER_STREAM || (!bytes && len))
        return COH_EINVAL;
    if (c->answered || c->cancelled || c->op != OP_NONE)
        return COH_ESTATE;
    return send_buffer(c, rpc__buffer_from_bytes(bytes, len), cb, data);
}

static void release_parts(const rpc_part *parts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (parts[i].release)
            parts[i].release(parts[i].release_data);
}

int rpc_call_send_parts(rpc_call *c, const rpc_part *parts, size_t n, rpc_sent_cb cb,
                        void *data)
{
    int bad = c->method->kind != RPC_SERVER_STREAM || (!parts && n) || n > 64;
    for (size_t i = 0; !bad && i < n; i++)
        bad = !parts[i].bytes && parts[i].len;
    if (bad) {
        release_parts(parts, parts ? n : 0);
        return COH_EINVAL;
    }
    if (c->answered || c->cancelled || c->op != OP_NONE) {
        release_parts(parts, n);
        return COH_ESTATE;
    }
    grpc_slice sl[64];
    size_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        if (!parts[i].len) {
            if (parts[i].release)
                parts[i].release(parts[i].release_data);
            continue;
        }
        if (parts[i].release)
            /* gRPC unrefs the slice (and so calls release) when it is done with the bytes */
            sl[ns++] = grpc_slice_new_with_user_data((void *)parts[i].bytes, parts[i].len,
                                                     parts[i].release, parts[i].release_data);
        else
            sl[ns++] = grpc_slice_from_copied_buffer((const char *)parts[i].bytes,
                                                     parts[i].len);
    }
    grpc_byte_buffer *b = grpc_raw_byte_buffer_create(sl, ns);
    for (size_t i = 0; i < ns; i++)
        grpc_slice_unref(sl[i]);
    return send_buffer(c, b, cb, data);
}

int rpc_call_send_msg(rpc_call *c, const ProtobufCMessage *msg, rpc_sent_cb cb, void *data)
{
    if (c->method->kind != RPC_SERVER_STREAM || !msg)
        return COH_EINVAL;
    if (c->answered || c->cancelled || c->op != OP_NONE)
        return COH_ESTATE;
    return send_buffer(c, rpc__buffer_from_msg(msg), cb, data);
}
