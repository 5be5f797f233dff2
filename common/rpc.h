/* rpc.h - gRPC glue: a libuv-driven server and blocking clients over the gRPC C core.
 *
 * Everything Cohort sends over the wire goes through this header; nothing outside
 * common/rpc*.c includes <grpc/grpc.h> (only the status codes of <grpc/status.h> leak out).
 *
 * SERVER (event-driven, one libuv loop)
 *   rpc_server_create -> rpc_server_add_method ... (and/or rpc_health_register)
 *   -> rpc_server_start -> ... serve ... -> rpc_server_shutdown(done_cb) -> done_cb runs
 *   -> rpc_server_destroy.
 *   A dedicated completion-queue thread forwards every gRPC completion to the loop with
 *   uv_async_send; every handler callback and every gRPC batch runs on the LOOP THREAD.
 *   Server functions and rpc_call_* functions must be called on the loop thread, except
 *   rpc_server_port and rpc_server_active_calls, which any thread may read.
 *
 * CALLS (server side)
 *   A handler receives an rpc_call handle. The handle is valid until the handler ANSWERS it
 *   (rpc_call_reply, rpc_call_fail, rpc_call_finish: each releases the handle, whatever it
 *   returns, except COH_EINVAL which means "misuse, nothing happened"), or until the call's
 *   on_cancel callback (rpc_call_on_cancel) has returned, whichever comes first.
 *   A handler may answer inside the callback or later (after a timer, after calling
 *   another service, when buffer space frees up). A call the peer cancelled (client
 *   cancel, deadline, broken connection, server shutdown) is reported to on_cancel if one
 *   is set; without on_cancel the handle stays valid until the handler answers, and the
 *   answer is then dropped. Handlers that keep calls waiting should set on_cancel.
 *   Shutdown waits until every call is answered or released.
 *
 * CLIENT (blocking, thread-safe)
 *   rpc_channel_create -> rpc_unary / rpc_stream_* / rpc_writer_* -> rpc_channel_destroy.
 *   Each call uses its own pluck completion queue, so any number of threads may call
 *   through one channel at once; one rpc_stream / rpc_writer is used by one thread at a
 *   time (rpc_stream_cancel excepted). Every call carries a deadline (milliseconds from
 *   now, > 0).
 *
 * ERRORS
 *   Functions return 0 or a negative COH_E* code (err.h). Client calls also fill an
 *   rpc_status with the gRPC status code and message; a non-OK status maps to a COH code
 *   with rpc_status_to_coh (INVALID_ARGUMENT -> COH_EINVAL, NOT_FOUND -> COH_ENOTFOUND,
 *   RESOURCE_EXHAUSTED / OUT_OF_RANGE -> COH_ERANGE, UNIMPLEMENTED -> COH_EUNSUPPORTED,
 *   FAILED_PRECONDITION -> COH_ESTATE, everything else -> COH_EIO).
 *   When a function that takes a callback returns an error, the callback never runs.
 *
 * TYPED REASONS (the wire convention of proto/cohort/v1/common.proto)
 *   A status code is coarse (FAILED_PRECONDITION covers an expired, a returned and a
 *   completed lease), and message text is for people. A server that wants its clients to
 *   act on WHY a call failed answers with rpc_call_fail_reason / rpc_call_finish_reason,
 *   which add the trailing metadata "cohort-reason: <reason>", a short lower_snake token
 *   (unknown_actor, lease_expired, lease_unknown, lease_completed, lease_returned,
 *   stale_version, temperature_mismatch, invalid_group, buffer_full, ...). Clients read it
 *   from rpc_status.reason ("" when the server sent none); any gRPC client can read the
 *   same trailer (Python: call.trailing_metadata() / RpcError.trailing_metadata()).
 */
#ifndef COHORT_RPC_H
#define COHORT_RPC_H

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "err.h"

/* ---------------------------------------------------------------------------------------
 * Library lifetime
 * ------------------------------------------------------------------------------------- */

