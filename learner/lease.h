/* lease.h - the learner's prompt lease table: which actor holds which prompt, until when.
 *
 * An actor leases prompts (data-cursor indices), samples a group for each, and submits it
 * before the lease's deadline; the learner then completes the lease. A lease that passes its
 * deadline, that the actor hands back (SIGTERM), or whose actor is declared dead puts its
 * prompt in the ORPHAN queue, and lease_issue hands orphans out again, oldest first, before it
 * asks the source for new indices. So a killed actor costs only time, never prompts.
 *
 * No clock is read here: every call that depends on time takes now_ms from the caller (any
 * monotonic millisecond clock), which keeps the table deterministic and testable. A lease is
 * valid while now_ms < deadline_ms. Every mutator that takes now_ms first expires all live
 * leases whose deadline has passed (as lease_expire does), so what a call sees never depends
 * on how often the owner remembered to sweep.
 *
 * Lease states and the function that performs each transition:
 *
 *             lease_issue              lease_complete
 *    (prompt) ----------->  LIVE  ------------------------> COMPLETED
 *       ^                    |  deadline passed (any mutator) -> EXPIRED  \
 *       |                    |  lease_return                  -> RETURNED  > prompt -> orphan
 *       |                    |  lease_drop_actor              -> DROPPED  /   queue (FIFO)
 *       +-- lease_issue takes orphans first, then asks the source ---------------------+
 *
 * Invariants (tests/test_lease.c checks them under thousands of random interleavings):
 *   (1) every prompt index the table ever received (from the source or lease_requeue) is,
 *       at any time, in exactly one place: completed (exactly once), held by exactly one LIVE
 *       lease, or in the orphan queue;
 *   (2) outstanding + orphaned <= capacity;
 *   (3) issued == completed + expired + returned + dropped + outstanding;
 *   (4) lease ids are never 0 (LEASE_ALL) and never repeat within a table. An id is a
 *       bijective 64-bit mix of (issue counter XOR a mix of the table's salt), so an id
 *       minted by an earlier learner run (another salt, however close) decodes to a counter
 *       this table never reached and is refused as unknown, except with probability
 *       ~ issued / 2^64.
 *
 * Ended leases are remembered (state, time, prompt) for the last 2 * capacity endings, so a
 * late completion gets a precise reason ("expired at ..."); older ones still get COH_ESTATE,
 * with a less specific message.
 *
 * Cost: calls that take now_ms scan the live leases (O(capacity)); lookups by id are O(1).
 * Not thread-safe: the learner serialises calls (one event loop, or its own lock).
 */
#ifndef COHORT_LEASE_H
#define COHORT_LEASE_H

#include <stdint.h>

#include "err.h"

/* lease_return: every lease of the actor. Never a valid lease id. */
#define LEASE_ALL 0ULL

typedef struct lease_table lease_table; /* opaque */

/* One issued lease. */
typedef struct lease_grant {
    uint64_t lease_id;
    uint64_t prompt;      /* data-cursor index of the prompt */
    uint64_t deadline_ms; /* submit before this (same clock as now_ms) */
} lease_grant;

/* Source of new prompt indices, called by lease_issue once per new prompt needed.
 * Return 1 and set *prompt, 0 when the source has no more prompts right now, or a negative
 * COH_E* code (with a message in err) on failure. */
typedef int (*lease_next_fn)(void *ctx, uint64_t *prompt, coh_err *err);

typedef enum {
    LEASE_LIVE = 1,
    LEASE_COMPLETED,
    LEASE_EXPIRED,
    LEASE_RETURNED,
    LEASE_DROPPED
} lease_state;

/* "live", "completed", "expired", "returned", "dropped"; "unknown" otherwise. */
const char *lease_state_name(lease_state s);

typedef struct lease_info {
    lease_state state;
    uint64_t actor;
    uint64_t prompt;
    uint64_t issued_ms;
    uint64_t deadline_ms;
    uint64_t ended_ms; /* when it left LIVE (0 while live) */
} lease_info;

/* Counters for metrics. Cumulative since lease_create, except the last two (current). */
typedef struct lease_stats {
    uint64_t issued;    /* leases issued, for new prompts and orphans alike */
    uint64_t reissued;  /* of those, for an orphaned prompt */
    uint64_t completed;
    uint64_t expired;   /* deadline passed */
    uint64_t returned;  /* handed back by their actor */
    uint64_t dropped;   /* orphaned by lease_drop_actor */
    uint64_t refused;   /* lease_complete calls that failed */
    int outstanding;    /* live leases now */
    int orphaned;       /* prompts waiting to be issued again */
} lease_stats;

