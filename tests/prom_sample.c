/* prom_sample.c - print the metrics page (learner/prom.h) of a sample learner view in which
 * every field is set, so every metric family appears. tests/prom_dashboard.test.sh compares
 * the names on this page with the table in prom.h and the Grafana dashboard's queries.
 *
 * usage: prom_sample > page.txt      (exit 0; 1 with a message if rendering fails)
 */
#include <stdio.h>
#include <stdlib.h>

#include "prom.h"

int main(void)
{
    static const char *const reasons[] = {"stale", "zero_signal", "reward_failed", "invalid",
                                          "temperature", "lease_expired"};
    static const int64_t drops[] = {3, 14, 0, 1, 0, 2};
    const prom_actor_view actors[] = {
        {.name = "actor-0", .id = 11, .peer = "ipv4:127.0.0.1:40001",
         .sampler_tokens_per_s = 61250.5, .heartbeat_age_s = 0.25, .held_version = 41,
         .completions = 10240, .groups_accepted = 620, .groups_rejected = 4, .leases_held = 32},
        {.name = "actor-1", .id = 12, .peer = "ipv4:127.0.0.1:40002",
         .sampler_tokens_per_s = 60007, .heartbeat_age_s = 1.5, .held_version = 40,
         .completions = 9984, .groups_accepted = 604, .groups_rejected = 2, .leases_held = 32},
    };
    const prom_learner_view v = {
        .phase = "rl", .step = 942, .version = 42, .total_steps = 2800, .uptime_s = 312.5,
        .have_step = 1, .loss = -0.0125, .reward_mean = 0.352, .reward_std = 0.478,
        .eval_accuracy = 0.195, .kl = 0.0021, .clip_frac = 0.012, .entropy = 0.268,
        .grad_norm = 1.91, .lr = 5e-4, .learner_tokens_per_s = 72962,
        .sampler_tokens_per_s = 121257.5, .staleness_mean = 1.5, .logp_max_abs_diff = 3e-6,
        .reward_latency_ms = 4.5, .groups_used = 32,
        .n_drop_reasons = (int)(sizeof reasons / sizeof reasons[0]),
        .drop_reason_names = reasons, .drops_by_reason = drops,
        .leases_issued = 30200, .leases_reissued = 64, .leases_completed = 30080,
        .leases_expired = 40, .leases_returned = 12, .leases_dropped = 4,
        .leases_outstanding = 64, .buffered_groups = 16, .buffer_capacity = 128,
        .n_actors = (int)(sizeof actors / sizeof actors[0]), .actors = actors,
    };
    char *text = NULL;
    size_t len = 0;
    coh_err err = {0};
    if (prom_render_learner(&v, &text, &len, &err) != COH_OK) {
        fprintf(stderr, "prom_sample: %s\n", err.msg);
        return 1;
    }
    int ok = fwrite(text, 1, len, stdout) == len && fflush(stdout) == 0;
    free(text);
    if (!ok) {
        fprintf(stderr, "prom_sample: cannot write the page to stdout\n");
        return 1;
    }
    return 0;
}
