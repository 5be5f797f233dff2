/* test_prompts.c - the learner's RL prompt source (learner/prompts.c).
 *
 * A built-in task's generator: the cursor, psrc_next, items fixed by their index and equal
 * to the task's own training items, token ids (<bos> then the encoded prompt), the kind.
 * A JSON Lines prompt file: blank lines skipped, prompts cycled by index % count, the task,
 * answer and metadata (as JSON text) of each line, hand-computed token ids, kind "file"; and
 * every kind of bad file refused with a message naming the file and the line.
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

#include "prompts.h"

#define HAS(msg, s)                                                                          \
    do {                                                                                     \
        if (!strstr((msg), (s)))                                                             \
            fail_msg("message \"%s\" lacks \"%s\"", (msg), (s));                              \
    } while (0)

static tokenizer *tok;
static char dir[] = "/tmp/cohort_test_prompts_XXXXXX";
static char path[256];

static int setup(void **state)
{
    (void)state;
    coh_err err;
    if (tok_create_default(&tok, &err) != COH_OK)
        return -1;
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/prompts.jsonl", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tok_destroy(tok);
    unlink(path);
    rmdir(dir);
    return 0;
}

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* ---- the generator ---- */

static void test_generator(void **state)
{
    (void)state;
    coh_err err;
    task_config tc = task_config_default();
    tc.seed = 1234;
    psrc *p = NULL;
    if (psrc_create("addition", &tc, NULL, tok, 5, &p, &err) != COH_OK)
        fail_msg("%s", err.msg);
    assert_string_equal(psrc_kind(p), "addition");
    assert_int_equal(psrc_file_count(p), 0);

    /* the cursor */
    assert_int_equal((long)psrc_cursor(p), 5);
    assert_int_equal((long)psrc_next(p), 5);
    assert_int_equal((long)psrc_next(p), 6);
    assert_int_equal((long)psrc_cursor(p), 7);
    psrc_set_cursor(p, 100);
    assert_int_equal((long)psrc_cursor(p), 100);
    assert_int_equal((long)psrc_next(p), 100);
    assert_int_equal((long)psrc_cursor(p), 101);

    /* items: the task's own training items, fixed by the index */
    task *t = NULL;
    assert_int_equal(task_create("addition", &tc, &t, &err), COH_OK);
    uint64_t idx[] = {0, 1, 7, 100, 123456789ULL, (1ULL << 40) + 3};
    for (size_t k = 0; k < sizeof idx / sizeof *idx; k++) {
        task_item a, b, want;
        assert_string_equal(psrc_item(p, idx[k], &a), "addition");
        psrc_next(p); /* the cursor does not matter */
        assert_string_equal(psrc_item(p, idx[k], &b), "addition");
        assert_int_equal(task_train_item(t, idx[k], &want), 0);
        assert_string_equal(a.prompt, want.prompt);
        assert_string_equal(a.answer, want.answer);
        assert_string_equal(a.meta, want.meta);
        assert_memory_equal(&a, &b, sizeof a);
        /* "a+b=" with answer a + b */
        long x = -1, y = -1;
        char eq = 0;
        assert_int_equal(sscanf(a.prompt, "%ld+%ld%c", &x, &y, &eq), 3);
        assert_int_equal(eq, '=');
        char sum[32];
        snprintf(sum, sizeof sum, "%ld", x + y);
        assert_string_equal(a.answer, sum);

        /* tokens: <bos> then tok_encode of the prompt */
        int ids[64], enc[64], n = 0;
        int np = psrc_tokens(p, idx[k], ids, 64, &err);
        assert_int_equal(tok_encode(tok, a.prompt, enc, 64, &n, &err), COH_OK);
        assert_int_equal(np, n + 1);
        assert_int_equal(np, (int)strlen(a.prompt) + 1);
        assert_int_equal(ids[0], TOK_BOS);
        assert_memory_equal(ids + 1, enc, (size_t)n * sizeof(int));
        /* too little room */
        assert_int_equal(psrc_tokens(p, idx[k], ids, np - 1, &err), COH_ERANGE);
        assert_int_equal(psrc_tokens(p, idx[k], ids, np, &err), np);
    }
    int ids[4];
    assert_int_equal(psrc_tokens(p, 0, ids, 1, &err), COH_ERANGE);
    /* different indices give (at least some) different prompts */
    task_item i0, i1, i2;
    psrc_item(p, 0, &i0);
    psrc_item(p, 1, &i1);
    psrc_item(p, 2, &i2);
    assert_false(!strcmp(i0.prompt, i1.prompt) && !strcmp(i1.prompt, i2.prompt));
    task_destroy(t);
    psrc_destroy(p);
    psrc_destroy(NULL);

    /* an unknown task */
    p = (psrc *)1;
    assert_int_equal(psrc_create("nonsense", &tc, NULL, tok, 0, &p, &err), COH_ENOTFOUND);
    assert_null(p);
    /* an empty file name means no file */
    assert_int_equal(psrc_create("reverse", &tc, "", tok, 0, &p, &err), COH_OK);
    assert_string_equal(psrc_kind(p), "reverse");
    task_item it;
    assert_string_equal(psrc_item(p, 3, &it), "reverse");
    assert_int_equal(strncmp(it.prompt, "rev:", 4), 0);
    psrc_destroy(p);
}

