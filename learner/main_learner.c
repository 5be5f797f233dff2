/* main_learner.c - cohort-learner: the central learner service.
 *
 * Serves cohort.v1.Learner (actors), cohort.v1.Monitor (operators) and grpc.health.v1.Health
 * on one port (default 50051), optionally Monitor alone on a second one (--monitor-listen)
 * and the Prometheus page on a third (--metrics-listen). The rules live in modules, each
 * with its own contract and tests: actors.h (registry), prompts.h (prompt source), lease.h
 * (leases), admit.h (admission of submitted groups, typed verdicts), groupbuf.h (the buffer),
 * acklog.h (accepted groups made durable before they are acknowledged), wpub.h (published
 * versions), history.h (step records), resume.h (the place in the data, in checkpoints),
 * trainer.h (the learning rule), trainopt.h (the one option table). This file wires them to
 * gRPC: each handler decodes, asks a module, answers.
 *
 * Threads. Every handler runs on the libuv loop thread, which alone touches the modules'
 * state. Steps run on the libuv thread pool as jobs: a job owns the trainer while it runs
 * (the loop thread never calls the trainer meanwhile: it answers from its own copies of the
 * step, version and settings) and hands its results back to the loop thread in its done
 * callback. At most one job runs. The warm start (SFT, RAFT) runs as such jobs too, so
 * health, Monitor and registration answer while it runs; actors wait for the first version.
 *
 * Exactly once. An accepted group gets an acceptance number (seq), is appended to
 * OUT/accepted.log and fsync'ed before the actor hears "accepted"; every checkpoint records
 * the last seq its weights contain (cluster_state.json, with the prompt cursor and the
 * unsettled prompts). A restarted learner (--resume) replays the log after that seq, so
 * every acknowledged group is trained exactly once in the run's history; OUT/ledger.jsonl
 * lists, per step, the (seq, lease) pairs it trained.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "acklog.h"
#include "actors.h"
#include "admit.h"
#include "chat.h"
#include "cli.h"
#include "cohort/v1/learner.pb-c.h"
#include "cohort/v1/monitor.pb-c.h"
#include "fsutil.h"
#include "groupbuf.h"
#include "history.h"
#include "jinja.h"
#include "lease.h"
#include "linalg.h"
#include "prom.h"
#include "prompts.h"
#include "resume.h"
#include "rpc.h"
#include "rpc_wchunk.h"
#include "tokenizer.h"
#include "trainer.h"
#include "trainopt.h"
#include "tsan.h"
#include "weights.h"
#include "wpub.h"

#define MAX_ACTORS 256
#define HISTORY 1024
#define MAX_PARKED 64
#define CHUNK_DEFAULT (1u << 20)
#define CHUNK_MIN (64u << 10)
#define CHUNK_MAX (16u << 20)

/* ---- state ------------------------------------------------------------------------------ */

typedef struct watcher { /* WatchVersions */
    rpc_call *call;
    int sending;
    int64_t sent; /* last version sent */
    struct watcher *next;
} watcher;

typedef struct mwatcher { /* WatchMetrics */
    rpc_call *call;
    int sending;
    long next_step;
    struct mwatcher *next;
} mwatcher;

typedef struct parked { /* a valid submission waiting for room in the buffer */
    rpc_call *call;
    Cohort__V1__SubmitGroupRequest *req;
    struct parked *next;
} parked;

typedef enum { PH_WARMUP, PH_RL, PH_DONE } run_phase;

/* One step on the thread pool. The worker reads and writes only the trainer and this job. */
typedef struct job {
    uv_work_t work;
    struct learner *L;
    int rl;               /* 1: an RL step on batch; 0: a warm-start step */
    gbuf_group **batch;
    int n;
    long refused[TRAINER_DROP_N];
    uint64_t seq_first, seq_last;
    /* results */
    int rc;
    coh_err err;
    trainer_metrics m;
    wt_snapshot *snap;
    int has_next, in_rl;
} job;

typedef struct learner {
    uv_loop_t *loop;
    rpc_server *server, *mserver;
    prom_server *prom;
    int servers_up;
    trainer *tr;
    /* the loop thread's copies (never read from the trainer while a job runs) */
    trainer_config cfg;
    long step, total_steps;
    int64_t version;
    const char *phase_name;
    run_phase phase;
    char *tok_json;
    const tokenizer *tok;
    jinja_tpl *chat_tpl;   /* renders prompt files' "messages" (NULL: none) */
    chat_config chat_cfg;  /* bos/eos strings of the policy's tokenizer_config.json */
    int32_t stop_ids[1 + SAMPLE_MAX_STOP]; /* ids a completion ends at (EOS ids) */
    int n_stop;
    char *stop_text[STOPS_MAX]; /* SamplingParams.stop: cfg.stop's strings (fill_sampling) */
    psrc *prompts;
    lease_table *leases;
    gbuf *buf;
    gbuf_config bcfg;
    actors *actors;
    wpub *pub;
    mhist *hist;
    alog *log;
    FILE *ledger;
    uint64_t next_seq;     /* acceptance number of the next accepted group */
    uint64_t trained_seq;  /* last seq trained (in the trainer's weights) */
    int resumed_state;     /* the cluster state came from a checkpoint */
    watcher *watchers;
    mwatcher *mwatchers;
    parked *parked;
    int n_parked;
    job *running;
    int paused, stopping, shut;
    char pause_reason[128];
    int heartbeat_ms, max_staleness, buffer_groups;
    uint64_t start_ms;
    uv_timer_t tick, linger;
    uv_signal_t sigint, sigterm;
    long refused[TRAINER_DROP_N];    /* since the last step */
    long drops_total[TRAINER_DROP_N];/* since this process started */
    double lat_sum, last_latency;
    long lat_n;
} learner;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t random_u64(void)
{
    uint64_t x = 0;
    while (x == 0)
        if (getrandom(&x, sizeof x, 0) != (ssize_t)sizeof x)
            x = (uint64_t)now_ms() * 0x9e3779b97f4a7c15ULL;
    return x;
}

static void maybe_step(learner *L);
static void shutdown_all(learner *L);
static void finish_run(learner *L);
static void publish_prom(learner *L);

/* ---- messages ---------------------------------------------------------------------------- */

static void fill_sampling(const learner *L, Cohort__V1__SamplingParams *sp)
{
    cohort__v1__sampling_params__init(sp);
    sp->n_stop_token_ids = (size_t)L->n_stop;
    sp->stop_token_ids = (int32_t *)L->stop_ids;
    /* the run's stop strings (--stop); cfg.stop never changes during a run, and the pointers
     * (into L->cfg, which is reassigned in place) stay valid */
    sp->n_stop = (size_t)L->cfg.stop.n;
    sp->stop = (char **)L->stop_text;
    sp->temperature = L->cfg.loss.temperature;
    sp->top_k = L->cfg.sampling.top_k;
    sp->top_p = L->cfg.sampling.top_p;
    sp->max_new_tokens = L->cfg.sampling.max_new_tokens;
}

static void fill_manifest(const learner *L, const wt_snapshot *s, Cohort__V1__WeightManifest *m)
{
    cohort__v1__weight_manifest__init(m);
    m->format = "safetensors";
    m->config_json = (char *)wt_snapshot_config(s);
    m->tokenizer_json = L->tok_json ? L->tok_json : "";
}

/* Answer a call that names an unknown actor. */
static void fail_unknown_actor(rpc_call *call, uint64_t id)
{
    char msg[96];
    snprintf(msg, sizeof msg, "unknown actor %016" PRIx64 ": register again", id);
    rpc_call_fail_reason(call, GRPC_STATUS_NOT_FOUND, "unknown_actor", msg);
}

/* ---- versions: WatchVersions ------------------------------------------------------------- */

static void watcher_send(learner *L, watcher *w);

static void on_watch_sent(rpc_call *call, int ok, void *data)
{
    learner *L = data;
    for (watcher *w = L->watchers; w; w = w->next)
        if (w->call == call) {
            w->sending = 0;
            if (ok)
                watcher_send(L, w);
            return;
        }
}

static void watcher_send(learner *L, watcher *w)
{
    const wt_snapshot *s = wpub_current(L->pub);
    if (w->sending || !s || w->sent >= wt_snapshot_version(s))
        return;
    Cohort__V1__VersionNotice n = COHORT__V1__VERSION_NOTICE__INIT;
    Cohort__V1__WeightManifest man;
    fill_manifest(L, s, &man);
    n.version = wt_snapshot_version(s);
    n.step = n.version;
    n.total_bytes = wt_snapshot_size(s);
    n.checksum = wt_snapshot_crc(s);
    n.format = "safetensors";
    n.manifest = &man;
    if (rpc_call_send_msg(w->call, &n.base, on_watch_sent, L) == COH_OK) {
        w->sending = 1;
        w->sent = n.version;
    }
}

static void on_watch_cancel(rpc_call *call, void *data)
{
    learner *L = data;
    for (watcher **p = &L->watchers; *p; p = &(*p)->next)
        if ((*p)->call == call) {
            watcher *dead = *p;
            *p = dead->next;
            free(dead);
            return;
        }
}

static void on_watch_versions(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    Cohort__V1__WatchVersionsRequest *req = (Cohort__V1__WatchVersionsRequest *)
        rpc_call_unpack_request(call, &cohort__v1__watch_versions_request__descriptor);
    if (!req)
        return;
    uint64_t id = req->actor_id;
    rpc_msg_free(&req->base);
    if (id != 0 && actors_check(L->actors, id) != ACTORS_OK) {
        fail_unknown_actor(call, id);
        return;
    }
    if (L->phase == PH_DONE) {
        rpc_call_finish(call, GRPC_STATUS_OK, "the run has finished");
        return;
    }
    watcher *w = calloc(1, sizeof *w);
    if (!w) {
        rpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "learner out of memory");
        return;
    }
    w->call = call;
    w->sent = -1;
    w->next = L->watchers;
    L->watchers = w;
    rpc_call_on_cancel(call, on_watch_cancel, L);
    watcher_send(L, w);
}

static int publish(learner *L, wt_snapshot *s, coh_err *err)
{
    int rc = wpub_publish(L->pub, s, err);
    if (rc)
        return rc;
    L->version = wpub_current_version(L->pub);
    for (watcher *w = L->watchers; w; w = w->next)
        watcher_send(L, w);
    return COH_OK;
}

/* ---- weights: DownloadWeights ------------------------------------------------------------ */

/* A download streams ws: the version's snapshot, or its BF16 / delta variant (wpub_variant:
 * made once per version, shared by every stream). Each chunk's data goes to gRPC as a slice
 * over ws's blob (wchunk_send, no copy; ws is retained per slice), its CRC comes from ws's
 * per-block table. */
typedef struct download {
    learner *L;
    wpub_ref *ref;
    wt_snapshot *ws; /* own reference */
    size_t offset;
    uint32_t chunk;
    int first;
} download;