/* Reference-counted wrappers of grpc_init/grpc_shutdown. Servers and channels take their
 * own reference, so calling these is optional; a process that creates and destroys many
 * channels calls rpc_global_init once at start to keep the library up, and
 * rpc_global_shutdown once at exit, after every server and channel is destroyed (the last
 * reference frees all of gRPC's memory, which keeps leak checkers quiet). */
void rpc_global_init(void);
void rpc_global_shutdown(void);

/* ---------------------------------------------------------------------------------------
 * Status codes
 * ------------------------------------------------------------------------------------- */

#define RPC_STATUS_MSG_LEN 512
#define RPC_REASON_LEN 48
/* The trailing-metadata key that carries a typed reason (see TYPED REASONS above). */
#define RPC_REASON_KEY "cohort-reason"

/* The outcome of a client call as the peer (or the local gRPC stack) reported it. */
typedef struct rpc_status {
    grpc_status_code code;             /* GRPC_STATUS_OK on success */
    char message[RPC_STATUS_MSG_LEN];  /* details text, "" if none; truncated if longer */
    char reason[RPC_REASON_LEN];       /* trailing metadata "cohort-reason", "" if the
                                        * server sent none (always "" for local failures);
                                        * a longer value is truncated */
} rpc_status;

/* Canonical name of a gRPC status code ("DEADLINE_EXCEEDED"); never NULL. */
const char *rpc_status_name(int code);
/* COH_OK for GRPC_STATUS_OK, else the negative COH_E* code described above. */
int rpc_status_to_coh(int code);
/* Write "what: NAME: message" into err and return rpc_status_to_coh(st->code). */
int rpc_status_to_err(const rpc_status *st, const char *what, coh_err *err);

/* ---------------------------------------------------------------------------------------
 * Messages (protobuf-c helpers)
 * ------------------------------------------------------------------------------------- */

/* Check the wire encoding of a message of type desc before decoding it, for what protobuf-c
 * lets through: a field numbered 0, a group (wire types 3/4, unused by proto3), a truncated
 * key, varint or length; and, in every string field of the message and of its nested
 * messages, a NUL byte (protobuf-c would cut the string there) or bytes that are not UTF-8
 * (proto3 strings are UTF-8). COH_OK, or COH_EINVAL with why[] naming the field, e.g.
 * "field cohort.v1.RewardItem.completion holds a NUL byte at offset 1". why may be NULL. */
int rpc_wire_check(const ProtobufCMessageDescriptor *desc, const uint8_t *bytes, size_t len,
                   char *why, size_t why_cap);
/* Decode bytes as a message of type desc. Returns a message to free with rpc_msg_free, or
 * NULL when the bytes are not a valid encoding of that type (rpc_wire_check included) or
 * out of memory. */
ProtobufCMessage *rpc_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *bytes,
                             size_t len);
/* Free a message from rpc_unpack (or any protobuf-c unpacked message). NULL is fine. */
void rpc_msg_free(ProtobufCMessage *msg);
/* Encode msg into a malloc'd buffer (*out, *out_len; caller frees *out). Fails with
 * COH_ERANGE if the encoding is larger than max_len (0 = 4 GiB - 1, the gRPC frame
 * limit), COH_ENOMEM on allocation failure; then *out is NULL and *out_len 0. */
int rpc_pack(const ProtobufCMessage *msg, size_t max_len, uint8_t **out, size_t *out_len,
             coh_err *err);

/* ---------------------------------------------------------------------------------------
 * Server
 * ------------------------------------------------------------------------------------- */

typedef struct rpc_server rpc_server;
typedef struct rpc_call rpc_call;

typedef struct rpc_server_config {
    const char *listen_address; /* "host:port"; port 0 picks a free port (rpc_server_port) */
    int max_receive_bytes;      /* largest request message; 0 = gRPC default 4 MiB, -1 = no limit */
    int max_send_bytes;         /* largest reply message; 0 = gRPC default (no limit), -1 = no limit */
    const char *tls_cert_file;  /* PEM certificate chain; with tls_key_file enables TLS */
    const char *tls_key_file;   /* PEM private key */
    const char *bearer_token;   /* if non-NULL and non-empty, every call except the Health
                                 * service must carry "authorization: Bearer <token>" or it
                                 * is refused with UNAUTHENTICATED */
    int requests_per_method;    /* calls accepted ahead per method; 0 = 8 */
} rpc_server_config;

