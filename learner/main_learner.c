/* main_learner.c - cohort-learner: the central learner service.
 *
 * Owns the policy (through the trainer), the prompt leases, the buffer of scored groups and
 * the published weight versions. Serves cohort.v1.Learner (actors), cohort.v1.Monitor
 * (operators) and grpc.health.v1.Health on one port (default 50051).
 *
 * Threads: every RPC handler runs on the libuv loop thread, which alone touches the lease
 * table, the group buffer, the actor table and the published snapshots. An update (the
 * trainer's step on a batch of groups, then the new weight snapshot) runs on the libuv
 * thread pool; while it runs the loop keeps leasing and buffering. At most one update runs.
 *
 * Life of a run: the SFT (and RAFT) warm start runs first, in-process, before the server
 * opens; then the RL phase takes its groups from actors until rl_steps are done. SIGINT /
 * SIGTERM (or the end) writes a checkpoint and stops; --resume continues from it.
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

#include "cohort/v1/learner.pb-c.h"
#include "cohort/v1/monitor.pb-c.h"
#include "groupbuf.h"
#include "lease.h"
#include "linalg.h"
#include "rpc.h"
#include "tokenizer.h"
#include "trainer.h"
#include "weights.h"

#define MAX_ACTORS 256
#define CHUNK_DEFAULT (1u << 20)
#define CHUNK_MIN (64u << 10)
#define CHUNK_MAX (3u << 20)

/* ---- state --------------------------------------------------------------------------- */

typedef struct snap_ref {
    wt_snapshot *snap;
    int refs; /* the learner's own (while published) + one per download in flight */
} snap_ref;

typedef struct actor_rec {
    uint64_t id;
    char name[64], peer[64];
    int threads;
    uint64_t registered_ms, last_heartbeat_ms;
    int64_t held_version, completions, accepted, rejected;
    double tokens_per_s;
} actor_rec;

typedef struct watcher {
    rpc_call *call;
    int sending;       /* a send is in flight */
    int64_t sent;      /* last version sent */
    struct watcher *next;
} watcher;

#define HISTORY 1024

typedef struct mwatcher {
    rpc_call *call;
    int sending;
    long next_step; /* next step to send */
    struct mwatcher *next;
} mwatcher;

typedef struct learner {
    uv_loop_t *loop;
    rpc_server *server;
    rpc_server *mserver; /* --monitor-listen: a second port serving only Monitor (or NULL) */
    int servers_up;      /* servers not yet through rpc_server_shutdown */
    trainer *tr;
    trainer_config cfg; /* effective */
    tokenizer *tok;
    char *tok_json;
    task *task;
    /* --prompts-file: prompts from a user's JSON Lines file instead of the generator */
    int n_file;
    task_item *file_items;
    char (*file_tasks)[64];
    uint64_t rl_cursor; /* next RL prompt index (after the SFT demonstrations) */
    lease_table *leases;
    gbuf *buf;
    gbuf_config bcfg;
    snap_ref *cur, *prev;
    watcher *watchers;
    actor_rec actors[MAX_ACTORS];
    int n_actors;
    int updating, paused, stopping, finished;
    char pause_reason[128];
    int heartbeat_ms, max_staleness;
    uint64_t start_ms;
    uv_timer_t tick;
    uv_signal_t sigint, sigterm;
    /* the update in flight */
    uv_work_t work;
    gbuf_group **batch;
    int batch_n;
    trainer_metrics last;
    int have_last;
    trainer_metrics hist[HISTORY]; /* ring: step s at hist[s % HISTORY] */
    long hist_first, hist_end;     /* steps [hist_first, hist_end) are held */
    mwatcher *mwatchers;
    long drops[6];         /* groups refused or unusable, by reason (see k_drop_names) */
    double lat_sum;        /* reward latency reported by actors, since the last step */
    long lat_n;
    double last_latency;   /* mean of the groups behind the last step */
    struct parked *parked; /* submissions waiting for buffer space, oldest first */
    int n_parked;
    wt_snapshot *new_snap;
    int work_rc;
    coh_err work_err;
} learner;

enum { DROP_STALE, DROP_ZERO_SIGNAL, DROP_REWARD_FAILED, DROP_INVALID, DROP_TEMPERATURE,
       DROP_LEASE_EXPIRED, DROP_N };
static const char *const k_drop_names[DROP_N] = {"stale", "zero_signal", "reward_failed",
                                                 "invalid", "temperature", "lease_expired"};

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

static int64_t cur_version(const learner *L) { return trainer_current_step(L->tr); }

static actor_rec *find_actor(learner *L, uint64_t id)
{
    for (int i = 0; i < L->n_actors; i++)
        if (L->actors[i].id == id)
            return &L->actors[i];
    return NULL;
}

static void snap_release(snap_ref *r)
{
    if (r && --r->refs == 0) {
        wt_snapshot_destroy(r->snap);
        free(r);
    }
}

/* ---- messages ------------------------------------------------------------------------ */

static int32_t k_stop_tokens[1] = {TOK_EOS};

