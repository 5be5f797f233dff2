/* main_ctl.c - cohortctl: watch and steer a running learner over cohort.v1.Monitor, and ask
 * any Cohort server for its health or a reward service for its verifiers.
 *
 *   cohortctl [--learner|--server HOST:PORT] [--token T] [--tls-ca PEM] COMMAND [args]
 *     status                 step, version, phase, last metrics, actors, buffer
 *     watch [--from N]       one line per step as the learner makes them (Ctrl-C to stop)
 *     workers                connected actors and their last heartbeat
 *     pause [REASON] | resume | checkpoint
 *     set KEY=VALUE ...      lr, beta, temperature, entropy_coef, eps_low, eps_high
 *     plot METRICS.jsonl OUT.png   reward, held-out accuracy and KL against step (gnuplot)
 *     health [SERVICE]       grpc.health.v1 check of any Cohort server or verifier
 *     reward-status          a reward service's counters, verifiers and endpoints
 *     score --task T [--answer A] [--metadata JSON] PROMPT COMPLETION
 *                            one item scored by a reward service (try a verifier's route)
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cohort/v1/monitor.pb-c.h"
#include "cohort/v1/reward.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc.h"

#define DEADLINE_MS 10000

static rpc_stream *g_stream;
static void on_sigint(int sig)
{
    (void)sig;
    if (g_stream)
        rpc_stream_cancel(g_stream);
}

static int fail_status(const char *what, const rpc_status *st)
{
    fprintf(stderr, "cohortctl: %s: %s: %s\n", what, rpc_status_name(st->code), st->message);
    if (st->code == GRPC_STATUS_UNAVAILABLE)
        fprintf(stderr, "cohortctl: is the server running at that address? (--server / --learner)\n");
    return 1;
}

static int call(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *rd, ProtobufCMessage **rep)
{
    rpc_status st;
    if (rpc_unary_msg(ch, method, req, rd, DEADLINE_MS, rep, &st) || st.code != GRPC_STATUS_OK)
        return fail_status(method, &st);
    return 0;
}

static void print_metrics(const Cohort__V1__StepMetrics *m)
{
    char eval[32] = "";
    if (m->eval_accuracy_present_case == COHORT__V1__STEP_METRICS__EVAL_ACCURACY_PRESENT_EVAL_ACCURACY)
        snprintf(eval, sizeof eval, " eval %.1f%%", 100 * m->eval_accuracy);
    printf("step %6" PRId64 " v%" PRId64 " [%s] reward %.3f±%.3f%s kl %.4f clip %.3f entropy %.3f "
           "gnorm %.2f lr %.2e staleness %.2f learn %.0f tok/s",
           m->step, m->version, m->phase, m->reward_mean, m->reward_std, eval, m->kl,
           m->clip_frac, m->entropy, m->grad_norm, m->lr, m->staleness_mean,
           m->learner_tokens_per_s);
}

/* "  dropped: stale 2 invalid 1" (the reasons with a count), or nothing. */
static void print_drops(const Cohort__V1__StepMetrics *m, int all)
{
    int any = 0;
    for (size_t i = 0; i < m->n_groups_dropped_by_reason; i++) {
        const Cohort__V1__StepMetrics__GroupsDroppedByReasonEntry *e =
            m->groups_dropped_by_reason[i];
        if (!all && e->value == 0)
            continue;
        printf("%s %s %" PRId64, any ? "" : all ? "groups dropped:" : "  dropped:", e->key,
               e->value);
        any = 1;
    }
    if (all && !any)
        printf("groups dropped: none");
}

