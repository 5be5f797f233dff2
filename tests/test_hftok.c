/* test_hftok.c - Hugging Face tokenizer.json tokenizers (common/hftok.c) against the golden
 * cases of ../shared/testdata/tokenizers/, and refusal of bad files and bad text.
 *
 * Every folder of the testdata directory is listed at run time (so new tokenizers are picked
 * up by themselves) and becomes one test: every line of its cases.jsonl must encode (no BOS
 * or EOS) to exactly its "ids", and where "decode" is given, decoding "ids" must give exactly
 * that text. A missing testdata directory fails the run.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "hftok.h"
#include "tokenizer.h"

#define TESTDATA COHORT_SOURCE_DIR "/../shared/testdata/tokenizers"

/* ---- helpers ---------------------------------------------------------------------------- */

static char *read_file(const char *path, size_t *len)
{
    char *buf = NULL;
    coh_err err;
    if (fs_read_all(path, &buf, len, &err) != COH_OK) {
        print_error("cannot read %s: %s\n", path, err.msg);
        return NULL;
    }
    return buf;
}

static hft *load_hft(const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    size_t len = 0;
    char *text = read_file(path, &len);
    assert_non_null(text);
    hft *t = NULL;
    coh_err err;
    coh_err_clear(&err);
    int rc = hft_create(text, len, &t, &err);
    free(text);
    if (rc != COH_OK)
        print_error("%s: %s\n", path, err.msg);
    assert_int_equal(rc, COH_OK);
    return t;
}

static void print_ids(const char *what, const int *ids, size_t n)
{
    print_error("  %s (%zu):", what, n);
    for (size_t i = 0; i < n; i++)
        print_error(" %d", ids[i]);
    print_error("\n");
}

/* hft_create of text must fail with code and a message containing word. */
static void expect_create_fails(const char *json, int code, const char *word)
{
    hft *t = (hft *)(uintptr_t)1;
    coh_err err;
    coh_err_clear(&err);
    int rc = hft_create(json, strlen(json), &t, &err);
    if (rc != code || !strstr(err.msg, word))
        print_error("hft_create rc=%d msg='%s'; expected %d with '%s'\n", rc, err.msg, code,
                    word);
    assert_int_equal(rc, code);
    assert_null(t);
    assert_non_null(strstr(err.msg, word));
}

static hft *create_ok(const char *json)
{
    hft *t = NULL;
    coh_err err;
    coh_err_clear(&err);
    int rc = hft_create(json, strlen(json), &t, &err);
    if (rc != COH_OK)
        print_error("hft_create: %s\n", err.msg);
    assert_int_equal(rc, COH_OK);
    return t;
}

static void expect_ids(const hft *t, const char *text, const int *want, size_t nwant)
{
    int *ids = NULL;
    size_t n = 0;
    coh_err err;
    int rc = hft_encode(t, text, strlen(text), &ids, &n, &err);
    if (rc != COH_OK)
        print_error("encode '%s': %s\n", text, err.msg);
    assert_int_equal(rc, COH_OK);
    int same = n == nwant && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    if (!same) {
        print_error("encode '%s':\n", text);
        print_ids("expected", want, nwant);
        print_ids("got", ids, n);
    }
    free(ids);
    assert_true(same);
}

static void expect_text(const hft *t, const int *ids, size_t n, const char *want)
{
    char *out = NULL;
    size_t len = 0;
    coh_err err;
    int rc = hft_decode(t, ids, n, &out, &len, &err);
    if (rc != COH_OK)
        print_error("decode: %s\n", err.msg);
    assert_int_equal(rc, COH_OK);
    if (strcmp(out, want) != 0)
        print_error("decode: expected '%s', got '%s'\n", want, out);
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
    free(out);
}

/* ---- the golden cases ------------------------------------------------------------------ */

