/* codeverify.c - the `code` verifier: Python programs run in a sandbox (see codeverify.h).
 *
 * One program run:
 *   parent (the caller's thread)          init (PID 1 of the new       program (PID 2)
 *                                         namespaces)
 *   pipes: stdout, stderr, fd 3 (assert
 *   results), status (fd 4 in the child)
 *   clone(NEWNET|NEWPID|NEWIPC        -->  new process group, fds 0-4,
 *         [|NEWUSER when not root])        close the rest, chdir,
 *                                          rlimits, default signals,
 *                                          clone                  -->  uid switch, no new
 *                                          reap every child until         privileges, parent-
 *                                          the program ends; write        death signal, execve
 *                                          its status on fd 4, exit       (python -I main.py)
 *   poll the pipes and the init's pidfd
 *   until the init has exited and the pipes are closed, or the wall clock ends or stdout
 *   overflows (then SIGKILL to the init and its process group: the namespace dies with its
 *   init); reap the init, read the status report, classify.
 *
 * Why a raw clone system call and not fork(): the init must be PID 1 of a new PID namespace
 * so that the whole process tree dies with it, which unshare(CLONE_NEWPID) cannot do for the
 * calling process, and glibc's clone() wants a separate stack. The raw call with no stack
 * behaves like fork() without the atfork handlers (the caller is one thread of a
 * multi-threaded service), which is why init and program touch nothing but system calls
 * before execve: no malloc, no stdio, and setuid/setgid as raw system calls, because glibc's
 * wrappers would try to signal the parent's other threads.
 */
#define _GNU_SOURCE /* clone flags, pipe2, sigabbrev_np */
#include "codeverify.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STDERR_KEEP 4096         /* the tail of stderr kept for the reason */
#define RESULTS_MAX (64 << 10)   /* assert results (fd 3) kept per run */

/* ---- time, pool ---------------------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* The process-wide pool of sandbox slots. A slot's index picks the sandbox's uid. */
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cv;
static int pool_cap = 2;
static unsigned char pool_busy[CODEV_SANDBOXES_MAX];

static void pool_init(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&pool_cv, &a);
    pthread_condattr_destroy(&a);
}

static void pool_set_cap(int cap)
{
    pthread_once(&pool_once, pool_init);
    pthread_mutex_lock(&pool_mu);
    pool_cap = cap;
    pthread_cond_broadcast(&pool_cv);
    pthread_mutex_unlock(&pool_mu);
}

/* A free slot, or -1 when none frees up before deadline (CLOCK_MONOTONIC ms). */
static int pool_take(double deadline)
{
    pthread_once(&pool_once, pool_init);
    pthread_mutex_lock(&pool_mu);
    for (;;) {
        for (int i = 0; i < pool_cap; i++)
            if (!pool_busy[i]) {
                pool_busy[i] = 1;
                pthread_mutex_unlock(&pool_mu);
                return i;
            }
        double left = deadline - now_ms();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        long long ns = (long long)ts.tv_nsec + (long long)(left * 1e6);
        ts.tv_sec += (time_t)(ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
        pthread_cond_timedwait(&pool_cv, &pool_mu, &ts);
    }
    pthread_mutex_unlock(&pool_mu);
    return -1;
}

static void pool_give(int slot)
{
    pthread_mutex_lock(&pool_mu);
    pool_busy[slot] = 0;
    pthread_cond_broadcast(&pool_cv);
    pthread_mutex_unlock(&pool_mu);
}

/* ---- configuration ------------------------------------------------------------------------- */

codev_config codev_config_default(void)
{
    codev_config c;
    memset(&c, 0, sizeof c);
    c.timeout_ms = 10000;
    c.test_timeout_ms = 2000;
    c.cpu_s = 2;
    c.memory_mb = 512;
    c.file_mb = 16;
    c.processes = 32;
    c.output_kb = 64;
    c.max_sandboxes = 2;
    c.uid_base = 61000;
    c.namespaces = 1;
    c.unsandboxed = 0;
    snprintf(c.python, sizeof c.python, "/usr/bin/python3");
    snprintf(c.tmp_dir, sizeof c.tmp_dir, "/tmp");
    return c;
}

typedef struct int_key {
    const char *name;
    size_t off;
    int lo, hi;
} int_key;

static const int_key int_keys[] = {
    {"timeout_ms", offsetof(codev_config, timeout_ms), 1, 3600000},
    {"test_timeout_ms", offsetof(codev_config, test_timeout_ms), 1, 3600000},
    {"cpu_s", offsetof(codev_config, cpu_s), 1, 3600},
    {"memory_mb", offsetof(codev_config, memory_mb), 16, 1048576},
    {"file_mb", offsetof(codev_config, file_mb), 0, 1048576},
    {"processes", offsetof(codev_config, processes), 1, 4096},
    {"output_kb", offsetof(codev_config, output_kb), 1, 65536},
    {"max_sandboxes", offsetof(codev_config, max_sandboxes), 1, CODEV_SANDBOXES_MAX},
    {"uid_base", offsetof(codev_config, uid_base), 1, INT_MAX - CODEV_SANDBOXES_MAX},
};

static int parse_code_key(const cJSON *it, codev_config *c, coh_err *err)
{
    const char *k = it->string;
    for (size_t i = 0; i < sizeof int_keys / sizeof int_keys[0]; i++)
        if (strcmp(k, int_keys[i].name) == 0) {
            if (!cJSON_IsNumber(it) || it->valuedouble != (double)(long long)it->valuedouble ||
                it->valuedouble < int_keys[i].lo || it->valuedouble > int_keys[i].hi)
                return coh_fail(err, COH_EINVAL,
                                "reward config: code.%s must be an integer in [%d, %d]", k,
                                int_keys[i].lo, int_keys[i].hi);
            *(int *)((char *)c + int_keys[i].off) = (int)it->valuedouble;
            return COH_OK;
        }
    if (strcmp(k, "namespaces") == 0 || strcmp(k, "unsandboxed") == 0) {
        if (!cJSON_IsBool(it))
            return coh_fail(err, COH_EINVAL, "reward config: code.%s must be true or false", k);
        *(k[0] == 'n' ? &c->namespaces : &c->unsandboxed) = cJSON_IsTrue(it);
        return COH_OK;
    }
    if (strcmp(k, "python") == 0 || strcmp(k, "tmp_dir") == 0) {
        char *dst = k[0] == 'p' ? c->python : c->tmp_dir;
        if (!cJSON_IsString(it) || it->valuestring[0] != '/' ||
            strlen(it->valuestring) >= CODEV_PATH_MAX - 32)
            return coh_fail(err, COH_EINVAL,
                            "reward config: code.%s must be an absolute path (at most %d "
                            "characters)",
                            k, CODEV_PATH_MAX - 33);
        snprintf(dst, CODEV_PATH_MAX, "%s", it->valuestring);
        return COH_OK;
    }
    return coh_fail(err, COH_EINVAL,
                    "reward config: code.%.64s is not a setting (known: timeout_ms, "
                    "test_timeout_ms, cpu_s, memory_mb, file_mb, processes, output_kb, "
                    "max_sandboxes, uid_base, python, tmp_dir, namespaces, unsandboxed)",
                    k);
}

int codev_config_parse(const char *config_json, codev_config *cfg, int *present, coh_err *err)
{
    *cfg = codev_config_default();
    if (present)
        *present = 0;
    if (!config_json)
        return COH_OK;
    cJSON *root = cJSON_Parse(config_json);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return coh_fail(err, COH_EFORMAT, "reward config is not a JSON object");
    }
    int rc = COH_OK;
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(root, "code");
    if (code) {
        if (present)
            *present = 1;
        if (!cJSON_IsObject(code))
            rc = coh_fail(err, COH_EINVAL, "reward config: \"code\" must be an object");
        const cJSON *it;
        cJSON_ArrayForEach(it, code)
        {
            if (rc)
                break;
            rc = parse_code_key(it, cfg, err);
        }
    }
    cJSON_Delete(root);
    if (rc)
        *cfg = codev_config_default();
    return rc;
}