static int cmd_status(rpc_channel *ch)
{
    Cohort__V1__GetStatusRequest req = COHORT__V1__GET_STATUS_REQUEST__INIT;
    ProtobufCMessage *rep = NULL;
    if (call(ch, "/cohort.v1.Monitor/GetStatus", &req.base, &cohort__v1__status__descriptor, &rep))
        return 1;
    Cohort__V1__Status *s = (Cohort__V1__Status *)rep;
    printf("step %" PRId64 "/%" PRId64 "  version %" PRId64 "  phase %s%s%s\n", s->step,
           s->total_steps, s->version, s->phase, s->paused ? "  PAUSED " : "",
           s->paused ? s->pause_reason : "");
    printf("actors %d  buffered groups %d/%d  leases out %d  uptime %.0f s  run %s\n", s->actors,
           s->buffered_groups, s->buffer_capacity, s->leases_outstanding, s->uptime_s, s->run_dir);
    if (s->lease_counters) {
        const Cohort__V1__LeaseCounters *c = s->lease_counters;
        printf("leases issued %" PRId64 " (again %" PRId64 ")  completed %" PRId64
               "  expired %" PRId64 "  returned %" PRId64 "  of dead actors %" PRId64 "\n",
               c->issued, c->reissued, c->completed, c->expired, c->returned, c->dropped);
    }
    if (s->settings) {
        const Cohort__V1__AlgorithmSettings *a = s->settings;
        printf("task %s  estimator %s  aggregation %s  clip [%g, %g]  beta %g  entropy %g  "
               "temperature %g  max new tokens %d  G %d x %d prompts\n",
               a->task, a->estimator, a->aggregation, 1 - a->eps_low, 1 + a->eps_high, a->beta,
               a->entropy_coef, a->temperature, a->max_new_tokens, a->group_size,
               a->prompts_per_step);
    }
    if (s->last) {
        print_metrics(s->last);
        printf("\n");
        print_drops(s->last, 1);
        printf("  (since start)  reward latency %.1f ms\n", s->last->reward_latency_ms);
    }
    rpc_msg_free(rep);
    return 0;
}

static int cmd_watch(rpc_channel *ch, long from)
{
    Cohort__V1__WatchMetricsRequest req = COHORT__V1__WATCH_METRICS_REQUEST__INIT;
    req.from_step = from;
    uint8_t *bytes = NULL;
    size_t len = 0;
    coh_err err;
    if (rpc_pack(&req.base, 1 << 20, &bytes, &len, &err) ||
        rpc_stream_open(ch, "/cohort.v1.Monitor/WatchMetrics", bytes, len, 365LL * 24 * 3600 * 1000,
                        &g_stream, &err)) {
        free(bytes);
        fprintf(stderr, "cohortctl: watch: %s\n", err.msg);
        return 1;
    }
    free(bytes);
    signal(SIGINT, on_sigint);
    const uint8_t *msg;
    size_t n;
    int rc;
    while ((rc = rpc_stream_next(g_stream, &msg, &n)) == 1) {
        Cohort__V1__StepMetrics *m = (Cohort__V1__StepMetrics *)rpc_unpack(
            &cohort__v1__step_metrics__descriptor, msg, n);
        if (m) {
            print_metrics(m);
            print_drops(m, 0);
            printf("\n");
            fflush(stdout);
            rpc_msg_free(&m->base);
        }
    }
    rpc_status st;
    rpc_stream_close(g_stream, &st);
    g_stream = NULL;
    if (st.code == GRPC_STATUS_OK || st.code == GRPC_STATUS_CANCELLED)
        return 0;
    return fail_status("watch", &st);
}

static int cmd_workers(rpc_channel *ch)
{
    Cohort__V1__ListWorkersRequest req = COHORT__V1__LIST_WORKERS_REQUEST__INIT;
    ProtobufCMessage *rep = NULL;
    if (call(ch, "/cohort.v1.Monitor/ListWorkers", &req.base,
             &cohort__v1__workers_reply__descriptor, &rep))
        return 1;
    Cohort__V1__WorkersReply *w = (Cohort__V1__WorkersReply *)rep;
    printf("%-16s %-12s %-22s %8s %8s %10s %8s %8s\n", "actor", "name", "peer", "hb ago",
           "version", "tok/s", "leases", "groups");
    for (size_t i = 0; i < w->n_workers; i++) {
        const Cohort__V1__Worker *a = w->workers[i];
        printf("%016" PRIx64 " %-12.12s %-22.22s %6" PRId64 "ms %8" PRId64 " %10.0f %8d %8" PRId64
               "\n",
               a->actor_id, a->name, a->peer, a->last_heartbeat_ms_ago, a->held_version,
               a->sampler_tokens_per_s, a->leases_held, a->groups_accepted);
    }
    if (w->n_workers == 0)
        printf("(no actors connected)\n");
    rpc_msg_free(rep);
    return 0;
}

