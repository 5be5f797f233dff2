/* prom.c - the learner's Prometheus endpoint (see prom.h). */
#include "prom.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

/* ==== the page ========================================================================== */

/* A growing text buffer. A failed allocation sets oom and makes every later append a no-op,
 * so the renderer checks once, at the end. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_reserve(sbuf *b, size_t extra)
{
    if (b->oom || b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void sb_put(sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if ((size_t)n < sizeof tmp) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    sb_reserve(b, (size_t)n);
    if (b->oom)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* A label value: backslash, double quote and newline escaped (exposition format 0.0.4). */
static void sb_label_value(sbuf *b, const char *s)
{
    if (!s)
        return;
    for (; *s; s++) {
        if (*s == '\\')
            sb_put(b, "\\\\", 2);
        else if (*s == '"')
            sb_put(b, "\\\"", 2);
        else if (*s == '\n')
            sb_put(b, "\\n", 2);
        else
            sb_put(b, s, 1);
    }
}

/* A real value as Prometheus reads it: NaN, +Inf, -Inf, otherwise the shorter of %.15g and
 * %.17g that reads back to the same double (0.1 stays "0.1", not "0.10000000000000001"). */
static void sb_double(sbuf *b, double x)
{
    if (isnan(x)) {
        sb_str(b, "NaN");
        return;
    }
    if (isinf(x)) {
        sb_str(b, x > 0 ? "+Inf" : "-Inf");
        return;
    }
    char tmp[40];
    snprintf(tmp, sizeof tmp, "%.15g", x);
    if (strtod(tmp, NULL) != x)
        snprintf(tmp, sizeof tmp, "%.17g", x);
    sb_str(b, tmp);
}

/* "# HELP" and "# TYPE" lines of one family. HELP text here is fixed and has no backslash or
 * newline to escape. */
