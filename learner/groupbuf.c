/* groupbuf.c - bounded FIFO of validated scored groups (see groupbuf.h).
 *
 * A buffered group is ONE allocation, laid out as
 *   gbuf_group | gbuf_completion[G] | float logp[sum n_tokens] | int seq[G][n_prompt + n_tokens_i]
 * where seq i is the whole sequence (prompt, then completion i), so that the loss can point
 * at it without another copy (gbuf_group_seqs); prompt_tokens points at seq 0's prompt.
 * The queue is a ring of such pointers.
 */
#include "groupbuf.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct gbuf {
    gbuf_config cfg;
    gbuf_group **ring; /* [cfg.capacity], oldest at head */
    int head, count;

    uint64_t accepted;
    uint64_t refused[GBUF_DROP_N];
    uint64_t consumed_groups, consumed_completions;
    double staleness_sum;
    uint64_t staleness_max;
    double last_staleness_mean;
};

const char *gbuf_drop_reason_name(gbuf_drop_reason r)
{
    switch (r) {
    case GBUF_DROP_SHAPE: return "shape";
    case GBUF_DROP_TOKEN: return "token";
    case GBUF_DROP_LENGTH: return "length";
    case GBUF_DROP_LOGPROB: return "logprob";
    case GBUF_DROP_REWARD: return "reward";
    case GBUF_DROP_FUTURE: return "future_version";
    case GBUF_DROP_STALE: return "stale";
    case GBUF_DROP_FULL: return "full";
    case GBUF_DROP_NOMEM: return "nomem";
    case GBUF_DROP_LEASE: return "lease";
    case GBUF_DROP_N: break;
    }
    return "unknown";
}

/* ---- validation ---- */

int gbuf_config_check(const gbuf_config *c, coh_err *err)
{
    if (!c)
        return coh_fail(err, COH_EINVAL, "group buffer config is NULL");
    if (c->capacity < 1)
        return coh_fail(err, COH_EINVAL, "group buffer capacity %d must be >= 1", c->capacity);
    if (c->group_size < 1)
        return coh_fail(err, COH_EINVAL, "group_size %d must be >= 1", c->group_size);
    if (c->vocab_size < 1)
        return coh_fail(err, COH_EINVAL, "vocab_size %d must be >= 1", c->vocab_size);
    if (c->max_seq < 2)
        return coh_fail(err, COH_EINVAL, "max_seq %d must be >= 2", c->max_seq);
    if (c->max_new_tokens < 1)
        return coh_fail(err, COH_EINVAL, "max_new_tokens %d must be >= 1", c->max_new_tokens);
    if (c->max_staleness < 0)
        return coh_fail(err, COH_EINVAL, "max_staleness %d must be >= 0", c->max_staleness);
    return COH_OK;
}

