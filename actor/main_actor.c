/* main_actor.c - cohort-actor: the sampling worker.
 *
 * Threads:
 *   main       the sampling loop: LeasePrompts -> sampler_generate (one batch of group_size
 *              rows per prompt) -> Reward.Score -> SubmitGroup;
 *   watcher    WatchVersions (server stream): records the newest VersionNotice;
 *   downloader DownloadWeights of the newest notice into a wt_recv (chunk offsets and CRCs,
 *              resume at wt_recv_offset on a broken stream), wt_recv_finish, then publishes
 *              the verified policy in a "pending" slot; the main thread adopts it between
 *              groups (it never samples with a partial version, and keeps sampling with the
 *              old one meanwhile);
 *   heartbeat  Heartbeat every heartbeat_interval_ms (applies sampling params / pause) and
 *              prints the progress line;
 *   signals    sigwait(SIGINT, SIGTERM): sets the stop flag, wakes every sleeper and cancels
 *              the open streams.
 * Any thread that gets NOT_FOUND "unknown actor" re-registers (once per stale id).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cohort/v1/learner.pb-c.h"
#include "cohort/v1/reward.pb-c.h"
#include "linalg.h"
#include "model.h"
#include "rng.h"
#include "rpc.h"
#include "sampler.h"
#include "tokenizer.h"
#include "weights.h"

#define M_REGISTER "/cohort.v1.Learner/RegisterActor"
#define M_HEARTBEAT "/cohort.v1.Learner/Heartbeat"
#define M_WATCH "/cohort.v1.Learner/WatchVersions"
#define M_DOWNLOAD "/cohort.v1.Learner/DownloadWeights"
#define M_LEASE "/cohort.v1.Learner/LeasePrompts"
#define M_SUBMIT "/cohort.v1.Learner/SubmitGroup"
#define M_RETURN "/cohort.v1.Learner/ReturnLeases"
#define M_SCORE "/cohort.v1.Reward/Score"

#define MAX_BACKOFF_MS 5000

/* ---- small utilities ------------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int quiet;
static const char *g_name = "actor";
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static void logf_(int always, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(int always, const char *fmt, ...)
{
    if (quiet && !always)
        return;
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&log_mu);
    fprintf(stderr, "cohort-actor[%s]: ", g_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_mu);
    va_end(ap);
}
#define LOG(...) logf_(0, __VA_ARGS__)  /* progress / info: silenced by --quiet */
#define WARN(...) logf_(1, __VA_ARGS__) /* problems: always printed */

static int is_unknown_actor(const rpc_status *st)
{
    return st->code == GRPC_STATUS_NOT_FOUND && strncmp(st->message, "unknown actor", 13) == 0;
}

/* ---- the policy a version gives ---------------------------------------------------------- */

typedef struct policy {
    int64_t version;
    uint32_t checksum;
    model *m;
    tokenizer *tok;
} policy;

static void policy_free(policy *p)
{
    if (!p)
        return;
    model_destroy(p->m);
    tok_destroy(p->tok);
    free(p);
}

/* newest VersionNotice seen (copied out of the stream's message) */
typedef struct notice {
    int have;
    int64_t version;
    uint64_t total_bytes;
    uint32_t checksum;
    char *config_json;    /* may be NULL: then the first chunk's manifest gives it */
    char *tokenizer_json; /* NULL or "" = none */
    int has_manifest;
} notice;

static void notice_clear(notice *n)
{
    free(n->config_json);
    free(n->tokenizer_json);
    memset(n, 0, sizeof *n);
}

/* ---- shared state ------------------------------------------------------------------------ */

typedef struct actor {
    /* configuration */
    const char *learner_addr, *reward_addr, *name, *token;
    int threads, prompts_per_lease, reward_timeout_ms;
    long max_steps;
    uint64_t seed;

    rpc_channel *lch, *rch;

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;  /* stop, new notice, new policy, registration */
    int stop;
    int fatal;
    /* registration */
    pthread_mutex_t reg_mu; /* serialises re-registration */
    uint64_t actor_id;
    long reg_gen; /* bumps on every successful registration */
    uint32_t hb_interval_ms, lease_ttl_ms;
    int group_size, max_staleness;
    Cohort__V1__SamplingParams sp; /* copy; stop ids below */
    int eos_id;
    int paused;
    int64_t learner_version;
    /* weights */
    notice latest;      /* newest notice from the watcher */
    long notice_seq;    /* bumps on every notice (and on a re-watch) */
    policy *pending;    /* verified, not yet adopted by the sampler */
    int64_t held_version; /* newest verified version (pending or in use); -1 = none */
    uint32_t held_checksum;
    rpc_stream *watch_stream, *dl_stream; /* open streams, for cancellation */
    /* statistics */
    long long tokens_total, completions_total, groups_submitted, groups_accepted, groups_dropped;
    double reward_sum;
    long reward_n;
} actor;

static int stopping(actor *a)
{
    pthread_mutex_lock(&a->mu);
    int s = a->stop;
    pthread_mutex_unlock(&a->mu);
    return s;
}

static void request_stop(actor *a, int fatal)
{
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    if (fatal)
        a->fatal = 1;
    if (a->watch_stream)
        rpc_stream_cancel(a->watch_stream);
    if (a->dl_stream)
        rpc_stream_cancel(a->dl_stream);
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* Sleep ms unless stopping (or, with gen non-NULL, until a registration changes *gen);
 * returns 1 when stopping. */
static int sleep_ms_gen(actor *a, long ms, const long *gen)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&a->mu);
    while (!a->stop && !(gen && *gen != a->reg_gen)) {
        if (pthread_cond_timedwait(&a->cv, &a->mu, &ts) == ETIMEDOUT)
            break;
    }
    int s = a->stop;
    pthread_mutex_unlock(&a->mu);
    return s;
}

static int sleep_ms(actor *a, long ms) { return sleep_ms_gen(a, ms, NULL); }

/* Open a server stream on the learner channel and publish it in *slot (so that a stop can
 * cancel it). Returns 0 with *out open, 1 when it could not be opened (retry later), -1 when
 * the actor is stopping (nothing left open). */
static int open_stream(actor *a, const char *method, const ProtobufCMessage *req,
                       int64_t deadline_ms, rpc_stream **slot, rpc_stream **out)
{
    uint8_t *buf = NULL;
    size_t blen = 0;
    *out = NULL;
    if (rpc_pack(req, 0, &buf, &blen, NULL) ||
        rpc_stream_open(a->lch, method, buf, blen, deadline_ms, out, NULL)) {
        free(buf);
        return 1;
    }
    free(buf);
    pthread_mutex_lock(&a->mu);
    int stop = a->stop;
    if (!stop)
        *slot = *out;
    pthread_mutex_unlock(&a->mu);
    if (stop) {
        rpc_stream_close(*out, NULL);
        *out = NULL;
        return -1;
    }
    return 0;
}


static long next_backoff(long cur) { return cur * 2 > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : cur * 2; }

static uint64_t get_actor_id(actor *a)
{
    pthread_mutex_lock(&a->mu);
    uint64_t id = a->actor_id;
    pthread_mutex_unlock(&a->mu);
    return id;
}

/* ---- sampling parameters ----------------------------------------------------------------- */

