/* test_allocfail.c - allocation-failure injection for the lease table (learner/lease.h) and
 * the group buffer (learner/groupbuf.h).
 *
 * The executable is linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc (CMakeLists.txt,
 * this test only), so every allocation made by code linked into it (the test, cohort_learn,
 * cohort_common) goes through __wrap_*, which can fail the Nth one. The scenario below is the
 * learner's use of both modules (create, lease prompts, buffer the groups, complete the
 * leases, pop batches); it is run with the Nth allocation failing for N = 1, 2, ... until a
 * run meets no failure. After each injected failure the test checks that the call reported
 * COH_ENOMEM (and nothing else), that the module's invariants hold and nothing valid already
 * held was lost or altered, then retries the call (faults are one-shot) and goes on, so the
 * end state must equal the fault-free one. Leaks show under ASan/LSan (tests/run.sh).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "groupbuf.h"
#include "lease.h"

/* ---------------------------------------------------------------------------------------
 * The allocator wrappers
 * ------------------------------------------------------------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);

static int g_armed;    /* count (and maybe fail) allocations */
static long g_count;   /* allocations attempted while armed */
static long g_fail_at; /* fail the allocation with this number (1-based), 0 = none */
static int g_fail_all; /* fail every allocation while armed */
static long g_failed;  /* allocations failed so far */

static int should_fail(void)
{
    if (!g_armed)
        return 0;
    g_count++;
    if (g_fail_all || g_count == g_fail_at) {
        g_failed++;
        return 1;
    }
    return 0;
}

void *__wrap_malloc(size_t n)
{
    return should_fail() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return should_fail() ? NULL : __real_realloc(p, n);
}

static void arm(long fail_at)
{
    g_count = 0;
    g_failed = 0;
    g_fail_at = fail_at;
    g_fail_all = 0;
    g_armed = 1;
}

static void disarm(void)
{
    g_armed = 0;
}

/* the wrappers themselves: the Nth allocation fails, the others do not. The calls go
 * through volatile pointers: GCC may otherwise drop a malloc whose block is only freed. */
static void *(*volatile p_malloc)(size_t) = malloc;
static void *(*volatile p_calloc)(size_t, size_t) = calloc;
static void *(*volatile p_realloc)(void *, size_t) = realloc;

static void test_wrapper(void **state)
{
    arm(2);
    void *a = p_malloc(16), *b = p_calloc(4, 4), *c = p_malloc(8);
    disarm();
    assert_non_null(a);
    assert_null(b);
    assert_non_null(c);
    assert_int_equal(g_count, 3);
    assert_int_equal(g_failed, 1);
    arm(1);
    void *d = p_realloc(c, 64);
    disarm();
    assert_null(d); /* a failed realloc leaves the block to its owner */
    free(a);
    free(c);
}

/* ---------------------------------------------------------------------------------------
 * The scenario
 * ------------------------------------------------------------------------------------- */

enum { CAP_LEASES = 4, CAP_GROUPS = 3, G = 2, ACTOR = 7 };
/* Hand count of the allocations of the fault-free scenario: lease_create makes 5 (table,
 * records, history, orphan queue, hash slots), gbuf_create 2 (buffer, ring), and gbuf_push
 * one block per buffered group, 4 groups. */
enum { LEASE_ALLOCS = 5, GBUF_ALLOCS = 2, PUSHES = 4 };

static const gbuf_config gcfg = {
    .capacity = CAP_GROUPS,
    .group_size = G,
    .vocab_size = 16,
    .max_seq = 12,
    .max_new_tokens = 4,
    .max_staleness = 1,
};

/* The group submitted for prompt p, built from p alone so a popped copy can be compared. */
typedef struct group_src {
    int prompt_tokens[3];
    int tokens[G][4];
    float logp[G][4];
    gbuf_completion comps[G];
    gbuf_group g;
} group_src;

static void group_make(group_src *s, uint64_t p, uint64_t lease_id)
{
    memset(s, 0, sizeof *s);
    for (int j = 0; j < 3; j++)
        s->prompt_tokens[j] = (int)((p + (uint64_t)j) % 16);
    for (int i = 0; i < G; i++) {
        int n = 1 + (int)((p + (uint64_t)i) % 4); /* 1..4 completion tokens */
        for (int t = 0; t < n; t++) {
            s->tokens[i][t] = (int)((p * 3 + (uint64_t)(i * 5 + t)) % 16);
            s->logp[i][t] = -0.25f * (float)(t + 1 + i);
        }
        s->comps[i] = (gbuf_completion){.tokens = s->tokens[i], .n_tokens = n,
                                        .logp = s->logp[i], .n_logp = n, .version = 1,
                                        .reward = (double)p + 0.5 * i};
    }
    s->g.prompt = p;
    s->g.lease_id = lease_id;
    s->g.prompt_tokens = s->prompt_tokens;
    s->g.n_prompt = 3;
    s->g.completions = s->comps;
    s->g.n_completions = G;
}