/* gbuf_validate, also saying which counter a refusal belongs to. */
static int validate_(const gbuf_config *c, const gbuf_group *g, uint64_t cur,
                     gbuf_drop_reason *why, coh_err *err)
{
    *why = GBUF_DROP_SHAPE;
    int rc = gbuf_config_check(c, err);
    if (rc != COH_OK)
        return rc;
    if (!g)
        return coh_fail(err, COH_EINVAL, "group is NULL");
    if (g->n_completions <= 0 || !g->completions)
        return coh_fail(err, COH_EINVAL, "empty group: %d completions (group_size is %d)",
                        g->n_completions, c->group_size);
    if (g->n_completions != c->group_size)
        return coh_fail(err, COH_EINVAL, "group has %d completions, group_size is %d",
                        g->n_completions, c->group_size);
    if (g->n_prompt <= 0 || !g->prompt_tokens)
        return coh_fail(err, COH_EINVAL, "prompt_tokens: empty prompt (%d tokens)",
                        g->n_prompt);
    if (g->n_prompt >= c->max_seq) {
        *why = GBUF_DROP_LENGTH;
        return coh_fail(err, COH_EINVAL,
                        "prompt_tokens: prompt of %d tokens leaves no room for a completion "
                        "within max_seq %d",
                        g->n_prompt, c->max_seq);
    }
    for (int k = 0; k < g->n_prompt; k++) {
        int tok = g->prompt_tokens[k];
        if (tok < 0 || tok >= c->vocab_size) {
            *why = GBUF_DROP_TOKEN;
            return coh_fail(err, COH_EINVAL, "prompt_tokens[%d] = %d outside [0, %d)", k, tok,
                            c->vocab_size);
        }
    }

    for (int i = 0; i < g->n_completions; i++) {
        const gbuf_completion *x = &g->completions[i];
        if (x->n_tokens <= 0 || !x->tokens) {
            *why = GBUF_DROP_SHAPE;
            return coh_fail(err, COH_EINVAL, "completion %d: tokens: empty completion (%d tokens)",
                            i, x->n_tokens);
        }
        if (x->n_tokens > c->max_new_tokens) {
            *why = GBUF_DROP_LENGTH;
            return coh_fail(err, COH_EINVAL,
                            "completion %d: tokens: %d completion tokens exceed max_new_tokens %d",
                            i, x->n_tokens, c->max_new_tokens);
        }
        if (x->n_tokens > c->max_seq - g->n_prompt) {
            *why = GBUF_DROP_LENGTH;
            return coh_fail(err, COH_EINVAL,
                            "completion %d: tokens: prompt %d + completion %d tokens exceed "
                            "max_seq %d",
                            i, g->n_prompt, x->n_tokens, c->max_seq);
        }
        for (int k = 0; k < x->n_tokens; k++) {
            int tok = x->tokens[k];
            if (tok < 0 || tok >= c->vocab_size) {
                *why = GBUF_DROP_TOKEN;
                return coh_fail(err, COH_EINVAL, "completion %d: tokens[%d] = %d outside [0, %d)",
                                i, k, tok, c->vocab_size);
            }
        }
        if (x->n_logp != x->n_tokens || !x->logp) {
            *why = GBUF_DROP_SHAPE;
            return coh_fail(err, COH_EINVAL,
                            "completion %d: logprobs: %d behaviour log-probs for %d completion "
                            "tokens (need one per token)",
                            i, x->logp ? x->n_logp : 0, x->n_tokens);
        }
        for (int k = 0; k < x->n_logp; k++) {
            float lp = x->logp[k];
            if (!isfinite(lp)) {
                *why = GBUF_DROP_LOGPROB;
                return coh_fail(err, COH_EINVAL, "completion %d: logprobs[%d] is not finite (%g)",
                                i, k, (double)lp);
            }
            if (lp > 0.0f) {
                *why = GBUF_DROP_LOGPROB;
                return coh_fail(err, COH_EINVAL,
                                "completion %d: logprobs[%d] = %g is positive (not a "
                                "log-probability)",
                                i, k, (double)lp);
            }
        }
        if (!isfinite(x->reward)) {
            *why = GBUF_DROP_REWARD;
            return coh_fail(err, COH_EINVAL, "completion %d: reward is not finite (%g)", i,
                            x->reward);
        }
    }

    for (int i = 0; i < g->n_completions; i++) {
        uint64_t v = g->completions[i].version;
        if (v > cur) {
            *why = GBUF_DROP_FUTURE;
            return coh_fail(err, COH_ERANGE,
                            "completion %d: version %" PRIu64 " is newer than the learner's "
                            "current version %" PRIu64 " (from the future)",
                            i, v, cur);
        }
        if (cur - v > (uint64_t)c->max_staleness) {
            *why = GBUF_DROP_STALE;
            return coh_fail(err, COH_ESTATE,
                            "completion %d: version %" PRIu64 " is stale: %" PRIu64
                            " versions behind current version %" PRIu64 " (max_staleness %d)",
                            i, v, cur - v, cur, c->max_staleness);
        }
    }
    return COH_OK;
}

int gbuf_validate(const gbuf_config *c, const gbuf_group *g, uint64_t current_version,
                  coh_err *err)
{
    gbuf_drop_reason why;
    return validate_(c, g, current_version, &why, err);
}

/* ---- copies ---- */

/* One allocation holding a validated group (layout in the file comment); NULL if no memory. */
gbuf_group *gbuf_group_copy(const gbuf_group *g)
{
    int G = g->n_completions, P = g->n_prompt;
    size_t n_logp = 0, n_tok = 0;
    for (int i = 0; i < G; i++) {
        n_logp += (size_t)g->completions[i].n_tokens;
        n_tok += (size_t)P + (size_t)g->completions[i].n_tokens;
    }
    size_t off_comp = sizeof(gbuf_group);
    size_t off_logp = off_comp + (size_t)G * sizeof(gbuf_completion);
    size_t off_tok = off_logp + n_logp * sizeof(float);
    size_t total = off_tok + n_tok * sizeof(int);
    char *block = malloc(total);
    if (!block)
        return NULL;

    gbuf_group *out = (gbuf_group *)block;
    gbuf_completion *comps = (gbuf_completion *)(block + off_comp);
    float *logp = (float *)(block + off_logp);
    int *tok = (int *)(block + off_tok);
    *out = *g;
    out->completions = comps;
    out->prompt_tokens = tok;
    for (int i = 0; i < G; i++) {
        const gbuf_completion *x = &g->completions[i];
        comps[i] = *x;
        memcpy(tok, g->prompt_tokens, (size_t)P * sizeof *tok);
        memcpy(tok + P, x->tokens, (size_t)x->n_tokens * sizeof *tok);
        memcpy(logp, x->logp, (size_t)x->n_tokens * sizeof *logp);
        comps[i].tokens = tok + P;
        comps[i].logp = logp;
        comps[i].n_logp = x->n_tokens;
        tok += P + x->n_tokens;
        logp += x->n_tokens;
    }
    return out;
}

void gbuf_group_free(gbuf_group *g) { free(g); }