static void download_end(rpc_call *call, download *d, grpc_status_code code, const char *msg)
{
    rpc_call_finish(call, code, msg);
    wt_snapshot_destroy(d->ws);
    wpub_release(d->ref);
    free(d);
}

static void download_next(rpc_call *call, download *d);

static void on_download_sent(rpc_call *call, int ok, void *data)
{
    download *d = data;
    if (!ok)
        download_end(call, d, GRPC_STATUS_CANCELLED, "download cancelled");
    else
        download_next(call, d);
}

static void download_next(rpc_call *call, download *d)
{
    const wt_snapshot *s = d->ws;
    if (d->offset >= wt_snapshot_size(s) && !d->first) {
        download_end(call, d, GRPC_STATUS_OK, NULL);
        return;
    }
    const void *data;
    size_t len;
    uint32_t crc;
    coh_err err;
    if (wt_snapshot_chunk(s, d->offset, d->chunk, &data, &len, &crc, &err)) {
        download_end(call, d, GRPC_STATUS_OUT_OF_RANGE, err.msg);
        return;
    }
    Cohort__V1__WeightChunk c = COHORT__V1__WEIGHT_CHUNK__INIT;
    Cohort__V1__WeightManifest man;
    Cohort__V1__WeightDelta del = COHORT__V1__WEIGHT_DELTA__INIT;
    uint64_t *ro = NULL, *rl = NULL;
    c.version = wt_snapshot_version(s);
    c.offset = d->offset;
    c.chunk_crc32 = crc;
    c.total_bytes = wt_snapshot_size(s);
    c.total_crc32 = wt_snapshot_crc(s);
    c.wire_dtype = wt_snapshot_wire(s) == WT_WIRE_BF16
                       ? COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_BF16
                       : COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_F32;
    if (d->first) {
        fill_manifest(d->L, s, &man);
        c.manifest = &man;
        if (wt_snapshot_wire(s) == WT_WIRE_DELTA) {
            const wt_range *rg;
            const char *const *names;
            size_t nr = wt_snapshot_delta_ranges(s, &rg);
            ro = malloc((nr ? nr : 1) * sizeof *ro);
            rl = malloc((nr ? nr : 1) * sizeof *rl);
            if (!ro || !rl) {
                free(ro);
                free(rl);
                download_end(call, d, GRPC_STATUS_RESOURCE_EXHAUSTED, "learner out of memory");
                return;
            }
            for (size_t i = 0; i < nr; i++) {
                ro[i] = rg[i].off;
                rl[i] = rg[i].len;
            }
            del.base_version = wt_snapshot_delta_base(s);
            del.result_bytes = wt_snapshot_delta_result_size(s);
            del.result_crc32 = wt_snapshot_delta_result_crc(s);
            del.n_range_offsets = del.n_range_lengths = nr;
            del.range_offsets = ro;
            del.range_lengths = rl;
            del.n_changed_tensors = wt_snapshot_delta_names(s, &names);
            del.changed_tensors = (char **)names;
            c.delta = &del;
        }
    }
    d->first = 0;
    size_t off = d->offset;
    d->offset += len;
    /* a peer already gone: answer anyway so that the call is released */
    int rc = wchunk_send(call, &c, s, off, len, on_download_sent, d);
    free(ro);
    free(rl);
    if (rc != COH_OK)
        download_end(call, d, GRPC_STATUS_CANCELLED, "download cancelled");
}

static void on_download(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    Cohort__V1__DownloadRequest *req = (Cohort__V1__DownloadRequest *)rpc_call_unpack_request(
        call, &cohort__v1__download_request__descriptor);
    if (!req)
        return;
    int64_t version = req->version, base = req->base_version;
    uint64_t offset = req->offset, id = req->actor_id;
    uint32_t chunk = req->max_chunk_bytes ? req->max_chunk_bytes : CHUNK_DEFAULT;
    int dtype = (int)req->wire_dtype, delta = req->delta;
    rpc_msg_free(&req->base);
    if (id != 0 && actors_check(L->actors, id) != ACTORS_OK) {
        fail_unknown_actor(call, id);
        return;
    }
    char msg[256];
    if (version < 0) {
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "version must be >= 0");
        return;
    }
    if (dtype != COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_F32 &&
        dtype != COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_BF16) {
        snprintf(msg, sizeof msg,
                 "unknown wire_dtype %d: use WEIGHT_WIRE_DTYPE_F32 (0) or "
                 "WEIGHT_WIRE_DTYPE_BF16 (1)",
                 dtype);
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, msg);
        return;
    }
    if (delta && (base < 0 || base >= version)) {
        snprintf(msg, sizeof msg,
                 "delta download: base_version %" PRId64 " must be >= 0 and older than "
                 "version %" PRId64,
                 base, version);
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, msg);
        return;
    }
    coh_err err;
    wpub_ref *ref = NULL;
    static const grpc_status_code codes[] = {
        [WPUB_OK] = GRPC_STATUS_OK, [WPUB_FUTURE] = GRPC_STATUS_NOT_FOUND,
        [WPUB_GONE] = GRPC_STATUS_FAILED_PRECONDITION, [WPUB_NONE] = GRPC_STATUS_UNAVAILABLE};
    wpub_verdict v = wpub_acquire(L->pub, version, &ref, &err);
    if (v != WPUB_OK) {
        rpc_call_finish(call, codes[v], err.msg);
        return;
    }
    /* BF16 wins over delta (a delta is of the exact F32 bytes only) */
    wt_wire wire = dtype == COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_BF16 ? WT_WIRE_BF16
                   : delta                                                       ? WT_WIRE_DELTA
                                                                                 : WT_WIRE_F32;
    wt_snapshot *ws = NULL;
    char why[200];
    if (wpub_variant(L->pub, ref, wire, base, &ws, why, sizeof why, &err)) {
        wpub_release(ref);
        rpc_call_finish(call, err.code == COH_ENOMEM ? GRPC_STATUS_RESOURCE_EXHAUSTED
                                                     : GRPC_STATUS_INTERNAL,
                        err.msg);
        return;
    }
    if (offset == 0 && wire == WT_WIRE_BF16)
        fprintf(stderr,
                "cohort-learner: actor %016" PRIx64 " downloads version %" PRId64
                " in BF16: its samples come from the bf16-rounded policy\n",
                id, version);
    else if (offset == 0 && why[0])
        fprintf(stderr, "cohort-learner: actor %016" PRIx64 ": %s\n", id, why);
    if (offset > wt_snapshot_size(ws)) {
        snprintf(msg, sizeof msg, "offset %" PRIu64 " is past the %zu bytes of version %" PRId64,
                 offset, wt_snapshot_size(ws), version);
        wt_snapshot_destroy(ws);
        wpub_release(ref);
        rpc_call_finish(call, GRPC_STATUS_OUT_OF_RANGE, msg);
        return;
    }
    download *d = calloc(1, sizeof *d);
    if (!d) {
        wt_snapshot_destroy(ws);
        wpub_release(ref);
        rpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "learner out of memory");
        return;
    }
    d->chunk = chunk < CHUNK_MIN ? CHUNK_MIN : chunk > CHUNK_MAX ? CHUNK_MAX : chunk;
    d->L = L;
    d->ref = ref;
    d->ws = ws;
    d->offset = offset;
    d->first = 1;
    download_next(call, d);
}

/* ---- actors: RegisterActor, Heartbeat ----------------------------------------------------- */

static void on_register(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    Cohort__V1__RegisterRequest *req = (Cohort__V1__RegisterRequest *)rpc_call_unpack_request(
        call, &cohort__v1__register_request__descriptor);
    if (!req)
        return;
    uint64_t id = 0;
    coh_err err;
    actors_verdict v = actors_register(L->actors, req->name, rpc_call_peer(call), req->threads,
                                       now_ms(), &id, &err);
    rpc_msg_free(&req->base);
    if (v != ACTORS_OK) {
        rpc_call_fail(call, v == ACTORS_FULL ? GRPC_STATUS_RESOURCE_EXHAUSTED
                                             : GRPC_STATUS_INVALID_ARGUMENT,
                      err.msg);
        return;
    }
    actor_info a;
    actors_get(L->actors, id, &a);
    Cohort__V1__RegisterReply rep = COHORT__V1__REGISTER_REPLY__INIT;
    Cohort__V1__SamplingParams sp;
    fill_sampling(L, &sp);
    rep.actor_id = id;
    rep.heartbeat_interval_ms = (uint32_t)L->heartbeat_ms;
    rep.lease_ttl_ms = (uint32_t)lease_ttl_ms(L->leases);
    rep.group_size = L->cfg.group_size;
    rep.sampling = &sp;
    rep.current_version = L->version < 0 ? 0 : L->version;
    rep.max_staleness = L->max_staleness;
    fprintf(stderr, "cohort-learner: actor %s (%s) registered as %016" PRIx64 "%s\n", a.name,
            a.peer, id, L->phase == PH_WARMUP ? " (warm start running: it waits)" : "");
    rpc_call_reply_msg(call, &rep.base);
}

static void on_heartbeat(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    Cohort__V1__HeartbeatRequest *req = (Cohort__V1__HeartbeatRequest *)rpc_call_unpack_request(
        call, &cohort__v1__heartbeat_request__descriptor);
    if (!req)
        return;
    coh_err err;
    uint64_t id = req->actor_id;
    actors_verdict v = actors_heartbeat(L->actors, id, req->held_version,
                                        req->sampler_tokens_per_s, req->completions, now_ms(),
                                        &err);
    rpc_msg_free(&req->base);
    if (v == ACTORS_UNKNOWN) {
        fail_unknown_actor(call, id);
        return;
    }
    if (v != ACTORS_OK) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, err.msg);
        return;
    }
    lease_renew(L->leases, id, now_ms());
    Cohort__V1__HeartbeatReply rep = COHORT__V1__HEARTBEAT_REPLY__INIT;
    Cohort__V1__SamplingParams sp;
    fill_sampling(L, &sp);
    rep.current_version = L->version < 0 ? 0 : L->version;
    rep.paused = L->paused;
    rep.sampling = &sp;
    rep.max_staleness = L->max_staleness;
    rpc_call_reply_msg(call, &rep.base);
}

/* ---- leases: LeasePrompts, ReturnLeases ---------------------------------------------------- */

static int next_prompt(void *ctx, uint64_t *prompt, coh_err *err)
{
    (void)err;
    *prompt = psrc_next(((learner *)ctx)->prompts);
    return 1;
}