static int cmd_control(rpc_channel *ch, int pause, const char *reason)
{
    Cohort__V1__ControlRequest req = COHORT__V1__CONTROL_REQUEST__INIT;
    req.reason = (char *)(reason ? reason : "");
    ProtobufCMessage *rep = NULL;
    if (call(ch, pause ? "/cohort.v1.Monitor/Pause" : "/cohort.v1.Monitor/Resume", &req.base,
             &cohort__v1__control_reply__descriptor, &rep))
        return 1;
    printf("%s\n", ((Cohort__V1__ControlReply *)rep)->message);
    rpc_msg_free(rep);
    return 0;
}

static int cmd_checkpoint(rpc_channel *ch)
{
    Cohort__V1__CheckpointRequest req = COHORT__V1__CHECKPOINT_REQUEST__INIT;
    ProtobufCMessage *rep = NULL;
    if (call(ch, "/cohort.v1.Monitor/Checkpoint", &req.base,
             &cohort__v1__checkpoint_reply__descriptor, &rep))
        return 1;
    Cohort__V1__CheckpointReply *r = (Cohort__V1__CheckpointReply *)rep;
    printf("checkpoint of step %" PRId64 " written to %s\n", r->step, r->path);
    rpc_msg_free(rep);
    return 0;
}

/* The keys `set` takes and their ranges: the same as the learner's flags (learner/trainopt.c)
 * and trainer_set_hparam, checked here so that a typo never reaches a running learner. */
static const struct set_key {
    const char *key;
    double lo, hi;
    int lo_open, hi_open;
} SET_KEYS[] = {
    {"lr", 0, 1, 1, 0},          {"beta", 0, 100, 0, 0},   {"temperature", 0, 10, 1, 0},
    {"entropy_coef", 0, 1, 0, 0}, {"eps_low", 0, 1, 0, 1}, {"eps_high", 0, 10, 0, 0},
};
#define N_SET_KEYS (sizeof SET_KEYS / sizeof SET_KEYS[0])

/* KEY=VALUE into key (malloc'd) and a checked value; prints the problem (exit status 2). */
static int parse_setting(const char *kv, char **key, double *value)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) {
        fprintf(stderr, "cohortctl: set: '%s' is not KEY=VALUE (e.g. lr=3e-4)\n", kv);
        return 2;
    }
    size_t kl = (size_t)(eq - kv);
    for (size_t i = 0; i < N_SET_KEYS; i++) {
        if (strlen(SET_KEYS[i].key) != kl || strncmp(SET_KEYS[i].key, kv, kl) != 0)
            continue;
        coh_err err;
        if (cli_parse_double(SET_KEYS[i].key, eq + 1, SET_KEYS[i].lo, SET_KEYS[i].hi,
                             SET_KEYS[i].lo_open, SET_KEYS[i].hi_open, value, &err)) {
            fprintf(stderr, "cohortctl: set %s\n", err.msg);
            return 2;
        }
        *key = strndup(kv, kl);
        return *key ? 0 : 1;
    }
    fprintf(stderr, "cohortctl: set: unknown setting '%.*s'; the settings are lr, beta, "
                    "temperature, entropy_coef, eps_low, eps_high\n",
            (int)kl, kv);
    return 2;
}