typedef enum rpc_kind {
    RPC_UNARY,         /* one request, one reply */
    RPC_SERVER_STREAM, /* one request, a stream of replies */
    RPC_CLIENT_STREAM  /* a stream of requests, one reply */
} rpc_kind;

typedef enum rpc_event {
    RPC_EV_REQUEST, /* unary / server-stream: the request is in rpc_call_request */
    RPC_EV_MESSAGE, /* client-stream: one message is in rpc_call_request (valid until return) */
    RPC_EV_END      /* client-stream: the client finished sending; answer now or later */
} rpc_event;

/* A method handler; runs on the loop thread. method_data is what rpc_server_add_method got.
 * For a client stream it runs once per message and once more at the end (RPC_EV_END),
 * unless the call is answered or cancelled first. */
typedef void (*rpc_handler_cb)(rpc_call *call, rpc_event ev, void *method_data);
/* rpc_server_shutdown finished: all calls are gone and gRPC has let go of the server.
 * The callback may call rpc_server_destroy(server). */
typedef void (*rpc_server_done_cb)(rpc_server *server, void *data);

/* Create a server on loop (nothing listens until rpc_server_start). Reads the TLS files now
 * and reports unreadable ones. On failure *out is NULL. */
int rpc_server_create(uv_loop_t *loop, const rpc_server_config *cfg, rpc_server **out,
                      coh_err *err);
/* Register full_name ("/cohort.v1.Learner/Register"); before rpc_server_start only. A call
 * to a method nobody registered gets UNIMPLEMENTED. COH_EINVAL for a bad or duplicate name. */
int rpc_server_add_method(rpc_server *s, const char *full_name, rpc_kind kind,
                          rpc_handler_cb handler, void *method_data, coh_err *err);
/* Bind, start serving and start the completion-queue thread. On failure (e.g. the address
 * cannot be bound) the server is left unstarted and may only be destroyed. */
int rpc_server_start(rpc_server *s, coh_err *err);
/* The bound TCP port once started (useful with port 0), else 0. Any thread. */
int rpc_server_port(const rpc_server *s);
/* Calls accepted and not yet finished (not counting idle accept slots). Any thread. */
int rpc_server_active_calls(const rpc_server *s);
/* Orderly stop: refuse new calls, cancel the running ones (their on_cancel callbacks run),
 * wait until every call is answered or released, then stop the queue thread and run
 * done(s, data) on the loop thread. COH_ESTATE if the server is not running (never
 * started, or already shutting down); then done never runs. */
int rpc_server_shutdown(rpc_server *s, rpc_server_done_cb done, void *data);
/* Free the server. Allowed when it was never started (or failed to start) and after the
 * done callback of rpc_server_shutdown ran (also from inside it). A running server is not
 * freed (a message goes to stderr and the memory is deliberately leaked). NULL is fine. */
void rpc_server_destroy(rpc_server *s);

/* ---- calls (server side, loop thread) ---- */

/* Called once when the call is cancelled while the handler holds it; after it returns the
 * handle is invalid (forget it in here). Answering inside it is allowed and ignored. */
typedef void (*rpc_cancel_cb)(rpc_call *call, void *data);
/* A server-stream message finished sending. ok == 0: the peer is gone (cancelled); the
 * handler should stop and answer with rpc_call_finish (or wait for on_cancel). */
typedef void (*rpc_sent_cb)(rpc_call *call, int ok, void *data);

/* The request (unary / server-stream: valid until answered) or the current client-stream
 * message (valid until the handler returns). *len gets the size; the pointer is non-NULL
 * (possibly to zero bytes) while a message is available, else NULL. */
