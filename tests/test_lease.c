/* test_lease.c - the prompt lease table of learner/lease.c.
 *
 * Unit tests walk every error path (message checked), expiry and re-issue order, returns,
 * actor drop, heartbeats, backpressure and the checkpoint helpers. The property test runs
 * thousands of random issue / complete / expire / return / drop / renew / requeue operations
 * against a small reference model, compares every answer and the pending set after each
 * step, and finally drains the table to prove that every prompt index it ever received is
 * completed exactly once: nothing is lost, nothing is done twice.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lease.h"
#include "rng.h"

#define HAS(msg, s)                                                                          \
    do {                                                                                     \
        if (!strstr((msg), (s)))                                                             \
            fail_msg("message \"%s\" lacks \"%s\"", (msg), (s));                              \
    } while (0)

/* ---- a prompt source: 0, 1, 2, ...; can run dry or fail ---- */

typedef struct src {
    uint64_t next;
    int dry;
    int fail;
    int calls;
} src;

static int src_next(void *ctx, uint64_t *prompt, coh_err *err)
{
    src *s = ctx;
    s->calls++;
    if (s->fail)
        return coh_fail(err, COH_EIO, "prompt source broken");
    if (s->dry)
        return 0;
    *prompt = s->next++;
    return 1;
}

static lease_table *make(int cap, uint64_t ttl, uint64_t salt)
{
    lease_table *t = NULL;
    coh_err err;
    assert_int_equal(lease_create(cap, ttl, salt, &t, &err), COH_OK);
    assert_non_null(t);
    return t;
}

/* ---- lifecycle ---- */

static void test_create_errors(void **state)
{
    (void)state;
    coh_err err;
    lease_table *t = (lease_table *)1;
    assert_int_equal(lease_create(0, 100, 1, &t, &err), COH_EINVAL);
    assert_null(t);
    HAS(err.msg, "capacity 0");
    assert_int_equal(lease_create((1 << 20) + 1, 100, 1, &t, &err), COH_EINVAL);
    assert_int_equal(lease_create(4, 0, 1, &t, &err), COH_EINVAL);
    HAS(err.msg, "ttl");
    assert_int_equal(lease_create(4, 10, 1, NULL, &err), COH_EINVAL);
    lease_destroy(NULL);

    t = make(3, 250, 7);
    assert_int_equal(lease_capacity(t), 3);
    assert_int_equal((int)lease_ttl_ms(t), 250);
    lease_grant g[2];
    assert_int_equal(lease_issue(t, 1, -1, 0, src_next, NULL, g, &err), COH_EINVAL);
    assert_int_equal(lease_issue(t, 1, 2, 0, src_next, NULL, NULL, &err), COH_EINVAL);
    assert_int_equal(lease_issue(t, 1, 0, 0, NULL, NULL, NULL, &err), 0);
    assert_int_equal(lease_requeue(t, NULL, 1, &err), COH_EINVAL);
    assert_string_equal(lease_state_name(LEASE_EXPIRED), "expired");
    assert_string_equal(lease_state_name((lease_state)99), "unknown");
    lease_destroy(t);
}

/* ---- issue and complete ---- */

static void test_issue_complete(void **state)
{
    (void)state;
    coh_err err;
    src s = {.next = 100};
    lease_table *t = make(8, 1000, 0x1234);
    lease_grant g[5];
    assert_int_equal(lease_issue(t, 7, 3, 10, src_next, &s, g, &err), 3);
    for (int i = 0; i < 3; i++) {
        assert_true(g[i].lease_id != LEASE_ALL);
        assert_int_equal((int)g[i].prompt, 100 + i);
        assert_int_equal((int)g[i].deadline_ms, 1010);
        for (int j = 0; j < i; j++)
            assert_true(g[i].lease_id != g[j].lease_id);
    }
    assert_int_equal(lease_outstanding(t, 7), 3);
    assert_int_equal(lease_outstanding(t, 8), 0);

    lease_info info;
    assert_int_equal(lease_check(t, g[1].lease_id, 7, 500, &info, &err), COH_OK);
    assert_int_equal(info.state, LEASE_LIVE);
    assert_int_equal((int)info.prompt, 101);
    assert_int_equal((int)info.issued_ms, 10);
    assert_int_equal((int)info.deadline_ms, 1010);

    uint64_t prompt = 0;
    assert_int_equal(lease_complete(t, g[1].lease_id, 7, 1009, &prompt, &err), COH_OK);
    assert_int_equal((int)prompt, 101);
    assert_int_equal(lease_outstanding(t, 7), 2);

    /* duplicate submission */
    assert_int_equal(lease_complete(t, g[1].lease_id, 7, 1009, NULL, &err), COH_ESTATE);
    HAS(err.msg, "already completed");
    assert_int_equal(lease_check(t, g[1].lease_id, 7, 1009, &info, &err), COH_ESTATE);
    assert_int_equal(info.state, LEASE_COMPLETED);
    assert_int_equal((int)info.ended_ms, 1009);

    lease_stats st;
    lease_get_stats(t, &st);
    assert_int_equal((int)st.issued, 3);
    assert_int_equal((int)st.completed, 1);
    assert_int_equal((int)st.refused, 1);
    assert_int_equal(st.outstanding, 2);
    assert_int_equal(st.orphaned, 0);
    lease_destroy(t);
}

