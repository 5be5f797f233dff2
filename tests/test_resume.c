/* test_resume.c - the learner service's resume state (learner/resume.c).
 *
 * cluster_state.json round trip (64-bit values beyond a double's 2^53 survive), every
 * malformed input refused naming its key, rsm_load from a folder, and rsm_plan on
 * hand-computed cases: which prompts go out again and where the cursor continues.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "resume.h"

#define HAS(msg, s)                                                                          \
    do {                                                                                     \
        if (!strstr((msg), (s)))                                                             \
            fail_msg("message \"%s\" lacks \"%s\"", (msg), (s));                              \
    } while (0)

#define U(x) ((unsigned long long)(x))

static void test_roundtrip(void **state)
{
    (void)state;
    coh_err err;
    /* 2^53 + 1 is the first integer a double cannot hold; UINT64_MAX - 1 the far end */
    uint64_t pend[] = {(1ULL << 53) + 1, 0, 7, UINT64_MAX - 1, 18446744073709551557ULL};
    rsm_state s = {.cursor = (1ULL << 53) + 3, .consumed_seq = 9007199254740993ULL,
                   .next_seq = UINT64_MAX, .pending = pend, .n_pending = 5};
    char *text = NULL;
    assert_int_equal(rsm_to_json(&s, &text, &err), COH_OK);
    assert_non_null(text);
    /* as decimal strings, never as doubles */
    HAS(text, "\"9007199254740995\"");
    HAS(text, "\"18446744073709551615\"");
    rsm_state b;
    memset(&b, 0xcd, sizeof b);
    if (rsm_from_json(text, &b, &err) != COH_OK)
        fail_msg("%s", err.msg);
    assert_true(b.cursor == (1ULL << 53) + 3);
    assert_true(b.consumed_seq == 9007199254740993ULL);
    assert_true(b.next_seq == UINT64_MAX);
    assert_int_equal(b.n_pending, 5);
    for (int i = 0; i < 5; i++)
        if (b.pending[i] != pend[i])
            fail_msg("pending[%d] = %llu, want %llu", i, U(b.pending[i]), U(pend[i]));
    rsm_free(&b);
    assert_null(b.pending);
    assert_int_equal(b.n_pending, 0);
    rsm_free(&b); /* twice is fine */
    free(text);

    /* no pending prompts */
    rsm_state e = {.cursor = 0, .consumed_seq = 0, .next_seq = 1};
    assert_int_equal(rsm_to_json(&e, &text, &err), COH_OK);
    assert_int_equal(rsm_from_json(text, &b, &err), COH_OK);
    assert_true(b.cursor == 0 && b.consumed_seq == 0 && b.next_seq == 1);
    assert_int_equal(b.n_pending, 0);
    rsm_free(&b);
    free(text);

    /* hand-written text, keys in another order */
    const char *t =
        "{\"pending\": [\"3\", \"1\"], \"next_seq\": \"12\", \"cursor\": \"40\", "
        "\"consumed_seq\": \"11\"}";
    assert_int_equal(rsm_from_json(t, &b, &err), COH_OK);
    assert_true(b.cursor == 40 && b.consumed_seq == 11 && b.next_seq == 12);
    assert_int_equal(b.n_pending, 2);
    assert_true(b.pending[0] == 3 && b.pending[1] == 1);
    rsm_free(&b);
}

/* rsm_from_json refuses text with COH_EFORMAT and a message containing frag; s is empty. */
static void refused(const char *text, const char *frag)
{
    coh_err err;
    rsm_state s;
    memset(&s, 0xcd, sizeof s);
    int rc = rsm_from_json(text, &s, &err);
    if (rc != COH_EFORMAT)
        fail_msg("rsm_from_json(%s) = %d, want COH_EFORMAT", text, rc);
    HAS(err.msg, frag);
    assert_null(s.pending);
    assert_int_equal(s.n_pending, 0);
}

