/* session.c - the actor's standing with the learner (see session.h). */
#include "session.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actlog.h"
#include "cohort/v1/learner.pb-c.h"
#include "tokenizer.h"

#define M_REGISTER "/cohort.v1.Learner/RegisterActor"
#define M_HEARTBEAT "/cohort.v1.Learner/Heartbeat"
#define SESSION_MAX_STREAMS 8

struct session {
    rpc_channel *lch;
    vtrack *vt;
    const char *learner_addr, *name;
    int threads;

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;  /* stop, registration */
    int stop, fatal;
    rpc_stream *streams[SESSION_MAX_STREAMS]; /* open, for cancellation */

    pthread_mutex_t reg_mu; /* serialises registrations */
    uint64_t actor_id;
    long reg_gen;
    session_params params;
    session_stats stats;
};

static double session_now_(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int session_create(rpc_channel *lch, vtrack *vt, const session_config *cfg, session **out,
                   coh_err *err)
{
    *out = NULL;
    if (!lch || !vt || !cfg || !cfg->name)
        return coh_fail(err, COH_EINVAL, "session_create: needs a channel, a vtrack and a name");
    session *s = calloc(1, sizeof *s);
    if (!s)
        return coh_fail(err, COH_ENOMEM, "out of memory for the actor session");
    if (pthread_mutex_init(&s->mu, NULL)) {
        free(s);
        return coh_fail(err, COH_ENOMEM, "cannot create the session mutex");
    }
    if (pthread_mutex_init(&s->reg_mu, NULL)) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return coh_fail(err, COH_ENOMEM, "cannot create the registration mutex");
    }
    if (pthread_cond_init(&s->cv, NULL)) {
        pthread_mutex_destroy(&s->reg_mu);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return coh_fail(err, COH_ENOMEM, "cannot create the session condition");
    }
    s->lch = lch;
    s->vt = vt;
    s->learner_addr = cfg->learner_addr ? cfg->learner_addr : "the learner";
    s->name = cfg->name;
    s->threads = cfg->threads;
    s->params.group_size = 1;
    s->params.sample = (sample_params){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f,
                                       .max_new_tokens = 16, .eos_id = TOK_EOS};
    s->params.temperature = 1.0;
    *out = s;
    return COH_OK;
}

void session_destroy(session *s)
{
    if (!s)
        return;
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->reg_mu);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

rpc_channel *session_channel(const session *s) { return s->lch; }
const char *session_learner_addr(const session *s) { return s->learner_addr; }

/* ---- life cycle ------------------------------------------------------------------------ */

void session_stop(session *s, int fatal)
{
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    if (fatal)
        s->fatal = 1;
    for (int i = 0; i < SESSION_MAX_STREAMS; i++)
        if (s->streams[i])
            rpc_stream_cancel(s->streams[i]);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    vtrack_stop(s->vt);
}

int session_stopping(session *s)
{
    pthread_mutex_lock(&s->mu);
    int v = s->stop;
    pthread_mutex_unlock(&s->mu);
    return v;
}

int session_fatal(session *s)
{
    pthread_mutex_lock(&s->mu);
    int v = s->fatal;
    pthread_mutex_unlock(&s->mu);
    return v;
}

/* Sleep ms unless stopping (or, with use_gen, until a registration moves past gen). */
static int session_sleep_(session *s, long ms, int use_gen, long gen)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (!s->stop && !(use_gen && gen != s->reg_gen)) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT)
            break;
    }
    int stop = s->stop;
    pthread_mutex_unlock(&s->mu);
    return stop;
}

int session_sleep_ms(session *s, long ms) { return session_sleep_(s, ms, 0, 0); }
int session_sleep_ms_gen(session *s, long ms, long gen) { return session_sleep_(s, ms, 1, gen); }

long session_next_backoff(long cur)
{
    return cur * 2 > SESSION_MAX_BACKOFF_MS ? SESSION_MAX_BACKOFF_MS : cur * 2;
}

