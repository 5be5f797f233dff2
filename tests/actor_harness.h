/* actor_harness.h - a real gRPC server for the actor module tests: rpc_server on
 * 127.0.0.1:0, driven by its own libuv loop in a thread; the test's blocking clients (the
 * actor modules) talk to it over loopback. Handlers run on the server thread and must not
 * call cmocka asserts: they record what they saw (under ah_lock) for the test thread to check.
 *
 * Usage: ah_start(&h, methods, n) -> rpc_channel_create("127.0.0.1:<h.port>") -> ...
 *        -> ah_stop(&h). Header-only (static functions), one harness per test at a time.
 */
#ifndef COHORT_TESTS_ACTOR_HARNESS_H
#define COHORT_TESTS_ACTOR_HARNESS_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc.h"

typedef struct ah_method {
    const char *name;
    rpc_kind kind;
    rpc_handler_cb cb;
    void *data;
} ah_method;

typedef struct ah_server {
    pthread_t thread;
    uv_loop_t loop;
    uv_async_t stop_async;
    rpc_server *srv;
    int port;
    int start_rc;
    char err[COH_ERR_MSG_LEN];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready;
    const ah_method *methods;
    int n_methods;
} ah_server;

static pthread_mutex_t ah_mu = PTHREAD_MUTEX_INITIALIZER; /* guards handler records */
static void ah_lock(void) { pthread_mutex_lock(&ah_mu); }
static void ah_unlock(void) { pthread_mutex_unlock(&ah_mu); }

static void ah_server_done_(rpc_server *s, void *data)
{
    ah_server *h = data;
    rpc_server_destroy(s);
    h->srv = NULL;
    uv_close((uv_handle_t *)&h->stop_async, NULL);
}

static void ah_on_stop_(uv_async_t *a)
{
    ah_server *h = a->data;
    if (rpc_server_shutdown(h->srv, ah_server_done_, h) != COH_OK) {
        rpc_server_destroy(h->srv);
        h->srv = NULL;
        uv_close((uv_handle_t *)&h->stop_async, NULL);
    }
}

static void *ah_thread_(void *arg)
{
    ah_server *h = arg;
    coh_err err;
    coh_err_clear(&err);
    rpc_server_config cfg = {.listen_address = "127.0.0.1:0", .max_receive_bytes = -1};
    int rc = rpc_server_create(&h->loop, &cfg, &h->srv, &err);
    for (int i = 0; rc == COH_OK && i < h->n_methods; i++)
        rc = rpc_server_add_method(h->srv, h->methods[i].name, h->methods[i].kind,
                                   h->methods[i].cb, h->methods[i].data, &err);
    if (rc == COH_OK)
        rc = rpc_server_start(h->srv, &err);
    pthread_mutex_lock(&h->mu);
    h->start_rc = rc;
    snprintf(h->err, sizeof h->err, "%s", err.msg);
    h->port = rc == COH_OK ? rpc_server_port(h->srv) : 0;
    h->ready = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    if (rc != COH_OK) {
        rpc_server_destroy(h->srv);
        h->srv = NULL;
        uv_close((uv_handle_t *)&h->stop_async, NULL);
    }
    uv_run(&h->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* Start serving methods; returns 0 with h->port set, else the error (h->err says why). */
static int ah_start(ah_server *h, const ah_method *methods, int n)
{
    memset(h, 0, sizeof *h);
    h->methods = methods;
    h->n_methods = n;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    uv_loop_init(&h->loop);
    uv_async_init(&h->loop, &h->stop_async, ah_on_stop_);
    h->stop_async.data = h;
    if (pthread_create(&h->thread, NULL, ah_thread_, h))
        return COH_EIO;
    pthread_mutex_lock(&h->mu);
    while (!h->ready)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    if (h->start_rc != COH_OK) {
        pthread_join(h->thread, NULL);
        uv_loop_close(&h->loop);
    }
    return h->start_rc;
}

/* Shut the server down (cancelling held calls), join its thread, close its loop. */
static void ah_stop(ah_server *h)
{
    uv_async_send(&h->stop_async);
    pthread_join(h->thread, NULL);
    uv_loop_close(&h->loop);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
}

/* "127.0.0.1:<port>" into buf. */
static const char *ah_target(const ah_server *h, char *buf, size_t cap)
{
    snprintf(buf, cap, "127.0.0.1:%d", h->port);
    return buf;
}

#endif
