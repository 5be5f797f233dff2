/* test_vpool.c - the reward service's verifier pool (reward/vpool.h) against a scripted
 * network: concurrency bounded by max_in_flight, one VerifyBatch per endpoint and the
 * remembered fallback to Verify, deadlines (sent as the call's budget; queued calls past
 * their deadline never sent), failover and ejection on UNAVAILABLE, health-based ejection
 * and return, fast failure with no serving endpoint, and the metrics snapshot.
 * (The gRPC path is exercised by tests/reward_contract.test.sh.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "scorer.h"
#include "vpool.h"

/* ---- the scripted network ---------------------------------------------------------------
 * Endpoint names say how they behave: "nobatch:*" answers UNIMPLEMENTED to VerifyBatch,
 * "down:*" is UNAVAILABLE, "sick:*" is NOT_SERVING while fake.sick is set. Every call sleeps
 * fake.delay_ms (less if its deadline comes first: then it times out). */
typedef struct fake {
    pthread_mutex_t mu;
    int delay_ms;
    int sick;
    int in_flight, max_in_flight;
    int calls, batch_calls, batch_refused, health_calls;
    int64_t last_timeout_ms;
    char last_endpoint[64];
} fake;

static fake F;

typedef struct conn {
    char name[64];
} conn;

static void *f_open(void *ctx, const scorer_verifier_config *cfg, const char *ep, coh_err *err)
{
    (void)ctx, (void)cfg, (void)err;
    conn *c = calloc(1, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", ep);
    return c;
}

static void f_close(void *ctx, void *c)
{
    (void)ctx;
    free(c);
}

static vpool_code f_call(void *ctx, void *cv, const scorer_item *const *items, size_t n,
                         int batch, int64_t timeout_ms, scorer_remote_reply *replies, char *msg,
                         size_t msg_len)
{
    (void)ctx;
    conn *c = cv;
    pthread_mutex_lock(&F.mu);
    F.calls++;
    F.last_timeout_ms = timeout_ms;
    snprintf(F.last_endpoint, sizeof F.last_endpoint, "%s", c->name);
    if (batch && strncmp(c->name, "nobatch:", 8) == 0) {
        F.batch_refused++;
        pthread_mutex_unlock(&F.mu);
        snprintf(msg, msg_len, "UNIMPLEMENTED");
        return VPOOL_UNIMPLEMENTED;
    }
    if (strncmp(c->name, "down:", 5) == 0) {
        pthread_mutex_unlock(&F.mu);
        snprintf(msg, msg_len, "UNAVAILABLE: connection refused");
        return VPOOL_UNAVAILABLE;
    }
    F.batch_calls += batch;
    F.in_flight++;
    if (F.in_flight > F.max_in_flight)
        F.max_in_flight = F.in_flight;
    int delay = F.delay_ms;
    pthread_mutex_unlock(&F.mu);
    int timed_out = delay >= timeout_ms;
    usleep((useconds_t)(timed_out ? timeout_ms : delay) * 1000);
    pthread_mutex_lock(&F.mu);
    F.in_flight--;
    pthread_mutex_unlock(&F.mu);
    if (timed_out) {
        snprintf(msg, msg_len, "DEADLINE_EXCEEDED");
        return VPOOL_TIMED_OUT;
    }
    for (size_t i = 0; i < n; i++) {
        replies[i].score = strcmp(items[i]->completion, "yes") == 0 ? 1.0 : 0.0;
        snprintf(replies[i].details, sizeof replies[i].details, "%s", c->name);
    }
    return VPOOL_OK;
}

static vpool_health f_health(void *ctx, void *cv, int64_t timeout_ms)
{
    (void)ctx, (void)timeout_ms;
    conn *c = cv;
    pthread_mutex_lock(&F.mu);
    F.health_calls++;
    int sick = F.sick;
    pthread_mutex_unlock(&F.mu);
    if (strncmp(c->name, "down:", 5) == 0)
        return VPOOL_HEALTH_UNREACHABLE;
    if (strncmp(c->name, "sick:", 5) == 0 && sick)
        return VPOOL_HEALTH_NOT_SERVING;
    return VPOOL_HEALTH_SERVING;
}

static const vpool_net NET = {NULL, f_open, f_close, f_call, f_health};

static int no_remote(void *ctx, const char *endpoint, const scorer_item *item, int timeout_ms,
                     scorer_remote_reply *reply, int *timed_out, int *unavailable,
                     int *unknown_task, coh_err *err)
{
    (void)ctx, (void)endpoint, (void)item, (void)timeout_ms, (void)reply, (void)timed_out;
    (void)unavailable, (void)unknown_task;
    return coh_fail(err, COH_ESTATE, "not used");
}

/* ---- helpers -------------------------------------------------------------------------- */

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} waiter;

