/* test_scorer.c - reward components, routing to custom verifiers, deadlines and failover.
 * The remote Verifier call is a function supplied by the reward service; here a stand-in
 * plays the network (the real gRPC path is exercised by the service tests). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "scorer.h"

/* A scripted verifier fleet: endpoint "down:*" is unreachable, "slow:*" passes every
 * deadline, "err:*" answers with an error, others score 1 when the completion equals the
 * metadata's expected text (so metadata must arrive untouched). */
typedef struct fleet {
    int calls;
    char last_meta[128], last_endpoint[64];
} fleet;

static int fake_remote(void *ctx, const char *endpoint, const scorer_item *item, int timeout_ms,
                       scorer_remote_reply *reply, int *timed_out, int *unavailable,
                       int *unknown_task, coh_err *err)
{
    fleet *f = ctx;
    f->calls++;
    snprintf(f->last_meta, sizeof f->last_meta, "%s", item->metadata_json);
    snprintf(f->last_endpoint, sizeof f->last_endpoint, "%s", endpoint);
    assert_true(timeout_ms > 0);
    if (strncmp(endpoint, "down:", 5) == 0) {
        *unavailable = 1;
        return coh_fail(err, COH_EIO, "connection refused");
    }
    if (strncmp(endpoint, "slow:", 5) == 0) {
        *timed_out = 1;
        return coh_fail(err, COH_EIO, "deadline exceeded");
    }
    if (strncmp(endpoint, "err:", 4) == 0)
        return coh_fail(err, COH_EINVAL, "verifier says: cannot parse metadata");
    if (strncmp(endpoint, "unk:", 4) == 0) {
        *unknown_task = 1;
        return coh_fail(err, COH_ENOTFOUND, "no such task here");
    }
    if (strncmp(endpoint, "huge:", 5) == 0) { /* finite, but not once weighted */
        reply->score = 1.79e308;
        reply->passed = 1;
        return COH_OK;
    }
    if (strncmp(endpoint, "nan:", 4) == 0) {
        reply->score = NAN;
        return 0;
    }
    int ok = strstr(item->metadata_json, item->completion) != NULL;
    reply->score = ok ? 1.0 : 0.0;
    reply->passed = ok;
    snprintf(reply->details, sizeof reply->details, ok ? "palindrome" : "not a palindrome");
    return 0;
}

static scorer *make(const char *cfg, fleet *f)
{
    scorer *s = NULL;
    coh_err err;
    if (scorer_create(cfg, fake_remote, f, &s, &err))
        fail_msg("scorer_create: %s", err.msg);
    return s;
}

static scorer_result score(scorer *s, const char *task, const char *prompt, const char *completion,
                           const char *answer, const char *meta)
{
    scorer_item it = {task, prompt, completion, answer, meta, NULL, NULL, 0, 0, 0};
    scorer_result r;
    coh_err err;
    assert_int_equal(scorer_score(s, &it, &r, &err), COH_OK);
    return r;
}

static void test_builtin_defaults(void **state)
{
    (void)state;
    scorer *s = make(NULL, NULL);
    scorer_result r = score(s, "addition", "12+34=", "46", "46", "");
    assert_int_equal(r.status, SCORE_OK);
    assert_true(r.reward == 1.0);
    assert_int_equal(r.n_components, 1);
    assert_string_equal(r.comp[0].name, "correct");
    r = score(s, "addition", "12+34=", "47", "46", "");
    assert_int_equal(r.status, SCORE_OK);
    assert_true(r.reward == 0.0);
    /* any correct countdown expression */
    r = score(s, "countdown", "3,5,7>22:", "7+5*3", "3*5+7", "{\"numbers\":[3,5,7],\"target\":22}");
    assert_true(r.reward == 1.0);
    r = score(s, "countdown", "3,5,7>22:", "7/0", "3*5+7", "{\"numbers\":[3,5,7],\"target\":22}");
    assert_int_equal(r.status, SCORE_OK);
    assert_true(r.reward == 0.0);
    /* an unknown task is reported as such, never as a silent 0 */
    r = score(s, "palindrome", "abc", "cba", "", "");
    assert_int_equal(r.status, SCORE_UNKNOWN_TASK);
    assert_non_null(strstr(r.detail, "palindrome"));
    assert_int_equal(r.n_components, 0);
    /* a built-in item the verifier cannot use (countdown without numbers) fails */
    r = score(s, "countdown", "3,5,7>22:", "3*5+7", "", "{}");
    assert_int_equal(r.status, SCORE_FAILED);
    scorer_destroy(s);
}