static void on_lease(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    Cohort__V1__LeaseRequest *req = (Cohort__V1__LeaseRequest *)rpc_call_unpack_request(
        call, &cohort__v1__lease_request__descriptor);
    if (!req)
        return;
    uint64_t actor = req->actor_id;
    int want = req->max_prompts;
    rpc_msg_free(&req->base);
    if (actors_check(L->actors, actor) != ACTORS_OK) {
        fail_unknown_actor(call, actor);
        return;
    }
    if (want < 1 || want > 1024) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "max_prompts must be 1..1024");
        return;
    }
    Cohort__V1__LeaseReply rep = COHORT__V1__LEASE_REPLY__INIT;
    rep.retry_after_ms = L->phase == PH_WARMUP ? 1000 : 200;
    rep.paused = L->paused;
    /* keep at most one step's prompts beyond the buffer in flight */
    lease_stats ls;
    lease_get_stats(L->leases, &ls);
    int room = L->cfg.prompts_per_step * 2 - ls.outstanding - gbuf_count(L->buf);
    if (L->phase != PH_RL || L->paused || L->stopping || room <= 0) {
        rpc_call_reply_msg(call, &rep.base);
        return;
    }
    if (want > room)
        want = room;
    int cap = L->bcfg.max_seq;
    lease_grant *g = calloc((size_t)want, sizeof *g);
    Cohort__V1__Lease *ls_ = calloc((size_t)want, sizeof *ls_);
    Cohort__V1__Lease **lp = calloc((size_t)want, sizeof *lp);
    task_item *items = calloc((size_t)want, sizeof *items); /* generated prompts' texts */
    int *toks = calloc((size_t)want * (size_t)cap, sizeof *toks);
    char(*ids)[24] = calloc((size_t)want, sizeof *ids);
    coh_err err;
    int n = (g && ls_ && lp && items && toks && ids)
                ? lease_issue(L->leases, actor, want, now_ms(), next_prompt, L, g, &err)
                : 0;
    if (n < 0) {
        fprintf(stderr, "cohort-learner: no lease issued: %s\n", err.msg);
        n = 0;
    }
    for (int i = 0; i < n; i++) {
        Cohort__V1__Lease *l = &ls_[i];
        cohort__v1__lease__init(l);
        l->lease_id = g[i].lease_id;
        snprintf(ids[i], sizeof ids[i], "%" PRIu64, g[i].prompt);
        l->prompt_id = ids[i];
        psrc_prompt pp;
        psrc_get(L->prompts, g[i].prompt, &pp, &items[i]);
        l->task = (char *)pp.task;
        l->prompt = (char *)pp.text;
        l->answer = (char *)pp.answer;
        l->metadata_json = (char *)pp.meta;
        int *tk = toks + (size_t)i * (size_t)cap;
        int nt = psrc_tokens(L->prompts, g[i].prompt, tk, cap, NULL);
        if (nt > 0) {
            l->prompt_tokens = (int32_t *)tk;
            l->n_prompt_tokens = (size_t)nt;
        }
        uint64_t now = now_ms();
        l->expires_in_ms = g[i].deadline_ms > now ? (uint32_t)(g[i].deadline_ms - now) : 0;
        lp[i] = l;
    }
    rep.n_leases = (size_t)n;
    rep.leases = lp;
    rpc_call_reply_msg(call, &rep.base);
    free(g);
    free(ls_);
    free(lp);
    free(items);
    free(toks);
    free(ids);
}

static void on_return(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    Cohort__V1__ReturnLeasesRequest *req =
        (Cohort__V1__ReturnLeasesRequest *)rpc_call_unpack_request(
            call, &cohort__v1__return_leases_request__descriptor);
    if (!req)
        return;
    uint64_t actor = req->actor_id;
    if (actors_check(L->actors, actor) != ACTORS_OK) {
        rpc_msg_free(&req->base);
        fail_unknown_actor(call, actor);
        return;
    }
    int returned = 0;
    for (size_t i = 0; i < req->n_lease_ids && i < 4096; i++)
        if (req->lease_ids[i] != LEASE_ALL &&
            lease_return(L->leases, actor, req->lease_ids[i], now_ms(), NULL) >= 0)
            returned++;
    rpc_msg_free(&req->base);
    Cohort__V1__ReturnLeasesReply rep = COHORT__V1__RETURN_LEASES_REPLY__INIT;
    rep.returned = returned;
    rpc_call_reply_msg(call, &rep.base);
}

/* ---- submissions: SubmitGroup -------------------------------------------------------------- */

static int submit_process(learner *L, rpc_call *call, Cohort__V1__SubmitGroupRequest *req);

static void on_parked_cancel(rpc_call *call, void *data)
{
    learner *L = data;
    for (parked **p = &L->parked; *p; p = &(*p)->next)
        if ((*p)->call == call) {
            parked *dead = *p;
            *p = dead->next;
            rpc_msg_free(&dead->req->base);
            free(dead);
            L->n_parked--;
            return;
        }
}

static void retry_parked(learner *L)
{
    while (L->parked && gbuf_count(L->buf) < gbuf_capacity(L->buf)) {
        parked *p = L->parked;
        L->parked = p->next;
        L->n_parked--;
        rpc_call_on_cancel(p->call, NULL, NULL);
        rpc_call *call = p->call;
        Cohort__V1__SubmitGroupRequest *req = p->req;
        free(p);
        submit_process(L, call, req);
    }
}

static void on_submit(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    Cohort__V1__SubmitGroupRequest *req =
        (Cohort__V1__SubmitGroupRequest *)rpc_call_unpack_request(
            call, &cohort__v1__submit_group_request__descriptor);
    if (req)
        submit_process(data, call, req);
}

/* admit.h's commit hook: the group is durable before anyone hears it was accepted. */
static int commit_group(void *ctx, const gbuf_group *g, coh_err *err)
{
    learner *L = ctx;
    return alog_append(L->log, g->seq, g->actor, g, err);
}

/* Decide on one submission and answer it, or hold it (returns 1) while the buffer is full.
 * Frees req unless held. */
static int submit_process(learner *L, rpc_call *call, Cohort__V1__SubmitGroupRequest *req)
{
    coh_err err;
    coh_err_clear(&err);
    if (L->phase != PH_RL) {
        rpc_msg_free(&req->base);
        rpc_call_fail_reason(call, GRPC_STATUS_NOT_FOUND, "lease_unknown",
                             "no lease is live: the learner is not in its RL phase");
        return 0;
    }
    size_t n = req->n_completions;
    admit_item *items = calloc(n ? n : 1, sizeof *items);
    if (!items) {
        rpc_msg_free(&req->base);
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "learner out of memory; retry");
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        const Cohort__V1__ScoredCompletion *sc = req->completions[i];
        items[i] = (admit_item){.tokens = sc->completion_tokens,
                                .n_tokens = (int)sc->n_completion_tokens,
                                .logp = sc->behaviour_logprobs,
                                .n_logp = (int)sc->n_behaviour_logprobs,
                                .version = sc->policy_version,
                                .reward = sc->reward,
                                .scored = sc->status == COHORT__V1__ITEM_STATUS__ITEM_OK};
    }
    admit_request ar = {.actor = req->actor_id, .lease_id = req->lease_id,
                        .temperature = req->temperature, .n = (int)n, .items = items};
    admit_env env = {.actors = L->actors, .leases = L->leases, .buf = L->buf, .bcfg = &L->bcfg,
                     .prompts = L->prompts, .temperature = L->cfg.loss.temperature,
                     .version = (uint64_t)(L->version < 0 ? 0 : L->version), .now_ms = now_ms(),
                     .next_seq = L->next_seq, .commit = commit_group, .commit_ctx = L};
    admit_verdict v = admit_submission(&env, &ar, NULL, &err);
    free(items);
    if (v == ADMIT_FULL && L->n_parked < MAX_PARKED) {
        parked *pk = calloc(1, sizeof *pk);
        if (pk) {
            pk->call = call;
            pk->req = req;
            parked **tail = &L->parked;
            while (*tail)
                tail = &(*tail)->next;
            *tail = pk;
            L->n_parked++;
            rpc_call_on_cancel(call, on_parked_cancel, L);
            return 1;
        }
    }
    int drop = admit_drop(v);
    if (drop >= 0) {
        L->refused[drop]++;
        L->drops_total[drop]++;
    }
    if (v != ADMIT_LEASE_COMPLETED && v != ADMIT_FULL && v != ADMIT_INTERNAL)
        actors_note_group(L->actors, req->actor_id, v == ADMIT_BUFFERED);
    uint64_t seq = 0;
    if (v == ADMIT_BUFFERED) {
        seq = L->next_seq++;
        L->lat_sum += req->reward_latency_ms;
        L->lat_n++;
    }
    rpc_msg_free(&req->base);
    int status = admit_status(v);
    if (status != GRPC_STATUS_OK) {
        char msg[COH_ERR_MSG_LEN + 96];
        if (v == ADMIT_FULL)
            snprintf(msg, sizeof msg,
                     "%.400s and %d submissions are already waiting; retry later with back-off",
                     err.msg, L->n_parked);
        else
            snprintf(msg, sizeof msg, "%s", err.msg);
        rpc_call_fail_reason(call, (grpc_status_code)status, admit_reason(v), msg);
        return 0;
    }
    Cohort__V1__SubmitGroupReply rep = COHORT__V1__SUBMIT_GROUP_REPLY__INIT;
    rep.accepted = v == ADMIT_BUFFERED;
    rep.buffered_groups = gbuf_count(L->buf);
    rep.buffer_capacity = gbuf_capacity(L->buf);
    rep.message = v == ADMIT_BUFFERED ? "buffered" : err.msg;
    rep.group_seq = seq;
    rpc_call_reply_msg(call, &rep.base);
    maybe_step(L);
    return 0;
}

/* ---- steps: jobs on the thread pool --------------------------------------------------------- */

/* OUT/ledger.jsonl: the (seq, lease) pairs step `step` trains, written by the worker before
 * the step (so before its checkpoint); a step redone after a restart writes its line again,
 * and the last line of a step is the one that counts. Only jobs write it (one at a time). */
static void write_ledger(learner *L, const job *j, long step)
{
    if (!L->ledger || !j->rl)
        return;
    fprintf(L->ledger, "{\"step\": %ld, \"groups\": [", step);
    for (int i = 0; i < j->n; i++)
        fprintf(L->ledger, "%s[%" PRIu64 ", \"%016" PRIx64 "\"]", i ? ", " : "",
                j->batch[i]->seq, j->batch[i]->lease_id);
    fprintf(L->ledger, "]}\n");
    fflush(L->ledger);
}