const uint8_t *rpc_call_request(const rpc_call *c, size_t *len);
/* Decode the request as desc; on malformed bytes answer INVALID_ARGUMENT
 * "malformed request: not a valid <type>" (which releases the call!) and return NULL.
 * The message belongs to the caller (rpc_msg_free). */
ProtobufCMessage *rpc_call_unpack_request(rpc_call *c, const ProtobufCMessageDescriptor *desc);
/* Full method name as registered. */
const char *rpc_call_method(const rpc_call *c);
/* The peer's address ("ipv4:127.0.0.1:53012"), cached; valid as long as the handle. */
const char *rpc_call_peer(rpc_call *c);
/* Value of request metadata key (lower case, e.g. "x-actor-id"), or NULL; *len gets the
 * length (the value is not NUL-terminated). Valid as long as the handle. */
const uint8_t *rpc_call_metadata(const rpc_call *c, const char *key, size_t *len);
/* Milliseconds left before the client's deadline (INT64_MAX if none, <= 0 if passed). */
int64_t rpc_call_deadline_ms(const rpc_call *c);
/* Per-call user pointer (e.g. a client-stream accumulator); NULL until set. */
void rpc_call_set_data(rpc_call *c, void *data);
void *rpc_call_data(const rpc_call *c);
/* Set (or with cb NULL clear) the cancellation callback; see the contract at the top. */
void rpc_call_on_cancel(rpc_call *c, rpc_cancel_cb cb, void *data);
/* 1 once the call is known to be cancelled (the answer will be dropped), else 0. */
int rpc_call_cancelled(const rpc_call *c);
/* Client stream only: stop reading further messages until rpc_call_resume (backpressure;
 * HTTP/2 flow control then stops the client). Pausing outside a handler callback, or
 * resuming a call that is not paused, is COH_ESTATE; so is resuming a call that was
 * cancelled meanwhile (answer it to release it, or use on_cancel).
 * While not paused, a read is always in flight between callbacks; an answer given outside
 * a callback then goes out when that read completes (the next message or the end), so a
 * handler that wants to reject a client stream from a timer should pause first. */
int rpc_call_pause(rpc_call *c);
int rpc_call_resume(rpc_call *c);

/* Answer unary / client-stream calls with OK and this reply (copied). Releases the call.
 * Returns 0, COH_ESTATE if the call was cancelled (answer dropped), COH_ENOMEM (call
 * cancelled), or COH_EINVAL for a server-stream call (nothing happens). */
int rpc_call_reply(rpc_call *c, const uint8_t *bytes, size_t len);
/* Same with a protobuf message packed straight into the reply. */
int rpc_call_reply_msg(rpc_call *c, const ProtobufCMessage *msg);
/* Answer any call with a non-OK status and message (NULL = none). Releases the call.
 * Returns as rpc_call_reply; COH_EINVAL (nothing happens) if code is GRPC_STATUS_OK. */
int rpc_call_fail(rpc_call *c, grpc_status_code code, const char *message);
/* rpc_call_fail plus the trailing metadata "cohort-reason: <reason>" (TYPED REASONS above).
 * reason is a lower_snake token: 1 to RPC_REASON_LEN - 1 characters of [a-z0-9_],
 * starting with a letter; NULL or "" sends no reason (= rpc_call_fail). COH_EINVAL
 * (nothing happens, the handle stays valid) for a reason that is not such a token. */
int rpc_call_fail_reason(rpc_call *c, grpc_status_code code, const char *reason,
                         const char *message);
/* Server stream: send one message (copied). At most one send in flight: wait for
 * on_sent before the next one (COH_ESTATE otherwise). cb may be NULL. Returns 0 (cb will
 * run), COH_ESTATE (cancelled, answered, or a send in flight; cb will not run),
 * COH_EINVAL (not a server stream), COH_ENOMEM. */
int rpc_call_send(rpc_call *c, const uint8_t *bytes, size_t len, rpc_sent_cb cb, void *data);
int rpc_call_send_msg(rpc_call *c, const ProtobufCMessage *msg, rpc_sent_cb cb, void *data);
/* One piece of a message for rpc_call_send_parts. With release NULL the bytes are copied
 * at once; otherwise they are BORROWED without copying (a gRPC slice over them) and must
 * stay alive and unchanged until release(release_data) runs, which happens exactly once,
 * on any thread (a gRPC thread, typically after the bytes reached the socket). */
