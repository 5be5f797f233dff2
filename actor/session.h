/* session.h - the actor's standing with the learner: registration (and registering again
 * when the learner forgot the actor), the parameters the learner hands out, heartbeats,
 * counters, and the actor's life cycle (stop flag, interruptible sleeps, cancellable
 * streams).
 *
 * Threads: every function may be called from any thread unless noted (one mutex and one
 * condition variable inside; registrations are serialised by a second mutex, so threads that
 * all see "unknown actor" for the same stale id register once between them).
 *
 * Ownership: the session borrows the learner channel and the vtrack (both must outlive it);
 * it writes the learner's version into the vtrack on registration and heartbeats, reads the
 * held version from it for heartbeats, and stops it in session_stop.
 *
 * Errors: a refused registration (UNAUTHENTICATED, INVALID_ARGUMENT) is fatal: the session
 * stops with the fatal flag set. Other failures are retried with back-off (200 ms doubling
 * to 5 s) until they succeed or the session stops.
 */
#ifndef COHORT_ACTOR_SESSION_H
#define COHORT_ACTOR_SESSION_H

#include <protobuf-c/protobuf-c.h>
#include <stdint.h>

#include "cohort/v1/common.pb-c.h"
#include "err.h"
#include "rpc.h"
#include "sampler.h"
#include "stops.h"
#include "vtrack.h"

#define SESSION_MAX_BACKOFF_MS 5000

typedef struct session session; /* opaque */

typedef struct session_config {
    const char *learner_addr; /* for messages (borrowed) */
    const char *name;         /* RegisterRequest.name (borrowed) */
    int threads;              /* RegisterRequest.threads */
} session_config;

/* What the learner told the actor to use (a snapshot, see session_params_get). */
typedef struct session_params {
    int group_size;        /* completions per lease, >= 1 */
    sample_params sample;  /* temperature, top_k, top_p, max_new_tokens, eos_id */
    stops_list stop;       /* stop strings (SamplingParams.stop): where stops_cut ends a
                            * completion after sampling */
    double temperature;    /* the temperature exactly as the learner sent it */
    int max_staleness;
    uint32_t heartbeat_interval_ms, lease_ttl_ms;
    int paused;
} session_params;

/* Counters (a snapshot, see session_stats_get). */
typedef struct session_stats {
    long long tokens, completions;                 /* sampled */
    long long groups_submitted, groups_accepted, groups_dropped;
    double reward_sum;                             /* over ITEM_OK items of submitted groups */
    long reward_n;
} session_stats;

/* lch and vt are borrowed; cfg's strings too. Before the first registration the actor id is
 * 0 and the parameters are temperature 1, top_p 1, top_k 0, 16 new tokens, stop id <eos>,
 * group size 1. */
int session_create(rpc_channel *lch, vtrack *vt, const session_config *cfg, session **out,
                   coh_err *err);
/* No thread may use s any more; open streams must have been closed. NULL is fine. */
void session_destroy(session *s);

rpc_channel *session_channel(const session *s);
const char *session_learner_addr(const session *s);

/* ---- life cycle ---- */

/* Stop: set the stop flag (and the fatal flag if fatal), cancel every open stream, wake every
 * sleeper and stop the vtrack. Idempotent. */
void session_stop(session *s, int fatal);
int session_stopping(session *s);
int session_fatal(session *s);
/* Sleep ms milliseconds unless the session stops; returns 1 when stopping, else 0. */
int session_sleep_ms(session *s, long ms);
/* The same, but also wakes (returning 0) as soon as a registration bumps the generation past
 * gen (see session_identity). */
int session_sleep_ms_gen(session *s, long ms, long gen);
/* Back-off step: double, capped at SESSION_MAX_BACKOFF_MS. */
long session_next_backoff(long cur_ms);

/* Open a server stream on the learner channel and track it so that session_stop cancels it.
 * Returns 0 with *out open, 1 when it could not be opened (retry later), -1 when stopping
 * (nothing left open). At most 8 streams are tracked at a time (1 beyond that). */
int session_open_stream(session *s, const char *method, const ProtobufCMessage *req,
                        int64_t deadline_ms, rpc_stream **out);
/* Untrack and close a stream from session_open_stream; its final status goes to *st. */
void session_close_stream(session *s, rpc_stream *st, rpc_status *status);

/* ---- registration ---- */

/* The current actor id (0 before the first registration) and the registration generation
 * (bumps on every successful registration; gen may be NULL). */
uint64_t session_identity(session *s, long *gen);
/* Register (again) unless another thread already replaced stale_id (pass 0 the first time).
 * Retries with back-off until it succeeds; 0 on success, -1 when stopping or refused
 * (fatal). */
int session_register(session *s, uint64_t stale_id);
/* THE decision "the learner does not know this actor id: register again". One function for
 * every call site (heartbeat, watch, download, lease, submit): NOT_FOUND with the reason
 * "unknown_actor" (rpc_status.reason); from a learner that sends no reason, NOT_FOUND with a
 * message starting "unknown actor" (the text learner.proto documents). */
int session_is_unknown_actor(const rpc_status *st);

/* ---- parameters ---- */

void session_params_get(session *s, session_params *out);
void session_set_paused(session *s, int paused);
/* 1 if sp is usable: temperature in (0, 10], top_k >= 0, top_p in (0, 1], max_new_tokens in
 * [1, 65536], at most STOPS_MAX stop strings, each valid (stops_check). */
int session_sampling_valid(const Cohort__V1__SamplingParams *sp);
/* The one stop id the sampler uses for the learner's stop_token_ids: <eos> when the list is
 * empty or names it, else the first listed id. */
int session_stop_id(const Cohort__V1__SamplingParams *sp);

/* ---- counters ---- */

void session_count_sampled(session *s, long long tokens, long long completions);
/* A group the learner settled: accepted (1), not used (0); rewards of its ITEM_OK items. */
void session_count_submitted(session *s, int accepted, double reward_sum, long reward_n);
/* A group dropped without a submission being settled as accepted (stale). */
void session_count_dropped(session *s);
void session_stats_get(session *s, session_stats *out);

/* ---- heartbeat ---- */

/* The heartbeat thread's body: Heartbeat every heartbeat_interval_ms (applies the pause flag,
 * the sampling parameters, max_staleness and the learner's version), registers again for an
 * unknown actor, and, unless quiet, logs a progress line every progress_s seconds (0 = never).
 * Returns when the session stops. */
void session_heartbeat_run(session *s, double progress_s);

#endif
