/* lease.c - the prompt lease table (see lease.h for the contract and the state diagram).
 *
 * Layout. Lease records live in one pool of capacity + history slots. A live record is on a
 * doubly linked list in issue order; an ended record (a tombstone, kept so that a late
 * completion gets a precise reason) is on the history ring, and the oldest tombstone is
 * recycled when the ring is full. An open-addressing hash (linear probing, backward-shift
 * deletion) maps lease ids to records; ids are well mixed, so their low bits index it
 * directly. The orphan queue is a ring of prompt indices; invariant (2) of lease.h bounds it
 * by capacity, so it never overflows.
 */
#include "lease.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>

#define LEASE_CAPACITY_MAX (1 << 20)
#define NIL (-1)

typedef struct lease_rec {
    uint64_t id; /* 0 = free slot */
    uint64_t actor;
    uint64_t prompt;
    uint64_t issued_ms;
    uint64_t deadline_ms;
    uint64_t ended_ms;
    int prev, next; /* live list links; next also links the free list */
    lease_state state;
} lease_rec;

struct lease_table {
    int capacity;
    uint64_t ttl_ms;
    uint64_t key;      /* mix of the salt: similar salts must give unrelated keys */
    uint64_t next_seq; /* issue counter: ids minted so far (plus skipped zero ids) */

    lease_rec *recs; /* [n_recs] = capacity + hist_cap */
    int n_recs;
    int free_head;

    int live_head, live_tail, n_live; /* live records, in issue order */

    int *hist; /* [hist_cap] ring of ended record indices, oldest at hist_head */
    int hist_cap, hist_head, hist_len;

    uint64_t *orphans; /* [capacity] ring of prompt indices, oldest at orph_head */
    int orph_head, orph_len;

    int *slots; /* [mask + 1] hash: record index or NIL */
    uint64_t mask;

    lease_stats st;
};

/* ---- private prototypes ---- */
static uint64_t mix_(uint64_t x);
static uint64_t unmix_(uint64_t x);
static int hash_find_(const lease_table *t, uint64_t id);
static void hash_insert_(lease_table *t, int ri);
static void hash_remove_(lease_table *t, uint64_t id);
static void live_unlink_(lease_table *t, int ri);
static void end_lease_(lease_table *t, int ri, lease_state how, uint64_t now_ms);
static int lookup_(const lease_table *t, uint64_t lease_id, uint64_t actor, uint64_t now_ms,
                   int *ri, coh_err *err);

/* ---- ids: a bijective mix of (counter ^ key), key = mix(salt) ----
 * Two tables decode each other's ids to counter ^ key_a ^ key_b: a random 64-bit number, far
 * beyond any counter either reached, however close their salts. */

#define MIX_M1 0xbf58476d1ce4e5b9ULL
#define MIX_M2 0x94d049bb133111ebULL

/* splitmix64's finaliser: every step is invertible, so distinct inputs give distinct ids. */
static uint64_t mix_(uint64_t x)
{
    x ^= x >> 30;
    x *= MIX_M1;
    x ^= x >> 27;
    x *= MIX_M2;
    x ^= x >> 31;
    return x;
}

static uint64_t unxorshift_(uint64_t x, int s)
{
    uint64_t y = x;
    for (int i = s; i < 64; i += s)
        y = x ^ (y >> s);
    return y;
}

/* Inverse of an odd number modulo 2^64 (Newton: each step doubles the correct bits). */
static uint64_t mulinv_(uint64_t a)
{
    uint64_t inv = a; /* correct to 3 bits for odd a */
    for (int i = 0; i < 5; i++)
        inv *= 2 - a * inv;
    return inv;
}

static uint64_t unmix_(uint64_t x)
{
    x = unxorshift_(x, 31);
    x *= mulinv_(MIX_M2);
    x = unxorshift_(x, 27);
    x *= mulinv_(MIX_M1);
    x = unxorshift_(x, 30);
    return x;
}

static uint64_t deadline_(uint64_t now_ms, uint64_t ttl_ms)
{
    return now_ms > UINT64_MAX - ttl_ms ? UINT64_MAX : now_ms + ttl_ms;
}

/* ---- hash of lease id -> record ---- */