static void family(sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_d(sbuf *b, const char *name, double x)
{
    sb_str(b, name);
    sb_put(b, " ", 1);
    sb_double(b, x);
    sb_put(b, "\n", 1);
}

static void sample_i(sbuf *b, const char *name, int64_t x)
{
    sb_printf(b, "%s %" PRId64 "\n", name, x);
}

static void gauge_d(sbuf *b, const char *name, const char *help, double x)
{
    family(b, name, "gauge", help);
    sample_d(b, name, x);
}

static void gauge_i(sbuf *b, const char *name, const char *help, int64_t x)
{
    family(b, name, "gauge", help);
    sample_i(b, name, x);
}

static void counter_i(sbuf *b, const char *name, const char *help, int64_t x)
{
    family(b, name, "counter", help);
    sample_i(b, name, x);
}

/* name{label="value"} */
static void series1(sbuf *b, const char *name, const char *label, const char *value)
{
    sb_printf(b, "%s{%s=\"", name, label);
    sb_label_value(b, value);
    sb_str(b, "\"} ");
}

/* name{actor="NAME",actor_id="ID"} */
static void series_actor(sbuf *b, const char *name, const prom_actor_view *a)
{
    sb_printf(b, "%s{actor=\"", name);
    sb_label_value(b, a->name);
    sb_printf(b, "\",actor_id=\"%" PRIu64 "\"} ", a->id);
}

/* Per-actor families, in the order of prom.h. */
enum { AV_TOKS, AV_HEARTBEAT, AV_VERSION, AV_COMPLETIONS, AV_ACCEPTED, AV_REJECTED, AV_LEASES,
       AV_N };

static const struct {
    const char *name, *type, *help;
} k_actor_families[AV_N] = {
    [AV_TOKS] = {"cohort_actor_sampler_tokens_per_second", "gauge",
                 "Sampling throughput of the actor, tokens per second."},
    [AV_HEARTBEAT] = {"cohort_actor_heartbeat_age_seconds", "gauge",
                      "Seconds since the actor's last heartbeat."},
    [AV_VERSION] = {"cohort_actor_policy_version", "gauge",
                    "Policy version the actor holds (-1: none yet)."},
    [AV_COMPLETIONS] = {"cohort_actor_completions_total", "counter",
                        "Completions the actor submitted."},
    [AV_ACCEPTED] = {"cohort_actor_groups_accepted_total", "counter",
                     "Groups of the actor the learner accepted."},
    [AV_REJECTED] = {"cohort_actor_groups_rejected_total", "counter",
                     "Groups of the actor the learner refused."},
    [AV_LEASES] = {"cohort_actor_leases_held", "gauge", "Leases the actor holds now."},
};

static void actor_value(sbuf *b, const prom_actor_view *a, int which)
{
    switch (which) {
    case AV_TOKS: sb_double(b, a->sampler_tokens_per_s); break;
    case AV_HEARTBEAT: sb_double(b, a->heartbeat_age_s); break;
    case AV_VERSION: sb_printf(b, "%" PRId64, a->held_version); break;
    case AV_COMPLETIONS: sb_printf(b, "%" PRId64, a->completions); break;
    case AV_ACCEPTED: sb_printf(b, "%" PRId64, a->groups_accepted); break;
    case AV_REJECTED: sb_printf(b, "%" PRId64, a->groups_rejected); break;
    default: sb_printf(b, "%d", a->leases_held); break;
    }
    sb_put(b, "\n", 1);
}

static int check_view(const prom_learner_view *v, coh_err *err)
{
    if (v->n_drop_reasons < 0 || v->n_actors < 0)
        return coh_fail(err, COH_EINVAL,
                        "metrics view: negative count (n_drop_reasons %d, n_actors %d)",
                        v->n_drop_reasons, v->n_actors);
    if (v->n_drop_reasons > 0 && (!v->drop_reason_names || !v->drops_by_reason))
        return coh_fail(err, COH_EINVAL,
                        "metrics view: %d drop reasons but no name or count array",
                        v->n_drop_reasons);
    for (int i = 0; i < v->n_drop_reasons; i++)
        if (!v->drop_reason_names[i])
            return coh_fail(err, COH_EINVAL, "metrics view: drop reason %d has no name", i);
    if (v->n_actors > 0 && !v->actors)
        return coh_fail(err, COH_EINVAL, "metrics view: %d actors but no actor array",
                        v->n_actors);
    return COH_OK;
}

int prom_render_learner(const prom_learner_view *v, char **text, size_t *len, coh_err *err)
{
    if (text)
        *text = NULL;
    if (len)
        *len = 0;
    if (!v || !text || !len)
        return coh_fail(err, COH_EINVAL, "prom_render_learner: NULL argument");
    int rc = check_view(v, err);
    if (rc)
        return rc;

    sbuf b = {0};

    /* run state */
    family(&b, "cohort_phase", "gauge", "Training phase of the learner (1 for the current one).");
    series1(&b, "cohort_phase", "phase", v->phase ? v->phase : "unknown");
    sb_str(&b, "1\n");
    gauge_i(&b, "cohort_step", "Current training step.", v->step);
    gauge_i(&b, "cohort_policy_version", "Policy version the actors sample with.", v->version);
    gauge_i(&b, "cohort_total_steps", "Step at which the run ends.", v->total_steps);
    gauge_i(&b, "cohort_paused", "1 while training is paused, else 0.", v->paused != 0);
    gauge_i(&b, "cohort_finished", "1 once the run has finished, else 0.", v->finished != 0);
    gauge_d(&b, "cohort_uptime_seconds", "Seconds since the learner started.", v->uptime_s);

    /* the last finished step */
    if (v->have_step) {
        gauge_d(&b, "cohort_loss", "Loss of the last step.", v->loss);
        gauge_d(&b, "cohort_reward_mean", "Mean reward of the groups the last step used.",
                v->reward_mean);
        gauge_d(&b, "cohort_reward_std",
                "Standard deviation of the rewards the last step used.", v->reward_std);
        if (!(v->eval_accuracy < 0))
            gauge_d(&b, "cohort_eval_accuracy", "Last held-out accuracy (0 to 1).",
                    v->eval_accuracy);
        gauge_d(&b, "cohort_kl", "KL estimate to the reference policy at the last step.", v->kl);
        gauge_d(&b, "cohort_clip_fraction", "Fraction of tokens clipped at the last step.",
                v->clip_frac);
        gauge_d(&b, "cohort_entropy", "Mean token entropy at the last step, nats.", v->entropy);
        gauge_d(&b, "cohort_grad_norm", "Gradient norm of the last step, before clipping.",
                v->grad_norm);
        gauge_d(&b, "cohort_learning_rate", "Learning rate of the last step.", v->lr);
        gauge_d(&b, "cohort_learner_tokens_per_second",
                "Learner throughput at the last step, tokens per second.",
                v->learner_tokens_per_s);
        gauge_d(&b, "cohort_sampler_tokens_per_second",
                "Sampling throughput of all actors, tokens per second.",
                v->sampler_tokens_per_s);
        gauge_d(&b, "cohort_staleness_mean_versions",
                "Mean policy versions behind of the groups the last step used.",
                v->staleness_mean);
        gauge_d(&b, "cohort_logprob_max_abs_diff",
                "Largest |learner - behaviour log-prob| at the sampling version, nats.",
                v->logp_max_abs_diff);
        gauge_d(&b, "cohort_reward_latency_seconds", "Latency of the reward service, seconds.",
                v->reward_latency_ms / 1000.0);
        gauge_i(&b, "cohort_groups_used", "Groups the last step trained on.", v->groups_used);
    }

    /* cumulative */
    if (v->n_drop_reasons > 0) {
        family(&b, "cohort_groups_dropped_total", "counter",
               "Groups refused or dropped since the learner started, by reason.");
        for (int i = 0; i < v->n_drop_reasons; i++) {
            series1(&b, "cohort_groups_dropped_total", "reason", v->drop_reason_names[i]);
            sb_printf(&b, "%" PRId64 "\n", v->drops_by_reason[i]);
        }
    }
    counter_i(&b, "cohort_leases_issued_total", "Prompt leases issued (new and re-issued).",
              v->leases_issued);
    counter_i(&b, "cohort_leases_reissued_total",
              "Leases that issued a prompt again (after expiry, return or drop).",
              v->leases_reissued);
    family(&b, "cohort_leases_ended_total", "counter", "Leases ended, by outcome.");
    const struct {
        const char *outcome;
        int64_t n;
    } ended[] = {{"completed", v->leases_completed},
                 {"expired", v->leases_expired},
                 {"returned", v->leases_returned},
                 {"dropped", v->leases_dropped}};
    for (size_t i = 0; i < sizeof ended / sizeof ended[0]; i++) {
        series1(&b, "cohort_leases_ended_total", "outcome", ended[i].outcome);
        sb_printf(&b, "%" PRId64 "\n", ended[i].n);
    }
    gauge_i(&b, "cohort_leases_outstanding", "Live leases now.", v->leases_outstanding);
    gauge_i(&b, "cohort_buffer_groups", "Scored groups waiting to be trained on.",
            v->buffered_groups);
    gauge_i(&b, "cohort_buffer_capacity_groups", "Capacity of the group buffer.",
            v->buffer_capacity);
    gauge_i(&b, "cohort_actors", "Connected actors.", v->n_actors);

    /* per actor */
    if (v->n_actors > 0) {
        family(&b, "cohort_actor_info", "gauge", "Connected actor (1), with its peer address.");
        for (int i = 0; i < v->n_actors; i++) {
            const prom_actor_view *a = &v->actors[i];
            sb_str(&b, "cohort_actor_info{actor=\"");
            sb_label_value(&b, a->name);
            sb_printf(&b, "\",actor_id=\"%" PRIu64 "\",peer=\"", a->id);
            sb_label_value(&b, a->peer);
            sb_str(&b, "\"} 1\n");
        }
        for (int f = 0; f < AV_N; f++) {
            family(&b, k_actor_families[f].name, k_actor_families[f].type,
                   k_actor_families[f].help);
            for (int i = 0; i < v->n_actors; i++) {
                series_actor(&b, k_actor_families[f].name, &v->actors[i]);
                actor_value(&b, &v->actors[i], f);
            }
        }
    }

    if (b.oom) {
        free(b.p);
        return coh_fail(err, COH_ENOMEM, "out of memory rendering the metrics page");
    }
    *text = b.p;
    *len = b.len;
    return COH_OK;
}

/* ==== the HTTP server =================================================================== */

struct prom_server {
    struct MHD_Daemon *daemon;
    int fd;                  /* the listening socket (ours: closed in prom_server_stop) */
    int port;
    pthread_mutex_t mu;      /* guards page, page_len, log */
    char *page;
    size_t page_len;
    char log[256];           /* libmicrohttpd's last message, for start-up errors */
};

static const char k_index[] = "Cohort learner: the metrics are at /metrics "
                              "(Prometheus text format 0.0.4)\n";
static const char k_not_found[] = "not found; the metrics are at /metrics\n";
static const char k_bad_method[] = "method not allowed; use GET /metrics\n";

/* libmicrohttpd's error messages: keep the last one (reported if the start fails). */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    prom_server *s = cls;
    pthread_mutex_lock(&s->mu);
    vsnprintf(s->log, sizeof s->log, fmt, ap);
    size_t n = strlen(s->log);
    while (n > 0 && (s->log[n - 1] == '\n' || s->log[n - 1] == '\r'))
        s->log[--n] = '\0';
    pthread_mutex_unlock(&s->mu);
}