static void fill_sampling(const learner *L, Cohort__V1__SamplingParams *sp)
{
    cohort__v1__sampling_params__init(sp);
    sp->n_stop_token_ids = 1;
    sp->stop_token_ids = k_stop_tokens;
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

/* ---- versions: watchers ------------------------------------------------------------------ */

static void watcher_send(learner *L, watcher *w);

static void on_watch_sent(rpc_call *call, int ok, void *data)
{
    learner *L = data;
    for (watcher *w = L->watchers; w; w = w->next)
        if (w->call == call) {
            w->sending = 0;
            if (ok && w->sent < cur_version(L) && L->cur)
                watcher_send(L, w);
            return;
        }
}

static void watcher_send(learner *L, watcher *w)
{
    if (w->sending || !L->cur)
        return;
    const wt_snapshot *s = L->cur->snap;
    Cohort__V1__VersionNotice n = COHORT__V1__VERSION_NOTICE__INIT;
    Cohort__V1__WeightManifest man;
    fill_manifest(L, s, &man);
    n.version = wt_snapshot_version(s);
    n.step = wt_snapshot_version(s);
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

static void publish(learner *L, wt_snapshot *s)
{
    snap_ref *r = calloc(1, sizeof *r);
    if (!r) {
        wt_snapshot_destroy(s);
        return;
    }
    r->snap = s;
    r->refs = 1;
    snap_release(L->prev);
    L->prev = L->cur;
    L->cur = r;
    for (watcher *w = L->watchers; w; w = w->next)
        watcher_send(L, w);
}

/* ---- weights download ---------------------------------------------------------------------- */

typedef struct download {
    learner *L;
    snap_ref *ref;
    size_t offset;
    uint32_t chunk;
    int first;
} download;

static void download_next(rpc_call *call, download *d);

static void on_download_sent(rpc_call *call, int ok, void *data)
{
    download *d = data;
    if (!ok) {
        rpc_call_finish(call, GRPC_STATUS_CANCELLED, "download cancelled");
        snap_release(d->ref);
        free(d);
        return;
    }
    download_next(call, d);
}

static void download_next(rpc_call *call, download *d)
{
    const wt_snapshot *s = d->ref->snap;
    if (d->offset >= wt_snapshot_size(s) && !d->first) {
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
        snap_release(d->ref);
        free(d);
        return;
    }
    const void *data;
    size_t len;
    uint32_t crc;
    coh_err err;
    if (wt_snapshot_chunk(s, d->offset, d->chunk, &data, &len, &crc, &err)) {
        rpc_call_finish(call, GRPC_STATUS_OUT_OF_RANGE, err.msg);
        snap_release(d->ref);
        free(d);
        return;
    }
    Cohort__V1__WeightChunk c = COHORT__V1__WEIGHT_CHUNK__INIT;
    Cohort__V1__WeightManifest man;
    c.version = wt_snapshot_version(s);
    c.offset = d->offset;
    c.data.data = (uint8_t *)data;
    c.data.len = len;
    c.chunk_crc32 = crc;
    c.total_bytes = wt_snapshot_size(s);
    c.total_crc32 = wt_snapshot_crc(s);
    if (d->first) {
        fill_manifest(d->L, s, &man);
        c.manifest = &man;
    }
    d->first = 0;
    d->offset += len;
    if (rpc_call_send_msg(call, &c.base, on_download_sent, d) != COH_OK) {
        /* the peer is gone: answer anyway, so that the call is released (a held call
         * would keep the server's shutdown waiting) */
        rpc_call_finish(call, GRPC_STATUS_CANCELLED, "download cancelled");
        snap_release(d->ref);
        free(d);
    }
}

static void on_download(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    Cohort__V1__DownloadRequest *req = (Cohort__V1__DownloadRequest *)rpc_call_unpack_request(
        call, &cohort__v1__download_request__descriptor);
    if (!req)
        return;
    snap_ref *r = NULL;
    if (L->cur && wt_snapshot_version(L->cur->snap) == req->version)
        r = L->cur;
    else if (L->prev && wt_snapshot_version(L->prev->snap) == req->version)
        r = L->prev;
    char msg[160];
    if (!r) {
        int64_t cv = L->cur ? wt_snapshot_version(L->cur->snap) : -1;
        int future = req->version > cv;
        snprintf(msg, sizeof msg, "version %" PRId64 " %s; the newest is %" PRId64,
                 req->version, future ? "does not exist" : "is no longer kept", cv);
        rpc_msg_free(&req->base);
        rpc_call_finish(call, future ? GRPC_STATUS_NOT_FOUND : GRPC_STATUS_FAILED_PRECONDITION,
                        msg);
        return;
    }
    if (req->offset > wt_snapshot_size(r->snap)) {
        snprintf(msg, sizeof msg, "offset %" PRIu64 " is past the %zu bytes of version %" PRId64,
                 req->offset, wt_snapshot_size(r->snap), req->version);
        rpc_msg_free(&req->base);
        rpc_call_finish(call, GRPC_STATUS_OUT_OF_RANGE, msg);
        return;
    }
    download *d = calloc(1, sizeof *d);
    if (!d) {
        rpc_msg_free(&req->base);
        rpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "learner out of memory");
        return;
    }
    uint32_t chunk = req->max_chunk_bytes ? req->max_chunk_bytes : CHUNK_DEFAULT;
    d->chunk = chunk < CHUNK_MIN ? CHUNK_MIN : chunk > CHUNK_MAX ? CHUNK_MAX : chunk;
    d->L = L;
    d->ref = r;
    r->refs++;
    d->offset = req->offset;
    d->first = 1;
    rpc_msg_free(&req->base);
    download_next(call, d);
}

/* ---- actors ------------------------------------------------------------------------------- */

static void on_register(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    Cohort__V1__RegisterRequest *req = (Cohort__V1__RegisterRequest *)rpc_call_unpack_request(
        call, &cohort__v1__register_request__descriptor);
    if (!req)
        return;
    if (L->n_actors >= MAX_ACTORS) {
        rpc_msg_free(&req->base);
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many actors registered");
        return;
    }
    actor_rec *a = &L->actors[L->n_actors++];
    memset(a, 0, sizeof *a);
    a->id = random_u64();
    snprintf(a->name, sizeof a->name, "%s", req->name[0] ? req->name : "actor");
    snprintf(a->peer, sizeof a->peer, "%s", rpc_call_peer(call));
    a->threads = req->threads;
    a->registered_ms = a->last_heartbeat_ms = now_ms();
    a->held_version = -1;
    rpc_msg_free(&req->base);
    Cohort__V1__RegisterReply rep = COHORT__V1__REGISTER_REPLY__INIT;
    Cohort__V1__SamplingParams sp;
    fill_sampling(L, &sp);
    rep.actor_id = a->id;
    rep.heartbeat_interval_ms = (uint32_t)L->heartbeat_ms;
    rep.lease_ttl_ms = (uint32_t)lease_ttl_ms(L->leases);
    rep.group_size = L->cfg.group_size;
    rep.sampling = &sp;
    rep.current_version = cur_version(L);
    rep.max_staleness = L->max_staleness;
    fprintf(stderr, "cohort-learner: actor %s (%s) registered as %016" PRIx64 "\n", a->name,
            a->peer, a->id);
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
    actor_rec *a = find_actor(L, req->actor_id);
    if (!a) {
        rpc_msg_free(&req->base);
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "unknown actor: register again");
        return;
    }
    a->last_heartbeat_ms = now_ms();
    a->held_version = req->held_version;
    a->tokens_per_s = req->sampler_tokens_per_s;
    a->completions = req->completions;
    lease_renew(L->leases, a->id, now_ms());
    rpc_msg_free(&req->base);
    Cohort__V1__HeartbeatReply rep = COHORT__V1__HEARTBEAT_REPLY__INIT;
    Cohort__V1__SamplingParams sp;
    fill_sampling(L, &sp);
    rep.current_version = cur_version(L);
    rep.paused = L->paused;
    rep.sampling = &sp;
    rep.max_staleness = L->max_staleness;
    rpc_call_reply_msg(call, &rep.base);
}

