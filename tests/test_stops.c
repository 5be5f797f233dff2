/* test_stops.c - stop strings (common/stops.h): which strings are accepted, and where
 * stops_cut ends a completion, on hand-made cases of the built-in character tokenizer and of
 * Hugging Face tokenizers from ../shared/testdata/tokenizers (a stop string that ends inside
 * a multi-character token, byte-fallback runs whose text changes as ids arrive), and against
 * the definition itself (decode every prefix, take the first that holds a string) on random
 * completions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "stops.h"
#include "tokenizer.h"

#define TESTDATA COHORT_SOURCE_DIR "/../shared/testdata/tokenizers"

#define assert_contains(hay, needle)                                                       \
    do {                                                                                   \
        if (!strstr((hay), (needle)))                                                      \
            fail_msg("'%s' does not contain '%s'", (hay), (needle));                        \
    } while (0)

static stops_list list_of(int n, ...)
{
    stops_list l;
    memset(&l, 0, sizeof l);
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        coh_err err;
        const char *s = va_arg(ap, const char *);
        if (stops_add(&l, s, &err))
            fail_msg("stops_add '%s': %s", s, err.msg);
    }
    va_end(ap);
    return l;
}

/* The character tokenizer's ids of text (id = code - 29, as tokenizer.h lays it out). */
static int char_ids(const char *text, int *ids)
{
    int n = 0;
    for (const char *p = text; *p; p++)
        ids[n++] = (unsigned char)*p - 29;
    return n;
}

/* The definition, spelled out: decode every prefix, the first that holds a string. */
static int cut_by_definition(const tokenizer *tok, const int *ids, int n, const stops_list *l,
                             int *which)
{
    size_t cap = (size_t)n * 256 + 256;
    char *buf = malloc(cap);
    assert_non_null(buf);
    *which = -1;
    for (int k = 1; k <= n; k++) {
        size_t len = tok_decode(tok, ids, k, buf, cap);
        assert_true(len + 5 <= cap);
        for (int i = 0; i < l->n; i++) {
            size_t pn = strlen(l->text[i]);
            for (size_t at = 0; at + pn <= len; at++)
                if (memcmp(buf + at, l->text[i], pn) == 0) {
                    *which = i;
                    free(buf);
                    return k;
                }
        }
    }
    free(buf);
    return n;
}

/* ---- stops_check / stops_add ------------------------------------------------------------ */

static void test_check(void **state)
{
    (void)state;
    coh_err err;
    assert_int_equal(stops_check("+", &err), COH_OK);
    assert_int_equal(stops_check("\n\nQuestion:", &err), COH_OK);
    assert_int_equal(stops_check("\xE2\x82\xAC \xE6\x97\xA5\xF0\x9F\x98\x80", &err), COH_OK);
    char s64[66];
    memset(s64, 'x', 64);
    s64[64] = '\0';
    assert_int_equal(stops_check(s64, &err), COH_OK);
    s64[64] = 'y';
    s64[65] = '\0';
    assert_int_equal(stops_check(s64, &err), COH_ERANGE);
    assert_contains(err.msg, "65 bytes");
    assert_int_equal(stops_check("", &err), COH_EINVAL);
    assert_contains(err.msg, "empty");
    assert_int_equal(stops_check(NULL, &err), COH_EINVAL);
    static const struct {
        const char *s;
        const char *at;
    } bad[] = {
        {"ab\xFF", "at byte 2"},             /* never in UTF-8 */
        {"\xC0\xAF", "at byte 0"},           /* overlong '/' */
        {"x\xE0\x80\x80", "at byte 1"},      /* overlong NUL */
        {"\xED\xA0\x80", "at byte 0"},       /* a surrogate */
        {"\xF4\x90\x80\x80", "at byte 0"},   /* above U+10FFFF */
        {"ok\xE2\x82", "at byte 2"},         /* cut short */
        {"\x80", "at byte 0"},               /* a lone continuation byte */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (stops_check(bad[i].s, &err) != COH_EINVAL)
            fail_msg("bad case %zu was accepted", i);
        assert_contains(err.msg, "not valid UTF-8");
        assert_contains(err.msg, bad[i].at);
    }
}