typedef struct rpc_part {
    const uint8_t *bytes;
    size_t len;
    void (*release)(void *release_data);
    void *release_data;
} rpc_part;
/* Server stream: send one message made of n parts (concatenated), as rpc_call_send. Every
 * borrowed part's release runs exactly once whatever this returns (on failure before it
 * returns, or later). */
int rpc_call_send_parts(rpc_call *c, const rpc_part *parts, size_t n, rpc_sent_cb cb,
                        void *data);
/* Server stream: end the stream with status code (OK or not) and message (may be NULL).
 * May be called while a send is in flight: it goes out after that send (its on_sent still
 * runs first). Releases the call. Returns as rpc_call_reply. */
int rpc_call_finish(rpc_call *c, grpc_status_code code, const char *message);
/* rpc_call_finish plus the trailing metadata "cohort-reason: <reason>", as
 * rpc_call_fail_reason (for any call kind, like rpc_call_finish). */
int rpc_call_finish_reason(rpc_call *c, grpc_status_code code, const char *reason,
                           const char *message);
/* 1 if reason is a valid reason token (see rpc_call_fail_reason), else 0. */
int rpc_reason_valid(const char *reason);

/* ---------------------------------------------------------------------------------------
 * Health (grpc.health.v1.Health: Check and Watch), loop thread
 * ------------------------------------------------------------------------------------- */

/* Register /grpc.health.v1.Health/Check and /Watch (before rpc_server_start). They need no
 * bearer token. The overall service "" starts SERVING; other names are unknown
 * (Check: NOT_FOUND; Watch: SERVICE_UNKNOWN) until rpc_health_set names them. */
int rpc_health_register(rpc_server *s, coh_err *err);
/* Set service (NULL or "" = the whole server) to SERVING (serving != 0) or NOT_SERVING;
 * Watch streams of that service get the new status. COH_ESTATE without
 * rpc_health_register. */
int rpc_health_set(rpc_server *s, const char *service, int serving);

/* ---------------------------------------------------------------------------------------
 * Client
 * ------------------------------------------------------------------------------------- */

typedef struct rpc_channel rpc_channel;
typedef struct rpc_stream rpc_stream;
typedef struct rpc_writer rpc_writer;

typedef struct rpc_channel_config {
    const char *tls_ca_file;     /* PEM root(s) to trust; non-NULL enables TLS */
    int tls;                     /* TLS with the system roots when tls_ca_file is NULL */
    const char *tls_server_name; /* expected name in the server certificate (override) */
    const char *bearer_token;    /* sent as "authorization: Bearer <token>" on every call */
    int max_receive_bytes;       /* largest reply message; 0 = gRPC default 4 MiB, -1 = no limit */
    int max_send_bytes;          /* largest request message; 0 = default (no limit) */
    int stream_window_bytes;     /* > 0: a fixed HTTP/2 receive window of this many bytes per
                                  * stream (BDP probing off, 4 MiB frames) instead of gRPC's
                                  * adaptive one: for channels that download bulk data (the
                                  * weights); each stream may then buffer that much. 0 =
                                  * gRPC's default (starts at 64 KiB, grows by BDP probing) */
} rpc_channel_config;

/* A channel to target ("host:port", or any gRPC target URI). Connecting is lazy: an
 * unreachable server shows up as UNAVAILABLE on the first call. cfg may be NULL
 * (plaintext, defaults). On failure *out is NULL. */
int rpc_channel_create(const char *target, const rpc_channel_config *cfg, rpc_channel **out,
                       coh_err *err);
/* Free the channel; every stream/writer on it must be closed first. NULL is fine. */
void rpc_channel_destroy(rpc_channel *ch);

