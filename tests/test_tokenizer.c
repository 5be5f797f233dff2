/* test_tokenizer.c - the built-in character tokenizer: default vocabulary, encode/decode,
 * tokenizer.json save/load, and refusal of malformed files. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "tokenizer.h"

typedef struct fixture {
    char dir[64];
    char path[128];
} fixture;

static int setup_dir(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    strcpy(fx->dir, "/tmp/cohort-tok-XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof fx->path, "%s/%s", fx->dir, TOK_FILE);
    *state = fx;
    return 0;
}

static int teardown_dir(void **state)
{
    fixture *fx = *state;
    unlink(fx->path);
    rmdir(fx->dir);
    free(fx);
    return 0;
}

static void write_text(const char *path, const char *text)
{
    coh_err err;
    assert_int_equal(fs_write_atomic(path, text, strlen(text), &err), COH_OK);
}

/* tok_load must fail with `code` and a message containing `word`. */
static void expect_load_fails(const char *path, int code, const char *word)
{
    tokenizer *t = (tokenizer *)(uintptr_t)1;
    coh_err err;
    coh_err_clear(&err);
    int rc = tok_load(path, &t, &err);
    if (rc != code || !strstr(err.msg, word))
        print_error("tok_load rc=%d msg='%s', expected %d with '%s'\n", rc, err.msg, code,
                    word);
    assert_int_equal(rc, code);
    assert_null(t);
    assert_non_null(strstr(err.msg, word));
}

static void test_default_vocab(void **state)
{
    (void)state;
    tokenizer *t = NULL;
    coh_err err;
    assert_int_equal(tok_create_default(&t, &err), COH_OK);
    assert_int_equal(tok_vocab_size(t), 98);
    /* ids 3..97 are ASCII 32..126 in order */
    char text[96];
    for (int c = 32; c <= 126; c++)
        text[c - 32] = (char)c;
    text[95] = '\0';
    int ids[95];
    int n = -1;
    assert_int_equal(tok_encode(t, text, ids, 95, &n, &err), COH_OK);
    assert_int_equal(n, 95);
    for (int i = 0; i < 95; i++)
        assert_int_equal(ids[i], 3 + i);
    tok_destroy(t);
    tok_destroy(NULL);
}

static void test_encode_decode_roundtrip(void **state)
{
    (void)state;
    tokenizer *t = NULL;
    coh_err err;
    assert_int_equal(tok_create_default(&t, &err), COH_OK);
    const char *text = "What is 12 + 30? Answer: 42. {\"json\": [1, 2]} ~`|\\";
    int ids[128];
    int n = 0;
    assert_int_equal(tok_encode(t, text, ids, 128, &n, &err), COH_OK);
    assert_int_equal(n, (int)strlen(text));
    char out[256];
    assert_int_equal(tok_decode(t, ids, n, out, sizeof out), strlen(text));
    assert_string_equal(out, text);

    /* empty text */
    int n0 = -1;
    assert_int_equal(tok_encode(t, "", NULL, 0, &n0, &err), COH_OK);
    assert_int_equal(n0, 0);

    /* specials and out-of-range ids are skipped */
    int mixed[] = {TOK_BOS, 3 + ('h' - 32), 3 + ('i' - 32), TOK_PAD, -5, 98, 1000, TOK_EOS,
                   3 + ('!' - 32)};
    assert_int_equal(tok_decode(t, mixed, 9, out, sizeof out), 3);
    assert_string_equal(out, "hi!");

    /* truncation to cap - 1, always terminated */
    assert_int_equal(tok_decode(t, ids, n, out, 5), 4);
    assert_string_equal(out, "What");
    assert_int_equal(tok_decode(t, ids, n, out, 1), 0);
    assert_string_equal(out, "");
    assert_int_equal(tok_decode(t, ids, n, NULL, 0), 0);

    /* too many ids for the buffer */
    assert_int_equal(tok_encode(t, "abcdef", ids, 3, &n, &err), COH_ERANGE);
    assert_int_equal(err.code, COH_ERANGE);
    assert_non_null(strstr(err.msg, "3"));
    tok_destroy(t);
}

static void test_unknown_char_rejected(void **state)
{
    (void)state;
    tokenizer *t = NULL;
    coh_err err;
    assert_int_equal(tok_create_default(&t, &err), COH_OK);
    int ids[64];
    int n = 7;
    assert_int_equal(tok_encode(t, "ab\ncd", ids, 64, &n, &err), COH_EINVAL);
    assert_int_equal(n, 0);
    assert_non_null(strstr(err.msg, "0x0a"));
    assert_non_null(strstr(err.msg, "position 2"));
    assert_int_equal(tok_encode(t, "caf\xc3\xa9", ids, 64, &n, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "0xc3"));
    assert_non_null(strstr(err.msg, "position 3"));
    tok_destroy(t);
}

