/* test_admit.c - admission of submitted groups (learner/admit.c).
 *
 * On a real actors registry, lease table, group buffer and prompt source (the built-in
 * "addition" task with the default tokenizer) every verdict is produced and its side effects
 * checked: what is buffered (with its acceptance number and actor), which leases are settled
 * and which stay live for a fixed resubmission, that only BUFFERED touches the buffer and
 * that the commit hook runs exactly once per buffered group, before the buffer changes. The
 * verdict tables (gRPC status, reason token, drop reason) are checked against a hand-written
 * table.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admit.h"
#include "trainer.h"

#define HAS(msg, s)                                                                          \
    do {                                                                                     \
        if (!strstr((msg), (s)))                                                             \
            fail_msg("message \"%s\" lacks \"%s\"", (msg), (s));                              \
    } while (0)

#define G 2
#define NT 3
#define TTL 1000
#define VERSION 5
#define STALENESS 2

/* ---- the learner's state ---- */

typedef struct hook {
    int calls;
    int fail;
    uint64_t seq, actor, prompt, lease_id;
    int count_at_call; /* gbuf_count when the hook ran */
    gbuf *buf;
} hook;

static int commit_hook(void *ctx, const gbuf_group *g, coh_err *err)
{
    hook *h = ctx;
    h->calls++;
    h->seq = g->seq;
    h->actor = g->actor;
    h->prompt = g->prompt;
    h->lease_id = g->lease_id;
    h->count_at_call = gbuf_count(h->buf);
    if (h->fail)
        return coh_fail(err, COH_EIO, "acklog write failed: disk full");
    return COH_OK;
}

typedef struct world {
    tokenizer *tok;
    psrc *prompts;
    actors *actors;
    lease_table *leases;
    gbuf *buf;
    gbuf_config bcfg;
    hook hook;
    admit_env env;
    uint64_t a, b, c; /* three registered actors */
} world;

static int next_prompt(void *ctx, uint64_t *prompt, coh_err *err)
{
    (void)err;
    *prompt = psrc_next(ctx);
    return 1;
}

static world *make_world(int capacity)
{
    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    coh_err err;
    assert_int_equal(tok_create_default(&w->tok, &err), COH_OK);
    task_config tc = task_config_default();
    if (psrc_create("addition", &tc, NULL, w->tok, 0, &w->prompts, &err) != COH_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(actors_create(8, 99, &w->actors, &err), COH_OK);
    assert_int_equal(actors_register(w->actors, "a", NULL, 1, 0, &w->a, &err), ACTORS_OK);
    assert_int_equal(actors_register(w->actors, "b", NULL, 1, 0, &w->b, &err), ACTORS_OK);
    assert_int_equal(actors_register(w->actors, "c", NULL, 1, 0, &w->c, &err), ACTORS_OK);
    assert_int_equal(lease_create(64, TTL, 0x5eed, &w->leases, &err), COH_OK);
    w->bcfg = (gbuf_config){.capacity = capacity, .group_size = G,
                            .vocab_size = tok_vocab_size(w->tok), .max_seq = 32,
                            .max_new_tokens = 8, .max_staleness = STALENESS};
    assert_int_equal(gbuf_create(&w->bcfg, &w->buf, &err), COH_OK);
    w->hook.buf = w->buf;
    w->env = (admit_env){.actors = w->actors, .leases = w->leases, .buf = w->buf,
                         .bcfg = &w->bcfg, .prompts = w->prompts, .temperature = 1.0,
                         .version = VERSION, .now_ms = 100, .next_seq = 42,
                         .commit = commit_hook, .commit_ctx = &w->hook};
    return w;
}

static void free_world(world *w)
{
    gbuf_destroy(w->buf);
    lease_destroy(w->leases);
    actors_destroy(w->actors);
    psrc_destroy(w->prompts);
    tok_destroy(w->tok);
    free(w);
}

static lease_grant issue(world *w, uint64_t actor)
{
    lease_grant g;
    coh_err err;
    assert_int_equal(lease_issue(w->leases, actor, 1, w->env.now_ms, next_prompt, w->prompts,
                                 &g, &err),
                     1);
    return g;
}

/* ---- a submission ---- */

typedef struct sub {
    int32_t tok[G][NT];
    float lp[G][NT];
    admit_item items[G];
    admit_request req;
} sub;

/* A well-formed, scored group for the lease, sampled at 1.0 with version VERSION. */
static void sub_init(sub *s, uint64_t actor, uint64_t lease_id)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < G; i++) {
        for (int k = 0; k < NT; k++) {
            s->tok[i][k] = 20 + 3 * i + k;
            s->lp[i][k] = -0.25f * (float)(k + 1 + i);
        }
        s->items[i] = (admit_item){.tokens = s->tok[i], .n_tokens = NT, .logp = s->lp[i],
                                   .n_logp = NT, .version = VERSION, .reward = 0.5 + i,
                                   .scored = 1};
    }
    s->req = (admit_request){.actor = actor, .lease_id = lease_id, .temperature = 1.0, .n = G,
                             .items = s->items};
}

