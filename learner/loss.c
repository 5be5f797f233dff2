/* loss.c - the learning rule (see loss.h and DESIGN.md "Learning rule").
 *
 * loss_advantages turns rewards into per-token advantages (group-relative estimators, or
 * reinforce_pp's KL-shaped, batch-whitened returns) and decides which sequences take part.
 * loss_compute evaluates the clipped surrogate / k3 KL / entropy (or the SFT cross-entropy)
 * per completion token, aggregates it, and writes the exact gradient w.r.t. the logits: the
 * per-token derivatives d loss / d logp and d loss / d entropy go through sm_backward.
 * Everything is accumulated in double; inputs are validated before anything is written.
 */
#include "loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "softmax.h"

#define LOSS_WHITEN_EPS 1e-8

/* ---- configuration and names ---- */

loss_config loss_config_default(void)
{
    loss_config c;
    memset(&c, 0, sizeof c);
    c.mode = LOSS_RL;
    c.estimator = EST_GRPO;
    c.aggregation = AGG_TOKEN_MEAN;
    c.eps_low = 0.2f;
    c.eps_high = 0.2f;
    c.beta = 0.0f;
    c.entropy_coef = 0.0f;
    c.temperature = 1.0f;
    c.max_new_tokens = 16;
    c.drop_zero_signal = 0;
    return c;
}

static const char *const estimator_names[] = {"grpo", "drgrpo", "rloo", "reinforce",
                                              "reinforce_pp"};
static const char *const aggregation_names[] = {"token_mean", "seq_mean_token_mean",
                                                "constant"};
static const char *const mode_names[] = {"rl", "sft"};

#define N_ESTIMATORS ((int)(sizeof estimator_names / sizeof estimator_names[0]))
#define N_AGGREGATIONS ((int)(sizeof aggregation_names / sizeof aggregation_names[0]))
#define N_MODES ((int)(sizeof mode_names / sizeof mode_names[0]))

const char *loss_estimator_name(loss_estimator e)
{
    return (int)e >= 0 && (int)e < N_ESTIMATORS ? estimator_names[e] : "unknown";
}

const char *loss_aggregation_name(loss_aggregation a)
{
    return (int)a >= 0 && (int)a < N_AGGREGATIONS ? aggregation_names[a] : "unknown";
}

const char *loss_mode_name(loss_mode m)
{
    return (int)m >= 0 && (int)m < N_MODES ? mode_names[m] : "unknown";
}

