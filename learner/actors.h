/* actors.h - the learner's registry of actors: who registered, when each was last heard
 * from, what each reports (held version, sampling rate, completions) and how its groups fared.
 *
 * Pure bookkeeping: no clock is read (every call that depends on time takes now_ms) and no
 * gRPC type appears, so the rules are testable on their own (tests/test_actors.c).
 *
 * Rules:
 *   - actors_register gives a fresh random non-zero id (never one already registered);
 *   - an actor not heard from (register or heartbeat) for more than dead_after_ms is dead:
 *     actors_sweep removes it and reports its id, so its leases can be issued again;
 *   - a call naming an id that is not registered gets ACTORS_UNKNOWN: the actor registers
 *     again (the wire says NOT_FOUND, reason "unknown_actor").
 *
 * Not thread-safe: the learner calls it from its loop thread only.
 */
#ifndef COHORT_ACTORS_H
#define COHORT_ACTORS_H

#include <stdint.h>

#include "err.h"

typedef struct actors actors; /* opaque */

/* What the registry knows of one actor (a copy; see actors_get / actors_at). */
typedef struct actor_info {
    uint64_t id;
    char name[129]; /* as registered (at most 128 bytes) */
    char peer[64];  /* transport address, e.g. "ipv4:127.0.0.1:41234" */
    int threads;
    uint64_t registered_ms, last_heard_ms;
    int64_t held_version; /* -1 until the first heartbeat reports one */
    double tokens_per_s;
    int64_t completions, accepted, rejected;
} actor_info;

typedef enum actors_verdict {
    ACTORS_OK = 0,
    ACTORS_UNKNOWN,     /* no such actor: register again */
    ACTORS_FULL,        /* the limit of registered actors is reached */
    ACTORS_BAD_REQUEST  /* a field out of range (message in err) */
} actors_verdict;

/* A registry for at most max_actors (1 .. 65536) actors; seed drives the ids (use a random
 * one per learner run, e.g. from getrandom(2)). COH_EINVAL / COH_ENOMEM; *out NULL then. */
int actors_create(int max_actors, uint64_t seed, actors **out, coh_err *err);
void actors_destroy(actors *a); /* NULL is fine */

/* Register an actor: name (<= 128 bytes, "" becomes "actor"), peer (may be NULL),
 * threads >= 0. On ACTORS_OK *id gets the new id. */
actors_verdict actors_register(actors *a, const char *name, const char *peer, int threads,
                               uint64_t now_ms, uint64_t *id, coh_err *err);

/* A heartbeat: held_version >= -1, tokens_per_s finite and >= 0, completions >= 0. */
actors_verdict actors_heartbeat(actors *a, uint64_t id, int64_t held_version,
                                double tokens_per_s, int64_t completions, uint64_t now_ms,
                                coh_err *err);

/* ACTORS_OK when id is registered (nothing changes). */
actors_verdict actors_check(const actors *a, uint64_t id);

/* Count a group of this actor as accepted (ok = 1) or refused (ok = 0); unknown ids are
 * ignored. */
void actors_note_group(actors *a, uint64_t id, int ok);

/* Remove every actor silent for more than dead_after_ms; their ids go to dead[0..) (at most
 * max). Returns how many were removed (all of them are removed even when more than max). */
int actors_sweep(actors *a, uint64_t now_ms, uint64_t dead_after_ms, uint64_t *dead, int max);

int actors_count(const actors *a);
/* The i-th registered actor (0 <= i < actors_count), in registration order. */
int actors_at(const actors *a, int i, actor_info *out);
/* ACTORS_OK and *out filled, or ACTORS_UNKNOWN. */
actors_verdict actors_get(const actors *a, uint64_t id, actor_info *out);

#endif