/* ---- a prompt file ---- */

static void test_file(void **state)
{
    (void)state;
    write_file("{\"prompt\": \"1+2=\", \"task\": \"addition\", \"answer\": \"3\", "
               "\"metadata\": {\"a\": 1, \"b\": [2, 3]}}\n"
               "\n"
               "   \t\n"
               "{\"prompt\": \"rev:ab=\", \"task\": \"reverse\"}\n"
               "{\"prompt\": \"x y\", \"task\": \"sort\", \"answer\": \"\", \"metadata\": \"m\"}");
    coh_err err;
    task_config tc = task_config_default();
    psrc *p = NULL;
    if (psrc_create("addition", &tc, path, tok, 0, &p, &err) != COH_OK)
        fail_msg("%s", err.msg);
    assert_string_equal(psrc_kind(p), "file");
    assert_int_equal(psrc_file_count(p), 3);

    const char *prompts[3] = {"1+2=", "rev:ab=", "x y"};
    const char *tasks[3] = {"addition", "reverse", "sort"};
    const char *answers[3] = {"3", "", ""};
    const char *metas[3] = {"{\"a\":1,\"b\":[2,3]}", "", "\"m\""};
    for (uint64_t i = 0; i < 10; i++) {
        task_item it;
        int k = (int)(i % 3);
        assert_string_equal(psrc_item(p, i, &it), tasks[k]);
        assert_string_equal(it.prompt, prompts[k]);
        assert_string_equal(it.answer, answers[k]);
        assert_string_equal(it.meta, metas[k]);
    }
    task_item it;
    assert_string_equal(psrc_item(p, 1ULL << 62, &it), "reverse"); /* 2^62 % 3 == 1 */
    assert_string_equal(it.prompt, "rev:ab=");

    /* token ids by hand: the default vocabulary puts char c at id c - 29 */
    int ids[16];
    int want0[] = {TOK_BOS, '1' - 29, '+' - 29, '2' - 29, '=' - 29};
    assert_int_equal(psrc_tokens(p, 3, ids, 16, &err), 5);
    assert_memory_equal(ids, want0, sizeof want0);
    int want2[] = {TOK_BOS, 'x' - 29, ' ' - 29, 'y' - 29};
    assert_int_equal(psrc_tokens(p, 2, ids, 16, &err), 4);
    assert_memory_equal(ids, want2, sizeof want2);
    assert_int_equal(psrc_tokens(p, 2, ids, 3, &err), COH_ERANGE);

    /* the cursor works as for a generator */
    psrc_set_cursor(p, 41);
    assert_int_equal((long)psrc_next(p), 41);
    assert_int_equal((long)psrc_cursor(p), 42);
    psrc_destroy(p);

    /* first_index */
    assert_int_equal(psrc_create("addition", &tc, path, tok, 9, &p, &err), COH_OK);
    assert_int_equal((long)psrc_next(p), 9);
    psrc_destroy(p);
}

/* The file with this text is refused with code, naming the file, "line N" and frag. */
static void bad_file(const char *text, int code, int line, const char *frag)
{
    write_file(text);
    coh_err err;
    task_config tc = task_config_default();
    psrc *p = (psrc *)1;
    int rc = psrc_create("addition", &tc, path, tok, 0, &p, &err);
    if (rc != code)
        fail_msg("file %s: code %d, want %d (%s)", text, rc, code, err.msg);
    assert_null(p);
    HAS(err.msg, path);
    if (line > 0) {
        char want[32];
        snprintf(want, sizeof want, "line %d:", line);
        HAS(err.msg, want);
    }
    if (frag)
        HAS(err.msg, frag);
}

#define GOOD "{\"prompt\": \"1+1=\", \"task\": \"addition\"}\n"

/* A render hook standing in for a chat template: "<u>content</u>" per message, then "A:". */
static int render_test(void *ctx, const cJSON *messages, char **text, coh_err *err)
{
    (*(int *)ctx)++;
    char buf[1024] = "";
    const cJSON *m;
    cJSON_ArrayForEach(m, messages)
    {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsString(c))
            return coh_fail(err, COH_EINVAL, "message without content");
        strncat(buf, "<", sizeof buf - strlen(buf) - 1);
        strncat(buf, c->valuestring, sizeof buf - strlen(buf) - 1);
        strncat(buf, ">", sizeof buf - strlen(buf) - 1);
    }
    strncat(buf, "A:", sizeof buf - strlen(buf) - 1);
    *text = strdup(buf);
    return *text ? COH_OK : COH_ENOMEM;
}

