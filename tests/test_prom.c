/* test_prom.c - the learner's Prometheus endpoint (learner/prom.c).
 *
 * The page: exact text for a small view, every sample line of a full view, label escaping,
 * NaN/Inf and real-number spelling, refusal of malformed views. The server: a real
 * libmicrohttpd server on a free port, fetched with a plain-socket HTTP/1.0 client: /metrics
 * (body and Content-Type), /, a 404, a 405 for POST, HEAD; a page republished while a second
 * thread fetches in a loop (every body is one whole published page); a port in use, bad
 * addresses, and a port released by prom_server_stop.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "prom.h"

#define HAS(msg, s)                                                                          \
    do {                                                                                     \
        if (!strstr((msg), (s)))                                                             \
            fail_msg("\"%s\" lacks \"%s\"", (msg), (s));                                     \
    } while (0)

/* Render v; fail the test on error. */
static char *render(const prom_learner_view *v)
{
    char *text = NULL;
    size_t len = 0;
    coh_err err = {0};
    int rc = prom_render_learner(v, &text, &len, &err);
    if (rc != COH_OK)
        fail_msg("prom_render_learner: %s", err.msg);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    return text;
}

/* Compare two texts line by line, reporting the first differing line. */
static void assert_lines_equal(const char *got, const char *want)
{
    int line = 1;
    while (*got || *want) {
        const char *ge = strchr(got, '\n'), *we = strchr(want, '\n');
        size_t gl = ge ? (size_t)(ge - got) : strlen(got);
        size_t wl = we ? (size_t)(we - want) : strlen(want);
        if (gl != wl || memcmp(got, want, gl) != 0 || !ge != !we)
            fail_msg("line %d: got \"%.*s\"%s, want \"%.*s\"%s", line, (int)gl, got,
                     ge ? "" : " (no newline)", (int)wl, want, we ? "" : " (no newline)");
        got += gl + (ge != NULL);
        want += wl + (we != NULL);
        line++;
    }
}

/* The sample lines of a page (comments dropped), "\n"-terminated. Also checks that every
 * family's HELP and TYPE lines come right before its first sample. */
static char *samples_of(const char *page)
{
    char *out = calloc(1, strlen(page) + 1);
    assert_non_null(out);
    char help[128] = "", type[128] = "", fam[128] = "";
    for (const char *p = page; *p;) {
        const char *e = strchr(p, '\n');
        assert_non_null(e);
        size_t n = (size_t)(e - p);
        if (strncmp(p, "# HELP ", 7) == 0) {
            sscanf(p + 7, "%127s", help);
        } else if (strncmp(p, "# TYPE ", 7) == 0) {
            sscanf(p + 7, "%127s", type);
            assert_string_equal(type, help);
        } else {
            char name[128];
            size_t k = strcspn(p, "{ ");
            assert_true(k < sizeof name);
            memcpy(name, p, k);
            name[k] = '\0';
            if (strcmp(name, fam) != 0) { /* first sample of a family */
                if (strcmp(name, type) != 0)
                    fail_msg("sample \"%.*s\" not preceded by its HELP/TYPE", (int)n, p);
                snprintf(fam, sizeof fam, "%s", name);
            }
            strncat(out, p, n + 1);
        }
        p = e + 1;
    }
    return out;
}

/* ---- the page ------------------------------------------------------------------------- */