int session_open_stream(session *s, const char *method, const ProtobufCMessage *req,
                        int64_t deadline_ms, rpc_stream **out)
{
    uint8_t *buf = NULL;
    size_t blen = 0;
    *out = NULL;
    if (rpc_pack(req, 0, &buf, &blen, NULL) ||
        rpc_stream_open(s->lch, method, buf, blen, deadline_ms, out, NULL)) {
        free(buf);
        return 1;
    }
    free(buf);
    pthread_mutex_lock(&s->mu);
    int stop = s->stop, slot = -1;
    for (int i = 0; !stop && i < SESSION_MAX_STREAMS && slot < 0; i++)
        if (!s->streams[i])
            slot = i;
    if (slot >= 0)
        s->streams[slot] = *out;
    pthread_mutex_unlock(&s->mu);
    if (stop || slot < 0) {
        rpc_stream_close(*out, NULL);
        *out = NULL;
        return stop ? -1 : 1;
    }
    return 0;
}

void session_close_stream(session *s, rpc_stream *st, rpc_status *status)
{
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < SESSION_MAX_STREAMS; i++)
        if (s->streams[i] == st)
            s->streams[i] = NULL;
    pthread_mutex_unlock(&s->mu);
    rpc_stream_close(st, status);
}

/* ---- registration ---------------------------------------------------------------------- */

uint64_t session_identity(session *s, long *gen)
{
    pthread_mutex_lock(&s->mu);
    uint64_t id = s->actor_id;
    if (gen)
        *gen = s->reg_gen;
    pthread_mutex_unlock(&s->mu);
    return id;
}

int session_is_unknown_actor(const rpc_status *st)
{
    if (st->code != GRPC_STATUS_NOT_FOUND)
        return 0;
    /* the learner's typed reason (trailing metadata "cohort-reason") decides */
    if (st->reason[0])
        return strcmp(st->reason, "unknown_actor") == 0;
    /* fallback for learners that send no reason: the message text the protocol documents */
    return strncmp(st->message, "unknown actor", 13) == 0;
}

/* sp's stop strings as a list; COH_EINVAL / COH_ERANGE naming the bad one. */
static int session_stops_(const Cohort__V1__SamplingParams *sp, stops_list *out, coh_err *err)
{
    memset(out, 0, sizeof *out);
    if (sp->n_stop > STOPS_MAX)
        return coh_fail(err, COH_ERANGE, "SamplingParams.stop: %zu stop strings (at most %d)",
                        sp->n_stop, STOPS_MAX);
    for (size_t i = 0; i < sp->n_stop; i++) {
        int rc = stops_add(out, sp->stop[i], err);
        if (rc)
            return coh_wrap(err, rc, "SamplingParams.stop[%zu]", i);
    }
    return COH_OK;
}

int session_sampling_valid(const Cohort__V1__SamplingParams *sp)
{
    stops_list l;
    return sp && sp->temperature > 0 && sp->temperature <= 10 && sp->top_k >= 0 &&
           sp->top_p > 0 && sp->top_p <= 1 && sp->max_new_tokens >= 1 &&
           sp->max_new_tokens <= 65536 && session_stops_(sp, &l, NULL) == COH_OK;
}

int session_stop_id(const Cohort__V1__SamplingParams *sp)
{
    /* The first of the learner's stop ids (the tokenizer's EOS); with an empty list, the
     * character tokenizer's <eos> (learners before stop lists always stopped there). */
    if (!sp || sp->n_stop_token_ids == 0)
        return TOK_EOS;
    return sp->stop_token_ids[0];
}

/* Adopt sp (from RegisterReply / HeartbeatReply) if it is valid; caller holds s->mu. */
static void session_apply_sampling_locked_(session *s, const Cohort__V1__SamplingParams *sp)
{
    if (!sp)
        return;
    stops_list stop;
    coh_err err;
    if (session_stops_(sp, &stop, &err)) {
        AWARN("learner sent unusable stop strings (%s); keeping the previous sampling "
              "parameters",
              err.msg);
        return;
    }
    if (!session_sampling_valid(sp)) {
        AWARN("learner sent invalid sampling parameters (temperature %g, top_k %d, top_p %g, "
              "max_new_tokens %d); keeping the previous ones",
              sp->temperature, sp->top_k, sp->top_p, sp->max_new_tokens);
        return;
    }
    session_params *p = &s->params;
    int changed = p->temperature != sp->temperature || p->sample.top_k != sp->top_k ||
                  p->sample.top_p != (float)sp->top_p ||
                  p->sample.max_new_tokens != sp->max_new_tokens ||
                  !stops_equal(&p->stop, &stop);
    p->stop = stop;
    p->temperature = sp->temperature;
    p->sample.temperature = (float)sp->temperature;
    p->sample.top_k = sp->top_k;
    p->sample.top_p = (float)sp->top_p;
    p->sample.max_new_tokens = sp->max_new_tokens;
    int eos = session_stop_id(sp);
    p->sample.eos_id = eos;
    p->sample.n_stop = 0;
    for (size_t i = 1; i < sp->n_stop_token_ids && p->sample.n_stop < SAMPLE_MAX_STOP; i++)
        p->sample.stop_ids[p->sample.n_stop++] = sp->stop_token_ids[i];
    if (sp->n_stop_token_ids > SAMPLE_MAX_STOP + 1 && changed)
        AWARN("learner lists %zu stop tokens; this actor stops on the first %d",
              sp->n_stop_token_ids, SAMPLE_MAX_STOP + 1);
    if (changed)
        ALOG("sampling: temperature %g, top_k %d, top_p %g, max_new_tokens %d, stop id %d, "
             "%d stop string(s)",
             sp->temperature, sp->top_k, sp->top_p, sp->max_new_tokens, eos, stop.n);
}

