/* test_chat.c - chat templates (common/jinja.h, common/chat.h) against outside oracles.
 *
 * Reads ../shared/testdata/chat-templates/ at run time (see its README, section
 * chat-templates):
 *   cases.jsonl           every case renders to its plain_jinja2 output (or fails with its
 *                         error); with llama.cpp's two extra steps (system-role polyfill,
 *                         one leading bos / trailing eos stripped) it gives its expected text;
 *   real-templates.jsonl  every real template renders to its expected text exactly
 *                         (strftime_now pinned, extra_context passed).
 * Plus Jinja semantics cases rendered by Python jinja2 3.1.6 with transformers' settings, and
 * bad templates refused with the line and construct named.
 * A missing testdata folder fails the test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "chat.h"
#include "fsutil.h"
#include "jinja.h"

#define DATA_DIR COHORT_SOURCE_DIR "/../shared/testdata/chat-templates"

/* ---- helpers ---------------------------------------------------------------------------- */

static char *read_text(const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    coh_err err = {0};
    if (fs_read_all(path, &buf, &len, &err) != COH_OK) {
        print_error("cannot read %s: %s\n", path, err.msg);
        fail_msg("test data missing: %s", path);
    }
    return buf;
}

/* 0 if equal; otherwise prints where the texts first differ, with context, and returns 1 */
static int text_diff(const char *what, const char *got, const char *want)
{
    if (!strcmp(got, want))
        return 0;
    size_t i = 0;
    while (got[i] && got[i] == want[i])
        i++;
    size_t from = i > 40 ? i - 40 : 0;
    print_error("%s: first difference at byte %zu (got %zu bytes, expected %zu)\n"
                "  got:      ...%.80s...\n  expected: ...%.80s...\n",
                what, i, strlen(got), strlen(want), got + from, want + from);
    return 1;
}

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* calls fn for every non-empty line of a JSON Lines file; returns the number of lines */
static int for_each_line(const char *path, int (*fn)(const cJSON *rec, int lineno, void *ctx),
                         void *ctx, int *failures)
{
    char *text = read_text(path);
    int n = 0, lineno = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        lineno++;
        if (!*line)
            continue;
        cJSON *rec = cJSON_Parse(line);
        if (!rec) {
            print_error("%s:%d: not JSON\n", path, lineno);
            (*failures)++;
            continue;
        }
        *failures += fn(rec, lineno, ctx);
        cJSON_Delete(rec);
        n++;
    }
    free(text);
    return n;
}

/* ---- cases.jsonl: plain jinja2 ---------------------------------------------------------- */

static int check_plain(const cJSON *rec, int lineno, void *ctx)
{
    (void)ctx;
    const char *name = jstr(rec, "name");
    const cJSON *pj = cJSON_GetObjectItemCaseSensitive(rec, "plain_jinja2");
    char *out = NULL;
    coh_err err = {0};
    int rc = chat_render(jstr(rec, "template"), cJSON_GetObjectItemCaseSensitive(rec, "messages"),
                         cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "add_generation_prompt")),
                         jstr(rec, "bos_token"), jstr(rec, "eos_token"), NULL, &out, &err);
    const char *want = jstr(pj, "output"), *want_err = jstr(pj, "error");
    int bad = 0;
    if (want) {
        if (rc != COH_OK) {
            print_error("cases.jsonl:%d (%s): render failed: %s\n", lineno, name, err.msg);
            bad = 1;
        } else {
            char what[256];
            snprintf(what, sizeof what, "cases.jsonl:%d (%s) plain_jinja2", lineno, name);
            bad = text_diff(what, out, want);
        }
    } else {
        /* "TemplateError: <message>": the message must come through */
        const char *msg = want_err ? strstr(want_err, ": ") : NULL;
        msg = msg ? msg + 2 : want_err;
        if (rc == COH_OK || !msg || !strstr(err.msg, msg)) {
            print_error("cases.jsonl:%d (%s): expected error '%s', got rc %d '%s'\n", lineno, name,
                        want_err ? want_err : "?", rc, rc ? err.msg : out);
            bad = 1;
        }
    }
    free(out);
    return bad;
}

static void test_cases_plain_jinja2(void **state)
{
    (void)state;
    int failures = 0;
    int n = for_each_line(DATA_DIR "/cases.jsonl", check_plain, NULL, &failures);
    assert_true(n >= 20);
    assert_int_equal(failures, 0);
}