static void test_render_small_exact(void **state)
{
    (void)state;
    static const char *const reasons[] = {"stale"};
    static const int64_t drops[] = {5};
    prom_learner_view v = {
        .phase = "sft", .step = 7, .version = 3, .total_steps = 10, .paused = 1, .finished = 0,
        .uptime_s = 1.5, .have_step = 0, .loss = 99 /* not rendered without have_step */,
        .n_drop_reasons = 1, .drop_reason_names = reasons, .drops_by_reason = drops,
        .leases_issued = 9, .leases_reissued = 1, .leases_completed = 4, .leases_expired = 2,
        .leases_returned = 1, .leases_dropped = 0, .leases_outstanding = 2,
        .buffered_groups = 1, .buffer_capacity = 8, .n_actors = 0,
    };
    char *text = render(&v);
    assert_lines_equal(
        text,
        "# HELP cohort_phase Training phase of the learner (1 for the current one).\n"
        "# TYPE cohort_phase gauge\n"
        "cohort_phase{phase=\"sft\"} 1\n"
        "# HELP cohort_step Current training step.\n"
        "# TYPE cohort_step gauge\n"
        "cohort_step 7\n"
        "# HELP cohort_policy_version Policy version the actors sample with.\n"
        "# TYPE cohort_policy_version gauge\n"
        "cohort_policy_version 3\n"
        "# HELP cohort_total_steps Step at which the run ends.\n"
        "# TYPE cohort_total_steps gauge\n"
        "cohort_total_steps 10\n"
        "# HELP cohort_paused 1 while training is paused, else 0.\n"
        "# TYPE cohort_paused gauge\n"
        "cohort_paused 1\n"
        "# HELP cohort_finished 1 once the run has finished, else 0.\n"
        "# TYPE cohort_finished gauge\n"
        "cohort_finished 0\n"
        "# HELP cohort_uptime_seconds Seconds since the learner started.\n"
        "# TYPE cohort_uptime_seconds gauge\n"
        "cohort_uptime_seconds 1.5\n"
        "# HELP cohort_groups_dropped_total Groups refused or dropped since the learner "
        "started, by reason.\n"
        "# TYPE cohort_groups_dropped_total counter\n"
        "cohort_groups_dropped_total{reason=\"stale\"} 5\n"
        "# HELP cohort_leases_issued_total Prompt leases issued (new and re-issued).\n"
        "# TYPE cohort_leases_issued_total counter\n"
        "cohort_leases_issued_total 9\n"
        "# HELP cohort_leases_reissued_total Leases that issued a prompt again (after expiry, "
        "return or drop).\n"
        "# TYPE cohort_leases_reissued_total counter\n"
        "cohort_leases_reissued_total 1\n"
        "# HELP cohort_leases_ended_total Leases ended, by outcome.\n"
        "# TYPE cohort_leases_ended_total counter\n"
        "cohort_leases_ended_total{outcome=\"completed\"} 4\n"
        "cohort_leases_ended_total{outcome=\"expired\"} 2\n"
        "cohort_leases_ended_total{outcome=\"returned\"} 1\n"
        "cohort_leases_ended_total{outcome=\"dropped\"} 0\n"
        "# HELP cohort_leases_outstanding Live leases now.\n"
        "# TYPE cohort_leases_outstanding gauge\n"
        "cohort_leases_outstanding 2\n"
        "# HELP cohort_buffer_groups Scored groups waiting to be trained on.\n"
        "# TYPE cohort_buffer_groups gauge\n"
        "cohort_buffer_groups 1\n"
        "# HELP cohort_buffer_capacity_groups Capacity of the group buffer.\n"
        "# TYPE cohort_buffer_capacity_groups gauge\n"
        "cohort_buffer_capacity_groups 8\n"
        "# HELP cohort_actors Connected actors.\n"
        "# TYPE cohort_actors gauge\n"
        "cohort_actors 0\n");
    free(text);

    /* no phase given: "unknown"; paused/finished any non-zero renders 1; no drop reasons:
     * the family is left out */
    v.phase = NULL;
    v.paused = 0;
    v.finished = 7;
    v.n_drop_reasons = 0;
    text = render(&v);
    HAS(text, "\ncohort_phase{phase=\"unknown\"} 1\n");
    HAS(text, "\ncohort_paused 0\n");
    HAS(text, "\ncohort_finished 1\n");
    assert_null(strstr(text, "cohort_groups_dropped_total"));
    free(text);
}

static prom_learner_view full_view(const prom_actor_view *actors, int n_actors)
{
    static const char *const reasons[] = {"stale", "zero_signal"};
    static const int64_t drops[] = {3, 14};
    return (prom_learner_view){
        .phase = "rl", .step = 942, .version = 42, .total_steps = 2800, .uptime_s = 312.25,
        .have_step = 1, .loss = -0.0125, .reward_mean = 0.375, .reward_std = 0.5,
        .eval_accuracy = 0.195, .kl = 0.002, .clip_frac = 0.0625, .entropy = 0.268,
        .grad_norm = 1.91, .lr = 5e-4, .learner_tokens_per_s = 72962,
        .sampler_tokens_per_s = 121257.5, .staleness_mean = 1.5, .logp_max_abs_diff = 3e-6,
        .reward_latency_ms = 4.5, .groups_used = 32, .n_drop_reasons = 2,
        .drop_reason_names = reasons, .drops_by_reason = drops, .leases_issued = 300,
        .leases_reissued = 6, .leases_completed = 230, .leases_expired = 4,
        .leases_returned = 2, .leases_dropped = 0, .leases_outstanding = 64,
        .buffered_groups = 16, .buffer_capacity = 128, .n_actors = n_actors, .actors = actors};
}

