/* main_reward.c - cohort-reward: the Reward service.
 *
 * Serves cohort.v1.Reward/Score and grpc.health.v1.Health. Each Score request is scored on
 * the libuv thread pool (so slow verifiers never block the event loop): built-in verifiers,
 * the reward model and custom Verifier services (scorer.h), each item with its components,
 * or reported FAILED / TIMED_OUT / UNKNOWN_TASK with the reason. Per-verifier latency and
 * timeout counts are logged every --stats-every seconds and at exit.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "cli.h"
#include "cohort/v1/reward.pb-c.h"
#include "cohort/v1/verifier.pb-c.h"
#include "fsutil.h"
#include "rpc.h"
#include "tsan.h"
#include "scorer.h"

#define MAX_SCORERS 16
#define MAX_CHANNELS 64
#define MAX_ITEMS 4096

/* ---- verifier channels (shared by worker threads) ---------------------------------------- */

typedef struct channels {
    pthread_mutex_t mu;
    int n;
    char target[MAX_CHANNELS][256];
    rpc_channel *ch[MAX_CHANNELS];
    const char *token; /* sent to verifiers, may be NULL */
} channels;

static rpc_channel *channel_for(channels *cs, const char *target, coh_err *err)
{
    rpc_channel *found = NULL;
    pthread_mutex_lock(&cs->mu);
    for (int i = 0; i < cs->n && !found; i++)
        if (strcmp(cs->target[i], target) == 0)
            found = cs->ch[i];
    if (!found && cs->n < MAX_CHANNELS) {
        rpc_channel_config cfg = {.bearer_token = cs->token};
        if (rpc_channel_create(target, &cfg, &found, err) == COH_OK) {
            snprintf(cs->target[cs->n], sizeof cs->target[0], "%s", target);
            cs->ch[cs->n++] = found;
        }
    } else if (!found) {
        coh_fail(err, COH_ERANGE, "too many verifier endpoints (at most %d)", MAX_CHANNELS);
    }
    pthread_mutex_unlock(&cs->mu);
    return found;
}

/* scorer_remote_fn: one Verify call with a deadline. */
static int verify_remote(void *ctx, const char *endpoint, const scorer_item *item,
                         int timeout_ms, scorer_remote_reply *reply, int *timed_out,
                         int *unavailable, int *unknown_task, coh_err *err)
{
    channels *cs = ctx;
    rpc_channel *ch = channel_for(cs, endpoint, err);
    if (!ch) {
        *unavailable = 1;
        return err ? err->code : COH_EIO;
    }
    Cohort__V1__VerifyRequest req = COHORT__V1__VERIFY_REQUEST__INIT;
    req.task = (char *)item->task;
    req.prompt = (char *)item->prompt;
    req.completion = (char *)item->completion;
    req.metadata_json = (char *)(item->metadata_json ? item->metadata_json : "");
    req.answer = (char *)(item->answer ? item->answer : "");
    req.prompt_tokens = (int32_t *)item->prompt_tokens;
    req.n_prompt_tokens = item->prompt_tokens ? item->n_prompt_tokens : 0;
    req.completion_tokens = (int32_t *)item->completion_tokens;
    req.n_completion_tokens = item->completion_tokens ? item->n_completion_tokens : 0;
    ProtobufCMessage *rep = NULL;
    rpc_status st;
    int rc = rpc_unary_msg(ch, "/cohort.v1.Verifier/Verify", &req.base,
                           &cohort__v1__verify_reply__descriptor, timeout_ms, &rep, &st);
    if (rc != COH_OK || st.code != GRPC_STATUS_OK) {
        *timed_out = st.code == GRPC_STATUS_DEADLINE_EXCEEDED || st.code == GRPC_STATUS_CANCELLED;
        *unavailable = st.code == GRPC_STATUS_UNAVAILABLE;
        *unknown_task = st.code == GRPC_STATUS_NOT_FOUND;
        rpc_msg_free(rep);
        return coh_fail(err, COH_EIO, "%s from %s: %.300s", rpc_status_name(st.code), endpoint,
                        st.message);
    }
    Cohort__V1__VerifyReply *r = (Cohort__V1__VerifyReply *)rep;
    reply->score = r->score;
    reply->passed = r->passed;
    snprintf(reply->details, sizeof reply->details, "%s", r->details ? r->details : "");
    rpc_msg_free(rep);
    return COH_OK;
}

