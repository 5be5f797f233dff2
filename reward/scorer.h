/* scorer.h - the reward service's scoring: weighted components per item, each reported.
 *
 * Configuration (JSON, all keys optional; the defaults score built-in tasks by correctness):
 *   {
 *     "correctness_weight": 1.0,      built-in verifiers: 1 if exactly right, else 0
 *     "format_weight": 0.0,           built-in verifiers: 1 if the answer has the right shape
 *     "length_penalty": {"weight": 1.0, "max_chars": 32, "per_char": 0.01},
 *                                     -per_char * (chars beyond max_chars), every task
 *     "reward_model": {"path": "DIR", "weight": 0.5},
 *                                     a LlamaForSequenceClassification folder (rm.h)
 *     "verifiers": [                  custom Verifier services (any language)
 *       {"name": "py-example", "task": "palindrome", "weight": 1.0, "timeout_ms": 2000,
 *        "endpoints": ["127.0.0.1:50060", "10.0.0.7:50060"],
 *        "max_in_flight": 8,          calls in flight per endpoint (1..64)
 *        "token_file": "/run/secrets/tok" | "token_env": "VAR",   bearer token (one of them)
 *        "tls_ca_file": "ca.pem", "tls_server_name": "verifier.local"}   TLS to it
 *     ],
 *     "health_check_ms": 2000,        probe every endpoint's grpc.health.v1 this often (0 = off)
 *     "default_timeout_ms": 5000,     item budget when ScoreRequest.timeout_ms is 0
 *     "tasks": {"addition": {"digits": 3}}   task options of the built-in verifiers
 *   }
 * A verifier entry with an unknown key, a token file that cannot be read or is empty, an
 * unset token variable, both token keys, or an unreadable CA file is refused, the message
 * naming the verifier and the key. The token is read once, at scorer_create.
 * A task routed to verifiers is scored by them (several verifiers may serve one task, each
 * a component named "verifier:<name>"); otherwise a built-in task is scored by its built-in verifier; otherwise the
 * item is ITEM_UNKNOWN_TASK. Built-in verifiers: those of tasks.h, and "math" (mathverify.h:
 * GSM8K/MATH final answers against the item's answer, or its metadata's "answer"; components
 * "correct" and "format" as above; the reason in the result's detail; no answer -> FAILED). The length penalty and the reward model apply to every scored
 * item. reward = sum of weight * value over the components.
 *
 * An item whose verifier fails or passes its deadline is reported FAILED or TIMED_OUT with
 * the reason - never as a silent 0 - and carries no reward. Remote calls go through a
 * caller-supplied function, so this module needs no network; endpoints of one verifier are
 * tried in turn (round robin, failing over to the next while the deadline allows).
 */
#ifndef COHORT_SCORER_H
#define COHORT_SCORER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef enum {
    SCORE_OK = 1,
    SCORE_FAILED = 2,
    SCORE_TIMED_OUT = 3,
    SCORE_UNKNOWN_TASK = 4
} score_status; /* values match cohort.v1.ItemStatus */

typedef struct scorer_item {
    const char *task, *prompt, *completion, *answer, *metadata_json; /* answer/meta may be "" */
    /* the exact token ids (may be NULL / 0), passed on to custom verifiers unchanged */
    const int32_t *prompt_tokens, *completion_tokens;
    size_t n_prompt_tokens, n_completion_tokens;
    int timeout_ms; /* > 0: the item's time budget (the code verifier's sandbox ends by it);
                     * 0: the configured default */
} scorer_item;

#define SCORER_MAX_COMPONENTS 8
#define SCORER_NAME_MAX 80

typedef struct scorer_component {
    char name[SCORER_NAME_MAX];
    double value, weight;
} scorer_component;

typedef struct scorer_result {
    score_status status;
    double reward;
    int n_components;
    scorer_component comp[SCORER_MAX_COMPONENTS];
    char detail[256];
    double latency_ms;
} scorer_result;

