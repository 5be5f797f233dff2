/* test_actor_pipeline.c - the actor's lease pipeline and session (actor/pipeline.h,
 * actor/session.h): every SubmitGroup status mapped to its typed outcome, the unknown-actor
 * decision, the stop id and sampling checks; then the whole loop (lease -> sample -> score ->
 * submit) against a real in-process Learner + Reward on a loopback port, whose scripted
 * SubmitGroup answers exercise retry, give-back, stale drop, unknown-lease drop and
 * registering again (decided by the typed reason in the trailing metadata).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "actor_harness.h"
#include "actlog.h"
#include "cohort/v1/learner.pb-c.h"
#include "cohort/v1/reward.pb-c.h"
#include "model.h"
#include "pipeline.h"
#include "policy.h"
#include "rclient.h"
#include "session.h"
#include "tokenizer.h"
#include "vtrack.h"

static rpc_status status(grpc_status_code code, const char *msg)
{
    rpc_status st;
    memset(&st, 0, sizeof st);
    st.code = code;
    snprintf(st.message, sizeof st.message, "%s", msg);
    return st;
}

static rpc_status status_r(grpc_status_code code, const char *reason, const char *msg)
{
    rpc_status st = status(code, msg);
    snprintf(st.reason, sizeof st.reason, "%s", reason);
    return st;
}

static void test_submit_outcomes(void **state)
{
    static const struct {
        grpc_status_code code;
        const char *msg;
        pipeline_outcome want;
    } cases[] = {
        {GRPC_STATUS_OK, "", PIPELINE_SETTLED},
        {GRPC_STATUS_NOT_FOUND, "unknown or expired lease 17", PIPELINE_DROP},
        {GRPC_STATUS_NOT_FOUND, "unknown actor 00000000000000ff", PIPELINE_DROP_REREGISTER},
        {GRPC_STATUS_ALREADY_EXISTS, "lease already submitted", PIPELINE_DUPLICATE},
        {GRPC_STATUS_FAILED_PRECONDITION, "stale: version 3, current 9", PIPELINE_STALE},
        {GRPC_STATUS_RESOURCE_EXHAUSTED, "buffer full", PIPELINE_RETRY},
        {GRPC_STATUS_DEADLINE_EXCEEDED, "", PIPELINE_RETRY},
        {GRPC_STATUS_UNAVAILABLE, "learner restarting", PIPELINE_RETRY},
        {GRPC_STATUS_UNAUTHENTICATED, "bad token", PIPELINE_FATAL},
        {GRPC_STATUS_INVALID_ARGUMENT, "completion count 3 != group_size 4", PIPELINE_RETURN},
        {GRPC_STATUS_INTERNAL, "", PIPELINE_RETURN},
        {GRPC_STATUS_CANCELLED, "", PIPELINE_RETURN},
        {GRPC_STATUS_UNIMPLEMENTED, "", PIPELINE_RETURN},
        /* text alone never decides: "unknown actor" under another code is not re-registered */
        {GRPC_STATUS_INVALID_ARGUMENT, "unknown actor", PIPELINE_RETURN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rpc_status st = status(cases[i].code, cases[i].msg);
        pipeline_outcome got = pipeline_submit_outcome(&st);
        if (got != cases[i].want)
            fail_msg("%s '%s': got %s, want %s", rpc_status_name(cases[i].code), cases[i].msg,
                     pipeline_outcome_name(got), pipeline_outcome_name(cases[i].want));
    }
    assert_string_equal(pipeline_outcome_name(PIPELINE_RETRY), "retry");
}

static void test_unknown_actor_decision(void **state)
{
    rpc_status st = status(GRPC_STATUS_NOT_FOUND, "unknown actor 00000000000000ff");
    assert_true(session_is_unknown_actor(&st));
    st = status(GRPC_STATUS_NOT_FOUND, "unknown lease");
    assert_false(session_is_unknown_actor(&st));
    st = status(GRPC_STATUS_UNAVAILABLE, "unknown actor");
    assert_false(session_is_unknown_actor(&st));
    st = status(GRPC_STATUS_OK, "");
    assert_false(session_is_unknown_actor(&st));
    /* the typed reason decides whatever the text says */
    st = status_r(GRPC_STATUS_NOT_FOUND, "unknown_actor", "actor 17 was forgotten");
    assert_true(session_is_unknown_actor(&st));
    st = status_r(GRPC_STATUS_NOT_FOUND, "lease_unknown", "unknown actor or lease");
    assert_false(session_is_unknown_actor(&st));
    st = status_r(GRPC_STATUS_FAILED_PRECONDITION, "unknown_actor", "");
    assert_false(session_is_unknown_actor(&st));
    st = status_r(GRPC_STATUS_NOT_FOUND, "unknown_actor", "");
    assert_int_equal(pipeline_submit_outcome(&st), PIPELINE_DROP_REREGISTER);
    st = status_r(GRPC_STATUS_NOT_FOUND, "lease_expired", "unknown actor");
    assert_int_equal(pipeline_submit_outcome(&st), PIPELINE_DROP);
}

