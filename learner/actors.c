/* actors.c - the learner's registry of actors (see actors.h). */
#include "actors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct actors {
    actor_info *v; /* [max], the first n in registration order */
    int n, max;
    uint64_t state; /* id generator (splitmix64) */
};

static uint64_t next_id_(actors *a)
{
    for (;;) {
        uint64_t z = (a->state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        if (z != 0 && actors_check(a, z) == ACTORS_UNKNOWN)
            return z;
    }
}

static int find_(const actors *a, uint64_t id)
{
    for (int i = 0; i < a->n; i++)
        if (a->v[i].id == id)
            return i;
    return -1;
}

int actors_create(int max_actors, uint64_t seed, actors **out, coh_err *err)
{
    *out = NULL;
    if (max_actors < 1 || max_actors > 65536)
        return coh_fail(err, COH_EINVAL, "actors_create: max_actors must be 1..65536, got %d",
                        max_actors);
    actors *a = calloc(1, sizeof *a);
    if (a)
        a->v = calloc((size_t)max_actors, sizeof *a->v);
    if (!a || !a->v) {
        free(a);
        return coh_fail(err, COH_ENOMEM, "out of memory for %d actor records", max_actors);
    }
    a->max = max_actors;
    a->state = seed;
    *out = a;
    return COH_OK;
}

void actors_destroy(actors *a)
{
    if (a) {
        free(a->v);
        free(a);
    }
}

actors_verdict actors_register(actors *a, const char *name, const char *peer, int threads,
                               uint64_t now_ms, uint64_t *id, coh_err *err)
{
    if (name && strlen(name) > 128) {
        coh_fail(err, COH_EINVAL, "name is %zu bytes; at most 128", strlen(name));
        return ACTORS_BAD_REQUEST;
    }
    if (threads < 0) {
        coh_fail(err, COH_EINVAL, "threads must be >= 0, got %d", threads);
        return ACTORS_BAD_REQUEST;
    }
    if (a->n >= a->max) {
        coh_fail(err, COH_EFULL,
                 "%d actors are registered, the most this learner takes; stop an actor or "
                 "wait until a dead one is forgotten",
                 a->n);
        return ACTORS_FULL;
    }
    actor_info *r = &a->v[a->n];
    memset(r, 0, sizeof *r);
    r->id = next_id_(a);
    snprintf(r->name, sizeof r->name, "%s", name && name[0] ? name : "actor");
    snprintf(r->peer, sizeof r->peer, "%s", peer ? peer : "");
    r->threads = threads;
    r->registered_ms = r->last_heard_ms = now_ms;
    r->held_version = -1;
    a->n++;
    *id = r->id;
    return ACTORS_OK;
}

actors_verdict actors_heartbeat(actors *a, uint64_t id, int64_t held_version,
                                double tokens_per_s, int64_t completions, uint64_t now_ms,
                                coh_err *err)
{
    int i = find_(a, id);
    if (i < 0) {
        coh_fail(err, COH_ENOTFOUND, "unknown actor %016llx: register again",
                 (unsigned long long)id);
        return ACTORS_UNKNOWN;
    }
    if (held_version < -1 || !isfinite(tokens_per_s) || tokens_per_s < 0 || completions < 0) {
        coh_fail(err, COH_EINVAL,
                 "heartbeat: held_version must be >= -1, sampler_tokens_per_s finite and >= 0, "
                 "completions >= 0");
        return ACTORS_BAD_REQUEST;
    }
    actor_info *r = &a->v[i];
    r->last_heard_ms = now_ms;
    r->held_version = held_version;
    r->tokens_per_s = tokens_per_s;
    r->completions = completions;
    return ACTORS_OK;
}

actors_verdict actors_check(const actors *a, uint64_t id)
{
    return find_(a, id) >= 0 ? ACTORS_OK : ACTORS_UNKNOWN;
}

void actors_note_group(actors *a, uint64_t id, int ok)
{
    int i = find_(a, id);
    if (i >= 0) {
        if (ok)
            a->v[i].accepted++;
        else
            a->v[i].rejected++;
    }
}

int actors_sweep(actors *a, uint64_t now_ms, uint64_t dead_after_ms, uint64_t *dead, int max)
{
    int removed = 0, k = 0;
    for (int i = 0; i < a->n; i++) {
        const actor_info *r = &a->v[i];
        if (now_ms > r->last_heard_ms && now_ms - r->last_heard_ms > dead_after_ms) {
            if (removed < max && dead)
                dead[removed] = r->id;
            removed++;
        } else {
            a->v[k++] = a->v[i];
        }
    }
    a->n = k;
    return removed;
}

int actors_count(const actors *a) { return a ? a->n : 0; }

int actors_at(const actors *a, int i, actor_info *out)
{
    if (!a || i < 0 || i >= a->n)
        return COH_EINVAL;
    *out = a->v[i];
    return COH_OK;
}

actors_verdict actors_get(const actors *a, uint64_t id, actor_info *out)
{
    int i = find_(a, id);
    if (i < 0)
        return ACTORS_UNKNOWN;
    if (out)
        *out = a->v[i];
    return ACTORS_OK;
}
