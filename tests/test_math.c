/* test_math.c - the `math` verifier (reward/mathverify.h): answer extraction, exact numeric
 * equivalence, reasons, text references, bad input, the scorer's routing of task "math",
 * and every reference solution of the real GSM8K data set (../shared/testdata/gsm8k). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mathverify.h"
#include "scorer.h"
#include "tasks.h"

#define GSM8K_DIR COHORT_SOURCE_DIR "/../shared/testdata/gsm8k"

#define assert_contains(msg, s)                                                                \
    do {                                                                                       \
        if (!strstr((msg), (s)))                                                               \
            fail_msg("\"%s\" lacks \"%s\"", (msg), (s));                                       \
    } while (0)

/* ---- Extraction --------------------------------------------------------------------------- */

typedef struct extract_case {
    const char *text;
    mathv_source source;
    const char *number; /* the number as written in text, or NULL when there is none */
} extract_case;

static void test_extraction_rules(void **state)
{
    (void)state;
    static const extract_case cases[] = {
        {"#### 72", MATHV_HASH, "72"},
        /* "####" beats later numbers, a later \boxed{} and the last number */
        {"She has 5 apples.\n#### 72\nThen 99 more, \\boxed{3}", MATHV_HASH, "72"},
        {"####\n  -1,234.5 dollars", MATHV_HASH, "-1,234.5"},
        {"#### $18.00.", MATHV_HASH, "$18.00"},
        /* the last "####" followed by a number; headings like "#### Final Answer" are not */
        {"#### 5\n#### 6", MATHV_HASH, "6"},
        {"#### 1. Costs\n...\n#### 18\n#### Check\nok, 20 left", MATHV_HASH, "18"},
        {"#### Final Answer\nThe total is $\\boxed{18}$ (not 20)", MATHV_BOXED, "18"},
        {"#### seventy-two, or 72", MATHV_LAST, "72"},
        {"##### 7 ######", MATHV_HASH, "7"},
        {"#### **42**", MATHV_HASH, "42"}, /* markdown emphasis */
        /* \boxed{} beats the last number; the last box wins; braces balance */
        {"so \\boxed{\\frac{1}{2}} and then 7", MATHV_BOXED, "\\frac{1}{2}"},
        {"\\boxed{3} first, then \\boxed{4} and 9", MATHV_BOXED, "4"},
        {"\\boxed{5} and an unclosed \\boxed{6", MATHV_BOXED, "5"},
        {"\\boxed{  18 \\text{ dollars} }", MATHV_BOXED, "18"},
        {"\\boxed{\\dfrac{3}{4}}", MATHV_BOXED, "\\dfrac{3}{4}"},
        {"\\boxed{2x+3}", MATHV_BOXED, NULL},
        {"\\boxed{x = -5}", MATHV_BOXED, "-5"},
        {"\\boxed{x = 5y}", MATHV_BOXED, "5"}, /* trailing words */
        {"\\boxed{x = y + 5}", MATHV_BOXED, NULL},
        {"\\boxed{\\{1\\}}", MATHV_BOXED, NULL},
        {"\\boxed{50\\%}", MATHV_BOXED, "50\\%"},
        {"\\boxed{90^\\circ}", MATHV_BOXED, "90"},
        {"\\boxed{3\\pi}", MATHV_BOXED, NULL},
        {"\\boxed{2^x}", MATHV_BOXED, NULL},
        {"\\boxed{5\\,\\mathrm{cm}}", MATHV_BOXED, "5"},
        /* the last number */
        {"I have 3 apples and 17 pears.", MATHV_LAST, "17"},
        {"9 * 2 = $<<9*2=18>>18 every day", MATHV_LAST, "18"},
        {"5-3", MATHV_LAST, "3"},      /* a minus after a digit is an operator */
        {"x = -5", MATHV_LAST, "-5"},  /* ... and after '=' a sign */
        {"total 1,234", MATHV_LAST, "1,234"},
        {"list 1,23", MATHV_LAST, "23"},           /* not a thousands separator */
        {"1,2345", MATHV_LAST, "2345"},
        {"ratio 3/4 here", MATHV_LAST, "3/4"},
        {"it was 50% off", MATHV_LAST, "50%"},
        {"it costs \xE2\x82\xAC" "5 or \xC2\xA3" "7", MATHV_LAST, "\xC2\xA3" "7"},
        {"falls to \xE2\x88\x92" "4", MATHV_LAST, "\xE2\x88\x92" "4"},
        {"about .5 of it", MATHV_LAST, ".5"},
        {"1{,}000 ways", MATHV_LAST, "1{,}000"},
        {"about 2e3", MATHV_LAST, "3"}, /* no scientific notation */
        {"#### 2e3", MATHV_HASH, "2"},
        {"no digits at all", MATHV_NONE, NULL},
        {"", MATHV_NONE, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const extract_case *c = &cases[i];
        mathv_answer a;
        mathv_extract(c->text, strlen(c->text), &a);
        if (a.source != c->source)
            fail_msg("\"%s\": source %s, want %s", c->text, mathv_source_name(a.source),
                     mathv_source_name(c->source));
        if (!c->number) {
            if (a.has_number)
                fail_msg("\"%s\": found a number \"%.*s\", want none", c->text,
                         (int)a.num_len, c->text + a.num_start);
            continue;
        }
        if (!a.has_number)
            fail_msg("\"%s\": no number, want \"%s\"", c->text, c->number);
        if (a.num_len != strlen(c->number) || memcmp(c->text + a.num_start, c->number, a.num_len))
            fail_msg("\"%s\": number \"%.*s\", want \"%s\"", c->text, (int)a.num_len,
                     c->text + a.num_start, c->number);
    }
}

static void test_raw_answer_spans(void **state)
{
    (void)state;
    const char *t = "work...\n#### 42 apples  \nmore";
    mathv_answer a;
    mathv_extract(t, strlen(t), &a);
    assert_int_equal(a.source, MATHV_HASH);
    assert_int_equal(a.len, strlen("42 apples")); /* the rest of the line, trimmed */
    assert_memory_equal(t + a.start, "42 apples", a.len);
    t = "\\boxed{ \\sqrt{2} }";
    mathv_extract(t, strlen(t), &a);
    assert_int_equal(a.source, MATHV_BOXED);
    assert_int_equal(a.has_number, 0);
    assert_int_equal(a.len, strlen("\\sqrt{2}"));
    assert_memory_equal(t + a.start, "\\sqrt{2}", a.len);
}

/* ---- Numbers ------------------------------------------------------------------------------ */

static void parse(const char *s, mathv_number *n)
{
    size_t k = mathv_parse_number(s, strlen(s), n);
    if (k != strlen(s))
        fail_msg("\"%s\": parsed %zu of %zu bytes", s, k, strlen(s));
}

static void test_number_values(void **state)
{
    (void)state;
    mathv_number n;
    parse("1,234,567", &n);
    assert_true(n.exact && n.is_decimal && !n.neg);
    assert_int_equal(n.n, 1234567);
    assert_int_equal(n.d, 1);
    assert_string_equal(n.digits, "1234567");
    parse("-$18.50", &n);
    assert_true(n.neg && n.exact);
    assert_int_equal(n.n, 37); /* 18.5 = 37/2 */
    assert_int_equal(n.d, 2);
    assert_string_equal(n.digits, "18.5");
    parse("007.2500", &n);
    assert_string_equal(n.digits, "7.25");
    assert_int_equal(n.n, 29);
    assert_int_equal(n.d, 4);
    parse("\\frac{6}{-8}", &n);
    assert_true(n.neg && n.exact && !n.is_decimal);
    assert_int_equal(n.n, 3);
    assert_int_equal(n.d, 4);
    parse("-0.0", &n);
    assert_false(n.neg); /* zero is never negative */
    assert_string_equal(n.digits, "0");
    parse("12 %", &n);
    assert_true(n.percent);
    assert_int_equal(n.n, 12);
    parse("18446744073709551615", &n); /* 2^64 - 1: still exact */
    assert_true(n.exact);
    assert_true(n.n == UINT64_MAX);
    parse("18446744073709551616", &n); /* 2^64: beyond the rational, kept as digits */
    assert_false(n.exact);
    assert_string_equal(n.digits, "18446744073709551616");
    /* not numbers */
    static const char *const none[] = {"", "-", "$", "abc", "\\frac{x}{2}", "\\frac{1}{0}",
                                       ",5", "\\fracx"};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++)
        if (mathv_parse_number(none[i], strlen(none[i]), &n))
            fail_msg("\"%s\" parsed as a number", none[i]);
    /* a zero denominator ends the number before the '/' */
    assert_int_equal(mathv_parse_number("3/0", 3, &n), 1);
    assert_int_equal(n.n, 3);
}