/* The lease's state as lease_check reports it (LEASE_LIVE for a live, valid lease). */
static lease_state state_of(world *w, uint64_t lease_id, uint64_t actor)
{
    lease_info info;
    memset(&info, 0, sizeof info);
    coh_err err;
    int rc = lease_check(w->leases, lease_id, actor, w->env.now_ms, &info, &err);
    if (rc == COH_OK)
        assert_int_equal(info.state, LEASE_LIVE);
    else
        assert_int_equal(rc, COH_ESTATE);
    return info.state;
}

/* Submit and check the verdict; the buffer, the hook and the other state are checked by
 * the callers. */
static admit_verdict submit(world *w, const sub *s, uint64_t *prompt, coh_err *err)
{
    return admit_submission(&w->env, &s->req, prompt, err);
}

/* Submit, expect v, the buffer and the hook untouched. */
static void refused(world *w, const sub *s, admit_verdict v, const char *frag)
{
    coh_err err;
    memset(&err, 0, sizeof err);
    gbuf_stats before, after;
    gbuf_get_stats(w->buf, &before);
    int calls = w->hook.calls;
    admit_verdict got = submit(w, s, NULL, &err);
    if (got != v)
        fail_msg("verdict %d (%s), want %d (%s): %s", got, admit_reason(got), v,
                 admit_reason(v), err.msg);
    if (frag)
        HAS(err.msg, frag);
    gbuf_get_stats(w->buf, &after);
    assert_int_equal(after.count, before.count);
    assert_int_equal((long)after.accepted, (long)before.accepted);
    if (v != ADMIT_INTERNAL)
        assert_int_equal(w->hook.calls, calls);
}

/* Pop the one buffered group and check it against the submission. */
static void check_buffered(world *w, const sub *s, uint64_t prompt, uint64_t seq)
{
    gbuf_group *g = NULL;
    assert_int_equal(gbuf_pop_batch(w->buf, 1, VERSION, &g), 1);
    assert_true(g->seq == seq);
    assert_true(g->actor == s->req.actor);
    assert_true(g->lease_id == s->req.lease_id);
    assert_true(g->prompt == prompt);
    int want[40];
    coh_err err;
    int np = psrc_tokens(w->prompts, prompt, want, 40, &err);
    assert_true(np >= 2);
    assert_int_equal(g->n_prompt, np);
    assert_memory_equal(g->prompt_tokens, want, (size_t)np * sizeof(int));
    assert_int_equal(g->prompt_tokens[0], TOK_BOS);
    assert_int_equal(g->n_completions, G);
    for (int i = 0; i < G; i++) {
        const gbuf_completion *c = &g->completions[i];
        assert_int_equal(c->n_tokens, s->items[i].n_tokens);
        for (int k = 0; k < c->n_tokens; k++) {
            assert_int_equal(c->tokens[k], s->items[i].tokens[k]);
            assert_true(c->logp[k] == s->items[i].logp[k]);
        }
        assert_int_equal((long)c->version, (long)s->items[i].version);
        assert_true(c->reward == s->items[i].reward);
    }
    gbuf_group_free(g);
}

