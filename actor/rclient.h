/* rclient.h - the actor's reward client: Reward.Score for the completions of one group.
 *
 * Every completion comes back with an item status and, only when that status is ITEM_OK, a
 * finite reward: results are matched to items by item_id ("<lease_id>/<index>"), wherever
 * the service put them; an item without a result, with ITEM_STATUS_UNSPECIFIED or with a
 * non-finite reward becomes ITEM_FAILED with a detail saying why. When the whole call fails
 * every item is reported ITEM_TIMED_OUT (DEADLINE_EXCEEDED) or ITEM_FAILED (anything else)
 * with a detail naming the service and its status, never as a reward of 0.
 *
 * Deadlines: each item gets timeout_ms (ScoreRequest.timeout_ms); the call's deadline is
 * timeout_ms + 1 s so the service can answer with per-item timeouts before the caller gives
 * up. UNAVAILABLE and RESOURCE_EXHAUSTED are retried with back-off (250 ms doubling to 5 s)
 * for up to 30 s.
 *
 * Threads: an rclient may be used by one thread at a time; the channel it borrows is
 * thread-safe. Ownership: the channel and the address string are borrowed and must outlive
 * the rclient; an rclient_scores handle owns the reply its items point into.
 */
#ifndef COHORT_ACTOR_RCLIENT_H
#define COHORT_ACTOR_RCLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "cohort/v1/reward.pb-c.h"
#include "err.h"
#include "rpc.h"
#include "session.h"

typedef struct rclient rclient;               /* opaque */
typedef struct rclient_scores rclient_scores; /* opaque: the outcome of one Score */

/* One group to score: n completions of one leased prompt. Everything is borrowed. */
typedef struct rclient_group {
    uint64_t lease_id; /* item ids are "<lease_id>/<index>" */
    const char *task, *prompt, *answer, *metadata_json;
    int n;
    char *const *texts;   /* [n] decoded completions (stop token removed) */
    const int *lens;      /* [n] completion tokens */
    const int *truncated; /* [n] 1 when the completion hit max_new_tokens without a stop */
    const int32_t *prompt_tokens;      /* [n_prompt] the prompt's ids (may be NULL) */
    int n_prompt;
    const int32_t *const *tokens;      /* [n] each completion's ids, lens[i] of them (may be
                                        * NULL); sent with the texts, never re-tokenized */
} rclient_group;

/* The outcome for one completion. */
typedef struct rclient_item {
    Cohort__V1__ItemStatus status; /* never ITEM_STATUS_UNSPECIFIED */
    double reward;                 /* finite when status is ITEM_OK, else 0 */
    size_t n_components;
    Cohort__V1__RewardComponent **components; /* into the reply; NULL when none */
    const char *detail;                       /* never NULL ("" when nothing to say) */
} rclient_item;

/* rch: channel to the reward service (borrowed); addr: its address for messages (borrowed);
 * timeout_ms: per-item budget in [1, 600000] (COH_EINVAL otherwise). */
int rclient_create(rpc_channel *rch, const char *addr, int timeout_ms, rclient **out,
                   coh_err *err);
void rclient_destroy(rclient *rc); /* NULL is fine */

/* Score group g (n in [1, 4096]). Returns 0 with *out (free with rclient_scores_destroy)
 * whatever the service answered; -1 when the session stops while waiting to retry (*out
 * NULL); COH_EINVAL for a bad group; COH_ENOMEM. s (may be NULL: no stop, plain sleeps) gives
 * the interruptible back-off. *latency_ms (may be NULL) gets the last attempt's wall time. */
int rclient_score(rclient *rc, session *s, const rclient_group *g, rclient_scores **out,
                  double *latency_ms);

int rclient_scores_count(const rclient_scores *sc);
/* Item i in [0, count); valid until rclient_scores_destroy. */
const rclient_item *rclient_scores_item(const rclient_scores *sc, int i);
/* 1 when the Score call itself failed (every item carries the same failure). */
int rclient_scores_call_failed(const rclient_scores *sc);
void rclient_scores_destroy(rclient_scores *sc); /* NULL is fine */

#endif