static void group_expect(const gbuf_group *got, uint64_t p, uint64_t lease_id)
{
    group_src want;
    group_make(&want, p, lease_id);
    assert_int_equal(got->prompt, p);
    assert_int_equal(got->lease_id, lease_id);
    assert_int_equal(got->n_prompt, 3);
    assert_memory_equal(got->prompt_tokens, want.prompt_tokens, sizeof want.prompt_tokens);
    assert_int_equal(got->n_completions, G);
    for (int i = 0; i < G; i++) {
        const gbuf_completion *a = &got->completions[i], *b = &want.comps[i];
        assert_int_equal(a->n_tokens, b->n_tokens);
        assert_int_equal(a->n_logp, b->n_tokens);
        assert_memory_equal(a->tokens, b->tokens, (size_t)b->n_tokens * sizeof(int));
        assert_memory_equal(a->logp, b->logp, (size_t)b->n_tokens * sizeof(float));
        assert_int_equal(a->version, 1);
        assert_true(a->reward == b->reward);
    }
}

/* prompt source: 0, 1, 2, ... */
static int next_prompt(void *ctx, uint64_t *prompt, coh_err *err)
{
    uint64_t *cursor = ctx;
    *prompt = (*cursor)++;
    return 1;
}

/* lease.h invariants (2) and (3), and the live count */
static void lease_invariants(const lease_table *t, int outstanding)
{
    lease_stats s;
    lease_get_stats(t, &s);
    assert_int_equal(s.outstanding, outstanding);
    assert_true(s.outstanding + s.orphaned <= lease_capacity(t));
    assert_int_equal(s.issued, s.completed + s.expired + s.returned + s.dropped +
                                   (uint64_t)s.outstanding);
    assert_int_equal(lease_outstanding(t, ACTOR), outstanding);
}

/* Did an injected failure happen since *seen? Updates *seen. */
static int fault_since(long *seen)
{
    int hit = g_failed > *seen;
    *seen = g_failed;
    return hit;
}

/* Push the group of prompt p (lease lease_id) into b, where `held` groups are waiting.
 * An injected failure must give COH_ENOMEM, change nothing but the nomem counter, and the
 * retry must succeed. */
static void push_with_retry(gbuf *b, uint64_t p, uint64_t lease_id, int held, long *seen,
                            int *faults)
{
    group_src s;
    group_make(&s, p, lease_id);
    gbuf_stats before, after;
    gbuf_get_stats(b, &before);
    coh_err err = {0};
    int rc = gbuf_push(b, &s.g, 1, &err);
    if (fault_since(seen)) {
        (*faults)++;
        assert_int_equal(rc, COH_ENOMEM);
        assert_non_null(strstr(err.msg, "out of memory"));
        gbuf_get_stats(b, &after);
        assert_int_equal(gbuf_count(b), held);
        assert_int_equal(after.count, before.count);
        assert_int_equal(after.accepted, before.accepted);
        assert_int_equal(after.refused[GBUF_DROP_NOMEM], before.refused[GBUF_DROP_NOMEM] + 1);
        assert_int_equal(after.refused_total, before.refused_total + 1);
        rc = gbuf_push(b, &s.g, 1, &err); /* faults are one-shot: the retry goes in */
        assert_false(fault_since(seen));
    }
    assert_int_equal(rc, COH_OK);
    assert_int_equal(gbuf_count(b), held + 1);
}

/* Runs the scenario with the fail_at-th allocation failing (0: none). Returns the number of
 * allocations that succeeded and sets *faults to the failures it met (0 or 1). */