/* ---- the verdicts ---- */

static void test_buffered(void **state)
{
    (void)state;
    world *w = make_world(4);
    lease_grant lg = issue(w, w->a);
    sub s;
    sub_init(&s, w->a, lg.lease_id);
    s.items[1].version = VERSION - STALENESS; /* the oldest version still fresh */
    coh_err err;
    uint64_t prompt = 12345;
    assert_int_equal(submit(w, &s, &prompt, &err), ADMIT_BUFFERED);
    assert_true(prompt == lg.prompt);
    assert_int_equal(gbuf_count(w->buf), 1);
    /* the hook ran once, before the push, with the acceptance number and the actor */
    assert_int_equal(w->hook.calls, 1);
    assert_true(w->hook.seq == 42);
    assert_true(w->hook.actor == w->a);
    assert_true(w->hook.prompt == lg.prompt);
    assert_true(w->hook.lease_id == lg.lease_id);
    assert_int_equal(w->hook.count_at_call, 0);
    /* the lease is completed */
    assert_int_equal(state_of(w, lg.lease_id, w->a), LEASE_COMPLETED);
    lease_stats ls;
    lease_get_stats(w->leases, &ls);
    assert_int_equal((long)ls.completed, 1);
    assert_int_equal(ls.outstanding, 0);

    /* the same lease again: a retry after a lost reply, nothing changes */
    refused(w, &s, ADMIT_LEASE_COMPLETED, NULL);
    assert_int_equal(gbuf_count(w->buf), 1);
    check_buffered(w, &s, lg.prompt, 42);

    /* without a commit hook; a temperature within 1e-6 is the same temperature */
    w->env.commit = NULL;
    w->env.next_seq = 43;
    lease_grant lg2 = issue(w, w->b);
    sub_init(&s, w->b, lg2.lease_id);
    s.req.temperature = 1.0 + 5e-7;
    assert_int_equal(submit(w, &s, NULL, &err), ADMIT_BUFFERED);
    assert_int_equal(w->hook.calls, 1);
    check_buffered(w, &s, lg2.prompt, 43);
    assert_int_equal(state_of(w, lg2.lease_id, w->b), LEASE_COMPLETED);
    free_world(w);
}

static void test_reward_failed(void **state)
{
    (void)state;
    world *w = make_world(4);
    lease_grant lg = issue(w, w->a);
    sub s;
    sub_init(&s, w->a, lg.lease_id);
    s.items[1].scored = 0;
    s.items[1].reward = NAN; /* not scored: the reward is not looked at */
    uint64_t prompt = 0;
    coh_err err;
    assert_int_equal(submit(w, &s, &prompt, &err), ADMIT_REWARD_FAILED);
    assert_true(prompt == lg.prompt);
    HAS(err.msg, "1 item(s) were not scored");
    assert_int_equal(gbuf_count(w->buf), 0);
    assert_int_equal(w->hook.calls, 0);
    assert_int_equal(state_of(w, lg.lease_id, w->a), LEASE_COMPLETED); /* settled */
    /* resubmitted (scored now): a duplicate */
    sub_init(&s, w->a, lg.lease_id);
    refused(w, &s, ADMIT_LEASE_COMPLETED, NULL);
    free_world(w);
}