/* Queue one response; body is copied by libmicrohttpd. */
static enum MHD_Result respond(struct MHD_Connection *c, unsigned int status, const char *body,
                               size_t len, const char *content_type, int allow_header)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    enum MHD_Result ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (ok == MHD_YES && allow_header)
        ok = MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    if (ok == MHD_YES)
        ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **req_cls)
{
    prom_server *s = cls;
    const char *plain = "text/plain; charset=utf-8";
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return respond(c, MHD_HTTP_METHOD_NOT_ALLOWED, k_bad_method, sizeof k_bad_method - 1,
                       plain, 1);
    if (strcmp(url, "/metrics") == 0) {
        /* copy under the lock: the loop thread may swap the page right after */
        pthread_mutex_lock(&s->mu);
        struct MHD_Response *r = MHD_create_response_from_buffer(
            s->page_len, s->page ? s->page : (void *)"", MHD_RESPMEM_MUST_COPY);
        pthread_mutex_unlock(&s->mu);
        if (!r)
            return MHD_NO;
        enum MHD_Result ok =
            MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, PROM_CONTENT_TYPE);
        if (ok == MHD_YES)
            ok = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ok;
    }
    if (strcmp(url, "/") == 0)
        return respond(c, MHD_HTTP_OK, k_index, sizeof k_index - 1, plain, 0);
    return respond(c, MHD_HTTP_NOT_FOUND, k_not_found, sizeof k_not_found - 1, plain, 0);
}