static void test_add(void **state)
{
    (void)state;
    coh_err err;
    stops_list l;
    memset(&l, 0, sizeof l);
    char s[8];
    for (int i = 0; i < STOPS_MAX; i++) {
        snprintf(s, sizeof s, "s%d", i);
        assert_int_equal(stops_add(&l, s, &err), COH_OK);
    }
    stops_list before = l;
    assert_int_equal(stops_add(&l, "one more", &err), COH_ERANGE);
    assert_contains(err.msg, "more than 8 stop strings");
    assert_true(stops_equal(&l, &before));
    assert_string_equal(l.text[7], "s7");
    memset(&l, 0, sizeof l);
    assert_int_equal(stops_add(&l, "\xFF", &err), COH_EINVAL);
    assert_int_equal(l.n, 0);
    stops_list a = list_of(2, "x", "y"), b = list_of(2, "x", "y"), c = list_of(2, "y", "x");
    assert_true(stops_equal(&a, &b));
    assert_false(stops_equal(&a, &c));
}

/* ---- the character tokenizer ------------------------------------------------------------- */

static void test_cut_char(void **state)
{
    (void)state;
    tokenizer *tok = NULL;
    coh_err err;
    assert_int_equal(tok_create_default(&tok, &err), COH_OK);
    int ids[128], which = 99;

    /* a stop string spanning several tokens: cut after the token that completes it */
    stops_list l = list_of(1, "+b=");
    int n = char_ids("a+b=12", ids);
    assert_int_equal(stops_cut(tok, ids, n, &l, &which, &err), 4);
    assert_int_equal(which, 0);
    /* at the very start */
    l = list_of(1, "#");
    n = char_ids("##x", ids);
    assert_int_equal(stops_cut(tok, ids, n, &l, &which, &err), 1);
    assert_int_equal(which, 0);
    /* ... and as the very last token */
    n = char_ids("abc#", ids);
    assert_int_equal(stops_cut(tok, ids, n, &l, &which, &err), 4);
    assert_int_equal(which, 0);
    /* never found: the whole completion, which = -1 */
    l = list_of(2, "zz", "+-");
    n = char_ids("a+b-z z", ids);
    assert_int_equal(stops_cut(tok, ids, n, &l, &which, &err), n);
    assert_int_equal(which, -1);
    /* two strings: the later-starting one completes first and wins, in either order */
    l = list_of(2, "abcd", "bc");
    n = char_ids("xabcdef", ids);
    assert_int_equal(stops_cut(tok, ids, n, &l, &which, &err), 4);
    assert_int_equal(which, 1);
    l = list_of(2, "bc", "abcd");
    assert_int_equal(stops_cut(tok, ids, n, &l, &which, &err), 4);
    assert_int_equal(which, 0);
    /* both complete at the same token: the first of the list is named */
    l = list_of(2, "cd", "bcd");
    assert_int_equal(stops_cut(tok, ids, n, &l, &which, &err), 5);
    assert_int_equal(which, 0);
    /* an empty completion, and an empty list */
    assert_int_equal(stops_cut(tok, ids, 0, &l, &which, &err), 0);
    assert_int_equal(which, -1);
    stops_list none;
    memset(&none, 0, sizeof none);
    assert_int_equal(stops_cut(tok, ids, n, &none, &which, &err), n);
    assert_int_equal(which, -1);
    /* special ids decode to nothing: "a<eos>b" holds "ab" once b arrives */
    l = list_of(1, "ab");
    ids[0] = 'a' - 29;
    ids[1] = TOK_EOS;
    ids[2] = 'b' - 29;
    ids[3] = TOK_EOS;
    assert_int_equal(stops_cut(tok, ids, 4, &l, &which, &err), 3);
    assert_int_equal(which, 0);
    /* an EOS-ended completion without the string is left whole */
    l = list_of(1, "ba");
    assert_int_equal(stops_cut(tok, ids, 4, &l, NULL, &err), 4);
    /* bad arguments */
    assert_int_equal(stops_cut(tok, ids, -1, &l, &which, &err), COH_EINVAL);
    assert_int_equal(stops_cut(NULL, ids, 2, &l, &which, &err), COH_EINVAL);
    assert_int_equal(stops_cut(tok, NULL, 2, &l, &which, &err), COH_EINVAL);
    tok_destroy(tok);
}