typedef struct eq_case {
    const char *a, *b;
    int equal; /* 1, 0 or -1 (cannot compare) */
} eq_case;

static void test_equivalence(void **state)
{
    (void)state;
    static const eq_case cases[] = {
        {"1.50", "1.5", 1},
        {"0.5", "1/2", 1},
        {"\\frac{1}{2}", "0.5", 1},
        {"\\dfrac{3}{4}", "0.75", 1},
        {"\\tfrac{3}{4}", "3/4", 1},
        {"\\frac12", "0.5", 1},
        {"6/8", "3/4", 1},
        {"1,234", "1234", 1},
        {"-5", "-5", 1},
        {"-5", "5", 0},
        {"$18.00", "18", 1},
        {"50%", "50", 1},      /* percent is a unit: dropped */
        {"50%", "0.5", 0},     /* ... not a factor of 1/100 */
        {"-0", "0", 1},
        {"3.14159", "3.14", 0},
        {"1/3", "0.333333333333333333", 0},
        {"0.1", "1/10", 1},
        /* integers around 2^53, where doubles go wrong: exact here */
        {"9007199254740993", "9007199254740992", 0},
        {"9007199254740993", "9,007,199,254,740,993", 1},
        /* beyond 64 bits: decimals by their digits */
        {"123456789012345678901234567890", "123456789012345678901234567890.000", 1},
        {"123456789012345678901234567890", "123456789012345678901234567891", 0},
        {"36893488147419103232", "36893488147419103232/1", -1}, /* 2^65 as a fraction */
        {"0.000000147573952589676412928", "1099511627776/7450580596923828125", 1}, /* 2^40/5^27 */
        {"0.30000000000000004", "0.3", 0},
        {"1/3", "0.5", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mathv_number a, b;
        parse(cases[i].a, &a);
        parse(cases[i].b, &b);
        int e = mathv_equal(&a, &b), f = mathv_equal(&b, &a);
        if (e != cases[i].equal || f != cases[i].equal)
            fail_msg("%s vs %s: %d / %d, want %d", cases[i].a, cases[i].b, e, f,
                     cases[i].equal);
    }
    /* a decimal of MATHV_DIGITS_MAX digits or more differs from every 64-bit rational */
    char big[300];
    memset(big, '7', 299);
    big[299] = '\0';
    mathv_number a, b;
    parse(big, &a);
    assert_false(a.exact);
    assert_string_equal(a.digits, "");
    parse("7", &b);
    assert_int_equal(mathv_equal(&a, &b), 0);
}

/* ---- Verification: scores and reasons ------------------------------------------------------ */

typedef struct verify_case {
    const char *completion, *reference;
    double correct, format;
    const char *reason; /* a substring of the detail */
} verify_case;

static void test_verify_reasons(void **state)
{
    (void)state;
    static const verify_case cases[] = {
        {"9 * 2 = 18\n#### 18", "18", 1, 1, "answer 18 (after ####) equals reference 18"},
        {"I think it is 17", "18", 0, 0, "answer 17 (last number) != reference 18"},
        {"I think it is 18 dollars.", "18", 1, 0, "answer 18 (last number) equals reference 18"},
        {"no idea", "18", 0, 0, "no number found"},
        {"#### 72\nbut maybe 99", "72", 1, 1, "answer 72 (after ####) equals reference 72"},
        {"#### seventy", "70", 0, 0, "no number found; reference 70"},
        {"#### Final Answer\n\\boxed{70}", "70", 1, 1, "answer 70 (in \\boxed{}) equals"},
        {"\\boxed{\\frac{1}{2}}", "0.5", 1, 1,
         "answer \\frac{1}{2} (in \\boxed{}) equals reference 0.5"},
        {"\\boxed{2x+3}", "2", 0, 0, "\\boxed{2x+3} is not a single number"},
        {"#### $18.00", "18", 1, 1, "answer $18.00 (after ####) equals reference 18"},
        {"#### 1,234", "1234", 1, 1, "equals reference 1234"},
        {"#### -5", "-5", 1, 1, "equals"},
        {"so 5-3", "-3", 0, 0, "answer 3 (last number) != reference -3"},
        {"0.5", "1/2", 1, 0, "answer 0.5 (last number) equals reference 1/2"},
        {"3.14159", "3.14", 0, 0, "!= reference 3.14"},
        {"50%", "50", 1, 0, "answer 50% (last number) equals reference 50"},
        {"#### 18", " 18 \n", 1, 1, "equals reference 18"},
        {"#### 18", "\\boxed{18}", 1, 1, "equals reference 18"},
        {"#### 18", "$18 dollars", 1, 1, "equals reference $18"},
        {"#### 36893488147419103232", "36893488147419103232/1", 0, 1,
         "cannot be compared exactly"},
        /* references that are not numbers: compared as text */
        {"\\boxed{\\sqrt{2}}", "\\sqrt{2}", 1, 1, "matches reference \\sqrt{2} as text"},
        {"\\boxed{\\left( 1, 2 \\right)}", "(1,2)", 1, 1, "as text"},
        {"#### \\dfrac{\\pi}{2}.", "$\\frac{\\pi}{2}$", 1, 1, "as text"},
        {"\\boxed{\\sqrt{3}}", "\\sqrt{2}", 0, 1, "compared as text"},
        {"\\boxed{3\\pi}", "3\\pi", 1, 1, "answer 3\\pi (in \\boxed{}) matches reference 3\\pi"},
        {"\\boxed{3}", "3\\pi", 0, 1, "compared as text"},
        {"#### 2\n#### \\sqrt{2}", "\\sqrt{2}", 1, 1, "answer \\sqrt{2} (after ####) matches"},
        {"#### Final Answer\n\\boxed{\\sqrt{2}}", "\\sqrt{2}", 1, 1, "(in \\boxed{}) matches"},
        {"roughly 1.41", "\\sqrt{2}", 0, 0,
         "is not a number, and the completion has no \\boxed{} or ####"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const verify_case *c = &cases[i];
        mathv_score sc;
        coh_err err;
        if (mathv_verify(c->completion, c->reference, &sc, &err))
            fail_msg("\"%s\" vs \"%s\": %s", c->completion, c->reference, err.msg);
        if (sc.correct != c->correct || sc.format != c->format)
            fail_msg("\"%s\" vs \"%s\": correct %g format %g (%s), want %g %g", c->completion,
                     c->reference, sc.correct, sc.format, sc.detail, c->correct, c->format);
        assert_contains(sc.detail, c->reason);
    }
}

static void test_verify_bad_input(void **state)
{
    (void)state;
    mathv_score sc;
    coh_err err;
    /* an unusable reference is the item's fault: an error, not a score */
    assert_int_equal(mathv_verify("#### 1", NULL, &sc, &err), COH_EINVAL);
    assert_int_equal(mathv_verify("#### 1", "  \n", &sc, &err), COH_EINVAL);
    assert_contains(err.msg, "no reference answer");
    char *longref = malloc(MATHV_REFERENCE_MAX + 2);
    assert_non_null(longref);
    memset(longref, '1', MATHV_REFERENCE_MAX + 1);
    longref[MATHV_REFERENCE_MAX + 1] = '\0';
    assert_int_equal(mathv_verify("1", longref, &sc, &err), COH_EINVAL);
    free(longref);
    /* any completion gets a score */
    assert_int_equal(mathv_verify(NULL, "1", &sc, &err), COH_OK);
    assert_true(sc.correct == 0);
    assert_string_equal(sc.detail, "no completion");
    size_t n = (size_t)MATHV_COMPLETION_MAX + 1;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, '1', n);
    big[n] = '\0';
    assert_int_equal(mathv_verify(big, "1", &sc, &err), COH_OK);
    assert_true(sc.correct == 0);
    assert_contains(sc.detail, "longer than");
    /* 100 KB of garbage bytes, and a 100 KB number: a score, promptly, printable reason */
    n = 100000;
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big[i] = (char)(1 + x % 255);
    }
    big[n] = '\0';
    assert_int_equal(mathv_verify(big, "7", &sc, &err), COH_OK);
    for (const char *p = sc.detail; *p; p++)
        assert_true(*p >= 32 && *p <= 126);
    memset(big, '9', n);
    assert_int_equal(mathv_verify(big, "9", &sc, &err), COH_OK);
    assert_true(sc.correct == 0);
    assert_contains(sc.detail, "!= reference 9");
    /* many unclosed boxes, and many open braces in one box: still linear time */
    clock_t t0 = clock();
    for (size_t i = 0; i + 7 <= n; i += 7)
        memcpy(big + i, "\\boxed{", 7);
    big[n - n % 7] = '\0';
    assert_int_equal(mathv_verify(big, "9", &sc, &err), COH_OK);
    assert_contains(sc.detail, "no number found");
    strcpy(big, "\\boxed{1} \\boxed{");
    memset(big + 17, '{', n - 17);
    big[n] = '\0';
    assert_int_equal(mathv_verify(big, "1", &sc, &err), COH_OK);
    assert_contains(sc.detail, "answer 1 (in \\boxed{}) equals reference 1");
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    if (secs > 2.0)
        fail_msg("adversarial boxes took %.2f s", secs);
    free(big);
}

