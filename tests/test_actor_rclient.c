/* test_actor_rclient.c - the actor's reward client (actor/rclient.h) against a real
 * in-process Reward service on a loopback port: results matched by item id whatever their
 * order, per-item statuses (missing, unspecified, non-finite -> ITEM_FAILED), whole-call
 * failures reported per item (DEADLINE_EXCEEDED -> ITEM_TIMED_OUT, others -> ITEM_FAILED),
 * retries of UNAVAILABLE, and the deadlines sent (timeout_ms per item, call + 1 s).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "actor_harness.h"
#include "actlog.h"
#include "cohort/v1/reward.pb-c.h"
#include "rclient.h"

enum mode { M_OK_SHUFFLED, M_UNAVAILABLE_TWICE, M_DEADLINE, M_INVALID };

static int g_mode;          /* what the server does (set before each call) */
static int g_calls;         /* Score calls seen */
static uint32_t g_timeout;  /* ScoreRequest.timeout_ms of the last call */
static int64_t g_deadline;  /* ms left before the client's deadline, at arrival */
static char g_ids[8][48];   /* item ids of the last call */
static size_t g_n;

/* OK reply: results in reverse order; item 0: reward 0.5 ITEM_OK with one component;
 * item 1: no result; item 2: ITEM_STATUS_UNSPECIFIED; item 3: ITEM_OK but NaN;
 * item 4: ITEM_TIMED_OUT with detail "slow"; item i >= 5: ITEM_OK reward i. */
static void reply_shuffled(rpc_call *call, const Cohort__V1__ScoreRequest *req)
{
    size_t n = req->n_items;
    Cohort__V1__ItemResult *res = calloc(n, sizeof *res);
    Cohort__V1__ItemResult **resp = calloc(n, sizeof *resp);
    Cohort__V1__RewardComponent comp = COHORT__V1__REWARD_COMPONENT__INIT;
    Cohort__V1__RewardComponent *compp = &comp;
    comp.name = "correct";
    comp.value = 1.0;
    comp.weight = 0.5;
    size_t k = 0;
    for (size_t j = n; j-- > 0;) {
        if (j == 1)
            continue;
        Cohort__V1__ItemResult *r = &res[k];
        cohort__v1__item_result__init(r);
        r->item_id = req->items[j]->item_id;
        r->status = COHORT__V1__ITEM_STATUS__ITEM_OK;
        r->reward = (double)j;
        if (j == 0) {
            r->reward = 0.5;
            r->n_components = 1;
            r->components = &compp;
        } else if (j == 2) {
            r->status = COHORT__V1__ITEM_STATUS__ITEM_STATUS_UNSPECIFIED;
        } else if (j == 3) {
            r->reward = NAN;
        } else if (j == 4) {
            r->status = COHORT__V1__ITEM_STATUS__ITEM_TIMED_OUT;
            r->reward = 7;
            r->detail = "slow";
        }
        resp[k++] = r;
    }
    Cohort__V1__ScoreReply rep = COHORT__V1__SCORE_REPLY__INIT;
    rep.n_results = k;
    rep.results = resp;
    rpc_call_reply_msg(call, &rep.base);
    free(res);
    free(resp);
}

static void h_score(rpc_call *call, rpc_event ev, void *data)
{
    Cohort__V1__ScoreRequest *req = (Cohort__V1__ScoreRequest *)rpc_call_unpack_request(
        call, &cohort__v1__score_request__descriptor);
    if (!req)
        return;
    ah_lock();
    int call_no = ++g_calls;
    g_timeout = req->timeout_ms;
    g_deadline = rpc_call_deadline_ms(call);
    g_n = req->n_items;
    for (size_t i = 0; i < req->n_items && i < 8; i++)
        snprintf(g_ids[i], sizeof g_ids[i], "%s", req->items[i]->item_id);
    int mode = g_mode;
    ah_unlock();
    if (mode == M_UNAVAILABLE_TWICE && call_no <= 2)
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, "warming up");
    else if (mode == M_DEADLINE)
        rpc_call_fail(call, GRPC_STATUS_DEADLINE_EXCEEDED, "too slow");
    else if (mode == M_INVALID)
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "duplicated item_id");
    else
        reply_shuffled(call, req);
    rpc_msg_free(&req->base);
}

static ah_server srv;
static rpc_channel *ch;
static rclient *rc;