/* ---- cases.jsonl: llama.cpp's formatting (polyfill + bos/eos strip) --------------------- */

/* llama.cpp's probe: does rendering a system message show its text? */
static int shows_system(const jinja_tpl *tpl, const char *bos, const char *eos)
{
    cJSON *msgs = cJSON_Parse("[{\"role\": \"system\", \"content\": \"<System Needle>\"},"
                              " {\"role\": \"user\", \"content\": \"Hey\"}]");
    char *out = NULL;
    coh_err err = {0};
    int rc = chat_render_tpl(tpl, msgs, 0, bos, eos, NULL, NULL, &out, &err);
    int shows = rc == COH_OK && strstr(out, "<System Needle>") != NULL;
    free(out);
    cJSON_Delete(msgs);
    return shows;
}

/* system messages folded into the next user message: "system\nuser" */
static cJSON *fold_system(const cJSON *messages)
{
    cJSON *res = cJSON_CreateArray();
    char *pending = NULL;
    for (const cJSON *m = messages->child; m; m = m->next) {
        const char *role = jstr(m, "role"), *content = jstr(m, "content");
        if (role && !strcmp(role, "system")) {
            free(pending);
            pending = strdup(content ? content : "");
            continue;
        }
        cJSON *copy = cJSON_Duplicate(m, 1);
        if (pending && role && !strcmp(role, "user")) {
            size_t len = strlen(pending) + strlen(content ? content : "") + 2;
            char *joined = malloc(len);
            snprintf(joined, len, "%s\n%s", pending, content ? content : "");
            cJSON_ReplaceItemInObjectCaseSensitive(copy, "content", cJSON_CreateString(joined));
            free(joined);
            free(pending);
            pending = NULL;
        }
        cJSON_AddItemToArray(res, copy);
    }
    free(pending);
    return res;
}

static int check_llamacpp(const cJSON *rec, int lineno, void *ctx)
{
    (void)ctx;
    const char *name = jstr(rec, "name"), *bos = jstr(rec, "bos_token"), *eos = jstr(rec, "eos_token");
    jinja_tpl *tpl = NULL;
    coh_err err = {0};
    if (jinja_compile(jstr(rec, "template"), &tpl, &err) != COH_OK) {
        print_error("cases.jsonl:%d (%s): compile failed: %s\n", lineno, name, err.msg);
        return 1;
    }
    int bad = 0;
    int polyfill = !shows_system(tpl, bos, eos);
    if (polyfill != cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "system_role_polyfill"))) {
        print_error("cases.jsonl:%d (%s): system-role probe says polyfill=%d, the case says otherwise\n",
                    lineno, name, polyfill);
        bad = 1;
    }
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(rec, "messages");
    cJSON *folded = polyfill ? fold_system(msgs) : NULL;
    char *out = NULL;
    int rc = chat_render_tpl(tpl, folded ? folded : msgs,
                             cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "add_generation_prompt")),
                             bos, eos, NULL, NULL, &out, &err);
    if (rc != COH_OK) {
        print_error("cases.jsonl:%d (%s): render failed: %s\n", lineno, name, err.msg);
        bad = 1;
    } else {
        char *text = out;
        size_t len = strlen(text);
        if (bos && *bos && !strncmp(text, bos, strlen(bos))) {
            text += strlen(bos);
            len -= strlen(bos);
        }
        if (eos && *eos && len >= strlen(eos) && !strcmp(text + len - strlen(eos), eos))
            text[len - strlen(eos)] = 0;
        char what[256];
        snprintf(what, sizeof what, "cases.jsonl:%d (%s) expected", lineno, name);
        bad |= text_diff(what, text, jstr(rec, "expected"));
    }
    free(out);
    cJSON_Delete(folded);
    jinja_free(tpl);
    return bad;
}

static void test_cases_llamacpp_expected(void **state)
{
    (void)state;
    int failures = 0;
    int n = for_each_line(DATA_DIR "/cases.jsonl", check_llamacpp, NULL, &failures);
    assert_true(n >= 20);
    assert_int_equal(failures, 0);
}

/* ---- real-templates.jsonl ------------------------------------------------------------- */

