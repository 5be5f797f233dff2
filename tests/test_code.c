/* test_code.c - the `code` verifier (reward/codeverify.h): program extraction, settings,
 * and real Python programs in the sandbox - correct, wrong, crashing, looping forever, fork
 * bombs, memory hogs, big files, network connections, file system access, output floods -
 * each with its score and reason within its deadline; the bounded pool of sandboxes under
 * concurrent items; the refusal to run without a sandbox; the scorer's routing of task
 * "code". Limits are small so the suite takes a few seconds. */
#define _GNU_SOURCE /* unshare and the clone flags, for the namespace probe */
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "codeverify.h"
#include "scorer.h"

#define assert_contains(msg, s)                                                                \
    do {                                                                                       \
        if (!strstr((msg), (s)))                                                               \
            fail_msg("\"%s\" lacks \"%s\"", (msg), (s));                                       \
    } while (0)

static const char *const ADD_TESTS =
    "{\"tests\": [{\"stdin\": \"1 2\\n\", \"stdout\": \"3\\n\"},"
    "             {\"stdin\": \"2 3\\n\", \"stdout\": \"5\"}]}";
static const char *const ONE_TEST = "{\"tests\": [{\"stdout\": \"ok\"}]}";

static char g_tmp[256]; /* the sandboxes' tmp_dir: must be empty after every item */
static int g_uid_base;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static codev_config small_config(void)
{
    codev_config c = codev_config_default();
    c.timeout_ms = 5000;
    c.test_timeout_ms = 1500;
    c.cpu_s = 2;
    c.memory_mb = 200;
    c.file_mb = 1;
    c.processes = 16;
    c.output_kb = 16;
    c.max_sandboxes = 4;
    c.uid_base = g_uid_base;
    snprintf(c.tmp_dir, sizeof c.tmp_dir, "%s", g_tmp);
    return c;
}

static codev *make(const codev_config *c)
{
    codev *cv = NULL;
    coh_err err;
    if (codev_create(c, &cv, &err) != COH_OK)
        fail_msg("codev_create: %s", err.msg);
    return cv;
}

static int tmp_entries(void)
{
    DIR *d = opendir(g_tmp);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* Verify and check what every item must satisfy: no error, within the deadline (+ slack
 * for the interpreter's start on a busy machine), nothing left in tmp_dir. */
static codev_result run(codev *cv, const char *completion, const char *meta, int timeout_ms)
{
    codev_result r;
    coh_err err;
    double t0 = now_ms();
    int rc = codev_verify(cv, completion, meta, timeout_ms, &r, &err);
    double dt = now_ms() - t0;
    if (rc != COH_OK)
        fail_msg("codev_verify: %s", err.msg);
    if (timeout_ms > 0 && dt > timeout_ms + 500)
        fail_msg("took %.0f ms, deadline %d ms", dt, timeout_ms);
    assert_int_equal(tmp_entries(), 0);
    return r;
}

/* Processes whose real uid is one of the sandboxes' (from /proc). */
static int sandbox_processes(void)
{
    DIR *d = opendir("/proc");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300], line[256];
        snprintf(path, sizeof path, "/proc/%s/status", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "Uid:", 4) == 0) {
                long uid = strtol(line + 4, NULL, 10);
                n += uid >= g_uid_base && uid < g_uid_base + CODEV_SANDBOXES_MAX;
                break;
            }
        fclose(f);
    }
    closedir(d);
    return n;
}

/* ---- extraction and settings ----------------------------------------------------------------- */

typedef struct extract_case {
    const char *completion, *program;
    int format;
} extract_case;