static void test_unknown_and_foreign_ids(void **state)
{
    (void)state;
    coh_err err;
    src s = {0};
    lease_table *a = make(4, 1000, 111);
    lease_table *b = make(4, 1000, 222); /* "the previous learner run" */
    lease_grant ga[2], gb[2];
    assert_int_equal(lease_issue(a, 1, 2, 0, src_next, &s, ga, &err), 2);
    assert_int_equal(lease_issue(b, 1, 2, 0, src_next, &s, gb, &err), 2);
    assert_true(ga[0].lease_id != gb[0].lease_id);

    assert_int_equal(lease_complete(a, gb[0].lease_id, 1, 5, NULL, &err), COH_ENOTFOUND);
    HAS(err.msg, "unknown lease");
    assert_int_equal(lease_complete(a, 0xdeadbeefULL, 1, 5, NULL, &err), COH_ENOTFOUND);
    HAS(err.msg, "unknown lease");
    assert_int_equal(lease_complete(a, LEASE_ALL, 1, 5, NULL, &err), COH_ENOTFOUND);
    assert_int_equal(lease_return(a, 1, gb[1].lease_id, 5, &err), COH_ENOTFOUND);
    assert_int_equal(lease_check(a, gb[1].lease_id, 1, 5, NULL, &err), COH_ENOTFOUND);
    /* a's own leases are untouched by those refusals */
    assert_int_equal(lease_outstanding(a, 1), 2);
    assert_int_equal(lease_complete(a, ga[0].lease_id, 1, 5, NULL, &err), COH_OK);

    /* many ids from one table: all distinct, none accepted by the other */
    lease_table *c = make(1, 1000, 333);
    for (int i = 0; i < 2000; i++) {
        lease_grant g;
        assert_int_equal(lease_issue(c, 9, 1, 0, src_next, &s, &g, &err), 1);
        assert_int_equal(lease_check(a, g.lease_id, 9, 0, NULL, &err), COH_ENOTFOUND);
        assert_int_equal(lease_complete(c, g.lease_id, 9, 0, NULL, &err), COH_OK);
    }
    lease_destroy(a);
    lease_destroy(b);
    lease_destroy(c);
}

static void test_wrong_actor(void **state)
{
    (void)state;
    coh_err err;
    src s = {0};
    lease_table *t = make(4, 1000, 5);
    lease_grant g;
    assert_int_equal(lease_issue(t, 1, 1, 0, src_next, &s, &g, &err), 1);
    assert_int_equal(lease_complete(t, g.lease_id, 2, 10, NULL, &err), COH_EINVAL);
    HAS(err.msg, "belongs to actor 1, not actor 2");
    assert_int_equal(lease_return(t, 2, g.lease_id, 10, &err), COH_EINVAL);
    HAS(err.msg, "belongs to actor 1");
    assert_int_equal(lease_return(t, 2, LEASE_ALL, 10, &err), 0);
    assert_int_equal(lease_drop_actor(t, 2, 10), 0);
    assert_int_equal(lease_check(t, g.lease_id, 2, 10, NULL, &err), COH_EINVAL);
    assert_int_equal(lease_outstanding(t, 1), 1);
    assert_int_equal(lease_complete(t, g.lease_id, 1, 10, NULL, &err), COH_OK);
    lease_destroy(t);
}