/* Unary call. On OK returns 0 and *reply (malloc'd, caller frees; non-NULL even when
 * empty) / *reply_len. Otherwise returns rpc_status_to_coh(st->code) (or COH_EINVAL /
 * COH_ENOMEM before anything was sent, with st filled as INVALID_ARGUMENT / RESOURCE_
 * EXHAUSTED) and *reply is NULL. st must be non-NULL. */
int rpc_unary(rpc_channel *ch, const char *method, const uint8_t *req, size_t req_len,
              int64_t deadline_ms, uint8_t **reply, size_t *reply_len, rpc_status *st);
/* rpc_unary retried up to attempts times (>= 1) while the status is UNAVAILABLE, sleeping
 * base_backoff_ms, 2x, 4x, ... (capped at 30 s, +-20 % jitter) in between. deadline_ms
 * applies to each attempt. Only for idempotent methods. */
int rpc_unary_retry(rpc_channel *ch, const char *method, const uint8_t *req, size_t req_len,
                    int64_t deadline_ms, int attempts, int64_t base_backoff_ms,
                    uint8_t **reply, size_t *reply_len, rpc_status *st);
/* rpc_unary with protobuf messages: packs req, unpacks the reply as reply_desc into
 * *reply (free with rpc_msg_free). A reply that does not decode gives INTERNAL
 * "malformed reply" and COH_EFORMAT. */
int rpc_unary_msg(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *reply_desc, int64_t deadline_ms,
                  ProtobufCMessage **reply, rpc_status *st);

/* Server-streaming call: sends req and returns the reader; errors (even "cannot connect")
 * surface on rpc_stream_next. COH_EINVAL / COH_ENOMEM only for local failures. */
int rpc_stream_open(rpc_channel *ch, const char *method, const uint8_t *req, size_t req_len,
                    int64_t deadline_ms, rpc_stream **out, coh_err *err);
/* Wait for the next message: returns 1 with *msg / *len (valid until the next
 * rpc_stream_next or rpc_stream_close), 0 at the end of a stream that finished OK, or
 * rpc_status_to_coh(code) < 0 when it ended with an error (rpc_stream_status tells). */
int rpc_stream_next(rpc_stream *st, const uint8_t **msg, size_t *len);
/* A piece of a received message (rpc_stream_next_pieces). */
typedef struct rpc_piece {
    const uint8_t *bytes;
    size_t len;
} rpc_piece;
/* rpc_stream_next without gathering the message into one buffer: *pieces / *n get the
 * message as gRPC holds it (the slices it arrived in, concatenated in order; n may be 0 for
 * an empty message), valid until the next rpc_stream_next* or rpc_stream_close. Same
 * return values as rpc_stream_next. For receivers that copy the bytes once, to their
 * final place. */
int rpc_stream_next_pieces(rpc_stream *st, const rpc_piece **pieces, size_t *n);
/* The final status once rpc_stream_next returned <= 0, else NULL. */
const rpc_status *rpc_stream_status(const rpc_stream *st);
/* Cancel the call; a blocked rpc_stream_next returns with CANCELLED. Any thread. */
void rpc_stream_cancel(rpc_stream *st);
/* Cancel if still running, collect the status into *status (may be NULL), free. Returns
 * rpc_status_to_coh of that status (a stream closed early reports CANCELLED, COH_EIO).
 * NULL is fine (returns 0). */
int rpc_stream_close(rpc_stream *st, rpc_status *status);

/* Client-streaming call: open, write each message, finish. */
int rpc_writer_open(rpc_channel *ch, const char *method, int64_t deadline_ms, rpc_writer **out,
                    coh_err *err);
/* Send one message (copied); blocks until gRPC accepted it (flow control). Returns 0, or
 * COH_EIO when the call is already over (the server answered early or it failed): stop
 * writing and call rpc_writer_finish for the status. */
int rpc_writer_write(rpc_writer *w, const uint8_t *bytes, size_t len);
/* Half-close, wait for the reply and status, free w. As rpc_unary for reply/st. */
int rpc_writer_finish(rpc_writer *w, uint8_t **reply, size_t *reply_len, rpc_status *st);

#endif