/* ---- the child ----------------------------------------------------------------------------- */

typedef struct child_args {
    int fd_in, fd_out, fd_err, fd_res; /* all >= 5; fd_res -1 when there is none */
    int fd_status;                     /* the init's report of the program's end (>= 5) */
    int max_fd;
    const char *dir, *python;
    char *const *argv, *const *envp;
    int switch_uid;
    unsigned uid;
    struct rlimit cpu, as, fsize, nproc;
} child_args;

/* What the sandbox writes on its status pipe (fd 4, closed at exec, so the program never
 * holds it): the first record read is the one that counts. */
typedef struct init_report {
    int kind;            /* REPORT_ENDED or REPORT_SETUP_FAILED */
    int status;          /* the program's wait status */
    long cpu_us;         /* its CPU time (user + system) */
    char msg[64];        /* what failed */
} init_report;

enum { REPORT_ENDED = 1, REPORT_SETUP_FAILED = 2 };

static void child_fail(const char *what)
{
    init_report r;
    memset(&r, 0, sizeof r);
    r.kind = REPORT_SETUP_FAILED;
    for (size_t i = 0; what[i] && i + 1 < sizeof r.msg; i++)
        r.msg[i] = what[i];
    ssize_t w = write(4, &r, sizeof r);
    (void)w;
    _exit(127);
}

static pid_t spawn_raw(int flags);

/* The program: limits, uid, exec. */
static __attribute__((noreturn)) void program_main(const child_args *a)
{
    if (a->switch_uid) {
        if (syscall(SYS_setgroups, 0, NULL) != 0 ||
            syscall(SYS_setresgid, a->uid, a->uid, a->uid) != 0 ||
            syscall(SYS_setresuid, a->uid, a->uid, a->uid) != 0)
            child_fail("cannot switch to the sandbox uid");
    }
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0); /* after the uid switch, which clears it */
    execve(a->python, a->argv, a->envp);
    child_fail("cannot execute the interpreter");
    _exit(127);
}

/* The sandbox's first process (PID 1 of its namespace): sets up what the program inherits,
 * starts it, reaps every orphan, and reports the program's end on the status pipe. The
 * program is not PID 1 itself because PID 1 ignores the signals it has no handler for, even
 * those it sends itself (os.kill(os.getpid(), ...), abort()). When the init exits, the
 * kernel kills everything left in the namespace. */
