/* test_tasks.c - CMocka tests for reward/tasks.c: generators, held-out set, verifiers.
 *
 * Covers determinism of the training stream, demonstrations that verify, the held-out set
 * never leaking into training, hand-written countdown expressions (several right answers,
 * reuse, unknown numbers, division by zero, fractional intermediates, overflow), and hostile
 * completions (garbage bytes, enormous numbers, deep nesting, 100 KB of text) for every task.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tasks.h"

static const char *const all_tasks[] = {"addition", "countdown", "reverse", "sort"};
#define N_TASKS (sizeof all_tasks / sizeof all_tasks[0])

/* ---- Helpers ---------------------------------------------------------------------------- */

static task *make_task(const char *name, const task_config *c)
{
    task *t = NULL;
    coh_err err = {0};
    int rc = task_create(name, c, &t, &err);
    if (rc)
        fail_msg("task_create(%s): %s", name, err.msg);
    assert_non_null(t);
    return t;
}

static task_score verify(const task *t, const task_item *it, const char *completion)
{
    task_score s;
    coh_err err = {0};
    int rc = task_verify(t, it, completion, &s, &err);
    if (rc)
        fail_msg("task_verify(%s): %s", completion ? completion : "(null)", err.msg);
    assert_non_null(memchr(s.detail, '\0', sizeof s.detail));
    assert_true(s.correct == 0.0 || s.correct == 1.0);
    assert_true(s.format == 0.0 || s.format == 1.0);
    return s;
}

static void expect_score(const task *t, const task_item *it, const char *completion,
                         double correct, double format, const char *detail_part)
{
    task_score s = verify(t, it, completion);
    if (s.correct != correct || s.format != format ||
        (detail_part && !strstr(s.detail, detail_part)))
        fail_msg("\"%s\": got correct %g format %g detail \"%s\"; expected %g %g \"%s\"",
                 completion, s.correct, s.format, s.detail, correct, format,
                 detail_part ? detail_part : "");
}

static task_item countdown_item(const char *meta)
{
    task_item it;
    memset(&it, 0, sizeof it);
    snprintf(it.meta, sizeof it.meta, "%s", meta);
    return it;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ---- Creation and configuration --------------------------------------------------------- */

static void test_create_unknown_name(void **state)
{
    (void)state;
    task *t = (task *)1;
    coh_err err = {0};
    assert_int_equal(task_create("multiplication", NULL, &t, &err), COH_ENOTFOUND);
    assert_null(t);
    assert_int_equal(err.code, COH_ENOTFOUND);
    for (size_t i = 0; i < N_TASKS; i++)
        assert_non_null(strstr(err.msg, all_tasks[i]));
    assert_non_null(strstr(err.msg, "multiplication"));
}

static void expect_config_error(const char *name, task_config c, const char *field)
{
    task *t = (task *)1;
    coh_err err = {0};
    assert_int_equal(task_create(name, &c, &t, &err), COH_EINVAL);
    assert_null(t);
    if (!strstr(err.msg, field))
        fail_msg("%s: message \"%s\" does not name %s", name, err.msg, field);
}

static void test_config_validation(void **state)
{
    (void)state;
    task_config d = task_config_default(), c;
    c = d, c.digits = 0;
    expect_config_error("addition", c, "digits");
    c = d, c.digits = 10;
    expect_config_error("addition", c, "digits");
    c = d, c.eval_size = -1;
    expect_config_error("addition", c, "eval_size");
    c = d, c.eval_size = TASK_EVAL_MAX + 1;
    expect_config_error("sort", c, "eval_size");
    c = d, c.n_numbers = 1;
    expect_config_error("countdown", c, "n_numbers");
    c = d, c.n_numbers = 9;
    expect_config_error("countdown", c, "n_numbers");
    c = d, c.max_number = 0;
    expect_config_error("countdown", c, "max_number");
    c = d, c.max_target = 0;
    expect_config_error("countdown", c, "max_target");
    c = d, c.min_len = 0;
    expect_config_error("reverse", c, "min_len");
    c = d, c.max_len = 33;
    expect_config_error("reverse", c, "max_len");
    c = d, c.min_len = 5, c.max_len = 4;
    expect_config_error("sort", c, "min_len");
    /* 1-digit addition has only 100 prompts: 200 held out is impossible */
    c = d, c.digits = 1;
    expect_config_error("addition", c, "distinct prompts");
    /* 90 of 100 held out leaves too little for training */
    c = d, c.digits = 1, c.eval_size = 95;
    expect_config_error("addition", c, "eval_size");
    /* fields of other tasks are not checked */
    c = d, c.digits = 0;
    task_destroy(make_task("sort", &c));
    task_destroy(make_task("addition", NULL));
    task_destroy(NULL);
}

static void test_names_and_bad_args(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_TASKS; i++) {
        task *t = make_task(all_tasks[i], NULL);
        assert_string_equal(task_name(t), all_tasks[i]);
        assert_int_equal(task_eval_size(t), 200);
        task_item it;
        assert_int_equal(task_train_item(t, 0, NULL), COH_EINVAL);
        assert_int_equal(task_eval_item(t, -1, &it), COH_EINVAL);
        assert_int_equal(task_eval_item(t, 200, &it), COH_EINVAL);
        assert_int_equal(task_eval_item(t, 199, &it), COH_OK);
        task_score s;
        coh_err err = {0};
        assert_int_equal(task_verify(t, NULL, "1", &s, &err), COH_EINVAL);
        task_destroy(t);
    }
    task *t = (task *)1;
    assert_int_equal(task_create(NULL, NULL, &t, NULL), COH_EINVAL);
    assert_int_equal(task_create("sort", NULL, NULL, NULL), COH_EINVAL);
}