static void test_unknown_actor_and_lease(void **state)
{
    (void)state;
    world *w = make_world(4);
    lease_grant lg = issue(w, w->a);
    sub s;

    /* an actor the registry does not know (swept, or never registered) */
    uint64_t ghost = w->a ^ w->b ^ w->c ^ 0x1234;
    assert_int_equal(actors_check(w->actors, ghost), ACTORS_UNKNOWN);
    sub_init(&s, ghost, lg.lease_id);
    uint64_t prompt = 777;
    coh_err err;
    assert_int_equal(submit(w, &s, &prompt, &err), ADMIT_UNKNOWN_ACTOR);
    assert_true(prompt == 777);
    HAS(err.msg, "register again");
    assert_int_equal(state_of(w, lg.lease_id, w->a), LEASE_LIVE);
    /* an unknown actor with an unknown lease: the actor is checked first */
    sub_init(&s, ghost, 0x0123456789abcdefULL);
    refused(w, &s, ADMIT_UNKNOWN_ACTOR, NULL);

    /* a lease this table never issued */
    sub_init(&s, w->a, 0x0123456789abcdefULL);
    assert_int_equal(submit(w, &s, &prompt, &err), ADMIT_LEASE_UNKNOWN);
    assert_true(prompt == 777);
    sub_init(&s, w->a, LEASE_ALL);
    refused(w, &s, ADMIT_LEASE_UNKNOWN, NULL);
    /* a lease of another table (another run's salt) */
    lease_table *other = NULL;
    assert_int_equal(lease_create(64, TTL, 0x5eee, &other, &err), COH_OK);
    lease_grant og;
    assert_int_equal(lease_issue(other, w->a, 1, 100, next_prompt, w->prompts, &og, &err), 1);
    sub_init(&s, w->a, og.lease_id);
    refused(w, &s, ADMIT_LEASE_UNKNOWN, NULL);
    lease_destroy(other);

    /* the real lease is still good */
    sub_init(&s, w->a, lg.lease_id);
    assert_int_equal(submit(w, &s, NULL, &err), ADMIT_BUFFERED);
    free_world(w);
}

static void test_lease_ended(void **state)
{
    (void)state;
    world *w = make_world(4);
    coh_err err;
    sub s;

    /* expired: now at the deadline (no sweep yet), then after a sweep */
    lease_grant e1 = issue(w, w->a);
    w->env.now_ms = e1.deadline_ms - 1;
    lease_grant e2 = issue(w, w->a); /* issued later: its deadline is later */
    w->env.now_ms = e1.deadline_ms;
    sub_init(&s, w->a, e1.lease_id);
    refused(w, &s, ADMIT_LEASE_EXPIRED, NULL);
    assert_int_equal(lease_expire(w->leases, e2.deadline_ms + 5), 2);
    w->env.now_ms = e2.deadline_ms + 10;
    sub_init(&s, w->a, e2.lease_id);
    refused(w, &s, ADMIT_LEASE_EXPIRED, "expired");
    sub_init(&s, w->a, e1.lease_id);
    refused(w, &s, ADMIT_LEASE_EXPIRED, NULL);

    /* returned */
    lease_grant r = issue(w, w->a);
    assert_int_equal(lease_return(w->leases, w->a, r.lease_id, w->env.now_ms, &err), 1);
    sub_init(&s, w->a, r.lease_id);
    refused(w, &s, ADMIT_LEASE_RETURNED, "returned");

    /* dropped: its actor was declared dead (c holds it; a and b keep theirs) */
    lease_grant d = issue(w, w->c), keep = issue(w, w->b);
    assert_int_equal(lease_drop_actor(w->leases, w->c, w->env.now_ms), 1);
    sub_init(&s, w->c, d.lease_id);
    refused(w, &s, ADMIT_LEASE_DROPPED, "dropped");

    /* not yours: b submits a's lease; it stays a's, live */
    lease_grant mine = issue(w, w->a);
    sub_init(&s, w->b, mine.lease_id);
    refused(w, &s, ADMIT_LEASE_NOT_YOURS, NULL);
    assert_int_equal(state_of(w, mine.lease_id, w->a), LEASE_LIVE);
    sub_init(&s, w->a, mine.lease_id);
    assert_int_equal(submit(w, &s, NULL, &err), ADMIT_BUFFERED);
    sub_init(&s, w->b, keep.lease_id);
    assert_int_equal(submit(w, &s, NULL, &err), ADMIT_BUFFERED);
    assert_int_equal(gbuf_count(w->buf), 2);
    assert_int_equal(w->hook.calls, 2);
    free_world(w);
}