/* Adopt sp (from RegisterReply / HeartbeatReply) if it is valid; caller holds a->mu. */
static void apply_sampling_locked(actor *a, const Cohort__V1__SamplingParams *sp)
{
    if (!sp)
        return;
    if (!(sp->temperature > 0 && sp->temperature <= 10) || sp->top_k < 0 ||
        !(sp->top_p > 0 && sp->top_p <= 1) || sp->max_new_tokens < 1 ||
        sp->max_new_tokens > 65536) {
        WARN("learner sent invalid sampling parameters (temperature %g, top_k %d, top_p %g, "
             "max_new_tokens %d); keeping the previous ones",
             sp->temperature, sp->top_k, sp->top_p, sp->max_new_tokens);
        return;
    }
    int changed = a->sp.temperature != sp->temperature || a->sp.top_k != sp->top_k ||
                  a->sp.top_p != sp->top_p || a->sp.max_new_tokens != sp->max_new_tokens;
    a->sp.temperature = sp->temperature;
    a->sp.top_k = sp->top_k;
    a->sp.top_p = sp->top_p;
    a->sp.max_new_tokens = sp->max_new_tokens;
    /* The sampler stops on one id. stop_token_ids lists the learner's stop ids; <eos> (2) is
     * used when it is listed or when the list is empty (the run's tokenizer always ends a
     * completion with <eos>); otherwise the first listed id. */
    int eos = TOK_EOS;
    if (sp->n_stop_token_ids > 0) {
        eos = sp->stop_token_ids[0];
        for (size_t i = 0; i < sp->n_stop_token_ids; i++)
            if (sp->stop_token_ids[i] == TOK_EOS)
                eos = TOK_EOS;
        if (sp->n_stop_token_ids > 1 && changed)
            WARN("learner lists %zu stop tokens; this actor stops on id %d only",
                 sp->n_stop_token_ids, eos);
    }
    a->eos_id = eos;
    if (changed)
        LOG("sampling: temperature %g, top_k %d, top_p %g, max_new_tokens %d, stop id %d",
            sp->temperature, sp->top_k, sp->top_p, sp->max_new_tokens, eos);
}

/* ---- registration ------------------------------------------------------------------------ */

/* Register (again) unless someone already replaced stale_id. Retries with back-off until it
 * succeeds or the actor stops. Returns 0 on success, -1 when stopping / fatal. */
static int reregister(actor *a, uint64_t stale_id)
{
    pthread_mutex_lock(&a->reg_mu);
    if (get_actor_id(a) != stale_id) {
        pthread_mutex_unlock(&a->reg_mu);
        return stopping(a) ? -1 : 0;
    }
    long backoff = 200;
    int attempt = 0, rc = -1;
    while (!stopping(a)) {
        attempt++;
        Cohort__V1__RegisterRequest req = COHORT__V1__REGISTER_REQUEST__INIT;
        req.name = (char *)a->name;
        req.threads = a->threads;
        ProtobufCMessage *rep = NULL;
        rpc_status st;
        rpc_unary_msg(a->lch, M_REGISTER, &req.base, &cohort__v1__register_reply__descriptor,
                      5000, &rep, &st);
        if (st.code == GRPC_STATUS_OK && rep) {
            Cohort__V1__RegisterReply *r = (Cohort__V1__RegisterReply *)rep;
            pthread_mutex_lock(&a->mu);
            a->actor_id = r->actor_id;
            a->reg_gen++;
            a->hb_interval_ms = r->heartbeat_interval_ms ? r->heartbeat_interval_ms : 2000;
            a->lease_ttl_ms = r->lease_ttl_ms;
            a->group_size = r->group_size >= 1 ? r->group_size : 1;
            a->max_staleness = r->max_staleness;
            a->learner_version = r->current_version;
            apply_sampling_locked(a, r->sampling);
            pthread_cond_broadcast(&a->cv);
            pthread_mutex_unlock(&a->mu);
            LOG("registered with %s as actor %016llx (group_size %d, heartbeat %u ms, lease "
                "ttl %u ms, current version %lld, max_staleness %d)",
                a->learner_addr, (unsigned long long)r->actor_id, r->group_size,
                r->heartbeat_interval_ms, r->lease_ttl_ms, (long long)r->current_version,
                r->max_staleness);
            rpc_msg_free(rep);
            rc = 0;
            break;
        }
        rpc_msg_free(rep);
        if (st.code == GRPC_STATUS_UNAUTHENTICATED || st.code == GRPC_STATUS_INVALID_ARGUMENT) {
            WARN("RegisterActor refused: %s: %s", rpc_status_name(st.code), st.message);
            request_stop(a, 1);
            break;
        }
        WARN("RegisterActor attempt %d at %s: %s: %s; retrying in %ld ms", attempt,
             a->learner_addr, rpc_status_name(st.code), st.message, backoff);
        if (sleep_ms(a, backoff))
            break;
        backoff = next_backoff(backoff);
    }
    pthread_mutex_unlock(&a->reg_mu);
    return rc;
}

/* ---- watcher thread --------------------------------------------------------------------- */

static char *dup_or_null(const char *s) { return s && *s ? strdup(s) : NULL; }

static void *watcher_main(void *arg)
{
    actor *a = arg;
    long backoff = 200;
    while (!stopping(a)) {
        pthread_mutex_lock(&a->mu);
        uint64_t id = a->actor_id;
        long gen = a->reg_gen;
        pthread_mutex_unlock(&a->mu);
        Cohort__V1__WatchVersionsRequest req = COHORT__V1__WATCH_VERSIONS_REQUEST__INIT;
        req.actor_id = id;
        rpc_stream *s = NULL;
        int o = open_stream(a, M_WATCH, &req.base, 600000, &a->watch_stream, &s);
        if (o < 0)
            break;
        if (o > 0) {
            if (sleep_ms(a, 1000))
                break;
            continue;
        }
        int got = 0;
        const uint8_t *msg;
        size_t len;
        int rc;
        while ((rc = rpc_stream_next(s, &msg, &len)) == 1) {
            Cohort__V1__VersionNotice *n = (Cohort__V1__VersionNotice *)rpc_unpack(
                &cohort__v1__version_notice__descriptor, msg, len);
            if (!n) {
                WARN("WatchVersions: malformed VersionNotice ignored");
                continue;
            }
            got = 1;
            backoff = 200;
            pthread_mutex_lock(&a->mu);
            notice_clear(&a->latest);
            a->latest.have = 1;
            a->latest.version = n->version;
            a->latest.total_bytes = n->total_bytes;
            a->latest.checksum = n->checksum;
            if (n->manifest) {
                a->latest.has_manifest = 1;
                a->latest.config_json = dup_or_null(n->manifest->config_json);
                a->latest.tokenizer_json = dup_or_null(n->manifest->tokenizer_json);
            }
            a->learner_version = n->version;
            a->notice_seq++;
            pthread_cond_broadcast(&a->cv);
            pthread_mutex_unlock(&a->mu);
            rpc_msg_free(&n->base);
        }
        pthread_mutex_lock(&a->mu);
        a->watch_stream = NULL;
        pthread_mutex_unlock(&a->mu);
        rpc_status st;
        rpc_stream_close(s, &st);
        if (stopping(a))
            break;
        if (rc == 0) {
            LOG("WatchVersions ended (run finished?); watching again");
        } else if (is_unknown_actor(&st)) {
            if (reregister(a, id))
                break;
            continue;
        } else if (st.code == GRPC_STATUS_DEADLINE_EXCEEDED && got) {
            continue; /* long-lived stream reached its deadline: re-watch at once */
        } else {
            WARN("WatchVersions: %s: %s; reconnecting in %ld ms", rpc_status_name(st.code),
                 st.message, backoff);
        }
        if (sleep_ms_gen(a, backoff, &gen))
            break;
        pthread_mutex_lock(&a->mu);
        int reregistered = gen != a->reg_gen;
        pthread_mutex_unlock(&a->mu);
        backoff = reregistered ? 200 : next_backoff(backoff);
    }
    return NULL;
}