/* ---- Generators ------------------------------------------------------------------------- */

static void test_deterministic_streams(void **state)
{
    (void)state;
    task_config a = task_config_default(), b = a;
    a.seed = 7;
    b.seed = 8;
    for (size_t k = 0; k < N_TASKS; k++) {
        task *t1 = make_task(all_tasks[k], &a), *t2 = make_task(all_tasks[k], &a);
        task *t3 = make_task(all_tasks[k], &b);
        int differ = 0;
        for (uint64_t i = 0; i < 200; i++) {
            task_item x, y, z;
            assert_int_equal(task_train_item(t1, i, &x), 0);
            assert_int_equal(task_train_item(t2, i, &y), 0);
            assert_int_equal(task_train_item(t3, i, &z), 0);
            assert_memory_equal(&x, &y, sizeof x);
            differ += strcmp(x.prompt, z.prompt) != 0;
        }
        if (differ < 100)
            fail_msg("%s: seeds 7 and 8 give only %d different prompts of 200", all_tasks[k],
                     differ);
        /* item i does not depend on what was asked before, and different i differ */
        task_item x, y;
        assert_int_equal(task_train_item(t1, 123456789, &x), 0);
        assert_int_equal(task_train_item(t2, 5, &y), 0);
        assert_int_equal(task_train_item(t2, 123456789, &y), 0);
        assert_memory_equal(&x, &y, sizeof x);
        /* the held-out set does not depend on the seed */
        assert_int_equal(task_eval_size(t1), task_eval_size(t3));
        for (int i = 0; i < task_eval_size(t1); i++) {
            assert_int_equal(task_eval_item(t1, i, &x), 0);
            assert_int_equal(task_eval_item(t3, i, &y), 0);
            assert_memory_equal(&x, &y, sizeof x);
        }
        task_destroy(t1);
        task_destroy(t2);
        task_destroy(t3);
    }
}