static void job_work(uv_work_t *w)
{
    COH_TSAN_ACQUIRE(w); /* libuv's queue hand-off, invisible to TSan (queue_job releases) */
    job *j = w->data;
    trainer *tr = j->L->tr;
    coh_err_clear(&j->err);
    if (!j->rl) {
        j->rc = trainer_step(tr, &j->m, &j->err);
    } else {
        int total = 0;
        for (int i = 0; i < j->n; i++)
            total += j->batch[i]->n_completions;
        trainer_group *gs = calloc((size_t)j->n, sizeof *gs);
        trainer_completion *cs = calloc((size_t)total, sizeof *cs);
        j->rc = (gs && cs) ? COH_OK : coh_fail(&j->err, COH_ENOMEM, "out of memory");
        for (int i = 0, k = 0; !j->rc && i < j->n; i++) {
            const gbuf_group *g = j->batch[i];
            gs[i] = (trainer_group){g->prompt_tokens, g->n_prompt, g->n_completions, cs + k};
            for (int c = 0; c < g->n_completions; c++, k++)
                cs[k] = (trainer_completion){g->completions[c].tokens,
                                             g->completions[c].n_tokens,
                                             g->completions[c].logp, g->completions[c].reward,
                                             (long)g->completions[c].version};
        }
        if (!j->rc)
            write_ledger(j->L, j, trainer_current_step(tr) + 1);
        if (!j->rc)
            j->rc = trainer_step_groups_ex(tr, gs, j->n, j->refused, j->seq_first, j->seq_last,
                                           &j->m, &j->err);
        free(gs);
        free(cs);
    }
    j->has_next = trainer_has_next(tr);
    j->in_rl = trainer_in_rl(tr);
    if (!j->rc && (j->rl || !j->has_next || j->in_rl))
        j->rc = wt_snapshot_make(trainer_policy(tr), trainer_current_step(tr), &j->snap,
                                 &j->err);
    COH_TSAN_RELEASE(w);
}

static void record_step(learner *L, const trainer_metrics *m, double latency);
static int enter_rl(learner *L, coh_err *err);
static int set_checkpoint_state(learner *L, uint64_t consumed, coh_err *err);

static void job_done(uv_work_t *w, int status)
{
    COH_TSAN_ACQUIRE(w); /* job_work releases */
    job *j = w->data;
    learner *L = j->L;
    L->running = NULL;
    if (status || j->rc) {
        fprintf(stderr, "cohort-learner: step %ld failed: %s\n", L->step + 1,
                status ? uv_strerror(status) : j->err.msg);
        if (j->snap)
            wt_snapshot_destroy(j->snap);
    } else {
        const trainer_metrics *m = &j->m;
        L->step = m->step;
        L->phase_name = m->phase;
        if (j->rl) {
            L->drops_total[TRAINER_DROP_ZERO_SIGNAL] += m->dropped_by_reason[TRAINER_DROP_ZERO_SIGNAL];
            L->last_latency = L->lat_n ? L->lat_sum / (double)L->lat_n : 0.0;
            L->lat_sum = 0;
            L->lat_n = 0;
            L->trained_seq = j->seq_last ? j->seq_last : L->trained_seq;
        }
        record_step(L, m, j->rl ? L->last_latency : 0.0);
        coh_err err;
        if (j->snap && publish(L, j->snap, &err))
            fprintf(stderr, "cohort-learner: publishing version %ld failed: %s\n", m->step,
                    err.msg);
        /* the checkpoint just written holds every group up to seq_last: drop them */
        if (j->rl && m->checkpointed && L->log && alog_compact(L->log, L->trained_seq, &err))
            fprintf(stderr, "cohort-learner: compacting the accepted-group log failed "
                            "(it keeps growing; replay stays exact): %s\n", err.msg);
    }
    for (int i = 0; i < j->n; i++)
        gbuf_group_free(j->batch[i]);
    free(j->batch);
    int has_next = j->has_next, in_rl = j->in_rl, ok = !status && !j->rc;
    free(j);
    if (!has_next) {
        finish_run(L);
        return;
    }
    if (L->stopping) {
        shutdown_all(L);
        return;
    }
    if (L->phase == PH_WARMUP && in_rl && ok) {
        coh_err err;
        if (enter_rl(L, &err)) {
            fprintf(stderr, "cohort-learner: cannot start the RL phase: %s\n", err.msg);
            L->stopping = 1;
            shutdown_all(L);
            return;
        }
    }
    maybe_step(L);
}

static void queue_job(learner *L, job *j)
{
    j->L = L;
    j->work.data = j;
    L->running = j;
    COH_TSAN_RELEASE(&j->work);
    int rc = uv_queue_work(L->loop, &j->work, job_work, job_done);
    if (rc) {
        fprintf(stderr, "cohort-learner: cannot queue a step: %s\n", uv_strerror(rc));
        L->running = NULL;
        for (int i = 0; i < j->n; i++)
            gbuf_group_free(j->batch[i]);
        free(j->batch);
        free(j);
    }
}

/* Start the next step if one is due: a warm-start step, or an RL step on a full batch. */
static void maybe_step(learner *L)
{
    if (L->running || L->stopping || L->phase == PH_DONE || L->paused)
        return;
    job *j = calloc(1, sizeof *j);
    if (!j)
        return;
    if (L->phase == PH_WARMUP) {
        queue_job(L, j);
        return;
    }
    int P = L->cfg.prompts_per_step;
    if (gbuf_count(L->buf) < P) {
        free(j);
        return;
    }
    j->batch = calloc((size_t)P, sizeof *j->batch);
    if (!j->batch) {
        free(j);
        return;
    }
    j->rl = 1;
    j->n = gbuf_pop_batch(L->buf, P, (uint64_t)L->version, j->batch);
    if (j->n > 0) {
        j->seq_first = j->batch[0]->seq;
        j->seq_last = j->batch[j->n - 1]->seq;
    }
    memcpy(j->refused, L->refused, sizeof j->refused);
    memset(L->refused, 0, sizeof L->refused);
    coh_err err;
    /* a checkpoint this step writes holds everything up to seq_last */
    if (set_checkpoint_state(L, j->seq_last ? j->seq_last : L->trained_seq, &err))
        fprintf(stderr, "cohort-learner: %s (the next checkpoint lacks the cluster state)\n",
                err.msg);
    queue_job(L, j);
    retry_parked(L); /* the pop made room */
}

/* ---- the place in the data: checkpoints and resume ------------------------------------------- */

static int set_checkpoint_state(learner *L, uint64_t consumed, coh_err *err)
{
    int np = lease_pending(L->leases, NULL, 0);
    rsm_state s = {.cursor = psrc_cursor(L->prompts), .consumed_seq = consumed,
                   .next_seq = L->next_seq, .n_pending = np};
    if (np > 0 && !(s.pending = malloc((size_t)np * sizeof *s.pending)))
        return coh_fail(err, COH_ENOMEM, "out of memory saving the cluster state");
    lease_pending(L->leases, s.pending, np);
    char *text = NULL;
    int rc = rsm_to_json(&s, &text, err);
    free(s.pending);
    if (!rc)
        rc = trainer_set_checkpoint_file(L->tr, RSM_FILE, text, err);
    free(text);
    return rc;
}

/* A checkpoint now (loop thread, no job running), then the log drops what it holds. */
static int checkpoint_now(learner *L, coh_err *err)
{
    int rc = L->phase == PH_WARMUP ? COH_OK : set_checkpoint_state(L, L->trained_seq, err);
    if (!rc)
        rc = trainer_checkpoint(L->tr, err);
    if (!rc && L->log && L->phase != PH_WARMUP) {
        coh_err e2;
        if (alog_compact(L->log, L->trained_seq, &e2))
            fprintf(stderr, "cohort-learner: compacting the accepted-group log failed: %s\n",
                    e2.msg);
    }
    return rc;
}

typedef struct replay_ctx {
    gbuf_group **groups;
    uint64_t *prompts;
    int n, cap;
    int dup;
} replay_ctx;

static int on_replay(void *ctx, uint64_t seq, uint64_t actor, const gbuf_group *g)
{
    replay_ctx *r = ctx;
    for (int i = 0; i < r->n; i++)
        if (r->groups[i]->lease_id == g->lease_id) { /* logged twice (see admit.h) */
            r->dup++;
            return 0;
        }
    if (r->n == r->cap) {
        int nc = r->cap ? 2 * r->cap : 64;
        gbuf_group **ng = realloc(r->groups, (size_t)nc * sizeof *ng);
        if (ng)
            r->groups = ng;
        uint64_t *np = ng ? realloc(r->prompts, (size_t)nc * sizeof *np) : NULL;
        if (np)
            r->prompts = np;
        if (!ng || !np)
            return COH_ENOMEM;
        r->cap = nc;
    }
    gbuf_group *c = gbuf_group_copy(g);
    if (!c)
        return COH_ENOMEM;
    c->seq = seq;
    c->actor = actor;
    r->groups[r->n] = c;
    r->prompts[r->n++] = g->prompt;
    return 0;
}

/* The RL phase starts (at once on a resume in RL, else after the warm start): the buffer,
 * the accepted-group log and its replay, the place in the data, the first version. */
static int enter_rl(learner *L, coh_err *err)
{
    char dir[1100], logpath[700];
    snprintf(logpath, sizeof logpath, "%s/accepted.log", L->cfg.out_dir);
    rsm_state st;
    memset(&st, 0, sizeof st);
    int have_state = 0, rc;
    if (L->resumed_state && trainer_latest_checkpoint(L->tr, dir, sizeof dir, NULL) == COH_OK) {
        rc = rsm_load(dir, &st, err);
        if (rc && rc != COH_ENOTFOUND)
            return rc;
        have_state = rc == COH_OK;
    }
    if (!have_state) {
        /* a fresh RL phase: RL prompts come after everything SFT could have used, and an old
         * log in this folder belongs to an earlier run */
        st.cursor = ((uint64_t)1 << 40) + (uint64_t)L->step * 100000u;
        st.next_seq = 1;
        if (unlink(logpath) != 0 && access(logpath, F_OK) == 0)
            return coh_fail(err, COH_EIO, "cannot remove the old %s", logpath);
    }
    alog_open_report rep;
    if ((rc = alog_open(logpath, &L->log, &rep, err)))
        return coh_wrap(err, rc, "the accepted-group log");
    if (rep.cut_bytes)
        fprintf(stderr, "cohort-learner: %s: cut a torn tail of %" PRIu64 " bytes (%s)\n",
                logpath, rep.cut_bytes, rep.cut_reason);
    replay_ctx r = {0};
    rc = alog_replay(L->log, st.consumed_seq, on_replay, &r, err);
    if (rc == COH_ENOMEM)
        coh_fail(err, rc, "out of memory replaying %s", logpath);
    uint64_t *requeue = NULL, cursor = st.cursor;
    int n_requeue = 0;
    if (!rc)
        rc = rsm_plan(&st, r.prompts, r.n, &requeue, &n_requeue, &cursor, err);
    if (!rc) {
        psrc_set_cursor(L->prompts, cursor);
        if (n_requeue > 0)
            rc = lease_requeue(L->leases, requeue, n_requeue, err);
    }
    L->next_seq = st.next_seq;
    if (alog_last_seq(L->log) + 1 > L->next_seq)
        L->next_seq = alog_last_seq(L->log) + 1;
    L->trained_seq = st.consumed_seq;
    const model_config *mc = model_get_config(trainer_policy(L->tr));
    L->bcfg = (gbuf_config){.capacity = L->buffer_groups + r.n,
                            .group_size = L->cfg.group_size,
                            .vocab_size = mc->vocab_size,
                            .max_seq = mc->max_seq,
                            .max_new_tokens = L->cfg.sampling.max_new_tokens,
                            .max_staleness = L->max_staleness};
    if (!rc)
        rc = gbuf_create(&L->bcfg, &L->buf, err);
    /* replayed groups were checked when accepted; each is pushed at its own newest version */
    for (int i = 0; !rc && i < r.n; i++) {
        uint64_t v = 0;
        for (int c = 0; c < r.groups[i]->n_completions; c++)
            if (r.groups[i]->completions[c].version > v)
                v = r.groups[i]->completions[c].version;
        rc = gbuf_push(L->buf, r.groups[i], v, err);
    }
    if (!rc && (have_state || r.n))
        printf("cohort-learner: resumed the RL data at step %ld: %d accepted group(s) replayed "
               "from the log (%d duplicate), %d prompt(s) to issue again, next prompt %" PRIu64
               "\n",
               L->step, r.n, r.dup, n_requeue, cursor);
    for (int i = 0; i < r.n; i++)
        gbuf_group_free(r.groups[i]);
    free(r.groups);
    free(r.prompts);
    free(requeue);
    rsm_free(&st);
    if (rc)
        return rc;
    char lpath[700];
    snprintf(lpath, sizeof lpath, "%s/ledger.jsonl", L->cfg.out_dir);
    if (!(L->ledger = fopen(lpath, "a")))
        return coh_fail(err, COH_EIO, "cannot open %s", lpath);
    if (!wpub_current(L->pub)) {
        wt_snapshot *first = NULL;
        if ((rc = wt_snapshot_make(trainer_policy(L->tr), L->step, &first, err)) ||
            (rc = publish(L, first, err)))
            return rc;
    }
    L->phase = PH_RL;
    L->phase_name = "rl";
    if (!have_state) {
        /* the first checkpoint of the RL phase, before any group is accepted: from now on a
         * restart always finds the cluster state, and with it the log of this run */
        if ((rc = checkpoint_now(L, err)))
            return coh_wrap(err, rc, "the checkpoint that starts the RL phase");
    }
    printf("cohort-learner: RL from step %ld, version %" PRId64 " published; waiting for "
           "actors\n",
           L->step, L->version);
    fflush(stdout);
    return COH_OK;
}