/* ---- expiry and re-issue ---- */

static void test_expiry_and_reissue_order(void **state)
{
    (void)state;
    coh_err err;
    src s = {0};
    lease_table *t = make(8, 100, 9);
    lease_grant g[4];
    /* prompts 0,1 at t=0 (deadline 100); 2 at t=30 (130); 3 at t=60 (160) */
    assert_int_equal(lease_issue(t, 1, 2, 0, src_next, &s, g, &err), 2);
    assert_int_equal(lease_issue(t, 2, 1, 30, src_next, &s, g + 2, &err), 1);
    assert_int_equal(lease_issue(t, 1, 1, 60, src_next, &s, g + 3, &err), 1);

    assert_int_equal(lease_expire(t, 99), 0);
    /* valid strictly before the deadline */
    lease_info info;
    assert_int_equal(lease_check(t, g[0].lease_id, 1, 99, &info, &err), COH_OK);
    assert_int_equal(lease_check(t, g[0].lease_id, 1, 100, &info, &err), COH_ESTATE);
    HAS(err.msg, "expired at 100");
    assert_int_equal(info.state, LEASE_LIVE); /* lease_check changes nothing */

    assert_int_equal(lease_expire(t, 135), 3); /* 0, 1, 2 */
    lease_stats st;
    lease_get_stats(t, &st);
    assert_int_equal((int)st.expired, 3);
    assert_int_equal(st.orphaned, 3);
    assert_int_equal(st.outstanding, 1);

    assert_int_equal(lease_complete(t, g[2].lease_id, 2, 136, NULL, &err), COH_ESTATE);
    HAS(err.msg, "expired at 130");
    HAS(err.msg, "prompt 2 was issued again");

    /* another actor gets the orphans first (in issue order), then a new prompt */
    lease_grant h[5];
    assert_int_equal(lease_issue(t, 3, 4, 140, src_next, &s, h, &err), 4);
    assert_int_equal((int)h[0].prompt, 0);
    assert_int_equal((int)h[1].prompt, 1);
    assert_int_equal((int)h[2].prompt, 2);
    assert_int_equal((int)h[3].prompt, 4);
    lease_get_stats(t, &st);
    assert_int_equal((int)st.reissued, 3);
    assert_int_equal((int)st.issued, 8);

    /* completing an overdue lease that no one swept: refused, prompt orphaned right away */
    assert_int_equal(lease_complete(t, g[3].lease_id, 1, 160, NULL, &err), COH_ESTATE);
    HAS(err.msg, "expired at 160");
    lease_get_stats(t, &st);
    assert_int_equal(st.orphaned, 1);
    assert_int_equal(lease_issue(t, 3, 1, 161, src_next, &s, h, &err), 1);
    assert_int_equal((int)h[0].prompt, 3);
    lease_destroy(t);
}

static void test_renew(void **state)
{
    (void)state;
    coh_err err;
    src s = {0};
    lease_table *t = make(4, 100, 3);
    lease_grant g[2];
    assert_int_equal(lease_issue(t, 1, 1, 0, src_next, &s, g, &err), 1);
    assert_int_equal(lease_issue(t, 2, 1, 0, src_next, &s, g + 1, &err), 1);
    assert_int_equal(lease_renew(t, 1, 90), 1);
    assert_int_equal(lease_expire(t, 150), 1); /* actor 2's lease */
    assert_int_equal(lease_complete(t, g[0].lease_id, 1, 189, NULL, &err), COH_OK);
    /* an overdue lease is not revived */
    assert_int_equal(lease_issue(t, 1, 1, 200, src_next, &s, g, &err), 1);
    assert_int_equal(lease_renew(t, 1, 300), 0);
    assert_int_equal(lease_complete(t, g[0].lease_id, 1, 301, NULL, &err), COH_ESTATE);
    HAS(err.msg, "expired at 300");
    lease_destroy(t);
}

/* ---- returns and dead actors ---- */