static void test_prompt_formats(void **state)
{
    (void)state;
    task *add = make_task("addition", NULL), *cd = make_task("countdown", NULL);
    task *rev = make_task("reverse", NULL), *srt = make_task("sort", NULL);
    for (uint64_t i = 0; i < 500; i++) {
        task_item it;
        unsigned a, b;
        int used = 0;
        assert_int_equal(task_train_item(add, i, &it), 0);
        assert_int_equal(sscanf(it.prompt, "%u+%u=%n", &a, &b, &used), 2);
        assert_int_equal((size_t)used, strlen(it.prompt));
        assert_true(a < 1000 && b < 1000 && strlen(it.prompt) <= 8);
        assert_int_equal(strtoul(it.answer, NULL, 10), a + b);

        assert_int_equal(task_train_item(cd, i, &it), 0);
        cJSON *m = cJSON_Parse(it.meta);
        assert_non_null(m);
        cJSON *nums = cJSON_GetObjectItem(m, "numbers"), *tg = cJSON_GetObjectItem(m, "target");
        assert_int_equal(cJSON_GetArraySize(nums), 3);
        char expect[TASK_TEXT_MAX] = "";
        int prev = 0;
        for (int j = 0; j < 3; j++) {
            int v = cJSON_GetArrayItem(nums, j)->valueint;
            assert_true(v >= 1 && v <= 9 && v >= prev);
            prev = v;
            snprintf(expect + strlen(expect), sizeof expect - strlen(expect), "%s%d",
                     j ? "," : "", v);
        }
        assert_true(tg->valueint >= 1 && tg->valueint <= 50);
        snprintf(expect + strlen(expect), sizeof expect - strlen(expect), ">%d:", tg->valueint);
        assert_string_equal(it.prompt, expect);
        cJSON_Delete(m);

        assert_int_equal(task_train_item(rev, i, &it), 0);
        size_t n = strlen(it.prompt);
        assert_memory_equal(it.prompt, "rev:", 4);
        assert_true(n - 5 >= 3 && n - 5 <= 6 && it.prompt[n - 1] == '=');
        for (size_t j = 0; j < n - 5; j++)
            assert_int_equal(it.answer[j], it.prompt[n - 2 - j]);
        assert_int_equal(strlen(it.answer), n - 5);

        assert_int_equal(task_train_item(srt, i, &it), 0);
        n = strlen(it.prompt);
        assert_memory_equal(it.prompt, "sort:", 5);
        assert_int_equal(strlen(it.answer), n - 6);
        for (size_t j = 1; j < n - 6; j++)
            assert_true(it.answer[j - 1] <= it.answer[j]);
    }
    task_destroy(add);
    task_destroy(cd);
    task_destroy(rev);
    task_destroy(srt);
}

static int printable(const char *s)
{
    for (; *s; s++)
        if (*s < 32 || *s > 126)
            return 0;
    return 1;
}

static void test_demonstrations_verify(void **state)
{
    (void)state;
    task_config big = task_config_default();
    big.digits = 9;
    big.n_numbers = 6;
    big.max_number = 100;
    big.max_target = 1000;
    big.min_len = 1;
    big.max_len = 32;
    for (int cfg = 0; cfg < 2; cfg++) {
        for (size_t k = 0; k < N_TASKS; k++) {
            task *t = make_task(all_tasks[k], cfg ? &big : NULL);
            for (int i = 0; i < 3000 + task_eval_size(t); i++) {
                task_item it;
                if (i < 3000)
                    assert_int_equal(task_train_item(t, (uint64_t)i, &it), 0);
                else
                    assert_int_equal(task_eval_item(t, i - 3000, &it), 0);
                assert_true(printable(it.prompt) && printable(it.answer) && printable(it.meta));
                task_score s = verify(t, &it, it.answer);
                if (s.correct != 1.0 || s.format != 1.0)
                    fail_msg("%s: demonstration \"%s\" for \"%s\" scored %g/%g: %s",
                             all_tasks[k], it.answer, it.prompt, s.correct, s.format, s.detail);
            }
            task_destroy(t);
        }
    }
}

