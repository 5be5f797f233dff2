/* prom.c - the learner's Prometheus endpoint (see prom.h). */
#include "prom.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== the page ========================================================================== */

/* A growing text buffer. A failed allocation sets oom and makes every later append a no-op,
 * so the renderer checks once, at the end. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_reserve(sbuf *b, size_t extra)
{
    if (b->oom || b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void sb_put(sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if ((size_t)n < sizeof tmp) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    sb_reserve(b, (size_t)n);
    if (b->oom)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* A label value: backslash, double quote and newline escaped (exposition format 0.0.4). */
static void sb_label_value(sbuf *b, const char *s)
{
    if (!s)
        return;
    for (; *s; s++) {
        if (*s == '\\')
            sb_put(b, "\\\\", 2);
        else if (*s == '"')
            sb_put(b, "\\\"", 2);
        else if (*s == '\n')
            sb_put(b, "\\n", 2);
        else
            sb_put(b, s, 1);
    }
}

/* A real value as Prometheus reads it: NaN, +Inf, -Inf, otherwise the shorter of %.15g and
 * %.17g that reads back to the same double (0.1 stays "0.1", not "0.10000000000000001"). */
static void sb_double(sbuf *b, double x)
{
    if (isnan(x)) {
        sb_str(b, "NaN");
        return;
    }
    if (isinf(x)) {
        sb_str(b, x > 0 ? "+Inf" : "-Inf");
        return;
    }
    char tmp[40];
    snprintf(tmp, sizeof tmp, "%.15g", x);
    if (strtod(tmp, NULL) != x)
        snprintf(tmp, sizeof tmp, "%.17g", x);
    sb_str(b, tmp);
}

/* "# HELP" and "# TYPE" lines of one family. HELP text here is fixed and has no backslash or
 * newline to escape. */