/* ---- leases -------------------------------------------------------------------------------- */

static int next_prompt(void *ctx, uint64_t *prompt, coh_err *err)
{
    (void)err;
    learner *L = ctx;
    *prompt = L->rl_cursor++;
    return 1; /* one prompt supplied (0 would mean: no more prompts) */
}

/* Prompt number idx: from the prompt file (cycled) or the built-in generator. */
static const char *get_item(const learner *L, uint64_t idx, task_item *it)
{
    if (L->n_file > 0) {
        *it = L->file_items[idx % (uint64_t)L->n_file];
        return L->file_tasks[idx % (uint64_t)L->n_file];
    }
    task_train_item(L->task, idx, it);
    return L->cfg.task;
}

/* Load a JSON Lines prompt file: {"prompt": "...", "task": "...", "answer": "...",
 * "metadata": {...}} per line (answer and metadata optional; metadata is passed on untouched
 * as JSON text). Errors name the line. */
static int load_prompt_file(learner *L, const char *path, coh_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return coh_fail(err, COH_ENOTFOUND, "cannot open prompt file %s", path);
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = COH_OK, idbuf[TASK_TEXT_MAX], nid = 0;
    while (rc == COH_OK && getline(&line, &cap, f) > 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == strlen(line))
            continue;
        cJSON *o = cJSON_Parse(line);
        const cJSON *pr = cJSON_GetObjectItemCaseSensitive(o, "prompt");
        const cJSON *tk = cJSON_GetObjectItemCaseSensitive(o, "task");
        const cJSON *an = cJSON_GetObjectItemCaseSensitive(o, "answer");
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");
        char *meta = md ? cJSON_PrintUnformatted(md) : NULL;
        if (!cJSON_IsObject(o) || !cJSON_IsString(pr) || !cJSON_IsString(tk) ||
            (an && !cJSON_IsString(an)))
            rc = coh_fail(err, COH_EFORMAT,
                          "%s line %d: need {\"prompt\": string, \"task\": string} with optional "
                          "\"answer\" (string) and \"metadata\" (any JSON)",
                          path, lineno);
        else if (strlen(pr->valuestring) >= TASK_TEXT_MAX ||
                 (an && strlen(an->valuestring) >= TASK_TEXT_MAX) ||
                 (meta && strlen(meta) >= TASK_META_MAX) || strlen(tk->valuestring) >= 64)
            rc = coh_fail(err, COH_ERANGE,
                          "%s line %d: prompt and answer must be under %d characters, metadata "
                          "under %d, task under 64",
                          path, lineno, TASK_TEXT_MAX, TASK_META_MAX);
        else if (tok_encode(L->tok, pr->valuestring, idbuf, TASK_TEXT_MAX, &nid, NULL) != COH_OK)
            rc = coh_fail(err, COH_EINVAL, "%s line %d: the prompt has a character the tokenizer "
                          "does not know", path, lineno);
        if (rc == COH_OK) {
            task_item *ni = realloc(L->file_items, (size_t)(L->n_file + 1) * sizeof *ni);
            char(*nt)[64] = realloc(L->file_tasks, (size_t)(L->n_file + 1) * sizeof *nt);
            if (ni)
                L->file_items = ni;
            if (nt)
                L->file_tasks = nt;
            if (!ni || !nt) {
                rc = coh_fail(err, COH_ENOMEM, "out of memory reading %s", path);
            } else {
                task_item *it = &L->file_items[L->n_file];
                memset(it, 0, sizeof *it);
                snprintf(it->prompt, sizeof it->prompt, "%s", pr->valuestring);
                snprintf(it->answer, sizeof it->answer, "%s", an ? an->valuestring : "");
                snprintf(it->meta, sizeof it->meta, "%s", meta ? meta : "");
                snprintf(L->file_tasks[L->n_file], 64, "%s", tk->valuestring);
                L->n_file++;
            }
        }
        free(meta);
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    if (rc == COH_OK && L->n_file == 0)
        rc = coh_fail(err, COH_EFORMAT, "prompt file %s has no prompts", path);
    return rc;
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
    if (!find_actor(L, actor)) {
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "unknown actor: register again");
        return;
    }
    if (want < 1 || want > 1024) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "max_prompts must be 1..1024");
        return;
    }
    Cohort__V1__LeaseReply rep = COHORT__V1__LEASE_REPLY__INIT;
    rep.retry_after_ms = 200;
    rep.paused = L->paused;
    /* keep at most one step's prompts beyond the buffer in flight */
    lease_stats ls;
    lease_get_stats(L->leases, &ls);
    int room = L->cfg.prompts_per_step * 2 - ls.outstanding - gbuf_count(L->buf);
    if (L->paused || L->finished || L->stopping || room <= 0) {
        rpc_call_reply_msg(call, &rep.base);
        return;
    }
    if (want > room)
        want = room;
    lease_grant *g = calloc((size_t)want, sizeof *g);
    Cohort__V1__Lease *ls_ = calloc((size_t)want, sizeof *ls_);
    Cohort__V1__Lease **lp = calloc((size_t)want, sizeof *lp);
    task_item *items = calloc((size_t)want, sizeof *items);
    int32_t *toks = calloc((size_t)want * 256, sizeof *toks);
    char (*ids)[24] = calloc((size_t)want, sizeof *ids);
    coh_err err;
    int n = (g && ls_ && lp && items && toks && ids)
                ? lease_issue(L->leases, actor, want, now_ms(), next_prompt, L, g, &err)
                : 0;
    if (n < 0) {
        fprintf(stderr, "cohort-learner: no lease issued: %s\n", err.msg);
        n = 0;
    }
    for (int i = 0; i < n; i++) {
        const char *task_name = get_item(L, g[i].prompt, &items[i]);
        Cohort__V1__Lease *l = &ls_[i];
        cohort__v1__lease__init(l);
        l->lease_id = g[i].lease_id;
        snprintf(ids[i], sizeof ids[i], "%" PRIu64, g[i].prompt);
        l->prompt_id = ids[i];
        l->task = (char *)task_name;
        l->prompt = items[i].prompt;
        l->answer = items[i].answer;
        l->metadata_json = items[i].meta;
        int nt = 0;
        int *tk = (int *)(toks + (size_t)i * 256);
        tk[0] = TOK_BOS;
        if (tok_encode(L->tok, items[i].prompt, tk + 1, 255, &nt, NULL) == COH_OK) {
            l->prompt_tokens = toks + (size_t)i * 256;
            l->n_prompt_tokens = (size_t)nt + 1;
        }
        l->expires_in_ms = (uint32_t)(g[i].deadline_ms - now_ms());
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
    if (!find_actor(L, req->actor_id)) {
        rpc_msg_free(&req->base);
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "unknown actor");
        return;
    }
    int returned = 0;
    for (size_t i = 0; i < req->n_lease_ids; i++)
        if (req->lease_ids[i] != LEASE_ALL &&
            lease_return(L->leases, req->actor_id, req->lease_ids[i], now_ms(), NULL) >= 0)
            returned++;
    rpc_msg_free(&req->base);
    Cohort__V1__ReturnLeasesReply rep = COHORT__V1__RETURN_LEASES_REPLY__INIT;
    rep.returned = returned;
    rpc_call_reply_msg(call, &rep.base);
}