static void test_render_full_samples(void **state)
{
    (void)state;
    const prom_actor_view actors[] = {
        {.name = "a0", .id = 11, .peer = "ipv4:127.0.0.1:40001", .sampler_tokens_per_s = 61250.5,
         .heartbeat_age_s = 0.25, .held_version = 41, .completions = 10240,
         .groups_accepted = 620, .groups_rejected = 4, .leases_held = 32},
        {.name = "a1", .id = 18446744073709551615ULL, .peer = NULL, .sampler_tokens_per_s = 0,
         .heartbeat_age_s = 12, .held_version = -1, .completions = 0, .groups_accepted = 0,
         .groups_rejected = 0, .leases_held = 0},
    };
    prom_learner_view v = full_view(actors, 2);
    char *text = render(&v);
    char *s = samples_of(text);
    assert_lines_equal(
        s,
        "cohort_phase{phase=\"rl\"} 1\n"
        "cohort_step 942\n"
        "cohort_policy_version 42\n"
        "cohort_total_steps 2800\n"
        "cohort_paused 0\n"
        "cohort_finished 0\n"
        "cohort_uptime_seconds 312.25\n"
        "cohort_loss -0.0125\n"
        "cohort_reward_mean 0.375\n"
        "cohort_reward_std 0.5\n"
        "cohort_eval_accuracy 0.195\n"
        "cohort_kl 0.002\n"
        "cohort_clip_fraction 0.0625\n"
        "cohort_entropy 0.268\n"
        "cohort_grad_norm 1.91\n"
        "cohort_learning_rate 0.0005\n"
        "cohort_learner_tokens_per_second 72962\n"
        "cohort_sampler_tokens_per_second 121257.5\n"
        "cohort_staleness_mean_versions 1.5\n"
        "cohort_logprob_max_abs_diff 3e-06\n"
        "cohort_reward_latency_seconds 0.0045\n"
        "cohort_groups_used 32\n"
        "cohort_groups_dropped_total{reason=\"stale\"} 3\n"
        "cohort_groups_dropped_total{reason=\"zero_signal\"} 14\n"
        "cohort_leases_issued_total 300\n"
        "cohort_leases_reissued_total 6\n"
        "cohort_leases_ended_total{outcome=\"completed\"} 230\n"
        "cohort_leases_ended_total{outcome=\"expired\"} 4\n"
        "cohort_leases_ended_total{outcome=\"returned\"} 2\n"
        "cohort_leases_ended_total{outcome=\"dropped\"} 0\n"
        "cohort_leases_outstanding 64\n"
        "cohort_buffer_groups 16\n"
        "cohort_buffer_capacity_groups 128\n"
        "cohort_actors 2\n"
        "cohort_actor_info{actor=\"a0\",actor_id=\"11\",peer=\"ipv4:127.0.0.1:40001\"} 1\n"
        "cohort_actor_info{actor=\"a1\",actor_id=\"18446744073709551615\",peer=\"\"} 1\n"
        "cohort_actor_sampler_tokens_per_second{actor=\"a0\",actor_id=\"11\"} 61250.5\n"
        "cohort_actor_sampler_tokens_per_second{actor=\"a1\",actor_id=\"18446744073709551615\"} 0\n"
        "cohort_actor_heartbeat_age_seconds{actor=\"a0\",actor_id=\"11\"} 0.25\n"
        "cohort_actor_heartbeat_age_seconds{actor=\"a1\",actor_id=\"18446744073709551615\"} 12\n"
        "cohort_actor_policy_version{actor=\"a0\",actor_id=\"11\"} 41\n"
        "cohort_actor_policy_version{actor=\"a1\",actor_id=\"18446744073709551615\"} -1\n"
        "cohort_actor_completions_total{actor=\"a0\",actor_id=\"11\"} 10240\n"
        "cohort_actor_completions_total{actor=\"a1\",actor_id=\"18446744073709551615\"} 0\n"
        "cohort_actor_groups_accepted_total{actor=\"a0\",actor_id=\"11\"} 620\n"
        "cohort_actor_groups_accepted_total{actor=\"a1\",actor_id=\"18446744073709551615\"} 0\n"
        "cohort_actor_groups_rejected_total{actor=\"a0\",actor_id=\"11\"} 4\n"
        "cohort_actor_groups_rejected_total{actor=\"a1\",actor_id=\"18446744073709551615\"} 0\n"
        "cohort_actor_leases_held{actor=\"a0\",actor_id=\"11\"} 32\n"
        "cohort_actor_leases_held{actor=\"a1\",actor_id=\"18446744073709551615\"} 0\n");
    /* types: counters end in _total and are typed counter */
    HAS(text, "# TYPE cohort_actor_completions_total counter\n");
    HAS(text, "# TYPE cohort_actor_leases_held gauge\n");
    free(s);
    free(text);

    /* no evaluation yet (eval_accuracy < 0): that one series is left out; 0 is a value */
    v.eval_accuracy = -1;
    text = render(&v);
    assert_null(strstr(text, "cohort_eval_accuracy"));
    HAS(text, "\ncohort_kl 0.002\n");
    free(text);
    v.eval_accuracy = 0;
    text = render(&v);
    HAS(text, "\ncohort_eval_accuracy 0\n");
    free(text);
}