static int check_real(const cJSON *rec, int lineno, void *ctx)
{
    (void)ctx;
    const char *name = jstr(rec, "name"), *file = jstr(rec, "template_file");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", DATA_DIR, file ? file : "?");
    char *text = read_text(path);
    struct tm now = {0};
    const char *date = jstr(rec, "strftime_now");
    if (date && sscanf(date, "%d-%d-%d", &now.tm_year, &now.tm_mon, &now.tm_mday) == 3) {
        now.tm_year -= 1900;
        now.tm_mon -= 1;
        time_t t = timegm(&now);
        gmtime_r(&t, &now);
    }
    jinja_tpl *tpl = NULL;
    coh_err err = {0};
    int bad = 0;
    char *out = NULL;
    if (jinja_compile(text, &tpl, &err) != COH_OK) {
        print_error("real-templates.jsonl:%d (%s): compile failed: %s\n", lineno, name, err.msg);
        bad = 1;
    } else if (chat_render_tpl(tpl, cJSON_GetObjectItemCaseSensitive(rec, "messages"),
                               cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "add_generation_prompt")),
                               jstr(rec, "bos_token"), jstr(rec, "eos_token"),
                               cJSON_GetObjectItemCaseSensitive(rec, "extra_context"),
                               date ? &now : NULL, &out, &err) != COH_OK) {
        print_error("real-templates.jsonl:%d (%s): render failed: %s\n", lineno, name, err.msg);
        bad = 1;
    } else {
        char what[256];
        snprintf(what, sizeof what, "real-templates.jsonl:%d (%s)", lineno, name);
        bad = text_diff(what, out, jstr(rec, "expected"));
    }
    free(out);
    jinja_free(tpl);
    free(text);
    return bad;
}

static void test_real_templates(void **state)
{
    (void)state;
    int failures = 0;
    int n = for_each_line(DATA_DIR "/real-templates.jsonl", check_real, NULL, &failures);
    assert_true(n >= 17);
    assert_int_equal(failures, 0);
}

/* ---- Jinja semantics (expected texts from Python jinja2 3.1.6, transformers' settings) -- */

static const char SEMANTICS[] =
    "{\"template\": \"  {% if true %}\\n  x\\n  {% endif %}\\n  {{ 'y' }}  {# c #}\\nz\\n\", \"vars\": {}, \"expected\": \"  x\\n  y  z\"}\n"
    "{\"template\": \"{%+ if true %} a {% endif +%}\\n b   {%- if true -%}  c  {%- endif -%}  \\n d\", \"vars\": {}, \"expected\": \" a \\n bcd\"}\n"
    "{\"template\": \"{% for a, b in [(1,2),(3,4)] %}{{ loop.index }}{{a}}{{b}}{{ loop.revindex }}{% if loop.last %}L{% endif %}{% endfor %}\", \"vars\": {}, \"expected\": \"11222341L\"}\n"
    "{\"template\": \"{% for x in [1,2,3,4] if x is even %}{{x}}{{loop.length}}{% else %}none{% endfor %}{% for x in [] %}{% else %}empty{% endfor %}\", \"vars\": {}, \"expected\": \"2242empty\"}\n"
    "{\"template\": \"{% set ns = namespace(a=1) %}{% for i in range(3) %}{% set ns.a = ns.a * 2 %}{% if i == 1 %}{% break %}{% endif %}{% set x = 5 %}{% endfor %}{{ ns.a }}{{ x }}\", \"vars\": {}, \"expected\": \"4\"}\n"
    "{\"template\": \"{% macro m(a, b='B') %}[{{a}}{{b}}]{% endmacro %}{{ m(1) }}{{ m(1, b=2) }}{{ m(b=3, a=4) }}\", \"vars\": {}, \"expected\": \"[1B][12][43]\"}\n"
    "{\"template\": \"{{ {'b':1,'a':[1,2.5,'é\\\\n']}|tojson }} {{ {'a':{'b':[]},'c':{}}|tojson(indent=2) }}\", \"vars\": {}, \"expected\": \"{\\\"b\\\": 1, \\\"a\\\": [1, 2.5, \\\"é\\\\n\\\"]} {\\n  \\\"a\\\": {\\n    \\\"b\\\": []\\n  },\\n  \\\"c\\\": {}\\n}\"}\n"
    "{\"template\": \"{{ 'abc'[::-1] }} {{ 'héllo'[1:3] }} {{ [1,2,3,4][::-2] }} {{ 'héllo'|length }} {{ [1,'a',none,true] }} {{ 7//2 }} {{ -7 % 3 }} {{ 7/2 }} {{ 1e20 }}\", \"vars\": {}, \"expected\": \"cba él [4, 2] 5 [1, 'a', None, True] 3 2 3.5 1e+20\"}\n"
    "{\"template\": \"{{ 'hello world'.title() }} {{ 'a b  c'.split() }} {{ ' x '.strip() }}|{{ 'xxhixx'.strip('x') }} {{ m.content.startswith('Hi') }} {{ 'a,b'.split(',')[-1] }}\", \"vars\": {\"m\": {\"content\": \"Hi there\"}}, \"expected\": \"Hello World ['a', 'b', 'c'] x|hi True b\"}\n"
    "{\"template\": \"{{ x }}|{{ x is defined }}|{{ x|length }}|{{ x ~ 'a' }}|{{ d.missing is defined }}|{% for i in x %}no{% endfor %}\", \"vars\": {\"d\": {}}, \"expected\": \"|False|0|a|False|\"}\n"
    "{\"template\": \"{{ [{'a':1},{'b':3}]|selectattr('a','defined')|map(attribute='a')|list }} {{ ['b','a','B']|unique|list }} {{ none|default('d') }} {{ ''|default('d', true) }} {{ ('<'|safe) + '<' }}\", \"vars\": {}, \"expected\": \"[1] ['b', 'a'] None d <&lt;\"}\n"
    "{\"template\": \"{%- filter upper -%} hi {{ 'there' }} {%- endfilter %}{% set b | trim %}  blk  {% endset %}[{{ b }}]\", \"vars\": {}, \"expected\": \"HI THERE[blk]\"}\n"
    ;