/* Every training index in [0, n) avoids every held-out prompt. */
static void check_no_leak(const task *t, uint64_t n)
{
    int ne = task_eval_size(t);
    task_item *ev = calloc((size_t)ne, sizeof *ev);
    const char **keys = calloc((size_t)ne, sizeof *keys);
    assert_true(ev && keys);
    for (int i = 0; i < ne; i++) {
        assert_int_equal(task_eval_item(t, i, &ev[i]), 0);
        keys[i] = ev[i].prompt;
    }
    qsort(keys, (size_t)ne, sizeof *keys, cmp_str);
    for (int i = 1; i < ne; i++)
        assert_true(strcmp(keys[i - 1], keys[i]) != 0); /* distinct */
    for (uint64_t i = 0; i < n; i++) {
        task_item it;
        assert_int_equal(task_train_item(t, i, &it), 0);
        const char *key = it.prompt;
        if (bsearch(&key, keys, (size_t)ne, sizeof *keys, cmp_str))
            fail_msg("%s: training item %llu is held out: %s", task_name(t),
                     (unsigned long long)i, it.prompt);
    }
    free(keys);
    free(ev);
}

static void test_eval_never_in_training(void **state)
{
    (void)state;
    for (size_t k = 0; k < N_TASKS; k++) {
        task *t = make_task(all_tasks[k], NULL);
        check_no_leak(t, 20000);
        task_destroy(t);
    }
    /* small prompt spaces, where collisions are frequent and resampling must work */
    task_config c = task_config_default();
    c.digits = 1;
    c.eval_size = 60; /* of 100 prompts */
    task *t = make_task("addition", &c);
    assert_int_equal(task_eval_size(t), 60);
    check_no_leak(t, 20000);
    task_destroy(t);
    c = task_config_default();
    c.min_len = c.max_len = 2;
    c.eval_size = 300; /* of 676 prompts */
    t = make_task("reverse", &c);
    check_no_leak(t, 20000);
    task_destroy(t);
    c = task_config_default();
    c.eval_size = 50;
    c.max_target = 10;
    c.max_number = 5;
    t = make_task("countdown", &c);
    check_no_leak(t, 20000);
    task_destroy(t);
}

/* ---- Verifiers -------------------------------------------------------------------------- */

static void test_addition_verify(void **state)
{
    (void)state;
    task *t = make_task("addition", NULL);
    task_item it;
    memset(&it, 0, sizeof it);
    strcpy(it.prompt, "123+456=");
    strcpy(it.answer, "579");
    expect_score(t, &it, "579", 1, 1, "correct");
    expect_score(t, &it, "578", 0, 1, "expected 579, got 578");
    expect_score(t, &it, "0579", 0, 1, "leading zero");
    expect_score(t, &it, "", 0, 0, NULL);
    expect_score(t, &it, " 579", 0, 0, NULL);
    expect_score(t, &it, "579\n", 0, 0, NULL);
    expect_score(t, &it, "579.0", 0, 0, NULL);
    expect_score(t, &it, "-579", 0, 0, NULL);
    expect_score(t, &it, "99999999999999999999999999", 0, 1, NULL);
    expect_score(t, &it, NULL, 0, 0, "no completion");
    /* the answer is recomputed from the prompt when absent, at any length */
    it.answer[0] = '\0';
    expect_score(t, &it, "579", 1, 1, NULL);
    strcpy(it.prompt, "99999999999999999999999999+1=");
    expect_score(t, &it, "100000000000000000000000000", 1, 1, NULL);
    expect_score(t, &it, "0", 0, 1, NULL);
    strcpy(it.prompt, "0+0=");
    expect_score(t, &it, "0", 1, 1, NULL);
    expect_score(t, &it, "00", 0, 1, "leading zero");
    /* an answer with leading zeros is read as its value */
    strcpy(it.answer, "007");
    expect_score(t, &it, "7", 1, 1, NULL);
    /* unusable items are errors, not scores */
    task_score s;
    coh_err err = {0};
    strcpy(it.answer, "five");
    assert_int_equal(task_verify(t, &it, "5", &s, &err), COH_EINVAL);
    it.answer[0] = '\0';
    strcpy(it.prompt, "What is 2+3?");
    assert_int_equal(task_verify(t, &it, "5", &s, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "A+B="));
    task_destroy(t);
}