static void test_sampling_checks(void **state)
{
    Cohort__V1__SamplingParams sp = COHORT__V1__SAMPLING_PARAMS__INIT;
    sp.temperature = 0.7;
    sp.top_p = 1;
    sp.max_new_tokens = 8;
    assert_true(session_sampling_valid(&sp));
    assert_int_equal(session_stop_id(&sp), TOK_EOS); /* empty list: <eos> */
    int32_t ids[] = {7, TOK_EOS, 9};
    sp.stop_token_ids = ids;
    sp.n_stop_token_ids = 3;
    assert_int_equal(session_stop_id(&sp), 7); /* the first listed (the others are stop_ids) */
    sp.stop_token_ids = (int32_t[]){7, 9};
    sp.n_stop_token_ids = 2;
    assert_int_equal(session_stop_id(&sp), 7); /* else the first */
    assert_int_equal(session_stop_id(NULL), TOK_EOS);
    Cohort__V1__SamplingParams bad = sp;
    bad.temperature = 0;
    assert_false(session_sampling_valid(&bad));
    bad = sp;
    bad.temperature = 10.5;
    assert_false(session_sampling_valid(&bad));
    bad = sp;
    bad.top_p = 0;
    assert_false(session_sampling_valid(&bad));
    bad = sp;
    bad.top_k = -1;
    assert_false(session_sampling_valid(&bad));
    bad = sp;
    bad.max_new_tokens = 0;
    assert_false(session_sampling_valid(&bad));
    bad = sp;
    bad.max_new_tokens = 65537;
    assert_false(session_sampling_valid(&bad));
    assert_false(session_sampling_valid(NULL));
    assert_int_equal(session_next_backoff(200), 400);
    assert_int_equal(session_next_backoff(4000), SESSION_MAX_BACKOFF_MS);
}

/* ---- the loop against a scripted learner ------------------------------------------------ */

#define G 3
#define VERSION 7

static int g_registrations;
static uint64_t g_next_id = 500;
static uint64_t g_next_lease = 101;
static int g_submits;
static uint64_t g_sub_lease[16], g_sub_actor[16];
static int g_submit_101;
static uint64_t g_returned[16];
static int g_n_returned;
static int g_bad; /* malformed submissions seen by the server */
static double g_rewards[G];
static int g_statuses[G];
static double g_temperature;

static void h_register(rpc_call *call, rpc_event ev, void *data)
{
    int32_t stop[] = {TOK_EOS};
    Cohort__V1__SamplingParams sp = COHORT__V1__SAMPLING_PARAMS__INIT;
    sp.temperature = 1;
    sp.top_p = 1;
    sp.max_new_tokens = 4;
    sp.stop_token_ids = stop;
    sp.n_stop_token_ids = 1;
    Cohort__V1__RegisterReply rep = COHORT__V1__REGISTER_REPLY__INIT;
    ah_lock();
    g_registrations++;
    rep.actor_id = g_next_id++;
    ah_unlock();
    rep.heartbeat_interval_ms = 500;
    rep.lease_ttl_ms = 3000;
    rep.group_size = G;
    rep.sampling = &sp;
    rep.current_version = VERSION;
    rep.max_staleness = 4;
    rpc_call_reply_msg(call, &rep.base);
}

static void h_lease(rpc_call *call, rpc_event ev, void *data)
{
    int32_t toks[] = {1, 5, 6};
    Cohort__V1__Lease l = COHORT__V1__LEASE__INIT;
    Cohort__V1__Lease *lp = &l;
    ah_lock();
    l.lease_id = g_next_lease++;
    ah_unlock();
    l.prompt_id = "p";
    l.task = "t";
    l.prompt = "ab";
    l.prompt_tokens = toks;
    l.n_prompt_tokens = 3;
    Cohort__V1__LeaseReply rep = COHORT__V1__LEASE_REPLY__INIT;
    rep.leases = &lp;
    rep.n_leases = 1;
    rpc_call_reply_msg(call, &rep.base);
}