static int setup(void **state)
{
    static const ah_method methods[] = {{"/cohort.v1.Reward/Score", RPC_UNARY, h_score, NULL}};
    actlog_setup("test", 1);
    if (ah_start(&srv, methods, 1) != COH_OK) {
        fprintf(stderr, "cannot start the test server: %s\n", srv.err);
        return -1;
    }
    char target[64];
    coh_err err;
    if (rpc_channel_create(ah_target(&srv, target, sizeof target), NULL, &ch, &err) ||
        rclient_create(ch, "reward-under-test", 3000, &rc, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    rclient_destroy(rc);
    rpc_channel_destroy(ch);
    ah_stop(&srv);
    return 0;
}

static char t0[] = "12", t1[] = "13", t2[] = "x", t3[] = "", t4[] = "99", t5[] = "5", t6[] = "6";
static char *texts[] = {t0, t1, t2, t3, t4, t5, t6};
static const int lens[] = {3, 3, 2, 1, 3, 2, 2};
static const int trunc_[] = {0, 0, 1, 0, 0, 0, 1};

static rclient_group group(int n)
{
    rclient_group g = {.lease_id = 4242, .task = "addition", .prompt = "6+6=",
                       .answer = "12", .metadata_json = "", .n = n, .texts = texts,
                       .lens = lens, .truncated = trunc_};
    return g;
}

static void set_mode(int m)
{
    ah_lock();
    g_mode = m;
    g_calls = 0;
    ah_unlock();
}

static void test_items_matched_and_checked(void **state)
{
    set_mode(M_OK_SHUFFLED);
    rclient_group g = group(7);
    rclient_scores *sc = NULL;
    double ms = -1;
    assert_int_equal(rclient_score(rc, NULL, &g, &sc, &ms), COH_OK);
    assert_non_null(sc);
    assert_true(ms >= 0);
    assert_int_equal(rclient_scores_count(sc), 7);
    assert_int_equal(rclient_scores_call_failed(sc), 0);
    /* what went over the wire: "<lease>/<i>" ids, the per-item budget, the call deadline
     * (3000 ms + 1 s, less the time in flight) */
    ah_lock();
    assert_int_equal(g_n, 7);
    assert_string_equal(g_ids[0], "4242/0");
    assert_string_equal(g_ids[6], "4242/6");
    assert_int_equal(g_timeout, 3000);
    assert_true(g_deadline > 3000 && g_deadline <= 4000);
    ah_unlock();
    const rclient_item *it = rclient_scores_item(sc, 0);
    assert_int_equal(it->status, COHORT__V1__ITEM_STATUS__ITEM_OK);
    assert_true(it->reward == 0.5);
    assert_int_equal(it->n_components, 1);
    assert_string_equal(it->components[0]->name, "correct");
    it = rclient_scores_item(sc, 1); /* no result came back */
    assert_int_equal(it->status, COHORT__V1__ITEM_STATUS__ITEM_FAILED);
    assert_true(it->reward == 0);
    assert_non_null(strstr(it->detail, "no result"));
    it = rclient_scores_item(sc, 2); /* unspecified status */
    assert_int_equal(it->status, COHORT__V1__ITEM_STATUS__ITEM_FAILED);
    assert_true(it->reward == 0);
    it = rclient_scores_item(sc, 3); /* OK with NaN */
    assert_int_equal(it->status, COHORT__V1__ITEM_STATUS__ITEM_FAILED);
    assert_true(it->reward == 0);
    assert_non_null(strstr(it->detail, "non-finite"));
    it = rclient_scores_item(sc, 4); /* timed out: its reward of 7 is not used */
    assert_int_equal(it->status, COHORT__V1__ITEM_STATUS__ITEM_TIMED_OUT);
    assert_true(it->reward == 0);
    assert_string_equal(it->detail, "slow");
    for (int i = 5; i < 7; i++) { /* out of order on the wire, in order here */
        it = rclient_scores_item(sc, i);
        assert_int_equal(it->status, COHORT__V1__ITEM_STATUS__ITEM_OK);
        assert_true(it->reward == (double)i);
    }
    rclient_scores_destroy(sc);
}

static void test_unavailable_is_retried(void **state)
{
    set_mode(M_UNAVAILABLE_TWICE);
    rclient_group g = group(6);
    rclient_scores *sc = NULL;
    assert_int_equal(rclient_score(rc, NULL, &g, &sc, NULL), COH_OK);
    ah_lock();
    assert_int_equal(g_calls, 3);
    ah_unlock();
    assert_int_equal(rclient_scores_call_failed(sc), 0);
    assert_int_equal(rclient_scores_item(sc, 5)->status, COHORT__V1__ITEM_STATUS__ITEM_OK);
    assert_true(rclient_scores_item(sc, 5)->reward == 5.0);
    rclient_scores_destroy(sc);
}

static void test_call_failures_per_item(void **state)
{
    rclient_group g = group(3);
    rclient_scores *sc = NULL;
    set_mode(M_DEADLINE);
    assert_int_equal(rclient_score(rc, NULL, &g, &sc, NULL), COH_OK);
    ah_lock();
    assert_int_equal(g_calls, 1); /* not retried */
    ah_unlock();
    assert_int_equal(rclient_scores_call_failed(sc), 1);
    for (int i = 0; i < 3; i++) {
        const rclient_item *it = rclient_scores_item(sc, i);
        assert_int_equal(it->status, COHORT__V1__ITEM_STATUS__ITEM_TIMED_OUT);
        assert_true(it->reward == 0);
        assert_non_null(strstr(it->detail, "reward-under-test"));
        assert_non_null(strstr(it->detail, "DEADLINE_EXCEEDED"));
    }
    rclient_scores_destroy(sc);

    set_mode(M_INVALID);
    assert_int_equal(rclient_score(rc, NULL, &g, &sc, NULL), COH_OK);
    for (int i = 0; i < 3; i++) {
        const rclient_item *it = rclient_scores_item(sc, i);
        assert_int_equal(it->status, COHORT__V1__ITEM_STATUS__ITEM_FAILED);
        assert_non_null(strstr(it->detail, "duplicated item_id"));
    }
    rclient_scores_destroy(sc);
}

static void test_bad_arguments(void **state)
{
    rclient *x = NULL;
    coh_err err;
    assert_int_equal(rclient_create(ch, "a", 0, &x, &err), COH_EINVAL);
    assert_null(x);
    assert_int_equal(rclient_create(ch, "a", 600001, &x, &err), COH_EINVAL);
    rclient_group g = group(0);
    rclient_scores *sc = (rclient_scores *)&g;
    assert_int_equal(rclient_score(rc, NULL, &g, &sc, NULL), COH_EINVAL);
    assert_null(sc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_items_matched_and_checked),
        cmocka_unit_test(test_unavailable_is_retried),
        cmocka_unit_test(test_call_failures_per_item),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