static void test_weighted_components(void **state)
{
    (void)state;
    scorer *s = make("{\"correctness_weight\": 2.0, \"format_weight\": 0.5,"
                     " \"length_penalty\": {\"weight\": 1.0, \"max_chars\": 3, \"per_char\": 0.1}}",
                     NULL);
    scorer_result r = score(s, "addition", "12+34=", "46", "46", "");
    assert_int_equal(r.n_components, 3);
    assert_true(fabs(r.reward - (2.0 + 0.5)) < 1e-12);
    r = score(s, "addition", "12+34=", "460000", "46", ""); /* wrong, 3 chars over */
    assert_string_equal(r.comp[2].name, "length");
    assert_true(fabs(r.comp[2].value - (-0.3)) < 1e-12);
    assert_true(fabs(r.reward - (0.0 + 0.5 * r.comp[1].value - 0.3)) < 1e-12);
    scorer_destroy(s);
}

static const char *ROUTED =
    "{\"verifiers\": [{\"name\": \"py\", \"task\": \"palindrome\", \"weight\": 0.5,"
    " \"timeout_ms\": 500, \"endpoints\": [\"a:1\", \"b:2\"]}]}";

static void test_routing_and_metadata(void **state)
{
    (void)state;
    fleet f = {0};
    scorer *s = make(ROUTED, &f);
    scorer_result r = score(s, "palindrome", "make one:", "abba", "", "{\"expect\":\"abba\"}");
    assert_int_equal(r.status, SCORE_OK);
    assert_int_equal(r.n_components, 1);
    assert_string_equal(r.comp[0].name, "verifier:py");
    assert_true(r.comp[0].value == 1.0 && r.comp[0].weight == 0.5 && r.reward == 0.5);
    assert_string_equal(f.last_meta, "{\"expect\":\"abba\"}");
    assert_non_null(strstr(r.detail, "palindrome"));
    /* round robin over the endpoints */
    char first[64];
    snprintf(first, sizeof first, "%s", f.last_endpoint);
    score(s, "palindrome", "make one:", "abc", "", "{\"expect\":\"abba\"}");
    assert_string_not_equal(first, f.last_endpoint);
    /* built-in tasks still go to the built-in verifiers */
    r = score(s, "addition", "1+1=", "2", "2", "");
    assert_true(r.reward == 1.0);
    scorer_verifier_stats st;
    assert_int_equal(scorer_num_verifiers(s), 1);
    scorer_get_verifier_stats(s, 0, &st);
    assert_int_equal(st.calls, 2);
    assert_int_equal(st.ok, 2);
    scorer_destroy(s);
}