static void h_submit(rpc_call *call, rpc_event ev, void *data)
{
    Cohort__V1__SubmitGroupRequest *req = (Cohort__V1__SubmitGroupRequest *)
        rpc_call_unpack_request(call, &cohort__v1__submit_group_request__descriptor);
    if (!req)
        return;
    uint64_t lease = req->lease_id;
    ah_lock();
    int n = g_submits++;
    if (n < 16) {
        g_sub_lease[n] = lease;
        g_sub_actor[n] = req->actor_id;
    }
    if (req->n_completions != G)
        g_bad++;
    for (size_t i = 0; i < req->n_completions; i++) {
        const Cohort__V1__ScoredCompletion *c = req->completions[i];
        if (c->n_completion_tokens < 1 || c->n_completion_tokens > 4 ||
            c->n_behaviour_logprobs != c->n_completion_tokens || c->policy_version != VERSION)
            g_bad++;
        for (size_t t = 0; t < c->n_behaviour_logprobs; t++)
            if (!(c->behaviour_logprobs[t] <= 0) || !isfinite(c->behaviour_logprobs[t]))
                g_bad++;
        if (lease == 101 && i < G) {
            g_rewards[i] = c->reward;
            g_statuses[i] = c->status;
        }
    }
    g_temperature = req->temperature;
    int first_101 = lease == 101 && g_submit_101++ == 0;
    ah_unlock();
    rpc_msg_free(&req->base);
    Cohort__V1__SubmitGroupReply rep = COHORT__V1__SUBMIT_GROUP_REPLY__INIT;
    switch (lease) {
    case 101:
        if (first_101)
            rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "buffer full");
        else {
            rep.accepted = 1;
            rpc_call_reply_msg(call, &rep.base);
        }
        break;
    case 102: rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "token out of range"); break;
    case 103: rpc_call_fail(call, GRPC_STATUS_FAILED_PRECONDITION, "stale"); break;
    case 104: /* typed reason only: the text alone would not say "unknown actor" */
        rpc_call_fail_reason(call, GRPC_STATUS_NOT_FOUND, "unknown_actor", "actor 500 forgotten");
        break;
    case 105:
        rpc_call_fail_reason(call, GRPC_STATUS_NOT_FOUND, "lease_expired",
                             "unknown actor or expired lease");
        break;
    default: rpc_call_reply_msg(call, &rep.base); break;
    }
}

static void h_return(rpc_call *call, rpc_event ev, void *data)
{
    Cohort__V1__ReturnLeasesRequest *req = (Cohort__V1__ReturnLeasesRequest *)
        rpc_call_unpack_request(call, &cohort__v1__return_leases_request__descriptor);
    if (!req)
        return;
    ah_lock();
    for (size_t i = 0; i < req->n_lease_ids && g_n_returned < 16; i++)
        g_returned[g_n_returned++] = req->lease_ids[i];
    ah_unlock();
    Cohort__V1__ReturnLeasesReply rep = COHORT__V1__RETURN_LEASES_REPLY__INIT;
    rep.returned = (int32_t)req->n_lease_ids;
    rpc_msg_free(&req->base);
    rpc_call_reply_msg(call, &rep.base);
}

/* Reward: results in reverse order, reward = the item's index */
static void h_score(rpc_call *call, rpc_event ev, void *data)
{
    Cohort__V1__ScoreRequest *req = (Cohort__V1__ScoreRequest *)rpc_call_unpack_request(
        call, &cohort__v1__score_request__descriptor);
    if (!req)
        return;
    size_t n = req->n_items;
    Cohort__V1__ItemResult *res = calloc(n, sizeof *res);
    Cohort__V1__ItemResult **resp = calloc(n, sizeof *resp);
    for (size_t k = 0; k < n; k++) {
        size_t j = n - 1 - k;
        cohort__v1__item_result__init(&res[k]);
        res[k].item_id = req->items[j]->item_id;
        res[k].status = COHORT__V1__ITEM_STATUS__ITEM_OK;
        const char *slash = strchr(req->items[j]->item_id, '/');
        res[k].reward = slash ? atof(slash + 1) : -1;
        resp[k] = &res[k];
    }
    Cohort__V1__ScoreReply rep = COHORT__V1__SCORE_REPLY__INIT;
    rep.n_results = n;
    rep.results = resp;
    rpc_call_reply_msg(call, &rep.base);
    free(res);
    free(resp);
    rpc_msg_free(&req->base);
}