/* Index of s in names[0..n), or -1. */
static int find_name(const char *s, const char *const *names, int n)
{
    if (!s)
        return -1;
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

int loss_parse_estimator(const char *s, loss_estimator *out, coh_err *err)
{
    int i = find_name(s, estimator_names, N_ESTIMATORS);
    if (i < 0)
        return coh_fail(err, COH_EINVAL,
                        "unknown advantage estimator \"%s\"; valid estimators are grpo, drgrpo, "
                        "rloo, reinforce, reinforce_pp",
                        s ? s : "(null)");
    *out = (loss_estimator)i;
    return COH_OK;
}

int loss_parse_aggregation(const char *s, loss_aggregation *out, coh_err *err)
{
    int i = find_name(s, aggregation_names, N_AGGREGATIONS);
    if (i < 0)
        return coh_fail(err, COH_EINVAL,
                        "unknown loss aggregation \"%s\"; valid aggregations are token_mean, "
                        "seq_mean_token_mean, constant",
                        s ? s : "(null)");
    *out = (loss_aggregation)i;
    return COH_OK;
}

int loss_parse_mode(const char *s, loss_mode *out, coh_err *err)
{
    int i = find_name(s, mode_names, N_MODES);
    if (i < 0)
        return coh_fail(err, COH_EINVAL, "unknown loss mode \"%s\"; valid modes are rl, sft",
                        s ? s : "(null)");
    *out = (loss_mode)i;
    return COH_OK;
}

int loss_needs_ref(const loss_config *c)
{
    return c && c->mode == LOSS_RL && c->beta > 0.0f;
}

/* ---- validation helpers ---- */

static int check_config(const loss_config *c, coh_err *err)
{
    if (!c)
        return coh_fail(err, COH_EINVAL, "loss configuration is NULL");
    if (c->mode != LOSS_RL && c->mode != LOSS_SFT)
        return coh_fail(err, COH_EINVAL, "loss mode %d is not one of rl, sft", (int)c->mode);
    if ((int)c->estimator < 0 || (int)c->estimator >= N_ESTIMATORS)
        return coh_fail(err, COH_EINVAL,
                        "advantage estimator %d is not one of grpo, drgrpo, rloo, reinforce, "
                        "reinforce_pp",
                        (int)c->estimator);
    if ((int)c->aggregation < 0 || (int)c->aggregation >= N_AGGREGATIONS)
        return coh_fail(err, COH_EINVAL,
                        "loss aggregation %d is not one of token_mean, seq_mean_token_mean, "
                        "constant",
                        (int)c->aggregation);
    if (!(c->temperature > 0.0f) || !isfinite(c->temperature))
        return coh_fail(err, COH_EINVAL, "temperature is %g; it must be a finite number > 0",
                        (double)c->temperature);
    if (!(c->eps_low >= 0.0f && c->eps_low < 1.0f))
        return coh_fail(err, COH_EINVAL, "eps_low is %g; the clip range needs 0 <= eps_low < 1",
                        (double)c->eps_low);
    if (!(c->eps_high >= 0.0f) || !isfinite(c->eps_high))
        return coh_fail(err, COH_EINVAL, "eps_high is %g; it must be a finite number >= 0",
                        (double)c->eps_high);
    if (!(c->beta >= 0.0f) || !isfinite(c->beta))
        return coh_fail(err, COH_EINVAL, "beta (KL weight) is %g; it must be a finite number >= 0",
                        (double)c->beta);
    if (!isfinite(c->entropy_coef))
        return coh_fail(err, COH_EINVAL, "entropy_coef is %g; it must be finite",
                        (double)c->entropy_coef);
    if (c->aggregation == AGG_CONSTANT && c->max_new_tokens < 1)
        return coh_fail(err, COH_EINVAL,
                        "max_new_tokens is %d; the constant aggregation divides by it, so it "
                        "must be >= 1",
                        c->max_new_tokens);
    return COH_OK;
}

static int check_batch_dims(const loss_seq *seqs, int B, int T, coh_err *err)
{
    if (B < 1 || T < 2)
        return coh_fail(err, COH_ESHAPE,
                        "batch of %d sequences padded to %d tokens; need at least 1 sequence "
                        "and 2 tokens (one prompt, one completion token)",
                        B, T);
    if (!seqs)
        return coh_fail(err, COH_EINVAL, "sequence array is NULL for a batch of %d", B);
    return COH_OK;
}

/* Shape of one sequence: 1 <= prompt_len < len <= T. */
static int check_seq_shape(const loss_seq *s, int b, int T, coh_err *err)
{
    if (s->prompt_len < 1)
        return coh_fail(err, COH_ESHAPE,
                        "sequence %d: prompt_len is %d; a completion token needs at least one "
                        "token before it, so prompt_len must be >= 1",
                        b, s->prompt_len);
    if (s->len <= s->prompt_len)
        return coh_fail(err, COH_ESHAPE,
                        "sequence %d: len %d is not greater than prompt_len %d; the sequence has "
                        "no completion tokens",
                        b, s->len, s->prompt_len);
    if (s->len > T)
        return coh_fail(err, COH_ESHAPE,
                        "sequence %d: len %d exceeds the padded batch length T = %d", b, s->len,
                        T);
    return COH_OK;
}

/* ---- advantages ---- */

int loss_group_advantages(loss_estimator est, const double *rewards, int G, double *adv,
                          coh_err *err)
{
    if (est == EST_REINFORCE_PP)
        return coh_fail(err, COH_EINVAL,
                        "reinforce_pp advantages depend on per-token KL; use loss_advantages, "
                        "not loss_group_advantages");
    if ((int)est < 0 || (int)est >= N_ESTIMATORS)
        return coh_fail(err, COH_EINVAL, "advantage estimator %d is unknown", (int)est);
    if (G < 1 || !rewards || !adv)
        return coh_fail(err, COH_EINVAL, "group of %d rewards (need G >= 1 and non-NULL arrays)",
                        G);
    double sum = 0.0;
    for (int i = 0; i < G; i++) {
        if (!isfinite(rewards[i]))
            return coh_fail(err, COH_ENONFINITE,
                            "reward %d of the group is %g; rewards must be finite numbers", i,
                            rewards[i]);
        sum += rewards[i];
    }
    double mean = sum / G;
    switch (est) {
    case EST_GRPO: {
        if (G == 1) {
            adv[0] = 0.0;
            break;
        }
        double ss = 0.0;
        for (int i = 0; i < G; i++)
            ss += (rewards[i] - mean) * (rewards[i] - mean);
        double sd = sqrt(ss / (G - 1));
        for (int i = 0; i < G; i++)
            adv[i] = (rewards[i] - mean) / (sd + LOSS_GRPO_EPS);
        break;
    }
    case EST_DRGRPO:
        for (int i = 0; i < G; i++)
            adv[i] = rewards[i] - mean;
        break;
    case EST_RLOO:
        for (int i = 0; i < G; i++)
            adv[i] = G == 1 ? 0.0 : rewards[i] - (sum - rewards[i]) / (G - 1);
        break;
    case EST_REINFORCE:
        for (int i = 0; i < G; i++)
            adv[i] = rewards[i];
        break;
    case EST_REINFORCE_PP:
        break; /* refused above */
    }
    return COH_OK;
}

/* 1 when no sequence before b has b's group id (b leads its group). */
static int leads_group(const loss_seq *seqs, int b)
{
    for (int j = 0; j < b; j++)
        if (seqs[j].group == seqs[b].group)
            return 0;
    return 1;
}

/* 1 when the group of sequence b is zero-signal (all its rewards equal). O(B). */
static int in_zero_signal_group(const loss_seq *seqs, int B, int b)
{
    for (int j = 0; j < B; j++)
        if (seqs[j].group == seqs[b].group && seqs[j].reward != seqs[b].reward)
            return 0;
    return 1;
}

/* Group-relative estimators: one advantage per sequence, broadcast over its tokens. */
static int group_relative(const loss_config *c, const loss_seq *seqs, int B, int T, float *adv,
                          coh_err *err)
{
    if (B < 1)
        return COH_OK;
    int *idx = malloc((size_t)B * sizeof *idx);
    double *r = malloc((size_t)B * sizeof *r);
    double *a = malloc((size_t)B * sizeof *a);
    int rc = COH_OK;
    if (!idx || !r || !a) {
        rc = coh_fail(err, COH_ENOMEM, "out of memory for the advantages of %d sequences", B);
        goto out;
    }
    for (int b = 0; b < B; b++) {
        if (!leads_group(seqs, b))
            continue;
        int G = 0;
        for (int j = b; j < B; j++)
            if (seqs[j].group == seqs[b].group) {
                idx[G] = j;
                r[G] = seqs[j].reward;
                G++;
            }
        rc = loss_group_advantages(c->estimator, r, G, a, err);
        if (rc != COH_OK)
            goto out; /* rewards were validated before, so this is not reached in practice */
        for (int i = 0; i < G; i++) {
            const loss_seq *s = &seqs[idx[i]];
            /* an all-equal group has no signal: its relative advantage is exactly 0 (the mean
             * of equal doubles can differ from them by rounding) */
            double ai = a[i];
            if (c->estimator != EST_REINFORCE && in_zero_signal_group(seqs, B, idx[i]))
                ai = 0.0;
            for (int k = 0; k < s->len - s->prompt_len; k++)
                adv[(size_t)idx[i] * T + k] = (float)ai;
        }
    }
out:
    free(idx);
    free(r);
    free(a);
    return rc;
}

/* reinforce_pp: KL-shaped per-token rewards, reward-to-go, whitened over the used tokens. */
static int reinforce_pp(const loss_config *c, const loss_seq *seqs, int B, int T, float *adv,
                        const int *use, coh_err *err)
{
    int with_kl = c->beta > 0.0f;
    double sum = 0.0;
    long n = 0;
    for (int b = 0; b < B; b++) {
        const loss_seq *s = &seqs[b];
        int nc = s->len - s->prompt_len;
        if (!use[b])
            continue;
        if (with_kl && (!s->behaviour_logp || !s->ref_logp))
            return coh_fail(err, COH_EINVAL,
                            "sequence %d: reinforce_pp with beta > 0 needs both behaviour and "
                            "reference log-probabilities, but %s is NULL",
                            b, !s->behaviour_logp ? "behaviour_logp" : "ref_logp");
        double ret = 0.0;
        for (int k = nc - 1; k >= 0; k--) {
            double rk = k == nc - 1 ? s->reward : 0.0;
            if (with_kl) {
                double beh = s->behaviour_logp[k], ref = s->ref_logp[k];
                if (!isfinite(beh))
                    return coh_fail(err, COH_ENONFINITE,
                                    "sequence %d token %d: behaviour log-prob is %g; the actor "
                                    "must report finite log-probabilities of the tokens it sampled",
                                    b, k, beh);
                if (!isfinite(ref))
                    return coh_fail(err, COH_ENONFINITE,
                                    "sequence %d token %d: reference log-prob is %g; the "
                                    "reference model produced a non-finite value",
                                    b, k, ref);
                rk -= (double)c->beta * (beh - ref);
            }
            ret += rk;
            adv[(size_t)b * T + k] = (float)ret;
            sum += adv[(size_t)b * T + k]; /* the stored value, as the variance pass reads */
            n++;
        }
    }
    if (n == 0)
        return COH_OK;
    double mean = sum / (double)n;
    double ss = 0.0;
    for (int b = 0; b < B; b++) {
        if (!use[b])
            continue;
        for (int k = 0; k < seqs[b].len - seqs[b].prompt_len; k++) {
            double d = (double)adv[(size_t)b * T + k] - mean;
            ss += d * d;
        }
    }
    double denom = n > 1 ? sqrt(ss / (double)n) + LOSS_WHITEN_EPS : 1.0;
    for (int b = 0; b < B; b++) {
        if (!use[b])
            continue;
        for (int k = 0; k < seqs[b].len - seqs[b].prompt_len; k++) {
            float *x = &adv[(size_t)b * T + k];
            *x = (float)(((double)*x - mean) / denom);
        }
    }
    return COH_OK;
}

int loss_advantages(const loss_config *c, const loss_seq *seqs, int B, int T, float *adv,
                    int *use, loss_adv_stats *st, coh_err *err)
{
    int rc = check_config(c, err);
    if (rc != COH_OK)
        return rc;
    if ((rc = check_batch_dims(seqs, B, T, err)) != COH_OK)
        return rc;
    if (!adv || !use)
        return coh_fail(err, COH_EINVAL, "advantage or use output array is NULL");
    for (int b = 0; b < B; b++) {
        if ((rc = check_seq_shape(&seqs[b], b, T, err)) != COH_OK)
            return rc;
        if (c->mode == LOSS_RL && !isfinite(seqs[b].reward))
            return coh_fail(err, COH_ENONFINITE,
                            "sequence %d (group %d): reward is %g; rewards must be finite "
                            "numbers (a failed verification must be kept out of the batch)",
                            b, seqs[b].group, seqs[b].reward);
    }

    loss_adv_stats s;
    memset(&s, 0, sizeof s);
    memset(adv, 0, (size_t)B * T * sizeof *adv);

    /* groups, zero-signal detection, dropping (SFT has no groups to judge) */
    int rl = c->mode == LOSS_RL;
    for (int b = 0; b < B; b++) {
        int zero = rl && in_zero_signal_group(seqs, B, b);
        if (leads_group(seqs, b)) {
            s.groups++;
            s.zero_signal_groups += zero;
            s.dropped_groups += zero && c->drop_zero_signal;
        }
        use[b] = !(zero && c->drop_zero_signal);
        s.used_seqs += use[b];
    }

    if (c->mode == LOSS_SFT) {
        for (int b = 0; b < B; b++)
            for (int k = 0; k < seqs[b].len - seqs[b].prompt_len; k++)
                adv[(size_t)b * T + k] = 1.0f;
    } else if (c->estimator == EST_REINFORCE_PP) {
        rc = reinforce_pp(c, seqs, B, T, adv, use, err);
    } else {
        rc = group_relative(c, seqs, B, T, adv, err);
        for (int b = 0; b < B && rc == COH_OK; b++)
            if (!use[b])
                memset(adv + (size_t)b * T, 0, (size_t)T * sizeof *adv);
    }
    if (rc != COH_OK) {
        memset(adv, 0, (size_t)B * T * sizeof *adv);
        return rc;
    }
    if (st)
        *st = s;
    return COH_OK;
}

/* ---- loss and gradient ---- */

/* Everything about the inputs that can be checked without the logits: shapes, targets,
 * required arrays, finiteness of advantages and log-probabilities of used sequences. */
static int check_loss_inputs(const loss_config *c, const loss_seq *seqs, int B, int T,
                             const float *adv, const int *use, int V, int need_ref,
                             coh_err *err)
{
    int rl = c->mode == LOSS_RL;
    for (int b = 0; b < B; b++) {
        const loss_seq *s = &seqs[b];
        int rc = check_seq_shape(s, b, T, err);
        if (rc != COH_OK)
            return rc;
        if (use && !use[b])
            continue;
        if (!s->tokens)
            return coh_fail(err, COH_EINVAL, "sequence %d: token array is NULL", b);
        for (int t = s->prompt_len; t < s->len; t++)
            if (s->tokens[t] < 0 || s->tokens[t] >= V)
                return coh_fail(err, COH_EINVAL,
                                "sequence %d token %d (completion token %d): id %d is outside "
                                "the vocabulary [0, %d)",
                                b, t, t - s->prompt_len, s->tokens[t], V);
        if (!rl)
            continue;
        if (!s->behaviour_logp)
            return coh_fail(err, COH_EINVAL,
                            "sequence %d: behaviour log-probabilities are missing; RL mode needs "
                            "the log-probability the actor sampled each completion token with",
                            b);
        if (need_ref && !s->ref_logp)
            return coh_fail(err, COH_EINVAL,
                            "sequence %d: reference log-probabilities are missing; beta = %g > 0 "
                            "needs them (set beta to 0 to train without a reference)",
                            b, (double)c->beta);
        for (int k = 0; k < s->len - s->prompt_len; k++) {
            float a = adv[(size_t)b * T + k];
            if (!isfinite(a))
                return coh_fail(err, COH_ENONFINITE,
                                "sequence %d token %d: advantage is %g; check the rewards of "
                                "group %d",
                                b, k, (double)a, s->group);
            if (!isfinite(s->behaviour_logp[k]))
                return coh_fail(err, COH_ENONFINITE,
                                "sequence %d token %d: behaviour log-prob is %g; the actor must "
                                "report finite log-probabilities of the tokens it sampled",
                                b, k, (double)s->behaviour_logp[k]);
            if (need_ref && !isfinite(s->ref_logp[k]))
                return coh_fail(err, COH_ENONFINITE,
                                "sequence %d token %d: reference log-prob is %g; the reference "
                                "model produced a non-finite value",
                                b, k, (double)s->ref_logp[k]);
        }
    }
    return COH_OK;
}

/* Per-token loss and its derivatives w.r.t. logp and entropy (before aggregation weight). */
typedef struct token_terms {
    double loss, d_logp, d_ent;
    double ratio, kl;
    int clipped;
} token_terms;

static void rl_token(const loss_config *c, int kl_in_loss, int need_ref, double logp, double H,
                     double beh, double ref, double A, token_terms *o)
{
    double r = exp(logp - beh);
    double lo = 1.0 - (double)c->eps_low, hi = 1.0 + (double)c->eps_high;
    double rc = r < lo ? lo : (r > hi ? hi : r);
    double unclipped = r * A, clipped = rc * A;
    double surr, d_surr;
    if (clipped < unclipped) { /* the clip cut the objective: no gradient through r */
        surr = clipped;
        d_surr = 0.0;
        o->clipped = 1;
    } else {
        surr = unclipped;
        d_surr = r * A;
        o->clipped = 0;
    }
    double kl = 0.0, d_kl = 0.0;
    if (need_ref) {
        double e = exp(ref - logp);
        kl = e - (ref - logp) - 1.0;
        d_kl = 1.0 - e;
    }
    double beta = kl_in_loss ? (double)c->beta : 0.0;
    o->loss = -(surr - beta * kl) - (double)c->entropy_coef * H;
    o->d_logp = -d_surr + beta * d_kl;
    o->d_ent = -(double)c->entropy_coef;
    o->ratio = r;
    o->kl = kl;
}

int loss_compute(const loss_config *c, const loss_seq *seqs, int B, int T, const float *adv,
                 const int *use, const float *logits, int V, float *dlogits, loss_stats *st,
                 coh_err *err)
{
    int rc = check_batch_dims(seqs, B, T, err);
    if (rc != COH_OK)
        return rc;
    if (V < 1)
        return coh_fail(err, COH_ESHAPE, "vocabulary size is %d; it must be >= 1", V);
    if (!logits || !dlogits)
        return coh_fail(err, COH_EINVAL, "logits or dlogits is NULL");
    size_t n_logits = (size_t)B * (size_t)T * (size_t)V;
    memset(dlogits, 0, n_logits * sizeof *dlogits);
    if ((rc = check_config(c, err)) != COH_OK)
        return rc;
    int rl = c->mode == LOSS_RL;
    if (rl && !adv)
        return coh_fail(err, COH_EINVAL, "advantages are NULL; RL mode needs loss_advantages");
    int need_ref = loss_needs_ref(c);
    int kl_in_loss = need_ref && c->estimator != EST_REINFORCE_PP;
    if ((rc = check_loss_inputs(c, seqs, B, T, adv, use, V, need_ref, err)) != COH_OK)
        return rc;

    /* aggregation denominators count only the sequences and tokens that take part */
    long n_tok = 0;
    int n_seq = 0;
    for (int b = 0; b < B; b++)
        if (!use || use[b]) {
            n_seq++;
            n_tok += seqs[b].len - seqs[b].prompt_len;
        }

    loss_stats s;
    memset(&s, 0, sizeof s);
    double sum_kl = 0.0, sum_ent = 0.0, sum_ratio = 0.0, sum_logp = 0.0;
    long n_clipped = 0;
    for (int b = 0; b < B && n_tok > 0; b++) {
        const loss_seq *sq = &seqs[b];
        if (use && !use[b])
            continue;
        int nc = sq->len - sq->prompt_len;
        double w;
        switch (c->aggregation) {
        case AGG_SEQ_MEAN_TOKEN_MEAN:
            w = 1.0 / ((double)n_seq * nc);
            break;
        case AGG_CONSTANT:
            w = 1.0 / ((double)n_seq * c->max_new_tokens);
            break;
        case AGG_TOKEN_MEAN:
        default:
            w = 1.0 / (double)n_tok;
            break;
        }
        for (int k = 0; k < nc; k++) {
            int target = sq->tokens[sq->prompt_len + k];
            size_t row = ((size_t)b * T + (size_t)(sq->prompt_len + k - 1)) * (size_t)V;
            float logp_f, ent_f;
            sm_logp_entropy(logits + row, V, c->temperature, target, &logp_f, &ent_f);
            if (!isfinite(logp_f) || !isfinite(ent_f)) {
                memset(dlogits, 0, n_logits * sizeof *dlogits);
                return coh_fail(err, COH_ENONFINITE,
                                "sequence %d token %d: the logits row gives log-prob %g and "
                                "entropy %g; the model's output is not finite",
                                b, k, (double)logp_f, (double)ent_f);
            }
            double logp = logp_f, H = ent_f;
            token_terms tt;
            if (rl) {
                double beh = sq->behaviour_logp[k];
                double ref = need_ref ? (double)sq->ref_logp[k] : 0.0;
                rl_token(c, kl_in_loss, need_ref, logp, H, beh, ref, adv[(size_t)b * T + k], &tt);
                double diff = fabs(logp - beh);
                if (diff > s.max_abs_logp_diff)
                    s.max_abs_logp_diff = diff;
                if (!isfinite(tt.loss) || !isfinite(tt.d_logp)) {
                    memset(dlogits, 0, n_logits * sizeof *dlogits);
                    return coh_fail(err, COH_ENONFINITE,
                                    "sequence %d token %d: the loss overflowed (learner log-prob "
                                    "%g, behaviour %g, ratio %g, KL %g); the behaviour "
                                    "log-probabilities do not match this policy",
                                    b, k, logp, beh, tt.ratio, tt.kl);
                }
            } else {
                tt.loss = -logp - (double)c->entropy_coef * H;
                tt.d_logp = -1.0;
                tt.d_ent = -(double)c->entropy_coef;
                tt.ratio = 1.0;
                tt.kl = 0.0;
                tt.clipped = 0;
            }
            s.loss += w * tt.loss;
            sum_kl += tt.kl;
            sum_ent += H;
            sum_ratio += tt.ratio;
            sum_logp += logp;
            n_clipped += tt.clipped;
            float g_logp = (float)(w * tt.d_logp), g_ent = (float)(w * tt.d_ent);
            if (g_logp != 0.0f || g_ent != 0.0f)
                sm_backward(logits + row, V, c->temperature, target, g_logp, g_ent,
                            dlogits + row);
        }
    }
    if (n_tok > 0) {
        s.kl = sum_kl / (double)n_tok;
        s.clip_frac = (double)n_clipped / (double)n_tok;
        s.entropy = sum_ent / (double)n_tok;
        s.ratio_mean = sum_ratio / (double)n_tok;
        s.logp_mean = sum_logp / (double)n_tok;
    }
    s.tokens = n_tok;
    if (st)
        *st = s;
    return COH_OK;
}