static void test_golden_folder(void **state)
{
    const char *dir = *state;
    hft *t = load_hft(dir);
    char path[1024];
    snprintf(path, sizeof path, "%s/cases.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        print_error("cannot open %s\n", path);
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int lineno = 0, ncases = 0, ndecode = 0, nbad = 0;
    while ((got = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (got <= 1)
            continue;
        cJSON *c = cJSON_Parse(line);
        if (!c)
            print_error("%s:%d is not JSON\n", path, lineno);
        assert_non_null(c);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(c, "text");
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "ids");
        const cJSON *dec = cJSON_GetObjectItemCaseSensitive(c, "decode");
        assert_true(cJSON_IsString(text) && cJSON_IsArray(want));
        size_t nw = (size_t)cJSON_GetArraySize(want);
        int *w = calloc(nw + 1, sizeof *w);
        assert_non_null(w);
        size_t k = 0;
        for (const cJSON *x = want->child; x; x = x->next)
            w[k++] = x->valueint;
        int *ids = NULL;
        size_t n = 0;
        coh_err err;
        coh_err_clear(&err);
        int rc = hft_encode(t, text->valuestring, strlen(text->valuestring), &ids, &n, &err);
        int same = rc == COH_OK && n == nw && (n == 0 || memcmp(ids, w, n * sizeof *w) == 0);
        if (!same && nbad++ == 0) {
            print_error("%s line %d: text \"%s\"\n", path, lineno, text->valuestring);
            if (rc != COH_OK)
                print_error("  encode failed: %s\n", err.msg);
            print_ids("expected", w, nw);
            print_ids("got     ", ids, n);
        }
        free(ids);
        if (cJSON_IsString(dec)) {
            char *out = NULL;
            size_t len = 0;
            rc = hft_decode(t, w, nw, &out, &len, &err);
            if ((rc != COH_OK || strcmp(out, dec->valuestring) != 0) && nbad++ == 0) {
                print_error("%s line %d: decoding ids of \"%s\"\n", path, lineno,
                            text->valuestring);
                print_ids("ids", w, nw);
                print_error("  expected \"%s\"\n  got      \"%s\"\n", dec->valuestring,
                            rc == COH_OK ? out : err.msg);
            }
            free(out);
            ndecode++;
        }
        free(w);
        cJSON_Delete(c);
        ncases++;
    }
    free(line);
    fclose(f);
    hft_destroy(t);
    print_message("%s: %d cases encoded, %d decoded, %d mismatches\n", dir, ncases, ndecode, nbad);
    assert_true(ncases > 0);
    assert_int_equal(nbad, 0);
}

/* ---- one handle, two threads ------------------------------------------------------------ */

/* A long text for a folder: its case strings that encode (some cases are about refusals),
 * then generated prose, code, CJK and long runs, repeated; cut into chunks at line ends. */
typedef struct mt_text {
    char *p;
    size_t n, cap;
    size_t *off, *len; /* chunks */
    size_t nc;
    int *ref;          /* single-thread ids of every chunk, one after the other */
    size_t *ref_at;    /* chunk i's ids start at ref[ref_at[i]], end at ref_at[i + 1] */
    int *whole;        /* single-thread ids of the whole text in one call */
    size_t nwhole;
} mt_text;

static void mt_add(mt_text *t, const char *s, size_t n)
{
    if (t->n + n + 1 > t->cap) {
        while (t->n + n + 1 > t->cap)
            t->cap = t->cap ? t->cap * 2 : 1 << 16;
        t->p = realloc(t->p, t->cap);
        assert_non_null(t->p);
    }
    memcpy(t->p + t->n, s, n);
    t->n += n;
    t->p[t->n] = '\0';
}

static void mt_build(mt_text *t, const hft *h, const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/cases.jsonl", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        cJSON *c = cJSON_Parse(line);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(c, "text");
        if (cJSON_IsString(text)) {
            int *ids = NULL;
            size_t n = 0;
            coh_err err;
            if (hft_encode(h, text->valuestring, strlen(text->valuestring), &ids, &n, &err) ==
                COH_OK) {
                mt_add(t, text->valuestring, strlen(text->valuestring));
                mt_add(t, "\n", 1);
            }
            free(ids);
        }
        cJSON_Delete(c);
    }
    free(line);
    fclose(f);
    static const char *const parts[] = {
        "The policy gradient of the reward, however, isn't what we'll use: it's 12345 steps. ",
        "for (int i = 0; i < n; i++) {\n    sum += x[i] * w[i];\n}\n",
        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe6\x96\x87\xe7\xab\xa0"
        "\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97\xe7\xac\xa6\xe3\x80\x82",
        "    \t  \n\n   ", "na\xc3\xafve caf\xc3\xa9 \xe2\x96\x81\xe2\x96\x81x 3.14159 ",
        "\xf0\x9f\x98\x80\xf0\x9f\x8e\x89 emoji ", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ",
        "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 \xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5"
        "\xd1\x82 ",
    };
    unsigned r = 12345;
    while (t->n < 96 * 1024) {
        r = r * 1103515245u + 12345u;
        const char *s = parts[(r >> 16) % (sizeof parts / sizeof parts[0])];
        mt_add(t, s, strlen(s));
        if ((r >> 8) % 7 == 0)
            mt_add(t, "\n", 1);
    }
    /* chunks of about 700 bytes, cut after a line end (every piece stays valid UTF-8) */
    t->off = calloc(t->n / 64 + 2, sizeof *t->off);
    t->len = calloc(t->n / 64 + 2, sizeof *t->len);
    assert_true(t->off && t->len);
    size_t at = 0;
    while (at < t->n) {
        size_t end = at + 700 < t->n ? at + 700 : t->n;
        const char *nl = end < t->n ? memchr(t->p + end, '\n', t->n - end) : NULL;
        size_t stop = nl ? (size_t)(nl - t->p) + 1 : t->n;
        t->off[t->nc] = at;
        t->len[t->nc] = stop - at;
        t->nc++;
        at = stop;
    }
}