static int hash_find_(const lease_table *t, uint64_t id)
{
    for (uint64_t i = id & t->mask;; i = (i + 1) & t->mask) {
        int ri = t->slots[i];
        if (ri == NIL)
            return NIL;
        if (t->recs[ri].id == id)
            return ri;
    }
}

static void hash_insert_(lease_table *t, int ri)
{
    uint64_t i = t->recs[ri].id & t->mask;
    while (t->slots[i] != NIL)
        i = (i + 1) & t->mask;
    t->slots[i] = ri;
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void hash_remove_(lease_table *t, uint64_t id)
{
    uint64_t i = id & t->mask;
    while (t->slots[i] == NIL || t->recs[t->slots[i]].id != id) {
        assert(t->slots[i] != NIL);
        i = (i + 1) & t->mask;
    }
    t->slots[i] = NIL;
    for (uint64_t j = (i + 1) & t->mask; t->slots[j] != NIL; j = (j + 1) & t->mask) {
        uint64_t home = t->recs[t->slots[j]].id & t->mask;
        /* the entry at j may move to the hole at i unless its home lies in (i, j] */
        int stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            t->slots[i] = t->slots[j];
            t->slots[j] = NIL;
            i = j;
        }
    }
}

/* ---- records ---- */

static void live_unlink_(lease_table *t, int ri)
{
    lease_rec *r = &t->recs[ri];
    if (r->prev != NIL)
        t->recs[r->prev].next = r->next;
    else
        t->live_head = r->next;
    if (r->next != NIL)
        t->recs[r->next].prev = r->prev;
    else
        t->live_tail = r->prev;
    r->prev = r->next = NIL;
    t->n_live--;
}

static void orphan_push_(lease_table *t, uint64_t prompt)
{
    assert(t->n_live + t->orph_len < t->capacity); /* invariant (2) of lease.h */
    t->orphans[(t->orph_head + t->orph_len) % t->capacity] = prompt;
    t->orph_len++;
}

static uint64_t orphan_pop_(lease_table *t)
{
    assert(t->orph_len > 0);
    uint64_t p = t->orphans[t->orph_head];
    t->orph_head = (t->orph_head + 1) % t->capacity;
    t->orph_len--;
    return p;
}

/* LIVE -> how: unlink, orphan the prompt unless completed, keep a tombstone. */
static void end_lease_(lease_table *t, int ri, lease_state how, uint64_t now_ms)
{
    lease_rec *r = &t->recs[ri];
    assert(r->state == LEASE_LIVE && how != LEASE_LIVE);
    live_unlink_(t, ri);
    r->state = how;
    r->ended_ms = now_ms;
    switch (how) {
    case LEASE_COMPLETED: t->st.completed++; break;
    case LEASE_EXPIRED: t->st.expired++; break;
    case LEASE_RETURNED: t->st.returned++; break;
    case LEASE_DROPPED: t->st.dropped++; break;
    default: break;
    }
    if (how != LEASE_COMPLETED)
        orphan_push_(t, r->prompt);

    if (t->hist_len == t->hist_cap) { /* forget the oldest ending */
        int old = t->hist[t->hist_head];
        t->hist_head = (t->hist_head + 1) % t->hist_cap;
        t->hist_len--;
        hash_remove_(t, t->recs[old].id);
        t->recs[old].id = 0;
        t->recs[old].next = t->free_head;
        t->free_head = old;
    }
    t->hist[(t->hist_head + t->hist_len) % t->hist_cap] = ri;
    t->hist_len++;
}

/* A new live lease for prompt; a free record exists whenever n_live < capacity. */
static void add_lease_(lease_table *t, uint64_t actor, uint64_t prompt, uint64_t now_ms,
                       lease_grant *g)
{
    assert(t->n_live < t->capacity && t->free_head != NIL);
    int ri = t->free_head;
    lease_rec *r = &t->recs[ri];
    t->free_head = r->next;

    uint64_t id;
    do
        id = mix_(t->next_seq++ ^ t->key);
    while (id == LEASE_ALL);

    r->id = id;
    r->actor = actor;
    r->prompt = prompt;
    r->issued_ms = now_ms;
    r->deadline_ms = deadline_(now_ms, t->ttl_ms);
    r->ended_ms = 0;
    r->state = LEASE_LIVE;
    r->prev = t->live_tail;
    r->next = NIL;
    if (t->live_tail != NIL)
        t->recs[t->live_tail].next = ri;
    else
        t->live_head = ri;
    t->live_tail = ri;
    t->n_live++;
    hash_insert_(t, ri);
    t->st.issued++;

    g->lease_id = id;
    g->prompt = prompt;
    g->deadline_ms = r->deadline_ms;
}

