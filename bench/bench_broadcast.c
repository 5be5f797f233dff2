/* bench_broadcast.c - weight broadcast throughput over gRPC on loopback, next to a raw TCP
 * copy of the same bytes measured in the same run, and the CRC-32 speed.
 *
 *   bench_broadcast [--mb N] [--reps R] [--chunk-kb K] [--window-mb W] [--warmup N]
 *                   [--fresh-buffers]
 *
 * A policy of about N MB (default 64) is snapshotted (safetensors + per-block CRC table) and
 * served by a cohort.v1.Learner/DownloadWeights-style server stream built on the learner's
 * code path: chunks of K KiB (default 4096) whose data goes to gRPC as a slice over the
 * snapshot (wchunk_send, no copy), CRCs from the per-version table. Clients read each
 * message as gRPC's slices (rpc_stream_next_pieces), decode it in place (wchunk_decode) and
 * copy the data once, into the download buffer, checking its CRC (wt_recv_add_pieces) -
 * the actor's path. Reported (best of R, aggregate MB/s, ratio to a raw loopback TCP copy
 * of the same F32 bytes measured right after; the clients' channels use a fixed HTTP/2
 * window of W MiB, default 16, 0 = gRPC's adaptive one; N untimed warm-up downloads first,
 * default 2). Memory as in cohort-actor: each client slot downloads through its own buffer
 * pool (wt_pool), kept from one download to the next as the actor's download_cache keeps it,
 * and the allocator keeps freed memory (wt_malloc_keep_memory, as the actor calls it at
 * start), so that gRPC's receive buffers are not fresh either; a steady-state download then
 * touches no fresh pages. --fresh-buffers does neither (every download page-faults its
 * buffers in: the earlier behaviour); --keep-memory is accepted and means the default:
 *   - F32 full to 1, 2 and 4 actors at once (and 4 actors' time / 1 actor's time);
 *   - BF16 wire (half the bytes; MB/s counted in F32-equivalent bytes);
 *   - delta with half of the parameters frozen (only changed tensors travel);
 *   - CRC-32 GB/s: zlib's crc32 and wt_crc32 (PCLMULQDQ folding where the CPU has it).
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
#include <zlib.h>

#include "cli.h"
#include "cohort/v1/learner.pb-c.h"
#include "model.h"
#include "rpc.h"
#include "rpc_wchunk.h"
#include "weights.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- server ------------------------------------------------------------------------------- */

static wt_snapshot *g_base;  /* version 1 (F32) */
static wt_snapshot *g_full;  /* version 2 (F32) */
static wt_snapshot *g_bf16;  /* version 2, BF16 wire */
static wt_snapshot *g_delta; /* version 2 as a delta from version 1 */
static size_t g_chunk = 4u << 20;
static int g_window = 16 << 20; /* the clients' fixed HTTP/2 stream window (0 = adaptive) */

typedef struct dl {
    const wt_snapshot *s;
    size_t off;
    int first;
    int wire;
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
    if (d->off >= wt_snapshot_size(d->s) && !d->first) {
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
        free(d);
        return;
    }
    const void *p;
    size_t n;
    uint32_t crc;
    wt_snapshot_chunk(d->s, d->off, g_chunk, &p, &n, &crc, NULL);
    Cohort__V1__WeightChunk c = COHORT__V1__WEIGHT_CHUNK__INIT;
    Cohort__V1__WeightDelta del = COHORT__V1__WEIGHT_DELTA__INIT;
    uint64_t *ro = NULL, *rl = NULL;
    c.version = 2;
    c.offset = d->off;
    c.chunk_crc32 = crc;
    c.total_bytes = wt_snapshot_size(d->s);
    c.total_crc32 = wt_snapshot_crc(d->s);
    c.wire_dtype = d->wire == WT_WIRE_BF16 ? COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_BF16
                                           : COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_F32;
    if (d->first && d->wire == WT_WIRE_DELTA) {
        const wt_range *r;
        size_t nr = wt_snapshot_delta_ranges(d->s, &r);
        ro = malloc(nr * sizeof *ro);
        rl = malloc(nr * sizeof *rl);
        for (size_t i = 0; i < nr; i++) {
            ro[i] = r[i].off;
            rl[i] = r[i].len;
        }
        del.base_version = wt_snapshot_delta_base(d->s);
        del.result_bytes = wt_snapshot_delta_result_size(d->s);
        del.result_crc32 = wt_snapshot_delta_result_crc(d->s);
        del.n_range_offsets = del.n_range_lengths = nr;
        del.range_offsets = ro;
        del.range_lengths = rl;
        c.delta = &del;
    }
    d->first = 0;
    size_t off = d->off;
    d->off += n;
    int rc = wchunk_send(call, &c, d->s, off, n, on_sent, d);
    free(ro);
    free(rl);
    if (rc != COH_OK) {
        rpc_call_finish(call, GRPC_STATUS_CANCELLED, "gone");
        free(d);
    }
}