static __attribute__((noreturn)) void child_main(const child_args *a)
{
    setpgid(0, 0);
    if (dup3(a->fd_status, 4, O_CLOEXEC) < 0)
        _exit(127);
    if (dup2(a->fd_out, 1) < 0 || dup2(a->fd_err, 2) < 0 || dup2(a->fd_in, 0) < 0)
        child_fail("dup2");
    if (a->fd_res >= 0) {
        if (dup2(a->fd_res, 3) < 0)
            child_fail("dup2");
    } else {
        close(3);
    }
    if (syscall(SYS_close_range, 5U, ~0U, 0U) != 0)
        for (int fd = 5; fd <= a->max_fd; fd++)
            close(fd);
    if (chdir(a->dir) != 0)
        child_fail("cannot enter the private directory");
    static const struct rlimit zero = {0, 0}, files = {64, 64};
    if (setrlimit(RLIMIT_CPU, &a->cpu) || setrlimit(RLIMIT_AS, &a->as) ||
        setrlimit(RLIMIT_FSIZE, &a->fsize) || setrlimit(RLIMIT_NPROC, &a->nproc) ||
        setrlimit(RLIMIT_CORE, &zero) || setrlimit(RLIMIT_NOFILE, &files))
        child_fail("setrlimit failed");
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            sigaction(s, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    pid_t prog = spawn_raw(0);
    if (prog < 0)
        child_fail("cannot start the program");
    if (prog == 0)
        program_main(a);
    for (int fd = 0; fd <= 3; fd++)
        close(fd); /* only the program holds the pipes: they end when it does */
    for (;;) {
        int st = 0;
        struct rusage ru;
        pid_t w = wait4(-1, &st, 0, &ru);
        if (w == prog) {
            init_report r;
            memset(&r, 0, sizeof r);
            r.kind = REPORT_ENDED;
            r.status = st;
            r.cpu_us = (long)ru.ru_utime.tv_sec * 1000000L + (long)ru.ru_utime.tv_usec +
                       (long)ru.ru_stime.tv_sec * 1000000L + (long)ru.ru_stime.tv_usec;
            ssize_t wr = write(4, &r, sizeof r);
            (void)wr;
            _exit(0);
        }
        if (w < 0 && errno != EINTR)
            _exit(126);
    }
}

static int ns_flags(void)
{
    int f = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC;
    if (geteuid() != 0)
        f |= CLONE_NEWUSER;
    return f;
}

/* fork(), optionally into new namespaces (see the file comment). */
static pid_t spawn_raw(int flags)
{
    return (pid_t)syscall(SYS_clone, (unsigned long)flags | SIGCHLD, NULL, NULL, NULL, NULL);
}

static int reap(pid_t pid, int *status, struct rusage *ru)
{
    for (;;) {
        pid_t r = wait4(pid, status, 0, ru);
        if (r == pid)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

/* ---- the handle ---------------------------------------------------------------------------- */

typedef struct capbuf {
    char *p;
    size_t len, cap;
    int tail; /* keep the last cap bytes (else the first) */
    int over; /* more came than fits */
} capbuf;

struct codev {
    codev_config cfg;
    int use_ns, switch_uid;
    int max_fd;
    capbuf out, err, res;
};

/* Try the sandbox: a child in new namespaces that switches uid and exits. */
static int probe(const codev *cv, char *why, size_t n)
{
    pid_t pid = spawn_raw(cv->use_ns ? ns_flags() : 0);
    if (pid < 0) {
        snprintf(why, n, "cannot create network and PID namespaces (%s)", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        if (cv->switch_uid &&
            (syscall(SYS_setgroups, 0, NULL) != 0 ||
             syscall(SYS_setresgid, cv->cfg.uid_base, cv->cfg.uid_base, cv->cfg.uid_base) != 0 ||
             syscall(SYS_setresuid, cv->cfg.uid_base, cv->cfg.uid_base, cv->cfg.uid_base) != 0))
            _exit(3);
        _exit(0);
    }
    int st = 0;
    struct rusage ru;
    if (reap(pid, &st, &ru) != 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        snprintf(why, n, "cannot switch to uid %d in the sandbox", cv->cfg.uid_base);
        return -1;
    }
    return 0;
}

int codev_create(const codev_config *cfg, codev **out, coh_err *err)
{
    *out = NULL;
    codev_config c = cfg ? *cfg : codev_config_default();
    if (c.max_sandboxes < 1 || c.max_sandboxes > CODEV_SANDBOXES_MAX || c.timeout_ms < 1 ||
        c.test_timeout_ms < 1 || c.cpu_s < 1 || c.memory_mb < 16 || c.file_mb < 0 ||
        c.processes < 1 || c.output_kb < 1 || c.uid_base < 1 ||
        c.uid_base > INT_MAX - CODEV_SANDBOXES_MAX)
        return coh_fail(err, COH_EINVAL, "code verifier: a setting is out of range");
    struct stat sb;
    if (c.python[0] != '/' || stat(c.python, &sb) != 0 || !S_ISREG(sb.st_mode) ||
        access(c.python, X_OK) != 0)
        return coh_fail(err, COH_EINVAL,
                        "code verifier: the interpreter \"%.200s\" is not an executable "
                        "(set code.python)",
                        c.python);
    if (stat(c.tmp_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return coh_fail(err, COH_EINVAL,
                        "code verifier: tmp_dir \"%.200s\" is not a directory", c.tmp_dir);
    codev *cv = calloc(1, sizeof *cv);
    if (!cv)
        return coh_fail(err, COH_ENOMEM, "out of memory for the code verifier");
    cv->cfg = c;
    cv->use_ns = c.namespaces;
    cv->switch_uid = geteuid() == 0;
    struct rlimit nf;
    cv->max_fd = getrlimit(RLIMIT_NOFILE, &nf) == 0 && nf.rlim_cur < 65536 ? (int)nf.rlim_cur
                                                                            : 65536;
    char why[200] = "";
    if (!c.namespaces)
        snprintf(why, sizeof why, "\"namespaces\" is false");
    else if (probe(cv, why, sizeof why) != 0)
        cv->use_ns = 0;
    if (!cv->use_ns && !c.unsandboxed) {
        free(cv);
        return coh_fail(err, COH_EUNSUPPORTED,
                        "code verifier: no sandbox: %s; programs would run with the host's "
                        "network. Run cohort-reward as root (or with unprivileged user "
                        "namespaces), or set \"code\": {\"unsandboxed\": true} to accept that",
                        why);
    }
    if (!cv->use_ns && cv->switch_uid && probe(cv, why, sizeof why) != 0) {
        free(cv);
        return coh_fail(err, COH_EUNSUPPORTED, "code verifier: %s", why);
    }
    pool_set_cap(c.max_sandboxes);
    *out = cv;
    return COH_OK;
}

int codev_create_from_config(const char *config_json, codev **out, coh_err *err)
{
    *out = NULL;
    codev_config c;
    int present = 0;
    int rc = codev_config_parse(config_json, &c, &present, err);
    if (rc || !present)
        return rc;
    return codev_create(&c, out, err);
}

void codev_destroy(codev *cv)
{
    if (!cv)
        return;
    free(cv->out.p);
    free(cv->err.p);
    free(cv->res.p);
    free(cv);
}

int codev_sandboxed(const codev *cv) { return cv->use_ns; }

/* ---- buffers ------------------------------------------------------------------------------- */

static int cap_init(capbuf *b, size_t cap, int tail)
{
    if (b->cap < cap) {
        char *p = realloc(b->p, cap + 1);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    b->len = 0;
    b->over = 0;
    b->tail = tail;
    b->p[0] = 0;
    return 0;
}

static void cap_add(capbuf *b, const char *s, size_t n)
{
    if (!b->tail) {
        size_t room = b->cap - b->len;
        if (n > room) {
            b->over = 1;
            n = room;
        }
    } else if (n >= b->cap) {
        s += n - b->cap;
        n = b->cap;
        b->len = 0;
        b->over = 1;
    } else if (b->len + n > b->cap) {
        size_t drop = b->len + n - b->cap;
        memmove(b->p, b->p + drop, b->len - drop);
        b->len -= drop;
        b->over = 1;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->len + n + 1)
            c *= 2;
        char *p = realloc(b->p, c);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = c;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* s as a Python bytes literal: b'...' with every byte outside printable ASCII, the quote and
 * the backslash written as \xNN. */
static void sb_pybytes(sbuf *b, const char *s)
{
    sb_str(b, "b'");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char t[8];
        if (*p >= 0x20 && *p < 0x7f && *p != '\'' && *p != '\\') {
            t[0] = (char)*p;
            sb_add(b, t, 1);
        } else {
            snprintf(t, sizeof t, "\\x%02x", *p);
            sb_add(b, t, 4);
        }
    }
    sb_str(b, "'");
}

/* ---- program extraction -------------------------------------------------------------------- */

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

/* A fence line: up to 3 spaces, then ```. The info string is returned in info, info_len. */
static int fence_at(const char *l, size_t n, const char **info, size_t *info_len)
{
    size_t i = 0;
    while (i < n && i < 3 && l[i] == ' ')
        i++;
    if (n - i < 3 || memcmp(l + i, "```", 3) != 0)
        return 0;
    i += 3;
    while (i < n && l[i] == '`')
        i++;
    while (i < n && is_blank(l[i]))
        i++;
    size_t e = n;
    while (e > i && is_blank(l[e - 1]))
        e--;
    *info = l + i;
    *info_len = e - i;
    return 1;
}

static int info_is_python(const char *s, size_t n)
{
    size_t w = 0;
    while (w < n && !is_blank(s[w]) && s[w] != '{')
        w++;
    return (w == 6 && strncasecmp(s, "python", 6) == 0) ||
           (w == 2 && strncasecmp(s, "py", 2) == 0) ||
           (w == 7 && strncasecmp(s, "python3", 7) == 0);
}

int codev_extract(const char *c, size_t *start, size_t *len)
{
    size_t n = c ? strlen(c) : 0;
    /* best[0]: last python block, best[1]: last untagged block; closed: its fence closed */
    size_t bs[2] = {0, 0}, bl[2] = {0, 0};
    int found[2] = {0, 0}, closed[2] = {0, 0};
    int in = 0, kind = -1; /* kind: 0 python, 1 untagged, 2 other language */
    size_t body = 0;
    for (size_t pos = 0; pos < n;) {
        const char *nl = memchr(c + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - c) : n, next = nl ? end + 1 : n;
        const char *info;
        size_t il;
        if (fence_at(c + pos, end - pos, &info, &il)) {
            if (!in) {
                in = 1;
                kind = il == 0 ? 1 : info_is_python(info, il) ? 0 : 2;
                body = next;
            } else if (il == 0) {
                if (kind < 2) {
                    bs[kind] = body;
                    bl[kind] = pos - body;
                    found[kind] = closed[kind] = 1;
                }
                in = 0;
            }
        }
        pos = next;
    }
    if (in && kind < 2) { /* a final block that never closed: up to the end */
        bs[kind] = body;
        bl[kind] = n - body;
        found[kind] = 1;
        closed[kind] = 0;
    }
    for (int k = 0; k < 2; k++)
        if (found[k]) {
            *start = bs[k];
            *len = bl[k];
            return closed[k];
        }
    *start = 0;
    *len = n;
    return 0;
}

/* ---- reasons -------------------------------------------------------------------------------- */

/* Printable ASCII of s[0..n), at most max characters, "..." when cut. */
static void snippet(const char *s, size_t n, size_t max, char *out, size_t outsz)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < outsz; i++) {
        if (i == max) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (ch == '\t') {
            out[o++] = '\\';
            out[o++] = 't';
        } else {
            out[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
        }
    }
    out[o] = 0;
}

/* Trailing white space removed from every line, trailing empty lines dropped. */
static char *normalize(const char *s, size_t n, size_t *out_len)
{
    char *o = malloc(n + 1);
    if (!o)
        return NULL;
    size_t len = 0;
    for (size_t pos = 0; pos < n;) {
        const char *nl = memchr(s + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - s) : n, e = end;
        while (e > pos && is_blank(s[e - 1]))
            e--;
        memcpy(o + len, s + pos, e - pos);
        len += e - pos;
        if (nl)
            o[len++] = '\n';
        pos = nl ? end + 1 : n;
    }
    while (len > 0 && o[len - 1] == '\n')
        len--;
    o[len] = 0;
    *out_len = len;
    return o;
}

/* 1 when got matches want (see normalize); else 0 with the reason in why. -1: no memory. */
static int compare_output(const char *got, size_t gn, const char *want, char *why, size_t n)
{
    size_t a_len, b_len;
    char *a = normalize(got, gn, &a_len), *b = normalize(want, strlen(want), &b_len);
    int r = -1;
    if (a && b) {
        r = a_len == b_len && memcmp(a, b, a_len) == 0;
        if (!r) {
            const char *pa = a, *pb = b;
            int line = 1;
            for (;;) {
                const char *ea = strchr(pa, '\n'), *eb = strchr(pb, '\n');
                size_t la = ea ? (size_t)(ea - pa) : strlen(pa);
                size_t lb = eb ? (size_t)(eb - pb) : strlen(pb);
                if (la != lb || memcmp(pa, pb, la) != 0 || !ea || !eb)
                    break;
                pa = ea + 1;
                pb = eb + 1;
                line++;
            }
            char se[64], sg[64];
            const char *eb = strchr(pb, '\n'), *ea = strchr(pa, '\n');
            snippet(pb, eb ? (size_t)(eb - pb) : strlen(pb), 40, se, sizeof se);
            snippet(pa, ea ? (size_t)(ea - pa) : strlen(pa), 40, sg, sizeof sg);
            if (line == 1)
                snprintf(why, n, "wrong output (expected '%s', got '%s')", se, sg);
            else
                snprintf(why, n, "wrong output at line %d (expected '%s', got '%s')", line, se,
                         sg);
        }
    }
    free(a);
    free(b);
    return r;
}

/* The last non-empty line of text, printable. */
static void last_line(const char *t, size_t n, char *out, size_t outsz)
{
    size_t e = n;
    while (e > 0 && (t[e - 1] == '\n' || is_blank(t[e - 1])))
        e--;
    size_t s = e;
    while (s > 0 && t[s - 1] != '\n')
        s--;
    snippet(t + s, e - s, 120, out, outsz);
}

typedef struct run_res {
    int timed_out, out_overflow;
    int status; /* from wait4 */
    double cpu_s;
    int wall_ms; /* the wall clock it had */
} run_res;

/* 1 when the run ended with status 0; else 0 with the reason. */
static int classify(const codev *cv, const run_res *r, char *why, size_t n)
{
    const char *e = cv->err.p;
    if (r->timed_out) {
        snprintf(why, n, "timeout after %d ms", r->wall_ms);
        return 0;
    }
    if (r->out_overflow) {
        snprintf(why, n, "output limit (more than %zu KiB)", cv->out.cap >> 10);
        return 0;
    }
    if (WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0)
        return 1;
    int sig = WIFSIGNALED(r->status) ? WTERMSIG(r->status) : 0;
    if (strstr(e, "MemoryError") || strstr(e, "Cannot allocate memory") ||
        strstr(e, "out of memory")) {
        snprintf(why, n, "memory limit (%d MB)", cv->cfg.memory_mb);
        return 0;
    }
    if (sig == SIGXFSZ || strstr(e, "File too large")) {
        snprintf(why, n, "file size limit (%d MB)", cv->cfg.file_mb);
        return 0;
    }
    if (sig == SIGXCPU || (sig == SIGKILL && r->cpu_s >= cv->cfg.cpu_s - 0.05)) {
        snprintf(why, n, "timeout: CPU time limit of %d s", cv->cfg.cpu_s);
        return 0;
    }
    char line[160];
    last_line(e, strlen(e), line, sizeof line);
    if (sig) {
        const char *name = sigabbrev_np(sig);
        snprintf(why, n, "killed by signal %d (SIG%s)%s%.120s", sig, name ? name : "?",
                 line[0] ? ": " : "", line);
    } else if (line[0]) {
        snprintf(why, n, "crashed: %s", line);
    } else {
        snprintf(why, n, "exit status %d", WEXITSTATUS(r->status));
    }
    return 0;
}

/* ---- one program run ------------------------------------------------------------------------ */

/* fd moved to >= 5 (so that dup2 onto 0..4 in the child never clobbers it), close-on-exec. */
static int fd_high(int fd)
{
    if (fd < 0 || fd >= 5)
        return fd;
    int h = fcntl(fd, F_DUPFD_CLOEXEC, 5);
    close(fd);
    return h;
}

static int make_pipe(int p[2])
{
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    p[0] = fd_high(p[0]);
    p[1] = fd_high(p[1]);
    if (p[0] < 0 || p[1] < 0)
        return -1;
    return fcntl(p[0], F_SETFL, O_NONBLOCK);
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static int child_exited(pid_t pid)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid;
}

/* Without a PID namespace, processes the program put in a session of their own outlive it:
 * as root, a process with the sandbox's uid kills every process of that uid. */
static void sweep_uid(const codev *cv, unsigned uid)
{
    if (cv->use_ns || !cv->switch_uid)
        return;
    pid_t pid = spawn_raw(0);
    if (pid == 0) {
        if (syscall(SYS_setresgid, uid, uid, uid) == 0 &&
            syscall(SYS_setresuid, uid, uid, uid) == 0)
            kill(-1, SIGKILL);
        _exit(0);
    }
    int st;
    struct rusage ru;
    if (pid > 0)
        reap(pid, &st, &ru);
}

/* Kill the init (and with it the namespace) and its process group; reap the init. */
static void kill_init(const codev *cv, pid_t pid, unsigned uid, int *status)
{
    struct rusage ru;
    kill(pid, SIGKILL);
    killpg(pid, SIGKILL); /* the init is not reaped yet: its group id is still its own */
    reap(pid, status, &ru);
    sweep_uid(cv, uid);
}

/* Run `python -I main.py` in dir with stdin from fd_in (fd 3 collecting assert results when
 * want_res), for at most wall_ms. */
static int run_program(codev *cv, int slot, const char *dir, int fd_in, int want_res,
                       int wall_ms, run_res *rr, coh_err *err)
{
    memset(rr, 0, sizeof *rr);
    rr->wall_ms = wall_ms;
    cv->out.len = cv->err.len = cv->res.len = 0;
    cv->out.over = cv->err.over = cv->res.over = 0;
    cv->out.p[0] = cv->err.p[0] = cv->res.p[0] = 0;
    int po[2] = {-1, -1}, pe[2] = {-1, -1}, pr[2] = {-1, -1}, ps[2] = {-1, -1};
    if (make_pipe(po) || make_pipe(pe) || make_pipe(ps) || (want_res && make_pipe(pr))) {
        int e = errno;
        close_fd(&po[0]), close_fd(&po[1]), close_fd(&pe[0]), close_fd(&pe[1]);
        close_fd(&pr[0]), close_fd(&pr[1]), close_fd(&ps[0]), close_fd(&ps[1]);
        return coh_fail(err, COH_EIO, "code sandbox: pipe: %s", strerror(e));
    }
    char home[CODEV_PATH_MAX + 16], tmpd[CODEV_PATH_MAX + 16], path[] =
        "PATH=/usr/local/bin:/usr/bin:/bin", lang[] = "LANG=C.UTF-8", lcall[] = "LC_ALL=C.UTF-8";
    snprintf(home, sizeof home, "HOME=%s", dir);
    snprintf(tmpd, sizeof tmpd, "TMPDIR=%s", dir);
    char *envp[] = {path, home, tmpd, lang, lcall, NULL};
    char a1[] = "-I", a2[] = "main.py";
    char *argv[] = {cv->cfg.python, a1, a2, NULL};
    child_args a;
    memset(&a, 0, sizeof a);
    a.fd_in = fd_in;
    a.fd_out = po[1];
    a.fd_err = pe[1];
    a.fd_res = pr[1];
    a.fd_status = ps[1];
    a.max_fd = cv->max_fd;
    a.dir = dir;
    a.python = cv->cfg.python;
    a.argv = argv;
    a.envp = envp;
    a.switch_uid = cv->switch_uid;
    a.uid = (unsigned)(cv->cfg.uid_base + slot);
    a.cpu.rlim_cur = (rlim_t)cv->cfg.cpu_s;
    a.cpu.rlim_max = (rlim_t)cv->cfg.cpu_s + 1;
    a.as.rlim_cur = a.as.rlim_max = (rlim_t)cv->cfg.memory_mb << 20;
    a.fsize.rlim_cur = a.fsize.rlim_max = (rlim_t)cv->cfg.file_mb << 20;
    a.nproc.rlim_cur = a.nproc.rlim_max = (rlim_t)cv->cfg.processes;

    double end = now_ms() + wall_ms;
    pid_t pid = spawn_raw(cv->use_ns ? ns_flags() : 0);
    if (pid == 0)
        child_main(&a);
    int spawn_errno = errno;
    close_fd(&po[1]);
    close_fd(&pe[1]);
    close_fd(&pr[1]);
    close_fd(&ps[1]);
    int fds[3] = {po[0], pe[0], pr[0]};
    if (pid < 0) {
        for (int k = 0; k < 3; k++)
            close_fd(&fds[k]);
        close_fd(&ps[0]);
        return coh_fail(err, COH_EIO, "code sandbox: cannot start a process: %s",
                        strerror(spawn_errno));
    }
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    capbuf *bufs[3] = {&cv->out, &cv->err, &cv->res};
    int exited = 0, init_status = 0;
    for (;;) {
        if (!exited && child_exited(pid)) {
            /* the program ended: end whatever it left behind */
            kill_init(cv, pid, a.uid, &init_status);
            exited = 1;
        }
        int nopen = (fds[0] >= 0) + (fds[1] >= 0) + (fds[2] >= 0);
        if (exited && nopen == 0)
            break;
        double left = end - now_ms();
        if (left <= 0) {
            if (!exited) {
                rr->timed_out = 1;
                kill_init(cv, pid, a.uid, &init_status);
                exited = 1;
            }
            break;
        }
        struct pollfd pf[4];
        int idx[4], np = 0;
        for (int k = 0; k < 3; k++)
            if (fds[k] >= 0) {
                pf[np].fd = fds[k];
                pf[np].events = POLLIN;
                idx[np++] = k;
            }
        if (!exited && pidfd >= 0) {
            pf[np].fd = pidfd;
            pf[np].events = POLLIN;
            idx[np++] = -1;
        }
        int slice = (int)left + 1;
        if (!exited && pidfd < 0 && slice > 5)
            slice = 5; /* no pidfd: look for the exit every few ms */
        if (poll(pf, (nfds_t)np, slice) < 0 && errno != EINTR)
            slice = 0;
        for (int i = 0; i < np; i++) {
            int k = idx[i];
            if (k < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[8192];
            for (;;) {
                ssize_t got = read(fds[k], buf, sizeof buf);
                if (got > 0) {
                    cap_add(bufs[k], buf, (size_t)got);
                    if (bufs[k]->over && k == 0)
                        break;
                    continue;
                }
                if (got == 0 || (errno != EINTR && errno != EAGAIN))
                    close_fd(&fds[k]);
                if (got == 0 || errno != EINTR)
                    break;
            }
        }
        if (cv->out.over) {
            rr->out_overflow = 1;
            if (!exited) {
                kill_init(cv, pid, a.uid, &init_status);
                exited = 1;
            }
            break;
        }
    }
    for (int k = 0; k < 3; k++)
        close_fd(&fds[k]);
    close_fd(&pidfd);
    /* the report: the program's end, or what failed in the setup; none when we killed the
     * sandbox before the program ended (timeout, output limit) */
    init_report rep;
    memset(&rep, 0, sizeof rep);
    ssize_t got = read(ps[0], &rep, sizeof rep);
    close_fd(&ps[0]);
    rep.msg[sizeof rep.msg - 1] = 0;
    if (got == (ssize_t)sizeof rep && rep.kind == REPORT_SETUP_FAILED)
        return coh_fail(err, COH_EIO, "code sandbox: %s", rep.msg);
    if (got == (ssize_t)sizeof rep && rep.kind == REPORT_ENDED) {
        rr->status = rep.status;
        rr->cpu_s = (double)rep.cpu_us * 1e-6;
        return COH_OK;
    }
    rr->status = init_status;
    if (!rr->timed_out && !rr->out_overflow)
        return coh_fail(err, COH_EIO, "code sandbox: its first process ended without a report "
                        "(wait status %d)", init_status);
    return COH_OK;
}

/* ---- the private directory ----------------------------------------------------------------- */

static int chmod_dirs(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)f;
    if (flag == FTW_D || flag == FTW_DNR)
        chmod(p, (sb->st_mode & 07777) | S_IRWXU);
    return 0;
}

static int remove_entry(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    remove(p);
    return 0;
}

static void remove_tree(const char *dir)
{
    nftw(dir, chmod_dirs, 16, FTW_PHYS | FTW_MOUNT);
    nftw(dir, remove_entry, 16, FTW_PHYS | FTW_MOUNT | FTW_DEPTH);
}

static int write_file(const char *dir, const char *name, const char *data, size_t n)
{
    char path[CODEV_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    while (n > 0) {
        ssize_t w = write(fd, data, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            return -1;
        }
        data += w;
        n -= (size_t)w;
    }
    return close(fd);
}

/* The file as a read-only descriptor >= 4, the file itself unlinked. */
static int open_input(const char *dir, const char *data)
{
    char path[CODEV_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/.stdin", dir);
    if (write_file(dir, ".stdin", data, strlen(data)) != 0)
        return -1;
    int fd = fd_high(open(path, O_RDONLY | O_CLOEXEC));
    unlink(path);
    return fd;
}

/* ---- verification --------------------------------------------------------------------------- */

typedef struct item_tests {
    cJSON *root;
    int n_io, n_asserts;
    const cJSON *io[CODEV_TESTS_MAX];      /* objects with "stdout" (and "stdin") strings */
    const char *asserts[CODEV_TESTS_MAX];
    size_t max_stdout;
} item_tests;

static int parse_tests(const char *meta, item_tests *t, coh_err *err)
{
    memset(t, 0, sizeof *t);
    if (!meta || !meta[0])
        return coh_fail(err, COH_EINVAL,
                        "task code needs metadata with \"tests\" ([{\"stdin\", \"stdout\"}]) "
                        "or \"asserts\" ([\"assert ...\"])");
    t->root = cJSON_Parse(meta);
    if (!cJSON_IsObject(t->root))
        return coh_fail(err, COH_EINVAL, "task code: the metadata is not a JSON object");
    const cJSON *tests = cJSON_GetObjectItemCaseSensitive(t->root, "tests");
    const cJSON *asserts = cJSON_GetObjectItemCaseSensitive(t->root, "asserts");
    if ((tests && !cJSON_IsArray(tests)) || (asserts && !cJSON_IsArray(asserts)))
        return coh_fail(err, COH_EINVAL,
                        "task code: metadata \"tests\" and \"asserts\" must be lists");
    if (cJSON_GetArraySize(tests) + cJSON_GetArraySize(asserts) > CODEV_TESTS_MAX)
        return coh_fail(err, COH_EINVAL, "task code: at most %d tests and asserts per item",
                        CODEV_TESTS_MAX);
    const cJSON *it;
    cJSON_ArrayForEach(it, tests)
    {
        const cJSON *in = cJSON_GetObjectItemCaseSensitive(it, "stdin");
        const cJSON *out = cJSON_GetObjectItemCaseSensitive(it, "stdout");
        if (!cJSON_IsObject(it) || !cJSON_IsString(out) || (in && !cJSON_IsString(in)))
            return coh_fail(err, COH_EINVAL,
                            "task code: metadata tests[%d] needs \"stdout\" (a string) and "
                            "optionally \"stdin\" (a string)",
                            t->n_io);
        size_t l = strlen(out->valuestring);
        if (l > t->max_stdout)
            t->max_stdout = l;
        t->io[t->n_io++] = it;
    }
    cJSON_ArrayForEach(it, asserts)
    {
        if (!cJSON_IsString(it) || !it->valuestring[0])
            return coh_fail(err, COH_EINVAL,
                            "task code: metadata asserts[%d] must be a non-empty string",
                            t->n_asserts);
        t->asserts[t->n_asserts++] = it->valuestring;
    }
    if (t->n_io + t->n_asserts == 0)
        return coh_fail(err, COH_EINVAL, "task code: the metadata has no tests and no asserts");
    return COH_OK;
}

/* The harness (main.py) of the asserts: runs the program (solution.py) as a module named
 * "solution" (so an `if __name__ == "__main__":` part does not run), then every assert in
 * the program's globals, and reports "<tag> <index> <ok|ExceptionName>" on fd 3. */
static void build_assert_script(sbuf *b, const item_tests *t, const char *tag)
{
    sb_str(b, "import os as _os\n"
              "_g = {'__name__': 'solution', '__file__': 'solution.py',\n"
              "      '__builtins__': __builtins__}\n"
              "with open('solution.py', 'rb') as _f:\n"
              "    _src = _f.read()\n"
              "exec(compile(_src, 'solution.py', 'exec'), _g)\n"
              "_tests = [\n");
    for (int i = 0; i < t->n_asserts; i++) {
        sb_pybytes(b, t->asserts[i]);
        sb_str(b, ",\n");
    }
    sb_str(b, "]\n"
              "for _i, _t in enumerate(_tests):\n"
              "    try:\n"
              "        exec(_t.decode('utf-8', 'replace'), _g)\n"
              "        _r = 'ok'\n"
              "    except BaseException as _e:\n"
              "        _r = type(_e).__name__\n"
              "    try:\n"
              "        _os.write(3, ('");
    sb_str(b, tag);
    sb_str(b, " %d %s\\n' % (_i, _r)).encode())\n"
              "    except OSError:\n"
              "        pass\n");
}

/* The first failure's reason is kept; later ones only count. */
static void note_failure(char *first, size_t n, const char *label, int idx, const char *why)
{
    if (!first[0])
        snprintf(first, n, "%s %d: %.200s", label, idx, why);
}

int codev_verify(codev *cv, const char *completion, const char *metadata_json,
                 int timeout_ms, codev_result *out, coh_err *err)
{
    memset(out, 0, sizeof *out);
    double t0 = now_ms();
    double deadline = t0 + (timeout_ms > 0 ? timeout_ms : cv->cfg.timeout_ms);
    item_tests t;
    int rc = parse_tests(metadata_json, &t, err);
    if (rc) {
        cJSON_Delete(t.root);
        return rc;
    }
    int total = t.n_io + t.n_asserts;
    size_t ps = 0, pl = 0;
    int format = codev_extract(completion ? completion : "", &ps, &pl);
    const char *prog = completion ? completion + ps : "";
    size_t k = 0;
    while (k < pl && (is_blank(prog[k]) || prog[k] == '\n'))
        k++;
    if (k == pl) {
        out->total = total;
        out->format = format;
        snprintf(out->detail, sizeof out->detail, "no program found");
        out->elapsed_ms = now_ms() - t0;
        cJSON_Delete(t.root);
        return COH_OK;
    }
    size_t out_cap = (size_t)cv->cfg.output_kb << 10;
    if (out_cap < t.max_stdout + 4096)
        out_cap = t.max_stdout + 4096;
    if (cap_init(&cv->out, out_cap, 0) || cap_init(&cv->err, STDERR_KEEP, 1) ||
        cap_init(&cv->res, RESULTS_MAX, 0)) {
        cJSON_Delete(t.root);
        return coh_fail(err, COH_ENOMEM, "out of memory for the code verifier");
    }
    int slot = pool_take(deadline);
    if (slot < 0) {
        cJSON_Delete(t.root);
        return coh_fail(err, COH_EFULL,
                        "no code sandbox was free within the item's %.0f ms (max_sandboxes %d)",
                        deadline - t0, cv->cfg.max_sandboxes);
    }
    char dir[CODEV_PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/cohort-code-XXXXXX", cv->cfg.tmp_dir);
    sbuf script = {0};
    int passed = 0, fd_in = -1;
    char first[CODEV_DETAIL_MAX] = "", why[CODEV_DETAIL_MAX];
    run_res rr;
    if (!mkdtemp(dir)) {
        rc = coh_fail(err, COH_EIO, "code sandbox: cannot make a directory in %.200s: %s",
                      cv->cfg.tmp_dir, strerror(errno));
        dir[0] = 0;
        goto out;
    }
    if (cv->switch_uid) {
        unsigned u = (unsigned)(cv->cfg.uid_base + slot);
        if (chown(dir, u, u) != 0) {
            rc = coh_fail(err, COH_EIO, "code sandbox: chown %.200s: %s", dir, strerror(errno));
            goto out;
        }
    }
    if (t.n_io > 0 && write_file(dir, "main.py", prog, pl) != 0) {
        rc = coh_fail(err, COH_EIO, "code sandbox: cannot write the program: %s",
                      strerror(errno));
        goto out;
    }
    for (int i = 0; i < t.n_io; i++) {
        int left = (int)(deadline - now_ms());
        if (left <= 0) {
            note_failure(first, sizeof first, "test", i + 1,
                         "not run (the item's deadline passed)");
            continue;
        }
        const cJSON *in = cJSON_GetObjectItemCaseSensitive(t.io[i], "stdin");
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(t.io[i], "stdout");
        fd_in = open_input(dir, cJSON_IsString(in) ? in->valuestring : "");
        if (fd_in < 0) {
            rc = coh_fail(err, COH_EIO, "code sandbox: cannot write the input: %s",
                          strerror(errno));
            goto out;
        }
        int wall = left < cv->cfg.test_timeout_ms ? left : cv->cfg.test_timeout_ms;
        rc = run_program(cv, slot, dir, fd_in, 0, wall, &rr, err);
        close_fd(&fd_in);
        if (rc)
            goto out;
        int ok = classify(cv, &rr, why, sizeof why);
        if (ok) {
            ok = compare_output(cv->out.p, cv->out.len, want->valuestring, why, sizeof why);
            if (ok < 0) {
                rc = coh_fail(err, COH_ENOMEM, "out of memory for the code verifier");
                goto out;
            }
        }
        if (ok)
            passed++;
        else
            note_failure(first, sizeof first, "test", i + 1, why);
    }
    if (t.n_asserts > 0) {
        unsigned char rnd[8];
        char tag[20];
        if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
            rc = coh_fail(err, COH_EIO, "code sandbox: getrandom: %s", strerror(errno));
            goto out;
        }
        for (int i = 0; i < 8; i++)
            snprintf(tag + 2 * i, 3, "%02x", rnd[i]);
        build_assert_script(&script, &t, tag);
        if (script.oom) {
            rc = coh_fail(err, COH_ENOMEM, "out of memory for the code verifier");
            goto out;
        }
        int left = (int)(deadline - now_ms());
        if (left <= 0) {
            note_failure(first, sizeof first, "assert", 1,
                         "not run (the item's deadline passed)");
            goto out;
        }
        if (write_file(dir, "solution.py", prog, pl) != 0 ||
            write_file(dir, "main.py", script.p, script.len) != 0 ||
            (fd_in = open_input(dir, "")) < 0) {
            rc = coh_fail(err, COH_EIO, "code sandbox: cannot write the program: %s",
                          strerror(errno));
            goto out;
        }
        int wall = left < cv->cfg.test_timeout_ms ? left : cv->cfg.test_timeout_ms;
        rc = run_program(cv, slot, dir, fd_in, 1, wall, &rr, err);
        close_fd(&fd_in);
        if (rc)
            goto out;
        int ok = classify(cv, &rr, why, sizeof why);
        /* results: "<tag> <i> <ok|Name>" lines; anything without the tag is ignored */
        char *res[CODEV_TESTS_MAX] = {0};
        size_t tl = strlen(tag);
        for (char *p = cv->res.p; p && *p;) {
            char *nl = strchr(p, '\n');
            if (!nl)
                break; /* a cut line counts as no result */
            *nl = 0;
            char *endp;
            if (strncmp(p, tag, tl) == 0 && p[tl] == ' ') {
                long i = strtol(p + tl + 1, &endp, 10);
                if (endp != p + tl + 1 && *endp == ' ' && i >= 0 && i < t.n_asserts && !res[i])
                    res[i] = endp + 1;
            }
            p = nl + 1;
        }
        for (int i = 0; i < t.n_asserts; i++) {
            if (res[i] && strcmp(res[i], "ok") == 0) {
                passed++;
                continue;
            }
            char w2[CODEV_DETAIL_MAX];
            if (res[i])
                snippet(res[i], strlen(res[i]), 60, w2, sizeof w2);
            else if (!ok)
                snprintf(w2, sizeof w2, "%s", why);
            else
                snprintf(w2, sizeof w2, "no result (the program ended before its asserts)");
            note_failure(first, sizeof first, "assert", i + 1, w2);
        }
    }
out:
    close_fd(&fd_in);
    free(script.p);
    if (dir[0] && strstr(dir, "cohort-code-"))
        remove_tree(dir);
    pool_give(slot);
    cJSON_Delete(t.root);
    if (rc) {
        memset(out, 0, sizeof *out);
        return rc;
    }
    out->passed = passed;
    out->total = total;
    out->score = (double)passed / (double)total;
    out->format = format;
    out->elapsed_ms = now_ms() - t0;
    if (first[0])
        snprintf(out->detail, sizeof out->detail, "%d/%d tests passed; %.220s", passed, total,
                 first);
    else
        snprintf(out->detail, sizeof out->detail, "%d/%d tests passed", passed, total);
    return COH_OK;
}
