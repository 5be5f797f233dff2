/* rpc_client.c - blocking gRPC client calls (see rpc.h).
 *
 * Every call owns a pluck completion queue and runs one batch at a time, plucking the
 * call's own tag, so calls from different threads never share queue state (a pluck CQ
 * allows only a handful of concurrent pluckers). The call's deadline bounds every wait.
 * The tag is released / acquired around each batch (tsan.h): gRPC's threads fill the
 * batch's outputs, and their synchronisation is invisible to ThreadSanitizer.
 *
 * Trailing metadata "cohort-reason" (rpc.h) is copied into rpc_status.reason for every
 * call kind.
 */
#include "fsutil.h"
#include "rpc.h"
#include "private/rpc_internal.h"
#include "tsan.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_BACKOFF_MS 30000

struct rpc_channel {
    grpc_channel *ch;
    char *auth; /* "Bearer <token>", or NULL */
    size_t auth_len;
};

/* One client call and its private queue. */
typedef struct ccall {
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata md; /* authorization, if the channel has a token */
    size_t n_md;
} ccall;

struct rpc_stream {
    ccall cc;
    grpc_metadata_array imd;
    int got_md;
    int done; /* status received */
    int result;
    rpc_status st;
    grpc_slice cur; /* the message last returned */
    int has_cur;
    grpc_byte_buffer *curbuf; /* ... or, from rpc_stream_next_pieces, its buffer */
    grpc_byte_buffer_reader rd;
    int has_rd;
    rpc_piece *pv; /* the pieces of curbuf */
    size_t pv_cap;
};

struct rpc_writer {
    ccall cc;
    int md_sent;
    int failed; /* a write failed: the call is over */
};

/* ---------------------------------------------------------------------------------------
 * Channel
 * ------------------------------------------------------------------------------------- */

int rpc_channel_create(const char *target, const rpc_channel_config *cfg, rpc_channel **out,
                       coh_err *err)
{
    static const rpc_channel_config defaults;
    *out = NULL;
    if (!cfg)
        cfg = &defaults;
    if (!target || !target[0])
        return coh_fail(err, COH_EINVAL, "rpc channel: no target address");
    rpc_channel *ch = calloc(1, sizeof *ch);
    if (!ch)
        return coh_fail(err, COH_ENOMEM, "rpc channel: out of memory");
    if (cfg->bearer_token && cfg->bearer_token[0]) {
        ch->auth_len = strlen("Bearer ") + strlen(cfg->bearer_token);
        ch->auth = malloc(ch->auth_len + 1);
        if (!ch->auth) {
            free(ch);
            return coh_fail(err, COH_ENOMEM, "rpc channel: out of memory");
        }
        strcpy(ch->auth, "Bearer ");
        strcat(ch->auth, cfg->bearer_token);
    }
    char *ca = NULL;
    if (cfg->tls_ca_file) {
        size_t n;
        int rc = fs_read_all(cfg->tls_ca_file, &ca, &n, err);
        if (rc != COH_OK) {
            free(ch->auth);
            free(ch);
            return coh_wrap(err, rc, "rpc channel: TLS root certificates");
        }
    }

    grpc_arg args[8];
    size_t na = 0;
    memset(args, 0, sizeof args);
    /* Cohort's peers restart (a learner resumes from its checkpoint); gRPC's default
     * reconnect back-off grows to 120 s, so cap it: a restarted peer is found within ~2 s. */
    args[na].type = GRPC_ARG_INTEGER;
    args[na].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[na].value.integer = 2000;
    na++;
    args[na].type = GRPC_ARG_INTEGER;
    args[na].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[na].value.integer = 200;
    na++;
    if (cfg->max_receive_bytes) {
        args[na].type = GRPC_ARG_INTEGER;
        args[na].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
        args[na].value.integer = cfg->max_receive_bytes < 0 ? -1 : cfg->max_receive_bytes;
        na++;
    }
    if (cfg->max_send_bytes) {
        args[na].type = GRPC_ARG_INTEGER;
        args[na].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
        args[na].value.integer = cfg->max_send_bytes < 0 ? -1 : cfg->max_send_bytes;
        na++;
    }
    if (cfg->stream_window_bytes > 0) {
        /* a fixed, large HTTP/2 receive window: the sender never waits for a window update
         * (each one is a thread wake-up on both sides, which a busy machine makes slow) */
        args[na].type = GRPC_ARG_INTEGER;
        args[na].key = GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES;
        args[na].value.integer = cfg->stream_window_bytes;
        na++;
        args[na].type = GRPC_ARG_INTEGER;
        args[na].key = GRPC_ARG_HTTP2_BDP_PROBE; /* else BDP probing resizes the window */
        args[na].value.integer = 0;
        na++;
        args[na].type = GRPC_ARG_INTEGER;
        args[na].key = GRPC_ARG_HTTP2_MAX_FRAME_SIZE;
        args[na].value.integer = 4 << 20;
        na++;
    }
    int tls = cfg->tls || cfg->tls_ca_file;
    if (tls && cfg->tls_server_name && cfg->tls_server_name[0]) {
        args[na].type = GRPC_ARG_STRING;
        args[na].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        args[na].value.string = (char *)cfg->tls_server_name;
        na++;
    }
    grpc_channel_args cargs = {na, args};

    grpc_init();
    grpc_channel_credentials *creds =
        tls ? grpc_ssl_credentials_create(ca, NULL, NULL, NULL) : grpc_insecure_credentials_create();
    free(ca);
    if (!creds) {
        grpc_shutdown();
        free(ch->auth);
        free(ch);
        return coh_fail(err, COH_EINVAL, "rpc channel: gRPC refused the TLS settings");
    }
    ch->ch = grpc_channel_create(target, creds, &cargs);
    grpc_channel_credentials_release(creds);
    *out = ch;
    return COH_OK;
}