static void test_label_escaping(void **state)
{
    (void)state;
    static const char *const reasons[] = {"say \"hi\""};
    static const int64_t drops[] = {1};
    const prom_actor_view a = {.name = "a\"b\\c\nd", .id = 5, .peer = "p\\q\"\n",
                               .held_version = 2};
    prom_learner_view v = full_view(&a, 1);
    v.phase = "r\\l\n";
    v.n_drop_reasons = 1;
    v.drop_reason_names = reasons;
    v.drops_by_reason = drops;
    char *text = render(&v);
    HAS(text, "\ncohort_phase{phase=\"r\\\\l\\n\"} 1\n");
    HAS(text, "\ncohort_groups_dropped_total{reason=\"say \\\"hi\\\"\"} 1\n");
    HAS(text, "\ncohort_actor_info{actor=\"a\\\"b\\\\c\\nd\",actor_id=\"5\","
              "peer=\"p\\\\q\\\"\\n\"} 1\n");
    HAS(text, "\ncohort_actor_policy_version{actor=\"a\\\"b\\\\c\\nd\",actor_id=\"5\"} 2\n");
    /* every line is a comment or a sample: no raw newline escaped into the page */
    char *s = samples_of(text);
    free(s);
    free(text);
}

static void test_nan_inf_and_numbers(void **state)
{
    (void)state;
    prom_learner_view v = full_view(NULL, 0);
    v.loss = NAN;
    v.kl = INFINITY;
    v.grad_norm = -INFINITY;
    v.eval_accuracy = NAN; /* not "< 0": rendered, as NaN */
    v.reward_mean = 1.0 / 3.0;  /* 15 digits do not read back: 17 */
    v.reward_std = 0.1;         /* 15 digits do: no 0.10000000000000001 */
    v.entropy = -0.0;
    v.lr = 1e-300;
    v.learner_tokens_per_s = 1e21;
    v.step = INT64_MAX;
    v.version = INT64_MIN;
    v.leases_issued = INT64_MAX;
    char *text = render(&v);
    HAS(text, "\ncohort_loss NaN\n");
    HAS(text, "\ncohort_kl +Inf\n");
    HAS(text, "\ncohort_grad_norm -Inf\n");
    HAS(text, "\ncohort_eval_accuracy NaN\n");
    HAS(text, "\ncohort_reward_mean 0.33333333333333331\n");
    HAS(text, "\ncohort_reward_std 0.1\n");
    HAS(text, "\ncohort_entropy -0\n");
    HAS(text, "\ncohort_learning_rate 1e-300\n");
    HAS(text, "\ncohort_learner_tokens_per_second 1e+21\n");
    HAS(text, "\ncohort_step 9223372036854775807\n");
    HAS(text, "\ncohort_policy_version -9223372036854775808\n");
    HAS(text, "\ncohort_leases_issued_total 9223372036854775807\n");
    assert_null(strstr(text, "nan"));
    assert_null(strstr(text, "inf"));
    free(text);
}

