/* vpool.h - the reward service's pool of custom Verifier endpoints: concurrency, deadlines,
 * batching, health and metrics.
 *
 * For every verifier of the reward config (scorer_verifier_config) the pool keeps its
 * endpoints and, per endpoint, a queue of calls and up to max_in_flight worker threads, each
 * with one blocking call in flight. The network itself is a caller-supplied vpool_net (the
 * reward service's gRPC client; a fake in unit tests), so this module needs no network.
 *
 * SUBMITTING. vpool_submit hands over the items of one Score call routed to one verifier,
 * with their deadline (absolute, vpool_now_ms clock). The items are split over the endpoints
 * in rotation: one VerifyBatch call per endpoint for its share, or, for an endpoint known
 * not to implement VerifyBatch (it answered UNIMPLEMENTED once: remembered), one Verify call
 * per item. A lone item always goes as Verify. Each call gets the time left before the
 * deadline as its own deadline. Calls wait in their endpoint's queue while max_in_flight
 * calls are running there; one still queued when its deadline passes is not sent.
 *
 * OUTCOMES, one scorer_verdict per item:
 *   answered OK                       -> SCORE_OK with the reply;
 *   deadline passed / cancelled       -> SCORE_TIMED_OUT "gave no answer within N ms";
 *   NOT_FOUND                         -> SCORE_UNKNOWN_TASK;
 *   UNAVAILABLE                       -> the endpoint leaves the rotation (until a health
 *                                        probe sees it serve) and the call is tried on
 *                                        another serving endpoint while the deadline allows;
 *                                        else SCORE_FAILED;
 *   other errors                      -> SCORE_FAILED with the status and message;
 *   no endpoint in rotation           -> SCORE_FAILED at once, naming each endpoint's state.
 *
 * HEALTH. A thread probes every endpoint every health_interval_ms (0 = never) with
 * vpool_net.health. NOT_SERVING or unreachable takes it out of the rotation (an ejection);
 * SERVING (or no health service at all) puts it back. Endpoints start in the rotation.
 *
 * THREADS. vpool_submit and vpool_stats may be called from any thread. done callbacks run on
 * a pool thread (or inside vpool_submit when every item is settled at once) and must be
 * short (e.g. wake an event loop).
 */
#ifndef COHORT_VPOOL_H
#define COHORT_VPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "scorer.h"

typedef enum vpool_code {
    VPOOL_OK = 0,
    VPOOL_FAILED,        /* the verifier answered an error (message says which) */
    VPOOL_TIMED_OUT,     /* deadline exceeded or cancelled */
    VPOOL_UNAVAILABLE,   /* could not reach the endpoint */
    VPOOL_UNIMPLEMENTED, /* the method is not implemented there */
    VPOOL_NOT_FOUND      /* the verifier does not serve the task */
} vpool_code;

typedef enum vpool_health {
    VPOOL_HEALTH_SERVING = 0,
    VPOOL_HEALTH_NOT_SERVING,
    VPOOL_HEALTH_UNREACHABLE,
    VPOOL_HEALTH_NONE /* the endpoint has no health service: judged by its calls only */
} vpool_health;

/* The network, called from pool threads (concurrently, also for one conn). */
typedef struct vpool_net {
    void *ctx;
    /* A connection to endpoint of verifier cfg (lazy: no traffic yet), or NULL with err. */
    void *(*open)(void *ctx, const scorer_verifier_config *cfg, const char *endpoint,
                  coh_err *err);
    void (*close)(void *ctx, void *conn);
    /* Verify (batch 0, n == 1) or VerifyBatch (batch 1) with this deadline; on VPOOL_OK all
     * n replies are filled; otherwise msg (size msg_len) says why. */
    vpool_code (*call)(void *ctx, void *conn, const scorer_item *const *items, size_t n,
                       int batch, int64_t timeout_ms, scorer_remote_reply *replies, char *msg,
                       size_t msg_len);
    vpool_health (*health)(void *ctx, void *conn, int64_t timeout_ms);
} vpool_net;

typedef struct vpool vpool; /* opaque */

/* Milliseconds on the monotonic clock the pool's deadlines use. */
int64_t vpool_now_ms(void);

/* A pool for the n verifiers of s (kept by reference: s must outlive the pool), opening a
 * connection per endpoint and starting the health thread. *out is NULL on failure. */
int vpool_create(const scorer *s, const vpool_net *net, int health_interval_ms,
                 vpool **out /* OUT */, coh_err *err);
/* Stop: queued calls end SCORE_FAILED "shutting down" (their done callbacks run), running
 * calls finish (each within its deadline), threads are joined, connections closed. NULL is
 * fine. */
void vpool_destroy(vpool *p);

/* One item for one verifier; item and verdict are borrowed until done runs. */
typedef struct vpool_item {
    const scorer_item *item;
    scorer_verdict *verdict; /* OUT */
} vpool_item;

typedef void (*vpool_done_cb)(void *data);

/* Score items[0..n) (n >= 1) with verifier v by deadline_ms; budget_ms is what the
 * timed-out message quotes. done(data) runs exactly once, after every verdict is written.
 * Returns 0, or COH_EINVAL (bad v or n; done will not run). */
int vpool_submit(vpool *p, int v, vpool_item *items, size_t n, int64_t deadline_ms,
                 int budget_ms, vpool_done_cb done, void *data);

/* ---- metrics ---------------------------------------------------------------------------- */

typedef struct vpool_endpoint_stats {
    const char *address;
    const char *state;       /* "serving", "unknown" (not probed yet; in rotation),
                              * "not_serving", "unreachable" */
    int in_rotation;
    int batch;               /* 1 while VerifyBatch is used (not refused yet) */
    int in_flight, queued;
    long calls, ok, errors, timeouts, ejections;
    double latency_p50_ms, latency_p99_ms; /* of recent calls; 0 before any */
} vpool_endpoint_stats;

typedef struct vpool_verifier_stats {
    const char *name, *task;
    long items, ok, failed, timed_out, no_endpoint; /* per item */
    int in_flight;                                   /* calls, all endpoints */
    long ejections;
    double latency_p50_ms, latency_p99_ms;           /* per item, submit to verdict */
    int n_endpoints;
    vpool_endpoint_stats ep[SCORER_MAX_ENDPOINTS];
} vpool_verifier_stats;

int vpool_num_verifiers(const vpool *p);
/* A consistent snapshot of verifier v (0 <= v < vpool_num_verifiers). */
void vpool_stats(vpool *p, int v, vpool_verifier_stats *out /* OUT */);

#endif