static void family(sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_d(sbuf *b, const char *name, double x)
{
    sb_str(b, name);
    sb_put(b, " ", 1);
    sb_double(b, x);
    sb_put(b, "\n", 1);
}

static void sample_i(sbuf *b, const char *name, int64_t x)
{
    sb_printf(b, "%s %" PRId64 "\n", name, x);
}

static void gauge_d(sbuf *b, const char *name, const char *help, double x)
{
    family(b, name, "gauge", help);
    sample_d(b, name, x);
}

static void gauge_i(sbuf *b, const char *name, const char *help, int64_t x)
{
    family(b, name, "gauge", help);
    sample_i(b, name, x);
}

static void counter_i(sbuf *b, const char *name, const char *help, int64_t x)
{
    family(b, name, "counter", help);
    sample_i(b, name, x);
}

/* name{label="value"} */
static void series1(sbuf *b, const char *name, const char *label, const char *value)
{
    sb_printf(b, "%s{%s=\"", name, label);
    sb_label_value(b, value);
    sb_str(b, "\"} ");
}

/* name{actor="NAME",actor_id="ID"} */
static void series_actor(sbuf *b, const char *name, const prom_actor_view *a)
{
    sb_printf(b, "%s{actor=\"", name);
    sb_label_value(b, a->name);
    sb_printf(b, "\",actor_id=\"%" PRIu64 "\"} ", a->id);
}

/* Per-actor families, in the order of prom.h. */
enum { AV_TOKS, AV_HEARTBEAT, AV_VERSION, AV_COMPLETIONS, AV_ACCEPTED, AV_REJECTED, AV_LEASES,
       AV_N };

static const struct {
    const char *name, *type, *help;
} k_actor_families[AV_N] = {
    [AV_TOKS] = {"cohort_actor_sampler_tokens_per_second", "gauge",
                 "Sampling throughput of the actor, tokens per second."},
    [AV_HEARTBEAT] = {"cohort_actor_heartbeat_age_seconds", "gauge",
                      "Seconds since the actor's last heartbeat."},
    [AV_VERSION] = {"cohort_actor_policy_version", "gauge",
                    "Policy version the actor holds (-1: none yet)."},
    [AV_COMPLETIONS] = {"cohort_actor_completions_total", "counter",
                        "Completions the actor submitted."},
    [AV_ACCEPTED] = {"cohort_actor_groups_accepted_total", "counter",
                     "Groups of the actor the learner accepted."},
    [AV_REJECTED] = {"cohort_actor_groups_rejected_total", "counter",
                     "Groups of the actor the learner refused."},
    [AV_LEASES] = {"cohort_actor_leases_held", "gauge", "Leases the actor holds now."},
};

static void actor_value(sbuf *b, const prom_actor_view *a, int which)
{
    switch (which) {
    case AV_TOKS: sb_double(b, a->sampler_tokens_per_s); break;
    case AV_HEARTBEAT: sb_double(b, a->heartbeat_age_s); break;
    case AV_VERSION: sb_printf(b, "%" PRId64, a->held_version); break;
    case AV_COMPLETIONS: sb_printf(b, "%" PRId64, a->completions); break;
    case AV_ACCEPTED: sb_printf(b, "%" PRId64, a->groups_accepted); break;
    case AV_REJECTED: sb_printf(b, "%" PRId64, a->groups_rejected); break;
    default: sb_printf(b, "%d", a->leases_held); break;
    }
    sb_put(b, "\n", 1);
}

static int check_view(const prom_learner_view *v, coh_err *err)
{
    if (v->n_drop_reasons < 0 || v->n_actors < 0)
        return coh_fail(err, COH_EINVAL,
                        "metrics view: negative count (n_drop_reasons %d, n_actors %d)",
                        v->n_drop_reasons, v->n_actors);
    if (v->n_drop_reasons > 0 && (!v->drop_reason_names || !v->drops_by_reason))
        return coh_fail(err, COH_EINVAL,
                        "metrics view: %d drop reasons but no name or count array",
                        v->n_drop_reasons);
    for (int i = 0; i < v->n_drop_reasons; i++)
        if (!v->drop_reason_names[i])
            return coh_fail(err, COH_EINVAL, "metrics view: drop reason %d has no name", i);
    if (v->n_actors > 0 && !v->actors)
        return coh_fail(err, COH_EINVAL, "metrics view: %d actors but no actor array",
                        v->n_actors);
    return COH_OK;
}

int prom_render_learner(const prom_learner_view *v, char **text, size_t *len, coh_err *err)
{
    if (text)
        *text = NULL;
    if (len)
        *len = 0;
    if (!v || !text || !len)
        return coh_fail(err, COH_EINVAL, "prom_render_learner: NULL argument");
    int rc = check_view(v, err);
    if (rc)
        return rc;

    sbuf b = {0};

    /* run state */
    family(&b, "cohort_phase", "gauge", "Training phase of the learner (1 for the current one).");
    series1(&b, "cohort_phase", "phase", v->phase ? v->phase : "unknown");
    sb_str(&b, "1\n");
    gauge_i(&b, "cohort_step", "Current training step.", v->step);
    gauge_i(&b, "cohort_policy_version", "Policy version the actors sample with.", v->version);
    gauge_i(&b, "cohort_total_steps", "Step at which the run ends.", v->total_steps);
    gauge_i(&b, "cohort_paused", "1 while training is paused, else 0.", v->paused != 0);
    gauge_i(&b, "cohort_finished", "1 once the run has finished, else 0.", v->finished != 0);
    gauge_d(&b, "cohort_uptime_seconds", "Seconds since the learner started.", v->uptime_s);

    /* the last finished step */
    if (v->have_step) {
        gauge_d(&b, "cohort_loss", "Loss of the last step.", v->loss);
        gauge_d(&b, "cohort_reward_mean", "Mean reward of the groups the last step used.",
                v->reward_mean);
        gauge_d(&b, "cohort_reward_std",
                "Standard deviation of the rewards the last step used.", v->reward_std);
        if (!(v->eval_accuracy < 0))
            gauge_d(&b, "cohort_eval_accuracy", "Last held-out accuracy (0 to 1).",
                    v->eval_accuracy);
        gauge_d(&b, "cohort_kl", "KL estimate to the reference policy at the last step.", v->kl);
        gauge_d(&b, "cohort_clip_fraction", "Fraction of tokens clipped at the last step.",
                v->clip_frac);
        gauge_d(&b, "cohort_entropy", "Mean token entropy at the last step, nats.", v->entropy);
        gauge_d(&b, "cohort_grad_norm", "Gradient norm of the last step, before clipping.",
                v->grad_norm);
        gauge_d(&b, "cohort_learning_rate", "Learning rate of the last step.", v->lr);
        gauge_d(&b, "cohort_learner_tokens_per_second",
                "Learner throughput at the last step, tokens per second.",
                v->learner_tokens_per_s);
        gauge_d(&b, "cohort_sampler_tokens_per_second",
                "Sampling throughput of all actors, tokens per second.",
                v->sampler_tokens_per_s);
        gauge_d(&b, "cohort_staleness_mean_versions",
                "Mean policy versions behind of the groups the last step used.",
                v->staleness_mean);
        gauge_d(&b, "cohort_logprob_max_abs_diff",
                "Largest |learner - behaviour log-prob| at the sampling version, nats.",
                v->logp_max_abs_diff);
        gauge_d(&b, "cohort_reward_latency_seconds", "Latency of the reward service, seconds.",
                v->reward_latency_ms / 1000.0);
        gauge_i(&b, "cohort_groups_used", "Groups the last step trained on.", v->groups_used);
    }

    /* cumulative */
    if (v->n_drop_reasons > 0) {
        family(&b, "cohort_groups_dropped_total", "counter",
               "Groups refused or dropped since the learner started, by reason.");
        for (int i = 0; i < v->n_drop_reasons; i++) {
            series1(&b, "cohort_groups_dropped_total", "reason", v->drop_reason_names[i]);
            sb_printf(&b, "%" PRId64 "\n", v->drops_by_reason[i]);
        }
    }
    counter_i(&b, "cohort_leases_issued_total", "Prompt leases issued (new and re-issued).",
              v->leases_issued);
    counter_i(&b, "cohort_leases_reissued_total",
              "Leases that issued a prompt again (after expiry, return or drop).",
              v->leases_reissued);
    family(&b, "cohort_leases_ended_total", "counter", "Leases ended, by outcome.");
    const struct {
        const char *outcome;
        int64_t n;
    } ended[] = {{"completed", v->leases_completed},
                 {"expired", v->leases_expired},
                 {"returned", v->leases_returned},
                 {"dropped", v->leases_dropped}};
    for (size_t i = 0; i < sizeof ended / sizeof ended[0]; i++) {
        series1(&b, "cohort_leases_ended_total", "outcome", ended[i].outcome);
        sb_printf(&b, "%" PRId64 "\n", ended[i].n);
    }
    gauge_i(&b, "cohort_leases_outstanding", "Live leases now.", v->leases_outstanding);
    gauge_i(&b, "cohort_buffer_groups", "Scored groups waiting to be trained on.",
            v->buffered_groups);
    gauge_i(&b, "cohort_buffer_capacity_groups", "Capacity of the group buffer.",
            v->buffer_capacity);
    gauge_i(&b, "cohort_actors", "Connected actors.", v->n_actors);

    /* per actor */
    if (v->n_actors > 0) {
        family(&b, "cohort_actor_info", "gauge", "Connected actor (1), with its peer address.");
        for (int i = 0; i < v->n_actors; i++) {
            const prom_actor_view *a = &v->actors[i];
            sb_str(&b, "cohort_actor_info{actor=\"");
            sb_label_value(&b, a->name);
            sb_printf(&b, "\",actor_id=\"%" PRIu64 "\",peer=\"", a->id);
            sb_label_value(&b, a->peer);
            sb_str(&b, "\"} 1\n");
        }
        for (int f = 0; f < AV_N; f++) {
            family(&b, k_actor_families[f].name, k_actor_families[f].type,
                   k_actor_families[f].help);
            for (int i = 0; i < v->n_actors; i++) {
                series_actor(&b, k_actor_families[f].name, &v->actors[i]);
                actor_value(&b, &v->actors[i], f);
            }
        }
    }

    if (b.oom) {
        free(b.p);
        return coh_fail(err, COH_ENOMEM, "out of memory rendering the metrics page");
    }
    *text = b.p;
    *len = b.len;
    return COH_OK;
}