/* ---- downloader thread ------------------------------------------------------------------ */

/* Load the tokenizer a manifest carries (NULL / "" = the default tokenizer). */
static int load_tokenizer(const char *json, tokenizer **out, coh_err *err)
{
    if (!json || !*json)
        return tok_create_default(out, err);
    char path[] = "/tmp/cohort-actor-tok-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return coh_fail(err, COH_EIO, "cannot create a temporary tokenizer file: %s",
                        strerror(errno));
    size_t n = strlen(json), off = 0;
    while (off < n) {
        ssize_t w = write(fd, json + off, n - off);
        if (w <= 0) {
            close(fd);
            unlink(path);
            return coh_fail(err, COH_EIO, "cannot write %s: %s", path, strerror(errno));
        }
        off += (size_t)w;
    }
    close(fd);
    int rc = tok_load(path, out, err);
    unlink(path);
    return rc;
}

/* Download version nt into a verified policy. Returns 0 with *out, 1 to skip this version
 * (FAILED_PRECONDITION / NOT_FOUND: take the newest notice instead), -1 when stopping. */
static int download_version(actor *a, const notice *nt, policy **out)
{
    *out = NULL;
    wt_recv *r = NULL;
    char *tok_json = nt->tokenizer_json ? strdup(nt->tokenizer_json) : NULL;
    int tok_known = nt->has_manifest;
    coh_err err;
    coh_err_clear(&err);
    long backoff = 200;
    int failures = 0, result = -1;
    double t0 = now_s();
    if (nt->config_json &&
        wt_recv_create(nt->version, nt->total_bytes, nt->checksum, nt->config_json, &r, &err)) {
        WARN("version %lld: %s", (long long)nt->version, err.msg);
        result = 1;
        goto done;
    }
    while (!stopping(a)) {
        uint64_t id = get_actor_id(a);
        Cohort__V1__DownloadRequest req = COHORT__V1__DOWNLOAD_REQUEST__INIT;
        req.actor_id = id;
        req.version = nt->version;
        req.offset = r ? wt_recv_offset(r) : 0;
        rpc_stream *s = NULL;
        int o = open_stream(a, M_DOWNLOAD, &req.base, 300000, &a->dl_stream, &s);
        if (o < 0)
            break;
        if (o > 0) {
            if (sleep_ms(a, 1000))
                break;
            continue;
        }
        const uint8_t *msg;
        size_t len;
        int rc, broken = 0, progressed = 0;
        while (!broken && (rc = rpc_stream_next(s, &msg, &len)) == 1) {
            Cohort__V1__WeightChunk *c = (Cohort__V1__WeightChunk *)rpc_unpack(
                &cohort__v1__weight_chunk__descriptor, msg, len);
            if (!c) {
                WARN("version %lld: malformed WeightChunk; resuming", (long long)nt->version);
                broken = 1;
                break;
            }
            if (c->manifest) {
                if (!tok_known) {
                    free(tok_json);
                    tok_json = dup_or_null(c->manifest->tokenizer_json);
                    tok_known = 1;
                }
                if (!r) {
                    if (!c->manifest->config_json || !*c->manifest->config_json ||
                        wt_recv_create(nt->version, nt->total_bytes, nt->checksum,
                                       c->manifest->config_json, &r, &err)) {
                        WARN("version %lld: no usable config.json in the manifest: %s",
                             (long long)nt->version, err.msg);
                        rpc_msg_free(&c->base);
                        broken = 2;
                        break;
                    }
                }
            }
            if (!r) {
                WARN("version %lld: first chunk carries no manifest", (long long)nt->version);
                rpc_msg_free(&c->base);
                broken = 2;
                break;
            }
            if (c->version != nt->version || c->total_bytes != nt->total_bytes ||
                c->total_crc32 != nt->checksum) {
                WARN("version %lld: chunk names version %lld, %llu bytes, crc %08x; expected "
                     "%llu bytes, crc %08x",
                     (long long)nt->version, (long long)c->version,
                     (unsigned long long)c->total_bytes, c->total_crc32,
                     (unsigned long long)nt->total_bytes, nt->checksum);
                rpc_msg_free(&c->base);
                broken = 2;
                break;
            }
            if (wt_recv_complete(r) && c->data.len == 0) {
                rpc_msg_free(&c->base);
                continue;
            }
            int arc = wt_recv_add(r, c->offset, c->data.data, c->data.len, c->chunk_crc32, &err);
            rpc_msg_free(&c->base);
            if (arc) {
                WARN("version %lld: chunk refused (%s); resuming at byte %zu",
                     (long long)nt->version, err.msg, wt_recv_offset(r));
                broken = 1;
                break;
            }
            progressed = 1;
        }
        pthread_mutex_lock(&a->mu);
        a->dl_stream = NULL;
        pthread_mutex_unlock(&a->mu);
        rpc_status st;
        rpc_stream_close(s, &st);
        if (broken == 2) {
            result = 1;
            goto done;
        }
        if (r && wt_recv_complete(r))
            break;
        if (stopping(a))
            break;
        if (!broken) {
            if (is_unknown_actor(&st)) {
                if (reregister(a, id))
                    break;
                continue;
            }
            if (st.code == GRPC_STATUS_FAILED_PRECONDITION || st.code == GRPC_STATUS_NOT_FOUND) {
                LOG("version %lld not downloadable (%s: %s); waiting for a newer notice",
                    (long long)nt->version, rpc_status_name(st.code), st.message);
                result = 1;
                goto done;
            }
            if (st.code == GRPC_STATUS_OK)
                WARN("version %lld: stream ended at byte %zu of %llu; resuming",
                     (long long)nt->version, r ? wt_recv_offset(r) : (size_t)0,
                     (unsigned long long)nt->total_bytes);
            else
                WARN("version %lld: download broken at byte %zu of %llu (%s: %s); resuming",
                     (long long)nt->version, r ? wt_recv_offset(r) : (size_t)0,
                     (unsigned long long)nt->total_bytes, rpc_status_name(st.code), st.message);
        }
        if (progressed) {
            backoff = 200;
            failures = 0;
        }
        if (++failures > 20) {
            result = 1; /* give this version up; a newer notice (or a re-watch) brings it back */
            goto done;
        }
        if (sleep_ms(a, backoff))
            break;
        backoff = next_backoff(backoff);
    }
    if (!r || !wt_recv_complete(r) || stopping(a))
        goto done;
    {
        policy *p = calloc(1, sizeof *p);
        if (!p) {
            result = 1;
            goto done;
        }
        p->version = nt->version;
        p->checksum = nt->checksum;
        if (wt_recv_finish(r, &p->m, &err)) {
            WARN("version %lld refused: %s", (long long)nt->version, err.msg);
            policy_free(p);
            result = 1;
            goto done;
        }
        if (load_tokenizer(tok_json, &p->tok, &err)) {
            WARN("version %lld: tokenizer: %s; using the default tokenizer",
                 (long long)nt->version, err.msg);
            if (tok_create_default(&p->tok, &err)) {
                policy_free(p);
                result = 1;
                goto done;
            }
        }
        LOG("version %lld downloaded and verified (%llu bytes, crc %08x, %.2f s)",
            (long long)nt->version, (unsigned long long)nt->total_bytes, nt->checksum,
            now_s() - t0);
        *out = p;
        result = 0;
    }
done:
    wt_recv_destroy(r);
    free(tok_json);
    return result;
}