static void test_render_refuses_bad_views(void **state)
{
    (void)state;
    static const char *const bad_names[] = {"stale", NULL};
    static const int64_t drops[] = {1, 2};
    char *text = (char *)"sentinel";
    size_t len = 99;
    coh_err err = {0};

    assert_int_equal(prom_render_learner(NULL, &text, &len, &err), COH_EINVAL);
    assert_null(text);
    assert_int_equal(len, 0);

    prom_learner_view v = full_view(NULL, 1); /* one actor, no array */
    text = (char *)"sentinel";
    assert_int_equal(prom_render_learner(&v, &text, &len, &err), COH_EINVAL);
    assert_null(text);
    HAS(err.msg, "1 actors but no actor array");

    v = full_view(NULL, -1);
    assert_int_equal(prom_render_learner(&v, &text, &len, &err), COH_EINVAL);
    HAS(err.msg, "negative count");

    v = full_view(NULL, 0);
    v.drop_reason_names = bad_names;
    v.drops_by_reason = drops;
    assert_int_equal(prom_render_learner(&v, &text, &len, &err), COH_EINVAL);
    HAS(err.msg, "drop reason 1 has no name");

    v = full_view(NULL, 0);
    v.n_drop_reasons = 3;
    v.drop_reason_names = NULL;
    assert_int_equal(prom_render_learner(&v, &text, &len, &err), COH_EINVAL);
    HAS(err.msg, "3 drop reasons but no name or count array");
    assert_null(text);
}

/* ---- the server ----------------------------------------------------------------------- */

typedef struct reply {
    int status;
    char head[2048];  /* status line and headers */
    char *body;       /* malloc'd, NUL-terminated */
    size_t body_len;
} reply;

/* Send request (a whole HTTP/1.0 request) to 127.0.0.1:port and read the reply until the
 * server closes. Returns 0, or -1 with a message in why. Never waits more than 10 s. */