/* ---- scorer pool -------------------------------------------------------------------------- */

typedef struct service {
    uv_loop_t *loop;
    rpc_server *server;
    channels chans;
    int n_scorers;
    scorer *scorers[MAX_SCORERS];
    int busy[MAX_SCORERS];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long requests, items, items_failed, items_timed_out, items_unknown;
    uv_signal_t sigint, sigterm;
    uv_timer_t stats_timer;
    int stopping;
} service;

static scorer *take_scorer(service *s, int *idx)
{
    pthread_mutex_lock(&s->mu);
    for (;;) {
        for (int i = 0; i < s->n_scorers; i++)
            if (!s->busy[i]) {
                s->busy[i] = 1;
                *idx = i;
                pthread_mutex_unlock(&s->mu);
                return s->scorers[i];
            }
        pthread_cond_wait(&s->cv, &s->mu);
    }
}

static void give_scorer(service *s, int idx)
{
    pthread_mutex_lock(&s->mu);
    s->busy[idx] = 0;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- Score -------------------------------------------------------------------------------- */

typedef struct score_job {
    uv_work_t work;
    service *svc;
    rpc_call *call;
    Cohort__V1__ScoreRequest *req;
    scorer_result *results;
} score_job;

static void score_work(uv_work_t *w)
{
    COH_TSAN_ACQUIRE(w); /* libuv's queue hand-off is invisible to TSan: see common/tsan.h */
    score_job *j = w->data;
    int idx;
    scorer *sc = take_scorer(j->svc, &idx);
    for (size_t i = 0; i < j->req->n_items; i++) {
        const Cohort__V1__RewardItem *it = j->req->items[i];
        scorer_item si = {it->task, it->prompt, it->completion, it->answer, it->metadata_json,
                          it->prompt_tokens, it->completion_tokens, it->n_prompt_tokens,
                          it->n_completion_tokens};
        coh_err err;
        if (scorer_score(sc, &si, &j->results[i], &err)) {
            memset(&j->results[i], 0, sizeof j->results[i]);
            j->results[i].status = SCORE_FAILED;
            snprintf(j->results[i].detail, sizeof j->results[i].detail, "%.200s", err.msg);
        }
    }
    give_scorer(j->svc, idx);
    COH_TSAN_RELEASE(w);
}

static void score_done(uv_work_t *w, int status)
{
    COH_TSAN_ACQUIRE(w);
    score_job *j = w->data;
    service *s = j->svc;
    size_t n = j->req->n_items;
    Cohort__V1__ItemResult *res = calloc(n ? n : 1, sizeof *res);
    Cohort__V1__ItemResult **resp = calloc(n ? n : 1, sizeof *resp);
    Cohort__V1__RewardComponent *comps = calloc((n ? n : 1) * SCORER_MAX_COMPONENTS, sizeof *comps);
    Cohort__V1__RewardComponent **compp = calloc((n ? n : 1) * SCORER_MAX_COMPONENTS, sizeof *compp);
    if (status != 0 || !res || !resp || !comps || !compp) {
        rpc_call_fail(j->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                      "cohort-reward is out of memory or shutting down; retry later");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const scorer_result *r = &j->results[i];
        Cohort__V1__ItemResult *o = &res[i];
        cohort__v1__item_result__init(o);
        o->item_id = j->req->items[i]->item_id;
        o->status = (Cohort__V1__ItemStatus)r->status;
        o->reward = r->reward;
        o->detail = (char *)r->detail;
        o->latency_ms = r->latency_ms;
        o->n_components = (size_t)r->n_components;
        o->components = compp + i * SCORER_MAX_COMPONENTS;
        for (int k = 0; k < r->n_components; k++) {
            Cohort__V1__RewardComponent *c = &comps[i * SCORER_MAX_COMPONENTS + (size_t)k];
            cohort__v1__reward_component__init(c);
            c->name = (char *)r->comp[k].name;
            c->value = r->comp[k].value;
            c->weight = r->comp[k].weight;
            o->components[k] = c;
        }
        resp[i] = o;
        s->items++;
        s->items_failed += r->status == SCORE_FAILED;
        s->items_timed_out += r->status == SCORE_TIMED_OUT;
        s->items_unknown += r->status == SCORE_UNKNOWN_TASK;
    }
    Cohort__V1__ScoreReply reply = COHORT__V1__SCORE_REPLY__INIT;
    reply.n_results = n;
    reply.results = resp;
    rpc_call_reply_msg(j->call, &reply.base);
out:
    free(res);
    free(resp);
    free(comps);
    free(compp);
    free(j->results);
    rpc_msg_free(&j->req->base);
    free(j);
}

static void on_score(rpc_call *call, rpc_event ev, void *data)
{
    (void)ev;
    service *s = data;
    size_t len = 0;
    const uint8_t *bytes = rpc_call_request(call, &len);
    Cohort__V1__ScoreRequest *req =
        (Cohort__V1__ScoreRequest *)rpc_unpack(&cohort__v1__score_request__descriptor, bytes, len);
    if (!req) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "malformed ScoreRequest: the bytes are not a cohort.v1.ScoreRequest");
        return;
    }
    if (req->n_items > MAX_ITEMS) {
        char msg[128];
        snprintf(msg, sizeof msg, "ScoreRequest has %zu items; at most %d per call",
                 req->n_items, MAX_ITEMS);
        rpc_msg_free(&req->base);
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, msg);
        return;
    }
    for (size_t i = 0; i < req->n_items; i++)
        if (!req->items[i]->task[0]) {
            char msg[128];
            snprintf(msg, sizeof msg, "item %zu has no task name", i);
            rpc_msg_free(&req->base);
            rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, msg);
            return;
        }
    score_job *j = calloc(1, sizeof *j);
    if (j)
        j->results = calloc(req->n_items ? req->n_items : 1, sizeof *j->results);
    if (!j || !j->results) {
        if (j)
            free(j);
        rpc_msg_free(&req->base);
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "cohort-reward is out of memory");
        return;
    }
    s->requests++;
    j->svc = s;
    j->call = call;
    j->req = req;
    j->work.data = j;
    COH_TSAN_RELEASE(&j->work);
    if (uv_queue_work(s->loop, &j->work, score_work, score_done) != 0) {
        free(j->results);
        free(j);
        rpc_msg_free(&req->base);
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, "cohort-reward cannot queue work");
    }
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static void log_stats(service *s)
{
    fprintf(stderr,
            "cohort-reward: %ld requests, %ld items (%ld failed, %ld timed out, %ld unknown "
            "task)\n",
            s->requests, s->items, s->items_failed, s->items_timed_out, s->items_unknown);
    /* every scorer of the pool has its own counters: sum them per verifier */
    for (int v = 0; s->n_scorers > 0 && v < scorer_num_verifiers(s->scorers[0]); v++) {
        scorer_verifier_stats sum = {0}, one;
        for (int k = 0; k < s->n_scorers; k++) {
            scorer_get_verifier_stats(s->scorers[k], v, &one);
            sum.name = one.name;
            sum.task = one.task;
            sum.calls += one.calls;
            sum.ok += one.ok;
            sum.failed += one.failed;
            sum.timed_out += one.timed_out;
            sum.latency_ms_sum += one.latency_ms_sum;
            if (one.latency_ms_max > sum.latency_ms_max)
                sum.latency_ms_max = one.latency_ms_max;
        }
        fprintf(stderr,
                "cohort-reward: verifier %s (task %s): %ld calls, %ld ok, %ld failed, %ld timed "
                "out, latency mean %.1f ms max %.1f ms\n",
                sum.name, sum.task, sum.calls, sum.ok, sum.failed, sum.timed_out,
                sum.calls ? sum.latency_ms_sum / (double)sum.calls : 0.0, sum.latency_ms_max);
    }
}