/* Find lease_id for actor and say why it cannot be completed now (COH_OK: live, in time). */
static int lookup_(const lease_table *t, uint64_t lease_id, uint64_t actor, uint64_t now_ms,
                   int *ri, coh_err *err)
{
    *ri = NIL;
    if (lease_id == LEASE_ALL || (unmix_(lease_id) ^ t->key) >= t->next_seq)
        return coh_fail(err, COH_ENOTFOUND,
                        "unknown lease 0x%016" PRIx64 ": this learner never issued it (a lease "
                        "from an earlier learner run?); lease new prompts",
                        lease_id);
    int i = hash_find_(t, lease_id);
    if (i == NIL)
        return coh_fail(err, COH_ESTATE,
                        "lease 0x%016" PRIx64 " ended long ago (no longer tracked): its prompt "
                        "was completed or issued again",
                        lease_id);
    const lease_rec *r = &t->recs[i];
    if (r->actor != actor)
        return coh_fail(err, COH_EINVAL,
                        "lease 0x%016" PRIx64 " belongs to actor %" PRIu64 ", not actor %" PRIu64,
                        lease_id, r->actor, actor);
    *ri = i;
    switch (r->state) {
    case LEASE_LIVE:
    case LEASE_EXPIRED: /* live and overdue: not swept yet (lease_check only) */
        if (r->state == LEASE_LIVE && now_ms < r->deadline_ms)
            return COH_OK;
        return coh_fail(err, COH_ESTATE,
                        "lease 0x%016" PRIx64 " expired at %" PRIu64 " ms (now %" PRIu64
                        " ms), its prompt %" PRIu64 " was issued again",
                        lease_id, r->deadline_ms, now_ms, r->prompt);
    case LEASE_RETURNED:
        return coh_fail(err, COH_ESTATE,
                        "lease 0x%016" PRIx64 " was returned by its actor at %" PRIu64
                        " ms, its prompt %" PRIu64 " was issued again",
                        lease_id, r->ended_ms, r->prompt);
    case LEASE_DROPPED:
        return coh_fail(err, COH_ESTATE,
                        "lease 0x%016" PRIx64 " was dropped at %" PRIu64 " ms (actor %" PRIu64
                        " declared gone), its prompt %" PRIu64 " was issued again",
                        lease_id, r->ended_ms, r->actor, r->prompt);
    case LEASE_COMPLETED:
        return coh_fail(err, COH_ESTATE,
                        "lease 0x%016" PRIx64 " was already completed at %" PRIu64
                        " ms (prompt %" PRIu64 "): a duplicate submission",
                        lease_id, r->ended_ms, r->prompt);
    }
    return coh_fail(err, COH_ESTATE, "lease 0x%016" PRIx64 " in an unknown state", lease_id);
}

/* ---- lifecycle ---- */

const char *lease_state_name(lease_state s)
{
    switch (s) {
    case LEASE_LIVE: return "live";
    case LEASE_COMPLETED: return "completed";
    case LEASE_EXPIRED: return "expired";
    case LEASE_RETURNED: return "returned";
    case LEASE_DROPPED: return "dropped";
    }
    return "unknown";
}