static void test_temperature_and_stale(void **state)
{
    (void)state;
    world *w = make_world(4);
    coh_err err;
    sub s;

    /* another temperature: settled, not buffered, even when the group is also malformed */
    lease_grant t = issue(w, w->a);
    sub_init(&s, w->a, t.lease_id);
    s.req.temperature = 0.7;
    s.tok[0][0] = 100000; /* the temperature is checked first */
    uint64_t prompt = 0;
    assert_int_equal(submit(w, &s, &prompt, &err), ADMIT_TEMPERATURE);
    assert_true(prompt == t.prompt);
    HAS(err.msg, "temperature 0.7");
    assert_int_equal(gbuf_count(w->buf), 0);
    assert_int_equal(w->hook.calls, 0);
    assert_int_equal(state_of(w, t.lease_id, w->a), LEASE_COMPLETED);
    s.req.temperature = 1.000002; /* more than 1e-6 away */
    lease_grant t2 = issue(w, w->a);
    sub_init(&s, w->a, t2.lease_id);
    s.req.temperature = 1.000002;
    refused(w, &s, ADMIT_TEMPERATURE, NULL);
    assert_int_equal(state_of(w, t2.lease_id, w->a), LEASE_COMPLETED);
    /* a temperature that is no positive finite number: malformed (INVALID), the lease stays */
    const float bad_t[] = {NAN, INFINITY, 0.0f, -1.0f};
    for (size_t i = 0; i < sizeof bad_t / sizeof *bad_t; i++) {
        lease_grant tb = issue(w, w->a);
        sub_init(&s, w->a, tb.lease_id);
        s.req.temperature = bad_t[i];
        refused(w, &s, ADMIT_INVALID, NULL);
        assert_int_equal(state_of(w, tb.lease_id, w->a), LEASE_LIVE);
    }

    /* stale: one completion at current - max_staleness - 1; settled */
    lease_grant st = issue(w, w->a);
    sub_init(&s, w->a, st.lease_id);
    s.items[1].version = VERSION - STALENESS - 1;
    s.items[0].scored = 0; /* stale is decided before the rewards */
    refused(w, &s, ADMIT_STALE, NULL);
    assert_int_equal(state_of(w, st.lease_id, w->a), LEASE_COMPLETED);
    /* resubmitted fresh: a duplicate */
    sub_init(&s, w->a, st.lease_id);
    refused(w, &s, ADMIT_LEASE_COMPLETED, NULL);

    lease_stats ls;
    lease_get_stats(w->leases, &ls);
    assert_int_equal((long)ls.completed, 3);
    assert_int_equal(ls.outstanding, 4); /* the four with a malformed temperature */
    free_world(w);
}