static void test_semantics(void **state)
{
    (void)state;
    int failures = 0, lineno = 0;
    char *text = strdup(SEMANTICS);
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        lineno++;
        cJSON *rec = cJSON_Parse(line);
        assert_non_null(rec);
        jinja_tpl *tpl = NULL;
        coh_err err = {0};
        char *out = NULL;
        if (jinja_compile(jstr(rec, "template"), &tpl, &err) != COH_OK ||
            jinja_render(tpl, cJSON_GetObjectItemCaseSensitive(rec, "vars"), NULL, &out, &err) != COH_OK) {
            print_error("semantics case %d: %s\n  template: %s\n", lineno, err.msg, jstr(rec, "template"));
            failures++;
        } else {
            char what[64];
            snprintf(what, sizeof what, "semantics case %d", lineno);
            failures += text_diff(what, out, jstr(rec, "expected"));
        }
        free(out);
        jinja_free(tpl);
        cJSON_Delete(rec);
    }
    free(text);
    assert_int_equal(failures, 0);
}

/* compile once, render many times with different conversations */
static void test_compile_once_render_many(void **state)
{
    (void)state;
    jinja_tpl *tpl = NULL;
    coh_err err = {0};
    assert_int_equal(jinja_compile("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                                   "{% if add_generation_prompt %}<assistant>{% endif %}", &tpl, &err), COH_OK);
    for (int i = 0; i < 50; i++) {
        char json[128], want[128];
        snprintf(json, sizeof json, "[{\"role\": \"user\", \"content\": \"q%d\"}]", i);
        snprintf(want, sizeof want, "<user>q%d%s", i, i % 2 ? "<assistant>" : "");
        cJSON *msgs = cJSON_Parse(json);
        char *out = NULL;
        assert_int_equal(chat_render_tpl(tpl, msgs, i % 2, "<s>", "</s>", NULL, NULL, &out, &err), COH_OK);
        assert_string_equal(out, want);
        free(out);
        cJSON_Delete(msgs);
    }
    jinja_free(tpl);
}

/* ---- bad templates ------------------------------------------------------------------------ */

static void expect_compile_error(const char *tmpl, const char *must1, const char *must2)
{
    jinja_tpl *tpl = (jinja_tpl *)(uintptr_t)1;
    coh_err err = {0};
    int rc = jinja_compile(tmpl, &tpl, &err);
    if (rc != COH_EFORMAT || tpl != NULL || !strstr(err.msg, must1) || (must2 && !strstr(err.msg, must2)))
        fail_msg("template %s: rc %d, message '%s' (wanted '%s' and '%s')", tmpl, rc, err.msg,
                 must1, must2 ? must2 : "");
}

static void test_syntax_errors_named(void **state)
{
    (void)state;
    expect_compile_error("hello\n{{ name ", "line 2", "unclosed '{{'");
    expect_compile_error("a\nb\n{% if x %}yes", "line 3", "unclosed '{% if %}'");
    expect_compile_error("{% for m in messages %}x{% endif %}", "line 1", "endif");
    expect_compile_error("ok\n{% include 'other.jinja' %}", "line 2", "include");
    expect_compile_error("{% frobnicate %}", "line 1", "frobnicate");
    expect_compile_error("{{ 1 + }}", "line 1", "expected an expression");
    expect_compile_error("x\n\n{{ (1, 2 }}", "line 3", NULL);
    expect_compile_error("{{ messages|frobnicate }}", "line 1", "unknown filter 'frobnicate'");
    expect_compile_error("{% if x is frobbed %}{% endif %}", "line 1", "unknown test 'frobbed'");
    expect_compile_error("{% break %}", "line 1", "outside a for loop");
    expect_compile_error("{# never closed", "line 1", "unclosed comment");
    expect_compile_error("{{ 'unterminated }}", "line 1", "unterminated string");
    expect_compile_error("{% set x %}abc", "line 1", "endset");
}

static void expect_render_error(const char *tmpl, int code, const char *must1, const char *must2)
{
    jinja_tpl *tpl = NULL;
    coh_err err = {0};
    assert_int_equal(jinja_compile(tmpl, &tpl, &err), COH_OK);
    cJSON *vars = cJSON_Parse("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"n\": null}");
    char *out = (char *)(uintptr_t)1;
    int rc = jinja_render(tpl, vars, NULL, &out, &err);
    cJSON_Delete(vars);
    jinja_free(tpl);
    if (rc != code || out != NULL || !strstr(err.msg, must1) || (must2 && !strstr(err.msg, must2)))
        fail_msg("template %s: rc %d, message '%s' (wanted %d, '%s' and '%s')", tmpl, rc, err.msg,
                 code, must1, must2 ? must2 : "");
}

static void test_runtime_errors_named(void **state)
{
    (void)state;
    /* raise_exception surfaces the template's own message */
    expect_render_error("{% if messages[0].role != 'system' %}{{ raise_exception('System message required!') }}{% endif %}",
                        COH_EINVAL, "System message required!", NULL);
    /* undefined variables: printing is fine, attribute access is an error naming it */
    expect_render_error("ok {{ nope }}\n{{ nope.content }}", COH_EFORMAT, "line 2", "'nope' is undefined");
    expect_render_error("{{ messages[0].content + 1 }}", COH_EFORMAT, "line 1", "can only concatenate str");
    expect_render_error("{{ 'a' + missing }}", COH_EFORMAT, "'missing' is undefined", NULL);
    expect_render_error("{% for x in n %}{% endfor %}", COH_EFORMAT, "'NoneType' object is not iterable", NULL);
    expect_render_error("{% set d = {'a': 1} %}{% set d.a = 2 %}", COH_EFORMAT, "namespace", NULL);
    expect_render_error("{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}", COH_EFORMAT, "macro 'f'", NULL);
    expect_render_error("{{ messages|tojson }}{{ messages|map(attribute='role')|tojson }}", COH_EFORMAT,
                        "not JSON serializable", NULL);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    char *out = NULL;
    coh_err err = {0};
    cJSON *notlist = cJSON_Parse("{\"role\": \"user\"}");
    assert_int_equal(chat_render("{{ messages }}", notlist, 1, NULL, NULL, NULL, &out, &err), COH_EINVAL);
    assert_null(out);
    assert_non_null(strstr(err.msg, "messages"));
    cJSON_Delete(notlist);
    assert_int_equal(jinja_compile(NULL, NULL, &err), COH_EINVAL);
    jinja_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases_plain_jinja2),
        cmocka_unit_test(test_cases_llamacpp_expected),
        cmocka_unit_test(test_real_templates),
        cmocka_unit_test(test_semantics),
        cmocka_unit_test(test_compile_once_render_many),
        cmocka_unit_test(test_syntax_errors_named),
        cmocka_unit_test(test_runtime_errors_named),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