/* ---- submissions and updates ----------------------------------------------------------------- */

static void maybe_update(learner *L);
static void record_metrics(learner *L, const trainer_metrics *m);

/* Backpressure: a valid group that finds the buffer full waits here (the call is held, not
 * answered) until an update makes room or the caller's deadline cancels it. */
#define MAX_PARKED 64

typedef struct parked {
    rpc_call *call;
    Cohort__V1__SubmitGroupRequest *req;
    struct parked *next;
} parked;

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
    learner *L = data;
    Cohort__V1__SubmitGroupRequest *req =
        (Cohort__V1__SubmitGroupRequest *)rpc_call_unpack_request(
            call, &cohort__v1__submit_group_request__descriptor);
    if (req)
        submit_process(L, call, req);
}

/* Validate and buffer one submission; answers the call, or parks it (returns 1) when the
 * buffer is full. Frees req unless parked. */
static int submit_process(learner *L, rpc_call *call, Cohort__V1__SubmitGroupRequest *req)
{
    char msg[COH_ERR_MSG_LEN + 64];
    coh_err err;
    coh_err_clear(&err);
    actor_rec *a = find_actor(L, req->actor_id);
    lease_info info;
    grpc_status_code code = GRPC_STATUS_OK;
    int accepted = 1;
    if (!a) {
        code = GRPC_STATUS_NOT_FOUND;
        snprintf(msg, sizeof msg, "unknown actor: register again");
    } else if (lease_check(L->leases, req->lease_id, a->id, now_ms(), &info, &err) != COH_OK) {
        code = err.code == COH_ESTATE && strstr(err.msg, "already completed")
                   ? GRPC_STATUS_ALREADY_EXISTS
               : err.code == COH_EINVAL ? GRPC_STATUS_INVALID_ARGUMENT
                                        : GRPC_STATUS_NOT_FOUND;
        snprintf(msg, sizeof msg, "%s", err.msg);
        gbuf_note_drop(L->buf, GBUF_DROP_LEASE);
    } else if (fabs(req->temperature - (double)L->cfg.loss.temperature) > 1e-6) {
        code = GRPC_STATUS_FAILED_PRECONDITION;
        snprintf(msg, sizeof msg, "group sampled at temperature %g, the learner's is %g",
                 req->temperature, (double)L->cfg.loss.temperature);
        lease_complete(L->leases, req->lease_id, a->id, now_ms(), NULL, NULL);
    } else {
        size_t n = req->n_completions;
        gbuf_completion *cs = calloc(n ? n : 1, sizeof *cs);
        int items_failed = 0;
        for (size_t i = 0; cs && i < n; i++) {
            const Cohort__V1__ScoredCompletion *sc = req->completions[i];
            cs[i].tokens = (const int *)sc->completion_tokens;
            cs[i].n_tokens = (int)sc->n_completion_tokens;
            cs[i].logp = sc->behaviour_logprobs;
            cs[i].n_logp = (int)sc->n_behaviour_logprobs;
            cs[i].version = sc->policy_version < 0 ? UINT64_MAX : (uint64_t)sc->policy_version;
            cs[i].reward = sc->status == COHORT__V1__ITEM_STATUS__ITEM_OK ? sc->reward : 0.0;
            items_failed += sc->status != COHORT__V1__ITEM_STATUS__ITEM_OK;
        }
        task_item it;
        get_item(L, info.prompt, &it);
        int ptok[256], np = 0;
        ptok[0] = TOK_BOS;
        tok_encode(L->tok, it.prompt, ptok + 1, 255, &np, NULL);
        gbuf_group g = {.prompt = info.prompt, .lease_id = req->lease_id, .prompt_tokens = ptok,
                        .n_prompt = np + 1, .completions = cs, .n_completions = (int)n};
        int rc = cs ? gbuf_validate(&L->bcfg, &g, (uint64_t)cur_version(L), &err) : COH_ENOMEM;
        if (rc == COH_OK && items_failed) {
            /* the reward service could not score some items: keep the group out */
            lease_complete(L->leases, req->lease_id, a->id, now_ms(), NULL, NULL);
            accepted = 0;
            snprintf(msg, sizeof msg, "reward_failed: %d item(s) were not scored", items_failed);
        } else if (rc == COH_OK) {
            rc = gbuf_push(L->buf, &g, (uint64_t)cur_version(L), &err);
            if (rc == COH_EFULL && L->n_parked < MAX_PARKED) {
                parked *pk = calloc(1, sizeof *pk);
                if (pk) {
                    free(cs);
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
                code = GRPC_STATUS_RESOURCE_EXHAUSTED;
                snprintf(msg, sizeof msg, "%s; retry later", err.msg);
            } else if (rc == COH_EFULL) {
                code = GRPC_STATUS_RESOURCE_EXHAUSTED;
                snprintf(msg, sizeof msg,
                         "%.400s and %d submissions are already waiting; retry later with back-off",
                         err.msg, L->n_parked);
            } else if (rc) {
                code = GRPC_STATUS_INTERNAL;
                snprintf(msg, sizeof msg, "%s", err.msg);
            } else {
                lease_complete(L->leases, req->lease_id, a->id, now_ms(), NULL, NULL);
                snprintf(msg, sizeof msg, "buffered");
            }
        } else if (rc == COH_ESTATE) {
            code = GRPC_STATUS_FAILED_PRECONDITION;
            snprintf(msg, sizeof msg, "%s", err.msg);
            lease_complete(L->leases, req->lease_id, a->id, now_ms(), NULL, NULL);
        } else {
            code = GRPC_STATUS_INVALID_ARGUMENT;
            snprintf(msg, sizeof msg, "%s", err.msg);
        }
        free(cs);
    }
    if (a) {
        if (code == GRPC_STATUS_OK && accepted)
            a->accepted++;
        else
            a->rejected++;
    }
    if (code == GRPC_STATUS_OK && accepted) {
        L->lat_sum += req->reward_latency_ms;
        L->lat_n++;
    } else if (code == GRPC_STATUS_OK) {
        L->drops[DROP_REWARD_FAILED]++;
    } else if (code == GRPC_STATUS_FAILED_PRECONDITION) {
        L->drops[strstr(msg, "temperature") ? DROP_TEMPERATURE : DROP_STALE]++;
    } else if (code == GRPC_STATUS_INVALID_ARGUMENT) {
        L->drops[DROP_INVALID]++;
    } else if (code == GRPC_STATUS_NOT_FOUND && strstr(msg, "expired")) {
        L->drops[DROP_LEASE_EXPIRED]++;
    }
    rpc_msg_free(&req->base);
    if (code != GRPC_STATUS_OK) {
        rpc_call_fail(call, code, msg);
        return 0;
    }
    Cohort__V1__SubmitGroupReply rep = COHORT__V1__SUBMIT_GROUP_REPLY__INIT;
    rep.accepted = accepted;
    rep.buffered_groups = gbuf_count(L->buf);
    rep.buffer_capacity = gbuf_capacity(L->buf);
    rep.message = msg;
    rpc_call_reply_msg(call, &rep.base);
    maybe_update(L);
    return 0;
}

static void update_work(uv_work_t *w)
{
    learner *L = w->data;
    int n = L->batch_n, total = 0;
    for (int i = 0; i < n; i++)
        total += L->batch[i]->n_completions;
    trainer_group *gs = calloc((size_t)n, sizeof *gs);
    trainer_completion *cs = calloc((size_t)total, sizeof *cs);
    L->work_rc = COH_ENOMEM;
    if (gs && cs) {
        int k = 0;
        for (int i = 0; i < n; i++) {
            const gbuf_group *g = L->batch[i];
            gs[i] = (trainer_group){g->prompt_tokens, g->n_prompt, g->n_completions, cs + k};
            for (int j = 0; j < g->n_completions; j++, k++)
                cs[k] = (trainer_completion){g->completions[j].tokens, g->completions[j].n_tokens,
                                             g->completions[j].logp, g->completions[j].reward,
                                             (long)g->completions[j].version};
        }
        L->work_rc = trainer_step_groups(L->tr, gs, n, &L->last, &L->work_err);
        if (!L->work_rc)
            L->work_rc = wt_snapshot_make(trainer_policy(L->tr), trainer_current_step(L->tr),
                                          &L->new_snap, &L->work_err);
    }
    free(gs);
    free(cs);
}

static void shutdown_all(learner *L);

static void update_done(uv_work_t *w, int status)
{
    learner *L = w->data;
    L->updating = 0;
    for (int i = 0; i < L->batch_n; i++)
        gbuf_group_free(L->batch[i]);
    free(L->batch);
    L->batch = NULL;
    if (status || L->work_rc) {
        fprintf(stderr, "cohort-learner: update failed: %s\n", L->work_err.msg);
    } else {
        L->have_last = 1;
        const trainer_metrics *m = &L->last;
        L->drops[DROP_ZERO_SIGNAL] += m->groups_dropped;
        L->last_latency = L->lat_n ? L->lat_sum / (double)L->lat_n : 0.0;
        L->lat_sum = 0;
        L->lat_n = 0;
        record_metrics(L, m);
        gbuf_stats gs;
        gbuf_get_stats(L->buf, &gs);
        printf("step %5ld/%ld [rl  ] reward %.3f±%.3f kl %.4f clip %.3f entropy %.3f gnorm %.2f "
               "| staleness %.2f | learn %6.0f tok/s | actors %d | buffer %d | dropped %ld%s%s\n",
               m->step, trainer_total_steps(L->tr), m->reward_mean, m->reward_std, m->kl,
               m->clip_frac, m->entropy, m->grad_norm, m->staleness_mean,
               m->learner_tokens_per_s, L->n_actors, gs.count,
               L->drops[0] + L->drops[1] + L->drops[2] + L->drops[3] + L->drops[4] + L->drops[5],
               m->skipped ? " SKIPPED" : "",
               m->eval_accuracy >= 0 ? "" : "");
        if (m->eval_accuracy >= 0)
            printf("step %5ld held-out accuracy %.1f%%\n", m->step, 100 * m->eval_accuracy);
        fflush(stdout);
        publish(L, L->new_snap);
        L->new_snap = NULL;
    }
    if (!trainer_has_next(L->tr)) {
        L->finished = 1;
        printf("training finished at step %ld\n", trainer_current_step(L->tr));
        shutdown_all(L);
        return;
    }
    if (L->stopping) {
        shutdown_all(L);
        return;
    }
    maybe_update(L);
}

static void maybe_update(learner *L)
{
    if (L->updating || L->stopping || L->finished || L->paused)
        return;
    if (gbuf_count(L->buf) < L->cfg.prompts_per_step)
        return;
    L->batch = calloc((size_t)L->cfg.prompts_per_step, sizeof *L->batch);
    if (!L->batch)
        return;
    L->batch_n = gbuf_pop_batch(L->buf, L->cfg.prompts_per_step, (uint64_t)cur_version(L),
                                L->batch);
    L->updating = 1;
    L->work.data = L;
    coh_err_clear(&L->work_err);
    uv_queue_work(L->loop, &L->work, update_work, update_done);
    retry_parked(L); /* the pop made room */
}

/* ---- Monitor ---------------------------------------------------------------------------------- */

static void fill_metrics(const trainer_metrics *t, Cohort__V1__StepMetrics *m)
{
    cohort__v1__step_metrics__init(m);
    m->step = t->step;
    m->version = t->version;
    m->phase = (char *)t->phase;
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
}

static void mwatch_send(learner *L, mwatcher *w);

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

static void mwatch_send(learner *L, mwatcher *w)
{
    if (w->sending)
        return;
    if (w->next_step < L->hist_first)
        w->next_step = L->hist_first;
    if (w->next_step >= L->hist_end)
        return;
    Cohort__V1__StepMetrics m;
    fill_metrics(&L->hist[w->next_step % HISTORY], &m);
    if (rpc_call_send_msg(w->call, &m.base, on_mwatch_sent, L) == COH_OK) {
        w->sending = 1;
        w->next_step++;
    }
}

static void on_mwatch_cancel(rpc_call *call, void *data)
{
    learner *L = data;
    for (mwatcher **p = &L->mwatchers; *p; p = &(*p)->next)
        if ((*p)->call == call) {
            mwatcher *dead = *p;
            *p = dead->next;
            free(dead);
            return;
        }
}

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
    long from = (long)req->from_step;
    rpc_msg_free(&req->base);
    w->next_step = from == 0 ? L->hist_end : from > 0 ? from : L->hist_end + from;
    w->call = call;
    w->next = L->mwatchers;
    L->mwatchers = w;
    rpc_call_on_cancel(call, on_mwatch_cancel, L);
    mwatch_send(L, w);
}