void rpc_channel_destroy(rpc_channel *ch)
{
    if (!ch)
        return;
    grpc_channel_destroy(ch->ch);
    free(ch->auth);
    free(ch);
    grpc_shutdown();
}

/* ---------------------------------------------------------------------------------------
 * One call
 * ------------------------------------------------------------------------------------- */

static int ccall_open(rpc_channel *ch, const char *method, int64_t deadline_ms, ccall *cc,
                      rpc_status *st)
{
    memset(cc, 0, sizeof *cc);
    if (!ch || !method || method[0] != '/') {
        rpc__status_setf(st, GRPC_STATUS_INVALID_ARGUMENT, "bad channel or method name '%s'",
                         method ? method : "(null)");
        return COH_EINVAL;
    }
    if (deadline_ms <= 0) {
        rpc__status_setf(st, GRPC_STATUS_INVALID_ARGUMENT,
                         "%s: every call needs a deadline > 0 ms (got %lld)", method,
                         (long long)deadline_ms);
        return COH_EINVAL;
    }
    cc->cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                   gpr_time_from_millis(deadline_ms, GPR_TIMESPAN));
    grpc_slice m = grpc_slice_from_copied_string(method);
    cc->call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cc->cq, m, NULL,
                                        dl, NULL);
    grpc_slice_unref(m);
    if (ch->auth) {
        cc->md.key = grpc_slice_from_static_string("authorization");
        cc->md.value = grpc_slice_from_static_buffer(ch->auth, ch->auth_len);
        cc->n_md = 1;
    }
    return COH_OK;
}

