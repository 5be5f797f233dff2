/* groupbuf.h - the learner's bounded buffer of validated scored groups awaiting an update.
 *
 * A group is one prompt and its G completions, each with its completion tokens, the
 * behaviour log-probability of every completion token (what the actor's sampler reported),
 * the policy version it was sampled with, and its reward. The learner validates a submitted
 * group (gbuf_validate, also run by gbuf_push), buffers a deep copy, and the trainer pops the
 * oldest groups when a batch is full.
 *
 * Invariants:
 *   (1) everything in the buffer passed gbuf_validate at push time;
 *   (2) a refused push (invalid, stale, full, out of memory) changes nothing in the buffer
 *       but the refusal counters: nothing valid already received is lost or altered;
 *   (3) the buffer holds at most capacity groups; when full, gbuf_push answers COH_EFULL at
 *       once (backpressure: the submitter waits and retries) instead of growing;
 *   (4) groups leave in arrival order (FIFO).
 *
 * Versions: a completion's version must satisfy
 *   current - max_staleness <= version <= current
 * at push time; staleness of consumed groups (current - version at pop time, which may exceed
 * max_staleness by the updates a group waited through) is reported in gbuf_stats.
 *
 * Not thread-safe: the learner serialises calls.
 */
#ifndef COHORT_GROUPBUF_H
#define COHORT_GROUPBUF_H

#include <stdint.h>

#include "err.h"
#include "loss.h"

typedef struct gbuf_config {
    int capacity;       /* groups held at most (>= 1) */
    int group_size;     /* G: completions per group (>= 1) */
    int vocab_size;     /* token ids must lie in [0, vocab_size) (>= 1) */
    int max_seq;        /* prompt + completion tokens of one sequence (>= 2) */
    int max_new_tokens; /* completion tokens of one sequence (>= 1) */
    int max_staleness;  /* versions a completion may lag behind the current one (>= 0) */
} gbuf_config;

/* One completion. In a submitted group the arrays are the caller's; in a popped group they
 * point into that group's own allocation. */
typedef struct gbuf_completion {
    const int *tokens;   /* [n_tokens] completion tokens (the prompt not included), >= 1 */
    int n_tokens;
    const float *logp;   /* [n_logp] behaviour log-prob per completion token; n_logp must
                          * equal n_tokens; each finite and <= 0 */
    int n_logp;
    uint64_t version;    /* policy version the completion was sampled with */
    double reward;       /* finite */
} gbuf_completion;

typedef struct gbuf_group {
    uint64_t prompt;                    /* data-cursor index of the prompt */
    uint64_t lease_id;                  /* the lease it was sampled under */
    uint64_t actor;                     /* the actor that submitted it (kept, not checked) */
    uint64_t seq;                       /* the learner's acceptance number, 0 = none (kept,
                                         * not checked; see acklog.h) */
    const int *prompt_tokens;           /* [n_prompt], >= 1 token */
    int n_prompt;
    const gbuf_completion *completions; /* [n_completions] == group_size */
    int n_completions;
} gbuf_group;

/* Why a push was refused (counters in gbuf_stats.refused). */
typedef enum {
    GBUF_DROP_SHAPE,   /* empty group, wrong group size, empty prompt or completion, missing
                        * arrays, log-prob count != completion token count */
    GBUF_DROP_TOKEN,   /* a token id outside [0, vocab_size) */
    GBUF_DROP_LENGTH,  /* completion > max_new_tokens, or prompt + completion > max_seq */
    GBUF_DROP_LOGPROB, /* a behaviour log-prob non-finite or > 0 */
    GBUF_DROP_REWARD,  /* a reward non-finite */
    GBUF_DROP_FUTURE,  /* a version newer than the learner's current version */
    GBUF_DROP_STALE,   /* a version older than current - max_staleness */
    GBUF_DROP_FULL,    /* backpressure: buffer full (the submitter retries; not data loss) */
    GBUF_DROP_NOMEM,   /* the copy could not be allocated */
    GBUF_DROP_LEASE,   /* refused by the lease table (counted through gbuf_note_drop) */
    GBUF_DROP_N
} gbuf_drop_reason;

/* Metric names: "shape", "token", "length", "logprob", "reward", "future_version", "stale",
 * "full", "nomem", "lease"; "unknown" otherwise. */
const char *gbuf_drop_reason_name(gbuf_drop_reason r);