static void test_timeout_failure_failover(void **state)
{
    (void)state;
    fleet f = {0};
    scorer *s = make("{\"verifiers\": [{\"name\": \"slow\", \"task\": \"t1\", \"timeout_ms\": 50,"
                     " \"endpoints\": [\"slow:1\"]},"
                     " {\"name\": \"broken\", \"task\": \"t2\", \"endpoints\": [\"err:1\"]},"
                     " {\"name\": \"ha\", \"task\": \"t3\", \"endpoints\": [\"down:1\", \"up:2\"]},"
                     " {\"name\": \"gone\", \"task\": \"t4\", \"endpoints\": [\"down:1\", \"down:2\"]},"
                     " {\"name\": \"nan\", \"task\": \"t5\", \"endpoints\": [\"nan:1\"]},"
                     " {\"name\": \"unk\", \"task\": \"t6\", \"endpoints\": [\"unk:1\"]}]}",
                     &f);
    scorer_result r = score(s, "t1", "p", "x", "", "x");
    assert_int_equal(r.status, SCORE_TIMED_OUT);
    assert_true(r.reward == 0.0 && r.n_components == 0);
    assert_non_null(strstr(r.detail, "within 50 ms"));
    r = score(s, "t2", "p", "x", "", "x");
    assert_int_equal(r.status, SCORE_FAILED);
    assert_non_null(strstr(r.detail, "cannot parse metadata"));
    r = score(s, "t3", "p", "x", "", "x"); /* first endpoint down: the second answers */
    assert_int_equal(r.status, SCORE_OK);
    assert_true(r.reward == 1.0);
    r = score(s, "t4", "p", "x", "", "x");
    assert_int_equal(r.status, SCORE_FAILED);
    assert_non_null(strstr(r.detail, "connection refused"));
    r = score(s, "t5", "p", "x", "", "x");
    assert_int_equal(r.status, SCORE_FAILED);
    assert_non_null(strstr(r.detail, "non-finite"));
    r = score(s, "t6", "p", "x", "", "x");
    assert_int_equal(r.status, SCORE_UNKNOWN_TASK);
    scorer_verifier_stats st;
    scorer_get_verifier_stats(s, 0, &st);
    assert_int_equal(st.timed_out, 1);
    scorer_get_verifier_stats(s, 1, &st);
    assert_int_equal(st.failed, 1);
    scorer_get_verifier_stats(s, 2, &st);
    assert_int_equal(st.ok, 1);
    scorer_destroy(s);
}

/* A finite score that the weight makes infinite: no reward, never an infinite one (issue 12:
 * the finiteness check ran before the weight was applied). */
static void test_weighted_overflow(void **state)
{
    (void)state;
    fleet f = {0};
    scorer *s = make("{\"verifiers\": [{\"name\": \"big\", \"task\": \"t\", \"weight\": 2,"
                     " \"endpoints\": [\"huge:1\"]}]}",
                     &f);
    scorer_result r = score(s, "t", "p", "x", "", "x");
    assert_int_equal(r.status, SCORE_FAILED);
    assert_true(r.reward == 0.0 && r.n_components == 0);
    assert_non_null(strstr(r.detail, "not finite"));
    scorer_destroy(s);
}

static void test_bad_config(void **state)
{
    (void)state;
    const char *bad[] = {
        "{\"format_wieght\": 0.5}",
        "{\"length_penalty\": {\"wieght\": 1}}",
        "{\"reward_model\": {\"path\": \"x\", \"scale\": 2}}",
        "{\"tasks\": {\"addition\": {\"digit\": 3}}}",
        "{\"tasks\": {\"subtraction\": {}}}",
        "not json",
        "[1,2]",
        "{\"correctness_weight\": \"high\"}",
        "{\"verifiers\": [{\"endpoints\": [\"a:1\"]}]}",
        "{\"verifiers\": [{\"task\": \"t\"}]}",
        "{\"verifiers\": [{\"task\": \"t\", \"endpoints\": [3]}]}",
        "{\"verifiers\": [{\"task\": \"t\", \"endpoints\": [\"a:1\"], \"timeout_ms\": -5}]}",
        "{\"reward_model\": {\"path\": \"/nonexistent/rm\"}}",
        "{\"length_penalty\": {\"per_char\": -1}}",
    };
    fleet f = {0};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        scorer *s = NULL;
        coh_err err;
        coh_err_clear(&err);
        if (scorer_create(bad[i], fake_remote, &f, &s, &err) == COH_OK)
            fail_msg("config accepted: %s", bad[i]);
        assert_null(s);
        assert_true(strlen(err.msg) > 10);
    }
    scorer *s = NULL;
    coh_err err;
    assert_int_equal(scorer_create(ROUTED, NULL, NULL, &s, &err), COH_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_defaults),
        cmocka_unit_test(test_weighted_components),
        cmocka_unit_test(test_routing_and_metadata),
        cmocka_unit_test(test_timeout_failure_failover),
        cmocka_unit_test(test_weighted_overflow),
        cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