/* ---- The reward service's scorer routes "math" here ---------------------------------------- */

static void test_scorer_routes_math(void **state)
{
    (void)state;
    scorer *s = NULL;
    coh_err err;
    assert_int_equal(scorer_create("{\"format_weight\": 0.5}", NULL, NULL, &s, &err), COH_OK);
    /* a GSM8K-length prompt and completion: nothing goes through fixed-size task fields */
    char prompt[1200], completion[3000];
    memset(prompt, 'q', sizeof prompt - 1);
    prompt[sizeof prompt - 1] = '\0';
    memset(completion, ' ', sizeof completion);
    snprintf(completion + 2900, 100, "so 9 * 2 = 18.\n#### 18");
    scorer_item it = {"math", prompt, completion, "18", "", NULL, NULL, 0, 0, 0};
    scorer_result r;
    assert_int_equal(scorer_score(s, &it, &r, &err), COH_OK);
    assert_int_equal(r.status, SCORE_OK);
    assert_true(r.reward == 1.5);
    assert_int_equal(r.n_components, 2);
    assert_string_equal(r.comp[0].name, "correct");
    assert_string_equal(r.detail, "answer 18 (after ####) equals reference 18");
    /* the reference from metadata when there is no answer: a string or a number */
    scorer_item m1 = {"math", "q", "the answer is 17", "", "{\"answer\": \"18\"}", NULL, NULL, 0, 0, 0};
    assert_int_equal(scorer_score(s, &m1, &r, &err), COH_OK);
    assert_int_equal(r.status, SCORE_OK);
    assert_true(r.reward == 0.0);
    assert_string_equal(r.detail, "answer 17 (last number) != reference 18");
    scorer_item m2 = {"math", "q", "\\boxed{0.25}", "", "{\"answer\": 0.25}", NULL, NULL, 0, 0, 0};
    assert_int_equal(scorer_score(s, &m2, &r, &err), COH_OK);
    assert_true(r.reward == 1.5);
    /* no reference at all: FAILED with the reason, never a silent 0 */
    scorer_item m3 = {"math", "q", "#### 1", "", "", NULL, NULL, 0, 0, 0};
    assert_int_equal(scorer_score(s, &m3, &r, &err), COH_OK);
    assert_int_equal(r.status, SCORE_FAILED);
    assert_contains(r.detail, "task math: math item has no reference answer");
    scorer_destroy(s);
    /* math has no generator: task_create says so */
    task *t = NULL;
    assert_int_equal(task_create("math", NULL, &t, &err), COH_EUNSUPPORTED);
    assert_null(t);
    assert_contains(err.msg, "verifier-only");
}