typedef struct mt_arg {
    const hft *h;
    const mt_text *t;
    pthread_barrier_t *go;
    int backwards;
    int bad, failed; /* chunks with other ids; calls that failed */
} mt_arg;

static void *mt_run(void *p)
{
    mt_arg *a = p;
    const mt_text *t = a->t;
    pthread_barrier_wait(a->go);
    for (int round = 0; round < 2; round++) {
        for (size_t j = 0; j < t->nc; j++) {
            size_t i = a->backwards ? t->nc - 1 - j : j;
            int *ids = NULL;
            size_t n = 0;
            coh_err err;
            if (hft_encode(a->h, t->p + t->off[i], t->len[i], &ids, &n, &err) != COH_OK) {
                a->failed++;
                continue;
            }
            size_t want = t->ref_at[i + 1] - t->ref_at[i];
            if (n != want || (n && memcmp(ids, t->ref + t->ref_at[i], n * sizeof *ids)))
                a->bad++;
            free(ids);
        }
        int *ids = NULL;
        size_t n = 0;
        coh_err err;
        if (hft_encode(a->h, t->p, t->n, &ids, &n, &err) != COH_OK)
            a->failed++;
        else if (n != t->nwhole || memcmp(ids, t->whole, n * sizeof *ids))
            a->bad++;
        free(ids);
    }
    return NULL;
}

/* Two threads encode the same long text with one handle at once (its word cache filling
 * and being read by both) and must get exactly what one thread gets with a handle of its
 * own; run under ASan (and TSan) builds too. */
