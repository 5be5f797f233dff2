/* bench_broadcast.c - weight broadcast throughput over gRPC on loopback, next to a raw TCP
 * copy of the same bytes measured in the same run.
 *
 *   bench_broadcast [--mb N] [--reps R]
 *
 * A policy of about N MB (default 64) is snapshotted (safetensors + CRC) and served by a
 * cohort.v1.Learner/DownloadWeights-style server stream (1 MiB chunks, CRC per chunk) built
 * on the same glue the learner uses; 1, 2 and 4 clients download it at once, each checking
 * every chunk's CRC and assembling it with wt_recv (the actor's path), and the aggregate MB/s
 * is printed next to a raw loopback TCP copy of the same number of bytes.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "cli.h"
#include "cohort/v1/learner.pb-c.h"
#include "model.h"
#include "rpc.h"
#include "weights.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- server ------------------------------------------------------------------------------- */

static wt_snapshot *g_snap;

typedef struct dl {
    size_t off;
} dl;

static void send_next(rpc_call *call, dl *d);
static void on_sent(rpc_call *call, int ok, void *data)
{
    dl *d = data;
    if (!ok) {
        rpc_call_finish(call, GRPC_STATUS_CANCELLED, "gone");
        free(d);
        return;
    }
    send_next(call, d);
}

static void send_next(rpc_call *call, dl *d)
{
    if (d->off >= wt_snapshot_size(g_snap)) {
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
        free(d);
        return;
    }
    const void *p;
    size_t n;
    uint32_t crc;
    wt_snapshot_chunk(g_snap, d->off, 1 << 20, &p, &n, &crc, NULL);
    Cohort__V1__WeightChunk c = COHORT__V1__WEIGHT_CHUNK__INIT;
    c.version = 1;
    c.offset = d->off;
    c.data.data = (uint8_t *)p;
    c.data.len = n;
    c.chunk_crc32 = crc;
    c.total_bytes = wt_snapshot_size(g_snap);
    c.total_crc32 = wt_snapshot_crc(g_snap);
    d->off += n;
    if (rpc_call_send_msg(call, &c.base, on_sent, d) != COH_OK)
        free(d);
}

static void on_download(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    (void)data;
    dl *d = calloc(1, sizeof *d);
    send_next(call, d);
}

typedef struct server_ctx {
    uv_loop_t loop;
    uv_async_t stop;
    rpc_server *srv;
    int port;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} server_ctx;

static void on_done(rpc_server *s, void *data)
{
    (void)s;
    server_ctx *c = data;
    uv_close((uv_handle_t *)&c->stop, NULL);
}
static void on_stop(uv_async_t *a)
{
    server_ctx *c = a->data;
    rpc_server_shutdown(c->srv, on_done, c);
}

static void *server_main(void *arg)
{
    server_ctx *c = arg;
    uv_loop_init(&c->loop);
    uv_async_init(&c->loop, &c->stop, on_stop);
    c->stop.data = c;
    rpc_server_config cfg = {.listen_address = "127.0.0.1:0"};
    coh_err err;
    if (rpc_server_create(&c->loop, &cfg, &c->srv, &err) ||
        rpc_server_add_method(c->srv, "/cohort.v1.Learner/DownloadWeights", RPC_SERVER_STREAM,
                              on_download, NULL, &err) ||
        rpc_server_start(c->srv, &err)) {
        fprintf(stderr, "bench: %s\n", err.msg);
        exit(1);
    }
    pthread_mutex_lock(&c->mu);
    c->port = rpc_server_port(c->srv);
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    rpc_server_destroy(c->srv);
    uv_loop_close(&c->loop);
    return NULL;
}

/* ---- clients ------------------------------------------------------------------------------ */

typedef struct client {
    char target[64];
    int ok;
} client;

static void *client_main(void *arg)
{
    client *cl = arg;
    rpc_channel *ch = NULL;
    rpc_channel_config cfg = {.max_receive_bytes = 8 << 20};
    coh_err err;
    if (rpc_channel_create(cl->target, &cfg, &ch, &err))
        return NULL;
    Cohort__V1__DownloadRequest req = COHORT__V1__DOWNLOAD_REQUEST__INIT;
    uint8_t *b = NULL;
    size_t n = 0;
    rpc_pack(&req.base, 1 << 20, &b, &n, &err);
    rpc_stream *st = NULL;
    wt_recv *r = NULL;
    wt_recv_create(1, wt_snapshot_size(g_snap), wt_snapshot_crc(g_snap),
                   wt_snapshot_config(g_snap), &r, &err);
    if (rpc_stream_open(ch, "/cohort.v1.Learner/DownloadWeights", b, n, 600000, &st, &err) == 0) {
        const uint8_t *m;
        size_t len;
        while (rpc_stream_next(st, &m, &len) == 1) {
            Cohort__V1__WeightChunk *c = (Cohort__V1__WeightChunk *)rpc_unpack(
                &cohort__v1__weight_chunk__descriptor, m, len);
            if (!c || wt_recv_add(r, c->offset, c->data.data, c->data.len, c->chunk_crc32, &err)) {
                rpc_msg_free(&c->base);
                break;
            }
            rpc_msg_free(&c->base);
        }
        rpc_status s;
        rpc_stream_close(st, &s);
    }
    cl->ok = wt_recv_complete(r) && wt_crc32(0, NULL, 0) == 0;
    wt_recv_destroy(r);
    free(b);
    rpc_channel_destroy(ch);
    return NULL;
}