static void test_loop_settles_each_outcome(void **state)
{
    static const ah_method methods[] = {
        {"/cohort.v1.Learner/RegisterActor", RPC_UNARY, h_register, NULL},
        {"/cohort.v1.Learner/LeasePrompts", RPC_UNARY, h_lease, NULL},
        {"/cohort.v1.Learner/SubmitGroup", RPC_UNARY, h_submit, NULL},
        {"/cohort.v1.Learner/ReturnLeases", RPC_UNARY, h_return, NULL},
        {"/cohort.v1.Reward/Score", RPC_UNARY, h_score, NULL},
    };
    ah_server srv;
    if (ah_start(&srv, methods, 5) != COH_OK)
        fail_msg("cannot start the test server: %s", srv.err);
    char target[64];
    coh_err err;
    rpc_channel *ch = NULL;
    vtrack *vt = NULL;
    session *s = NULL;
    rclient *rc = NULL;
    pipeline *pl = NULL;
    assert_int_equal(rpc_channel_create(ah_target(&srv, target, sizeof target), NULL, &ch, &err),
                     COH_OK);
    assert_int_equal(vtrack_create(&vt, &err), COH_OK);
    session_config sc = {.learner_addr = target, .name = "pl", .threads = 1};
    assert_int_equal(session_create(ch, vt, &sc, &s, &err), COH_OK);
    assert_int_equal(rclient_create(ch, target, 2000, &rc, &err), COH_OK);
    pipeline_config pc = {.seed = 3, .prompts_per_lease = 1, .max_groups = 5};
    assert_int_equal(pipeline_create(s, vt, rc, &pc, &pl, &err), COH_OK);
    pipeline_config badpc = {.seed = 3, .prompts_per_lease = 0};
    pipeline *bad = NULL;
    assert_int_equal(pipeline_create(s, vt, rc, &badpc, &bad, &err), COH_EINVAL);

    assert_int_equal(session_register(s, 0), 0);
    session_params par;
    session_params_get(s, &par);
    assert_int_equal(par.group_size, G);
    assert_int_equal(par.sample.max_new_tokens, 4);
    assert_int_equal(vtrack_learner_version(vt), VERSION);
    model_config mc = model_config_default(98);
    model *m = NULL;
    tokenizer *tok = NULL;
    policy *p = NULL;
    assert_int_equal(model_create(&mc, &m, &err), COH_OK);
    model_init_random(m, 11);
    assert_int_equal(tok_create_default(&tok, &err), COH_OK);
    assert_int_equal(policy_create(VERSION, 0x1234, m, tok, &p, &err), COH_OK);
    assert_int_equal(vtrack_publish(vt, p), COH_OK);

    assert_int_equal(pipeline_run(pl), 5);

    ah_lock();
    assert_int_equal(g_bad, 0);
    /* 101 twice (RESOURCE_EXHAUSTED, then OK), then 102..105 once each */
    assert_int_equal(g_submits, 6);
    assert_int_equal(g_sub_lease[0], 101);
    assert_int_equal(g_sub_lease[1], 101);
    assert_int_equal(g_sub_lease[5], 105);
    /* rewards matched to items although the scorer answered in reverse order */
    for (int i = 0; i < G; i++) {
        assert_true(g_rewards[i] == (double)i);
        assert_int_equal(g_statuses[i], COHORT__V1__ITEM_STATUS__ITEM_OK);
    }
    assert_true(g_temperature == 1.0);
    /* INVALID_ARGUMENT: the lease was given back; no other lease was */
    assert_int_equal(g_n_returned, 1);
    assert_int_equal(g_returned[0], 102);
    /* NOT_FOUND unknown actor (104): registered again; 105 went out under the new id */
    assert_int_equal(g_registrations, 2);
    assert_int_equal(g_sub_actor[4], 500);
    assert_int_equal(g_sub_actor[5], 501);
    ah_unlock();
    assert_int_equal(session_identity(s, NULL), 501);
    session_stats st;
    session_stats_get(s, &st);
    assert_int_equal(st.groups_submitted, 1);
    assert_int_equal(st.groups_accepted, 1);
    assert_int_equal(st.groups_dropped, 1); /* the stale one */
    assert_int_equal(st.completions, 5 * G);
    assert_true(st.tokens >= 5 * G && st.tokens <= 5 * G * 4);
    assert_int_equal(st.reward_n, G);
    assert_true(st.reward_sum == 0.0 + 1.0 + 2.0);
    assert_int_equal(session_fatal(s), 0);

    pipeline_destroy(pl);
    rclient_destroy(rc);
    session_destroy(s);
    vtrack_destroy(vt);
    rpc_channel_destroy(ch);
    ah_stop(&srv);
}

int main(void)
{
    actlog_setup("test", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_outcomes),
        cmocka_unit_test(test_unknown_actor_decision),
        cmocka_unit_test(test_sampling_checks),
        cmocka_unit_test(test_loop_settles_each_outcome),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