static long scenario(long fail_at, int *faults)
{
    long seen = 0;
    *faults = 0;
    coh_err err = {0};
    arm(fail_at);

    /* lease_create: on failure *out is NULL and nothing leaks */
    lease_table *t = (lease_table *)&err; /* not NULL, so a failure must clear it */
    int rc = lease_create(CAP_LEASES, 1000, 0x5eed, &t, &err);
    if (fault_since(&seen)) {
        (*faults)++;
        assert_int_equal(rc, COH_ENOMEM);
        assert_null(t);
        assert_non_null(strstr(err.msg, "out of memory"));
        rc = lease_create(CAP_LEASES, 1000, 0x5eed, &t, &err);
        assert_false(fault_since(&seen));
    }
    assert_int_equal(rc, COH_OK);
    assert_non_null(t);

    /* gbuf_create, the same way */
    gbuf *b = (gbuf *)&err;
    rc = gbuf_create(&gcfg, &b, &err);
    if (fault_since(&seen)) {
        (*faults)++;
        assert_int_equal(rc, COH_ENOMEM);
        assert_null(b);
        assert_non_null(strstr(err.msg, "out of memory"));
        rc = gbuf_create(&gcfg, &b, &err);
        assert_false(fault_since(&seen));
    }
    assert_int_equal(rc, COH_OK);
    assert_non_null(b);

    /* lease 3 prompts (0, 1, 2), buffer their groups, complete the leases */
    uint64_t cursor = 0, ids[4];
    lease_grant gr[CAP_LEASES];
    assert_int_equal(lease_issue(t, ACTOR, 3, 100, next_prompt, &cursor, gr, &err), 3);
    assert_false(fault_since(&seen)); /* issuing never allocates */
    lease_invariants(t, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(gr[i].prompt, (uint64_t)i);
        ids[i] = gr[i].lease_id;
        push_with_retry(b, gr[i].prompt, ids[i], i, &seen, faults);
        uint64_t p = 99;
        assert_int_equal(lease_complete(t, ids[i], ACTOR, 200, &p, &err), COH_OK);
        assert_int_equal(p, (uint64_t)i);
        lease_invariants(t, 2 - i);
    }

    /* full: backpressure, checked before any copy is made */
    assert_int_equal(lease_issue(t, ACTOR, 1, 300, next_prompt, &cursor, gr, &err), 1);
    assert_int_equal(gr[0].prompt, 3);
    ids[3] = gr[0].lease_id;
    group_src extra;
    group_make(&extra, 3, ids[3]);
    long count_before = g_count;
    assert_int_equal(gbuf_push(b, &extra.g, 1, &err), COH_EFULL);
    assert_int_equal(g_count, count_before);

    /* an update takes two groups: exactly what went in, oldest first */
    gbuf_group *out[CAP_GROUPS];
    assert_int_equal(gbuf_pop_batch(b, 2, 1, out), 2);
    group_expect(out[0], 0, ids[0]);
    group_expect(out[1], 1, ids[1]);
    gbuf_group_free(out[0]);
    gbuf_group_free(out[1]);

    /* prompt 3 goes in now; then the rest comes out */
    push_with_retry(b, 3, ids[3], 1, &seen, faults);
    assert_int_equal(lease_complete(t, ids[3], ACTOR, 400, NULL, &err), COH_OK);
    lease_invariants(t, 0);
    assert_int_equal(gbuf_pop_batch(b, CAP_GROUPS, 1, out), 2);
    group_expect(out[0], 2, ids[2]);
    group_expect(out[1], 3, ids[3]);
    gbuf_group_free(out[0]);
    gbuf_group_free(out[1]);
    assert_int_equal(gbuf_count(b), 0);

    gbuf_stats st;
    gbuf_get_stats(b, &st);
    assert_int_equal(st.accepted, 4);
    assert_int_equal(st.refused[GBUF_DROP_FULL], 1);
    /* a failed push is counted once; a failed create leaves no counter behind */
    int fault_in_push = *faults && fail_at > LEASE_ALLOCS + GBUF_ALLOCS;
    assert_int_equal(st.refused[GBUF_DROP_NOMEM], fault_in_push ? 1 : 0);
    lease_stats ls;
    lease_get_stats(t, &ls);
    assert_int_equal(ls.issued, 4);
    assert_int_equal(ls.completed, 4);

    disarm();
    long n = g_count - *faults; /* allocations that the fault-free run makes */
    gbuf_destroy(b);
    lease_destroy(t);
    return n;
}

static void test_scenario_every_allocation(void **state)
{
    const long want_allocs = LEASE_ALLOCS + GBUF_ALLOCS + PUSHES;
    int faults;
    assert_int_equal(scenario(0, &faults), want_allocs);
    assert_int_equal(faults, 0);
    long n;
    for (n = 1;; n++) {
        /* (a failed call may attempt more allocations after the one that failed, and the
         * retry makes its own: a faulted run counts more than want_allocs) */
        long allocs = scenario(n, &faults);
        if (!faults) {
            assert_int_equal(allocs, want_allocs);
            break;
        }
        assert_int_equal(faults, 1);
        assert_true(allocs >= want_allocs);
    }
    /* failures injected at 1 .. want_allocs, then a clean run */
    assert_int_equal(n, want_allocs + 1);
}