static int cmd_set(rpc_channel *ch, int n, char **kv)
{
    Cohort__V1__Setting *s = calloc((size_t)n, sizeof *s);
    Cohort__V1__Setting **sp = calloc((size_t)n, sizeof *sp);
    char **keys = calloc((size_t)n, sizeof *keys);
    int rc = 1;
    if (!s || !sp || !keys) {
        fprintf(stderr, "cohortctl: set: out of memory\n");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        double v = 0.0;
        if ((rc = parse_setting(kv[i], &keys[i], &v)))
            goto out;
        rc = 1;
        cohort__v1__setting__init(&s[i]);
        s[i].key = keys[i];
        s[i].value = v;
        sp[i] = &s[i];
    }
    Cohort__V1__SetRequest req = COHORT__V1__SET_REQUEST__INIT;
    req.n_settings = (size_t)n;
    req.settings = sp;
    req.reason = "cohortctl";
    ProtobufCMessage *rep = NULL;
    if (call(ch, "/cohort.v1.Monitor/SetHyperparameters", &req.base,
             &cohort__v1__set_reply__descriptor, &rep))
        goto out;
    Cohort__V1__SetReply *r = (Cohort__V1__SetReply *)rep;
    for (size_t i = 0; i < r->n_applied; i++)
        printf("%s = %g\n", r->applied[i]->key, r->applied[i]->value);
    printf("%s (step %" PRId64 ")\n", r->message, r->effective_step);
    rpc_msg_free(rep);
    rc = 0;
out:
    for (int i = 0; keys && i < n; i++)
        free(keys[i]);
    free(keys);
    free(s);
    free(sp);
    return rc;
}

/* plot: no server needed; the metrics file is JSON Lines with DESIGN.md's field names */
static int cmd_plot(const char *in, const char *out)
{
    FILE *f = fopen(in, "r");
    if (!f) {
        fprintf(stderr, "cohortctl: plot: cannot open %s\n", in);
        return 1;
    }
    char dir[] = "/tmp/cohortctl-plot-XXXXXX";
    if (!mkdtemp(dir)) {
        fclose(f);
        return 1;
    }
    char rpath[64], epath[64], gpath[64];
    snprintf(rpath, sizeof rpath, "%s/r.dat", dir);
    snprintf(epath, sizeof epath, "%s/e.dat", dir);
    snprintf(gpath, sizeof gpath, "%s/p.gp", dir);
    FILE *r = fopen(rpath, "w"), *e = fopen(epath, "w");
    char *line = NULL;
    size_t cap = 0;
    long nr = 0, ne = 0;
    while (r && e && getline(&line, &cap, f) > 0) {
        cJSON *o = cJSON_Parse(line);
        const cJSON *step = cJSON_GetObjectItemCaseSensitive(o, "step");
        const cJSON *phase = cJSON_GetObjectItemCaseSensitive(o, "phase");
        const cJSON *rew = cJSON_GetObjectItemCaseSensitive(o, "reward_mean");
        const cJSON *kl = cJSON_GetObjectItemCaseSensitive(o, "kl");
        const cJSON *acc = cJSON_GetObjectItemCaseSensitive(o, "eval_accuracy");
        if (cJSON_IsNumber(step)) {
            if (cJSON_IsNumber(rew) && !(cJSON_IsString(phase) && !strcmp(phase->valuestring, "sft"))) {
                fprintf(r, "%g %g %g\n", step->valuedouble, rew->valuedouble,
                        cJSON_IsNumber(kl) ? kl->valuedouble : 0.0);
                nr++;
            }
            if (cJSON_IsNumber(acc)) {
                fprintf(e, "%g %g\n", step->valuedouble, acc->valuedouble);
                ne++;
            }
        }
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    if (r)
        fclose(r);
    if (e)
        fclose(e);
    int rc = 1;
    FILE *g = fopen(gpath, "w");
    if (g && (nr || ne)) {
        fprintf(g, "set terminal pngcairo size 1000,600\nset output '%s'\n", out);
        fprintf(g, "set xlabel 'step'\nset ylabel 'reward / accuracy'\nset y2label 'KL'\n"
                   "set ytics nomirror\nset y2tics\nset y2range [0:*]\nset key left top\n"
                   "set grid\nplot ");
        if (ne)
            fprintf(g, "'%s' using 1:2 with linespoints title 'held-out accuracy'%s", epath,
                    nr ? ", " : "");
        if (nr)
            fprintf(g, "'%s' using 1:2 with lines title 'reward mean', '%s' using 1:3 axes x1y2 "
                       "with lines title 'KL'",
                    rpath, rpath);
        fprintf(g, "\n");
        fclose(g);
        g = NULL;
        char cmd[256];
        snprintf(cmd, sizeof cmd, "gnuplot '%s' 2>/dev/null", gpath);
        rc = system(cmd) == 0 ? 0 : 1;
        if (rc)
            fprintf(stderr, "cohortctl: plot: gnuplot failed (apt-get install gnuplot-nox)\n");
        else
            printf("%s: %ld steps with reward, %ld evaluations\n", out, nr, ne);
    } else {
        fprintf(stderr, "cohortctl: plot: %s has no step records\n", in);
    }
    if (g)
        fclose(g);
    unlink(rpath);
    unlink(epath);
    unlink(gpath);
    rmdir(dir);
    return rc;
}

/* health [SERVICE]: grpc.health.v1 Check of any Cohort server; exit 0 only when SERVING
 * (for container health checks). */
static int cmd_health(rpc_channel *ch, const char *service)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)(service ? service : "");
    ProtobufCMessage *rep = NULL;
    rpc_status st;
    if (rpc_unary_msg(ch, "/grpc.health.v1.Health/Check", &req.base,
                      &grpc__health__v1__health_check_response__descriptor, 3000, &rep, &st) ||
        st.code != GRPC_STATUS_OK)
        return fail_status("health", &st);
    int serving = ((Grpc__Health__V1__HealthCheckResponse *)rep)->status ==
                  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    printf("%s\n", serving ? "SERVING" : "NOT_SERVING");
    rpc_msg_free(rep);
    return serving ? 0 : 1;
}