static void *downloader_main(void *arg)
{
    actor *a = arg;
    long failed_seq = -1; /* notice_seq of a version given up on */
    for (;;) {
        notice nt;
        memset(&nt, 0, sizeof nt);
        pthread_mutex_lock(&a->mu);
        for (;;) {
            if (a->stop)
                break;
            if (a->latest.have && a->notice_seq != failed_seq &&
                (a->latest.version != a->held_version || a->latest.checksum != a->held_checksum))
                break;
            pthread_cond_wait(&a->cv, &a->mu);
        }
        if (a->stop) {
            pthread_mutex_unlock(&a->mu);
            break;
        }
        long seq = a->notice_seq;
        nt = a->latest;
        nt.config_json = a->latest.config_json ? strdup(a->latest.config_json) : NULL;
        nt.tokenizer_json = a->latest.tokenizer_json ? strdup(a->latest.tokenizer_json) : NULL;
        pthread_mutex_unlock(&a->mu);

        policy *p = NULL;
        int rc = download_version(a, &nt, &p);
        notice_clear(&nt);
        if (rc < 0)
            break;
        if (rc > 0) {
            failed_seq = seq;
            continue;
        }
        pthread_mutex_lock(&a->mu);
        policy_free(a->pending); /* never adopted: a newer one replaces it */
        a->pending = p;
        a->held_version = p->version;
        a->held_checksum = p->checksum;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
    }
    return NULL;
}

/* ---- heartbeat thread ------------------------------------------------------------------- */

static void *heartbeat_main(void *arg)
{
    actor *a = arg;
    double last_hb = now_s(), last_progress = now_s();
    long long last_tokens = 0, last_groups = 0;
    double last_reward_sum = 0;
    long last_reward_n = 0;
    double progress_every = 5.0;
    for (;;) {
        pthread_mutex_lock(&a->mu);
        double interval = (a->hb_interval_ms ? a->hb_interval_ms : 2000) / 1000.0;
        pthread_mutex_unlock(&a->mu);
        double t = now_s();
        double wait = last_hb + interval - t;
        if (!quiet && last_progress + progress_every - t < wait)
            wait = last_progress + progress_every - t;
        if (wait > 0 && sleep_ms(a, (long)(wait * 1000) + 1))
            break;
        if (stopping(a))
            break;
        t = now_s();
        if (!quiet && t - last_progress >= progress_every) {
            pthread_mutex_lock(&a->mu);
            long long groups = a->groups_submitted, acc = a->groups_accepted,
                      drop = a->groups_dropped, toks = a->tokens_total;
            double rs = a->reward_sum;
            long rn = a->reward_n;
            int64_t held = a->held_version;
            pthread_mutex_unlock(&a->mu);
            static long long prog_tokens = 0;
            double rate = (double)(toks - prog_tokens) / (t - last_progress);
            prog_tokens = toks;
            double mean = rn > last_reward_n ? (rs - last_reward_sum) / (double)(rn - last_reward_n)
                                             : 0.0;
            LOG("progress: version %lld, groups %lld submitted (+%lld; %lld accepted, %lld "
                "dropped), mean reward %.3f, %.1f tokens/s",
                (long long)held, groups, groups - last_groups, acc, drop, mean, rate);
            last_groups = groups;
            last_reward_sum = rs;
            last_reward_n = rn;
            last_progress = t;
        }
        if (t - last_hb < interval)
            continue;
        pthread_mutex_lock(&a->mu);
        Cohort__V1__HeartbeatRequest req = COHORT__V1__HEARTBEAT_REQUEST__INIT;
        req.actor_id = a->actor_id;
        req.held_version = a->held_version;
        req.completions = a->completions_total;
        long long toks = a->tokens_total;
        pthread_mutex_unlock(&a->mu);
        req.sampler_tokens_per_s = t > last_hb ? (double)(toks - last_tokens) / (t - last_hb) : 0;
        if (!(req.sampler_tokens_per_s >= 0) || !isfinite(req.sampler_tokens_per_s))
            req.sampler_tokens_per_s = 0;
        last_tokens = toks;
        last_hb = t;
        ProtobufCMessage *rep = NULL;
        rpc_status st;
        int64_t dl = (int64_t)(interval * 1000);
        rpc_unary_msg(a->lch, M_HEARTBEAT, &req.base, &cohort__v1__heartbeat_reply__descriptor,
                      dl < 1000 ? 1000 : dl > 5000 ? 5000 : dl, &rep, &st);
        if (st.code == GRPC_STATUS_OK && rep) {
            Cohort__V1__HeartbeatReply *r = (Cohort__V1__HeartbeatReply *)rep;
            pthread_mutex_lock(&a->mu);
            if (r->paused != a->paused)
                LOG("training %s", r->paused ? "paused by the operator" : "resumed");
            a->paused = r->paused;
            if (r->current_version > a->learner_version) /* a notice may be newer */
                a->learner_version = r->current_version;
            a->max_staleness = r->max_staleness;
            apply_sampling_locked(a, r->sampling);
            pthread_mutex_unlock(&a->mu);
        } else if (is_unknown_actor(&st)) {
            rpc_msg_free(rep);
            if (reregister(a, req.actor_id))
                break;
            continue;
        } else if (st.code != GRPC_STATUS_UNAVAILABLE) {
            WARN("Heartbeat: %s: %s", rpc_status_name(st.code), st.message);
        }
        rpc_msg_free(rep);
    }
    return NULL;
}

/* ---- signal thread ---------------------------------------------------------------------- */

/* OpenBLAS starts its threads before main() runs, so blocking the signals cannot keep them
 * from being delivered anywhere: a handler writes the signal number to a pipe and the signal
 * thread acts on it. The main thread writes 0 to end the signal thread. */
static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t w = write(sig_pipe[1], &b, 1);
    (void)w;
    errno = saved;
}

static void *signal_main(void *arg)
{
    actor *a = arg;
    unsigned char b;
    for (;;) {
        ssize_t n = read(sig_pipe[0], &b, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || b == 0)
            break;
        WARN("signal %d: stopping (returning unsubmitted leases)", (int)b);
        request_stop(a, 0);
    }
    return NULL;
}

/* ---- the sampling loop ------------------------------------------------------------------ */

typedef struct held_lease {
    uint64_t owner; /* actor_id that leased it */
    Cohort__V1__Lease *lease; /* points into a LeaseReply */
    int settled;
} held_lease;

typedef struct sampling_ctx {
    policy *cur;
    sampler *smp;
    int smp_rows, smp_seq;
    rng r;
    /* buffers for one group */
    int *tokens, *lens, *prompt;
    float *logp;
    size_t cap_tokens, cap_prompt;
    char *text;
    size_t cap_text;
} sampling_ctx;

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    void *q = realloc(*p, need * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = need;
    return 0;
}