static void test_malformed(void **state)
{
    (void)state;
    refused("", "not a JSON object");
    refused("{\"cursor\": \"1\"", "not a JSON object");
    refused("[1, 2]", "not a JSON object");
    refused("\"cursor\"", "not a JSON object");

    /* each key missing in turn */
    refused("{\"consumed_seq\": \"1\", \"next_seq\": \"2\", \"pending\": []}", "\"cursor\"");
    refused("{\"cursor\": \"1\", \"next_seq\": \"2\", \"pending\": []}", "\"consumed_seq\"");
    refused("{\"cursor\": \"1\", \"consumed_seq\": \"1\", \"pending\": []}", "\"next_seq\"");
    refused("{\"cursor\": \"1\", \"consumed_seq\": \"1\", \"next_seq\": \"2\"}", "\"pending\"");

    /* wrong types and values */
    refused("{\"cursor\": 1, \"consumed_seq\": \"1\", \"next_seq\": \"2\", \"pending\": []}",
            "\"cursor\"");
    refused("{\"cursor\": \"-1\", \"consumed_seq\": \"1\", \"next_seq\": \"2\", \"pending\": []}",
            "\"cursor\"");
    refused("{\"cursor\": \"\", \"consumed_seq\": \"1\", \"next_seq\": \"2\", \"pending\": []}",
            "\"cursor\"");
    refused("{\"cursor\": \"12x\", \"consumed_seq\": \"1\", \"next_seq\": \"2\", \"pending\": []}",
            "\"cursor\"");
    /* one past UINT64_MAX does not fit (it must not become UINT64_MAX) */
    refused("{\"cursor\": \"18446744073709551616\", \"consumed_seq\": \"1\", "
            "\"next_seq\": \"2\", \"pending\": []}",
            "\"cursor\"");
    refused("{\"cursor\": \"1\", \"consumed_seq\": \"1\", \"next_seq\": \"2\", "
            "\"pending\": [\"99999999999999999999999\"]}",
            "pending[0]");
    refused("{\"cursor\": \" 1\", \"consumed_seq\": \"1\", \"next_seq\": \"2\", \"pending\": []}",
            "\"cursor\"");
    refused("{\"cursor\": \"1\", \"consumed_seq\": \"-5\", \"next_seq\": \"2\", \"pending\": []}",
            "\"consumed_seq\"");
    refused("{\"cursor\": \"1\", \"consumed_seq\": \"1\", \"next_seq\": \"-2\", \"pending\": []}",
            "\"next_seq\"");
    refused("{\"cursor\": \"1\", \"consumed_seq\": \"1\", \"next_seq\": \"2\", \"pending\": {}}",
            "\"pending\"");
    refused("{\"cursor\": \"1\", \"consumed_seq\": \"1\", \"next_seq\": \"2\", "
            "\"pending\": [\"4\", \"-3\"]}",
            "pending[1]");
    refused("{\"cursor\": \"1\", \"consumed_seq\": \"1\", \"next_seq\": \"2\", "
            "\"pending\": [\"4\", 5]}",
            "pending[1]");
    refused("{\"cursor\": \"1\", \"consumed_seq\": \"1\", \"next_seq\": \"2\", "
            "\"pending\": [\"\"]}",
            "pending[0]");

    /* next_seq must be above consumed_seq */
    refused("{\"cursor\": \"1\", \"consumed_seq\": \"7\", \"next_seq\": \"7\", \"pending\": []}",
            "next_seq");
    refused("{\"cursor\": \"1\", \"consumed_seq\": \"7\", \"next_seq\": \"3\", "
            "\"pending\": [\"1\"]}",
            "next_seq");
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_load(void **state)
{
    (void)state;
    char dir[] = "/tmp/cohort_test_resume_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, RSM_FILE);
    coh_err err;
    rsm_state s;

    /* no file: a checkpoint from cohort-train */
    assert_int_equal(rsm_load(dir, &s, &err), COH_ENOTFOUND);
    HAS(err.msg, RSM_FILE);
    assert_null(s.pending);
    assert_int_equal(rsm_load("/nonexistent/cohort/dir", &s, &err), COH_ENOTFOUND);

    /* what rsm_to_json wrote comes back */
    uint64_t pend[] = {4, 2};
    rsm_state w = {.cursor = 10, .consumed_seq = 3, .next_seq = 5, .pending = pend,
                   .n_pending = 2};
    char *text = NULL;
    assert_int_equal(rsm_to_json(&w, &text, &err), COH_OK);
    write_file(path, text);
    free(text);
    if (rsm_load(dir, &s, &err) != COH_OK)
        fail_msg("%s", err.msg);
    assert_true(s.cursor == 10 && s.consumed_seq == 3 && s.next_seq == 5);
    assert_int_equal(s.n_pending, 2);
    assert_true(s.pending[0] == 4 && s.pending[1] == 2);
    rsm_free(&s);

    /* a malformed file: the format error, naming the file and the key */
    write_file(path, "{\"cursor\": \"10\", \"consumed_seq\": \"3\", \"pending\": []}");
    assert_int_equal(rsm_load(dir, &s, &err), COH_EFORMAT);
    HAS(err.msg, path);
    HAS(err.msg, "\"next_seq\"");
    assert_null(s.pending);

    unlink(path);
    rmdir(dir);
}

/* rsm_plan(s, logged) gives want[0..n_want) and cursor want_cursor. */
static void plan(const rsm_state *s, const uint64_t *logged, int n_logged, const uint64_t *want,
                 int n_want, uint64_t want_cursor)
{
    coh_err err;
    uint64_t *rq = (uint64_t *)1, cur = 0xdead;
    int n = -1;
    if (rsm_plan(s, logged, n_logged, &rq, &n, &cur, &err) != COH_OK)
        fail_msg("%s", err.msg);
    if (n != n_want)
        fail_msg("requeue has %d prompts, want %d", n, n_want);
    for (int i = 0; i < n; i++)
        if (rq[i] != want[i])
            fail_msg("requeue[%d] = %llu, want %llu", i, U(rq[i]), U(want[i]));
    if (cur != want_cursor)
        fail_msg("cursor %llu, want %llu", U(cur), U(want_cursor));
    free(rq);
}

static void test_plan(void **state)
{
    (void)state;
    /* the brief's case: pending {5, 9}, cursor 100, logged {9, 100, 103} (unordered) */
    uint64_t pend[] = {5, 9};
    rsm_state s = {.cursor = 100, .consumed_seq = 4, .next_seq = 8, .pending = pend,
                   .n_pending = 2};
    uint64_t logged[] = {103, 9, 100};
    plan(&s, logged, 3, (uint64_t[]){5, 101, 102}, 3, 104);

    /* nothing logged: requeue = pending, cursor unchanged */
    plan(&s, NULL, 0, pend, 2, 100);

    /* everything settled */
    uint64_t all[] = {5, 9, 100, 101};
    plan(&s, all, 4, NULL, 0, 102);

    /* logged prompts below the cursor only: the cursor stays */
    uint64_t low[] = {5, 42};
    plan(&s, low, 2, (uint64_t[]){9}, 1, 100);

    /* duplicates in pending (an edited file) are removed, the first place kept; a prompt
     * logged twice counts once */
    uint64_t dup[] = {7, 3, 7, 8, 3, 8, 2};
    rsm_state d = {.cursor = 10, .consumed_seq = 0, .next_seq = 1, .pending = dup,
                   .n_pending = 7};
    uint64_t lg[] = {8, 11, 11};
    plan(&d, lg, 3, (uint64_t[]){7, 3, 2, 10}, 4, 12);

    /* nothing pending, the gap only */
    rsm_state g = {.cursor = 0, .consumed_seq = 0, .next_seq = 1};
    uint64_t lg2[] = {2};
    plan(&g, lg2, 1, (uint64_t[]){0, 1}, 2, 3);
    plan(&g, NULL, 0, NULL, 0, 0);

    /* cursor beyond 2^53 */
    rsm_state big = {.cursor = (1ULL << 53) + 1, .consumed_seq = 0, .next_seq = 1};
    uint64_t lg3[] = {(1ULL << 53) + 3};
    plan(&big, lg3, 1, (uint64_t[]){(1ULL << 53) + 1, (1ULL << 53) + 2}, 2, (1ULL << 53) + 4);

    /* a log from another run, naming a prompt absurdly far past the cursor */
    coh_err err;
    uint64_t *rq = (uint64_t *)1;
    int n = -1;
    uint64_t cur = 77;
    uint64_t far[] = {101, 100 + (1ULL << 40)};
    assert_int_equal(rsm_plan(&s, far, 2, &rq, &n, &cur, &err), COH_EFORMAT);
    HAS(err.msg, "another run");
    HAS(err.msg, "1099511627876"); /* the prompt named: 100 + 2^40 */
    assert_null(rq);
    assert_int_equal(n, 0);
    assert_true(cur == 77); /* untouched */
    uint64_t huge[] = {UINT64_MAX - 1};
    assert_int_equal(rsm_plan(&s, huge, 1, &rq, &n, &cur, &err), COH_EFORMAT);
    assert_null(rq);
    /* the largest index, from a cursor of 0 (highest + 1 must not wrap around to 0) */
    rsm_state z = {.cursor = 0, .consumed_seq = 0, .next_seq = 1};
    uint64_t top[] = {UINT64_MAX, 5};
    assert_int_equal(rsm_plan(&z, top, 2, &rq, &n, &cur, &err), COH_EFORMAT);
    HAS(err.msg, "another run");
    assert_null(rq);
    assert_true(cur == 77);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
