/* promserve.h - a tiny HTTP server for a Prometheus text page (libmicrohttpd, one thread).
 *
 *   GET /metrics   200, Content-Type PROM_CONTENT_TYPE, the page last given to
 *                  prom_server_publish (empty before the first one);
 *   GET /          200, a one-line text page pointing to /metrics;
 *   other paths    404;  other methods  405 (Allow: GET, HEAD).  HEAD is GET without body.
 *
 * The owner (a service's loop thread) renders a page and publishes it; the server thread
 * serves copies of it. The page is swapped under a mutex: publish and serve never race, and a
 * client always gets one whole page, never a mix of two. Used by cohort-learner (learner/prom.h
 * renders its page) and cohort-reward.
 *
 * Thread safety: prom_server_publish, prom_server_port and the serving thread may run
 * concurrently; prom_server_stop must not race any other call on the same server.
 */
#ifndef COHORT_PROMSERVE_H
#define COHORT_PROMSERVE_H

#include <stddef.h>

#include "err.h"

/* Content-Type of /metrics. */
#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* ---- the HTTP server ------------------------------------------------------------------ */

typedef struct prom_server prom_server; /* opaque */

/* Bind address ("host:port", ":port" for every address, "[v6addr]:port"; port 0 = any free
 * port, see prom_server_port) and start serving on a thread of its own. The socket is bound
 * before this returns, so a scrape may follow at once.
 * Fails, without hanging and with *out = NULL, on a malformed address or port (COH_EINVAL), a
 * host that does not resolve (COH_EINVAL), a port in use or an address not on this machine
 * (COH_EIO), or a server that cannot start (COH_EIO); the message names the address. */
int prom_server_start(const char *address, prom_server **out /* OUT */, coh_err *err);

/* The bound port (the chosen one when started with port 0). */
int prom_server_port(const prom_server *s);

/* Replace the page /metrics serves with a copy of text[0..len). Thread-safe. On failure
 * (COH_ENOMEM; COH_EINVAL for s NULL or text NULL with len > 0) the old page stays. */
int prom_server_publish(prom_server *s, const char *text, size_t len, coh_err *err);

/* Stop serving, close every connection and the socket, join the thread, free s. NULL is
 * fine. Cannot fail. */
void prom_server_stop(prom_server *s);

#endif /* COHORT_PROMSERVE_H */