/* ---- Monitor ---------------------------------------------------------------------------------- */

static void fill_metrics(const mhist_rec *r, Cohort__V1__StepMetrics *m,
                         Cohort__V1__StepMetrics__GroupsDroppedByReasonEntry *ent,
                         Cohort__V1__StepMetrics__GroupsDroppedByReasonEntry **entp)
{
    const trainer_metrics *t = &r->m;
    cohort__v1__step_metrics__init(m);
    m->step = t->step;
    m->version = t->version;
    m->phase = (char *)t->phase;
    m->loss = t->loss;
    m->skipped = t->skipped;
    m->reward_mean = t->reward_mean;
    m->reward_std = t->reward_std;
    if (t->eval_accuracy >= 0) {
        m->eval_accuracy_present_case = COHORT__V1__STEP_METRICS__EVAL_ACCURACY_PRESENT_EVAL_ACCURACY;
        m->eval_accuracy = t->eval_accuracy;
    }
    m->kl = t->kl;
    m->clip_frac = t->clip_frac;
    m->entropy = t->entropy;
    m->grad_norm = t->grad_norm;
    m->lr = t->lr;
    m->learner_tokens_per_s = t->learner_tokens_per_s;
    m->sampler_tokens_per_s = t->sampler_tokens_per_s;
    m->staleness_mean = t->staleness_mean;
    m->groups_used = t->groups_used;
    m->groups_dropped = t->groups_dropped;
    m->time_s = t->time_s;
    m->logp_max_abs_diff = t->logp_max_abs_diff;
    m->reward_latency_ms = r->reward_latency_ms;
    for (int i = 0; i < TRAINER_DROP_N; i++) {
        cohort__v1__step_metrics__groups_dropped_by_reason_entry__init(&ent[i]);
        ent[i].key = (char *)trainer_drop_name(i);
        ent[i].value = t->dropped_by_reason[i];
        entp[i] = &ent[i];
    }
    m->n_groups_dropped_by_reason = TRAINER_DROP_N;
    m->groups_dropped_by_reason = entp;
}

static void mwatch_send(learner *L, mwatcher *w);

static void mwatch_remove(learner *L, rpc_call *call)
{
    for (mwatcher **p = &L->mwatchers; *p; p = &(*p)->next)
        if ((*p)->call == call) {
            mwatcher *dead = *p;
            *p = dead->next;
            free(dead);
            return;
        }
}

static void on_mwatch_sent(rpc_call *call, int ok, void *data)
{
    learner *L = data;
    for (mwatcher *w = L->mwatchers; w; w = w->next)
        if (w->call == call) {
            w->sending = 0;
            if (ok)
                mwatch_send(L, w);
            return;
        }
}

/* Send the watcher's next record; once the run has finished and everything was sent, end
 * the stream with OK (as monitor.proto promises). */
static void mwatch_send(learner *L, mwatcher *w)
{
    if (w->sending)
        return;
    if (w->next_step < mhist_first(L->hist))
        w->next_step = mhist_first(L->hist);
    if (w->next_step >= mhist_end(L->hist)) {
        if (L->phase == PH_DONE) {
            rpc_call *call = w->call;
            rpc_call_on_cancel(call, NULL, NULL);
            mwatch_remove(L, call);
            rpc_call_finish(call, GRPC_STATUS_OK, NULL);
            if (!L->mwatchers && uv_is_active((uv_handle_t *)&L->linger))
                shutdown_all(L);
        }
        return;
    }
    Cohort__V1__StepMetrics m;
    Cohort__V1__StepMetrics__GroupsDroppedByReasonEntry ent[TRAINER_DROP_N],
        *entp[TRAINER_DROP_N];
    fill_metrics(mhist_get(L->hist, w->next_step), &m, ent, entp);
    if (rpc_call_send_msg(w->call, &m.base, on_mwatch_sent, L) == COH_OK) {
        w->sending = 1;
        w->next_step++;
    }
}

static void on_mwatch_cancel(rpc_call *call, void *data) { mwatch_remove(data, call); }

static void on_watch_metrics(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    Cohort__V1__WatchMetricsRequest *req = (Cohort__V1__WatchMetricsRequest *)
        rpc_call_unpack_request(call, &cohort__v1__watch_metrics_request__descriptor);
    if (!req)
        return;
    mwatcher *w = calloc(1, sizeof *w);
    if (!w) {
        rpc_msg_free(&req->base);
        rpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "learner out of memory");
        return;
    }
    /* 0: only new steps; N > 0: from step N; -K: the last K steps */
    long from = (long)req->from_step, end = mhist_end(L->hist);
    rpc_msg_free(&req->base);
    w->next_step = from == 0 ? end : from > 0 ? from : end + from;
    w->call = call;
    w->next = L->mwatchers;
    L->mwatchers = w;
    rpc_call_on_cancel(call, on_mwatch_cancel, L);
    mwatch_send(L, w);
}

static void record_step(learner *L, const trainer_metrics *m, double latency)
{
    mhist_rec r;
    memset(&r, 0, sizeof r);
    r.m = *m;
    r.reward_latency_ms = latency;
    memcpy(r.dropped_total, L->drops_total, sizeof r.dropped_total);
    mhist_push(L->hist, &r);
    if (!strcmp(m->phase, "rl")) {
        lease_stats ls;
        lease_get_stats(L->leases, &ls);
        long dropped = 0;
        for (int i = 0; i < TRAINER_DROP_N; i++)
            dropped += L->drops_total[i];
        printf("step %5ld/%ld [rl  ] reward %.3f±%.3f kl %.4f clip %.3f entropy %.3f gnorm %.2f "
               "| staleness %.2f | learn %6.0f tok/s | actors %d | buffer %d | dropped %ld%s\n",
               m->step, L->total_steps, m->reward_mean, m->reward_std, m->kl, m->clip_frac,
               m->entropy, m->grad_norm, m->staleness_mean, m->learner_tokens_per_s,
               actors_count(L->actors), gbuf_count(L->buf), dropped,
               m->skipped ? " SKIPPED" : "");
        if (m->eval_accuracy >= 0)
            printf("step %5ld held-out accuracy %.1f%%\n", m->step, 100 * m->eval_accuracy);
    } else if (m->eval_accuracy >= 0) {
        printf("step %5ld [%s] loss %.4f | held-out accuracy %.1f%%\n", m->step, m->phase,
               m->loss, 100 * m->eval_accuracy);
    } else if (m->step % 100 == 0) {
        printf("step %5ld [%s] loss %.4f\n", m->step, m->phase, m->loss);
    }
    fflush(stdout);
    for (mwatcher *w = L->mwatchers; w; w = w->next)
        mwatch_send(L, w);
    publish_prom(L);
}

static void on_set(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    Cohort__V1__SetRequest *req = (Cohort__V1__SetRequest *)rpc_call_unpack_request(
        call, &cohort__v1__set_request__descriptor);
    if (!req)
        return;
    if (L->running) {
        rpc_msg_free(&req->base);
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE,
                      "an update is running; retry in a moment (settings apply between steps)");
        return;
    }
    /* all or nothing: every setting on a copy of the config first */
    coh_err err;
    trainer_config saved = *trainer_get_config(L->tr);
    int rc = COH_OK;
    for (size_t i = 0; i < req->n_settings && !rc; i++)
        rc = trainer_set_hparam(L->tr, req->settings[i]->key, req->settings[i]->value, &err);
    if (rc) {
        const double undo[][2] = {{0, saved.rl_lr}, {1, saved.loss.beta},
                                  {2, saved.loss.temperature}, {3, saved.loss.entropy_coef},
                                  {4, saved.loss.eps_low}, {5, saved.loss.eps_high}};
        static const char *const keys[] = {"lr", "beta", "temperature", "entropy_coef",
                                           "eps_low", "eps_high"};
        for (size_t k = 0; k < sizeof undo / sizeof *undo; k++)
            trainer_set_hparam(L->tr, keys[k], undo[k][1], NULL);
        rpc_msg_free(&req->base);
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, err.msg);
        return;
    }
    L->cfg = *trainer_get_config(L->tr);
    fprintf(stderr, "cohort-learner: %zu setting(s) changed from step %ld%s%s\n", req->n_settings,
            L->step + 1, req->reason[0] ? ": " : "", req->reason);
    Cohort__V1__SetReply rep = COHORT__V1__SET_REPLY__INIT;
    rep.n_applied = req->n_settings;
    rep.applied = req->settings;
    rep.effective_step = L->step + 1;
    rep.message = "applied from the next step";
    rpc_call_reply_msg(call, &rep.base);
    rpc_msg_free(&req->base);
}