/* What a remote Verifier answered. */
typedef struct scorer_remote_reply {
    double score;
    int passed;
    char details[256];
} scorer_remote_reply;

/* Call one endpoint's Verify with a deadline. Return 0 with *reply filled, or a negative
 * code with err set; *timed_out = 1 when the deadline passed (the call was cancelled),
 * *unavailable = 1 when the endpoint could not be reached (another endpoint may be tried),
 * *unknown_task = 1 when the verifier answered NOT_FOUND (it does not serve the task). */
typedef int (*scorer_remote_fn)(void *ctx, const char *endpoint, const scorer_item *item,
                                int timeout_ms, scorer_remote_reply *reply, int *timed_out,
                                int *unavailable, int *unknown_task, coh_err *err);

typedef struct scorer scorer; /* opaque; one thread at a time */

/* config_json may be NULL (defaults). remote may be NULL when no verifiers are configured. */
int scorer_create(const char *config_json, scorer_remote_fn remote, void *remote_ctx,
                  scorer **out, coh_err *err);
void scorer_destroy(scorer *s);

/* Score one item. Never fails on item content; returns COH_EINVAL only for NULL fields. */
int scorer_score(scorer *s, const scorer_item *item, scorer_result *out, coh_err *err);

/* Per-verifier counters for metrics. */
typedef struct scorer_verifier_stats {
    const char *name, *task;
    long calls, ok, failed, timed_out;
    double latency_ms_sum, latency_ms_max;
} scorer_verifier_stats;

int scorer_num_verifiers(const scorer *s);
void scorer_get_verifier_stats(const scorer *s, int i, scorer_verifier_stats *out);

/* ---- configuration of the custom verifiers (read-only; valid as long as the scorer) ---- */

#define SCORER_MAX_ENDPOINTS 8

typedef struct scorer_verifier_config {
    const char *name, *task;
    double weight;
    int timeout_ms;            /* the route's budget per item */
    int max_in_flight;         /* calls in flight per endpoint (default 8) */
    int n_endpoints;
    const char *endpoints[SCORER_MAX_ENDPOINTS];
    const char *token;         /* bearer token from token_file / token_env, or NULL */
    const char *tls_ca_file;   /* PEM roots: TLS to this verifier, or NULL (plaintext) */
    const char *tls_server_name; /* expected certificate name override, or NULL */
} scorer_verifier_config;

/* Verifier i (0 <= i < scorer_num_verifiers). */
const scorer_verifier_config *scorer_verifier(const scorer *s, int i);
/* The verifiers serving task, in config order (the order of the item's components): writes
 * up to max indices into idx and returns how many there are (0: not routed). */
int scorer_routes(const scorer *s, const char *task, int *idx, int max);
/* Top-level settings: "health_check_ms" (default 2000, 0 = off) and "default_timeout_ms"
 * (default 5000). */
int scorer_health_check_ms(const scorer *s);
int scorer_default_timeout_ms(const scorer *s);

/* ---- scoring with verdicts fetched elsewhere ---------------------------------------------
 * The reward service calls the verifiers itself (concurrently, with per-item deadlines:
 * vpool.h) and hands the answers in; the scorer then only combines them with the local
 * components. */
typedef struct scorer_verdict {
    score_status status;       /* SCORE_OK: reply holds the answer; otherwise why not */
    scorer_remote_reply reply;
    char error[200];           /* SCORE_FAILED / TIMED_OUT / UNKNOWN_TASK: the reason, e.g.
                                * "gave no answer within 300 ms" */
} scorer_verdict;

/* scorer_score, except that a verifier routed for the item is not called: verdicts[i] is
 * the answer of verifier i (an array of scorer_num_verifiers entries; only the routed ones
 * are read). verdicts NULL = scorer_score. */
int scorer_score_verdicts(scorer *s, const scorer_item *item, const scorer_verdict *verdicts,
                          scorer_result *out, coh_err *err);

#endif
