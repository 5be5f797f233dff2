/* codeverify.h - the `code` verifier: a completion's Python program run against test cases
 * in a sandboxed child process.
 *
 * `code` is a verifier-only task, like `math`: its prompts come from a prompt file whose
 * lines carry the test cases in "metadata", and the reward service (scorer.c) routes task
 * name "code" here.
 *
 * The program: the content of the LAST fenced block tagged python, py or python3
 * ("```python ... ```"); otherwise the last fenced block without a language tag; otherwise
 * the whole completion. A final fence that never closes (a completion cut at the token
 * limit) counts up to the end of the text. Blocks tagged with another language are never
 * run. format = 1 when the program came from a closed fenced block, else 0. A program that is
 * empty or only white space scores 0 with the reason "no program found".
 *
 * The tests, from the item's metadata (JSON):
 *   {"tests":   [{"stdin": "1 2\n", "stdout": "3\n"}, ...],   one run per test: stdin fed
 *                                                             in ("" when absent), the test
 *                                                             passes when the program exits
 *                                                             with status 0 and its stdout
 *                                                             equals "stdout" after trailing
 *                                                             white space is removed from
 *                                                             every line and trailing empty
 *                                                             lines are dropped
 *    "asserts": ["assert f(1) == 2", ...]}                    one run for all of them: the
 *                                                             program, then each statement
 *                                                             executed in the program's
 *                                                             globals; each passes when it
 *                                                             raises nothing
 * Either or both (the stdin tests run first); at most CODEV_TESTS_MAX in all. Assert results
 * travel over a private descriptor (fd 3), tagged with a random nonce per run, so what the
 * program prints cannot pass an assert (a program that digs the nonce out of its own source
 * can: this is a sandbox for honest mistakes and accidents, not a proof against an adversary
 * that targets Cohort).
 *
 * score = passed / total. The reason (codev_result.detail) names the first failure:
 *   "2/2 tests passed", "1/2 tests passed; test 2: wrong output (expected '5', got '6')",
 *   "0/1 tests passed; test 1: timeout after 2000 ms", "... crashed: ZeroDivisionError:
 *   division by zero", "... memory limit", "... file size limit", "... output limit",
 *   "1/3 tests passed; assert 2: AssertionError", "no program found".
 *
 * The sandbox, per program run:
 *   - a child process (clone) in fresh network, PID and IPC namespaces: no network at all
 *     (only a loopback interface that is down, so even 127.0.0.1 of the host is out of
 *     reach); the namespace's PID 1 is a small init of ours that starts the program, reaps
 *     orphans and reports the program's end, so when the program ends or is killed every
 *     process it started dies with the namespace (a fork bomb leaves nothing behind);
 *   - when the service runs as root, the program runs as uid/gid uid_base + slot (one uid per
 *     concurrent sandbox, no supplementary groups, no new privileges): RLIMIT_NPROC then caps
 *     the processes of that one sandbox, and the program cannot write to files owned by
 *     others; not root, a user namespace provides the network and PID namespaces and the
 *     program keeps the service's uid;
 *   - limits: RLIMIT_CPU (cpu_s, per process), RLIMIT_AS (memory_mb, per process),
 *     RLIMIT_FSIZE (file_mb), RLIMIT_NPROC (processes), RLIMIT_CORE 0, RLIMIT_NOFILE 64;
 *   - a private temporary directory (mkdtemp in tmp_dir, owned by the sandbox uid, mode 0700)
 *     as working directory, HOME and TMPDIR; removed with all its content afterwards;
 *   - a minimal environment (PATH, HOME, TMPDIR, LANG, LC_ALL) and `python -I` (isolated:
 *     no PYTHON* variables, no user site directory, no script directory on sys.path);
 *   - stdin from the test, stdout (output_kb) and stderr (its last 4 KiB) captured; a program
 *     that prints more than output_kb is killed ("output limit");
 *   - a wall clock: the run is killed (SIGKILL to the namespace's init and to its process
 *     group) after min(test_timeout_ms, what is left of the item's deadline).
 * The program sees: `python -I main.py` in its directory for stdin tests; for asserts,
 * main.py is the harness and the program is solution.py, run as module "solution".
 * NOT isolated: the file system is readable as far as its permissions allow (world-readable
 * files such as /etc/passwd, the Python installation, world-writable directories such as
 * /tmp are writable); memory and CPU limits are per process, so a program may use up to
 * `processes` times memory_mb; the number of files it creates in its directory is limited
 * only by time and file_mb per file. There is no seccomp filter and no mount namespace.
 *
 * When the namespaces cannot be made (not root and no unprivileged user namespaces,
 * or "namespaces": false), codev_create refuses (COH_EUNSUPPORTED) unless the configuration
 * says "unsandboxed": true; then programs run with the limits, the temporary directory and
 * the process-group kill, but with the host's network and without the PID namespace (as
 * root, every process of the sandbox's uid is killed after each run, which catches those
 * that left the process group; not root, such a process lives until its CPU limit).
 *
 * Concurrency: codev_verify runs in the calling thread (the reward service's worker) and
 * blocks it for at most the item's deadline. The sandboxes of the whole process share one
 * bounded pool (max_sandboxes, process-wide): an item waits for a free sandbox, and fails
 * with COH_EFULL when none frees up before its deadline. Each codev handle is used by one
 * thread at a time; different handles may run concurrently.
 *
 * Configuration: the "code" object of the reward service's config (scorer.h), all keys
 * optional, unknown keys refused:
 *   "code": {"timeout_ms": 10000, "test_timeout_ms": 2000, "cpu_s": 2, "memory_mb": 512,
 *            "file_mb": 16, "processes": 32, "output_kb": 64, "max_sandboxes": 2,
 *            "uid_base": 61000, "python": "/usr/bin/python3", "tmp_dir": "/tmp",
 *            "namespaces": true, "unsandboxed": false}
 */