/* Each malformed group is ADMIT_INVALID and leaves the lease live. */
static void test_invalid(void **state)
{
    (void)state;
    world *w = make_world(4);
    coh_err err;
    lease_grant lg = issue(w, w->a);
    sub s;
    int vocab = tok_vocab_size(w->tok);
    assert_int_equal(vocab, 98);

    for (int kind = 0; kind < 9; kind++) {
        sub_init(&s, w->a, lg.lease_id);
        const char *frag = NULL;
        switch (kind) {
        case 0: s.tok[1][2] = vocab; frag = "completion 1"; break; /* token id out of range */
        case 1: s.tok[0][0] = -1; frag = "completion 0"; break;
        case 2: s.lp[0][1] = 0.5f; frag = "completion 0"; break;   /* log-prob > 0 */
        case 3: s.req.n = 1; break;                                /* wrong count */
        case 4: s.items[1].version = -1; break;                    /* negative version */
        case 5: s.items[0].n_logp = NT - 1; break;                 /* log-prob count */
        case 6: s.items[0].version = VERSION + 1; break;           /* from the future */
        case 7: s.req.n = 0; break;                                /* empty group */
        case 8: s.items[1].n_tokens = 0; s.items[1].n_logp = 0; break; /* empty completion */
        }
        s.items[0].scored = kind % 2; /* malformed is decided before the rewards */
        refused(w, &s, ADMIT_INVALID, frag);
        if (state_of(w, lg.lease_id, w->a) != LEASE_LIVE)
            fail_msg("kind %d: the lease is no longer live", kind);
    }
    lease_stats ls;
    lease_get_stats(w->leases, &ls);
    assert_int_equal((long)ls.completed, 0);
    assert_int_equal(w->hook.calls, 0);

    /* the fixed resubmission goes in */
    sub_init(&s, w->a, lg.lease_id);
    uint64_t prompt = 0;
    assert_int_equal(submit(w, &s, &prompt, &err), ADMIT_BUFFERED);
    assert_true(prompt == lg.prompt);
    check_buffered(w, &s, lg.prompt, 42);
    assert_int_equal(state_of(w, lg.lease_id, w->a), LEASE_COMPLETED);
    free_world(w);
}

static void test_full(void **state)
{
    (void)state;
    world *w = make_world(2);
    coh_err err;
    sub s;
    lease_grant l1 = issue(w, w->a), l2 = issue(w, w->b), l3 = issue(w, w->a);
    sub_init(&s, w->a, l1.lease_id);
    assert_int_equal(submit(w, &s, NULL, &err), ADMIT_BUFFERED);
    w->env.next_seq++;
    sub_init(&s, w->b, l2.lease_id);
    assert_int_equal(submit(w, &s, NULL, &err), ADMIT_BUFFERED);
    w->env.next_seq++;
    assert_int_equal(gbuf_count(w->buf), 2);
    assert_int_equal(w->hook.calls, 2);

    /* full: nothing changes, the lease stays live, the hook is not called */
    sub_init(&s, w->a, l3.lease_id);
    refused(w, &s, ADMIT_FULL, "2 groups");
    assert_int_equal(state_of(w, l3.lease_id, w->a), LEASE_LIVE);
    assert_int_equal(w->hook.calls, 2);
    /* a group that is unusable anyway is still settled when the buffer is full */
    lease_grant l4 = issue(w, w->b);
    sub_init(&s, w->b, l4.lease_id);
    s.items[0].scored = 0;
    refused(w, &s, ADMIT_REWARD_FAILED, NULL);
    assert_int_equal(state_of(w, l4.lease_id, w->b), LEASE_COMPLETED);

    /* the trainer takes one: the held submission goes in */
    gbuf_group *g = NULL;
    assert_int_equal(gbuf_pop_batch(w->buf, 1, VERSION, &g), 1);
    assert_true(g->seq == 42 && g->actor == w->a);
    gbuf_group_free(g);
    sub_init(&s, w->a, l3.lease_id);
    assert_int_equal(submit(w, &s, NULL, &err), ADMIT_BUFFERED);
    assert_true(w->hook.seq == 44);
    assert_int_equal(gbuf_count(w->buf), 2);
    assert_int_equal(gbuf_pop_batch(w->buf, 1, VERSION, &g), 1);
    assert_true(g->seq == 43 && g->actor == w->b);
    gbuf_group_free(g);
    check_buffered(w, &s, l3.prompt, 44);
    free_world(w);
}