static void record_metrics(learner *L, const trainer_metrics *m)
{
    /* one record per step; the history index is the step number */
    if (L->hist_end == 0 && L->hist_first == 0)
        L->hist_first = L->hist_end = m->step;
    L->hist[m->step % HISTORY] = *m;
    L->hist_end = m->step + 1;
    if (L->hist_end - L->hist_first > HISTORY)
        L->hist_first = L->hist_end - HISTORY;
    for (mwatcher *w = L->mwatchers; w; w = w->next)
        mwatch_send(L, w);
}

static void on_set(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    Cohort__V1__SetRequest *req = (Cohort__V1__SetRequest *)rpc_call_unpack_request(
        call, &cohort__v1__set_request__descriptor);
    if (!req)
        return;
    if (L->updating) {
        rpc_msg_free(&req->base);
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE,
                      "an update is running; retry in a moment (settings apply between steps)");
        return;
    }
    /* all or nothing: check every setting on a copy of the config first */
    coh_err err;
    trainer_config saved = *trainer_get_config(L->tr);
    int rc = COH_OK;
    for (size_t i = 0; i < req->n_settings && !rc; i++)
        rc = trainer_set_hparam(L->tr, req->settings[i]->key, req->settings[i]->value, &err);
    if (rc) {
        /* undo the ones already applied */
        for (size_t i = 0; i < req->n_settings; i++) {
            const char *k = req->settings[i]->key;
            double v = strcmp(k, "lr") == 0 ? saved.rl_lr
                       : strcmp(k, "beta") == 0 ? saved.loss.beta
                       : strcmp(k, "temperature") == 0 ? saved.loss.temperature
                       : strcmp(k, "entropy_coef") == 0 ? saved.loss.entropy_coef
                       : strcmp(k, "eps_low") == 0 ? saved.loss.eps_low
                       : strcmp(k, "eps_high") == 0 ? saved.loss.eps_high : NAN;
            if (isfinite(v))
                trainer_set_hparam(L->tr, k, v, NULL);
        }
        rpc_msg_free(&req->base);
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, err.msg);
        return;
    }
    L->cfg = *trainer_get_config(L->tr);
    fprintf(stderr, "cohort-learner: %zu setting(s) changed from step %ld%s%s\n", req->n_settings,
            trainer_current_step(L->tr) + 1, req->reason[0] ? ": " : "", req->reason);
    Cohort__V1__SetReply rep = COHORT__V1__SET_REPLY__INIT;
    rep.n_applied = req->n_settings;
    rep.applied = req->settings;
    rep.effective_step = trainer_current_step(L->tr) + 1;
    rep.message = "applied from the next step";
    rpc_call_reply_msg(call, &rep.base);
    rpc_msg_free(&req->base);
}