/* Adopt the pending policy, if any. Returns 1 if the policy changed. */
static int adopt_pending(actor *a, sampling_ctx *sc)
{
    pthread_mutex_lock(&a->mu);
    policy *p = a->pending;
    a->pending = NULL;
    pthread_mutex_unlock(&a->mu);
    if (!p)
        return 0;
    sampler_destroy(sc->smp);
    sc->smp = NULL;
    sc->smp_rows = sc->smp_seq = 0;
    if (!sc->cur)
        LOG("sampling with version %lld", (long long)p->version);
    policy_free(sc->cur);
    sc->cur = p;
    return 1;
}

/* Return leases to the learner (best effort). */
static void return_leases(actor *a, held_lease *hl, int n)
{
    uint64_t id = get_actor_id(a);
    uint64_t *ids = malloc((size_t)(n > 0 ? n : 1) * sizeof *ids);
    if (!ids)
        return;
    size_t k = 0;
    for (int i = 0; i < n; i++)
        if (!hl[i].settled && hl[i].owner == id)
            ids[k++] = hl[i].lease->lease_id;
    for (int i = 0; i < n; i++)
        hl[i].settled = 1;
    if (k == 0) {
        free(ids);
        return;
    }
    Cohort__V1__ReturnLeasesRequest req = COHORT__V1__RETURN_LEASES_REQUEST__INIT;
    req.actor_id = id;
    req.n_lease_ids = k;
    req.lease_ids = ids;
    ProtobufCMessage *rep = NULL;
    rpc_status st;
    rpc_unary_msg(a->lch, M_RETURN, &req.base, &cohort__v1__return_leases_reply__descriptor, 5000,
                  &rep, &st);
    if (st.code == GRPC_STATUS_OK && rep)
        LOG("returned %d of %zu leases", ((Cohort__V1__ReturnLeasesReply *)rep)->returned, k);
    else
        WARN("ReturnLeases (%zu leases): %s: %s", k, rpc_status_name(st.code), st.message);
    rpc_msg_free(rep);
    free(ids);
}

/* Score a group. Fills results[i] (pointers into *reply_out, which the caller frees) or, when
 * the reward service cannot be reached, leaves *reply_out NULL and fail_status / fail_detail
 * say what to report for every item. Returns -1 when stopping. */
static int score_group(actor *a, const Cohort__V1__Lease *L, int G, char **texts, const int *lens,
                       const int *truncated, Cohort__V1__ScoreReply **reply_out,
                       Cohort__V1__ItemResult **results, int *fail_status, char *fail_detail,
                       size_t fail_cap, double *latency_ms)
{
    *reply_out = NULL;
    Cohort__V1__RewardItem *items = calloc((size_t)G, sizeof *items);
    Cohort__V1__RewardItem **itemp = calloc((size_t)G, sizeof *itemp);
    char (*ids)[48] = calloc((size_t)G, sizeof *ids);
    int rc = 0;
    if (!items || !itemp || !ids) {
        *fail_status = COHORT__V1__ITEM_STATUS__ITEM_FAILED;
        snprintf(fail_detail, fail_cap, "actor out of memory");
        goto out;
    }
    for (int i = 0; i < G; i++) {
        cohort__v1__reward_item__init(&items[i]);
        snprintf(ids[i], sizeof ids[i], "%llu/%d", (unsigned long long)L->lease_id, i);
        items[i].item_id = ids[i];
        items[i].task = L->task;
        items[i].prompt = L->prompt;
        items[i].completion = texts[i];
        items[i].answer = L->answer;
        items[i].metadata_json = L->metadata_json;
        items[i].completion_num_tokens = lens[i];
        items[i].truncated = truncated[i] != 0;
        itemp[i] = &items[i];
    }
    Cohort__V1__ScoreRequest req = COHORT__V1__SCORE_REQUEST__INIT;
    req.n_items = (size_t)G;
    req.items = itemp;
    req.timeout_ms = (uint32_t)a->reward_timeout_ms;
    long backoff = 250;
    double t_start = now_s();
    for (int attempt = 1;; attempt++) {
        ProtobufCMessage *rep = NULL;
        rpc_status st;
        double t0 = now_s();
        rpc_unary_msg(a->rch, M_SCORE, &req.base, &cohort__v1__score_reply__descriptor,
                      a->reward_timeout_ms + 1000, &rep, &st);
        *latency_ms = (now_s() - t0) * 1000.0;
        if (st.code == GRPC_STATUS_OK && rep) {
            Cohort__V1__ScoreReply *r = (Cohort__V1__ScoreReply *)rep;
            for (int i = 0; i < G; i++) {
                results[i] = NULL;
                if ((size_t)i < r->n_results && r->results[i]->item_id &&
                    strcmp(r->results[i]->item_id, ids[i]) == 0)
                    results[i] = r->results[i];
                for (size_t k = 0; !results[i] && k < r->n_results; k++)
                    if (r->results[k]->item_id && strcmp(r->results[k]->item_id, ids[i]) == 0)
                        results[i] = r->results[k];
            }
            *reply_out = r;
            goto out;
        }
        rpc_msg_free(rep);
        int retry = st.code == GRPC_STATUS_UNAVAILABLE ||
                    st.code == GRPC_STATUS_RESOURCE_EXHAUSTED;
        if (retry && now_s() - t_start < 30.0) {
            WARN("Reward.Score at %s (attempt %d): %s: %s; retrying in %ld ms", a->reward_addr,
                 attempt, rpc_status_name(st.code), st.message, backoff);
            if (sleep_ms(a, backoff)) {
                rc = -1;
                goto out;
            }
            backoff = next_backoff(backoff);
            continue;
        }
        /* report every item as failed / timed out, never as a reward of 0 */
        *fail_status = st.code == GRPC_STATUS_DEADLINE_EXCEEDED
                           ? COHORT__V1__ITEM_STATUS__ITEM_TIMED_OUT
                           : COHORT__V1__ITEM_STATUS__ITEM_FAILED;
        snprintf(fail_detail, fail_cap, "Reward.Score at %s: %s: %.300s", a->reward_addr,
                 rpc_status_name(st.code), st.message);
        WARN("%s; submitting the group's items as %s", fail_detail,
             *fail_status == COHORT__V1__ITEM_STATUS__ITEM_TIMED_OUT ? "timed out" : "failed");
        goto out;
    }
out:
    free(items);
    free(itemp);
    free(ids);
    return rc;
}

/* Sample, score and submit one lease. Marks it settled when the learner has settled it (or
 * when it must not be returned). Returns -1 when stopping. */