int lease_create(int capacity, uint64_t ttl_ms, uint64_t salt, lease_table **out, coh_err *err)
{
    if (!out)
        return coh_fail(err, COH_EINVAL, "lease_create: out is NULL");
    *out = NULL;
    if (capacity < 1 || capacity > LEASE_CAPACITY_MAX)
        return coh_fail(err, COH_EINVAL, "lease table capacity %d outside [1, %d]", capacity,
                        LEASE_CAPACITY_MAX);
    if (ttl_ms == 0)
        return coh_fail(err, COH_EINVAL, "lease ttl must be > 0 ms");

    lease_table *t = calloc(1, sizeof *t);
    if (!t)
        goto fail_nomem;
    t->capacity = capacity;
    t->ttl_ms = ttl_ms;
    t->key = mix_(salt ^ 0x9e3779b97f4a7c15ULL);
    t->hist_cap = 2 * capacity;
    t->n_recs = capacity + t->hist_cap;
    uint64_t n_slots = 1;
    while (n_slots < 2 * (uint64_t)t->n_recs)
        n_slots <<= 1;
    t->mask = n_slots - 1;

    t->recs = calloc((size_t)t->n_recs, sizeof *t->recs);
    t->hist = calloc((size_t)t->hist_cap, sizeof *t->hist);
    t->orphans = calloc((size_t)capacity, sizeof *t->orphans);
    t->slots = malloc(n_slots * sizeof *t->slots);
    if (!t->recs || !t->hist || !t->orphans || !t->slots)
        goto fail_nomem;

    for (uint64_t i = 0; i < n_slots; i++)
        t->slots[i] = NIL;
    for (int i = 0; i < t->n_recs; i++) {
        t->recs[i].prev = NIL;
        t->recs[i].next = i + 1 < t->n_recs ? i + 1 : NIL;
    }
    t->free_head = 0;
    t->live_head = t->live_tail = NIL;
    *out = t;
    return COH_OK;

fail_nomem:
    lease_destroy(t);
    return coh_fail(err, COH_ENOMEM, "lease table of capacity %d: out of memory", capacity);
}

void lease_destroy(lease_table *t)
{
    if (!t)
        return;
    free(t->recs);
    free(t->hist);
    free(t->orphans);
    free(t->slots);
    free(t);
}

/* ---- mutators ---- */

int lease_expire(lease_table *t, uint64_t now_ms)
{
    if (!t)
        return 0;
    int n = 0;
    for (int ri = t->live_head; ri != NIL;) {
        int next = t->recs[ri].next;
        if (now_ms >= t->recs[ri].deadline_ms) {
            end_lease_(t, ri, LEASE_EXPIRED, now_ms);
            n++;
        }
        ri = next;
    }
    return n;
}

int lease_issue(lease_table *t, uint64_t actor, int n, uint64_t now_ms, lease_next_fn next,
                void *ctx, lease_grant *out, coh_err *err)
{
    if (!t || n < 0 || (n > 0 && !out))
        return coh_fail(err, COH_EINVAL, "lease_issue: bad arguments (n = %d)", n);
    lease_expire(t, now_ms);
    int k = 0;
    while (k < n) {
        uint64_t prompt;
        if (t->orph_len > 0) {
            prompt = orphan_pop_(t);
            t->st.reissued++;
        } else if (t->n_live < t->capacity && next) {
            int rc = next(ctx, &prompt, err);
            if (rc < 0) {
                if (k == 0)
                    return rc;
                break;
            }
            if (rc == 0)
                break;
        } else {
            break;
        }
        add_lease_(t, actor, prompt, now_ms, &out[k]);
        k++;
    }
    if (k == 0 && n > 0 && t->n_live >= t->capacity)
        return coh_fail(err, COH_EFULL,
                        "lease table full: %d leases outstanding (capacity %d); submit or "
                        "return leases, or wait for them to expire",
                        t->n_live, t->capacity);
    return k;
}

int lease_complete(lease_table *t, uint64_t lease_id, uint64_t actor, uint64_t now_ms,
                   uint64_t *prompt, coh_err *err)
{
    if (!t)
        return coh_fail(err, COH_EINVAL, "lease_complete: table is NULL");
    lease_expire(t, now_ms);
    int ri;
    int rc = lookup_(t, lease_id, actor, now_ms, &ri, err);
    if (rc != COH_OK) {
        t->st.refused++;
        return rc;
    }
    if (prompt)
        *prompt = t->recs[ri].prompt;
    end_lease_(t, ri, LEASE_COMPLETED, now_ms);
    return COH_OK;
}

/* End every live lease of actor with state (returned or dropped); returns how many. */
static int end_actor_leases_(lease_table *t, uint64_t actor, lease_state state, uint64_t now_ms)
{
    int n = 0;
    for (int ri = t->live_head; ri != NIL;) {
        int next = t->recs[ri].next;
        if (t->recs[ri].actor == actor) {
            end_lease_(t, ri, state, now_ms);
            n++;
        }
        ri = next;
    }
    return n;
}