/* reward-status: Reward.Status of a cohort-reward. */
static int cmd_reward_status(rpc_channel *ch)
{
    Cohort__V1__RewardStatusRequest req = COHORT__V1__REWARD_STATUS_REQUEST__INIT;
    ProtobufCMessage *rep = NULL;
    if (call(ch, "/cohort.v1.Reward/Status", &req.base, &cohort__v1__reward_status__descriptor,
             &rep))
        return 1;
    const Cohort__V1__RewardStatus *s = (const Cohort__V1__RewardStatus *)rep;
    printf("reward service: up %.0f s, %" PRIu64 " requests (%" PRIu64 " refused), %" PRIu64
           " items: %" PRIu64 " failed, %" PRIu64 " timed out, %" PRIu64 " unknown task\n",
           s->uptime_s, s->requests, s->requests_invalid, s->items, s->items_failed,
           s->items_timed_out, s->items_unknown_task);
    for (size_t i = 0; i < s->n_verifiers; i++) {
        const Cohort__V1__VerifierStatus *v = s->verifiers[i];
        printf("verifier %s (task %s, weight %g, timeout %u ms, max in flight %u): %" PRIu64
               " items, %" PRIu64 " ok, %" PRIu64 " failed, %" PRIu64 " timed out, %" PRIu64
               " with no endpoint; p50 %.1f ms p99 %.1f ms\n",
               v->name, v->task, v->weight, v->timeout_ms, v->max_in_flight, v->items, v->ok,
               v->failed, v->timed_out, v->no_endpoint, v->latency_p50_ms, v->latency_p99_ms);
        for (size_t j = 0; j < v->n_endpoints; j++) {
            const Cohort__V1__VerifierEndpointStatus *e = v->endpoints[j];
            printf("  endpoint %s %s%s%s: %" PRIu64 " calls, %" PRIu64 " ok, %" PRIu64
                   " errors, %" PRIu64 " timeouts, %" PRIu64 " ejections, %u in flight, %u "
                   "queued; p50 %.1f ms p99 %.1f ms\n",
                   e->address, e->state, e->in_rotation ? " in rotation" : " OUT of rotation",
                   e->batch ? ", VerifyBatch" : ", Verify", e->calls, e->ok, e->errors,
                   e->timeouts, e->ejections, e->in_flight, e->queued, e->latency_p50_ms,
                   e->latency_p99_ms);
        }
    }
    rpc_msg_free(rep);
    return 0;
}