static int do_lease(actor *a, sampling_ctx *sc, held_lease *hl)
{
    const Cohort__V1__Lease *L = hl->lease;
    pthread_mutex_lock(&a->mu);
    int G = a->group_size;
    sample_params sp = {.temperature = (float)a->sp.temperature, .top_k = a->sp.top_k,
                        .top_p = (float)a->sp.top_p, .max_new_tokens = a->sp.max_new_tokens,
                        .eos_id = a->eos_id};
    double temperature = a->sp.temperature;
    pthread_mutex_unlock(&a->mu);
    policy *pol = sc->cur;
    const model_config *cfg = model_get_config(pol->m);
    coh_err err;
    coh_err_clear(&err);

    /* prompt ids */
    size_t plen_cap = L->n_prompt_tokens ? L->n_prompt_tokens : strlen(L->prompt) + 1;
    if (grow((void **)&sc->prompt, &sc->cap_prompt, plen_cap + 1, sizeof(int)))
        return 0;
    int plen = 0;
    if (L->n_prompt_tokens) {
        for (size_t i = 0; i < L->n_prompt_tokens; i++)
            sc->prompt[plen++] = L->prompt_tokens[i];
    } else {
        sc->prompt[0] = TOK_BOS;
        int n = 0;
        if (tok_encode(pol->tok, L->prompt, sc->prompt + 1, (int)plen_cap, &n, &err)) {
            WARN("lease %llu (%s): cannot encode the prompt: %s; returning it",
                 (unsigned long long)L->lease_id, L->prompt_id, err.msg);
            return_leases(a, hl, 1);
            return 0;
        }
        plen = n + 1;
    }
    for (int i = 0; i < plen; i++)
        if (sc->prompt[i] < 0 || sc->prompt[i] >= cfg->vocab_size) {
            WARN("lease %llu (%s): prompt token %d outside the vocabulary [0, %d); returning it",
                 (unsigned long long)L->lease_id, L->prompt_id, sc->prompt[i], cfg->vocab_size);
            return_leases(a, hl, 1);
            return 0;
        }
    int need = plen + sp.max_new_tokens;
    if (need > cfg->max_seq) {
        WARN("lease %llu (%s): %d prompt tokens + %d new tokens exceed the model's %d "
             "positions; returning it",
             (unsigned long long)L->lease_id, L->prompt_id, plen, sp.max_new_tokens,
             cfg->max_seq);
        return_leases(a, hl, 1);
        return 0;
    }
    if (!sc->smp || sc->smp_rows < G || sc->smp_seq < need) {
        sampler_destroy(sc->smp);
        sc->smp = NULL;
        int seq = ((need + 63) / 64) * 64;
        if (seq < sc->smp_seq)
            seq = sc->smp_seq;
        if (seq > cfg->max_seq)
            seq = cfg->max_seq;
        if (sampler_create(pol->m, G, seq, &sc->smp, &err)) {
            WARN("cannot create the sampler: %s", err.msg);
            return_leases(a, hl, 1);
            return 0;
        }
        sc->smp_rows = G;
        sc->smp_seq = seq;
    }
    size_t M = (size_t)sp.max_new_tokens;
    if (grow((void **)&sc->tokens, &sc->cap_tokens, (size_t)G * M, sizeof(int)) ||
        !(sc->logp = realloc(sc->logp, (size_t)G * M * sizeof(float))) ||
        !(sc->lens = realloc(sc->lens, (size_t)G * sizeof(int)))) {
        WARN("out of memory");
        return_leases(a, hl, 1);
        return 0;
    }
    double t0 = now_s();
    if (sampler_generate(sc->smp, sc->prompt, plen, G, &sp, &sc->r, sc->tokens, sc->logp, NULL,
                         sc->lens, &err)) {
        WARN("lease %llu (%s): sampling failed: %s; returning it",
             (unsigned long long)L->lease_id, L->prompt_id, err.msg);
        return_leases(a, hl, 1);
        return 0;
    }
    double sample_ms = (now_s() - t0) * 1000.0;
    long long ntok = 0;
    for (int i = 0; i < G; i++)
        ntok += sc->lens[i];
    pthread_mutex_lock(&a->mu);
    a->tokens_total += ntok;
    a->completions_total += G;
    pthread_mutex_unlock(&a->mu);

    /* decode */
    size_t tcap = M * 4 + 16;
    char **texts = calloc((size_t)G, sizeof *texts);
    int *trunc = calloc((size_t)G, sizeof *trunc);
    int32_t *tok32 = malloc((size_t)G * M * sizeof *tok32);
    Cohort__V1__ItemResult **results = calloc((size_t)G, sizeof *results);
    Cohort__V1__ScoredCompletion *scs = calloc((size_t)G, sizeof *scs);
    Cohort__V1__ScoredCompletion **scp = calloc((size_t)G, sizeof *scp);
    Cohort__V1__ScoreReply *srep = NULL;
    int rc = 0;
    if (!texts || !trunc || !tok32 || !results || !scs || !scp)
        goto fail_mem;
    for (int i = 0; i < G; i++) {
        int *row = sc->tokens + (size_t)i * M;
        int n = sc->lens[i];
        int has_eos = n > 0 && row[n - 1] == sp.eos_id;
        trunc[i] = !has_eos;
        texts[i] = malloc(tcap);
        if (!texts[i])
            goto fail_mem;
        tok_decode(pol->tok, row, has_eos ? n - 1 : n, texts[i], tcap);
        for (int t = 0; t < n; t++) {
            tok32[(size_t)i * M + t] = row[t];
            float *lp = &sc->logp[(size_t)i * M + t];
            if (*lp > 0.0f)
                *lp = 0.0f; /* rounding: a log-probability is never positive */
        }
    }

    /* score */
    int fail_status = 0;
    char fail_detail[512] = "";
    double reward_ms = 0;
    if (score_group(a, L, G, texts, sc->lens, trunc, &srep, results, &fail_status, fail_detail,
                    sizeof fail_detail, &reward_ms) < 0) {
        rc = -1;
        goto out; /* stopping: the lease is returned by the caller */
    }

    /* submit */
    double rsum = 0;
    long rn = 0;
    for (int i = 0; i < G; i++) {
        Cohort__V1__ScoredCompletion *c = &scs[i];
        cohort__v1__scored_completion__init(c);
        c->n_completion_tokens = (size_t)sc->lens[i];
        c->completion_tokens = tok32 + (size_t)i * M;
        c->n_behaviour_logprobs = (size_t)sc->lens[i];
        c->behaviour_logprobs = sc->logp + (size_t)i * M;
        c->policy_version = pol->version;
        if (!srep) {
            c->status = (Cohort__V1__ItemStatus)fail_status;
            c->detail = fail_detail;
        } else if (!results[i]) {
            c->status = COHORT__V1__ITEM_STATUS__ITEM_FAILED;
            c->detail = "the reward service returned no result for this item";
        } else {
            const Cohort__V1__ItemResult *res = results[i];
            c->status = res->status == COHORT__V1__ITEM_STATUS__ITEM_STATUS_UNSPECIFIED
                            ? COHORT__V1__ITEM_STATUS__ITEM_FAILED
                            : res->status;
            c->reward = res->reward;
            c->n_components = res->n_components;
            c->components = res->components;
            c->detail = res->detail;
            if (c->status == COHORT__V1__ITEM_STATUS__ITEM_OK && !isfinite(c->reward)) {
                c->status = COHORT__V1__ITEM_STATUS__ITEM_FAILED;
                c->detail = "the reward service returned a non-finite reward";
            }
            if (c->status == COHORT__V1__ITEM_STATUS__ITEM_OK) {
                rsum += c->reward;
                rn++;
            } else {
                c->reward = 0;
            }
        }
        scp[i] = c;
    }
    Cohort__V1__SubmitGroupRequest req = COHORT__V1__SUBMIT_GROUP_REQUEST__INIT;
    req.actor_id = hl->owner;
    req.lease_id = L->lease_id;
    req.n_completions = (size_t)G;
    req.completions = scp;
    req.temperature = temperature;
    req.reward_latency_ms = reward_ms;
    req.sample_ms = sample_ms;
    long backoff = 250;
    for (int attempt = 1;; attempt++) {
        ProtobufCMessage *rep = NULL;
        rpc_status st;
        rpc_unary_msg(a->lch, M_SUBMIT, &req.base, &cohort__v1__submit_group_reply__descriptor,
                      5000, &rep, &st);
        if (st.code == GRPC_STATUS_OK && rep) {
            Cohort__V1__SubmitGroupReply *r = (Cohort__V1__SubmitGroupReply *)rep;
            hl->settled = 1;
            pthread_mutex_lock(&a->mu);
            a->groups_submitted++;
            if (r->accepted)
                a->groups_accepted++;
            else
                a->groups_dropped++;
            a->reward_sum += rsum;
            a->reward_n += rn;
            pthread_mutex_unlock(&a->mu);
            if (!r->accepted)
                LOG("group of lease %llu not used: %s", (unsigned long long)L->lease_id,
                    r->message ? r->message : "");
            rpc_msg_free(rep);
            break;
        }
        rpc_msg_free(rep);
        if (st.code == GRPC_STATUS_NOT_FOUND) {
            hl->settled = 1; /* unknown actor or expired lease: drop the group */
            WARN("SubmitGroup lease %llu: %s: %s; group dropped", (unsigned long long)L->lease_id,
                 rpc_status_name(st.code), st.message);
            if (is_unknown_actor(&st) && reregister(a, hl->owner))
                rc = -1;
            break;
        }
        if (st.code == GRPC_STATUS_ALREADY_EXISTS) {
            hl->settled = 1;
            break;
        }
        if (st.code == GRPC_STATUS_FAILED_PRECONDITION) {
            hl->settled = 1;
            pthread_mutex_lock(&a->mu);
            a->groups_dropped++;
            pthread_mutex_unlock(&a->mu);
            LOG("SubmitGroup lease %llu refused (%s); group dropped",
                (unsigned long long)L->lease_id, st.message);
            break;
        }
        if ((st.code == GRPC_STATUS_RESOURCE_EXHAUSTED ||
             st.code == GRPC_STATUS_DEADLINE_EXCEEDED || st.code == GRPC_STATUS_UNAVAILABLE) &&
            !stopping(a)) {
            if (attempt == 1 || attempt % 10 == 0)
                WARN("SubmitGroup lease %llu (attempt %d): %s: %s; retrying in %ld ms",
                     (unsigned long long)L->lease_id, attempt, rpc_status_name(st.code),
                     st.message, backoff);
            if (sleep_ms(a, backoff)) {
                rc = -1;
                break;
            }
            backoff = next_backoff(backoff);
            continue;
        }
        /* INVALID_ARGUMENT, UNAUTHENTICATED, ...: the lease stays valid; give it back so
         * that its prompt is not held forever (heartbeats would renew it) */
        WARN("SubmitGroup lease %llu: %s: %s", (unsigned long long)L->lease_id,
             rpc_status_name(st.code), st.message);
        if (st.code == GRPC_STATUS_UNAUTHENTICATED)
            request_stop(a, 1);
        if (!stopping(a))
            return_leases(a, hl, 1);
        break;
    }
    goto out;
fail_mem:
    WARN("out of memory; returning lease %llu", (unsigned long long)L->lease_id);
    return_leases(a, hl, 1);
out:
    if (texts)
        for (int i = 0; i < G; i++)
            free(texts[i]);
    free(texts);
    free(trunc);
    free(tok32);
    free(results);
    free(scs);
    free(scp);
    rpc_msg_free(srep ? &srep->base : NULL);
    return rc;
}