/* ---- lifecycle ---- */

/* A table for at most capacity outstanding leases (1 .. 1<<20) living ttl_ms (> 0) each.
 * salt should be random per learner run (e.g. from getrandom(2)): it makes lease ids of
 * different runs disjoint. Fails with COH_EINVAL or COH_ENOMEM; *out is NULL on failure. */
int lease_create(int capacity, uint64_t ttl_ms, uint64_t salt, lease_table **out, coh_err *err);
/* Frees everything; NULL is fine. */
void lease_destroy(lease_table *t);

/* ---- mutators ---- */

/* Issue up to n leases to actor: orphaned prompts first, in FIFO order, then new indices
 * from next(ctx, ...) (next may be NULL: orphans only). out[0..n) receives the grants.
 * Returns the number issued (0..n); fewer than n when the table is at capacity or the source
 * runs dry (0 when it is dry at once). Returns a negative code only if nothing was issued:
 * COH_EFULL when the table is at capacity (outstanding + orphaned count against it),
 * COH_EINVAL for bad arguments, or the source's error. A source error after some leases
 * were issued ends the batch early and is not reported: the leases issued are real, and the
 * next call meets the error again. n == 0 returns 0. */
int lease_issue(lease_table *t, uint64_t actor, int n, uint64_t now_ms, lease_next_fn next,
                void *ctx, lease_grant *out, coh_err *err);

/* The actor's group for this lease was accepted: the lease ends, its prompt is done.
 * Returns COH_OK, or (the lease unchanged):
 *   COH_ENOTFOUND  "unknown lease" (never issued by this table: another run, a typo);
 *   COH_EINVAL     the lease belongs to another actor;
 *   COH_ESTATE     the lease is no longer live: it expired (now_ms >= its deadline; its
 *                  prompt was orphaned to be issued again), was returned, was dropped, or
 *                  was already completed; the message says which and when.
 * Refusals count in lease_stats.refused. prompt (may be NULL) receives the lease's prompt
 * index on success. */
int lease_complete(lease_table *t, uint64_t lease_id, uint64_t actor, uint64_t now_ms,
                   uint64_t *prompt, coh_err *err);

/* The actor hands back lease_id, or every lease it holds with LEASE_ALL: their prompts are
 * orphaned (issued again before new ones). Returns the number of leases returned (1, or for
 * LEASE_ALL 0 or more), or for a single lease the errors of lease_complete (a lease past
 * its deadline has expired instead: COH_ESTATE, its prompt orphaned all the same). */
int lease_return(lease_table *t, uint64_t actor, uint64_t lease_id, uint64_t now_ms,
                 coh_err *err);

/* Expire every live lease with deadline <= now_ms, in issue order, orphaning their
 * prompts. Returns how many expired. Cannot fail. */
int lease_expire(lease_table *t, uint64_t now_ms);

/* The actor is gone (disconnected, missed heartbeats): orphan all its live leases (after
 * expiring the overdue ones of every actor). Returns how many were dropped. Cannot fail. */
int lease_drop_actor(lease_table *t, uint64_t actor, uint64_t now_ms);

/* Heartbeat: push the deadline of every live lease of actor to now_ms + ttl (overdue
 * leases expire first and are not revived). Returns how many were renewed. */
int lease_renew(lease_table *t, uint64_t actor, uint64_t now_ms);

/* Put prompt indices (e.g. the unfinished prompts saved in a checkpoint) at the back of the
 * orphan queue. All or nothing: COH_EFULL when outstanding + orphaned + n > capacity,
 * COH_EINVAL for bad arguments. */
int lease_requeue(lease_table *t, const uint64_t *prompts, int n, coh_err *err);

/* ---- queries ---- */

/* What lease_complete would say now, without changing anything (no expiry either: a live
 * lease past its deadline is reported as expired): COH_OK with *info (may be NULL) filled,
 * or the errors of lease_complete. */
int lease_check(const lease_table *t, uint64_t lease_id, uint64_t actor, uint64_t now_ms,
                lease_info *info, coh_err *err);

/* Live leases held by actor (overdue ones included until a mutator sweeps them). */
int lease_outstanding(const lease_table *t, uint64_t actor);

/* Every prompt not yet completed, for a checkpoint: the orphan queue in order, then the
 * prompts of live leases in issue order. Writes min(total, max) indices to out (may be NULL
 * when max is 0) and returns the total. */
int lease_pending(const lease_table *t, uint64_t *out, int max);

void lease_get_stats(const lease_table *t, lease_stats *out);
int lease_capacity(const lease_table *t);
uint64_t lease_ttl_ms(const lease_table *t);

#endif