static void test_string_verify(void **state)
{
    (void)state;
    task *rev = make_task("reverse", NULL), *srt = make_task("sort", NULL);
    task_item it;
    memset(&it, 0, sizeof it);
    strcpy(it.prompt, "rev:abc=");
    strcpy(it.answer, "cba");
    expect_score(rev, &it, "cba", 1, 1, NULL);
    expect_score(rev, &it, "abc", 0, 1, "expected cba");
    expect_score(rev, &it, "cb", 0, 0, NULL);
    expect_score(rev, &it, "cba ", 0, 0, NULL);
    expect_score(rev, &it, "c a", 0, 0, NULL);
    it.answer[0] = '\0';
    expect_score(rev, &it, "cba", 1, 1, NULL);
    strcpy(it.prompt, "sort:cab=");
    expect_score(srt, &it, "abc", 1, 1, NULL);
    expect_score(srt, &it, "cab", 0, 1, NULL);
    task_score s;
    coh_err err = {0};
    assert_int_equal(task_verify(rev, &it, "bac", &s, &err), COH_EINVAL); /* not "rev:" */
    task_destroy(rev);
    task_destroy(srt);
}

static void test_countdown_many_correct(void **state)
{
    (void)state;
    task *t = make_task("countdown", NULL);
    task_item it = countdown_item("{\"numbers\":[3,5,7],\"target\":22}");
    const char *right[] = {"3*5+7", "7+5*3", "(7+5*3)", "7+3*5", " 3 * 5 + 7 ", "((3*5)+7)",
                           "(((3)))*5+7", "5*3+7"};
    for (size_t i = 0; i < sizeof right / sizeof right[0]; i++)
        expect_score(t, &it, right[i], 1, 1, "correct");
    expect_score(t, &it, "3+5+7", 0, 1, "value 15, target 22");
    expect_score(t, &it, "7/5+3", 0, 1, "value 22/5");
    /* not every number must be used */
    it = countdown_item("{\"numbers\":[3,5,7],\"target\":15}");
    expect_score(t, &it, "3*5", 1, 1, NULL);
    expect_score(t, &it, "7*5-3*7+1", 0, 1, "used more times");
    /* fractional intermediates are fine when the result is exact */
    it = countdown_item("{\"numbers\":[4,6,3],\"target\":8}");
    expect_score(t, &it, "4/3*6", 1, 1, NULL);
    expect_score(t, &it, "6/3*4", 1, 1, NULL);
    expect_score(t, &it, "4*6/3", 1, 1, NULL);
    expect_score(t, &it, "6/(3/4)", 1, 1, NULL);
    expect_score(t, &it, "4/(3/6)", 1, 1, NULL);
    /* negative intermediates are fine too */
    it = countdown_item("{\"numbers\":[2,9,4,3],\"target\":7}");
    expect_score(t, &it, "(2-9)*(3-4)", 1, 1, NULL);
    expect_score(t, &it, "(3-4)*(2-9)", 1, 1, NULL);
    expect_score(t, &it, "2-9+4*3", 0, 1, "value 5, target 7");
    expect_score(t, &it, "2-9", 0, 1, "value -7, target 7");
    task_destroy(t);
}