/* ---- raw TCP ------------------------------------------------------------------------------ */

typedef struct tcp_ctx {
    int lfd;
    size_t bytes;
} tcp_ctx;

static void *tcp_sender(void *arg)
{
    tcp_ctx *t = arg;
    int fd = accept(t->lfd, NULL, NULL);
    static char buf[1 << 20];
    size_t left = t->bytes;
    while (left > 0) {
        ssize_t w = write(fd, buf, left < sizeof buf ? left : sizeof buf);
        if (w <= 0)
            break;
        left -= (size_t)w;
    }
    close(fd);
    return NULL;
}

static double raw_tcp_mbps(size_t bytes)
{
    tcp_ctx t = {.bytes = bytes};
    t.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    bind(t.lfd, (struct sockaddr *)&a, sizeof a);
    listen(t.lfd, 1);
    getsockname(t.lfd, (struct sockaddr *)&a, &al);
    pthread_t th;
    pthread_create(&th, NULL, tcp_sender, &t);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    double t0 = now_s();
    connect(fd, (struct sockaddr *)&a, sizeof a);
    static char buf[1 << 20];
    size_t got = 0;
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0)
        got += (size_t)r;
    double dt = now_s() - t0;
    close(fd);
    pthread_join(th, NULL);
    close(t.lfd);
    return (double)got / dt / 1e6;
}

int main(int argc, char **argv)
{
    int mb = 64, reps = 3, opt;
    static const struct option opts[] = {{"mb", 1, 0, 'm'}, {"reps", 1, 0, 'r'}, {0, 0, 0, 0}};
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        coh_err err;
        int bad = 0;
        if (opt == 'm')
            bad = cli_parse_int("--mb", optarg, 1, 4096, &mb, &err);
        else if (opt == 'r')
            bad = cli_parse_int("--reps", optarg, 1, 1000, &reps, &err);
        else {
            fprintf(stderr, "usage: bench_broadcast [--mb N] [--reps R]\n");
            return 2;
        }
        if (bad) {
            fprintf(stderr, "bench_broadcast: %s\n", err.msg);
            return 2;
        }
    }
    /* a model of about mb MB: dim 512, layers as needed */
    model_config c = model_config_default(98);
    c.dim = 512;
    c.hidden_dim = 1408;
    c.n_heads = 8;
    c.n_kv_heads = 8;
    c.max_seq = 64;
    c.n_layers = 1;
    while ((double)((size_t)c.n_layers * (4 * 512 * 512 + 3 * 512 * 1408)) * 4 < mb * 1e6)
        c.n_layers++;
    model *m = NULL;
    coh_err err;
    if (model_create(&c, &m, &err)) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 1;
    }
    model_init_random(m, 1);
    if (wt_snapshot_make(m, 1, &g_snap, &err)) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 1;
    }
    double size_mb = (double)wt_snapshot_size(g_snap) / 1e6;
    printf("policy: %d layers x dim 512, weights %.1f MB; 1 MiB chunks with CRC-32 each, "
           "assembled and verified by every client\n",
           c.n_layers, size_mb);
    rpc_global_init();
    server_ctx sc;
    memset(&sc, 0, sizeof sc);
    pthread_mutex_init(&sc.mu, NULL);
    pthread_cond_init(&sc.cv, NULL);
    pthread_t sth;
    pthread_create(&sth, NULL, server_main, &sc);
    pthread_mutex_lock(&sc.mu);
    while (!sc.port)
        pthread_cond_wait(&sc.cv, &sc.mu);
    pthread_mutex_unlock(&sc.mu);

    int counts[3] = {1, 2, 4};
    for (int k = 0; k < 3; k++) {
        int n = counts[k];
        double best = 0, tcp_best = 0;
        for (int rep = 0; rep < reps; rep++) {
            client cl[4];
            pthread_t th[4];
            double t0 = now_s();
            for (int i = 0; i < n; i++) {
                snprintf(cl[i].target, sizeof cl[i].target, "127.0.0.1:%d", sc.port);
                cl[i].ok = 0;
                pthread_create(&th[i], NULL, client_main, &cl[i]);
            }
            int ok = 1;
            for (int i = 0; i < n; i++) {
                pthread_join(th[i], NULL);
                ok &= cl[i].ok;
            }
            double mbps = size_mb * n / (now_s() - t0);
            if (!ok) {
                fprintf(stderr, "bench: a download failed\n");
                return 1;
            }
            if (mbps > best)
                best = mbps;
            double t = raw_tcp_mbps(wt_snapshot_size(g_snap) * (size_t)n);
            if (t > tcp_best)
                tcp_best = t;
        }
        printf("  %d actor%s: %7.0f MB/s aggregate (best of %d)   raw loopback TCP copy of the "
               "same bytes: %7.0f MB/s   ratio %.2f\n",
               n, n > 1 ? "s" : " ", best, reps, tcp_best, best / tcp_best);
    }
    uv_async_send(&sc.stop);
    pthread_join(sth, NULL);
    wt_snapshot_destroy(g_snap);
    model_destroy(m);
    rpc_global_shutdown();
    return 0;
}