/* The binary search of the character kind gives the definition's answer. */
static void test_cut_char_random(void **state)
{
    (void)state;
    tokenizer *tok = NULL;
    coh_err err;
    assert_int_equal(tok_create_default(&tok, &err), COH_OK);
    rng r;
    rng_init(&r, 7);
    int ids[64], hits = 0;
    for (int trial = 0; trial < 3000; trial++) {
        int n = (int)rng_below(&r, 65);
        for (int i = 0; i < n; i++) /* a small alphabet, specials and an out-of-range id */
            ids[i] = rng_below(&r, 8) == 0    ? (int)rng_below(&r, 3)
                     : rng_below(&r, 50) == 0 ? 5000
                                              : 'a' - 29 + (int)rng_below(&r, 4);
        stops_list l;
        memset(&l, 0, sizeof l);
        int ns = 1 + (int)rng_below(&r, 3);
        for (int s = 0; s < ns; s++) {
            char text[6];
            int len = 1 + (int)rng_below(&r, 4);
            for (int c = 0; c < len; c++)
                text[c] = (char)('a' + rng_below(&r, 4));
            text[len] = '\0';
            assert_int_equal(stops_add(&l, text, &err), COH_OK);
        }
        int w1, w2;
        int got = stops_cut(tok, ids, n, &l, &w1, &err);
        int want = cut_by_definition(tok, ids, n, &l, &w2);
        if (got != want || w1 != w2)
            fail_msg("trial %d: stops_cut %d (string %d), definition %d (string %d)", trial,
                     got, w1, want, w2);
        hits += w1 >= 0;
    }
    assert_true(hits > 1000 && hits < 2900); /* both outcomes were exercised */
    tok_destroy(tok);
}

/* ---- Hugging Face tokenizers ------------------------------------------------------------- */

static tokenizer *load_hf(const char *name)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", TESTDATA, name);
    tokenizer *tok = NULL;
    coh_err err;
    if (tok_load_dir(dir, &tok, &err))
        fail_msg("%s: %s (the tokenizers ship in ../shared/testdata next to the source tree)",
                 dir, err.msg);
    return tok;
}

static int encode(const tokenizer *tok, const char *text, int *ids, int cap)
{
    int n = 0;
    coh_err err;
    if (tok_encode(tok, text, ids, cap, &n, &err))
        fail_msg("encode '%s': %s", text, err.msg);
    return n;
}

static void test_cut_gpt2(void **state)
{
    (void)state;
    tokenizer *tok = load_hf("gpt2");
    coh_err err;
    int ids[64], which;
    char text[256];
    int n = encode(tok, "The answer is 42. The quick brown fox", ids, 64);
    /* the tokens of the text; find the one that is " brown" (several characters) */
    int brown = -1;
    for (int k = 0; k < n; k++) {
        tok_decode(tok, ids + k, 1, text, sizeof text);
        if (strcmp(text, " brown") == 0)
            brown = k;
    }
    assert_true(brown > 0);
    /* "bro" ends inside " brown": the token that completes it is kept, whole */
    stops_list l = list_of(1, "bro");
    assert_int_equal(stops_cut(tok, ids, n, &l, &which, &err), brown + 1);
    assert_int_equal(which, 0);
    tok_decode(tok, ids, brown + 1, text, sizeof text);
    assert_string_equal(text, "The answer is 42. The quick brown");
    /* a string spanning tokens, ending inside one: "42. Th" */
    l = list_of(2, "fox", "42. Th");
    int got = stops_cut(tok, ids, n, &l, &which, &err);
    assert_int_equal(which, 1);
    tok_decode(tok, ids, got, text, sizeof text);
    assert_string_equal(text, "The answer is 42. The");
    tok_decode(tok, ids, got - 1, text, sizeof text);
    assert_null(strstr(text, "42. Th"));
    /* at the very start, inside the first token */
    l = list_of(1, "Th");
    assert_int_equal(stops_cut(tok, ids, n, &l, &which, &err), 1);
    /* never found */
    l = list_of(1, "foxes");
    assert_int_equal(stops_cut(tok, ids, n, &l, &which, &err), n);
    assert_int_equal(which, -1);
    /* a multi-byte character split over byte-level tokens: found once its last byte is in */
    n = encode(tok, "price: \xE2\x82\xAC" "5", ids, 64);
    l = list_of(1, "\xE2\x82\xAC");
    got = stops_cut(tok, ids, n, &l, &which, &err);
    assert_int_equal(which, 0);
    tok_decode(tok, ids, got, text, sizeof text);
    assert_non_null(strstr(text, "\xE2\x82\xAC"));
    tok_decode(tok, ids, got - 1, text, sizeof text);
    assert_null(strstr(text, "\xE2\x82\xAC"));
    tok_destroy(tok);
}