static void test_extract(void **state)
{
    (void)state;
    static const extract_case cases[] = {
        {"Here:\n```python\nprint(1)\n```\nDone.", "print(1)\n", 1},
        {"```py\nx = 1\n```", "x = 1\n", 1},
        {"```Python3 title=a.py\nx = 2\n```", "x = 2\n", 1},
        /* the last python block wins; other languages are never run */
        {"```python\nA\n```\ntext\n```python\nB\n```\n```bash\nrm -rf /\n```", "B\n", 1},
        /* a python block beats a later untagged one, an untagged one beats the whole text */
        {"```python\nP\n```\n```\nU\n```", "P\n", 1},
        {"try this:\n```\nprint(2)\n```", "print(2)\n", 1},
        {"```bash\nls\n```", "```bash\nls\n```", 0},
        /* a block that never closes (cut at the token limit) runs to the end, format 0 */
        {"```python\nprint(3)\nprint(4", "print(3)\nprint(4", 0},
        {"print(5)\n", "print(5)\n", 0},
        {"", "", 0},
        {"```python\n```", "", 1},
        {"  ```python\nindented\n  ```", "indented\n", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t s = 99, n = 99;
        int f = codev_extract(cases[i].completion, &s, &n);
        char got[256];
        snprintf(got, sizeof got, "%.*s", (int)n, cases[i].completion + s);
        if (strcmp(got, cases[i].program) != 0 || f != cases[i].format)
            fail_msg("case %zu: program \"%s\" format %d, want \"%s\" %d", i, got, f,
                     cases[i].program, cases[i].format);
    }
}

static void test_config(void **state)
{
    (void)state;
    codev_config c;
    int present = 1;
    coh_err err;
    assert_int_equal(codev_config_parse(NULL, &c, &present, &err), COH_OK);
    assert_int_equal(present, 0);
    assert_int_equal(c.timeout_ms, 10000);
    assert_int_equal(c.max_sandboxes, 2);
    assert_string_equal(c.python, "/usr/bin/python3");
    assert_int_equal(codev_config_parse("{\"format_weight\": 1}", &c, &present, &err), COH_OK);
    assert_int_equal(present, 0);
    assert_int_equal(codev_config_parse("{\"code\": {\"timeout_ms\": 300, \"max_sandboxes\": 3,"
                                        " \"unsandboxed\": true, \"python\": \"/bin/py\"}}",
                                        &c, &present, &err),
                     COH_OK);
    assert_int_equal(present, 1);
    assert_int_equal(c.timeout_ms, 300);
    assert_int_equal(c.max_sandboxes, 3);
    assert_int_equal(c.unsandboxed, 1);
    assert_string_equal(c.python, "/bin/py");
    assert_int_equal(codev_config_parse("{\"code\": {\"unsandbox\": true}}", &c, NULL, &err),
                     COH_EINVAL);
    assert_contains(err.msg, "code.unsandbox is not a setting");
    assert_int_equal(codev_config_parse("{\"code\": {\"memory_mb\": 1}}", &c, NULL, &err),
                     COH_EINVAL);
    assert_contains(err.msg, "code.memory_mb");
    assert_int_equal(codev_config_parse("{\"code\": {\"cpu_s\": 1.5}}", &c, NULL, &err),
                     COH_EINVAL);
    assert_int_equal(codev_config_parse("{\"code\": {\"python\": \"python3\"}}", &c, NULL, &err),
                     COH_EINVAL);
    assert_int_equal(codev_config_parse("{\"code\": 1}", &c, NULL, &err), COH_EINVAL);
    assert_int_equal(codev_config_parse("{nope", &c, NULL, &err), COH_EFORMAT);
    /* a handle needs a real interpreter */
    c = small_config();
    snprintf(c.python, sizeof c.python, "/nonexistent/python3");
    codev *cv = NULL;
    assert_int_equal(codev_create(&c, &cv, &err), COH_EINVAL);
    assert_null(cv);
    assert_contains(err.msg, "code.python");
}

static void test_bad_metadata(void **state)
{
    (void)state;
    codev_config c = small_config();
    codev *cv = make(&c);
    codev_result r;
    coh_err err;
    static const char *const bad[] = {NULL, "", "[1]", "{not json", "{}",
                                      "{\"tests\": []}", "{\"tests\": [{\"stdin\": \"1\"}]}",
                                      "{\"tests\": [{\"stdout\": 5}]}", "{\"asserts\": [7]}",
                                      "{\"tests\": {}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r.score = 7;
        assert_int_equal(codev_verify(cv, "print(1)", bad[i], 0, &r, &err), COH_EINVAL);
        assert_true(r.score == 0.0);
        assert_contains(err.msg, "task code");
    }
    codev_destroy(cv);
}

/* --------------------------------------------------------------------------------------------- */

static void test_correct(void **state)
{
    (void)state;
    codev_config c = small_config();
    codev *cv = make(&c);
    assert_int_equal(codev_sandboxed(cv), 1);
    /* trailing spaces and empty lines are not differences */
    codev_result r = run(cv,
                         "Read two numbers and add them.\n```python\n"
                         "a, b = map(int, input().split())\nprint(a + b, '  ')\nprint()\n```\n"
                         "This prints the sum.",
                         ADD_TESTS, 4000);
    assert_string_equal(r.detail, "2/2 tests passed");
    assert_true(r.score == 1.0);
    assert_int_equal(r.passed, 2);
    assert_int_equal(r.total, 2);
    assert_int_equal(r.format, 1);
    /* the whole completion when there is no fence: format 0 */
    r = run(cv, "import sys\nprint(sum(map(int, sys.stdin.read().split())))\n", ADD_TESTS, 4000);
    assert_string_equal(r.detail, "2/2 tests passed");
    assert_int_equal(r.format, 0);
    codev_destroy(cv);
}

static void test_wrong_output(void **state)
{
    (void)state;
    codev_config c = small_config();
    codev *cv = make(&c);
    codev_result r = run(cv,
                         "```python\na, b = map(int, input().split())\n"
                         "print(a + b if a == 1 else a * b)\n```",
                         ADD_TESTS, 4000);
    assert_string_equal(r.detail, "1/2 tests passed; test 2: wrong output (expected '5', got "
                                  "'6')");
    assert_true(r.score == 0.5);
    /* a later line differs; leading white space counts */
    r = run(cv, "print('a')\nprint(' b')",
            "{\"tests\": [{\"stdout\": \"a\\nb\\n\"}]}", 4000);
    assert_string_equal(r.detail,
                        "0/1 tests passed; test 1: wrong output at line 2 (expected 'b', got "
                        "' b')");
    /* nothing printed */
    r = run(cv, "x = 1", ONE_TEST, 4000);
    assert_string_equal(r.detail, "0/1 tests passed; test 1: wrong output (expected 'ok', got '')");
    /* the right output but a failing exit status is not a pass */
    r = run(cv, "import sys\nprint('ok')\nsys.exit(3)", ONE_TEST, 4000);
    assert_string_equal(r.detail, "0/1 tests passed; test 1: exit status 3");
    codev_destroy(cv);
}

static void test_asserts(void **state)
{
    (void)state;
    codev_config c = small_config();
    codev *cv = make(&c);
    const char *meta = "{\"asserts\": [\"assert f(1) == 2\", \"assert f(2) == 5\", "
                       "\"assert f(3) == 6\", \"assert g(1)\", "
                       "\"assert f(-1) == -2  # \\u00e9'\"]}";
    codev_result r = run(cv, "def f(x):\n    return 2 * x\n", meta, 4000);
    assert_string_equal(r.detail, "3/5 tests passed; assert 2: AssertionError");
    assert_int_equal(r.passed, 3);
    assert_int_equal(r.total, 5);
    assert_int_equal(r.format, 0);
    /* stdin tests and asserts together: the tests first */
    r = run(cv, "```python\ndef f(x):\n    return 2 * x\nif __name__ == '__main__':\n"
                "    print(f(int(input())))\n```",
            "{\"tests\": [{\"stdin\": \"4\", \"stdout\": \"8\"}], "
            "\"asserts\": [\"assert f(1) == 2\"]}",
            4000);
    assert_string_equal(r.detail, "2/2 tests passed");
    /* a program that crashes before its asserts */
    r = run(cv, "def f(x):\n    return 2 * x\nraise ValueError('boom')\n", meta, 4000);
    assert_string_equal(r.detail, "0/5 tests passed; assert 1: crashed: ValueError: boom");
    /* exiting early with status 0, or forging result lines, passes nothing */
    r = run(cv, "import sys\nsys.exit(0)\n", meta, 4000);
    assert_string_equal(r.detail,
                        "0/5 tests passed; assert 1: no result (the program ended before its "
                        "asserts)");
    r = run(cv,
            "import os\nfor i in range(5):\n    os.write(3, b'0000000000000000 %d ok\\n' % i)\n"
            "    print('x %d ok' % i)\ndef f(x):\n    return 0\n",
            meta, 4000);
    assert_int_equal(r.passed, 0);
    /* a syntax error */
    r = run(cv, "def f(x) return x", meta, 4000);
    assert_contains(r.detail, "0/5 tests passed; assert 1: crashed: SyntaxError");
    codev_destroy(cv);
}

static void test_no_program(void **state)
{
    (void)state;
    codev_config c = small_config();
    codev *cv = make(&c);
    codev_result r = run(cv, "```python\n  \n```", ONE_TEST, 4000);
    assert_string_equal(r.detail, "no program found");
    assert_true(r.score == 0.0);
    assert_int_equal(r.format, 1);
    assert_int_equal(r.total, 1);
    r = run(cv, " \n\n", ONE_TEST, 4000);
    assert_string_equal(r.detail, "no program found");
    assert_int_equal(r.format, 0);
    codev_destroy(cv);
}

static void test_crash(void **state)
{
    (void)state;
    codev_config c = small_config();
    codev *cv = make(&c);
    codev_result r = run(cv, "```python\nprint(1 / 0)\n```", ADD_TESTS, 4000);
    assert_string_equal(r.detail, "0/2 tests passed; test 1: crashed: ZeroDivisionError: "
                                  "division by zero");
    r = run(cv, "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", ONE_TEST, 4000);
    assert_contains(r.detail, "test 1: killed by signal 11 (SIGSEGV)");
    codev_destroy(cv);
}

static void test_infinite_loop(void **state)
{
    (void)state;
    codev_config c = small_config();
    c.test_timeout_ms = 400;
    codev *cv = make(&c);
    /* killed by the wall clock of one run; the next test still runs */
    double t0 = now_ms();
    codev_result r = run(cv, "a, b = map(int, input().split())\nwhile a == 1:\n    pass\n"
                             "print(a + b)",
                         ADD_TESTS, 4000);
    assert_string_equal(r.detail, "1/2 tests passed; test 1: timeout after 400 ms");
    assert_true(now_ms() - t0 < 2000);
    /* the item's deadline cuts the test's wall clock short, later tests are not run */
    c.test_timeout_ms = 1500;
    codev_destroy(cv);
    cv = make(&c);
    t0 = now_ms();
    r = run(cv, "while True:\n    pass", ADD_TESTS, 300);
    assert_true(now_ms() - t0 < 800);
    assert_contains(r.detail, "0/2 tests passed; test 1: timeout after 2");
    /* the CPU limit, when it comes before the wall clock */
    c.cpu_s = 1;
    c.test_timeout_ms = 3000;
    codev_destroy(cv);
    cv = make(&c);
    t0 = now_ms();
    r = run(cv, "while True:\n    pass", ONE_TEST, 4000);
    assert_string_equal(r.detail, "0/1 tests passed; test 1: timeout: CPU time limit of 1 s");
    assert_true(now_ms() - t0 < 3000);
    codev_destroy(cv);
}

static void test_fork_bomb(void **state)
{
    (void)state;
    codev_config c = small_config();
    c.test_timeout_ms = 4000;
    codev *cv = make(&c);
    /* the process limit holds: the 16th process of the sandbox's uid cannot be made (not
     * root, the uid is the service's, whose processes count too) */
    codev_result r = run(cv,
                         "import os, time\nn = 0\ntry:\n    while True:\n"
                         "        if os.fork() == 0:\n            time.sleep(30)\n"
                         "            os._exit(0)\n        n += 1\n"
                         "except OSError as e:\n    print(0 < n < 16, type(e).__name__)\n",
                         "{\"tests\": [{\"stdout\": \"True BlockingIOError\"}]}", 5000);
    assert_string_equal(r.detail, "1/1 tests passed");
    codev_destroy(cv);
    c.test_timeout_ms = 500;
    cv = make(&c);
    /* a bomb that never stops: killed at the wall clock with every process it made */
    double t0 = now_ms();
    r = run(cv,
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
            "        pass\n",
            ONE_TEST, 3000);
    assert_string_equal(r.detail, "0/1 tests passed; test 1: timeout after 500 ms");
    assert_true(now_ms() - t0 < 2000);
    /* ... and one that stops at the limit */
    r = run(cv, "import os\nwhile True:\n    os.fork()\n", ONE_TEST, 3000);
    if (!strstr(r.detail, "test 1: crashed: BlockingIOError") &&
        !strstr(r.detail, "test 1: timeout after 500 ms"))
        fail_msg("%s", r.detail);
    if (geteuid() == 0)
        assert_int_equal(sandbox_processes(), 0); /* nothing left behind */
    /* the machine is fine: the next program runs normally */
    r = run(cv, "print('ok')", ONE_TEST, 3000);
    assert_string_equal(r.detail, "1/1 tests passed");
    codev_destroy(cv);
}

static void test_memory_hog(void **state)
{
    (void)state;
    codev_config c = small_config();
    c.memory_mb = 64; /* filling it takes a while on a busy machine: keep it small */
    c.test_timeout_ms = 4000;
    codev *cv = make(&c);
    codev_result r = run(cv, "x = []\nwhile True:\n    x.append(bytearray(10 ** 6))\n",
                         ONE_TEST, 5000);
    assert_string_equal(r.detail, "0/1 tests passed; test 1: memory limit (64 MB)");
    r = run(cv, "x = bytearray(1 << 33)\nprint('ok')", ONE_TEST, 4000);
    assert_string_equal(r.detail, "0/1 tests passed; test 1: memory limit (64 MB)");
    /* below the limit is fine */
    r = run(cv, "x = bytearray(8 << 20)\nprint('ok')", ONE_TEST, 4000);
    assert_string_equal(r.detail, "1/1 tests passed");
    codev_destroy(cv);
}

static void test_file_size(void **state)
{
    (void)state;
    codev_config c = small_config();
    codev *cv = make(&c);
    codev_result r = run(cv,
                         "with open('big.bin', 'wb') as f:\n    f.write(b'x' * (2 << 20))\n"
                         "print('ok')",
                         ONE_TEST, 4000);
    assert_string_equal(r.detail, "0/1 tests passed; test 1: file size limit (1 MB)");
    /* small files in the private directory (also HOME and TMPDIR) are fine */
    r = run(cv,
            "import os, tempfile\nopen('a.txt', 'w').write('hi')\n"
            "with tempfile.NamedTemporaryFile(dir=None) as t:\n"
            "    ok = os.path.dirname(t.name) == os.getcwd()\n"
            "print('ok' if ok and os.environ['HOME'] == os.getcwd() and "
            "open('a.txt').read() == 'hi' else 'no')",
            ONE_TEST, 4000);
    assert_string_equal(r.detail, "1/1 tests passed");
    codev_destroy(cv);
}

static void test_output_limit(void **state)
{
    (void)state;
    codev_config c = small_config();
    c.test_timeout_ms = 4500;
    codev *cv = make(&c);
    double t0 = now_ms();
    codev_result r = run(cv, "while True:\n    print('x' * 1000)", ONE_TEST, 5000);
    assert_string_equal(r.detail, "0/1 tests passed; test 1: output limit (more than 16 KiB)");
    assert_true(now_ms() - t0 < 3000); /* killed at once, not at the wall clock */
    codev_destroy(cv);
}

static void test_network(void **state)
{
    (void)state;
    /* a listening socket of this process on 127.0.0.1 */
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true(ls >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(ls, 8), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &al), 0);
    int port = ntohs(a.sin_port);

    codev_config c = small_config();
    codev *cv = make(&c);
    char prog[512], prog2[256];
    snprintf(prog, sizeof prog,
             "import socket\ns = socket.socket()\ns.settimeout(1)\ntry:\n"
             "    s.connect(('127.0.0.1', %d))\n    print('connected')\n"
             "except OSError as e:\n    print('blocked')\n",
             port);
    codev_result r = run(cv, prog, "{\"tests\": [{\"stdout\": \"blocked\"}]}", 4000);
    assert_string_equal(r.detail, "1/1 tests passed");
    snprintf(prog2, sizeof prog2,
             "import socket\nsocket.create_connection(('127.0.0.1', %d), timeout=1)\nprint('ok')",
             port);
    r = run(cv, prog2, ONE_TEST, 4000);
    assert_contains(r.detail, "0/1 tests passed; test 1: crashed: OSError: [Errno 101] Network is "
                              "unreachable");
    /* nothing ever reached the listener */
    int s = accept(ls, NULL, NULL);
    assert_int_equal(s, -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    codev_destroy(cv);
    close(ls);
}

static void test_filesystem(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip(); /* the sandbox keeps the service's uid: it can write where the service can */
    /* what the sandbox does NOT isolate: world-readable files outside its directory can be
     * read; what the uid switch adds: others' private files cannot, nor can files be made in
     * directories the sandbox does not own */
    char dir[] = "/tmp/cohort-test-code-fs-XXXXXX", path[128];
    assert_non_null(mkdtemp(dir));
    chmod(dir, 0755);
    snprintf(path, sizeof path, "%s/public", dir);
    FILE *f = fopen(path, "w");
    fputs("hello\n", f);
    fclose(f);
    chmod(path, 0644);
    snprintf(path, sizeof path, "%s/private", dir);
    f = fopen(path, "w");
    fputs("secret\n", f);
    fclose(f);
    chmod(path, 0600);
    char prog[1024];
    snprintf(prog, sizeof prog,
             "D = '%s'\nprint(open(D + '/public').read().strip())\n"
             "try:\n    open(D + '/private').read()\n    print('private read')\n"
             "except PermissionError:\n    print('private denied')\n"
             "try:\n    open(D + '/new', 'w').write('x')\n    print('write ok')\n"
             "except PermissionError:\n    print('write denied')\n"
             "try:\n    open(D + '/public', 'a').write('x')\n    print('append ok')\n"
             "except PermissionError:\n    print('append denied')\n"
             "print(len(open('/etc/passwd').read()) > 0)\n",
             dir);
    codev_config c = small_config();
    codev *cv = make(&c);
    codev_result r =
        run(cv, prog,
            "{\"tests\": [{\"stdout\": \"hello\\nprivate denied\\nwrite denied\\nappend "
            "denied\\nTrue\"}]}",
            4000);
    assert_string_equal(r.detail, "1/1 tests passed");
    codev_destroy(cv);
    snprintf(path, sizeof path, "%s/public", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/private", dir);
    unlink(path);
    assert_int_equal(rmdir(dir), 0); /* nothing else was made there */
}

/* A sandbox that cannot be set up is an error of the item (COH_EIO), not a score: here an
 * interpreter that root may run but the sandbox's uid may not. */
static void test_setup_failure(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char exe[200];
    snprintf(exe, sizeof exe, "%.150s/rootonly-python", g_tmp);
    FILE *f = fopen(exe, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\necho hi\n", f);
    fclose(f);
    chmod(exe, 0700);
    codev_config c = small_config();
    snprintf(c.python, sizeof c.python, "%s", exe);
    codev *cv = make(&c);
    codev_result r;
    coh_err err;
    assert_int_equal(codev_verify(cv, "print('ok')", ONE_TEST, 3000, &r, &err), COH_EIO);
    assert_contains(err.msg, "code sandbox: cannot execute the interpreter");
    assert_int_equal(r.total, 0);
    codev_destroy(cv);
    unlink(exe);
    assert_int_equal(tmp_entries(), 0);
}

/* --------------------------------------------------------------------------------------------- */

typedef struct job {
    codev *cv;
    const char *program;
    int timeout_ms;
    int rc;
    codev_result r;
    double start, end;
    coh_err err;
} job;

static void *job_main(void *p)
{
    job *j = p;
    j->start = now_ms();
    j->rc = codev_verify(j->cv, j->program, ONE_TEST, j->timeout_ms, &j->r, &j->err);
    j->end = now_ms();
    return NULL;
}

static void test_concurrency(void **state)
{
    (void)state;
    codev_config c = small_config();
    c.max_sandboxes = 2;
    enum { N = 4 };
    job jobs[N];
    pthread_t th[N];
    memset(jobs, 0, sizeof jobs);
    double t0 = now_ms();
    for (int i = 0; i < N; i++) {
        jobs[i].cv = make(&c);
        jobs[i].program = "import time\ntime.sleep(0.4)\nprint('ok')";
        jobs[i].timeout_ms = 4000;
        assert_int_equal(pthread_create(&th[i], NULL, job_main, &jobs[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    double total = now_ms() - t0;
    for (int i = 0; i < N; i++) {
        if (jobs[i].rc != COH_OK)
            fail_msg("job %d: %s", i, jobs[i].err.msg);
        assert_string_equal(jobs[i].r.detail, "1/1 tests passed");
        assert_true(jobs[i].end - jobs[i].start < jobs[i].timeout_ms);
        codev_destroy(jobs[i].cv);
    }
    /* two at a time: two rounds of 0.4 s, not one (4 at once) and not four (one at a time) */
    if (total < 800 || total > 1600 + 1000)
        fail_msg("4 items of 0.4 s on 2 sandboxes took %.0f ms", total);

    /* a full pool: an item whose deadline passes while it waits gets COH_EFULL in time */
    c.max_sandboxes = 1;
    job slow = {.program = "import time\ntime.sleep(0.8)\nprint('ok')", .timeout_ms = 4000};
    slow.cv = make(&c);
    pthread_t st;
    assert_int_equal(pthread_create(&st, NULL, job_main, &slow), 0);
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
    codev *cv = make(&c);
    codev_result r;
    coh_err err;
    double w0 = now_ms();
    assert_int_equal(codev_verify(cv, "print('ok')", ONE_TEST, 300, &r, &err), COH_EFULL);
    double waited = now_ms() - w0;
    assert_true(waited >= 250 && waited < 600);
    assert_contains(err.msg, "no code sandbox was free");
    pthread_join(st, NULL);
    assert_int_equal(slow.rc, COH_OK);
    assert_string_equal(slow.r.detail, "1/1 tests passed");
    /* and the slot is free again */
    r = run(cv, "print('ok')", ONE_TEST, 3000);
    assert_string_equal(r.detail, "1/1 tests passed");
    codev_destroy(slow.cv);
    codev_destroy(cv);
}

/* --------------------------------------------------------------------------------------------- */

static void test_refuse_unsandboxed(void **state)
{
    (void)state;
    codev_config c = small_config();
    c.namespaces = 0;
    codev *cv = NULL;
    coh_err err;
    assert_int_equal(codev_create(&c, &cv, &err), COH_EUNSUPPORTED);
    assert_null(cv);
    assert_contains(err.msg, "\"unsandboxed\": true");
    /* told to: the limits and the private directory still hold, the network does not */
    c.unsandboxed = 1;
    cv = make(&c);
    assert_int_equal(codev_sandboxed(cv), 0);
    codev_result r = run(cv, "print(input())",
                         "{\"tests\": [{\"stdin\": \"hi\", \"stdout\": \"hi\"}]}", 3000);
    assert_string_equal(r.detail, "1/1 tests passed");
    c.test_timeout_ms = 300;
    codev_destroy(cv);
    cv = make(&c);
    r = run(cv, "import os\nos.setsid()\nwhile True:\n    pass", ONE_TEST, 3000);
    assert_string_equal(r.detail, "0/1 tests passed; test 1: timeout after 300 ms");
    c.test_timeout_ms = 2000;
    codev_destroy(cv);
    cv = make(&c);
    r = run(cv, "x = bytearray(1 << 33)", ONE_TEST, 3000);
    assert_contains(r.detail, "memory limit");
    codev_destroy(cv);
}

/* --------------------------------------------------------------------------------------------- */

static void test_scorer_routing(void **state)
{
    (void)state;
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"format_weight\": 0.5, \"code\": {\"timeout_ms\": 3000, \"test_timeout_ms\": 500, "
             "\"memory_mb\": 200, \"max_sandboxes\": 2, \"uid_base\": %d, \"tmp_dir\": \"%s\"}}",
             g_uid_base, g_tmp);
    scorer *s = NULL;
    coh_err err;
    if (scorer_create(cfg, NULL, NULL, &s, &err) != COH_OK)
        fail_msg("scorer_create: %s", err.msg);
    scorer_item it = {.task = "code", .prompt = "Add two numbers.", .answer = "",
                      .completion =
                          "```python\na, b = map(int, input().split())\nprint(a + b)\n```",
                      .metadata_json = ADD_TESTS};
    scorer_result r;
    assert_int_equal(scorer_score(s, &it, &r, &err), COH_OK);
    assert_int_equal(r.status, SCORE_OK);
    assert_string_equal(r.detail, "2/2 tests passed");
    assert_int_equal(r.n_components, 2);
    assert_string_equal(r.comp[0].name, "correct");
    assert_true(r.comp[0].value == 1.0);
    assert_string_equal(r.comp[1].name, "format");
    assert_true(r.comp[1].value == 1.0);
    assert_true(r.reward == 1.5);
    /* a wrong program is a scored item (reward from the fraction), not a failure */
    it.completion = "print(6)";
    assert_int_equal(scorer_score(s, &it, &r, &err), COH_OK);
    assert_int_equal(r.status, SCORE_OK);
    assert_string_equal(r.detail, "0/2 tests passed; test 1: wrong output (expected '3', got '6')");
    assert_true(r.reward == 0.0);
    /* an infinite loop gets its timeout as the reason, within the deadline */
    it.completion = "while True: pass";
    double t0 = now_ms();
    assert_int_equal(scorer_score(s, &it, &r, &err), COH_OK);
    assert_true(now_ms() - t0 < 2500);
    assert_string_equal(r.detail, "0/2 tests passed; test 1: timeout after 500 ms");
    /* an item without tests is FAILED with the reason */
    it.metadata_json = "";
    assert_int_equal(scorer_score(s, &it, &r, &err), COH_OK);
    assert_int_equal(r.status, SCORE_FAILED);
    assert_contains(r.detail, "task code needs metadata");
    assert_int_equal(r.n_components, 0);
    scorer_destroy(s);

    /* no "code" section: the defaults, made on first use */
    assert_int_equal(scorer_create(NULL, NULL, NULL, &s, &err), COH_OK);
    it.completion = "print('ok')";
    it.metadata_json = ONE_TEST;
    assert_int_equal(scorer_score(s, &it, &r, &err), COH_OK);
    assert_int_equal(r.status, SCORE_OK);
    assert_string_equal(r.detail, "1/1 tests passed");
    scorer_destroy(s);

    /* a bad "code" section, or no sandbox and not allowed without, stops the service */
    assert_int_not_equal(scorer_create("{\"code\": {\"bogus\": 1}}", NULL, NULL, &s, &err), COH_OK);
    assert_null(s);
    assert_contains(err.msg, "code.bogus");
    assert_int_equal(scorer_create("{\"code\": {\"namespaces\": false}}", NULL, NULL, &s, &err),
                     COH_EUNSUPPORTED);
    assert_null(s);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/cohort-test-code-XXXXXX");
    if (!mkdtemp(g_tmp))
        return -1;
    chmod(g_tmp, 0755);
    /* a uid range of this run's own, so that parallel runs do not share process counts */
    g_uid_base = 200000 + (int)(getpid() % 10000) * CODEV_SANDBOXES_MAX;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return rmdir(g_tmp); /* fails when a private directory was left behind */
}

/* 1 when this machine lets a process make the namespaces the sandbox needs (a container
 * without CAP_SYS_ADMIN does not): probed in a child, as the verifier makes them. */
static int namespaces_allowed(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        int f = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC;
        if (geteuid() != 0)
            f |= CLONE_NEWUSER;
        _exit(unshare(f) == 0 ? 0 : 1);
    }
    int st = 0;
    return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

int main(void)
{
    if (access("/usr/bin/python3", X_OK) != 0) {
        fprintf(stderr, "test_code: no /usr/bin/python3, skipped\n");
        return 77;
    }
    if (!namespaces_allowed()) {
        fprintf(stderr, "test_code: this machine does not allow new network/PID namespaces "
                        "(the code verifier's sandbox), skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_extract),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_bad_metadata),
        cmocka_unit_test(test_correct),
        cmocka_unit_test(test_wrong_output),
        cmocka_unit_test(test_asserts),
        cmocka_unit_test(test_no_program),
        cmocka_unit_test(test_crash),
        cmocka_unit_test(test_infinite_loop),
        cmocka_unit_test(test_fork_bomb),
        cmocka_unit_test(test_memory_hog),
        cmocka_unit_test(test_file_size),
        cmocka_unit_test(test_output_limit),
        cmocka_unit_test(test_network),
        cmocka_unit_test(test_filesystem),
        cmocka_unit_test(test_setup_failure),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_refuse_unsandboxed),
        cmocka_unit_test(test_scorer_routing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