int session_register(session *s, uint64_t stale_id)
{
    pthread_mutex_lock(&s->reg_mu);
    if (session_identity(s, NULL) != stale_id) {
        pthread_mutex_unlock(&s->reg_mu);
        return session_stopping(s) ? -1 : 0;
    }
    long backoff = 200;
    int attempt = 0, rc = -1;
    while (!session_stopping(s)) {
        attempt++;
        Cohort__V1__RegisterRequest req = COHORT__V1__REGISTER_REQUEST__INIT;
        req.name = (char *)s->name;
        req.threads = s->threads;
        ProtobufCMessage *rep = NULL;
        rpc_status st;
        rpc_unary_msg(s->lch, M_REGISTER, &req.base, &cohort__v1__register_reply__descriptor,
                      5000, &rep, &st);
        if (st.code == GRPC_STATUS_OK && rep) {
            Cohort__V1__RegisterReply *r = (Cohort__V1__RegisterReply *)rep;
            pthread_mutex_lock(&s->mu);
            s->actor_id = r->actor_id;
            s->reg_gen++;
            s->params.heartbeat_interval_ms =
                r->heartbeat_interval_ms ? r->heartbeat_interval_ms : 2000;
            s->params.lease_ttl_ms = r->lease_ttl_ms;
            s->params.group_size = r->group_size >= 1 ? r->group_size : 1;
            s->params.max_staleness = r->max_staleness;
            session_apply_sampling_locked_(s, r->sampling);
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            vtrack_set_learner_version(s->vt, r->current_version);
            ALOG("registered with %s as actor %016llx (group_size %d, heartbeat %u ms, lease "
                 "ttl %u ms, current version %lld, max_staleness %d)",
                 s->learner_addr, (unsigned long long)r->actor_id, r->group_size,
                 r->heartbeat_interval_ms, r->lease_ttl_ms, (long long)r->current_version,
                 r->max_staleness);
            rpc_msg_free(rep);
            rc = 0;
            break;
        }
        rpc_msg_free(rep);
        if (st.code == GRPC_STATUS_UNAUTHENTICATED || st.code == GRPC_STATUS_INVALID_ARGUMENT) {
            AWARN("RegisterActor refused: %s: %s", rpc_status_name(st.code), st.message);
            session_stop(s, 1);
            break;
        }
        AWARN("RegisterActor attempt %d at %s: %s: %s; retrying in %ld ms", attempt,
              s->learner_addr, rpc_status_name(st.code), st.message, backoff);
        if (session_sleep_ms(s, backoff))
            break;
        backoff = session_next_backoff(backoff);
    }
    pthread_mutex_unlock(&s->reg_mu);
    return rc;
}

/* ---- parameters and counters ----------------------------------------------------------- */

void session_params_get(session *s, session_params *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->params;
    pthread_mutex_unlock(&s->mu);
}

void session_set_paused(session *s, int paused)
{
    pthread_mutex_lock(&s->mu);
    s->params.paused = paused != 0;
    pthread_mutex_unlock(&s->mu);
}

void session_count_sampled(session *s, long long tokens, long long completions)
{
    pthread_mutex_lock(&s->mu);
    s->stats.tokens += tokens;
    s->stats.completions += completions;
    pthread_mutex_unlock(&s->mu);
}

void session_count_submitted(session *s, int accepted, double reward_sum, long reward_n)
{
    pthread_mutex_lock(&s->mu);
    s->stats.groups_submitted++;
    if (accepted)
        s->stats.groups_accepted++;
    else
        s->stats.groups_dropped++;
    s->stats.reward_sum += reward_sum;
    s->stats.reward_n += reward_n;
    pthread_mutex_unlock(&s->mu);
}