static int sampling_loop(actor *a)
{
    sampling_ctx sc;
    memset(&sc, 0, sizeof sc);
    rng_init(&sc.r, a->seed);
    /* the first verified version */
    pthread_mutex_lock(&a->mu);
    while (!a->stop && !a->pending)
        pthread_cond_wait(&a->cv, &a->mu);
    pthread_mutex_unlock(&a->mu);
    adopt_pending(a, &sc);
    long groups = 0, backoff = 200;
    while (sc.cur && !stopping(a) && (a->max_steps <= 0 || groups < a->max_steps)) {
        adopt_pending(a, &sc);
        pthread_mutex_lock(&a->mu);
        int ahead = sc.cur->version > a->learner_version;
        pthread_mutex_unlock(&a->mu);
        if (ahead) {
            /* the learner restarted from an older checkpoint: wait for its version */
            if (sleep_ms(a, 100))
                break;
            continue;
        }
        uint64_t id = get_actor_id(a);
        Cohort__V1__LeaseRequest req = COHORT__V1__LEASE_REQUEST__INIT;
        req.actor_id = id;
        int want = a->prompts_per_lease;
        if (a->max_steps > 0 && a->max_steps - groups < want)
            want = (int)(a->max_steps - groups);
        req.max_prompts = want;
        ProtobufCMessage *rep = NULL;
        rpc_status st;
        rpc_unary_msg(a->lch, M_LEASE, &req.base, &cohort__v1__lease_reply__descriptor, 5000,
                      &rep, &st);
        if (st.code != GRPC_STATUS_OK || !rep) {
            rpc_msg_free(rep);
            if (is_unknown_actor(&st)) {
                if (reregister(a, id))
                    break;
                continue;
            }
            if (st.code == GRPC_STATUS_UNAUTHENTICATED) {
                WARN("LeasePrompts: %s: %s", rpc_status_name(st.code), st.message);
                request_stop(a, 1);
                break;
            }
            WARN("LeasePrompts: %s: %s; retrying in %ld ms", rpc_status_name(st.code),
                 st.message, backoff);
            if (sleep_ms(a, backoff))
                break;
            backoff = next_backoff(backoff);
            continue;
        }
        backoff = 200;
        Cohort__V1__LeaseReply *lr = (Cohort__V1__LeaseReply *)rep;
        pthread_mutex_lock(&a->mu);
        a->paused = lr->paused;
        pthread_mutex_unlock(&a->mu);
        if (lr->n_leases == 0) {
            long ms = lr->retry_after_ms ? lr->retry_after_ms : 200;
            rpc_msg_free(rep);
            if (sleep_ms(a, ms))
                break;
            continue;
        }
        int n = (int)lr->n_leases;
        held_lease *hl = calloc((size_t)n, sizeof *hl);
        if (!hl) {
            rpc_msg_free(rep);
            break;
        }
        for (int i = 0; i < n; i++) {
            hl[i].owner = id;
            hl[i].lease = lr->leases[i];
        }
        for (int i = 0; i < n && !stopping(a); i++) {
            if (get_actor_id(a) != id) { /* re-registered: these leases are gone */
                for (int k = i; k < n; k++)
                    hl[k].settled = 1;
                break;
            }
            adopt_pending(a, &sc); /* a newer verified version, between groups */
            if (do_lease(a, &sc, &hl[i]) < 0)
                break;
            groups++;
        }
        return_leases(a, hl, n); /* whatever was not submitted (stop, re-register) */
        free(hl);
        rpc_msg_free(rep);
    }
    sampler_destroy(sc.smp);
    policy_free(sc.cur);
    free(sc.tokens);
    free(sc.lens);
    free(sc.logp);
    free(sc.prompt);
    free(sc.text);
    return 0;
}