/* Split "host:port", ":port" or "[v6]:port". host gets "" for any address. */
static int parse_listen(const char *addr, char *host, size_t host_cap, char *port,
                        size_t port_cap, coh_err *err)
{
    const char *colon, *h = addr;
    size_t hl;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':')
            return coh_fail(err, COH_EINVAL,
                            "metrics listen address '%s': expected [IPv6]:PORT", addr);
        h = addr + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return coh_fail(err, COH_EINVAL,
                            "metrics listen address '%s' has no port; give HOST:PORT or :PORT "
                            "(port 0 picks a free one)",
                            addr);
        hl = (size_t)(colon - addr);
        if (memchr(addr, ':', hl))
            return coh_fail(err, COH_EINVAL,
                            "metrics listen address '%s': write an IPv6 address in brackets, "
                            "[ADDR]:PORT",
                            addr);
    }
    const char *p = colon + 1;
    size_t pl = strlen(p);
    int ok = pl >= 1 && pl <= 5;
    for (size_t i = 0; ok && i < pl; i++)
        ok = p[i] >= '0' && p[i] <= '9';
    if (!ok || atol(p) > 65535)
        return coh_fail(err, COH_EINVAL,
                        "metrics listen address '%s': port '%s' is not a number in 0..65535",
                        addr, p);
    if (hl >= host_cap || pl >= port_cap)
        return coh_fail(err, COH_EINVAL, "metrics listen address '%s' is too long", addr);
    memcpy(host, h, hl);
    host[hl] = '\0';
    memcpy(port, p, pl + 1);
    return COH_OK;
}

/* Resolve, bind and listen: *fd_out gets the socket, or -1 and the returned code says why.
 * Every address the host resolves to is tried in turn (":port" may resolve to :: and
 * 0.0.0.0). An IPv6 socket also takes IPv4 connections. */