/* score: one item through Reward.Score; exit 0 when it was scored (ITEM_OK). */
static int cmd_score(rpc_channel *ch, const char *task, const char *answer, const char *meta,
                     const char *prompt, const char *completion)
{
    Cohort__V1__RewardItem item = COHORT__V1__REWARD_ITEM__INIT;
    item.item_id = "cohortctl";
    item.task = (char *)task;
    item.answer = (char *)(answer ? answer : "");
    item.metadata_json = (char *)(meta ? meta : "");
    item.prompt = (char *)prompt;
    item.completion = (char *)completion;
    Cohort__V1__RewardItem *items[1] = {&item};
    Cohort__V1__ScoreRequest req = COHORT__V1__SCORE_REQUEST__INIT;
    req.n_items = 1;
    req.items = items;
    ProtobufCMessage *rep = NULL;
    if (call(ch, "/cohort.v1.Reward/Score", &req.base, &cohort__v1__score_reply__descriptor, &rep))
        return 1;
    const Cohort__V1__ScoreReply *r = (const Cohort__V1__ScoreReply *)rep;
    int ok = 0;
    if (r->n_results != 1) {
        fprintf(stderr, "cohortctl: score: the reply holds %zu results, not 1\n", r->n_results);
    } else {
        const Cohort__V1__ItemResult *x = r->results[0];
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value(&cohort__v1__item_status__descriptor, x->status);
        ok = x->status == COHORT__V1__ITEM_STATUS__ITEM_OK;
        if (ok)
            printf("reward %.6g (%s, %.1f ms)\n", x->reward, ev ? ev->name : "?", x->latency_ms);
        else
            printf("no reward: %s (%.1f ms)\n", ev ? ev->name : "?", x->latency_ms);
        for (size_t i = 0; i < x->n_components; i++)
            printf("  component %s = %.6g\n", x->components[i]->name, x->components[i]->value);
        if (x->detail && *x->detail)
            printf("  detail: %s\n", x->detail);
    }
    rpc_msg_free(rep);
    return ok ? 0 : 1;
}

/* --from N: where `watch` starts (monitor.proto WatchMetricsRequest.from_step: 0 new steps
 * only, N > 0 from step N, -K the last K held steps). */