static void on_done(void *data)
{
    waiter *w = data;
    pthread_mutex_lock(&w->mu);
    w->done++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

#define N_MAX 16

typedef struct batch {
    scorer_item items[N_MAX];
    scorer_verdict verdicts[N_MAX];
    vpool_item vi[N_MAX];
} batch;

/* Submit n items to verifier v with a budget, wait for done; returns the elapsed ms. */
static int64_t run(vpool *p, int v, batch *b, size_t n, int budget_ms)
{
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    for (size_t i = 0; i < n; i++) {
        b->items[i] = (scorer_item){.task = "t", .prompt = "p", .completion = "yes",
                                    .answer = "", .metadata_json = "{}"};
        b->vi[i] = (vpool_item){&b->items[i], &b->verdicts[i]};
    }
    int64_t t0 = vpool_now_ms();
    assert_int_equal(vpool_submit(p, v, b->vi, n, t0 + budget_ms, budget_ms, on_done, &w), 0);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    assert_int_equal(w.done, 1);
    return vpool_now_ms() - t0;
}

static vpool *make(const char *cfg, scorer **sc, int health_ms)
{
    memset(&F, 0, sizeof F);
    pthread_mutex_init(&F.mu, NULL);
    coh_err err;
    if (scorer_create(cfg, no_remote, NULL, sc, &err))
        fail_msg("scorer_create: %s", err.msg);
    vpool *p = NULL;
    if (vpool_create(*sc, &NET, health_ms, &p, &err))
        fail_msg("vpool_create: %s", err.msg);
    return p;
}

static void finish(vpool *p, scorer *sc)
{
    vpool_destroy(p);
    scorer_destroy(sc);
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_concurrency_bounded(void **state)
{
    (void)state;
    scorer *sc;
    vpool *p = make("{\"verifiers\": [{\"name\": \"a\", \"task\": \"t\", \"max_in_flight\": 3,"
                    " \"endpoints\": [\"nobatch:1\"]}]}", &sc, 0);
    F.delay_ms = 100;
    static batch b;
    int64_t dt = run(p, 0, &b, 6, 5000);
    for (int i = 0; i < 6; i++)
        assert_int_equal(b.verdicts[i].status, SCORE_OK);
    assert_int_equal(F.batch_refused, 1);      /* one VerifyBatch refused ... */
    assert_int_equal(F.calls, 1 + 6);          /* ... then one Verify per item */
    assert_int_equal(F.max_in_flight, 3);      /* never more than max_in_flight */
    assert_true(dt >= 190 && dt < 600);        /* two rounds of 100 ms */
    /* the fallback is remembered: no VerifyBatch any more */
    run(p, 0, &b, 4, 5000);
    assert_int_equal(F.batch_refused, 1);
    vpool_verifier_stats st;
    /* a worker counts its call out of flight just after it settled the item, so the last
     * one may still be counted for a moment after run() has every result */
    for (int tries = 0; tries < 200; tries++) {
        vpool_stats(p, 0, &st);
        if (st.ep[0].in_flight == 0)
            break;
        usleep(5000);
    }
    assert_int_equal(st.items, 10);
    assert_int_equal(st.ok, 10);
    assert_int_equal(st.ep[0].batch, 0);
    assert_int_equal(st.ep[0].in_flight, 0);
    assert_true(st.latency_p50_ms >= 90 && st.latency_p99_ms >= st.latency_p50_ms);
    finish(p, sc);
}

static void test_batch_per_endpoint(void **state)
{
    (void)state;
    scorer *sc;
    vpool *p = make("{\"verifiers\": [{\"task\": \"t\", \"endpoints\": [\"x:1\", \"x:2\"]}]}",
                    &sc, 0);
    F.delay_ms = 50;
    static batch b;
    int64_t dt = run(p, 0, &b, 7, 5000);
    assert_int_equal(F.batch_calls, 2); /* one VerifyBatch per endpoint */
    assert_int_equal(F.calls, 2);
    assert_true(dt < 400);
    int on1 = 0;
    for (int i = 0; i < 7; i++) {
        assert_int_equal(b.verdicts[i].status, SCORE_OK);
        on1 += strcmp(b.verdicts[i].reply.details, "x:1") == 0;
    }
    assert_true(on1 == 3 || on1 == 4);
    run(p, 0, &b, 1, 5000); /* a lone item goes as Verify */
    assert_int_equal(F.batch_calls, 2);
    finish(p, sc);
}

static void test_deadlines(void **state)
{
    (void)state;
    scorer *sc;
    vpool *p = make("{\"verifiers\": [{\"task\": \"t\", \"max_in_flight\": 1,"
                    " \"endpoints\": [\"nobatch:1\"]}]}", &sc, 0);
    F.delay_ms = 1000;
    static batch b;
    int64_t dt = run(p, 0, &b, 1, 200);
    assert_int_equal(b.verdicts[0].status, SCORE_TIMED_OUT);
    assert_non_null(strstr(b.verdicts[0].error, "within 200 ms"));
    assert_true(F.last_timeout_ms <= 200 && F.last_timeout_ms > 150); /* the budget is sent */
    assert_true(dt >= 190 && dt < 600);
    /* with one slot, the second item waits and is never sent once its deadline passed */
    F.calls = 0;
    run(p, 0, &b, 3, 150);
    for (int i = 0; i < 3; i++)
        assert_int_equal(b.verdicts[i].status, SCORE_TIMED_OUT);
    assert_true(F.calls <= 2); /* the refused batch and the first Verify at most */
    /* a deadline already passed: settled at once */
    dt = run(p, 0, &b, 2, 0);
    assert_int_equal(b.verdicts[1].status, SCORE_TIMED_OUT);
    assert_true(dt < 50);
    finish(p, sc);
}

static void test_failover_and_no_endpoint(void **state)
{
    (void)state;
    scorer *sc;
    vpool *p = make("{\"verifiers\": [{\"task\": \"t\", \"endpoints\": [\"down:1\", \"x:2\"]},"
                    " {\"task\": \"u\", \"endpoints\": [\"down:3\"]}]}", &sc, 0);
    static batch b;
    run(p, 0, &b, 1, 2000);
    assert_int_equal(b.verdicts[0].status, SCORE_OK);
    assert_string_equal(b.verdicts[0].reply.details, "x:2");
    run(p, 0, &b, 1, 2000); /* down:1 is out of the rotation now: straight to x:2 */
    assert_string_equal(F.last_endpoint, "x:2");
    vpool_verifier_stats st;
    vpool_stats(p, 0, &st);
    assert_string_equal(st.ep[0].state, "unreachable");
    assert_int_equal(st.ep[0].ejections, 1);
    assert_int_equal(st.ep[0].in_rotation, 0);
    /* the only endpoint unreachable: the first item fails, the next ones fail at once */
    run(p, 1, &b, 2, 2000);
    assert_int_equal(b.verdicts[0].status, SCORE_FAILED);
    int64_t dt = run(p, 1, &b, 2, 2000);
    assert_int_equal(b.verdicts[1].status, SCORE_FAILED);
    assert_non_null(strstr(b.verdicts[1].error, "no serving endpoint"));
    assert_non_null(strstr(b.verdicts[1].error, "down:3 unreachable"));
    assert_true(dt < 50);
    vpool_stats(p, 1, &st);
    assert_int_equal(st.no_endpoint, 2);
    finish(p, sc);
}

static void test_health(void **state)
{
    (void)state;
    scorer *sc;
    vpool *p = make("{\"verifiers\": [{\"task\": \"t\", \"endpoints\": [\"sick:1\", \"x:2\"]}]}",
                    &sc, 20);
    vpool_verifier_stats st;
    for (int k = 0; k < 200; k++) { /* the first probe marks both serving */
        vpool_stats(p, 0, &st);
        if (strcmp(st.ep[0].state, "serving") == 0 && strcmp(st.ep[1].state, "serving") == 0)
            break;
        usleep(10000);
    }
    assert_string_equal(st.ep[0].state, "serving");
    pthread_mutex_lock(&F.mu);
    F.sick = 1;
    pthread_mutex_unlock(&F.mu);
    for (int k = 0; k < 200 && st.ep[0].in_rotation; k++) {
        usleep(10000);
        vpool_stats(p, 0, &st);
    }
    assert_int_equal(st.ep[0].in_rotation, 0);
    assert_string_equal(st.ep[0].state, "not_serving");
    assert_int_equal(st.ejections, 1);
    static batch b;
    for (int k = 0; k < 4; k++) {
        run(p, 0, &b, 1, 2000);
        assert_string_equal(b.verdicts[0].reply.details, "x:2");
    }
    pthread_mutex_lock(&F.mu);
    F.sick = 0;
    pthread_mutex_unlock(&F.mu);
    for (int k = 0; k < 200 && !st.ep[0].in_rotation; k++) {
        usleep(10000);
        vpool_stats(p, 0, &st);
    }
    assert_int_equal(st.ep[0].in_rotation, 1);
    int seen1 = 0;
    for (int k = 0; k < 4; k++) {
        run(p, 0, &b, 1, 2000);
        seen1 += strcmp(b.verdicts[0].reply.details, "sick:1") == 0;
    }
    assert_true(seen1 >= 1);
    finish(p, sc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrency_bounded),
        cmocka_unit_test(test_batch_per_endpoint),
        cmocka_unit_test(test_deadlines),
        cmocka_unit_test(test_failover_and_no_endpoint),
        cmocka_unit_test(test_health),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