static int http(int port, const char *request, reply *r, char *why, size_t why_len)
{
    memset(r, 0, sizeof *r);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, why_len, "socket: %s", strerror(errno));
        return -1;
    }
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        snprintf(why, why_len, "connect to port %d: %s", port, strerror(errno));
        close(fd);
        return -1;
    }
    size_t n = strlen(request), off = 0;
    while (off < n) {
        ssize_t w = send(fd, request + off, n - off, MSG_NOSIGNAL);
        if (w <= 0) {
            snprintf(why, why_len, "send: %s", strerror(errno));
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1024 > cap)
            buf = realloc(buf, cap *= 2);
        if (!buf)
            abort();
        ssize_t got = recv(fd, buf + len, cap - len - 1, 0);
        if (got < 0) {
            snprintf(why, why_len, "recv: %s (after %zu bytes)", strerror(errno), len);
            free(buf);
            close(fd);
            return -1;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    close(fd);
    buf[len] = '\0';
    char *end = strstr(buf, "\r\n\r\n");
    if (!end || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1 ||
        (size_t)(end - buf) >= sizeof r->head) {
        snprintf(why, why_len, "malformed reply: \"%.200s\"", buf);
        free(buf);
        return -1;
    }
    memcpy(r->head, buf, (size_t)(end - buf));
    r->head[end - buf] = '\0';
    r->body_len = len - (size_t)(end + 4 - buf);
    r->body = malloc(r->body_len + 1);
    memcpy(r->body, end + 4, r->body_len + 1);
    free(buf);
    return 0;
}

static reply fetch(int port, const char *request)
{
    reply r;
    char why[512];
    if (http(port, request, &r, why, sizeof why) != 0)
        fail_msg("%s", why);
    return r;
}

static prom_server *start_ok(const char *addr)
{
    prom_server *s = NULL;
    coh_err err = {0};
    if (prom_server_start(addr, &s, &err) != COH_OK)
        fail_msg("prom_server_start(%s): %s", addr, err.msg);
    assert_non_null(s);
    assert_true(prom_server_port(s) > 0);
    return s;
}

static void test_server_routes(void **state)
{
    (void)state;
    prom_server *s = start_ok("127.0.0.1:0");
    int port = prom_server_port(s);
    coh_err err = {0};

    /* before the first publish: an empty page */
    reply r = fetch(port, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_int_equal(r.status, 200);
    HAS(r.head, "\r\nContent-Type: " PROM_CONTENT_TYPE);
    assert_int_equal(r.body_len, 0);
    free(r.body);

    const char page[] = "# HELP cohort_step Current training step.\n"
                        "# TYPE cohort_step gauge\ncohort_step 12\n";
    assert_int_equal(prom_server_publish(s, page, strlen(page), &err), COH_OK);
    r = fetch(port, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    assert_int_equal(r.status, 200);
    HAS(r.head, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n");
    assert_int_equal(r.body_len, strlen(page));
    assert_string_equal(r.body, page);
    free(r.body);

    /* a query string does not change the page */
    r = fetch(port, "GET /metrics?name[]=cohort_step HTTP/1.0\r\n\r\n");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, page);
    free(r.body);

    /* HEAD: the headers of GET, no body */
    r = fetch(port, "HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_int_equal(r.status, 200);
    HAS(r.head, "Content-Type: " PROM_CONTENT_TYPE);
    assert_int_equal(r.body_len, 0);
    free(r.body);

    r = fetch(port, "GET / HTTP/1.0\r\n\r\n");
    assert_int_equal(r.status, 200);
    HAS(r.body, "/metrics");
    free(r.body);

    r = fetch(port, "GET /metricsx HTTP/1.0\r\n\r\n");
    assert_int_equal(r.status, 404);
    HAS(r.body, "/metrics");
    free(r.body);
    r = fetch(port, "GET /metrics/ HTTP/1.0\r\n\r\n");
    assert_int_equal(r.status, 404);
    free(r.body);

    r = fetch(port, "POST /metrics HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello");
    assert_int_equal(r.status, 405);
    HAS(r.head, "\r\nAllow: GET, HEAD");
    free(r.body);
    r = fetch(port, "DELETE / HTTP/1.0\r\n\r\n");
    assert_int_equal(r.status, 405);
    free(r.body);

    /* an empty page can be published too; a NULL page with a length cannot */
    assert_int_equal(prom_server_publish(s, "", 0, &err), COH_OK);
    r = fetch(port, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    free(r.body);
    assert_int_equal(prom_server_publish(s, NULL, 3, &err), COH_EINVAL);
    assert_int_equal(prom_server_publish(NULL, "x", 1, &err), COH_EINVAL);

    prom_server_stop(s);
    prom_server_stop(NULL);
}

/* ---- republish while fetching ---- */

#define N_PAGES 3
typedef struct race {
    int port;
    const char *pages[N_PAGES];
    int fetches, done;
    char fail[512];
} race;

static void *fetch_loop(void *arg)
{
    race *x = arg;
    for (int i = 0; i < x->fetches && !x->fail[0]; i++) {
        reply r;
        if (http(x->port, "GET /metrics HTTP/1.0\r\n\r\n", &r, x->fail, sizeof x->fail) != 0)
            break;
        int which = -1;
        for (int k = 0; k < N_PAGES; k++)
            if (r.body_len == strlen(x->pages[k]) && strcmp(r.body, x->pages[k]) == 0)
                which = k;
        if (r.status != 200 || which < 0)
            snprintf(x->fail, sizeof x->fail,
                     "fetch %d: status %d, a body that is none of the published pages: "
                     "\"%.100s\"",
                     i, r.status, r.body);
        free(r.body);
    }
    __atomic_store_n(&x->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_server_republish_while_fetching(void **state)
{
    (void)state;
    /* three pages of different sizes (one larger than any single read) */
    size_t big_len = 200000;
    char *big = malloc(big_len + 1);
    assert_non_null(big);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (i % 64 == 63) ? '\n' : (char)('a' + i % 26);
    big[big_len] = '\0';
    race x = {.fetches = 300,
              .pages = {"cohort_step 1\n", "cohort_step 2\ncohort_policy_version 2\n", big}};
    prom_server *s = start_ok("127.0.0.1:0");
    x.port = prom_server_port(s);
    coh_err err = {0};
    assert_int_equal(prom_server_publish(s, x.pages[0], strlen(x.pages[0]), &err), COH_OK);

    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fetch_loop, &x), 0);
    long publishes = 0;
    while (!__atomic_load_n(&x.done, __ATOMIC_ACQUIRE)) {
        const char *p = x.pages[publishes % N_PAGES];
        assert_int_equal(prom_server_publish(s, p, strlen(p), &err), COH_OK);
        publishes++;
        if (publishes % 16 == 0)
            usleep(100);
    }
    pthread_join(th, NULL);
    prom_server_stop(s);
    free(big);
    if (x.fail[0])
        fail_msg("%s", x.fail);
    assert_true(publishes > 0);
}

/* ---- addresses ---- */

static void test_server_port_in_use(void **state)
{
    (void)state;
    /* a socket of our own listens on a free port */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 4), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    int port = ntohs(sa.sin_port);

    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    prom_server *s = (prom_server *)&fd; /* must be reset to NULL */
    coh_err err = {0};
    assert_int_equal(prom_server_start(addr, &s, &err), COH_EIO);
    assert_null(s);
    HAS(err.msg, addr);
    HAS(err.msg, "in use");
    assert_int_equal(prom_server_start(addr, &s, NULL), COH_EIO); /* no detail wanted */
    assert_null(s);
    close(fd);

    /* a second metrics server on the first one's port */
    prom_server *a = start_ok("127.0.0.1:0");
    snprintf(addr, sizeof addr, "127.0.0.1:%d", prom_server_port(a));
    assert_int_equal(prom_server_start(addr, &s, &err), COH_EIO);
    assert_null(s);
    HAS(err.msg, addr);
    HAS(err.msg, "in use");
    prom_server_stop(a);
}

static void test_server_bad_addresses(void **state)
{
    (void)state;
    static const struct {
        const char *addr;
        int code;
        const char *says;
    } bad[] = {
        {"", COH_EINVAL, "empty"},
        {"127.0.0.1", COH_EINVAL, "has no port"},
        {"127.0.0.1:", COH_EINVAL, "is not a number in 0..65535"},
        {"127.0.0.1:65536", COH_EINVAL, "'65536' is not a number in 0..65535"},
        {"127.0.0.1:8x", COH_EINVAL, "'8x' is not a number"},
        {":-1", COH_EINVAL, "'-1' is not a number"},
        {"127.0.0.1:123456", COH_EINVAL, "is not a number"},
        {"::1:80", COH_EINVAL, "in brackets"},
        {"[::1", COH_EINVAL, "[IPv6]:PORT"},
        {"[::1]80", COH_EINVAL, "[IPv6]:PORT"},
        {"192.0.2.1:0", COH_EIO, "not on this machine"}, /* TEST-NET-1: never local */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        prom_server *s = NULL;
        coh_err err = {0};
        int rc = prom_server_start(bad[i].addr, &s, &err);
        if (rc != bad[i].code)
            fail_msg("'%s': code %d (%s), want %d", bad[i].addr, rc, err.msg, bad[i].code);
        assert_null(s);
        HAS(err.msg, bad[i].says);
        if (bad[i].addr[0])
            HAS(err.msg, bad[i].addr);
    }
    prom_server *s = NULL;
    assert_int_equal(prom_server_start(NULL, &s, NULL), COH_EINVAL);
    /* a host name that /etc/hosts resolves is fine (no DNS server is asked) */
    s = start_ok("localhost:0");
    prom_server_stop(s);
}

static void test_server_any_address_and_release(void **state)
{
    (void)state;
    /* ":0" listens on every address, loopback included */
    prom_server *s = start_ok(":0");
    int port = prom_server_port(s);
    coh_err err = {0};
    assert_int_equal(prom_server_publish(s, "cohort_step 3\n", 14, &err), COH_OK);
    reply r = fetch(port, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "cohort_step 3\n");
    free(r.body);
    prom_server_stop(s);

    /* the port is free again once stopped: the socket was closed, the thread joined */
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    s = start_ok(addr);
    assert_int_equal(prom_server_port(s), port);
    r = fetch(port, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_int_equal(r.status, 200);
    free(r.body);
    prom_server_stop(s);

    /* and nothing answers there any more */
    reply dead;
    char why[256];
    assert_int_equal(http(port, "GET /metrics HTTP/1.0\r\n\r\n", &dead, why, sizeof why), -1);
    HAS(why, "connect");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_small_exact),
        cmocka_unit_test(test_render_full_samples),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_nan_inf_and_numbers),
        cmocka_unit_test(test_render_refuses_bad_views),
        cmocka_unit_test(test_server_routes),
        cmocka_unit_test(test_server_republish_while_fetching),
        cmocka_unit_test(test_server_port_in_use),
        cmocka_unit_test(test_server_bad_addresses),
        cmocka_unit_test(test_server_any_address_and_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