void gbuf_group_seqs(const gbuf_group *g, int group_id, loss_seq *seqs)
{
    for (int i = 0; i < g->n_completions; i++) {
        const gbuf_completion *x = &g->completions[i];
        seqs[i] = (loss_seq){
            .tokens = x->tokens - g->n_prompt, /* the prompt copy right before it */
            .group = group_id,
            .prompt_len = g->n_prompt,
            .len = g->n_prompt + x->n_tokens,
            .reward = x->reward,
            .behaviour_logp = x->logp,
            .ref_logp = NULL,
        };
    }
}

/* ---- lifecycle ---- */

int gbuf_create(const gbuf_config *c, gbuf **out, coh_err *err)
{
    if (!out)
        return coh_fail(err, COH_EINVAL, "gbuf_create: out is NULL");
    *out = NULL;
    int rc = gbuf_config_check(c, err);
    if (rc != COH_OK)
        return rc;
    gbuf *b = calloc(1, sizeof *b);
    if (!b)
        goto fail_nomem;
    b->cfg = *c;
    b->ring = calloc((size_t)c->capacity, sizeof *b->ring);
    if (!b->ring)
        goto fail_nomem;
    *out = b;
    return COH_OK;

fail_nomem:
    gbuf_destroy(b);
    return coh_fail(err, COH_ENOMEM, "group buffer of %d groups: out of memory", c->capacity);
}

void gbuf_destroy(gbuf *b)
{
    if (!b)
        return;
    if (b->ring)
        for (int i = 0; i < b->count; i++)
            free(b->ring[(b->head + i) % b->cfg.capacity]);
    free(b->ring);
    free(b);
}

/* ---- mutators ---- */

int gbuf_push(gbuf *b, const gbuf_group *g, uint64_t current_version, coh_err *err)
{
    if (!b)
        return coh_fail(err, COH_EINVAL, "gbuf_push: buffer is NULL");
    gbuf_drop_reason why;
    int rc = validate_(&b->cfg, g, current_version, &why, err);
    if (rc != COH_OK) {
        b->refused[why]++;
        return rc;
    }
    if (b->count == b->cfg.capacity) {
        b->refused[GBUF_DROP_FULL]++;
        return coh_fail(err, COH_EFULL,
                        "group buffer full (%d groups waiting for the next update): retry "
                        "after it",
                        b->count);
    }
    gbuf_group *copy = gbuf_group_copy(g);
    if (!copy) {
        b->refused[GBUF_DROP_NOMEM]++;
        return coh_fail(err, COH_ENOMEM, "group of prompt %" PRIu64 ": out of memory",
                        g->prompt);
    }
    b->ring[(b->head + b->count) % b->cfg.capacity] = copy;
    b->count++;
    b->accepted++;
    return COH_OK;
}

int gbuf_pop_batch(gbuf *b, int n, uint64_t current_version, gbuf_group **out)
{
    if (!b || n < 0 || (n > 0 && !out))
        return COH_EINVAL;
    int k = n < b->count ? n : b->count;
    double sum = 0.0;
    uint64_t n_comp = 0;
    for (int i = 0; i < k; i++) {
        gbuf_group *g = b->ring[b->head];
        b->ring[b->head] = NULL;
        b->head = (b->head + 1) % b->cfg.capacity;
        out[i] = g;
        for (int j = 0; j < g->n_completions; j++) {
            uint64_t v = g->completions[j].version;
            uint64_t s = current_version > v ? current_version - v : 0;
            sum += (double)s;
            if (s > b->staleness_max)
                b->staleness_max = s;
        }
        n_comp += (uint64_t)g->n_completions;
    }
    b->count -= k;
    if (k > 0) {
        b->consumed_groups += (uint64_t)k;
        b->consumed_completions += n_comp;
        b->staleness_sum += sum;
        b->last_staleness_mean = sum / (double)n_comp;
    }
    return k;
}

void gbuf_note_drop(gbuf *b, gbuf_drop_reason r)
{
    if (b && (int)r >= 0 && (int)r < GBUF_DROP_N)
        b->refused[r]++;
}

/* ---- queries ---- */

int gbuf_count(const gbuf *b) { return b ? b->count : 0; }

int gbuf_capacity(const gbuf *b) { return b ? b->cfg.capacity : 0; }

void gbuf_get_stats(const gbuf *b, gbuf_stats *out)
{
    if (!out)
        return;
    *out = (gbuf_stats){0};
    if (!b)
        return;
    out->accepted = b->accepted;
    for (int r = 0; r < GBUF_DROP_N; r++) {
        out->refused[r] = b->refused[r];
        out->refused_total += b->refused[r];
    }
    out->consumed_groups = b->consumed_groups;
    out->consumed_completions = b->consumed_completions;
    out->staleness_mean =
        b->consumed_completions ? b->staleness_sum / (double)b->consumed_completions : 0.0;
    out->staleness_max = b->staleness_max;
    out->last_staleness_mean = b->last_staleness_mean;
    out->count = b->count;
}