static void test_save_load_roundtrip(void **state)
{
    fixture *fx = *state;
    tokenizer *t = NULL, *u = NULL;
    coh_err err;
    assert_int_equal(tok_create_default(&t, &err), COH_OK);
    assert_int_equal(tok_save(t, fx->path, &err), COH_OK);
    assert_int_equal(tok_load(fx->path, &u, &err), COH_OK);
    assert_int_equal(tok_vocab_size(u), tok_vocab_size(t));
    const char *text = "The \"quick\" brown fox \\ jumps: 0123456789!";
    int a[128], b[128], na = 0, nb = 0;
    assert_int_equal(tok_encode(t, text, a, 128, &na, &err), COH_OK);
    assert_int_equal(tok_encode(u, text, b, 128, &nb, &err), COH_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, (size_t)na * sizeof a[0]);
    /* every id decodes identically */
    for (int id = 0; id < tok_vocab_size(t); id++) {
        char x[4], y[4];
        tok_decode(t, &id, 1, x, sizeof x);
        tok_decode(u, &id, 1, y, sizeof y);
        assert_string_equal(x, y);
    }
    tok_destroy(u);

    /* the file has the documented shape */
    char *text_json;
    size_t len;
    assert_int_equal(fs_read_all(fx->path, &text_json, &len, &err), COH_OK);
    assert_non_null(strstr(text_json, "\"cohort-char\""));
    assert_non_null(strstr(text_json, "\"<bos>\""));
    assert_non_null(strstr(text_json, "\"chars\""));
    free(text_json);

    /* a custom vocabulary with escapes and control characters survives save/load */
    write_text(fx->path, "{\"type\":\"cohort-char\",\"version\":1,"
                         "\"specials\":[\"<pad>\",\"<bos>\",\"<eos>\"],"
                         "\"chars\":\"ab\\n\\t\\\"\\\\0\"}");
    assert_int_equal(tok_load(fx->path, &u, &err), COH_OK);
    assert_int_equal(tok_vocab_size(u), 3 + 7);
    int ids[8];
    int n = 0;
    assert_int_equal(tok_encode(u, "b\n\"\\0\ta", ids, 8, &n, &err), COH_OK);
    int want[] = {4, 5, 7, 8, 9, 6, 3};
    assert_int_equal(n, 7);
    assert_memory_equal(ids, want, sizeof want);
    assert_int_equal(tok_encode(u, "c", ids, 8, &n, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "'c'"));
    assert_int_equal(tok_save(u, fx->path, &err), COH_OK);
    tok_destroy(u);
    assert_int_equal(tok_load(fx->path, &u, &err), COH_OK);
    assert_int_equal(tok_encode(u, "b\n\"\\0\ta", ids, 8, &n, &err), COH_OK);
    assert_memory_equal(ids, want, sizeof want);
    tok_destroy(u);
    tok_destroy(t);
}

static void test_malformed_refused(void **state)
{
    fixture *fx = *state;
    const char *p = fx->path;
    write_text(p, "{\"type\": \"cohort-char\", \"version\": 1,");
    expect_load_fails(p, COH_EFORMAT, "JSON");
    write_text(p, "[]");
    expect_load_fails(p, COH_EFORMAT, "object");
    write_text(p, "{\"type\":\"bpe\",\"version\":1,\"specials\":[\"<pad>\",\"<bos>\",\"<eos>\"],"
                  "\"chars\":\"ab\"}");
    expect_load_fails(p, COH_EUNSUPPORTED, "bpe");
    write_text(p, "{\"version\":1,\"specials\":[\"<pad>\",\"<bos>\",\"<eos>\"],\"chars\":\"ab\"}");
    expect_load_fails(p, COH_EFORMAT, "type");
    write_text(p, "{\"type\":\"cohort-char\",\"version\":2,"
                  "\"specials\":[\"<pad>\",\"<bos>\",\"<eos>\"],\"chars\":\"ab\"}");
    expect_load_fails(p, COH_EUNSUPPORTED, "version");
    write_text(p, "{\"type\":\"cohort-char\",\"version\":1,"
                  "\"specials\":[\"<pad>\",\"<eos>\",\"<bos>\"],\"chars\":\"ab\"}");
    expect_load_fails(p, COH_EFORMAT, "specials");
    write_text(p, "{\"type\":\"cohort-char\",\"version\":1,\"specials\":[\"<pad>\"],"
                  "\"chars\":\"ab\"}");
    expect_load_fails(p, COH_EFORMAT, "specials");
    write_text(p, "{\"type\":\"cohort-char\",\"version\":1,"
                  "\"specials\":[\"<pad>\",\"<bos>\",\"<eos>\"]}");
    expect_load_fails(p, COH_EFORMAT, "chars");
    write_text(p, "{\"type\":\"cohort-char\",\"version\":1,"
                  "\"specials\":[\"<pad>\",\"<bos>\",\"<eos>\"],\"chars\":\"\"}");
    expect_load_fails(p, COH_EFORMAT, "empty");
    write_text(p, "{\"type\":\"cohort-char\",\"version\":1,"
                  "\"specials\":[\"<pad>\",\"<bos>\",\"<eos>\"],\"chars\":\"abca\"}");
    expect_load_fails(p, COH_EFORMAT, "duplicate character 'a'");
    write_text(p, "{\"type\":\"cohort-char\",\"version\":1,"
                  "\"specials\":[\"<pad>\",\"<bos>\",\"<eos>\"],\"chars\":\"ab\\u00e9\"}");
    expect_load_fails(p, COH_EFORMAT, "non-ASCII");
    /* the message names the file */
    expect_load_fails(p, COH_EFORMAT, fx->dir);
    /* a missing file */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/none.json", fx->dir);
    expect_load_fails(missing, COH_ENOTFOUND, "none.json");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_vocab),
        cmocka_unit_test(test_encode_decode_roundtrip),
        cmocka_unit_test(test_unknown_char_rejected),
        cmocka_unit_test_setup_teardown(test_save_load_roundtrip, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_malformed_refused, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