static void test_countdown_rejections(void **state)
{
    (void)state;
    task *t = make_task("countdown", NULL);
    task_item it = countdown_item("{\"numbers\":[3,5,7],\"target\":22}");
    /* reuse and unknown numbers */
    expect_score(t, &it, "3*5+7+3-3", 0, 1, "number 3 used more times");
    expect_score(t, &it, "7*3+1", 0, 1, "number 1 is not among");
    expect_score(t, &it, "3*5+8", 0, 1, "number 8 is not among");
    expect_score(t, &it, "03*5+7", 0, 1, "leading zero");
    expect_score(t, &it, "22", 0, 1, "not among");
    /* division by zero, with and without a literal zero */
    expect_score(t, &it, "7/0+15", 0, 1, NULL);
    expect_score(t, &it, "7/0", 0, 1, NULL);
    it = countdown_item("{\"numbers\":[3,3,7,0],\"target\":22}");
    expect_score(t, &it, "7/(3-3)", 0, 1, "division by zero");
    expect_score(t, &it, "7/0+3*3", 0, 1, "division by zero");
    expect_score(t, &it, "0/7", 0, 1, "value 0, target 22");
    /* syntax: format 0 */
    it = countdown_item("{\"numbers\":[3,5,7],\"target\":22}");
    const char *bad[] = {"",       "3*5+",     "(3*5+7", "3*5+7)",  "3**5+7", "-3+5",
                         "3*5+7=22", "3 5 7",  "()",     "3*(5+7", ")(",      "3*5+7\n",
                         "3x5+7",  "22:3*5+7", "3*5+7 answer", "\t3*5+7", "+3*5+7"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_score(t, &it, bad[i], 0, 0, NULL);
    expect_score(t, &it, "(3*5+7", 0, 0, "expected ')'");
    expect_score(t, &it, "3*5+7)", 0, 0, "unexpected ')'");
    /* overflow is wrong, not a crash */
    it = countdown_item("{\"numbers\":[1000000000000,1000000000000,1000000000000,7],"
                        "\"target\":1}");
    expect_score(t, &it, "1000000000000*1000000000000*1000000000000", 0, 1, "overflow");
    expect_score(t, &it, "1000000000000-1000000000000*1000000000000", 0, 1, "overflow");
    expect_score(t, &it, "7/1000000000000/1000000000000/1000000000000", 0, 1, "overflow");
    expect_score(t, &it, "(1000000000000-1000000000000)*1000000000000+7/7", 0, 1, "used");
    expect_score(t, &it, "1000000000000/1000000000000", 1, 1, NULL);
    expect_score(t, &it, "99999999999999999999999999", 0, 1, "too large");
    expect_score(t, &it, "9223372036854775807", 0, 1, "not among");
    expect_score(t, &it, "9223372036854775808", 0, 1, "too large");
    /* unusable meta is an error */
    const char *metas[] = {"", "{}", "not json", "{\"numbers\":3,\"target\":1}",
                           "{\"numbers\":[],\"target\":1}", "{\"numbers\":[1.5],\"target\":1}",
                           "{\"numbers\":[-1],\"target\":1}", "{\"numbers\":[1,2]}",
                           "{\"numbers\":[1,2],\"target\":\"3\"}", "[1,2,3]"};
    for (size_t i = 0; i < sizeof metas / sizeof metas[0]; i++) {
        task_score s;
        coh_err err = {0};
        it = countdown_item(metas[i]);
        if (task_verify(t, &it, "1+2", &s, &err) != COH_EINVAL)
            fail_msg("meta %s accepted", metas[i]);
        assert_non_null(strstr(err.msg, "countdown"));
    }
    /* meta without a terminating NUL is read within its buffer only */
    memset(it.meta, '[', sizeof it.meta);
    task_score s;
    assert_int_equal(task_verify(t, &it, "1+2", &s, NULL), COH_EINVAL);
    task_destroy(t);
}

static void test_countdown_nesting(void **state)
{
    (void)state;
    task *t = make_task("countdown", NULL);
    task_item it = countdown_item("{\"numbers\":[3,5,7],\"target\":7}");
    char buf[TASK_COMPLETION_MAX + 1];
    for (int depth = 1; depth <= 127; depth++) {
        memset(buf, '(', (size_t)depth);
        buf[depth] = '7';
        memset(buf + depth + 1, ')', (size_t)depth);
        buf[2 * depth + 1] = '\0';
        if (depth <= TASK_COUNTDOWN_DEPTH_MAX)
            expect_score(t, &it, buf, 1, 1, NULL);
        else
            expect_score(t, &it, buf, 0, 0, "nested too deeply");
    }
    /* unbalanced deep nesting within the length limit */
    memset(buf, '(', 200);
    buf[200] = '\0';
    expect_score(t, &it, buf, 0, 0, NULL);
    memset(buf, ')', 200);
    expect_score(t, &it, buf, 0, 0, NULL);
    task_destroy(t);
}

/* ---- Robustness: hostile completions for every task ------------------------------------- */

static void test_hostile_completions(void **state)
{
    (void)state;
    enum { BIG = 100 * 1024 };
    char *big = malloc(BIG + 1), *digits = malloc(BIG + 1), *nest = malloc(BIG + 1);
    char *expr = malloc(BIG + 1);
    assert_true(big && digits && nest && expr);
    for (int i = 0; i < BIG; i++) {
        big[i] = (char)(1 + (i * 131 + 7) % 255); /* every byte value but NUL */
        digits[i] = (char)('0' + i % 10);
        nest[i] = i < BIG / 2 ? '(' : ')';
        expr[i] = i % 2 ? '+' : '3';
    }
    big[BIG] = digits[BIG] = nest[BIG] = expr[BIG] = '\0';
    expr[BIG - 1] = '3';
    char allbytes[256];
    for (int i = 0; i < 255; i++)
        allbytes[i] = (char)(i + 1);
    allbytes[255] = '\0';
    char nest200[201];
    memset(nest200, '(', 200);
    nest200[200] = '\0';
    const char *inputs[] = {
        allbytes, "\x01\x02\x7f\x1b[2J", "\xc3\xa9\xff\xfe", "3\xff+5", "\t\r\n\v\f",
        "99999999999999999999999999", "-99999999999999999999999999", "7/0", "1/0+0/0",
        "((3+5)", "3+5))", ")(", ")", "(", nest200, "(((((((((((((((((((((((((((((((((((((",
        "1e308", "NaN", "0x10", "%s%n%s", "", " ", big, digits, nest, expr,
    };
    for (size_t k = 0; k < N_TASKS; k++) {
        task *t = make_task(all_tasks[k], NULL);
        task_item it;
        assert_int_equal(task_train_item(t, 3, &it), 0);
        for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
            task_score s = verify(t, &it, inputs[i]);
            assert_true(s.correct == 0.0);
            if (strlen(inputs[i]) > TASK_COMPLETION_MAX) {
                assert_true(s.format == 0.0);
                assert_non_null(strstr(s.detail, "longer than"));
            }
            for (const char *d = s.detail; *d; d++)
                assert_true(*d >= 32 && *d <= 126);
        }
        task_score s = verify(t, &it, NULL);
        assert_true(s.correct == 0.0 && s.format == 0.0);
        task_destroy(t);
    }
    free(big);
    free(digits);
    free(nest);
    free(expr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_unknown_name),
        cmocka_unit_test(test_config_validation),
        cmocka_unit_test(test_names_and_bad_args),
        cmocka_unit_test(test_deterministic_streams),
        cmocka_unit_test(test_prompt_formats),
        cmocka_unit_test(test_demonstrations_verify),
        cmocka_unit_test(test_eval_never_in_training),
        cmocka_unit_test(test_addition_verify),
        cmocka_unit_test(test_string_verify),
        cmocka_unit_test(test_countdown_many_correct),
        cmocka_unit_test(test_countdown_rejections),
        cmocka_unit_test(test_countdown_nesting),
        cmocka_unit_test(test_hostile_completions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