#ifndef COHORT_CODEVERIFY_H
#define COHORT_CODEVERIFY_H

#include <stddef.h>

#include "err.h"

#define CODEV_TESTS_MAX 256       /* stdin tests + asserts per item */
#define CODEV_SANDBOXES_MAX 64    /* largest max_sandboxes */
#define CODEV_DETAIL_MAX 256
#define CODEV_PATH_MAX 256

/* ---- Configuration ------------------------------------------------------------------------- */

typedef struct codev_config {
    int timeout_ms;      /* an item's deadline when the caller gives none (1..3600000) */
    int test_timeout_ms; /* wall clock of one program run (1..3600000) */
    int cpu_s;           /* RLIMIT_CPU of every process (1..3600) */
    int memory_mb;       /* RLIMIT_AS of every process (16..1048576) */
    int file_mb;         /* RLIMIT_FSIZE (0..1048576) */
    int processes;       /* RLIMIT_NPROC (1..4096) */
    int output_kb;       /* stdout kept per run; more kills the run (1..65536) */
    int max_sandboxes;   /* concurrent sandboxes in the process (1..CODEV_SANDBOXES_MAX) */
    int uid_base;        /* as root: slot i runs as uid_base + i (1..2^31 - CODEV_SANDBOXES_MAX) */
    int namespaces;      /* 1: network/PID/IPC namespaces; 0: none (needs unsandboxed) */
    int unsandboxed;     /* 1: run even without namespaces */
    char python[CODEV_PATH_MAX];  /* the interpreter (absolute path) */
    char tmp_dir[CODEV_PATH_MAX]; /* where the private directories are made */
} codev_config;

/* The defaults listed in the file comment. */
codev_config codev_config_default(void);

/* Read the "code" object of a reward config (a JSON object; NULL or no "code" key leaves
 * *cfg at the defaults and *present 0). COH_EFORMAT when config_json is not a JSON object,
 * COH_EINVAL for a bad or unknown key of "code" (err says which). present may be NULL. */
int codev_config_parse(const char *config_json, codev_config *cfg, int *present,
                       coh_err *err);

/* ---- Lifecycle ----------------------------------------------------------------------------- */

typedef struct codev codev; /* opaque; one thread at a time */

/* cfg NULL = defaults. Checks the interpreter and tmp_dir, and tries the sandbox once (a
 * child in new namespaces, switched to uid_base when root): COH_EUNSUPPORTED when it cannot
 * be made and cfg->unsandboxed is 0, with the reason. Sets the process-wide pool size to
 * cfg->max_sandboxes (the last handle created decides). *out NULL on failure. */
int codev_create(const codev_config *cfg, codev **out, coh_err *err);

/* Reads the "code" object of a reward config: when present, codev_create with it; when
 * absent, *out = NULL and COH_OK (the caller may create a default handle when needed). */
int codev_create_from_config(const char *config_json, codev **out, coh_err *err);

void codev_destroy(codev *cv); /* NULL is fine */

/* 1 when programs run in new namespaces, 0 when unsandboxed without them. */
int codev_sandboxed(const codev *cv);

/* ---- Verification -------------------------------------------------------------------------- */

/* Where the program is in a completion (see the file comment): it is the *len bytes at
 * offset *start. Returns 1 when it came from a closed fenced block (the format score),
 * else 0. */
int codev_extract(const char *completion, size_t *start, size_t *len);

typedef struct codev_result {
    double score;     /* passed / total; 0 when no program was found */
    int passed, total;
    int format;       /* 1 when the program came from a closed fenced block */
    double elapsed_ms;
    char detail[CODEV_DETAIL_MAX]; /* the reason, printable ASCII */
} codev_result;

/* Run the completion's program against the tests of metadata_json. timeout_ms is the item's
 * deadline from now (<= 0: the config's timeout_ms). Returns COH_OK with *out filled
 * whatever the program does (wrong, crashed, killed: a score and its reason). Fails, *out
 * zeroed and err set, when the item cannot be verified: COH_EINVAL for metadata without
 * usable tests, COH_EFULL when no sandbox was free before the deadline, COH_EIO when the
 * sandbox could not be set up (fork, temporary directory, interpreter). */
int codev_verify(codev *cv, const char *completion, const char *metadata_json,
                 int timeout_ms, codev_result *out, coh_err *err);

#endif