static void test_threads_folder(void **state)
{
    const char *dir = *state;
    hft *single = load_hft(dir);
    mt_text t = {0};
    mt_build(&t, single, dir);
    t.ref_at = calloc(t.nc + 1, sizeof *t.ref_at);
    assert_non_null(t.ref_at);
    size_t cap = 0;
    for (size_t i = 0; i < t.nc; i++) {
        int *ids = NULL;
        size_t n = 0;
        coh_err err;
        assert_int_equal(hft_encode(single, t.p + t.off[i], t.len[i], &ids, &n, &err), COH_OK);
        if (t.ref_at[i] + n > cap) {
            cap = (t.ref_at[i] + n) * 2;
            t.ref = realloc(t.ref, cap * sizeof *t.ref);
            assert_non_null(t.ref);
        }
        if (n)
            memcpy(t.ref + t.ref_at[i], ids, n * sizeof *ids);
        t.ref_at[i + 1] = t.ref_at[i] + n;
        free(ids);
    }
    coh_err err;
    assert_int_equal(hft_encode(single, t.p, t.n, &t.whole, &t.nwhole, &err), COH_OK);
    hft_destroy(single);

    hft *shared = load_hft(dir); /* a fresh handle: its cache starts empty */
    pthread_barrier_t go;
    assert_int_equal(pthread_barrier_init(&go, NULL, 2), 0);
    mt_arg args[2] = {{shared, &t, &go, 0, 0, 0}, {shared, &t, &go, 1, 0, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, mt_run, &args[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    print_message("%s: %zu bytes in %zu chunks, %zu ids; thread mismatches %d + %d\n", dir, t.n,
                  t.nc, t.ref_at[t.nc], args[0].bad, args[1].bad);
    assert_int_equal(args[0].failed + args[1].failed, 0);
    assert_int_equal(args[0].bad, 0);
    assert_int_equal(args[1].bad, 0);
    hft_destroy(shared);
    free(t.p);
    free(t.off);
    free(t.len);
    free(t.ref);
    free(t.ref_at);
    free(t.whole);
}

/* tok_load_dir on the same folder: the Hugging Face kind, BOS/EOS and add_bos_token as
 * tokenizer_config.json says, encode through the tokenizer interface, verbatim save. */
static void test_folder_interface(void **state)
{
    const char *dir = *state;
    tokenizer *tok = NULL;
    coh_err err;
    coh_err_clear(&err);
    int rc = tok_load_dir(dir, &tok, &err);
    if (rc != COH_OK)
        print_error("tok_load_dir %s: %s\n", dir, err.msg);
    assert_int_equal(rc, COH_OK);
    assert_string_equal(tok_kind(tok), "huggingface");

    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    size_t len = 0;
    char *text = read_file(path, &len);
    assert_non_null(text);
    cJSON *cfg = cJSON_Parse(text);
    free(text);
    assert_non_null(cfg);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(cfg, "bos_token_id");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(cfg, "eos_token_id");
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    assert_int_equal(tok_bos_id(tok), cJSON_IsNumber(b) ? b->valueint : -1);
    assert_int_equal(tok_eos_id(tok), cJSON_IsNumber(e) ? e->valueint : -1);
    assert_int_equal(tok_add_bos(tok), cJSON_IsTrue(ab));
    cJSON_Delete(cfg);

    /* the file comes back byte for byte */
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    char *orig = read_file(path, &len);
    assert_non_null(orig);
    char *json = NULL;
    assert_int_equal(tok_to_json(tok, &json, &err), COH_OK);
    assert_int_equal(strlen(json), len);
    assert_memory_equal(json, orig, len);
    free(json);
    free(orig);

    /* encode through the interface: the room check */
    int ids[64], n = -1;
    assert_int_equal(tok_encode(tok, "Hello world", ids, 64, &n, &err), COH_OK);
    assert_true(n >= 2 && n <= 4);
    assert_int_equal(tok_encode(tok, "Hello world", ids, 1, &n, &err), COH_ERANGE);
    char out[64];
    assert_int_equal(tok_encode(tok, "Hello world", ids, 64, &n, &err), COH_OK);
    size_t w = tok_decode(tok, ids, n, out, sizeof out);
    assert_string_equal(out, "Hello world");
    assert_int_equal(w, 11);
    /* truncation stops before a partial character */
    assert_int_equal(tok_encode(tok, "h\xc3\xa9llo", ids, 64, &n, &err), COH_OK);
    w = tok_decode(tok, ids, n, out, 3);
    assert_int_equal(w, 1);
    assert_string_equal(out, "h");
    tok_destroy(tok);
}

/* ---- decoding details ------------------------------------------------------------------- */

static void test_bytes_across_ids(void **state)
{
    (void)state;
    /* byte-level: the two bytes of é are two tokens; alone, each is invalid UTF-8 */
    hft *t = load_hft(TESTDATA "/gpt2");
    int e1 = hft_token_id(t, "\xc3\x83"), e2 = hft_token_id(t, "\xc2\xa9"); /* Ã, © */
    assert_true(e1 >= 0 && e2 >= 0);
    int ids[3] = {e1, e2, e1};
    expect_text(t, ids, 2, "\xc3\xa9");
    expect_text(t, ids, 1, "\xef\xbf\xbd");
    expect_text(t, ids, 3, "\xc3\xa9\xef\xbf\xbd");
    /* out-of-range ids are refused with their position */
    int bad[2] = {e1, 999999};
    char *out = NULL;
    size_t len;
    coh_err err;
    assert_int_equal(hft_decode(t, bad, 2, &out, &len, &err), COH_ERANGE);
    assert_null(out);
    assert_non_null(strstr(err.msg, "position 1"));
    hft_destroy(t);

    /* byte fallback: <0xE2><0x82><0xAC> is the euro sign; an incomplete run is one U+FFFD
     * per byte */
    t = load_hft(TESTDATA "/llama2");
    int b0 = hft_token_id(t, "<0xE2>"), b1 = hft_token_id(t, "<0x82>"),
        b2 = hft_token_id(t, "<0xAC>"), hi = hft_token_id(t, "\xe2\x96\x81hi");
    assert_true(b0 >= 0 && b1 >= 0 && b2 >= 0 && hi >= 0);
    int euro[4] = {hi, b0, b1, b2};
    expect_text(t, euro, 4, "hi\xe2\x82\xac");
    expect_text(t, euro, 3, "hi\xef\xbf\xbd\xef\xbf\xbd");
    /* the leading space of the first piece is stripped once */
    int two[2] = {hi, hi};
    expect_text(t, two, 2, "hi hi");
    hft_destroy(t);
}

/* ---- small hand-made tokenizers ---------------------------------------------------------- */

#define BPE_HEAD "{\"model\": {\"type\": \"BPE\", "

static void test_merge_formats_and_ranks(void **state)
{
    (void)state;
    /* merges as strings and as pairs give the same result; lower rank first, leftmost on
     * ties */
    const char *vocab = "\"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"bc\": 4, "
                        "\"abc\": 5, \"aa\": 6}";
    char json[512];
    snprintf(json, sizeof json, BPE_HEAD "%s, \"merges\": [\"b c\", \"a b\", \"a bc\", \"a a\"]}}",
             vocab);
    hft *t = create_ok(json);
    expect_ids(t, "abc", (int[]){5}, 1);       /* b c first, then a bc */
    expect_ids(t, "abab", (int[]){3, 3}, 2);
    expect_ids(t, "aaa", (int[]){6, 0}, 2);    /* leftmost pair first */
    expect_ids(t, "", NULL, 0);
    hft_destroy(t);
    snprintf(json, sizeof json,
             BPE_HEAD "%s, \"merges\": [[\"b\", \"c\"], [\"a\", \"b\"], [\"a\", \"bc\"], "
                      "[\"a\", \"a\"]]}}",
             vocab);
    t = create_ok(json);
    expect_ids(t, "abc", (int[]){5}, 1);
    expect_ids(t, "aaa", (int[]){6, 0}, 2);
    hft_destroy(t);
    /* a long word takes the heap path: the same rule */
    t = create_ok(json);
    char longw[201];
    for (int i = 0; i < 200; i++)
        longw[i] = "abc"[i % 3];
    longw[200] = '\0';
    int want[67];
    for (int i = 0; i < 66; i++)
        want[i] = 5;
    /* 200 = 66 * 3 + 2: the last two are "ab" */
    want[66] = 3;
    expect_ids(t, longw, want, 67);
    hft_destroy(t);
}

static void test_unknown_chars(void **state)
{
    (void)state;
    const char *base = BPE_HEAD "\"unk_token\": \"<unk>\", \"fuse_unk\": %s, "
                                "\"vocab\": {\"<unk>\": 0, \"a\": 1}, \"merges\": []}}";
    char json[512];
    snprintf(json, sizeof json, base, "true");
    hft *t = create_ok(json);
    expect_ids(t, "axya", (int[]){1, 0, 1}, 3);
    hft_destroy(t);
    snprintf(json, sizeof json, base, "false");
    t = create_ok(json);
    expect_ids(t, "axya", (int[]){1, 0, 0, 1}, 4);
    hft_destroy(t);
    /* no unk token and no byte fallback: unknown characters are dropped */
    t = create_ok(BPE_HEAD "\"vocab\": {\"a\": 0}, \"merges\": []}}");
    expect_ids(t, "a\xc3\xa9" "a", (int[]){0, 0}, 2);
    hft_destroy(t);
    /* ignore_merges: a word in the vocabulary is one token even without a merge path */
    t = create_ok(BPE_HEAD "\"ignore_merges\": true, \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2},"
                           " \"merges\": []}}");
    expect_ids(t, "ab", (int[]){2}, 1);
    hft_destroy(t);
}

/* A SentencePiece-style text is one long word: the encoder merges it segment by segment,
 * cut where no merge can join the two sides (before a U+2581 no merge puts second), and
 * short segments go through the word cache. Cuts must not change ids: where a merge does
 * join across a U+2581 there is no cut, and unknown / byte-fallback characters keep the
 * library's order. */
#define SP_HEAD "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [" \
    "{\"type\": \"Prepend\", \"prepend\": \"\\u2581\"}, {\"type\": \"Replace\", " \
    "\"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]}, " \
    "\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true, " \
    "\"byte_fallback\": true, \"vocab\": {\"<unk>\": 0, \"<0x0A>\": 1, \"\\u2581\": 2, " \
    "\"a\": 3, \"b\": 4, \"\\u2581a\": 5, \"ab\": 6, \"\\u2581ab\": 7, \"c\": 8, " \
    "\"bc\": 9, \"b\\u2581\": 10, \"<0x7A>\": 11}, "

static void test_long_word_segments(void **state)
{
    (void)state;
    hft *t = create_ok(SP_HEAD "\"merges\": [\"\\u2581 a\", \"a b\", \"\\u2581a b\", "
                               "\"b c\"]}}");
    expect_ids(t, "ab", (int[]){7}, 1); /* short: whole word, cached */
    expect_ids(t, "ab ab ab ab ab ab ab ab ab ab", (int[]){7, 7, 7, 7, 7, 7, 7, 7, 7, 7}, 10);
    expect_ids(t, "ab ab ab ab ab ab ab ab ab ab", (int[]){7, 7, 7, 7, 7, 7, 7, 7, 7, 7}, 10);
    /* 'z' falls back to its byte; 'é' has no byte tokens: one unk for a run (fused) */
    expect_ids(t, "ab ab \xc3\xa9\xc3\xa9 ab ab abc ab ab",
               (int[]){7, 7, 2, 0, 7, 7, 7, 8, 7, 7}, 10);
    /* a pending unk lands after the bytes of a following byte-fallback character, as in
     * the library */
    expect_ids(t, "ab ab ab \xc3\xa9z ab ab ab", (int[]){7, 7, 7, 2, 11, 0, 7, 7, 7}, 9);
    expect_ids(t, "ab ab ab ab ab ab ab\nab ab", (int[]){7, 7, 7, 7, 7, 7, 7, 1, 6, 7}, 10);
    hft_destroy(t);
    /* "b \u2581" merges first: no cut before a U+2581 that follows a 'b' */
    t = create_ok(SP_HEAD "\"merges\": [\"b \\u2581\", \"\\u2581 a\", \"a b\", "
                          "\"\\u2581a b\"]}}");
    expect_ids(t, "ab ab ab ab ab ab", (int[]){5, 10, 3, 10, 3, 10, 3, 10, 3, 10, 6}, 11);
    expect_ids(t, "ab", (int[]){7}, 1);
    hft_destroy(t);
}

static void test_split_behaviors(void **state)
{
    (void)state;
    const char *fmt = "{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \"-\"}, "
                      "\"behavior\": \"%s\", \"invert\": false}, " "\"model\": {\"type\": "
                      "\"BPE\", \"vocab\": {\"a\": 0, \"-\": 1, \"a-\": 2, \"-a\": 3}, "
                      "\"merges\": [\"a -\", \"- a\"]}}";
    char json[512];
    struct {
        const char *beh;
        int ids[4];
        size_t n;
    } cases[] = {
        {"Isolated", {0, 1, 0}, 3},
        {"Removed", {0, 0}, 2},
        {"MergedWithPrevious", {2, 0}, 2},
        {"MergedWithNext", {0, 3}, 2},
        {"Contiguous", {0, 1, 0}, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(json, sizeof json, fmt, cases[i].beh);
        hft *t = create_ok(json);
        expect_ids(t, "a-a", cases[i].ids, cases[i].n);
        hft_destroy(t);
    }
    /* Digits, one digit per word */
    hft *t = create_ok("{\"pre_tokenizer\": {\"type\": \"Digits\", \"individual_digits\": true},"
                       " \"model\": {\"type\": \"BPE\", \"vocab\": {\"1\": 0, \"2\": 1, "
                       "\"12\": 2}, \"merges\": [\"1 2\"]}}");
    expect_ids(t, "1212", (int[]){0, 1, 0, 1}, 4);
    hft_destroy(t);
}

static void test_added_token_options(void **state)
{
    (void)state;
    /* rstrip swallows the spaces after <x>, lstrip those before <y>; a normalized token is
     * found after the normalizer ran */
    const char *json =
        "{\"added_tokens\": ["
        "{\"id\": 3, \"content\": \"<x>\", \"special\": true, \"normalized\": false, "
        "\"lstrip\": false, \"rstrip\": true, \"single_word\": false},"
        "{\"id\": 4, \"content\": \"<y>\", \"special\": true, \"normalized\": false, "
        "\"lstrip\": true, \"rstrip\": false, \"single_word\": false},"
        "{\"id\": 5, \"content\": \"B\", \"special\": false, \"normalized\": true, "
        "\"lstrip\": false, \"rstrip\": false, \"single_word\": true}],"
        "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Replace\", "
        "\"pattern\": {\"String\": \"b\"}, \"content\": \"B\"}]},"
        "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \" \": 1, \"B\": 2, \"<x>\": 3, "
        "\"<y>\": 4}, \"merges\": []}}";
    hft *t = create_ok(json);
    expect_ids(t, "a<x>  a  <y>a", (int[]){0, 3, 0, 4, 0}, 5);
    /* single_word: B alone is the added token, inside a word it is a plain character */
    expect_ids(t, "a b a", (int[]){0, 1, 5, 1, 0}, 5);
    expect_ids(t, "aba", (int[]){0, 2, 0}, 3);
    hft_destroy(t);
}

/* ---- bad input -------------------------------------------------------------------------- */

static void test_bad_files(void **state)
{
    (void)state;
    /* truncated: the real gpt2 file cut in the middle */
    size_t len = 0;
    char *text = read_file(TESTDATA "/gpt2/tokenizer.json", &len);
    assert_non_null(text);
    hft *t = (hft *)(uintptr_t)1;
    coh_err err;
    assert_int_equal(hft_create(text, len / 2, &t, &err), COH_EFORMAT);
    assert_null(t);
    assert_non_null(strstr(err.msg, "truncated"));
    /* the same through tok_from_text (kind recognised, error passed on) */
    tokenizer *tok = (tokenizer *)(uintptr_t)1;
    assert_int_equal(tok_from_text(text, len / 2, &tok, &err), COH_EFORMAT);
    assert_null(tok);
    assert_non_null(strstr(err.msg, "truncated"));
    free(text);

    expect_create_fails("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
                        "\"merges\": \"x\"}}", COH_EFORMAT, "\"merges\" array");
    expect_create_fails("{\"model\": {\"type\": \"BPE\", \"vocab\": [], \"merges\": []}}",
                        COH_EFORMAT, "\"vocab\"");
    expect_create_fails("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}, "
                        "\"merges\": []}}", COH_EFORMAT, "\"a\"");
    expect_create_fails("{\"version\": \"1.0\"}", COH_EFORMAT, "\"model\"");
    expect_create_fails("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", COH_EUNSUPPORTED,
                        "model type \"Unigram\" is not supported");
    expect_create_fails("{\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"x\"},"
                        " \"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}",
                        COH_EUNSUPPORTED, "pre_tokenizer type \"Metaspace\" is not supported");
    expect_create_fails("{\"normalizer\": {\"type\": \"Lowercase\"}, \"model\": {\"type\": "
                        "\"BPE\", \"vocab\": {}, \"merges\": []}}",
                        COH_EUNSUPPORTED, "normalizer type \"Lowercase\" is not supported");
    expect_create_fails("{\"decoder\": {\"type\": \"WordPiece\"}, \"model\": {\"type\": "
                        "\"BPE\", \"vocab\": {}, \"merges\": []}}",
                        COH_EUNSUPPORTED, "decoder type \"WordPiece\" is not supported");
    expect_create_fails("{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": "
                        "\"a\"}, \"behavior\": \"Sideways\"}, \"model\": {\"type\": \"BPE\", "
                        "\"vocab\": {}, \"merges\": []}}",
                        COH_EUNSUPPORTED, "behavior \"Sideways\"");
    expect_create_fails("{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"colour\": 1}, "
                        "\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}",
                        COH_EUNSUPPORTED, "option \"colour\"");
    expect_create_fails("{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": "
                        "\"(a\"}, \"behavior\": \"Isolated\"}, \"model\": {\"type\": \"BPE\", "
                        "\"vocab\": {}, \"merges\": []}}",
                        COH_EFORMAT, "does not compile");
    expect_create_fails("{\"model\": {\"type\": \"BPE\", \"dropout\": 0.1, \"vocab\": {}, "
                        "\"merges\": []}}", COH_EUNSUPPORTED, "dropout");
    expect_create_fails("{\"padding\": {\"strategy\": \"BatchLongest\"}, \"model\": {\"type\": "
                        "\"BPE\", \"vocab\": {}, \"merges\": []}}", COH_EUNSUPPORTED, "padding");
    /* merges that refer to tokens the vocabulary lacks */
    expect_create_fails("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, "
                        "\"ab\": 2}, \"merges\": [\"a b\", \"a c\"]}}",
                        COH_EFORMAT, "merges[1] refers to token \"c\"");
    expect_create_fails("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                        "\"merges\": [[\"a\", \"b\"]]}}",
                        COH_EFORMAT, "merges[0] merges into \"ab\"");
    expect_create_fails("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
                        "\"merges\": [\"a b c\"]}}", COH_EFORMAT, "merges[0]");
    expect_create_fails("{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", "
                        "\"vocab\": {\"a\": 0}, \"merges\": []}}", COH_EFORMAT, "unk_token");
}

static void test_bad_text(void **state)
{
    (void)state;
    hft *t = load_hft(TESTDATA "/gpt2");
    static const struct {
        const char *text;
        const char *offset;
    } bad[] = {
        {"ab\xff" "cd", "offset 2"},
        {"ok \xc3", "offset 3"},              /* truncated sequence */
        {"\xe0\x80\x80", "offset 0"},         /* overlong */
        {"x\xed\xa0\x80", "offset 1"},        /* surrogate */
        {"xy\xf4\x90\x80\x80", "offset 2"},   /* beyond U+10FFFF */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int *ids = (int *)(uintptr_t)1;
        size_t n = 7;
        coh_err err;
        coh_err_clear(&err);
        assert_int_equal(hft_encode(t, bad[i].text, strlen(bad[i].text), &ids, &n, &err),
                         COH_EINVAL);
        assert_null(ids);
        assert_int_equal(n, 0);
        if (!strstr(err.msg, bad[i].offset))
            print_error("case %zu: '%s' lacks '%s'\n", i, err.msg, bad[i].offset);
        assert_non_null(strstr(err.msg, bad[i].offset));
    }
    hft_destroy(t);
}

/* The character kind still loads, and knows its BOS/EOS. */
static void test_char_kind_unchanged(void **state)
{
    (void)state;
    tokenizer *t = NULL;
    coh_err err;
    assert_int_equal(tok_create_default(&t, &err), COH_OK);
    assert_string_equal(tok_kind(t), "cohort-char");
    assert_int_equal(tok_bos_id(t), TOK_BOS);
    assert_int_equal(tok_eos_id(t), TOK_EOS);
    assert_int_equal(tok_add_bos(t), 1);
    assert_int_equal(tok_add_eos(t), 0);
    char *json = NULL;
    assert_int_equal(tok_to_json(t, &json, &err), COH_OK);
    tokenizer *u = NULL;
    assert_int_equal(tok_from_text(json, strlen(json), &u, &err), COH_OK);
    assert_string_equal(tok_kind(u), "cohort-char");
    assert_int_equal(tok_vocab_size(u), 98);
    free(json);
    tok_destroy(u);
    tok_destroy(t);
}

/* ---- main: one golden test per folder found ------------------------------------------- */

int main(void)
{
    DIR *d = opendir(TESTDATA);
    if (!d) {
        fprintf(stderr, "test_hftok: FAIL: the tokenizer test data folder %s is missing "
                        "(it ships in ../shared/testdata next to the source tree)\n", TESTDATA);
        return 1;
    }
    char *names[256];
    int nd = 0;
    struct dirent *de;
    while ((de = readdir(d)) && nd < 256) {
        if (de->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s/tokenizer.json", TESTDATA, de->d_name);
        struct stat st;
        if (stat(path, &st) != 0)
            continue;
        names[nd] = malloc(strlen(TESTDATA) + strlen(de->d_name) + 2);
        sprintf(names[nd], "%s/%s", TESTDATA, de->d_name);
        nd++;
    }
    closedir(d);
    if (nd == 0) {
        fprintf(stderr, "test_hftok: FAIL: no tokenizer folders in %s\n", TESTDATA);
        return 1;
    }
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_bytes_across_ids),
        cmocka_unit_test(test_merge_formats_and_ranks),
        cmocka_unit_test(test_unknown_chars),
        cmocka_unit_test(test_long_word_segments),
        cmocka_unit_test(test_split_behaviors),
        cmocka_unit_test(test_added_token_options),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_bad_text),
        cmocka_unit_test(test_char_kind_unchanged),
    };
    size_t nf = sizeof fixed / sizeof fixed[0];
    struct CMUnitTest *tests = calloc(nf + 3 * (size_t)nd, sizeof *tests);
    char (*tnames)[300] = calloc(3 * (size_t)nd, sizeof *tnames);
    if (!tests || !tnames)
        return 1;
    size_t k = 0;
    for (int i = 0; i < nd; i++) {
        const char *base = strrchr(names[i], '/') + 1;
        snprintf(tnames[3 * i], sizeof tnames[0], "golden cases: %s", base);
        tests[k] = (struct CMUnitTest){tnames[3 * i], test_golden_folder, NULL, NULL, names[i]};
        k++;
        snprintf(tnames[3 * i + 1], sizeof tnames[0], "tok_load_dir: %s", base);
        tests[k] = (struct CMUnitTest){tnames[3 * i + 1], test_folder_interface, NULL, NULL,
                                       names[i]};
        k++;
        snprintf(tnames[3 * i + 2], sizeof tnames[0], "two threads, one handle: %s", base);
        tests[k] = (struct CMUnitTest){tnames[3 * i + 2], test_threads_folder, NULL, NULL,
                                       names[i]};
        k++;
    }
    for (size_t i = 0; i < nf; i++)
        tests[k++] = fixed[i];
    int rc = _cmocka_run_group_tests("hftok", tests, k, NULL, NULL);
    for (int i = 0; i < nd; i++)
        free(names[i]);
    free(tests);
    free(tnames);
    return rc;
}