/* ---- The real data set: every GSM8K reference solution ------------------------------------- */

/* The conversion rule of deploy/gsm8k-to-prompts.py: the text after the last "####",
 * stripped, commas removed. */
static int gsm8k_answer(const char *solution, char *out, size_t cap)
{
    const char *p = NULL;
    for (const char *q = strstr(solution, "####"); q; q = strstr(q + 1, "####"))
        p = q;
    if (!p)
        return -1;
    p += 4;
    while (*p == ' ' || *p == '\t' || *p == '\n')
        p++;
    size_t n = 0;
    for (; *p && n + 1 < cap; p++)
        if (*p != ',')
            out[n++] = *p;
    while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == '\n' || out[n - 1] == '\t'))
        n--;
    out[n] = '\0';
    return n ? 0 : -1;
}

/* N + 1 written as decimal text (N an integer, possibly negative). */
static void plus_one(const char *n, char *out, size_t cap)
{
    long long v = strtoll(n, NULL, 10);
    snprintf(out, cap, "%lld", v + 1);
}

static int check_file(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", GSM8K_DIR, name);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s: the GSM8K test data must be there", path);
    char *line = NULL;
    size_t cap = 0;
    int lines = 0;
    while (getline(&line, &cap, f) > 0) {
        lines++;
        cJSON *o = cJSON_Parse(line);
        const cJSON *sol = cJSON_GetObjectItemCaseSensitive(o, "answer");
        if (!cJSON_IsString(sol))
            fail_msg("%s line %d: no \"answer\" string", name, lines);
        char ref[64], wrong[64];
        if (gsm8k_answer(sol->valuestring, ref, sizeof ref))
            fail_msg("%s line %d: no number after ####", name, lines);
        for (const char *p = ref; *p; p++) /* GSM8K answers are integers */
            if (!((*p >= '0' && *p <= '9') || (p == ref && *p == '-')))
                fail_msg("%s line %d: answer \"%s\" is not an integer", name, lines, ref);
        mathv_score sc;
        coh_err err;
        if (mathv_verify(sol->valuestring, ref, &sc, &err))
            fail_msg("%s line %d: %s", name, lines, err.msg);
        if (sc.correct != 1 || sc.format != 1 || !strstr(sc.detail, "(after ####) equals"))
            fail_msg("%s line %d: reference solution scored %g: %s", name, lines, sc.correct,
                     sc.detail);
        plus_one(ref, wrong, sizeof wrong);
        if (mathv_verify(sol->valuestring, wrong, &sc, &err))
            fail_msg("%s line %d: %s", name, lines, err.msg);
        if (sc.correct != 0 || !strstr(sc.detail, "!= reference"))
            fail_msg("%s line %d: wrong answer %s scored %g: %s", name, lines, wrong,
                     sc.correct, sc.detail);
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    return lines;
}

static void test_gsm8k_reference_solutions(void **state)
{
    (void)state;
    assert_int_equal(check_file("test.jsonl"), 1319);
    assert_int_equal(check_file("train.jsonl"), 7473);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_extraction_rules),
        cmocka_unit_test(test_raw_answer_spans),
        cmocka_unit_test(test_number_values),
        cmocka_unit_test(test_equivalence),
        cmocka_unit_test(test_verify_reasons),
        cmocka_unit_test(test_verify_bad_input),
        cmocka_unit_test(test_scorer_routes_math),
        cmocka_unit_test(test_gsm8k_reference_solutions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