static void fill_settings(const learner *L, Cohort__V1__AlgorithmSettings *s,
                          Cohort__V1__SamplingParams *sp)
{
    const trainer_config *c = &L->cfg;
    cohort__v1__algorithm_settings__init(s);
    s->task = (char *)(c->prompts_file[0] ? "file" : c->task);
    s->estimator = (char *)loss_estimator_name(c->loss.estimator);
    s->kl_estimator = "k3";
    s->kl_placement = c->loss.estimator == EST_REINFORCE_PP ? "reward" : "loss";
    s->aggregation = (char *)loss_aggregation_name(c->loss.aggregation);
    s->eps_low = c->loss.eps_low;
    s->eps_high = c->loss.eps_high;
    s->beta = c->loss.beta;
    s->entropy_coef = c->loss.entropy_coef;
    s->temperature = c->loss.temperature;
    s->max_new_tokens = c->sampling.max_new_tokens;
    s->drop_zero_signal = c->loss.drop_zero_signal;
    s->group_size = c->group_size;
    s->prompts_per_step = c->prompts_per_step;
    s->max_staleness = L->max_staleness;
    s->rl_lr = c->rl_lr;
    s->sft_lr = c->sft_lr;
    s->lr_schedule = (char *)optim_schedule_name(c->optim.schedule);
    s->weight_decay = c->optim.weight_decay;
    s->grad_clip = c->optim.grad_clip;
    s->adam_beta1 = c->optim.beta1;
    s->adam_beta2 = c->optim.beta2;
    s->sft_steps = c->sft_steps;
    s->raft_steps = c->raft_steps;
    s->rl_steps = c->rl_steps;
    s->raft_threshold = c->raft_threshold;
    fill_sampling(L, sp);
    s->sampling = sp;
    s->seed = c->seed;
}

/* Requests without fields (GetStatus, ListWorkers, Checkpoint) are decoded all the same: bytes
 * that are not such a message get INVALID_ARGUMENT (answered here), never an answer. */
static int request_ok(rpc_call *call, const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *m = rpc_call_unpack_request(call, desc);
    if (!m)
        return 0;
    rpc_msg_free(m);
    return 1;
}

static void on_status(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    if (!request_ok(call, &cohort__v1__get_status_request__descriptor))
        return;
    Cohort__V1__Status st = COHORT__V1__STATUS__INIT;
    st.step = L->step;
    st.version = L->version < 0 ? 0 : L->version;
    st.phase = (char *)(L->phase == PH_DONE ? "done" : L->phase_name);
    st.paused = L->paused;
    st.pause_reason = L->pause_reason;
    st.actors = actors_count(L->actors);
    st.buffered_groups = gbuf_count(L->buf);
    st.buffer_capacity = L->buf ? gbuf_capacity(L->buf) : L->buffer_groups;
    lease_stats ls;
    lease_get_stats(L->leases, &ls);
    st.leases_outstanding = ls.outstanding;
    Cohort__V1__LeaseCounters lc = COHORT__V1__LEASE_COUNTERS__INIT;
    lc.issued = (int64_t)ls.issued;
    lc.reissued = (int64_t)ls.reissued;
    lc.completed = (int64_t)ls.completed;
    lc.expired = (int64_t)ls.expired;
    lc.returned = (int64_t)ls.returned;
    lc.dropped = (int64_t)ls.dropped;
    st.lease_counters = &lc;
    st.uptime_s = (double)(now_ms() - L->start_ms) / 1000.0;
    st.total_steps = L->total_steps;
    st.finished = L->phase == PH_DONE;
    st.run_dir = L->cfg.out_dir;
    Cohort__V1__AlgorithmSettings set;
    Cohort__V1__SamplingParams sp;
    fill_settings(L, &set, &sp);
    st.settings = &set;
    Cohort__V1__StepMetrics m;
    Cohort__V1__StepMetrics__GroupsDroppedByReasonEntry ent[TRAINER_DROP_N],
        *entp[TRAINER_DROP_N];
    const mhist_rec *last = mhist_last(L->hist);
    if (last) {
        /* one whole record: the last step's metrics, with the drops counted so far */
        fill_metrics(last, &m, ent, entp);
        for (int i = 0; i < TRAINER_DROP_N; i++)
            ent[i].value = L->drops_total[i];
        st.last = &m;
    }
    rpc_call_reply_msg(call, &st.base);
}

static void on_workers(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    if (!request_ok(call, &cohort__v1__list_workers_request__descriptor))
        return;
    int n = actors_count(L->actors);
    Cohort__V1__Worker *ws = calloc((size_t)(n ? n : 1), sizeof *ws);
    Cohort__V1__Worker **wp = calloc((size_t)(n ? n : 1), sizeof *wp);
    actor_info *ai = calloc((size_t)(n ? n : 1), sizeof *ai);
    if (!ws || !wp || !ai) {
        free(ws);
        free(wp);
        free(ai);
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "learner out of memory");
        return;
    }
    uint64_t now = now_ms();
    for (int i = 0; i < n; i++) {
        actor_info *a = &ai[i];
        actors_at(L->actors, i, a);
        cohort__v1__worker__init(&ws[i]);
        ws[i].actor_id = a->id;
        ws[i].name = a->name;
        ws[i].peer = a->peer;
        ws[i].threads = a->threads;
        ws[i].last_heartbeat_ms_ago = (int64_t)(now - a->last_heard_ms);
        ws[i].held_version = a->held_version;
        ws[i].sampler_tokens_per_s = a->tokens_per_s;
        ws[i].leases_held = lease_outstanding(L->leases, a->id);
        ws[i].completions = a->completions;
        ws[i].groups_accepted = a->accepted;
        ws[i].groups_rejected = a->rejected;
        ws[i].registered_s_ago = (double)(now - a->registered_ms) / 1000.0;
        wp[i] = &ws[i];
    }
    Cohort__V1__WorkersReply rep = COHORT__V1__WORKERS_REPLY__INIT;
    rep.n_workers = (size_t)n;
    rep.workers = wp;
    rpc_call_reply_msg(call, &rep.base);
    free(ws);
    free(wp);
    free(ai);
}

static void control(rpc_call *call, learner *L, int pause)
{
    Cohort__V1__ControlRequest *req = (Cohort__V1__ControlRequest *)rpc_call_unpack_request(
        call, &cohort__v1__control_request__descriptor);
    if (!req)
        return;
    L->paused = pause;
    snprintf(L->pause_reason, sizeof L->pause_reason, "%s", pause ? req->reason : "");
    rpc_msg_free(&req->base);
    Cohort__V1__ControlReply rep = COHORT__V1__CONTROL_REPLY__INIT;
    rep.paused = L->paused;
    rep.message = pause ? "paused: no new leases, no updates" : "resumed";
    rpc_call_reply_msg(call, &rep.base);
    if (!pause)
        maybe_step(L);
}

static void on_pause(rpc_call *call, rpc_event ev, void *data) { (void)ev; control(call, data, 1); }
static void on_resume(rpc_call *call, rpc_event ev, void *data) { (void)ev; control(call, data, 0); }

static void on_checkpoint(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    if (!request_ok(call, &cohort__v1__checkpoint_request__descriptor))
        return;
    if (L->running) {
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, "a step is running; retry in a moment");
        return;
    }
    coh_err err;
    if (checkpoint_now(L, &err)) {
        rpc_call_fail(call, GRPC_STATUS_INTERNAL, err.msg);
        return;
    }
    char path[700];
    snprintf(path, sizeof path, "%s/checkpoints/step-%06ld", L->cfg.out_dir, L->step);
    Cohort__V1__CheckpointReply rep = COHORT__V1__CHECKPOINT_REPLY__INIT;
    rep.step = L->step;
    rep.path = path;
    rpc_call_reply_msg(call, &rep.base);
}

/* ---- Prometheus page ----------------------------------------------------------------------- */

static void publish_prom(learner *L)
{
    if (!L->prom)
        return;
    int n = actors_count(L->actors);
    prom_actor_view *av = calloc((size_t)(n ? n : 1), sizeof *av);
    actor_info *ai = calloc((size_t)(n ? n : 1), sizeof *ai);
    if (!av || !ai) {
        free(av);
        free(ai);
        return;
    }
    uint64_t now = now_ms();
    for (int i = 0; i < n; i++) {
        actors_at(L->actors, i, &ai[i]);
        av[i] = (prom_actor_view){.name = ai[i].name, .id = ai[i].id, .peer = ai[i].peer,
                                  .sampler_tokens_per_s = ai[i].tokens_per_s,
                                  .heartbeat_age_s = (double)(now - ai[i].last_heard_ms) / 1e3,
                                  .held_version = ai[i].held_version,
                                  .completions = ai[i].completions,
                                  .groups_accepted = ai[i].accepted,
                                  .groups_rejected = ai[i].rejected,
                                  .leases_held = lease_outstanding(L->leases, ai[i].id)};
    }
    const char *names[TRAINER_DROP_N];
    int64_t drops[TRAINER_DROP_N];
    for (int i = 0; i < TRAINER_DROP_N; i++) {
        names[i] = trainer_drop_name(i);
        drops[i] = L->drops_total[i];
    }
    lease_stats ls;
    lease_get_stats(L->leases, &ls);
    prom_learner_view v = {
        .phase = L->phase == PH_DONE ? "done" : L->phase_name, .step = L->step,
        .version = L->version < 0 ? 0 : L->version, .total_steps = L->total_steps,
        .paused = L->paused, .finished = L->phase == PH_DONE,
        .uptime_s = (double)(now - L->start_ms) / 1e3, .n_drop_reasons = TRAINER_DROP_N,
        .drop_reason_names = names, .drops_by_reason = drops,
        .leases_issued = (int64_t)ls.issued, .leases_reissued = (int64_t)ls.reissued,
        .leases_completed = (int64_t)ls.completed, .leases_expired = (int64_t)ls.expired,
        .leases_returned = (int64_t)ls.returned, .leases_dropped = (int64_t)ls.dropped,
        .leases_outstanding = ls.outstanding, .buffered_groups = gbuf_count(L->buf),
        .buffer_capacity = L->buf ? gbuf_capacity(L->buf) : L->buffer_groups, .n_actors = n,
        .actors = av, .eval_accuracy = -1};
    const mhist_rec *last = mhist_last(L->hist);
    if (last) {
        const trainer_metrics *m = &last->m;
        v.have_step = 1;
        v.loss = m->loss;
        v.reward_mean = m->reward_mean;
        v.reward_std = m->reward_std;
        v.kl = m->kl;
        v.clip_frac = m->clip_frac;
        v.entropy = m->entropy;
        v.grad_norm = m->grad_norm;
        v.lr = m->lr;
        v.learner_tokens_per_s = m->learner_tokens_per_s;
        v.sampler_tokens_per_s = m->sampler_tokens_per_s;
        v.staleness_mean = m->staleness_mean;
        v.logp_max_abs_diff = m->logp_max_abs_diff;
        v.reward_latency_ms = last->reward_latency_ms;
        v.groups_used = m->groups_used;
        /* the newest evaluation, which may be some steps back */
        v.eval_accuracy = -1;
        for (long s = mhist_end(L->hist) - 1; s >= mhist_first(L->hist); s--)
            if (mhist_get(L->hist, s)->m.eval_accuracy >= 0) {
                v.eval_accuracy = mhist_get(L->hist, s)->m.eval_accuracy;
                break;
            }
    }
    char *text = NULL;
    size_t len = 0;
    coh_err err;
    if (prom_render_learner(&v, &text, &len, &err) == COH_OK)
        prom_server_publish(L->prom, text, len, &err);
    free(text);
    free(av);
    free(ai);
}