/* Once created, the lease table never allocates: with every allocation failing, a whole
 * lease life cycle (issue, renew, complete, return, expire, drop, requeue) still works. */
static void test_lease_needs_no_memory_after_create(void **state)
{
    lease_table *t = NULL;
    coh_err err = {0};
    assert_int_equal(lease_create(CAP_LEASES, 1000, 42, &t, &err), COH_OK);
    arm(0);
    g_fail_all = 1;
    uint64_t cursor = 10;
    lease_grant gr[CAP_LEASES];
    assert_int_equal(lease_issue(t, ACTOR, 4, 0, next_prompt, &cursor, gr, &err), 4);
    assert_int_equal(lease_renew(t, ACTOR, 500), 4);        /* deadlines now 1500 */
    assert_int_equal(lease_complete(t, gr[0].lease_id, ACTOR, 600, NULL, &err), COH_OK);
    assert_int_equal(lease_return(t, ACTOR, gr[1].lease_id, 700, &err), 1);
    assert_int_equal(lease_drop_actor(t, ACTOR, 800), 2);   /* gr[2], gr[3] */
    uint64_t pend[CAP_LEASES];
    assert_int_equal(lease_pending(t, pend, CAP_LEASES), 3); /* orphans 11, 12, 13 */
    assert_int_equal(pend[0], 11);
    assert_int_equal(pend[1], 12);
    assert_int_equal(pend[2], 13);
    uint64_t more = 20;
    assert_int_equal(lease_requeue(t, &more, 1, &err), COH_OK);
    assert_int_equal(lease_issue(t, ACTOR + 1, 4, 900, NULL, NULL, gr, &err), 4);
    assert_int_equal(gr[0].prompt, 11);
    assert_int_equal(gr[3].prompt, 20);
    assert_int_equal(lease_expire(t, 900 + 1000), 4);
    assert_int_equal(g_count, 0); /* not one allocation was even attempted */
    disarm();
    lease_stats s;
    lease_get_stats(t, &s);
    assert_int_equal(s.issued, 8);
    assert_int_equal(s.completed, 1);
    assert_int_equal(s.returned, 1);
    assert_int_equal(s.dropped, 2);
    assert_int_equal(s.expired, 4);
    assert_int_equal(s.orphaned, 4);
    lease_destroy(t);
}

/* A buffer with groups in it keeps them, unaltered, through any number of failed pushes. */
static void test_gbuf_failed_pushes_keep_contents(void **state)
{
    gbuf *b = NULL;
    coh_err err = {0};
    assert_int_equal(gbuf_create(&gcfg, &b, &err), COH_OK);
    group_src s;
    for (uint64_t p = 0; p < 2; p++) {
        group_make(&s, p, 100 + p);
        assert_int_equal(gbuf_push(b, &s.g, 1, &err), COH_OK);
    }
    arm(0);
    g_fail_all = 1;
    for (int k = 0; k < 5; k++) {
        group_make(&s, 50 + (uint64_t)k, 7);
        assert_int_equal(gbuf_push(b, &s.g, 1, &err), COH_ENOMEM);
        assert_int_equal(gbuf_count(b), 2);
    }
    /* an invalid group is still refused as invalid (validation comes first, no allocation) */
    group_make(&s, 9, 9);
    s.comps[0].reward = INFINITY;
    long before = g_count;
    assert_int_equal(gbuf_push(b, &s.g, 1, &err), COH_EINVAL);
    assert_int_equal(g_count, before);
    disarm();
    gbuf_stats st;
    gbuf_get_stats(b, &st);
    assert_int_equal(st.refused[GBUF_DROP_NOMEM], 5);
    assert_int_equal(st.refused[GBUF_DROP_REWARD], 1);
    assert_int_equal(st.accepted, 2);
    gbuf_group *out[CAP_GROUPS];
    assert_int_equal(gbuf_pop_batch(b, CAP_GROUPS, 1, out), 2);
    group_expect(out[0], 0, 100);
    group_expect(out[1], 1, 101);
    gbuf_group_free(out[0]);
    gbuf_group_free(out[1]);
    gbuf_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wrapper),
        cmocka_unit_test(test_scenario_every_allocation),
        cmocka_unit_test(test_lease_needs_no_memory_after_create),
        cmocka_unit_test(test_gbuf_failed_pushes_keep_contents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