static void on_stats_timer(uv_timer_t *t) { log_stats(t->data); }

static void on_server_done(rpc_server *srv, void *data)
{
    (void)srv;
    service *s = data;
    uv_close((uv_handle_t *)&s->stats_timer, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    service *s = h->data;
    if (s->stopping)
        return;
    s->stopping = 1;
    fprintf(stderr, "cohort-reward: signal %d, shutting down\n", signum);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_timer_stop(&s->stats_timer);
    rpc_server_shutdown(s->server, on_server_done, s);
}

#define STATS_EVERY_MAX 86400 /* --stats-every: at most a day (0 = never) */

static void usage(FILE *f)
{
    fprintf(f, "usage: cohort-reward [--listen HOST:PORT] [--config reward.json] [--workers N]\n"
               "                     [--token T] [--tls-cert PEM --tls-key PEM]\n"
               "                     [--verifier-token T] [--stats-every SECONDS]\n"
               "Serves cohort.v1.Reward (default 0.0.0.0:50052) and grpc.health.v1.Health.\n"
               "The config routes tasks to custom Verifier services, sets component weights\n"
               "and an optional reward model (see reward/scorer.h).\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", 1, 0, 'l'},    {"config", 1, 0, 'c'},    {"workers", 1, 0, 'w'},
        {"token", 1, 0, 't'},     {"tls-cert", 1, 0, 'C'},  {"tls-key", 1, 0, 'K'},
        {"verifier-token", 1, 0, 'v'}, {"stats-every", 1, 0, 's'}, {"help", 0, 0, 'h'},
        {0, 0, 0, 0}};
    const char *listen = "0.0.0.0:50052", *config = NULL, *token = getenv("COHORT_TOKEN");
    const char *cert = NULL, *key = NULL, *vtoken = NULL;
    int workers = 4, stats_every = 30, opt;
    coh_err aerr;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case 'l': listen = optarg; break;
        case 'c': config = optarg; break;
        case 'w':
            bad = cli_parse_int("--workers", optarg, 1, MAX_SCORERS, &workers, &aerr);
            break;
        case 't': token = optarg; break;
        case 'C': cert = optarg; break;
        case 'K': key = optarg; break;
        case 'v': vtoken = optarg; break;
        case 's':
            bad = cli_parse_int("--stats-every", optarg, 0, STATS_EVERY_MAX, &stats_every, &aerr);
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (bad) {
            fprintf(stderr, "cohort-reward: %s\n", aerr.msg);
            return 2;
        }
    }
    char wbuf[16];
    snprintf(wbuf, sizeof wbuf, "%d", workers);
    setenv("UV_THREADPOOL_SIZE", wbuf, 1); /* read when the pool first starts */

    coh_err err;
    coh_err_clear(&err);
    char *cfg_text = NULL;
    size_t cfg_len = 0;
    if (config && fs_read_all(config, &cfg_text, &cfg_len, &err)) {
        fprintf(stderr, "cohort-reward: %s\n", err.msg);
        return 1;
    }
    rpc_global_init();
    static service s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    pthread_mutex_init(&s.chans.mu, NULL);
    s.chans.token = vtoken;
    int rc = 1;
    for (int i = 0; i < workers; i++) {
        if (scorer_create(cfg_text, verify_remote, &s.chans, &s.scorers[i], &err)) {
            fprintf(stderr, "cohort-reward: %s\n", err.msg);
            goto out;
        }
        s.n_scorers++;
    }
    s.loop = uv_default_loop();
    rpc_server_config sc = {.listen_address = listen, .max_receive_bytes = 16 << 20,
                            .tls_cert_file = cert, .tls_key_file = key, .bearer_token = token};
    if (rpc_server_create(s.loop, &sc, &s.server, &err) ||
        rpc_server_add_method(s.server, "/cohort.v1.Reward/Score", RPC_UNARY, on_score, &s,
                              &err) ||
        rpc_health_register(s.server, &err) || rpc_server_start(s.server, &err)) {
        fprintf(stderr, "cohort-reward: %s\n", err.msg);
        goto out;
    }
    rpc_health_set(s.server, "cohort.v1.Reward", 1);
    fprintf(stderr, "cohort-reward: serving cohort.v1.Reward on port %d (%d workers, %d custom "
                    "verifiers)\n",
            rpc_server_port(s.server), workers, scorer_num_verifiers(s.scorers[0]));
    uv_signal_init(s.loop, &s.sigint);
    uv_signal_init(s.loop, &s.sigterm);
    s.sigint.data = s.sigterm.data = &s;
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    uv_timer_init(s.loop, &s.stats_timer);
    s.stats_timer.data = &s;
    if (stats_every > 0)
        uv_timer_start(&s.stats_timer, on_stats_timer, (uint64_t)stats_every * 1000,
                       (uint64_t)stats_every * 1000);
    uv_run(s.loop, UV_RUN_DEFAULT);
    log_stats(&s);
    rc = 0;
out:
    rpc_server_destroy(s.server);
    if (s.loop)
        uv_loop_close(s.loop);
    for (int i = 0; i < s.n_scorers; i++)
        scorer_destroy(s.scorers[i]);
    for (int i = 0; i < s.chans.n; i++)
        rpc_channel_destroy(s.chans.ch[i]);
    free(cfg_text);
    rpc_global_shutdown();
    return rc;
}