static void ccall_close(ccall *cc)
{
    if (cc->call)
        grpc_call_unref(cc->call);
    cc->call = NULL;
    if (cc->cq) {
        grpc_completion_queue_shutdown(cc->cq);
        while (grpc_completion_queue_pluck(cc->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                   .type != GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(cc->cq);
        cc->cq = NULL;
    }
}

static void op_send_md(grpc_op *op, ccall *cc)
{
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op->data.send_initial_metadata.count = cc->n_md;
    op->data.send_initial_metadata.metadata = cc->n_md ? &cc->md : NULL;
}

/* Run one batch and wait for it: 1 success, 0 failed (see the status), <0 not started. */
static int ccall_batch(ccall *cc, grpc_op *ops, size_t n, rpc_status *st)
{
    COH_TSAN_RELEASE(cc);
    grpc_call_error e = grpc_call_start_batch(cc->call, ops, n, cc, NULL);
    if (e != GRPC_CALL_OK) {
        rpc__status_setf(st, GRPC_STATUS_INTERNAL, "grpc_call_start_batch: %s",
                         grpc_call_error_to_string(e));
        return COH_EIO;
    }
    grpc_event ev = grpc_completion_queue_pluck(cc->cq, cc, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    COH_TSAN_ACQUIRE(cc);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

/* Wait for the final status of the call. */
static void ccall_status(ccall *cc, rpc_status *st)
{
    grpc_metadata_array tmd;
    grpc_metadata_array_init(&tmd);
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &tmd;
    op.data.recv_status_on_client.status = &code;
    op.data.recv_status_on_client.status_details = &details;
    if (ccall_batch(cc, &op, 1, st) >= 0)
        rpc__status_set(st, code, details, &tmd);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&tmd);
}

/* Copy a received buffer into a malloc'd block. */
static int take_reply(grpc_byte_buffer *b, uint8_t **reply, size_t *reply_len, rpc_status *st)
{
    grpc_slice s;
    if (rpc__buffer_read(b, &s) != COH_OK) {
        rpc__status_setf(st, GRPC_STATUS_INTERNAL, "could not read the reply message");
        return COH_EFORMAT;
    }
    size_t n = GRPC_SLICE_LENGTH(s);
    uint8_t *p = malloc(n ? n : 1);
    if (!p) {
        grpc_slice_unref(s);
        rpc__status_setf(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for a %zu-byte reply",
                         n);
        return COH_ENOMEM;
    }
    if (n)
        memcpy(p, GRPC_SLICE_START_PTR(s), n);
    grpc_slice_unref(s);
    *reply = p;
    *reply_len = n;
    return COH_OK;
}

static void status_ok(rpc_status *st)
{
    st->code = GRPC_STATUS_OK;
    st->message[0] = '\0';
    st->reason[0] = '\0';
}

/* ---------------------------------------------------------------------------------------
 * Unary
 * ------------------------------------------------------------------------------------- */

int rpc_unary(rpc_channel *ch, const char *method, const uint8_t *req, size_t req_len,
              int64_t deadline_ms, uint8_t **reply, size_t *reply_len, rpc_status *st)
{
    *reply = NULL;
    *reply_len = 0;
    status_ok(st);
    if (!req && req_len) {
        rpc__status_setf(st, GRPC_STATUS_INVALID_ARGUMENT, "request bytes missing");
        return COH_EINVAL;
    }
    ccall cc;
    int rc = ccall_open(ch, method, deadline_ms, &cc, st);
    if (rc != COH_OK)
        return rc;
    grpc_byte_buffer *sb = rpc__buffer_from_bytes(req, req_len);
    grpc_byte_buffer *rb = NULL;
    grpc_metadata_array imd, tmd;
    grpc_metadata_array_init(&imd);
    grpc_metadata_array_init(&tmd);
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    op_send_md(&ops[0], &cc);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = sb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &imd;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &rb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &tmd;
    ops[5].data.recv_status_on_client.status = &code;
    ops[5].data.recv_status_on_client.status_details = &details;
    if (ccall_batch(&cc, ops, 6, st) >= 0)
        rpc__status_set(st, code, details, &tmd);
    rc = rpc_status_to_coh(st->code);
    if (rc == COH_OK) {
        if (rb)
            rc = take_reply(rb, reply, reply_len, st);
        else {
            rpc__status_setf(st, GRPC_STATUS_INTERNAL, "%s: OK status without a reply message",
                             method);
            rc = COH_EFORMAT;
        }
    }
    grpc_slice_unref(details);
    if (rb)
        grpc_byte_buffer_destroy(rb);
    grpc_byte_buffer_destroy(sb);
    grpc_metadata_array_destroy(&imd);
    grpc_metadata_array_destroy(&tmd);
    ccall_close(&cc);
    return rc;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

int rpc_unary_retry(rpc_channel *ch, const char *method, const uint8_t *req, size_t req_len,
                    int64_t deadline_ms, int attempts, int64_t base_backoff_ms,
                    uint8_t **reply, size_t *reply_len, rpc_status *st)
{
    if (attempts < 1)
        attempts = 1;
    if (base_backoff_ms < 1)
        base_backoff_ms = 1;
    /* jitter source: a per-call xorshift seeded from the clock and the stack address */
    gpr_timespec now = gpr_now(GPR_CLOCK_REALTIME);
    uint64_t x = ((uint64_t)now.tv_nsec << 20) ^ (uint64_t)now.tv_sec ^ (uint64_t)(uintptr_t)&now;
    x |= 1;
    int64_t backoff = base_backoff_ms;
    int rc = COH_OK;
    for (int i = 0; i < attempts; i++) {
        rc = rpc_unary(ch, method, req, req_len, deadline_ms, reply, reply_len, st);
        if (st->code != GRPC_STATUS_UNAVAILABLE || i == attempts - 1)
            break;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t jitter = (int64_t)(x % 401) - 200; /* -20.0 % .. +20.0 % in 0.1 % steps */
        sleep_ms(backoff + backoff * jitter / 1000);
        backoff = backoff * 2 > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : backoff * 2;
    }
    return rc;
}

int rpc_unary_msg(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *reply_desc, int64_t deadline_ms,
                  ProtobufCMessage **reply, rpc_status *st)
{
    *reply = NULL;
    status_ok(st);
    if (!req || !reply_desc) {
        rpc__status_setf(st, GRPC_STATUS_INVALID_ARGUMENT, "request or reply type missing");
        return COH_EINVAL;
    }
    uint8_t *in = NULL, *out = NULL;
    size_t in_len = 0, out_len = 0;
    coh_err err;
    int rc = rpc_pack(req, 0, &in, &in_len, &err);
    if (rc != COH_OK) {
        rpc__status_setf(st, GRPC_STATUS_INVALID_ARGUMENT, "%s", err.msg);
        return rc;
    }
    rc = rpc_unary(ch, method, in, in_len, deadline_ms, &out, &out_len, st);
    free(in);
    if (rc != COH_OK)
        return rc;
    *reply = rpc_unpack(reply_desc, out, out_len);
    free(out);
    if (!*reply) {
        rpc__status_setf(st, GRPC_STATUS_INTERNAL, "%s: malformed reply: not a valid %s", method,
                         reply_desc->name);
        return COH_EFORMAT;
    }
    return COH_OK;
}

/* ---------------------------------------------------------------------------------------
 * Server-streaming reader
 * ------------------------------------------------------------------------------------- */

int rpc_stream_open(rpc_channel *ch, const char *method, const uint8_t *req, size_t req_len,
                    int64_t deadline_ms, rpc_stream **out, coh_err *err)
{
    *out = NULL;
    if (!req && req_len)
        return coh_fail(err, COH_EINVAL, "rpc_stream_open: request bytes missing");
    rpc_stream *s = calloc(1, sizeof *s);
    if (!s)
        return coh_fail(err, COH_ENOMEM, "rpc_stream_open: out of memory");
    int rc = ccall_open(ch, method, deadline_ms, &s->cc, &s->st);
    if (rc != COH_OK) {
        coh_fail(err, rc, "rpc_stream_open: %s", s->st.message);
        free(s);
        return rc;
    }
    grpc_metadata_array_init(&s->imd);
    grpc_byte_buffer *sb = rpc__buffer_from_bytes(req, req_len);
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    op_send_md(&ops[0], &s->cc);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = sb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    /* A failure here means the call is already over; rpc_stream_next reports its status. */
    if (ccall_batch(&s->cc, ops, 3, &s->st) < 0) {
        grpc_call_cancel(s->cc.call, NULL);
    }
    grpc_byte_buffer_destroy(sb);
    status_ok(&s->st);
    *out = s;
    return COH_OK;
}

static void stream_drop_cur(rpc_stream *s)
{
    if (s->has_cur) {
        grpc_slice_unref(s->cur);
        s->has_cur = 0;
    }
    if (s->has_rd) {
        grpc_byte_buffer_reader_destroy(&s->rd);
        s->has_rd = 0;
    }
    if (s->curbuf) {
        grpc_byte_buffer_destroy(s->curbuf);
        s->curbuf = NULL;
    }
}

static int stream_end(rpc_stream *s)
{
    ccall_status(&s->cc, &s->st);
    s->done = 1;
    s->result = rpc_status_to_coh(s->st.code);
    return s->result;
}

/* Receive the next message into *rb (NULL at the end); 1 = got one, else the batch failed
 * or the stream ended. */
static int stream_recv(rpc_stream *s, grpc_byte_buffer **rb)
{
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!s->got_md) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n].data.recv_initial_metadata.recv_initial_metadata = &s->imd;
        n++;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = rb;
    n++;
    int ok = ccall_batch(&s->cc, ops, n, &s->st);
    s->got_md = 1;
    return ok == 1 && *rb;
}

int rpc_stream_next_pieces(rpc_stream *s, const rpc_piece **pieces, size_t *n)
{
    *pieces = NULL;
    *n = 0;
    stream_drop_cur(s);
    if (s->done)
        return s->result;
    grpc_byte_buffer *rb = NULL;
    if (!stream_recv(s, &rb)) {
        if (rb)
            grpc_byte_buffer_destroy(rb);
        return stream_end(s);
    }
    s->curbuf = rb;
    /* the reader decompresses a compressed message; an uncompressed one is read in place */
    if (!grpc_byte_buffer_reader_init(&s->rd, rb)) {
        grpc_call_cancel(s->cc.call, NULL);
        stream_drop_cur(s);
        stream_end(s);
        rpc__status_setf(&s->st, GRPC_STATUS_INTERNAL, "could not read a stream message");
        return s->result = COH_EFORMAT;
    }
    s->has_rd = 1;
    size_t k = 0;
    grpc_slice *sl;
    while (grpc_byte_buffer_reader_peek(&s->rd, &sl)) {
        if (k == s->pv_cap) {
            size_t cap = s->pv_cap ? 2 * s->pv_cap : 16;
            rpc_piece *pv = realloc(s->pv, cap * sizeof *pv);
            if (!pv) {
                grpc_call_cancel(s->cc.call, NULL);
                stream_drop_cur(s);
                stream_end(s);
                rpc__status_setf(&s->st, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
                return s->result = COH_ENOMEM;
            }
            s->pv = pv;
            s->pv_cap = cap;
        }
        s->pv[k].bytes = GRPC_SLICE_START_PTR(*sl);
        s->pv[k].len = GRPC_SLICE_LENGTH(*sl);
        k++;
    }
    static const rpc_piece none[1];
    *pieces = k ? s->pv : none;
    *n = k;
    return 1;
}

int rpc_stream_next(rpc_stream *s, const uint8_t **msg, size_t *len)
{
    *msg = NULL;
    *len = 0;
    stream_drop_cur(s);
    if (s->done)
        return s->result;
    grpc_byte_buffer *rb = NULL;
    if (stream_recv(s, &rb)) {
        int rc = rpc__buffer_read(rb, &s->cur);
        grpc_byte_buffer_destroy(rb);
        if (rc != COH_OK) {
            grpc_call_cancel(s->cc.call, NULL);
            stream_end(s);
            rpc__status_setf(&s->st, GRPC_STATUS_INTERNAL, "could not read a stream message");
            return s->result = COH_EFORMAT;
        }
        s->has_cur = 1;
        *msg = GRPC_SLICE_START_PTR(s->cur);
        *len = GRPC_SLICE_LENGTH(s->cur);
        if (!*msg) {
            static const uint8_t empty[1];
            *msg = empty;
        }
        return 1;
    }
    if (rb)
        grpc_byte_buffer_destroy(rb);
    return stream_end(s);
}

const rpc_status *rpc_stream_status(const rpc_stream *s)
{
    return s && s->done ? &s->st : NULL;
}

void rpc_stream_cancel(rpc_stream *s)
{
    if (s && s->cc.call)
        grpc_call_cancel(s->cc.call, NULL);
}

int rpc_stream_close(rpc_stream *s, rpc_status *status)
{
    if (!s) {
        if (status)
            status_ok(status);
        return COH_OK;
    }
    stream_drop_cur(s);
    if (!s->done) {
        grpc_call_cancel(s->cc.call, NULL);
        stream_end(s);
    }
    int rc = s->result;
    if (status)
        *status = s->st;
    grpc_metadata_array_destroy(&s->imd);
    ccall_close(&s->cc);
    free(s->pv);
    free(s);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * Client-streaming writer
 * ------------------------------------------------------------------------------------- */

int rpc_writer_open(rpc_channel *ch, const char *method, int64_t deadline_ms, rpc_writer **out,
                    coh_err *err)
{
    *out = NULL;
    rpc_writer *w = calloc(1, sizeof *w);
    if (!w)
        return coh_fail(err, COH_ENOMEM, "rpc_writer_open: out of memory");
    rpc_status st;
    int rc = ccall_open(ch, method, deadline_ms, &w->cc, &st);
    if (rc != COH_OK) {
        coh_fail(err, rc, "rpc_writer_open: %s", st.message);
        free(w);
        return rc;
    }
    *out = w;
    return COH_OK;
}

int rpc_writer_write(rpc_writer *w, const uint8_t *bytes, size_t len)
{
    if (!bytes && len)
        return COH_EINVAL;
    if (w->failed)
        return COH_EIO;
    rpc_status st;
    grpc_byte_buffer *sb = rpc__buffer_from_bytes(bytes, len);
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!w->md_sent) {
        op_send_md(&ops[n], &w->cc);
        n++;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = sb;
    n++;
    int ok = ccall_batch(&w->cc, ops, n, &st);
    w->md_sent = 1;
    grpc_byte_buffer_destroy(sb);
    if (ok != 1) {
        w->failed = 1;
        return COH_EIO;
    }
    return COH_OK;
}

int rpc_writer_finish(rpc_writer *w, uint8_t **reply, size_t *reply_len, rpc_status *st)
{
    *reply = NULL;
    *reply_len = 0;
    status_ok(st);
    grpc_byte_buffer *rb = NULL;
    grpc_metadata_array imd;
    grpc_metadata_array_init(&imd);
    grpc_op ops[4];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!w->md_sent) {
        op_send_md(&ops[n], &w->cc);
        n++;
    }
    if (!w->failed) {
        ops[n].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        n++;
    }
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n].data.recv_initial_metadata.recv_initial_metadata = &imd;
    n++;
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = &rb;
    n++;
    ccall_batch(&w->cc, ops, n, st);
    ccall_status(&w->cc, st);
    int rc = rpc_status_to_coh(st->code);
    if (rc == COH_OK) {
        if (rb)
            rc = take_reply(rb, reply, reply_len, st);
        else {
            rpc__status_setf(st, GRPC_STATUS_INTERNAL, "OK status without a reply message");
            rc = COH_EFORMAT;
        }
    }
    if (rb)
        grpc_byte_buffer_destroy(rb);
    grpc_metadata_array_destroy(&imd);
    ccall_close(&w->cc);
    free(w);
    return rc;
}