/* A byte-fallback tokenizer (Llama 2): a run of <0xXX> tokens decodes as UTF-8 only while it
 * is valid, so the text of a prefix can lose a character the shorter prefix had. The first
 * prefix that holds the string wins, as defined. */
static void test_cut_byte_fallback(void **state)
{
    (void)state;
    tokenizer *tok = load_hf("llama2");
    coh_err err;
    int ids[64], which, n = 0;
    char text[256];
    int enc[8];
    /* byte tokens are ids 3 + byte in Llama 2's vocabulary: <0xC3> <0xA9> is "é" */
    const int c3 = 3 + 0xC3, a9 = 3 + 0xA9, e2 = 3 + 0xE2;
    int m = encode(tok, "x", enc, 8);
    ids[n++] = enc[m - 1];
    ids[n++] = c3;
    ids[n++] = a9;
    ids[n++] = e2;
    ids[n++] = enc[m - 1];
    tok_decode(tok, ids, 3, text, sizeof text);
    assert_non_null(strstr(text, "\xC3\xA9"));      /* "xé" */
    tok_decode(tok, ids, 4, text, sizeof text);
    assert_null(strstr(text, "\xC3\xA9"));          /* the run went invalid */
    stops_list l = list_of(1, "\xC3\xA9");
    assert_int_equal(stops_cut(tok, ids, n, &l, &which, &err), 3);
    assert_int_equal(which, 0);
    int w2;
    assert_int_equal(cut_by_definition(tok, ids, n, &l, &w2), 3);
    tok_destroy(tok);
}

/* Random completions of every testdata tokenizer: stops_cut is the definition. Stop strings
 * are pieces of the decoded text, so that most completions are cut somewhere. */
static void test_cut_hf_random(void **state)
{
    (void)state;
    static const char *const names[] = {"gpt2", "llama2", "phi3", "starcoder", "deepseek-llm"};
    rng r;
    rng_init(&r, 11);
    for (size_t t = 0; t < sizeof names / sizeof names[0]; t++) {
        tokenizer *tok = load_hf(names[t]);
        int V = tok_vocab_size(tok), hits = 0, trials = 60;
        coh_err err;
        for (int trial = 0; trial < trials; trial++) {
            int ids[40], n = 1 + (int)rng_below(&r, 40);
            for (int i = 0; i < n; i++) /* byte tokens (low ids) are common, to mix runs */
                ids[i] = (int)rng_below(&r, rng_below(&r, 2) ? 300u : (unsigned)V);
            char full[8192];
            size_t len = tok_decode(tok, ids, n, full, sizeof full);
            stops_list l;
            memset(&l, 0, sizeof l);
            for (int s = 0; s < 2 && len > 0; s++) {
                size_t at = (size_t)rng_below(&r, len), k = 1 + (size_t)rng_below(&r, 6);
                char piece[16];
                if (at + k > len)
                    k = len - at;
                memcpy(piece, full + at, k);
                piece[k] = '\0';
                if (strlen(piece) == k && stops_check(piece, NULL) == COH_OK)
                    stops_add(&l, piece, &err);
            }
            if (l.n == 0)
                assert_int_equal(stops_add(&l, "zq", &err), COH_OK);
            int w1, w2;
            int got = stops_cut(tok, ids, n, &l, &w1, &err);
            int want = cut_by_definition(tok, ids, n, &l, &w2);
            if (got != want || w1 != w2)
                fail_msg("%s trial %d: stops_cut %d (string %d), definition %d (string %d)",
                         names[t], trial, got, w1, want, w2);
            hits += w1 >= 0;
        }
        assert_true(hits > trials / 3);
        tok_destroy(tok);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_cut_char),
        cmocka_unit_test(test_cut_char_random),
        cmocka_unit_test(test_cut_gpt2),
        cmocka_unit_test(test_cut_byte_fallback),
        cmocka_unit_test(test_cut_hf_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