#define FROM_MAX 1000000000000L
static int parse_from(const char *s, long *from)
{
    coh_err err;
    if (cli_parse_long("--from", s, -FROM_MAX, FROM_MAX, from, &err) == COH_OK)
        return 0;
    fprintf(stderr, "cohortctl: %s\n", err.msg);
    return 2;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: cohortctl [--learner|--server HOST:PORT] [--token T] [--tls-ca PEM] COMMAND\n"
               "  status | watch [--from N] | workers | pause [REASON] | resume | checkpoint\n"
               "  set KEY=VALUE ... (lr, beta, temperature, entropy_coef, eps_low, eps_high)\n"
               "  plot METRICS.jsonl OUT.png\n"
               "  health [SERVICE]       grpc.health.v1 check of any Cohort server or verifier\n"
               "  reward-status          a reward service's counters, verifiers and endpoints\n"
               "  score --task T [--answer A] [--metadata JSON] PROMPT COMPLETION\n"
               "                         one item scored by a reward service (--server)\n"
               "--server and --learner are the same option: the address of the server to ask\n"
               "(default $COHORT_LEARNER, else 127.0.0.1:50051).\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"learner", 1, 0, 'l'}, {"server", 1, 0, 'l'}, {"token", 1, 0, 't'},
                                         {"tls-ca", 1, 0, 'c'},  {"from", 1, 0, 'f'},
                                         {"task", 1, 0, 'T'},    {"answer", 1, 0, 'a'},
                                         {"metadata", 1, 0, 'm'},
                                         {"help", 0, 0, 'h'},    {0, 0, 0, 0}};
    const char *target = getenv("COHORT_LEARNER") ? getenv("COHORT_LEARNER") : "127.0.0.1:50051";
    const char *token = getenv("COHORT_TOKEN"), *ca = NULL;
    const char *task = NULL, *answer = NULL, *meta = NULL;
    long from = -20;
    int opt;
    while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (opt) {
        case 'l': target = optarg; break;
        case 't': token = optarg; break;
        case 'c': ca = optarg; break;
        case 'T': task = optarg; break;
        case 'a': answer = optarg; break;
        case 'm': meta = optarg; break;
        case 'f':
            if (parse_from(optarg, &from))
                return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[optind];
    if (strcmp(cmd, "plot") == 0) {
        if (argc - optind != 3) {
            usage(stderr);
            return 2;
        }
        return cmd_plot(argv[optind + 1], argv[optind + 2]);
    }
    /* options may also follow the command (cohortctl watch --from 0) */
    optind++;
    while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        if (opt == 'f' && parse_from(optarg, &from))
            return 2;
        if (opt == 'T')
            task = optarg;
        else if (opt == 'a')
            answer = optarg;
        else if (opt == 'm')
            meta = optarg;
        else if (opt == 'l')
            target = optarg;
        else if (opt == 't')
            token = optarg;
        else if (opt == 'c')
            ca = optarg;
        if (opt == '?' || opt == ':') {
            usage(stderr);
            return 2;
        }
    }
    /* every value is checked before anything connects */
    if (strcmp(cmd, "score") == 0 && (!task || !*task || argc - optind != 2)) {
        fprintf(stderr, "cohortctl: score needs --task T and two arguments, PROMPT and "
                        "COMPLETION (e.g. cohortctl --server reward:50052 score --task addition "
                        "'12+30=' 42)\n");
        return 2;
    }
    if (strcmp(cmd, "set") == 0) {
        for (int i = optind; i < argc; i++) {
            char *key = NULL;
            double v;
            int bad = parse_setting(argv[i], &key, &v);
            free(key);
            if (bad)
                return bad;
        }
    }
    rpc_global_init();
    rpc_channel *ch = NULL;
    coh_err err;
    rpc_channel_config cc = {.tls_ca_file = ca, .bearer_token = token};
    int rc = 2;
    if (rpc_channel_create(target, &cc, &ch, &err)) {
        fprintf(stderr, "cohortctl: %s\n", err.msg);
        rc = 1;
    } else if (strcmp(cmd, "status") == 0)
        rc = cmd_status(ch);
    else if (strcmp(cmd, "watch") == 0)
        rc = cmd_watch(ch, from);
    else if (strcmp(cmd, "workers") == 0)
        rc = cmd_workers(ch);
    else if (strcmp(cmd, "pause") == 0)
        rc = cmd_control(ch, 1, optind < argc ? argv[optind] : "paused by cohortctl");
    else if (strcmp(cmd, "resume") == 0)
        rc = cmd_control(ch, 0, NULL);
    else if (strcmp(cmd, "health") == 0)
        rc = cmd_health(ch, optind < argc ? argv[optind] : "");
    else if (strcmp(cmd, "reward-status") == 0)
        rc = cmd_reward_status(ch);
    else if (strcmp(cmd, "score") == 0)
        rc = cmd_score(ch, task, answer, meta, argv[optind], argv[optind + 1]);
    else if (strcmp(cmd, "checkpoint") == 0)
        rc = cmd_checkpoint(ch);
    else if (strcmp(cmd, "set") == 0 && optind < argc)
        rc = cmd_set(ch, argc - optind, argv + optind);
    else
        usage(stderr);
    rpc_channel_destroy(ch);
    rpc_global_shutdown();
    return rc;
}