/* ---- housekeeping and shutdown ------------------------------------------------------------------ */

static void on_tick(uv_timer_t *t)
{
    learner *L = t->data;
    uint64_t now = now_ms();
    lease_expire(L->leases, now);
    /* an actor silent for 3 heartbeats (and a second) is dead: its prompts go out again */
    uint64_t dead[MAX_ACTORS];
    int n = actors_sweep(L->actors, now, (uint64_t)L->heartbeat_ms * 3 + 1000, dead, MAX_ACTORS);
    for (int i = 0; i < n && i < MAX_ACTORS; i++) {
        int k = lease_drop_actor(L->leases, dead[i], now);
        fprintf(stderr, "cohort-learner: actor %016" PRIx64 " missed its heartbeats; %d lease(s) "
                        "issued again\n",
                dead[i], k > 0 ? k : 0);
    }
    publish_prom(L);
}

static void on_server_done(rpc_server *srv, void *data)
{
    (void)srv;
    learner *L = data;
    if (--L->servers_up > 0)
        return;
    uv_close((uv_handle_t *)&L->tick, NULL);
    uv_close((uv_handle_t *)&L->linger, NULL);
    if (!uv_is_closing((uv_handle_t *)&L->sigint)) {
        uv_close((uv_handle_t *)&L->sigint, NULL);
        uv_close((uv_handle_t *)&L->sigterm, NULL);
        /* closing the handles gives the signals back their default action; the checkpoint
         * is written and the rest is teardown, so from here a late SIGINT / SIGTERM is
         * ignored rather than allowed to kill the process mid-exit (SIGKILL still works) */
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
    }
}

static void on_failed_server_done(rpc_server *srv, void *data)
{
    (void)srv;
    ((learner *)data)->servers_up--;
}

/* The checkpoint is written before the servers stop; if some call still keeps a server from
 * stopping after 15 s, say so and leave rather than hang. */
static void on_watchdog(uv_timer_t *t)
{
    learner *L = t->data;
    fprintf(stderr, "cohort-learner: %d call(s) still open 15 s after shutdown began; exiting\n",
            rpc_server_active_calls(L->server) +
                (L->mserver ? rpc_server_active_calls(L->mserver) : 0));
    fflush(NULL);
    _exit(0);
}

static void shutdown_all(learner *L)
{
    if (L->shut || L->running)
        return;
    L->shut = 1;
    uv_timer_stop(&L->linger);
    coh_err err;
    if (checkpoint_now(L, &err))
        fprintf(stderr, "cohort-learner: checkpoint failed: %s\n", err.msg);
    else
        fprintf(stderr, "cohort-learner: checkpoint written at step %ld\n", L->step);
    publish_prom(L);
    uv_timer_stop(&L->tick);
    uv_timer_start(&L->tick, on_watchdog, 15000, 0);
    uv_unref((uv_handle_t *)&L->tick);
    L->servers_up = L->mserver ? 2 : 1;
    rpc_server_shutdown(L->server, on_server_done, L);
    if (L->mserver)
        rpc_server_shutdown(L->mserver, on_server_done, L);
}

static void on_linger(uv_timer_t *t) { shutdown_all(t->data); }

/* The last step is done: version streams and metrics streams end with OK (metrics streams
 * after their last record), then the servers stop (at most 3 s later). */
static void finish_run(learner *L)
{
    L->phase = PH_DONE;
    printf("training finished at step %ld\n", L->step);
    fflush(stdout);
    while (L->watchers) {
        watcher *w = L->watchers;
        L->watchers = w->next;
        rpc_call_on_cancel(w->call, NULL, NULL);
        rpc_call_finish(w->call, GRPC_STATUS_OK, "the run has finished");
        free(w);
    }
    if (!L->mwatchers) {
        shutdown_all(L);
        return;
    }
    uv_timer_start(&L->linger, on_linger, 3000, 0);
    mwatcher *next;
    for (mwatcher *w = L->mwatchers; w; w = next) {
        next = w->next;
        mwatch_send(L, w); /* may end and free w, and shut down */
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    learner *L = h->data;
    /* The handlers stay installed until the servers have stopped (on_server_done closes
     * them): a second signal (Ctrl-C, then the script's SIGTERM) must never fall through to
     * the default action and kill the learner before its final checkpoint. */
    if (L->stopping) {
        fprintf(stderr, "cohort-learner: signal %d: already stopping (%s); SIGKILL stops at "
                        "once, losing the steps since the last checkpoint\n",
                signum, L->running ? "the running step finishes, then the checkpoint"
                                   : "writing the checkpoint");
        return;
    }
    fprintf(stderr, "cohort-learner: signal %d, stopping\n", signum);
    L->stopping = 1;
    shutdown_all(L); /* or, while a step runs, when it is done */
}

/* ---- prompts: chat template ---------------------------------------------------------------------- */

/* psrc's render hook: a prompt file's "messages" through the policy's chat template, with
 * the generation prompt, as transformers' apply_chat_template(add_generation_prompt=True). */
static int render_messages(void *ctx, const cJSON *messages, char **text, coh_err *err)
{
    learner *L = ctx;
    return chat_render_tpl(L->chat_tpl, messages, 1, L->chat_cfg.bos_token,
                           L->chat_cfg.eos_token, NULL, NULL, text, err);
}

/* The chat template: --chat-template FILE, else the policy folder's tokenizer_config.json
 * (--init DIR); none for a base model (prompts are then raw text). */
static int load_chat_template(learner *L, coh_err *err)
{
    const trainer_config *c = &L->cfg;
    int rc;
    if (c->init_from[0] && (rc = chat_config_load(c->init_from, &L->chat_cfg, err)) &&
        rc != COH_ENOTFOUND)
        return coh_wrap(err, rc, "%s/tokenizer_config.json", c->init_from);
    char *text = NULL;
    if (c->chat_template[0]) {
        size_t len = 0;
        if ((rc = fs_read_all(c->chat_template, &text, &len, err)))
            return coh_wrap(err, rc, "--chat-template %s", c->chat_template);
    } else if (L->chat_cfg.chat_template) {
        text = strdup(L->chat_cfg.chat_template);
        if (!text)
            return coh_fail(err, COH_ENOMEM, "out of memory");
    }
    if (!text)
        return COH_OK;
    rc = jinja_compile(text, &L->chat_tpl, err);
    free(text);
    if (rc)
        return coh_wrap(err, rc, "the chat template (%s)",
                        c->chat_template[0] ? c->chat_template : "tokenizer_config.json");
    return COH_OK;
}

/* ---- main ------------------------------------------------------------------------------------- */

enum { O_LISTEN = 1, O_TOKEN, O_CERT, O_KEY, O_STALE, O_BUFFER, O_TTL, O_HB, O_MON, O_METRICS,
       O_RESUME, O_RESUME_IF, O_THREADS, O_HELP };

typedef struct opts {
    const char *listen, *token, *cert, *key, *monitor_listen, *metrics_listen;
    int resume, threads, staleness, buffer, ttl, hb, help;
} opts;

static int on_option(void *ctx, int val, const char *arg, coh_err *err)
{
    opts *o = ctx;
    switch (val) {
    case O_LISTEN: o->listen = arg; return cli_check_address("--listen", arg, 0, err);
    case O_TOKEN: o->token = arg; return 0;
    case O_CERT: o->cert = arg; return 0;
    case O_KEY: o->key = arg; return 0;
    case O_MON: o->monitor_listen = arg; return cli_check_address("--monitor-listen", arg, 0, err);
    case O_METRICS: o->metrics_listen = arg; return cli_check_address("--metrics-listen", arg, 0, err);
    case O_STALE: return cli_parse_int("--max-staleness", arg, 0, 1000000, &o->staleness, err);
    case O_BUFFER: return cli_parse_int("--buffer", arg, 1, 1 << 20, &o->buffer, err);
    case O_TTL: return cli_parse_int("--lease-ttl-ms", arg, 100, 86400000, &o->ttl, err);
    case O_HB: return cli_parse_int("--heartbeat-ms", arg, 10, 3600000, &o->hb, err);
    case O_THREADS: return cli_parse_int("--threads", arg, 1, 256, &o->threads, err);
    case O_RESUME: o->resume = 1; return 0;
    case O_RESUME_IF: o->resume = -1; return 0;
    case O_HELP: o->help = 1; return 0;
    default: return coh_fail(err, COH_EINVAL, "unknown option");
    }
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cohort-learner [service options] [training options]\n"
            "service options:\n"
            "  --listen HOST:PORT       Learner + Monitor + health [0.0.0.0:50051]\n"
            "  --monitor-listen H:P     also serve Monitor (only) on this port, the one to\n"
            "                           publish to operators; --listen keeps serving both\n"
            "  --metrics-listen H:P     Prometheus text page at http://H:P/metrics\n"
            "  --token T                bearer token for every call but health (or env\n"
            "                           COHORT_TOKEN)\n"
            "  --tls-cert PEM --tls-key PEM\n"
            "  --max-staleness N        versions a completion may lag [2]\n"
            "  --buffer GROUPS          buffered groups [2 x --prompts]\n"
            "  --lease-ttl-ms MS [30000]  --heartbeat-ms MS [1000]  --threads N [1]\n"
            "  --resume                 continue from OUT/checkpoints/latest (exactly: the\n"
            "                           accepted groups not yet trained are replayed)\n"
            "  --resume-if-present      resume when OUT has a checkpoint (containers)\n"
            "  --help                   this text\n"
            "training options (the same table as cohort-train; --config FILE takes them as\n"
            "JSON, flags override it):\n");
    trainer_config d = trainer_config_default();
    snprintf(d.out_dir, sizeof d.out_dir, "runs/cluster");
    topt_print_help_with(TOPT_LEARNER, &d, f);
}