typedef struct gbuf_stats {
    uint64_t accepted;               /* pushes that went in */
    uint64_t refused[GBUF_DROP_N];   /* refused pushes by reason */
    uint64_t refused_total;          /* sum of refused[] */
    uint64_t consumed_groups;        /* groups handed out by gbuf_pop_batch */
    uint64_t consumed_completions;
    double staleness_mean;           /* mean over consumed completions of current - version */
    uint64_t staleness_max;
    double last_staleness_mean;      /* the same over the last non-empty pop only */
    int count;                       /* groups waiting now */
} gbuf_stats;

/* ---- validation ---- */

/* Check a config: COH_OK or COH_EINVAL naming the field. */
int gbuf_config_check(const gbuf_config *c, coh_err *err);

/* Check a group against c and the learner's current policy version (pure; nothing kept).
 * Returns COH_OK, or the first problem found, malformed before version problems:
 *   COH_EINVAL  malformed: empty group, group size != c->group_size, empty or overlong
 *               prompt, empty completion, token id outside [0, vocab_size), completion
 *               longer than max_new_tokens, prompt + completion longer than max_seq,
 *               log-prob count != completion token count, log-prob > 0 or non-finite,
 *               reward non-finite (also a NULL argument or a bad config);
 *   COH_ERANGE  a version newer than current_version (from the future);
 *   COH_ESTATE  a version older than current_version - max_staleness (stale).
 * The message names the completion index and the field ("completion 2: reward: ..."). */
int gbuf_validate(const gbuf_config *c, const gbuf_group *g, uint64_t current_version,
                  coh_err *err);

/* ---- lifecycle ---- */

typedef struct gbuf gbuf; /* opaque */

/* An empty buffer for config c (copied). COH_EINVAL for a bad config, COH_ENOMEM; *out is
 * NULL on failure. */
int gbuf_create(const gbuf_config *c, gbuf **out, coh_err *err);
/* Frees the buffer and every group still in it; NULL is fine. */
void gbuf_destroy(gbuf *b);

/* ---- mutators ---- */

/* Validate g (as gbuf_validate) and append a deep copy: the caller's memory is not kept.
 * Returns COH_OK, gbuf_validate's errors, COH_EFULL when capacity groups are waiting
 * (checked after validation, so a bad group is reported as bad even then), or COH_ENOMEM.
 * On any failure the buffer's contents are untouched; the refusal is counted by reason. */
int gbuf_push(gbuf *b, const gbuf_group *g, uint64_t current_version, coh_err *err);

/* Hand the oldest min(n, count) groups to the caller: out[0..k) in arrival order, each a
 * single allocation the caller now owns and frees with gbuf_group_free. current_version (the
 * version the update will start from) feeds the staleness statistics. Returns k (0 when
 * empty), or COH_EINVAL for bad arguments (nothing removed). */
int gbuf_pop_batch(gbuf *b, int n, uint64_t current_version, gbuf_group **out);

/* Count a group refused before it reached the buffer (e.g. GBUF_DROP_LEASE: an unknown or
 * expired lease), so that every refusal shows in one set of counters. */
void gbuf_note_drop(gbuf *b, gbuf_drop_reason r);

/* ---- groups handed out ---- */

/* A deep copy of a well-formed group (every count >= 0, arrays present, n_logp == n_tokens)
 * in one allocation laid out as gbuf_pop_batch's groups are (gbuf_group_seqs works on it);
 * free it with gbuf_group_free. NULL when out of memory. Nothing is validated. */
gbuf_group *gbuf_group_copy(const gbuf_group *g);

/* Free a group from gbuf_pop_batch; NULL is fine. Never pass a caller-built group. */
void gbuf_group_free(gbuf_group *g);

/* Describe the G sequences of a popped group for the loss (loss.h): seqs[i].tokens is the
 * whole sequence (prompt then completion i), prompt_len = n_prompt, len = n_prompt +
 * n_tokens, reward and behaviour_logp from completion i, group = group_id, ref_logp NULL.
 * The pointers stay valid until gbuf_group_free(g). g must come from gbuf_pop_batch (its
 * allocation stores each sequence contiguously). seqs holds g->n_completions entries. */
void gbuf_group_seqs(const gbuf_group *g, int group_id, loss_seq *seqs);

/* ---- queries ---- */

int gbuf_count(const gbuf *b);
int gbuf_capacity(const gbuf *b);
void gbuf_get_stats(const gbuf *b, gbuf_stats *out);

#endif