static void on_status(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    Cohort__V1__Status st = COHORT__V1__STATUS__INIT;
    Cohort__V1__StepMetrics m;
    st.step = cur_version(L);
    st.version = L->cur ? wt_snapshot_version(L->cur->snap) : 0;
    st.phase = L->finished ? "done" : "rl";
    st.paused = L->paused;
    st.pause_reason = L->pause_reason;
    st.actors = L->n_actors;
    st.buffered_groups = gbuf_count(L->buf);
    st.buffer_capacity = gbuf_capacity(L->buf);
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
    st.total_steps = trainer_total_steps(L->tr);
    st.finished = L->finished;
    st.run_dir = L->cfg.out_dir;
    Cohort__V1__StepMetrics__GroupsDroppedByReasonEntry ent[DROP_N], *entp[DROP_N];
    if (L->have_last) {
        fill_metrics(&L->last, &m);
        for (int i = 0; i < DROP_N; i++) {
            cohort__v1__step_metrics__groups_dropped_by_reason_entry__init(&ent[i]);
            ent[i].key = (char *)k_drop_names[i];
            ent[i].value = L->drops[i];
            entp[i] = &ent[i];
        }
        m.n_groups_dropped_by_reason = DROP_N;
        m.groups_dropped_by_reason = entp;
        m.reward_latency_ms = L->last_latency;
        st.last = &m;
    }
    rpc_call_reply_msg(call, &st.base);
}

static void on_workers(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    Cohort__V1__Worker *ws = calloc((size_t)(L->n_actors ? L->n_actors : 1), sizeof *ws);
    Cohort__V1__Worker **wp = calloc((size_t)(L->n_actors ? L->n_actors : 1), sizeof *wp);
    if (!ws || !wp) {
        free(ws);
        free(wp);
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "learner out of memory");
        return;
    }
    uint64_t now = now_ms();
    for (int i = 0; i < L->n_actors; i++) {
        actor_rec *a = &L->actors[i];
        cohort__v1__worker__init(&ws[i]);
        ws[i].actor_id = a->id;
        ws[i].name = a->name;
        ws[i].peer = a->peer;
        ws[i].threads = a->threads;
        ws[i].last_heartbeat_ms_ago = (int64_t)(now - a->last_heartbeat_ms);
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
    rep.n_workers = (size_t)L->n_actors;
    rep.workers = wp;
    rpc_call_reply_msg(call, &rep.base);
    free(ws);
    free(wp);
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
        maybe_update(L);
}

static void on_pause(rpc_call *call, rpc_event ev, void *data) { (void)ev; control(call, data, 1); }
static void on_resume(rpc_call *call, rpc_event ev, void *data) { (void)ev; control(call, data, 0); }