void session_count_dropped(session *s)
{
    pthread_mutex_lock(&s->mu);
    s->stats.groups_dropped++;
    pthread_mutex_unlock(&s->mu);
}

void session_stats_get(session *s, session_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    pthread_mutex_unlock(&s->mu);
}

/* ---- heartbeat ------------------------------------------------------------------------- */

void session_heartbeat_run(session *s, double progress_every)
{
    int progress = progress_every > 0 && !actlog_quiet();
    double last_hb = session_now_(), last_progress = session_now_();
    long long last_tokens = 0, last_groups = 0, prog_tokens = 0;
    double last_reward_sum = 0;
    long last_reward_n = 0;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        double interval =
            (s->params.heartbeat_interval_ms ? s->params.heartbeat_interval_ms : 2000) / 1000.0;
        pthread_mutex_unlock(&s->mu);
        double t = session_now_();
        double wait = last_hb + interval - t;
        if (progress && last_progress + progress_every - t < wait)
            wait = last_progress + progress_every - t;
        if (wait > 0 && session_sleep_ms(s, (long)(wait * 1000) + 1))
            break;
        if (session_stopping(s))
            break;
        t = session_now_();
        if (progress && t - last_progress >= progress_every) {
            session_stats st;
            session_stats_get(s, &st);
            int64_t held = vtrack_held(s->vt, NULL);
            double rate = (double)(st.tokens - prog_tokens) / (t - last_progress);
            prog_tokens = st.tokens;
            double mean = st.reward_n > last_reward_n
                              ? (st.reward_sum - last_reward_sum) /
                                    (double)(st.reward_n - last_reward_n)
                              : 0.0;
            ALOG("progress: version %lld, groups %lld submitted (+%lld; %lld accepted, %lld "
                 "dropped), mean reward %.3f, %.1f tokens/s",
                 (long long)held, st.groups_submitted, st.groups_submitted - last_groups,
                 st.groups_accepted, st.groups_dropped, mean, rate);
            last_groups = st.groups_submitted;
            last_reward_sum = st.reward_sum;
            last_reward_n = st.reward_n;
            last_progress = t;
        }
        if (t - last_hb < interval)
            continue;
        Cohort__V1__HeartbeatRequest req = COHORT__V1__HEARTBEAT_REQUEST__INIT;
        pthread_mutex_lock(&s->mu);
        req.actor_id = s->actor_id;
        req.completions = s->stats.completions;
        long long toks = s->stats.tokens;
        pthread_mutex_unlock(&s->mu);
        req.held_version = vtrack_held(s->vt, NULL);
        req.sampler_tokens_per_s = t > last_hb ? (double)(toks - last_tokens) / (t - last_hb) : 0;
        if (!(req.sampler_tokens_per_s >= 0) || !isfinite(req.sampler_tokens_per_s))
            req.sampler_tokens_per_s = 0;
        last_tokens = toks;
        last_hb = t;
        ProtobufCMessage *rep = NULL;
        rpc_status st;
        int64_t dl = (int64_t)(interval * 1000);
        rpc_unary_msg(s->lch, M_HEARTBEAT, &req.base, &cohort__v1__heartbeat_reply__descriptor,
                      dl < 1000 ? 1000 : dl > 5000 ? 5000 : dl, &rep, &st);
        if (st.code == GRPC_STATUS_OK && rep) {
            Cohort__V1__HeartbeatReply *r = (Cohort__V1__HeartbeatReply *)rep;
            pthread_mutex_lock(&s->mu);
            if (r->paused != s->params.paused)
                ALOG("training %s", r->paused ? "paused by the operator" : "resumed");
            s->params.paused = r->paused;
            s->params.max_staleness = r->max_staleness;
            session_apply_sampling_locked_(s, r->sampling);
            pthread_mutex_unlock(&s->mu);
            vtrack_raise_learner_version(s->vt, r->current_version); /* a notice may be newer */
        } else if (session_is_unknown_actor(&st)) {
            rpc_msg_free(rep);
            if (session_register(s, req.actor_id))
                break;
            continue;
        } else if (st.code != GRPC_STATUS_UNAVAILABLE) {
            AWARN("Heartbeat: %s: %s", rpc_status_name(st.code), st.message);
        }
        rpc_msg_free(rep);
    }
}