static void test_return(void **state)
{
    (void)state;
    coh_err err;
    src s = {0};
    lease_table *t = make(8, 1000, 4);
    lease_grant a[3], b[2];
    assert_int_equal(lease_issue(t, 1, 3, 0, src_next, &s, a, &err), 3); /* 0 1 2 */
    assert_int_equal(lease_issue(t, 2, 2, 0, src_next, &s, b, &err), 2); /* 3 4 */

    assert_int_equal(lease_return(t, 1, a[1].lease_id, 10, &err), 1);
    assert_int_equal(lease_return(t, 1, a[1].lease_id, 11, &err), COH_ESTATE);
    HAS(err.msg, "returned by its actor at 10");
    assert_int_equal(lease_complete(t, a[1].lease_id, 1, 12, NULL, &err), COH_ESTATE);
    HAS(err.msg, "returned");
    HAS(err.msg, "prompt 1 was issued again");

    assert_int_equal(lease_return(t, 1, LEASE_ALL, 20, &err), 2); /* SIGTERM: 0 and 2 */
    assert_int_equal(lease_outstanding(t, 1), 0);
    assert_int_equal(lease_outstanding(t, 2), 2);
    lease_stats st;
    lease_get_stats(t, &st);
    assert_int_equal((int)st.returned, 3);
    assert_int_equal(st.orphaned, 3);

    lease_grant h[4];
    assert_int_equal(lease_issue(t, 3, 4, 30, src_next, &s, h, &err), 4);
    assert_int_equal((int)h[0].prompt, 1);
    assert_int_equal((int)h[1].prompt, 0);
    assert_int_equal((int)h[2].prompt, 2);
    assert_int_equal((int)h[3].prompt, 5);

    /* a lease past its deadline expires rather than being returned */
    assert_int_equal(lease_return(t, 2, b[0].lease_id, 1000, &err), COH_ESTATE);
    HAS(err.msg, "expired");
    lease_get_stats(t, &st);
    assert_int_equal((int)st.expired, 2);
    assert_int_equal((int)st.returned, 3);
    lease_destroy(t);
}

static void test_drop_actor(void **state)
{
    (void)state;
    coh_err err;
    src s = {0};
    lease_table *t = make(8, 1000, 6);
    lease_grant a[3], b[2];
    assert_int_equal(lease_issue(t, 10, 2, 0, src_next, &s, a, &err), 2);     /* 0 1 */
    assert_int_equal(lease_issue(t, 20, 2, 0, src_next, &s, b, &err), 2);     /* 2 3 */
    assert_int_equal(lease_issue(t, 10, 1, 5, src_next, &s, a + 2, &err), 1); /* 4 */
    assert_int_equal(lease_complete(t, a[0].lease_id, 10, 6, NULL, &err), COH_OK);

    assert_int_equal(lease_drop_actor(t, 10, 50), 2); /* 1 and 4 */
    assert_int_equal(lease_drop_actor(t, 10, 51), 0);
    assert_int_equal(lease_outstanding(t, 20), 2);
    assert_int_equal(lease_complete(t, a[2].lease_id, 10, 60, NULL, &err), COH_ESTATE);
    HAS(err.msg, "dropped at 50");
    HAS(err.msg, "actor 10");

    lease_grant h[3];
    assert_int_equal(lease_issue(t, 30, 3, 70, src_next, &s, h, &err), 3);
    assert_int_equal((int)h[0].prompt, 1);
    assert_int_equal((int)h[1].prompt, 4);
    assert_int_equal((int)h[2].prompt, 5);
    lease_stats st;
    lease_get_stats(t, &st);
    assert_int_equal((int)st.dropped, 2);
    assert_int_equal((int)st.issued,
                     (int)(st.completed + st.expired + st.returned + st.dropped) +
                         st.outstanding);
    lease_destroy(t);
}

/* ---- backpressure and the source ---- */

