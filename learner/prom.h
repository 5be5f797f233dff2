/* prom.h - the learner's Prometheus page (served by common/promserve.h).
 *
 * The HTTP server that serves the page is common/promserve.h (prom_server_*, shared with
 * cohort-reward). This module is the page:
 *
 *   prom_render_learner: renders a prom_learner_view (plain numbers and strings the learner
 *      fills on its loop thread, so this module needs no learner internals) as a page in the
 *      Prometheus text exposition format, version 0.0.4.
 *
 * Page format: each metric family is one "# HELP name text" line, one "# TYPE name type" line,
 * then its samples "name{label="value",...} value", families in the order of the table below,
 * samples in the order of the view's arrays; "\n" ends every line. Label values escape
 * backslash, double quote and newline as \\, \" and \n; HELP text escapes backslash and newline.
 * Values: integers in decimal; reals in the shortest %g form that reads back to the same double
 * (15 or 17 significant digits); NaN, +Inf and -Inf spelled so. No timestamps. A family with no
 * sample (no actors, no drop reasons, no step yet) is left out entirely, HELP and TYPE too.
 *
 * Metric names (tests/prom_dashboard.test.sh checks that this table, the rendered page and the
 * Grafana dashboard deploy/grafana/cohort-learner.json agree; keep the layout "name type"):
 *
 *   run state, always present
 *   cohort_phase                              gauge    1, labelled {phase="sft|raft|rl|..."}
 *   cohort_step                               gauge    current training step
 *   cohort_policy_version                     gauge    policy version the actors sample with
 *   cohort_total_steps                        gauge    step at which the run ends
 *   cohort_paused                             gauge    1 while paused (cohortctl pause), else 0
 *   cohort_finished                           gauge    1 once the run has finished, else 0
 *   cohort_uptime_seconds                     gauge    seconds since the learner started
 *
 *   the last finished step (only once have_step is set)
 *   cohort_loss                               gauge    loss of the last step
 *   cohort_reward_mean                        gauge    mean reward of the groups it used
 *   cohort_reward_std                         gauge    standard deviation of those rewards
 *   cohort_eval_accuracy                      gauge    last held-out accuracy, 0..1 (absent
 *                                                      until the first evaluation)
 *   cohort_kl                                 gauge    KL estimate to the reference policy
 *   cohort_clip_fraction                      gauge    fraction of tokens clipped, 0..1
 *   cohort_entropy                            gauge    mean token entropy, nats
 *   cohort_grad_norm                          gauge    gradient norm before clipping
 *   cohort_learning_rate                      gauge    learning rate used
 *   cohort_learner_tokens_per_second          gauge    learner throughput
 *   cohort_sampler_tokens_per_second          gauge    all actors' sampling throughput
 *   cohort_staleness_mean_versions            gauge    mean policy versions behind, of the
 *                                                      groups the step used
 *   cohort_logprob_max_abs_diff               gauge    max |learner - behaviour log-prob| at
 *                                                      the sampling version, nats
 *   cohort_reward_latency_seconds             gauge    reward service latency
 *   cohort_groups_used                        gauge    groups the step trained on
 *
 *   cumulative since the learner started
 *   cohort_groups_dropped_total               counter  groups refused or dropped, labelled
 *                                                      {reason="stale|zero_signal|..."}
 *   cohort_leases_issued_total                counter  leases issued (new prompts and re-issues)
 *   cohort_leases_reissued_total              counter  of those, prompts issued again
 *   cohort_leases_ended_total                 counter  leases ended, labelled
 *                                                      {outcome="completed|expired|returned|
 *                                                      dropped"}
 *   cohort_leases_outstanding                 gauge    live leases now
 *   cohort_buffer_groups                      gauge    scored groups waiting to be trained on
 *   cohort_buffer_capacity_groups             gauge    capacity of that buffer
 *   cohort_actors                             gauge    connected actors
 *
 *   per connected actor, labelled {actor="NAME",actor_id="ID"}
 *   cohort_actor_info                         gauge    1, with the extra label {peer="ADDR"}
 *   cohort_actor_sampler_tokens_per_second    gauge    the actor's sampling throughput
 *   cohort_actor_heartbeat_age_seconds        gauge    seconds since its last heartbeat
 *   cohort_actor_policy_version               gauge    policy version it holds (-1: none yet)
 *   cohort_actor_completions_total            counter  completions it submitted
 *   cohort_actor_groups_accepted_total        counter  its groups accepted
 *   cohort_actor_groups_rejected_total        counter  its groups refused
 *   cohort_actor_leases_held                  gauge    leases it holds now
 *
 * Thread safety: prom_render_learner is pure (no globals) and may run on any thread.
 */
#ifndef COHORT_PROM_H
#define COHORT_PROM_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "promserve.h"   /* the HTTP server that serves the page */

/* ---- the page ------------------------------------------------------------------------- */

/* One connected actor. Strings may be NULL (rendered as ""). */
typedef struct prom_actor_view {
    const char *name;             /* the actor's name (label actor) */
    uint64_t id;                  /* its registration id (label actor_id) */
    const char *peer;             /* its address as the server saw it (cohort_actor_info) */
    double sampler_tokens_per_s;
    double heartbeat_age_s;
    int64_t held_version;         /* policy version it holds, -1 none yet */
    int64_t completions;          /* cumulative */
    int64_t groups_accepted;      /* cumulative */
    int64_t groups_rejected;      /* cumulative */
    int leases_held;
} prom_actor_view;

/* What the learner shows. Pointers are borrowed for the duration of the render call. */
typedef struct prom_learner_view {
    const char *phase;            /* "sft", "raft", "rl", ...; NULL -> "unknown" */
    int64_t step, version, total_steps;
    int paused, finished;         /* 0 or 1 (any non-zero is rendered 1) */
    double uptime_s;
    int have_step;                /* 0: no step finished yet, the block below is not rendered */
    /* the last finished step */
    double loss, reward_mean, reward_std;
    double eval_accuracy;         /* < 0: no evaluation yet (not rendered) */
    double kl, clip_frac, entropy, grad_norm, lr;
    double learner_tokens_per_s, sampler_tokens_per_s, staleness_mean;
    double logp_max_abs_diff, reward_latency_ms;
    int64_t groups_used;
    /* cumulative drops by reason: n_drop_reasons names and counts */
    int n_drop_reasons;
    const char *const *drop_reason_names;
    const int64_t *drops_by_reason;
    /* cumulative lease counters and current occupancy */
    int64_t leases_issued, leases_reissued, leases_completed, leases_expired, leases_returned,
        leases_dropped;
    int leases_outstanding, buffered_groups, buffer_capacity;
    /* connected actors */
    int n_actors;
    const prom_actor_view *actors;
} prom_learner_view;

/* Render v as a page (format above). On success *text is a malloc'd, NUL-terminated page
 * the caller frees, *len its length without the NUL. On failure *text = NULL, *len = 0:
 * COH_EINVAL for a NULL argument, a negative count, a count with a NULL array or a NULL drop
 * reason name; COH_ENOMEM. */
int prom_render_learner(const prom_learner_view *v, char **text /* OUT */,
                        size_t *len /* OUT */, coh_err *err);

#endif