static void on_checkpoint(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    learner *L = data;
    if (L->updating) {
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, "an update is running; retry in a moment");
        return;
    }
    coh_err err;
    if (trainer_checkpoint(L->tr, &err)) {
        rpc_call_fail(call, GRPC_STATUS_INTERNAL, err.msg);
        return;
    }
    char path[700];
    snprintf(path, sizeof path, "%s/checkpoints/step-%06ld", L->cfg.out_dir,
             trainer_current_step(L->tr));
    Cohort__V1__CheckpointReply rep = COHORT__V1__CHECKPOINT_REPLY__INIT;
    rep.step = trainer_current_step(L->tr);
    rep.path = path;
    rpc_call_reply_msg(call, &rep.base);
}

/* ---- housekeeping and shutdown ---------------------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    learner *L = t->data;
    uint64_t now = now_ms();
    lease_expire(L->leases, now);
    /* an actor silent for 3 heartbeats (and the lease TTL) is dead: its prompts go out again */
    uint64_t dead_after = (uint64_t)L->heartbeat_ms * 3 + 1000;
    for (int i = 0; i < L->n_actors; i++)
        if (now - L->actors[i].last_heartbeat_ms > dead_after) {
            int n = lease_drop_actor(L->leases, L->actors[i].id, now);
            fprintf(stderr, "cohort-learner: actor %s (%016" PRIx64 ") missed its heartbeats; "
                            "%d lease(s) issued again\n",
                    L->actors[i].name, L->actors[i].id, n > 0 ? n : 0);
            L->actors[i] = L->actors[--L->n_actors];
            i--;
        }
}

static void on_server_done(rpc_server *srv, void *data)
{
    (void)srv;
    learner *L = data;
    if (--L->servers_up > 0)
        return;
    uv_close((uv_handle_t *)&L->tick, NULL);
    if (!uv_is_closing((uv_handle_t *)&L->sigint)) {
        uv_close((uv_handle_t *)&L->sigint, NULL);
        uv_close((uv_handle_t *)&L->sigterm, NULL);
    }
}

static void on_failed_server_done(rpc_server *srv, void *data)
{
    (void)srv;
    ((learner *)data)->servers_up--;
}

/* The checkpoint is written before the server stops; if some call still keeps the server
 * from stopping after 15 s, say so and leave rather than hang. */
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
    if (L->server == NULL || L->stopping > 1)
        return;
    L->stopping = 2;
    coh_err err;
    if (trainer_checkpoint(L->tr, &err))
        fprintf(stderr, "cohort-learner: checkpoint failed: %s\n", err.msg);
    else
        fprintf(stderr, "cohort-learner: checkpoint written at step %ld\n",
                trainer_current_step(L->tr));
    uv_timer_stop(&L->tick);
    uv_timer_start(&L->tick, on_watchdog, 15000, 0);
    uv_unref((uv_handle_t *)&L->tick);
    L->servers_up = L->mserver ? 2 : 1;
    rpc_server_shutdown(L->server, on_server_done, L);
    if (L->mserver)
        rpc_server_shutdown(L->mserver, on_server_done, L);
}

static void on_signal(uv_signal_t *h, int signum)
{
    learner *L = h->data;
    fprintf(stderr, "cohort-learner: signal %d, stopping\n", signum);
    uv_close((uv_handle_t *)&L->sigint, NULL);
    uv_close((uv_handle_t *)&L->sigterm, NULL);
    if (!L->stopping)
        L->stopping = 1;
    if (!L->updating)
        shutdown_all(L);
}

/* ---- main ------------------------------------------------------------------------------------- */

enum { O_LISTEN = 2000, O_TOKEN, O_CERT, O_KEY, O_STALE, O_BUFFER, O_TTL, O_HB, O_PFILE, O_MON };