static void on_download(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    (void)data;
    Cohort__V1__DownloadRequest *req = (Cohort__V1__DownloadRequest *)rpc_call_unpack_request(
        call, &cohort__v1__download_request__descriptor);
    if (!req)
        return;
    dl *d = calloc(1, sizeof *d);
    d->first = 1;
    d->wire = req->delta ? WT_WIRE_DELTA
              : req->wire_dtype == COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_BF16
                  ? WT_WIRE_BF16
                  : WT_WIRE_F32;
    d->s = d->wire == WT_WIRE_DELTA ? g_delta : d->wire == WT_WIRE_BF16 ? g_bf16 : g_full;
    rpc_msg_free(&req->base);
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

/* one buffer pool per actor slot, kept across downloads as the actor's download_cache keeps
 * its own (NULL with --fresh-buffers: every download allocates fresh buffers) */
static wt_pool *g_pool[4];

typedef struct client {
    wt_pool *pool;
    char target[64];
    int wire; /* WT_WIRE_* asked for */
    int verify; /* build the model at the end (outside the timing) */
    int ok;
    double t_end;
} client;

static void *client_main(void *arg)
{
    client *cl = arg;
    rpc_channel *ch = NULL;
    rpc_channel_config cfg = {.max_receive_bytes = (int)g_chunk + (1 << 20),
                              .stream_window_bytes = g_window};
    coh_err err;
    if (rpc_channel_create(cl->target, &cfg, &ch, &err))
        return NULL;
    Cohort__V1__DownloadRequest req = COHORT__V1__DOWNLOAD_REQUEST__INIT;
    req.version = 2;
    req.max_chunk_bytes = (uint32_t)g_chunk;
    if (cl->wire == WT_WIRE_BF16)
        req.wire_dtype = COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_BF16;
    if (cl->wire == WT_WIRE_DELTA) {
        req.delta = 1;
        req.base_version = 1;
    }
    uint8_t *b = NULL;
    size_t n = 0;
    rpc_pack(&req.base, 1 << 20, &b, &n, &err);
    rpc_stream *st = NULL;
    wt_recv *r = NULL;
    wchunk_view v;
    wchunk_view_init(&v);
    int bad = 0;
    if (rpc_stream_open(ch, "/cohort.v1.Learner/DownloadWeights", b, n, 600000, &st, &err) == 0) {
        const rpc_piece *pc;
        size_t np;
        while (!bad && rpc_stream_next_pieces(st, &pc, &np) == 1) {
            if (wchunk_decode(&v, pc, np, &err)) {
                bad = 1;
                break;
            }
            if (!r) {
                if (wt_recv_create_pooled(2, v.total_bytes, v.total_crc32,
                                          wt_snapshot_config(g_full), cl->pool, &r, &err)) {
                    bad = 1;
                    break;
                }
                if (v.wire_dtype == COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_BF16)
                    wt_recv_set_bf16(r);
                if (v.delta) {
                    size_t nr = v.delta->n_range_offsets;
                    wt_range *rg = malloc((nr ? nr : 1) * sizeof *rg);
                    for (size_t i = 0; i < nr; i++)
                        rg[i] = (wt_range){v.delta->range_offsets[i], v.delta->range_lengths[i]};
                    bad = wt_recv_set_delta(r, wt_snapshot_blob(g_base), wt_snapshot_size(g_base),
                                            rg, nr, v.delta->result_bytes,
                                            v.delta->result_crc32, &err) != COH_OK;
                    free(rg);
                }
            }
            if (!bad && wt_recv_add_pieces(r, v.offset, v.data, v.ndata, v.chunk_crc32, &err))
                bad = 1;
        }
        rpc_status s;
        rpc_stream_close(st, &s);
    }
    cl->t_end = now_s();
    cl->ok = !bad && r && wt_recv_complete(r);
    if (cl->ok && cl->verify) {
        model *m = NULL;
        cl->ok = wt_recv_finish(r, &m, &err) == COH_OK;
        if (!cl->ok)
            fprintf(stderr, "bench: %s\n", err.msg);
        model_destroy(m);
    } else if (bad) {
        fprintf(stderr, "bench: %s\n", err.msg);
    }
    wchunk_view_clear(&v);
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

/* best-of-reps run of n clients asking for `wire`; returns aggregate F32-equivalent MB/s
 * and the best wall time */
static int run(int port, int n, int wire, int reps, double *best_mbps, double *best_s,
               double *tcp_mbps)
{
    double f32_mb = (double)wt_snapshot_size(g_full) / 1e6;
    *best_mbps = 0;
    *best_s = 1e30;
    *tcp_mbps = 0;
    for (int rep = 0; rep < reps; rep++) {
        client cl[4];
        pthread_t th[4];
        double t0 = now_s();
        for (int i = 0; i < n; i++) {
            memset(&cl[i], 0, sizeof cl[i]);
            snprintf(cl[i].target, sizeof cl[i].target, "127.0.0.1:%d", port);
            cl[i].wire = wire;
            cl[i].pool = g_pool[i];
            cl[i].verify = wire != WT_WIRE_F32 && rep == 0 && i == 0;
            pthread_create(&th[i], NULL, client_main, &cl[i]);
        }
        int ok = 1;
        double t_end = t0;
        for (int i = 0; i < n; i++) {
            pthread_join(th[i], NULL);
            ok &= cl[i].ok;
            if (cl[i].t_end > t_end)
                t_end = cl[i].t_end;
        }
        if (!ok) {
            fprintf(stderr, "bench: a download failed\n");
            return 1;
        }
        double dt = t_end - t0;
        if (dt < *best_s)
            *best_s = dt;
        if (f32_mb * n / dt > *best_mbps)
            *best_mbps = f32_mb * n / dt;
        double t = raw_tcp_mbps(wt_snapshot_size(g_full) * (size_t)n);
        if (t > *tcp_mbps)
            *tcp_mbps = t;
    }
    return 0;
}

static void crc_bench(void)
{
    size_t n = 64u << 20;
    unsigned char *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(i * 2654435761u >> 13);
    double best_z = 1e30, best_w = 1e30;
    uint32_t cz = 0, cw = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s();
        cz = (uint32_t)crc32(0, b, (uInt)n);
        double t1 = now_s();
        cw = wt_crc32(0, b, n);
        double t2 = now_s();
        if (t1 - t0 < best_z)
            best_z = t1 - t0;
        if (t2 - t1 < best_w)
            best_w = t2 - t1;
    }
    printf("CRC-32 of 64 MiB: zlib %.2f GB/s, wt_crc32 (%s) %.2f GB/s, %.1fx%s\n",
           (double)n / best_z / 1e9, wt_crc32_impl(), (double)n / best_w / 1e9, best_z / best_w,
           cz == cw ? "" : "   MISMATCH!");
    free(b);
}

int main(int argc, char **argv)
{
    int mb = 64, reps = 3, chunk_kb = 4096, window_mb = 16, warmup = 2, keep_memory = 0,
        fresh = 0, opt;
    static const struct option opts[] = {{"mb", 1, 0, 'm'},
                                         {"keep-memory", 0, 0, 'k'},
                                         {"fresh-buffers", 0, 0, 'f'},
                                         {"warmup", 1, 0, 'u'},
                                         {"reps", 1, 0, 'r'},
                                         {"chunk-kb", 1, 0, 'c'},
                                         {"window-mb", 1, 0, 'w'},
                                         {0, 0, 0, 0}};
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        coh_err err;
        int bad = 0;
        if (opt == 'm')
            bad = cli_parse_int("--mb", optarg, 1, 4096, &mb, &err);
        else if (opt == 'r')
            bad = cli_parse_int("--reps", optarg, 1, 1000, &reps, &err);
        else if (opt == 'c')
            bad = cli_parse_int("--chunk-kb", optarg, 64, 16384, &chunk_kb, &err);
        else if (opt == 'w')
            bad = cli_parse_int("--window-mb", optarg, 0, 1024, &window_mb, &err);
        else if (opt == 'k')
            keep_memory = 1;
        else if (opt == 'f')
            fresh = 1;
        else if (opt == 'u')
            bad = cli_parse_int("--warmup", optarg, 0, 100, &warmup, &err);
        else {
            fprintf(stderr, "usage: bench_broadcast [--mb N] [--reps R] [--chunk-kb K] "
                            "[--window-mb W] [--warmup N] [--keep-memory] "
                            "[--fresh-buffers]\n");
            return 2;
        }
        if (bad) {
            fprintf(stderr, "bench_broadcast: %s\n", err.msg);
            return 2;
        }
    }
    (void)keep_memory; /* the default now */
    int kept = !fresh && wt_malloc_keep_memory() == COH_OK;
    for (int i = 0; i < 4 && !fresh; i++) {
        coh_err perr;
        if (wt_pool_create(&g_pool[i], &perr)) {
            fprintf(stderr, "bench: %s\n", perr.msg);
            return 1;
        }
    }
    g_chunk = (size_t)chunk_kb << 10;
    g_window = window_mb << 20;
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
    double t0 = now_s();
    if (wt_snapshot_make(m, 1, &g_base, &err)) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 1;
    }
    double t_snap = now_s() - t0;
    /* version 2: the second half of the parameter slab changed, the first half frozen */
    float *p = model_params(m);
    size_t np = model_num_params(m);
    for (size_t i = np / 2; i < np; i++)
        p[i] += 1e-3f;
    t0 = now_s();
    if (wt_snapshot_make(m, 2, &g_full, &err)) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 1;
    }
    double t1 = now_s();
    if (wt_snapshot_make_bf16(g_full, &g_bf16, &err)) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 1;
    }
    double t2 = now_s();
    if (wt_snapshot_make_delta(g_base, g_full, &g_delta, &err)) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 1;
    }
    double t3 = now_s();
    (void)t_snap;
    double size_mb = (double)wt_snapshot_size(g_full) / 1e6;
    const char *const *names;
    size_t nchanged = wt_snapshot_delta_names(g_delta, &names);
    printf("policy: %d layers x dim 512, weights %.1f MB; %d KiB chunks sent as slices over the "
           "snapshot, CRCs once per version; every client assembles and checks each chunk; "
           "client HTTP/2 window %s\n",
           c.n_layers, size_mb, chunk_kb, window_mb ? "fixed" : "adaptive (gRPC default)");
    if (window_mb)
        printf("  (fixed window: %d MiB per stream, BDP probing off)\n", window_mb);
    printf("  download buffers: %s; allocator %s\n",
           fresh ? "fresh on every download (--fresh-buffers)"
                 : "one pool per actor, reused across downloads (the actor's download_cache)",
           kept ? "keeps freed memory (as cohort-actor)" : "as is (freed memory goes back)");
    printf("per version, once: snapshot + CRC table %.0f ms; BF16 variant %.0f ms (%.1f MB); "
           "delta variant %.0f ms (%.1f MB, %zu tensors changed)\n",
           (t1 - t0) * 1e3, (t2 - t1) * 1e3, (double)wt_snapshot_size(g_bf16) / 1e6,
           (t3 - t2) * 1e3, (double)wt_snapshot_size(g_delta) / 1e6, nchanged);
    crc_bench();
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

    struct {
        int n, wire;
        const char *label;
    } cases[] = {{1, WT_WIRE_F32, "F32 full, 1 actor "},  {2, WT_WIRE_F32, "F32 full, 2 actors"},
                 {4, WT_WIRE_F32, "F32 full, 4 actors"},  {1, WT_WIRE_BF16, "BF16,     1 actor "},
                 {4, WT_WIRE_BF16, "BF16,     4 actors"}, {1, WT_WIRE_DELTA, "delta,    1 actor "},
                 {4, WT_WIRE_DELTA, "delta,    4 actors"}};
    double t_one = 0, t_four = 0;
    int rc = 0;
    /* untimed downloads first: a long-running actor's allocator holds warm memory for the
     * next download, while the first ones fault every page in (expensive on a VM) */
    for (int w = 0; w < warmup; w++) {
        double a, b2, c2;
        if (run(sc.port, 4, WT_WIRE_F32, 1, &a, &b2, &c2))
            return 1;
    }
    if (warmup)
        printf("  (after %d untimed warm-up downloads by 4 actors)\n", warmup);
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        double mbps, secs, tcp;
        if (run(sc.port, cases[k].n, cases[k].wire, reps, &mbps, &secs, &tcp)) {
            rc = 1;
            break;
        }
        if (k == 0)
            t_one = secs;
        if (k == 2)
            t_four = secs;
        printf("  %s: %6.0f MB/s aggregate (F32-equivalent; best of %d, %.3f s)   raw loopback "
               "TCP copy of the same F32 bytes: %6.0f MB/s   ratio %.2f\n",
               cases[k].label, mbps, reps, secs, tcp, mbps / tcp);
        if (k == 0)
            printf("    (target: ratio >= 0.70 to one actor)\n");
        if (k == 2)
            printf("    4 actors take %.2fx the time of 1 (target <= 1.5x)\n", t_four / t_one);
    }
    uv_async_send(&sc.stop);
    pthread_join(sth, NULL);
    for (int i = 0; i < 4; i++) {
        wt_pool_stats ps;
        wt_pool_get_stats(g_pool[i], &ps);
        if (i == 0 && g_pool[i])
            printf("  actor 0's buffer pool: %zu buffers reused, %zu fresh, %zu held (%.1f MB)\n",
                   ps.reused, ps.fresh, ps.buffers, (double)ps.held_bytes / 1e6);
        wt_pool_destroy(g_pool[i]);
    }
    wt_snapshot_destroy(g_delta);
    wt_snapshot_destroy(g_bf16);
    wt_snapshot_destroy(g_full);
    wt_snapshot_destroy(g_base);
    model_destroy(m);
    rpc_global_shutdown();
    return rc;
}