static void test_internal(void **state)
{
    (void)state;
    world *w = make_world(4);
    coh_err err;
    sub s;
    w->env.next_seq = 1000;
    lease_grant lg = issue(w, w->a);
    sub_init(&s, w->a, lg.lease_id);
    w->hook.fail = 1;
    refused(w, &s, ADMIT_INTERNAL, "disk full");
    assert_int_equal(w->hook.calls, 1);
    assert_true(w->hook.seq == 1000); /* the hook saw the acceptance number */
    assert_true(w->hook.actor == w->a);
    assert_true(w->hook.prompt == lg.prompt);
    assert_int_equal(gbuf_count(w->buf), 0);
    assert_int_equal(state_of(w, lg.lease_id, w->a), LEASE_LIVE);
    lease_stats ls;
    lease_get_stats(w->leases, &ls);
    assert_int_equal((long)ls.completed, 0);

    /* the log works again: the same submission goes in */
    w->hook.fail = 0;
    assert_int_equal(submit(w, &s, NULL, &err), ADMIT_BUFFERED);
    assert_int_equal(w->hook.calls, 2);
    check_buffered(w, &s, lg.prompt, 1000);
    free_world(w);
}

/* ---- the tables ---- */

static void test_tables(void **state)
{
    (void)state;
    /* gRPC codes: OK 0, INVALID_ARGUMENT 3, NOT_FOUND 5, ALREADY_EXISTS 6,
     * RESOURCE_EXHAUSTED 8, FAILED_PRECONDITION 9, INTERNAL 13 */
    static const struct {
        admit_verdict v;
        int status;
        const char *reason;
        int drop;
    } want[ADMIT_N] = {
        {ADMIT_BUFFERED, 0, "buffered", -1},
        {ADMIT_REWARD_FAILED, 0, "reward_failed", TRAINER_DROP_REWARD_FAILED},
        {ADMIT_UNKNOWN_ACTOR, 5, "unknown_actor", TRAINER_DROP_LEASE_LOST},
        {ADMIT_LEASE_UNKNOWN, 5, "lease_unknown", TRAINER_DROP_LEASE_LOST},
        {ADMIT_LEASE_EXPIRED, 5, "lease_expired", TRAINER_DROP_LEASE_EXPIRED},
        {ADMIT_LEASE_RETURNED, 5, "lease_returned", TRAINER_DROP_LEASE_LOST},
        {ADMIT_LEASE_DROPPED, 5, "lease_dropped", TRAINER_DROP_LEASE_LOST},
        {ADMIT_LEASE_COMPLETED, 6, "lease_completed", -1},
        {ADMIT_LEASE_NOT_YOURS, 3, "lease_not_yours", TRAINER_DROP_LEASE_LOST},
        {ADMIT_TEMPERATURE, 9, "temperature_mismatch", TRAINER_DROP_TEMPERATURE},
        {ADMIT_STALE, 9, "stale_version", TRAINER_DROP_STALE},
        {ADMIT_INVALID, 3, "invalid_group", TRAINER_DROP_INVALID},
        {ADMIT_FULL, 8, "buffer_full", -1},
        {ADMIT_INTERNAL, 13, "internal", -1},
    };
    for (int i = 0; i < ADMIT_N; i++) {
        assert_int_equal(want[i].v, i);
        if (admit_status(want[i].v) != want[i].status)
            fail_msg("%s: status %d, want %d", want[i].reason, admit_status(want[i].v),
                     want[i].status);
        assert_string_equal(admit_reason(want[i].v), want[i].reason);
        if (admit_drop(want[i].v) != want[i].drop)
            fail_msg("%s: drop %d, want %d", want[i].reason, admit_drop(want[i].v),
                     want[i].drop);
    }
    /* out of range */
    assert_int_equal(admit_status(ADMIT_N), 13);
    assert_string_equal(admit_reason(ADMIT_N), "internal");
    assert_int_equal(admit_drop(ADMIT_N), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buffered),
        cmocka_unit_test(test_reward_failed),
        cmocka_unit_test(test_unknown_actor_and_lease),
        cmocka_unit_test(test_lease_ended),
        cmocka_unit_test(test_temperature_and_stale),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_internal),
        cmocka_unit_test(test_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