static void test_full_and_source(void **state)
{
    (void)state;
    coh_err err;
    src s = {0};
    lease_table *t = make(3, 100, 8);
    lease_grant g[5];
    assert_int_equal(lease_issue(t, 1, 5, 0, src_next, &s, g, &err), 3); /* partial */
    assert_int_equal(lease_issue(t, 2, 1, 1, src_next, &s, g, &err), COH_EFULL);
    HAS(err.msg, "lease table full");
    HAS(err.msg, "capacity 3");

    /* orphans do not need room: they re-use their own */
    assert_int_equal(lease_expire(t, 100), 3);
    assert_int_equal(lease_issue(t, 2, 5, 101, NULL, NULL, g, &err), 3);
    assert_int_equal(lease_issue(t, 2, 1, 101, NULL, NULL, g, &err), COH_EFULL);
    assert_int_equal(lease_return(t, 2, LEASE_ALL, 102, &err), 3);

    /* a failing source: error when nothing was issued, a short batch otherwise */
    s.fail = 1;
    assert_int_equal(lease_issue(t, 3, 2, 103, src_next, &s, g, &err), 2); /* orphans 0 1 */
    assert_int_equal(lease_issue(t, 3, 2, 103, src_next, &s, g, &err), 1); /* orphan 2 */
    assert_int_equal(lease_return(t, 3, LEASE_ALL, 104, &err), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(lease_issue(t, 3, 1, 105, src_next, &s, g, &err), 1);
    assert_int_equal(lease_return(t, 3, g[0].lease_id, 106, &err), 1);
    assert_int_equal(lease_issue(t, 3, 1, 107, src_next, &s, g, &err), 1);
    assert_int_equal(lease_complete(t, g[0].lease_id, 3, 108, NULL, &err), COH_OK);
    int calls = s.calls;
    assert_int_equal(lease_issue(t, 3, 1, 109, src_next, &s, g, &err), COH_EIO);
    HAS(err.msg, "prompt source broken");
    assert_int_equal(s.calls, calls + 1);

    /* a dry source: nothing issued, no error */
    s.fail = 0;
    s.dry = 1;
    assert_int_equal(lease_issue(t, 3, 2, 110, src_next, &s, g, &err), 0);
    assert_int_equal(lease_issue(t, 3, 2, 110, NULL, NULL, g, &err), 0);
    s.dry = 0;
    assert_int_equal(lease_issue(t, 3, 2, 111, src_next, &s, g, &err), 1);
    assert_int_equal((int)g[0].prompt, 3);
    lease_destroy(t);
}

/* ---- history, checkpoint helpers ---- */

static void test_history_eviction(void **state)
{
    (void)state;
    coh_err err;
    src s = {0};
    lease_table *t = make(2, 1000, 10); /* remembers the last 4 endings */
    lease_grant first;
    assert_int_equal(lease_issue(t, 1, 1, 0, src_next, &s, &first, &err), 1);
    assert_int_equal(lease_complete(t, first.lease_id, 1, 1, NULL, &err), COH_OK);
    for (int i = 0; i < 3; i++) {
        lease_grant g;
        assert_int_equal(lease_issue(t, 1, 1, 2, src_next, &s, &g, &err), 1);
        assert_int_equal(lease_complete(t, g.lease_id, 1, 3, NULL, &err), COH_OK);
    }
    assert_int_equal(lease_complete(t, first.lease_id, 1, 4, NULL, &err), COH_ESTATE);
    HAS(err.msg, "already completed");
    lease_grant g;
    assert_int_equal(lease_issue(t, 1, 1, 5, src_next, &s, &g, &err), 1);
    assert_int_equal(lease_complete(t, g.lease_id, 1, 6, NULL, &err), COH_OK);
    assert_int_equal(lease_complete(t, first.lease_id, 1, 7, NULL, &err), COH_ESTATE);
    HAS(err.msg, "no longer tracked");
    /* forgotten, but still not taken for a foreign id */
    assert_int_equal(lease_check(t, first.lease_id, 2, 7, NULL, &err), COH_ESTATE);
    lease_destroy(t);
}

static void test_pending_and_requeue(void **state)
{
    (void)state;
    coh_err err;
    src s = {.next = 50};
    lease_table *t = make(6, 100, 11);
    lease_grant g[4];
    assert_int_equal(lease_issue(t, 1, 4, 0, src_next, &s, g, &err), 4); /* 50..53 */
    assert_int_equal(lease_complete(t, g[1].lease_id, 1, 1, NULL, &err), COH_OK);
    assert_int_equal(lease_return(t, 1, g[2].lease_id, 2, &err), 1);
    assert_int_equal(lease_pending(t, NULL, 0), 3);
    uint64_t p[8];
    assert_int_equal(lease_pending(t, p, 8), 3);
    assert_int_equal((int)p[0], 52); /* orphans first */
    assert_int_equal((int)p[1], 50);
    assert_int_equal((int)p[2], 53);
    assert_int_equal(lease_pending(t, p, 1), 3);

    /* a restarted learner puts the saved prompts back */
    lease_table *r = make(6, 100, 12);
    assert_int_equal(lease_requeue(r, p, 3, &err), COH_OK);
    uint64_t more[4] = {1, 2, 3, 4};
    assert_int_equal(lease_requeue(r, more, 4, &err), COH_EFULL);
    HAS(err.msg, "cannot requeue 4 prompts");
    assert_int_equal(lease_requeue(r, more, 3, &err), COH_OK);
    assert_int_equal(lease_issue(r, 1, 1, 0, src_next, &s, g, &err), 1);
    assert_int_equal((int)g[0].prompt, 52);
    assert_int_equal(lease_pending(r, p, 8), 6);
    lease_destroy(t);
    lease_destroy(r);
}

/* ---- randomized no-loss property against a reference model ---- */

#define M_MAX 200000

typedef struct mgrant {
    uint64_t id, actor, prompt, deadline;
    lease_state state;
    long endno; /* ending number, for the history window */
} mgrant;

typedef struct model {
    mgrant *g;
    int ng;
    int *live; /* grant indices in issue order */
    int nlive;
    uint64_t *orph; /* FIFO */
    int oh, ot;
    int *done;  /* completions per prompt index */
    long ends;  /* endings so far */
    int cap;
    uint64_t ttl;
} model;

static void m_end(model *m, int li, lease_state how)
{
    int gi = m->live[li];
    m->g[gi].state = how;
    m->g[gi].endno = m->ends++;
    memmove(m->live + li, m->live + li + 1, (size_t)(m->nlive - li - 1) * sizeof *m->live);
    m->nlive--;
    if (how != LEASE_COMPLETED)
        m->orph[m->ot++] = m->g[gi].prompt;
    else if (++m->done[m->g[gi].prompt] > 1)
        fail_msg("prompt %lu completed twice", (unsigned long)m->g[gi].prompt);
}

static int m_sweep(model *m, uint64_t now)
{
    int n = 0;
    for (int li = 0; li < m->nlive;) {
        if (now >= m->g[m->live[li]].deadline) {
            m_end(m, li, LEASE_EXPIRED);
            n++;
        } else {
            li++;
        }
    }
    return n;
}

static int m_live_index(const model *m, int gi)
{
    for (int li = 0; li < m->nlive; li++)
        if (m->live[li] == gi)
            return li;
    return -1;
}

/* Expected code of lease_complete / lease_return / lease_check on grant gi (after sweep). */
static int m_expect(const model *m, int gi, uint64_t actor, uint64_t now)
{
    const mgrant *x = &m->g[gi];
    if (x->state != LEASE_LIVE && m->ends - x->endno > 2L * m->cap)
        return COH_ESTATE; /* forgotten */
    if (x->actor != actor)
        return COH_EINVAL;
    if (x->state == LEASE_LIVE && now < x->deadline)
        return COH_OK;
    return COH_ESTATE;
}

static void m_check(const model *m, const lease_table *t)
{
    lease_stats st;
    lease_get_stats(t, &st);
    assert_int_equal(st.outstanding, m->nlive);
    assert_int_equal(st.orphaned, m->ot - m->oh);
    assert_true(st.outstanding + st.orphaned <= m->cap);
    assert_int_equal((long)st.issued, (long)(st.completed + st.expired + st.returned +
                                             st.dropped) + st.outstanding);
    static uint64_t p[4096];
    int n = lease_pending(t, p, 4096);
    assert_int_equal(n, st.orphaned + st.outstanding);
    int k = 0;
    for (int i = m->oh; i < m->ot; i++)
        assert_int_equal((long)p[k++], (long)m->orph[i]);
    for (int li = 0; li < m->nlive; li++)
        assert_int_equal((long)p[k++], (long)m->g[m->live[li]].prompt);
}

static void run_property(uint64_t seed, int cap, uint64_t ttl, int n_ops)
{
    coh_err err;
    rng r;
    rng_init(&r, seed);
    model m = {0};
    m.g = calloc(M_MAX, sizeof *m.g);
    m.live = calloc((size_t)cap, sizeof *m.live);
    m.orph = calloc(M_MAX, sizeof *m.orph);
    m.done = calloc(M_MAX, sizeof *m.done);
    assert_true(m.g && m.live && m.orph && m.done);
    m.cap = cap;
    m.ttl = ttl;

    lease_table *t = make(cap, ttl, rng_u64(&r));
    src s = {0};
    uint64_t now = 1000;
    const int n_actors = 5;
    lease_grant out[8];

    for (int op = 0; op < n_ops; op++) {
        now += rng_below(&r, 8) == 0 ? rng_below(&r, ttl / 3 + 1) : 0;
        uint64_t actor = rng_below(&r, n_actors);
        int kind = (int)rng_below(&r, 100);
        if (kind < 30) { /* issue */
            int n = 1 + (int)rng_below(&r, 6);
            s.dry = rng_below(&r, 10) == 0;
            s.fail = rng_below(&r, 20) == 0;
            uint64_t expect_new = s.next; /* the source's cursor before the call */
            int got = lease_issue(t, actor, n, now, src_next, &s, out, &err);
            m_sweep(&m, now);
            int k = 0, err_code = 0;
            /* replay the model: orphans first, then the source */
            while (k < n) {
                uint64_t prompt;
                if (m.oh < m.ot) {
                    prompt = m.orph[m.oh++];
                } else if (m.nlive < cap) {
                    if (s.fail) {
                        if (k == 0)
                            err_code = COH_EIO;
                        break;
                    }
                    if (s.dry)
                        break;
                    prompt = expect_new++;
                } else {
                    if (k == 0)
                        err_code = COH_EFULL;
                    break;
                }
                assert_true(k < got);
                assert_int_equal((long)out[k].prompt, (long)prompt);
                assert_int_equal((long)out[k].deadline_ms, (long)(now + ttl));
                assert_true(out[k].lease_id != LEASE_ALL);
                assert_true(m.ng < M_MAX);
                m.g[m.ng] = (mgrant){out[k].lease_id, actor, prompt, now + ttl, LEASE_LIVE, 0};
                m.live[m.nlive++] = m.ng++;
                k++;
            }
            if (err_code)
                assert_int_equal(got, err_code);
            else
                assert_int_equal(got, k);
            assert_int_equal((long)expect_new, (long)s.next);
        } else if (kind < 62 && m.ng > 0) { /* complete (mostly recent grants) */
            int pick = (int)rng_below(&r, 4);
            int gi = pick < 2 && m.nlive > 0 ? m.live[rng_below(&r, (uint64_t)m.nlive)]
                     : pick == 2 ? m.ng - 1 - (int)rng_below(&r, m.ng < 40 ? m.ng : 40)
                                 : (int)rng_below(&r, m.ng);
            uint64_t who = rng_below(&r, 10) ? m.g[gi].actor : actor;
            uint64_t prompt = UINT64_MAX;
            int rc = lease_complete(t, m.g[gi].id, who, now, &prompt, &err);
            m_sweep(&m, now);
            int want = m_expect(&m, gi, who, now);
            assert_int_equal(rc, want);
            if (rc == COH_OK) {
                assert_int_equal((long)prompt, (long)m.g[gi].prompt);
                m_end(&m, m_live_index(&m, gi), LEASE_COMPLETED);
            }
        } else if (kind < 66) { /* garbage id */
            uint64_t id = rng_u64(&r);
            assert_int_equal(lease_complete(t, id, actor, now, NULL, &err), COH_ENOTFOUND);
            m_sweep(&m, now);
        } else if (kind < 74) { /* explicit sweep */
            assert_int_equal(lease_expire(t, now), m_sweep(&m, now));
        } else if (kind < 82 && m.ng > 0) { /* return one */
            int gi = m.ng - 1 - (int)rng_below(&r, m.ng < 20 ? m.ng : 20);
            uint64_t who = rng_below(&r, 10) ? m.g[gi].actor : actor;
            int rc = lease_return(t, who, m.g[gi].id, now, &err);
            m_sweep(&m, now);
            int want = m_expect(&m, gi, who, now);
            assert_int_equal(rc, want == COH_OK ? 1 : want);
            if (rc == 1)
                m_end(&m, m_live_index(&m, gi), LEASE_RETURNED);
        } else if (kind < 85) { /* return all (SIGTERM) */
            int rc = lease_return(t, actor, LEASE_ALL, now, &err);
            m_sweep(&m, now);
            int n = 0;
            for (int li = 0; li < m.nlive;)
                if (m.g[m.live[li]].actor == actor) {
                    m_end(&m, li, LEASE_RETURNED);
                    n++;
                } else {
                    li++;
                }
            assert_int_equal(rc, n);
        } else if (kind < 88) { /* actor declared dead */
            int rc = lease_drop_actor(t, actor, now);
            m_sweep(&m, now);
            int n = 0;
            for (int li = 0; li < m.nlive;)
                if (m.g[m.live[li]].actor == actor) {
                    m_end(&m, li, LEASE_DROPPED);
                    n++;
                } else {
                    li++;
                }
            assert_int_equal(rc, n);
        } else if (kind < 93) { /* heartbeat */
            int rc = lease_renew(t, actor, now);
            m_sweep(&m, now);
            int n = 0;
            for (int li = 0; li < m.nlive; li++)
                if (m.g[m.live[li]].actor == actor) {
                    m.g[m.live[li]].deadline = now + ttl;
                    n++;
                }
            assert_int_equal(rc, n);
            assert_int_equal(lease_outstanding(t, actor), n);
        } else if (kind < 95) { /* requeue fresh prompts (a restored checkpoint) */
            uint64_t p[3];
            int n = 1 + (int)rng_below(&r, 3);
            for (int i = 0; i < n; i++)
                p[i] = s.next + (uint64_t)i;
            int rc = lease_requeue(t, p, n, &err);
            if (m.nlive + (m.ot - m.oh) + n <= cap) {
                assert_int_equal(rc, COH_OK);
                s.next += (uint64_t)n;
                for (int i = 0; i < n; i++)
                    m.orph[m.ot++] = p[i];
            } else {
                assert_int_equal(rc, COH_EFULL);
            }
        } else if (m.ng > 0) { /* pure check: no state change */
            int gi = (int)rng_below(&r, m.ng);
            lease_info info;
            int rc = lease_check(t, m.g[gi].id, m.g[gi].actor, now, &info, &err);
            assert_int_equal(rc, m_expect(&m, gi, m.g[gi].actor, now));
            if (rc == COH_OK)
                assert_int_equal((long)info.prompt, (long)m.g[gi].prompt);
        }
        m_check(&m, t);
    }

    /* Drain: everything expires, then the orphans are issued and completed, and every prompt
     * the table ever received is completed exactly once. */
    now += ttl;
    m_sweep(&m, now);
    lease_expire(t, now);
    m_check(&m, t);
    s.dry = 1;
    for (;;) {
        int got = lease_issue(t, 99, 8, now, NULL, NULL, out, &err);
        assert_true(got >= 0);
        if (got == 0)
            break;
        for (int i = 0; i < got; i++) {
            uint64_t prompt;
            assert_int_equal(lease_complete(t, out[i].lease_id, 99, now, &prompt, &err),
                             COH_OK);
            m.done[prompt]++;
        }
    }
    lease_stats st;
    lease_get_stats(t, &st);
    assert_int_equal(st.outstanding, 0);
    assert_int_equal(st.orphaned, 0);
    assert_int_equal(lease_pending(t, NULL, 0), 0);
    for (uint64_t i = 0; i < s.next; i++)
        if (m.done[i] != 1)
            fail_msg("seed %lu: prompt %lu completed %d times", (unsigned long)seed,
                     (unsigned long)i, m.done[i]);
    assert_int_equal((long)st.completed, (long)s.next);
    assert_true(st.expired > 0 && st.returned > 0 && st.dropped > 0 && st.reissued > 0);

    lease_destroy(t);
    free(m.g);
    free(m.live);
    free(m.orph);
    free(m.done);
}

static void test_property_no_loss(void **state)
{
    (void)state;
    run_property(1, 16, 50, 20000);
    run_property(2, 1, 30, 5000);
    run_property(3, 7, 200, 20000);
    run_property(4, 64, 80, 20000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_issue_complete),
        cmocka_unit_test(test_unknown_and_foreign_ids),
        cmocka_unit_test(test_wrong_actor),
        cmocka_unit_test(test_expiry_and_reissue_order),
        cmocka_unit_test(test_renew),
        cmocka_unit_test(test_return),
        cmocka_unit_test(test_drop_actor),
        cmocka_unit_test(test_full_and_source),
        cmocka_unit_test(test_history_eviction),
        cmocka_unit_test(test_pending_and_requeue),
        cmocka_unit_test(test_property_no_loss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