static int open_listener(const char *addr, const char *host, const char *port, int *fd_out,
                         coh_err *err)
{
    *fd_out = -1;
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int g = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (g != 0)
        return coh_fail(err, COH_EINVAL,
                        "metrics listen address '%s': cannot resolve host '%s' (%s); give an IP "
                        "address of this machine, or :PORT for all",
                        addr, host, gai_strerror(g));
    int fd = -1, last_errno = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1, zero = 0;
        /* SO_REUSEADDR only lets a restarted learner bind past TIME_WAIT; a port another
         * socket listens on is still refused (EADDRINUSE). */
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
            (ai->ai_family == AF_INET6 &&
             setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero) != 0) ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
            last_errno = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        *fd_out = fd;
        return COH_OK;
    }
    if (last_errno == EADDRINUSE)
        return coh_fail(err, COH_EIO,
                        "cannot listen on metrics address '%s': the port is in use by another "
                        "process; choose another --metrics-listen port (0 picks a free one)",
                        addr);
    if (last_errno == EADDRNOTAVAIL)
        return coh_fail(err, COH_EIO,
                        "cannot listen on metrics address '%s': that address is not on this "
                        "machine; give one of its addresses, or :PORT for all",
                        addr);
    return coh_fail(err, COH_EIO, "cannot listen on metrics address '%s': %s", addr,
                    strerror(last_errno));
}

int prom_server_start(const char *addr, prom_server **out, coh_err *err)
{
    if (out)
        *out = NULL;
    if (!addr || !out)
        return coh_fail(err, COH_EINVAL, "prom_server_start: NULL argument");
    if (!addr[0])
        return coh_fail(err, COH_EINVAL,
                        "metrics listen address is empty; give HOST:PORT or :PORT");
    char host[256], port[8];
    int rc = parse_listen(addr, host, sizeof host, port, sizeof port, err);
    if (rc)
        return rc;

    prom_server *s = calloc(1, sizeof *s);
    if (!s)
        return coh_fail(err, COH_ENOMEM, "out of memory starting the metrics server");
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        return coh_fail(err, COH_EIO, "cannot create the metrics server's mutex");
    }
    rc = open_listener(addr, host, port, &s->fd, err);
    if (rc)
        goto fail_listen;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(s->fd, (struct sockaddr *)&ss, &sl) != 0) {
        rc = coh_fail(err, COH_EIO, "metrics address '%s': getsockname: %s", addr,
                      strerror(errno));
        goto fail_daemon;
    }
    s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);

    /* MHD_USE_ITC: prom_server_stop quiesces the daemon to take the socket back. */
    s->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG, 0,
        NULL, NULL, handle, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)s->fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)64, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10, MHD_OPTION_END);
    if (!s->daemon) {
        pthread_mutex_lock(&s->mu);
        rc = coh_fail(err, COH_EIO, "cannot start the metrics server on '%s': %s", addr,
                      s->log[0] ? s->log : "libmicrohttpd refused to start");
        pthread_mutex_unlock(&s->mu);
        goto fail_daemon;
    }
    *out = s;
    return COH_OK;

fail_daemon:
    /* libmicrohttpd may or may not have closed a socket it was given when its start failed:
     * close it only if it is still open (nothing else opens files during our start-up). */
    if (fcntl(s->fd, F_GETFD) != -1)
        close(s->fd);
fail_listen:
    pthread_mutex_destroy(&s->mu);
    free(s);
    return rc;
}

int prom_server_port(const prom_server *s) { return s ? s->port : -1; }

int prom_server_publish(prom_server *s, const char *text, size_t len, coh_err *err)
{
    if (!s || (!text && len > 0))
        return coh_fail(err, COH_EINVAL, "prom_server_publish: NULL argument");
    char *copy = malloc(len + 1);
    if (!copy)
        return coh_fail(err, COH_ENOMEM, "out of memory copying a %zu-byte metrics page", len);
    if (len)
        memcpy(copy, text, len);
    copy[len] = '\0';
    pthread_mutex_lock(&s->mu);
    char *old = s->page;
    s->page = copy;
    s->page_len = len;
    pthread_mutex_unlock(&s->mu);
    free(old);
    return COH_OK;
}

void prom_server_stop(prom_server *s)
{
    if (!s)
        return;
    /* Quiesce first: libmicrohttpd then hands the listening socket back instead of closing
     * it itself, so the socket's owner is unambiguous. */
    MHD_socket fd = MHD_quiesce_daemon(s->daemon);
    MHD_stop_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    else
        close(s->fd);
    pthread_mutex_destroy(&s->mu);
    free(s->page);
    free(s);
}