int main(int argc, char **argv)
{
    la_blas_autoselect(argv);
    static const struct option own[] = {
        {"listen", 1, 0, O_LISTEN}, {"token", 1, 0, O_TOKEN}, {"tls-cert", 1, 0, O_CERT},
        {"tls-key", 1, 0, O_KEY}, {"max-staleness", 1, 0, O_STALE}, {"buffer", 1, 0, O_BUFFER},
        {"lease-ttl-ms", 1, 0, O_TTL}, {"heartbeat-ms", 1, 0, O_HB},
        {"monitor-listen", 1, 0, O_MON}, {"metrics-listen", 1, 0, O_METRICS},
        {"resume", 0, 0, O_RESUME}, {"resume-if-present", 0, 0, O_RESUME_IF},
        {"threads", 1, 0, O_THREADS}, {"help", 0, 0, O_HELP}, {0, 0, 0, 0}};
    trainer_config c = trainer_config_default();
    snprintf(c.out_dir, sizeof c.out_dir, "runs/cluster");
    opts o = {.listen = "0.0.0.0:50051", .token = getenv("COHORT_TOKEN"), .threads = 1,
              .staleness = 2, .ttl = 30000, .hb = 1000};
    coh_err err;
    coh_err_clear(&err);
    int next = 0;
    if (topt_parse_args(&c, TOPT_LEARNER, argc, argv, "h", own, on_option, &o, &next, &err)) {
        fprintf(stderr, "cohort-learner: %s\n", err.msg);
        return 2;
    }
    if (o.help) {
        usage(stdout);
        return 0;
    }
    if (next < argc) {
        fprintf(stderr, "cohort-learner: unexpected argument '%s'; see --help\n", argv[next]);
        return 2;
    }
    la_set_threads(o.threads);
    if (o.resume < 0) { /* --resume-if-present: a restarted container continues its run */
        char latest[600];
        snprintf(latest, sizeof latest, "%s/checkpoints/latest", c.out_dir);
        o.resume = access(latest, F_OK) == 0;
        if (o.resume)
            printf("cohort-learner: resuming from %s\n", latest);
    }
    static learner L;
    memset(&L, 0, sizeof L);
    L.heartbeat_ms = o.hb;
    L.max_staleness = o.staleness;
    L.start_ms = now_ms();
    L.version = -1;
    int rc = 1;
    if (trainer_create(&c, o.resume, &L.tr, &err)) {
        fprintf(stderr, "cohort-learner: %s\n", err.msg);
        return 1;
    }
    L.cfg = *trainer_get_config(L.tr);
    L.step = trainer_current_step(L.tr);
    L.total_steps = trainer_total_steps(L.tr);
    L.resumed_state = o.resume;
    L.buffer_groups = o.buffer > 0 ? o.buffer : L.cfg.prompts_per_step * 2;
    L.tok = trainer_tokenizer(L.tr);
    L.phase = trainer_in_rl(L.tr) ? PH_RL : PH_WARMUP;
    L.phase_name = L.phase == PH_RL                   ? "rl"
                   : L.step < (long)L.cfg.sft_steps ? "sft"
                                                      : "raft";
    if (!trainer_has_next(L.tr)) {
        printf("nothing left to train (step %ld)\n", L.step);
        trainer_destroy(L.tr);
        return 0;
    }
    const model_config *mc = model_get_config(trainer_policy(L.tr));
    /* completions end at the tokenizer's EOS and at every eos_token_id of the model's
     * config.json / generation_config.json */
    if (tok_eos_id(L.tok) >= 0)
        L.stop_ids[L.n_stop++] = tok_eos_id(L.tok);
    for (int i = 0; i < mc->n_eos && L.n_stop < 1 + SAMPLE_MAX_STOP; i++) {
        int dup = 0;
        for (int k = 0; k < L.n_stop; k++)
            dup |= L.stop_ids[k] == mc->eos_ids[i];
        if (!dup)
            L.stop_ids[L.n_stop++] = mc->eos_ids[i];
    }
    for (int i = 0; i < L.cfg.stop.n && i < STOPS_MAX; i++)
        L.stop_text[i] = L.cfg.stop.text[i];
    psrc_config pc = {.task = L.cfg.task, .task_cfg = L.cfg.task_cfg,
                      .prompts_file = L.cfg.prompts_file, .tok = L.tok,
                      .max_prompt_tokens = mc->max_seq - L.cfg.sampling.max_new_tokens,
                      .render = render_messages, .render_ctx = &L};
    if (load_chat_template(&L, &err)) {
        fprintf(stderr, "cohort-learner: %s\n", err.msg);
        goto out;
    }
    if (!L.chat_tpl)
        pc.render = NULL;
    if (pc.max_prompt_tokens < 1) {
        fprintf(stderr, "cohort-learner: --max-new-tokens %d leaves no room for a prompt in the "
                        "policy's %d positions\n", L.cfg.sampling.max_new_tokens, mc->max_seq);
        goto out;
    }
    if (tok_to_json(L.tok, &L.tok_json, &err) || psrc_create_ex(&pc, &L.prompts, &err) ||
        lease_create(4096, (uint64_t)o.ttl, random_u64(), &L.leases, &err) ||
        actors_create(MAX_ACTORS, random_u64(), &L.actors, &err) || wpub_create(&L.pub, &err) ||
        mhist_create(HISTORY, &L.hist, &err)) {
        fprintf(stderr, "cohort-learner: %s\n", err.msg);
        goto out;
    }
    if (L.phase == PH_RL) {
        L.phase = PH_WARMUP; /* enter_rl makes it RL */
        if (enter_rl(&L, &err)) {
            fprintf(stderr, "cohort-learner: %s\n", err.msg);
            goto out;
        }
    }

    rpc_global_init();
    L.loop = uv_default_loop();
    rpc_server_config sc = {.listen_address = o.listen, .max_receive_bytes = 16 << 20,
                            .tls_cert_file = o.cert, .tls_key_file = o.key,
                            .bearer_token = o.token};
    struct { const char *name; rpc_kind kind; rpc_handler_cb cb; } methods[] = {
        {"/cohort.v1.Learner/RegisterActor", RPC_UNARY, on_register},
        {"/cohort.v1.Learner/Heartbeat", RPC_UNARY, on_heartbeat},
        {"/cohort.v1.Learner/WatchVersions", RPC_SERVER_STREAM, on_watch_versions},
        {"/cohort.v1.Learner/DownloadWeights", RPC_SERVER_STREAM, on_download},
        {"/cohort.v1.Learner/LeasePrompts", RPC_UNARY, on_lease},
        {"/cohort.v1.Learner/SubmitGroup", RPC_UNARY, on_submit},
        {"/cohort.v1.Learner/ReturnLeases", RPC_UNARY, on_return},
        {"/cohort.v1.Monitor/GetStatus", RPC_UNARY, on_status},
        {"/cohort.v1.Monitor/ListWorkers", RPC_UNARY, on_workers},
        {"/cohort.v1.Monitor/Pause", RPC_UNARY, on_pause},
        {"/cohort.v1.Monitor/Resume", RPC_UNARY, on_resume},
        {"/cohort.v1.Monitor/Checkpoint", RPC_UNARY, on_checkpoint},
        {"/cohort.v1.Monitor/WatchMetrics", RPC_SERVER_STREAM, on_watch_metrics},
        {"/cohort.v1.Monitor/SetHyperparameters", RPC_UNARY, on_set},
    };
    if (rpc_server_create(L.loop, &sc, &L.server, &err))
        goto fail_rpc;
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++)
        if (rpc_server_add_method(L.server, methods[i].name, methods[i].kind, methods[i].cb, &L,
                                  &err))
            goto fail_rpc;
    if (rpc_health_register(L.server, &err) || rpc_server_start(L.server, &err))
        goto fail_rpc;
    rpc_health_set(L.server, "cohort.v1.Learner", 1);
    rpc_health_set(L.server, "cohort.v1.Monitor", 1);
    if (o.monitor_listen) {
        sc.listen_address = o.monitor_listen;
        sc.max_receive_bytes = 1 << 20;
        if (rpc_server_create(L.loop, &sc, &L.mserver, &err))
            goto fail_rpc;
        for (size_t i = 0; i < sizeof methods / sizeof *methods; i++)
            if (strncmp(methods[i].name, "/cohort.v1.Monitor/", 19) == 0 &&
                rpc_server_add_method(L.mserver, methods[i].name, methods[i].kind,
                                      methods[i].cb, &L, &err))
                goto fail_rpc;
        if (rpc_health_register(L.mserver, &err) || rpc_server_start(L.mserver, &err))
            goto fail_rpc;
        rpc_health_set(L.mserver, "cohort.v1.Monitor", 1);
        printf("cohort-learner: Monitor also on port %d\n", rpc_server_port(L.mserver));
    }
    if (o.metrics_listen) {
        if (prom_server_start(o.metrics_listen, &L.prom, &err))
            goto fail_rpc;
        printf("cohort-learner: Prometheus metrics on http://%s/metrics (port %d)\n",
               o.metrics_listen, prom_server_port(L.prom));
    }
    printf("cohort-learner: serving on port %d; %s from step %ld\n", rpc_server_port(L.server),
           L.phase == PH_RL ? "RL" : "warm start", L.step);
    fflush(stdout);
    uv_timer_init(L.loop, &L.tick);
    uv_timer_init(L.loop, &L.linger);
    L.tick.data = L.linger.data = &L;
    uv_timer_start(&L.tick, on_tick, 500, 500);
    uv_signal_init(L.loop, &L.sigint);
    uv_signal_init(L.loop, &L.sigterm);
    L.sigint.data = L.sigterm.data = &L;
    uv_signal_start(&L.sigint, on_signal, SIGINT);
    uv_signal_start(&L.sigterm, on_signal, SIGTERM);
    publish_prom(&L);
    maybe_step(&L);
    uv_run(L.loop, UV_RUN_DEFAULT);
    rc = 0;
    goto out_rpc;
fail_rpc:
    fprintf(stderr, "cohort-learner: %s\n", err.msg);
    /* a server already started (e.g. --monitor-listen could not bind): stop it in order */
    L.servers_up = 0;
    if (L.server && rpc_server_shutdown(L.server, on_failed_server_done, &L) == 0)
        L.servers_up++;
    if (L.mserver && rpc_server_shutdown(L.mserver, on_failed_server_done, &L) == 0)
        L.servers_up++;
    if (L.servers_up)
        uv_run(L.loop, UV_RUN_DEFAULT);
out_rpc:
    prom_server_stop(L.prom);
    rpc_server_destroy(L.server);
    rpc_server_destroy(L.mserver);
    while (L.watchers) {
        watcher *w = L.watchers;
        L.watchers = w->next;
        free(w);
    }
    while (L.mwatchers) {
        mwatcher *w = L.mwatchers;
        L.mwatchers = w->next;
        free(w);
    }
    uv_loop_close(L.loop);
    rpc_global_shutdown();
out:
    if (L.ledger)
        fclose(L.ledger);
    alog_close(L.log);
    wpub_destroy(L.pub);
    mhist_destroy(L.hist);
    gbuf_destroy(L.buf);
    lease_destroy(L.leases);
    actors_destroy(L.actors);
    psrc_destroy(L.prompts);
    jinja_free(L.chat_tpl);
    chat_config_free(&L.chat_cfg);
    free(L.tok_json);
    trainer_destroy(L.tr);
    return rc;
}
