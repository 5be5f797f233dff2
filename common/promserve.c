/* promserve.c - the Prometheus text endpoint's HTTP server (see promserve.h). */
#include "promserve.h"

#include <errno.h>
#include <fcntl.h>
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

static const char k_index[] = "Cohort: the metrics are at /metrics "
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