/* ---- main --------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cohort-actor [--learner HOST:PORT] [--reward HOST:PORT] [--name NAME]\n"
            "                    [--threads N] [--token T] [--seed S] [--prompts-per-lease N]\n"
            "                    [--max-steps N] [--reward-timeout-ms MS] [--quiet]\n"
            "Leases prompts from cohort-learner (default 127.0.0.1:50051), samples group_size\n"
            "completions per prompt with the newest verified policy version, scores them with\n"
            "cohort-reward (default 127.0.0.1:50052) and submits the scored groups.\n"
            "  --threads N          OpenBLAS threads (default 1)\n"
            "  --token T            bearer token (default: $COHORT_TOKEN)\n"
            "  --tls-ca PEM         use TLS to learner and reward service, trusting this CA\n"
            "  --tls-server-name N  expected name in their certificates (default: the host)\n"
            "  --max-steps N        stop after N groups (0 = run until SIGTERM/SIGINT)\n"
            "SIGTERM/SIGINT: stop leasing, return unsubmitted leases, exit 0.\n");
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    la_blas_autoselect(argv);
    static const struct option opts[] = {
        {"learner", 1, 0, 'l'},       {"reward", 1, 0, 'r'},    {"name", 1, 0, 'n'},
        {"threads", 1, 0, 'j'},       {"token", 1, 0, 't'},     {"seed", 1, 0, 's'},
        {"prompts-per-lease", 1, 0, 'p'}, {"max-steps", 1, 0, 'm'},
        {"reward-timeout-ms", 1, 0, 'T'}, {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'},
        {"tls-ca", 1, 0, 'C'}, {"tls-server-name", 1, 0, 'N'}, {0, 0, 0, 0}};
    const char *tls_ca = NULL, *tls_name = NULL;
    static actor a;
    memset(&a, 0, sizeof a);
    a.learner_addr = "127.0.0.1:50051";
    a.reward_addr = "127.0.0.1:50052";
    a.token = getenv("COHORT_TOKEN");
    a.threads = 1;
    a.prompts_per_lease = 1;
    a.reward_timeout_ms = 9000;
    a.seed = rng_mix((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32));
    char hostname[64] = "";
    gethostname(hostname, sizeof hostname - 1);
    static char defname[128];
    snprintf(defname, sizeof defname, "%s/%d", hostname, (int)getpid());
    a.name = defname;
    int opt;
    long v;
    while ((opt = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
        switch (opt) {
        case 'l': a.learner_addr = optarg; break;
        case 'r': a.reward_addr = optarg; break;
        case 'n': a.name = optarg; break;
        case 't': a.token = optarg; break;
        case 'C': tls_ca = optarg; break;
        case 'N': tls_name = optarg; break;
        case 'q': quiet = 1; break;
        case 'j':
            if (parse_long(optarg, 1, 256, &v)) goto bad;
            a.threads = (int)v;
            break;
        case 's': {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end) goto bad;
            a.seed = (uint64_t)s;
            break;
        }
        case 'p':
            if (parse_long(optarg, 1, 1024, &v)) goto bad;
            a.prompts_per_lease = (int)v;
            break;
        case 'm':
            if (parse_long(optarg, 0, 1L << 40, &v)) goto bad;
            a.max_steps = v;
            break;
        case 'T':
            if (parse_long(optarg, 1, 600000, &v)) goto bad;
            a.reward_timeout_ms = (int)v;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        continue;
    bad:
        fprintf(stderr, "cohort-actor: bad value for --%s: '%s'\n",
                opt == 'j' ? "threads" : opt == 's' ? "seed" : opt == 'p' ? "prompts-per-lease"
                : opt == 'm' ? "max-steps" : "reward-timeout-ms", optarg);
        return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "cohort-actor: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (strlen(a.name) > 128) {
        fprintf(stderr, "cohort-actor: --name is longer than 128 bytes\n");
        return 2;
    }
    g_name = a.name;
    la_set_threads(a.threads);

    /* signals: see on_signal */
    if (pipe(sig_pipe)) {
        perror("cohort-actor: pipe");
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    pthread_mutex_init(&a.mu, NULL);
    pthread_mutex_init(&a.reg_mu, NULL);
    pthread_cond_init(&a.cv, NULL);
    a.held_version = -1;
    a.eos_id = TOK_EOS;
    a.sp.temperature = 1.0;
    a.sp.top_p = 1.0;
    a.sp.max_new_tokens = 16;

    rpc_global_init();
    coh_err err;
    coh_err_clear(&err);
    /* --tls-ca: both channels (learner and reward service) use TLS, trusting that CA */
    rpc_channel_config cc = {.bearer_token = a.token && *a.token ? a.token : NULL,
                             .tls_ca_file = tls_ca, .tls_server_name = tls_name};
    int rc = 1;
    pthread_t th_sig, th_watch, th_dl, th_hb;
    int have_sig = 0, have_watch = 0, have_dl = 0, have_hb = 0;
    if (rpc_channel_create(a.learner_addr, &cc, &a.lch, &err) ||
        rpc_channel_create(a.reward_addr, &cc, &a.rch, &err)) {
        fprintf(stderr, "cohort-actor: %s\n", err.msg);
        goto out;
    }
    have_sig = pthread_create(&th_sig, NULL, signal_main, &a) == 0;
    LOG("learner %s, reward %s, %d BLAS thread(s), seed %llu", a.learner_addr, a.reward_addr,
        a.threads, (unsigned long long)a.seed);
    if (reregister(&a, 0) == 0) {
        have_watch = pthread_create(&th_watch, NULL, watcher_main, &a) == 0;
        have_dl = pthread_create(&th_dl, NULL, downloader_main, &a) == 0;
        have_hb = pthread_create(&th_hb, NULL, heartbeat_main, &a) == 0;
        if (!have_watch || !have_dl || !have_hb) {
            WARN("cannot start threads");
            request_stop(&a, 1);
        } else {
            sampling_loop(&a);
        }
    }
    request_stop(&a, 0);
    if (have_watch)
        pthread_join(th_watch, NULL);
    if (have_dl)
        pthread_join(th_dl, NULL);
    if (have_hb)
        pthread_join(th_hb, NULL);
    pthread_mutex_lock(&a.mu);
    rc = a.fatal ? 1 : 0;
    LOG("stopped: %lld groups submitted (%lld accepted, %lld dropped), %lld completions, "
        "%lld tokens",
        a.groups_submitted, a.groups_accepted, a.groups_dropped, a.completions_total,
        a.tokens_total);
    pthread_mutex_unlock(&a.mu);
out:
    if (have_sig) {
        unsigned char zero = 0;
        ssize_t w = write(sig_pipe[1], &zero, 1);
        (void)w;
        pthread_join(th_sig, NULL);
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    close(sig_pipe[0]);
    close(sig_pipe[1]);
    policy_free(a.pending);
    notice_clear(&a.latest);
    rpc_channel_destroy(a.lch);
    rpc_channel_destroy(a.rch);
    rpc_global_shutdown();
    pthread_mutex_destroy(&a.mu);
    pthread_mutex_destroy(&a.reg_mu);
    pthread_cond_destroy(&a.cv);
    return rc;
}