static void test_messages_and_long_prompts(void **state)
{
    (void)state;
    /* a 300-character prompt (no limit of its own), and a chat rendered once at load */
    char longp[301];
    for (int i = 0; i < 300; i++)
        longp[i] = (char)('a' + i % 26);
    longp[300] = 0;
    char text[1200];
    snprintf(text, sizeof text,
             "{\"prompt\": \"%s\", \"task\": \"math\", \"answer\": \"7\"}\n"
             "{\"messages\": [{\"role\": \"user\", \"content\": \"1+2\"}], \"prompt\": \"raw\", "
             "\"task\": \"math\", \"answer\": \"3\"}\n",
             longp);
    write_file(text);
    int renders = 0;
    psrc_config c = {.task = "addition", .task_cfg = task_config_default(), .prompts_file = path,
                     .tok = tok, .render = render_test, .render_ctx = &renders};
    psrc *p = NULL;
    coh_err err;
    assert_int_equal(psrc_create_ex(&c, &p, &err), COH_OK);
    assert_int_equal(renders, 1);
    psrc_prompt pp;
    task_item scratch;
    psrc_get(p, 0, &pp, &scratch);
    assert_string_equal(pp.text, longp);
    assert_string_equal(pp.task, "math");
    assert_string_equal(pp.answer, "7");
    int ids[400];
    assert_int_equal(psrc_tokens(p, 0, ids, 400, &err), 301); /* <bos> + 300 */
    assert_int_equal(ids[0], TOK_BOS);
    psrc_get(p, 1, &pp, &scratch);
    assert_string_equal(pp.text, "<1+2>A:"); /* "messages" wins over "prompt" */
    /* a rendered chat is encoded as it is: no <bos> in front (its template writes it) */
    int want[] = {'<' - 29, '1' - 29, '+' - 29, '2' - 29, '>' - 29, 'A' - 29, ':' - 29};
    assert_int_equal(psrc_tokens(p, 1, ids, 400, &err), 7);
    assert_memory_equal(ids, want, sizeof want);
    psrc_destroy(p);

    /* the length limit names the line; "messages" without a template is refused */
    c.max_prompt_tokens = 100;
    p = (psrc *)1;
    assert_int_equal(psrc_create_ex(&c, &p, &err), COH_ERANGE);
    assert_null(p);
    HAS(err.msg, "line 1:");
    HAS(err.msg, "more than 100 tokens");
    write_file("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"task\": \"x\"}\n");
    c.max_prompt_tokens = 0;
    c.render = NULL;
    assert_int_equal(psrc_create_ex(&c, &p, &err), COH_EINVAL);
    HAS(err.msg, "chat template");
}

static void test_bad_files(void **state)
{
    (void)state;
    bad_file(GOOD "\n" "not json\n", COH_EFORMAT, 3, "\"prompt\"");
    bad_file(GOOD "{\"prompt\": \"1+1=\", \"task\": \"addition\"\n", COH_EFORMAT, 2, NULL);
    bad_file("[1, 2]\n", COH_EFORMAT, 1, NULL);
    bad_file(GOOD GOOD "{\"prompt\": \"1+1=\"}\n", COH_EFORMAT, 3, "\"task\"");
    bad_file(GOOD "{\"prompt\": \"1+1=\", \"task\": 3}\n", COH_EFORMAT, 2, "\"task\"");
    bad_file(GOOD "{\"task\": \"addition\"}\n", COH_EFORMAT, 2, "\"prompt\"");
    bad_file("{\"prompt\": \"1+1=\", \"task\": \"addition\", \"answer\": 2}\n", COH_EFORMAT, 1,
             "\"answer\"");
    bad_file(GOOD "\n\n{\"prompt\": \"1+1=\", \"task\": \"addition\", \"answer\": null}\n",
             COH_EFORMAT, 4, "\"answer\"");
    /* a tab, and a non-ASCII character: not in the tokenizer */
    bad_file(GOOD "{\"prompt\": \"1\\t1=\", \"task\": \"addition\"}\n", COH_EINVAL, 2,
             "tokenizer cannot encode");
    bad_file("{\"prompt\": \"caf\xc3\xa9\", \"task\": \"addition\"}\n", COH_EINVAL, 1,
             "tokenizer cannot encode");
    /* an empty task name */
    bad_file(GOOD "{\"prompt\": \"1+1=\", \"task\": \"\"}\n", COH_ERANGE, 2, "task");
    /* empty, and blank lines only */
    bad_file("", COH_EFORMAT, 0, "no prompts");
    bad_file("\n  \n\t\n", COH_EFORMAT, 0, "no prompts");

    /* a missing file */
    coh_err err;
    task_config tc = task_config_default();
    psrc *p = (psrc *)1;
    unlink(path);
    assert_int_equal(psrc_create("addition", &tc, path, tok, 0, &p, &err), COH_ENOTFOUND);
    assert_null(p);
    HAS(err.msg, path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generator),
        cmocka_unit_test(test_file),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_messages_and_long_prompts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