int main(int argc, char **argv)
{
    la_blas_autoselect(argv);
    static const struct option opts[] = {
        {"listen", 1, 0, O_LISTEN}, {"token", 1, 0, O_TOKEN}, {"tls-cert", 1, 0, O_CERT},
        {"tls-key", 1, 0, O_KEY}, {"max-staleness", 1, 0, O_STALE}, {"buffer", 1, 0, O_BUFFER},
        {"lease-ttl-ms", 1, 0, O_TTL}, {"heartbeat-ms", 1, 0, O_HB},
        {"prompts-file", 1, 0, O_PFILE}, {"monitor-listen", 1, 0, O_MON},
        {"out", 1, 0, 'o'}, {"task", 1, 0, 'k'}, {"digits", 1, 0, 'd'}, {"seed", 1, 0, 's'},
        {"resume", 0, 0, 'r'}, {"sft-steps", 1, 0, 'S'}, {"sft-demos", 1, 0, 'D'},
        {"rl-steps", 1, 0, 'R'}, {"prompts", 1, 0, 'P'}, {"group-size", 1, 0, 'G'},
        {"rl-lr", 1, 0, 'L'}, {"beta", 1, 0, 'B'}, {"temperature", 1, 0, 'T'},
        {"eval-every", 1, 0, 'E'}, {"ckpt-every", 1, 0, 'C'}, {"threads", 1, 0, 'j'},
        {"init", 1, 0, 'I'}, {"resume-if-present", 0, 0, 'Y'}, {"help", 0, 0, 'h'},
        {0, 0, 0, 0}};
    trainer_config c = trainer_config_default();
    snprintf(c.out_dir, sizeof c.out_dir, "runs/cluster");
    const char *listen = "0.0.0.0:50051", *token = getenv("COHORT_TOKEN"), *cert = NULL,
               *key = NULL;
    const char *prompts_file = NULL, *monitor_listen = NULL;
    int resume = 0, threads = 1, staleness = 2, buffer = 0, ttl = 30000, hb = 1000, opt;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case O_LISTEN: listen = optarg; break;
        case O_MON: monitor_listen = optarg; break;
        case O_TOKEN: token = optarg; break;
        case O_CERT: cert = optarg; break;
        case O_KEY: key = optarg; break;
        case O_STALE: staleness = atoi(optarg); break;
        case O_BUFFER: buffer = atoi(optarg); break;
        case O_TTL: ttl = atoi(optarg); break;
        case O_HB: hb = atoi(optarg); break;
        case O_PFILE: prompts_file = optarg; break;
        case 'o': snprintf(c.out_dir, sizeof c.out_dir, "%s", optarg); break;
        case 'k': snprintf(c.task, sizeof c.task, "%s", optarg); break;
        case 'd': c.task_cfg.digits = atoi(optarg); break;
        case 's': c.seed = strtoull(optarg, NULL, 10); break;
        case 'r': resume = 1; break;
        case 'Y': resume = -1; break;
        case 'S': c.sft_steps = atoi(optarg); break;
        case 'D': c.sft_demos = atoi(optarg); break;
        case 'R': c.rl_steps = atoi(optarg); break;
        case 'P': c.prompts_per_step = atoi(optarg); break;
        case 'G': c.group_size = atoi(optarg); break;
        case 'L': c.rl_lr = strtof(optarg, NULL); break;
        case 'B': c.loss.beta = strtof(optarg, NULL); break;
        case 'T': c.loss.temperature = strtof(optarg, NULL); break;
        case 'E': c.eval_every = atoi(optarg); break;
        case 'C': c.ckpt_every = atoi(optarg); break;
        case 'j': threads = atoi(optarg); break;
        case 'I': snprintf(c.init_from, sizeof c.init_from, "%s", optarg); break;
        case 'h':
            printf("usage: cohort-learner [--listen HOST:PORT] [--out DIR] [--resume] [--token T]\n"
                   "  [--tls-cert PEM --tls-key PEM] [--max-staleness N] [--buffer GROUPS]\n"
                   "  [--lease-ttl-ms MS] [--heartbeat-ms MS] [--threads N] [--init DIR]\n"
                   "  [--resume-if-present]  resume when OUT has a checkpoint (containers)\n"
                   "  [--monitor-listen HOST:PORT]  also serve Monitor (only) on this port,\n"
                   "      the one to publish to operators; --listen keeps serving both\n"
                   "  [--prompts-file FILE.jsonl]  RL prompts from {\"prompt\", \"task\",\n"
                   "      \"answer\"?, \"metadata\"?} lines, passed untouched to the verifiers\n"
                   "  training: --task --digits --seed --sft-steps --sft-demos --rl-steps\n"
                   "            --prompts --group-size --rl-lr --beta --temperature\n"
                   "            --eval-every --ckpt-every (as cohort-train)\n");
            return 0;
        default: return 2;
        }
    }
    la_set_threads(threads);
    if (resume < 0) { /* --resume-if-present: a restarted container continues its run */
        char latest[600];
        snprintf(latest, sizeof latest, "%s/checkpoints/latest", c.out_dir);
        resume = access(latest, F_OK) == 0;
        if (resume)
            printf("cohort-learner: resuming from %s\n", latest);
    }
    static learner L;
    memset(&L, 0, sizeof L);
    L.heartbeat_ms = hb;
    L.max_staleness = staleness;
    L.start_ms = now_ms();
    coh_err err;
    coh_err_clear(&err);
    int rc = 1;
    if (trainer_create(&c, resume, &L.tr, &err)) {
        fprintf(stderr, "cohort-learner: %s\n", err.msg);
        return 1;
    }
    L.cfg = *trainer_get_config(L.tr);
    /* the warm start runs here, before actors are served */
    while (trainer_has_next(L.tr) && !trainer_in_rl(L.tr)) {
        trainer_metrics m;
        if (trainer_step(L.tr, &m, &err)) {
            fprintf(stderr, "cohort-learner: %s\n", err.msg);
            goto out;
        }
        if (m.eval_accuracy >= 0)
            printf("step %5ld [%s] loss %.4f | held-out accuracy %.1f%%\n", m.step, m.phase,
                   m.loss, 100 * m.eval_accuracy);
        else if (m.step % 100 == 0)
            printf("step %5ld [%s] loss %.4f\n", m.step, m.phase, m.loss);
        fflush(stdout);
    }
    if (!trainer_has_next(L.tr)) {
        printf("nothing left to train (step %ld)\n", trainer_current_step(L.tr));
        rc = 0;
        goto out;
    }
    L.tok = (tokenizer *)trainer_tokenizer(L.tr);
    task_config tc = L.cfg.task_cfg;
    if (tok_to_json(L.tok, &L.tok_json, &err) || task_create(L.cfg.task, &tc, &L.task, &err) ||
        (prompts_file && load_prompt_file(&L, prompts_file, &err)) ||
        lease_create(4096, (uint64_t)ttl, random_u64(), &L.leases, &err)) {
        fprintf(stderr, "cohort-learner: %s\n", err.msg);
        goto out;
    }
    /* RL prompts come after everything SFT could have used */
    L.rl_cursor = ((uint64_t)1 << 40) + (uint64_t)trainer_current_step(L.tr) * 100000u;
    L.bcfg = (gbuf_config){.capacity = buffer > 0 ? buffer : L.cfg.prompts_per_step * 2,
                           .group_size = L.cfg.group_size,
                           .vocab_size = model_get_config(trainer_policy(L.tr))->vocab_size,
                           .max_seq = model_get_config(trainer_policy(L.tr))->max_seq,
                           .max_new_tokens = L.cfg.sampling.max_new_tokens,
                           .max_staleness = staleness};
    if (gbuf_create(&L.bcfg, &L.buf, &err)) {
        fprintf(stderr, "cohort-learner: %s\n", err.msg);
        goto out;
    }
    wt_snapshot *first = NULL;
    if (wt_snapshot_make(trainer_policy(L.tr), trainer_current_step(L.tr), &first, &err)) {
        fprintf(stderr, "cohort-learner: %s\n", err.msg);
        goto out;
    }
    publish(&L, first);

    rpc_global_init();
    L.loop = uv_default_loop();
    rpc_server_config sc = {.listen_address = listen, .max_receive_bytes = 16 << 20,
                            .tls_cert_file = cert, .tls_key_file = key, .bearer_token = token};
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
    if (monitor_listen) {
        sc.listen_address = monitor_listen;
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
    printf("cohort-learner: serving on port %d; RL from step %ld, waiting for actors\n",
           rpc_server_port(L.server), trainer_current_step(L.tr));
    fflush(stdout);
    uv_timer_init(L.loop, &L.tick);
    L.tick.data = &L;
    uv_timer_start(&L.tick, on_tick, 500, 500);
    uv_signal_init(L.loop, &L.sigint);
    uv_signal_init(L.loop, &L.sigterm);
    L.sigint.data = L.sigterm.data = &L;
    uv_signal_start(&L.sigint, on_signal, SIGINT);
    uv_signal_start(&L.sigterm, on_signal, SIGTERM);
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
    snap_release(L.cur);
    snap_release(L.prev);
    gbuf_destroy(L.buf);
    lease_destroy(L.leases);
    task_destroy(L.task);
    free(L.file_items);
    free(L.file_tasks);
    free(L.tok_json);
    trainer_destroy(L.tr);
    return rc;
}