int lease_return(lease_table *t, uint64_t actor, uint64_t lease_id, uint64_t now_ms,
                 coh_err *err)
{
    if (!t)
        return coh_fail(err, COH_EINVAL, "lease_return: table is NULL");
    lease_expire(t, now_ms);
    if (lease_id != LEASE_ALL) {
        int ri;
        int rc = lookup_(t, lease_id, actor, now_ms, &ri, err);
        if (rc != COH_OK)
            return rc;
        end_lease_(t, ri, LEASE_RETURNED, now_ms);
        return 1;
    }
    return end_actor_leases_(t, actor, LEASE_RETURNED, now_ms);
}

int lease_drop_actor(lease_table *t, uint64_t actor, uint64_t now_ms)
{
    if (!t)
        return 0;
    lease_expire(t, now_ms);
    return end_actor_leases_(t, actor, LEASE_DROPPED, now_ms);
}

int lease_renew(lease_table *t, uint64_t actor, uint64_t now_ms)
{
    if (!t)
        return 0;
    lease_expire(t, now_ms);
    int n = 0;
    for (int ri = t->live_head; ri != NIL; ri = t->recs[ri].next) {
        if (t->recs[ri].actor == actor) {
            t->recs[ri].deadline_ms = deadline_(now_ms, t->ttl_ms);
            n++;
        }
    }
    return n;
}

int lease_requeue(lease_table *t, const uint64_t *prompts, int n, coh_err *err)
{
    if (!t || n < 0 || (n > 0 && !prompts))
        return coh_fail(err, COH_EINVAL, "lease_requeue: bad arguments (n = %d)", n);
    if ((long)t->n_live + t->orph_len + n > t->capacity)
        return coh_fail(err, COH_EFULL,
                        "cannot requeue %d prompts: %d outstanding + %d orphaned leave room "
                        "for %d (capacity %d)",
                        n, t->n_live, t->orph_len, t->capacity - t->n_live - t->orph_len,
                        t->capacity);
    for (int i = 0; i < n; i++)
        orphan_push_(t, prompts[i]);
    return COH_OK;
}

/* ---- queries ---- */

int lease_check(const lease_table *t, uint64_t lease_id, uint64_t actor, uint64_t now_ms,
                lease_info *info, coh_err *err)
{
    if (!t)
        return coh_fail(err, COH_EINVAL, "lease_check: table is NULL");
    int ri;
    int rc = lookup_(t, lease_id, actor, now_ms, &ri, err);
    if (info && ri != NIL) {
        const lease_rec *r = &t->recs[ri];
        info->state = r->state;
        info->actor = r->actor;
        info->prompt = r->prompt;
        info->issued_ms = r->issued_ms;
        info->deadline_ms = r->deadline_ms;
        info->ended_ms = r->ended_ms;
    }
    return rc;
}

int lease_outstanding(const lease_table *t, uint64_t actor)
{
    if (!t)
        return 0;
    int n = 0;
    for (int ri = t->live_head; ri != NIL; ri = t->recs[ri].next)
        n += t->recs[ri].actor == actor;
    return n;
}

int lease_pending(const lease_table *t, uint64_t *out, int max)
{
    if (!t)
        return 0;
    int n = 0;
    for (int i = 0; i < t->orph_len; i++, n++)
        if (n < max && out)
            out[n] = t->orphans[(t->orph_head + i) % t->capacity];
    for (int ri = t->live_head; ri != NIL; ri = t->recs[ri].next, n++)
        if (n < max && out)
            out[n] = t->recs[ri].prompt;
    return n;
}

void lease_get_stats(const lease_table *t, lease_stats *out)
{
    if (!out)
        return;
    if (!t) {
        *out = (lease_stats){0};
        return;
    }
    *out = t->st;
    out->outstanding = t->n_live;
    out->orphaned = t->orph_len;
}

int lease_capacity(const lease_table *t) { return t ? t->capacity : 0; }

uint64_t lease_ttl_ms(const lease_table *t) { return t ? t->ttl_ms : 0; }
