/* loss.h - the learning rule of DESIGN.md: advantages, clipped surrogate, k3 KL, entropy,
 * aggregation, and the supervised (sft) loss, with its exact gradient w.r.t. the logits.
 *
 * Batch layout (the same as model.h): B sequences padded to T tokens. Sequence b holds
 * tokens[0..len) of which tokens[prompt_len..len) are the completion; completion token k
 * (token index prompt_len + k) is predicted by the logits row (b, prompt_len + k - 1).
 * Per-token arrays indexed by completion token use the [B, T] layout: entry b*T + k.
 *
 * Per completion token t (RL mode):
 *   logp_t   = log softmax(logits / temperature)[token]
 *   r_t      = exp(logp_t - behaviour_logp_t)
 *   surr_t   = min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t)
 *   kl_t     = exp(ref_t - logp_t) - (ref_t - logp_t) - 1            (k3; only if beta > 0
 *                                                                      and KL is in the loss)
 *   loss_t   = -(surr_t - beta kl_t) - entropy_coef * entropy_t
 * SFT mode: loss_t = -logp_t - entropy_coef * entropy_t (advantage 1, no ratio, no KL).
 * Aggregation: token_mean (sum / total completion tokens), seq_mean_token_mean (mean over
 * sequences of each sequence's token mean), constant (sum / (B * max_new_tokens)).
 * reinforce_pp puts the KL into the reward instead (see loss_advantages), so its loss has
 * no KL term.
 */
#ifndef COHORT_LOSS_H
#define COHORT_LOSS_H

#include "err.h"

typedef enum { EST_GRPO, EST_DRGRPO, EST_RLOO, EST_REINFORCE, EST_REINFORCE_PP } loss_estimator;
typedef enum { AGG_TOKEN_MEAN, AGG_SEQ_MEAN_TOKEN_MEAN, AGG_CONSTANT } loss_aggregation;
typedef enum { LOSS_RL, LOSS_SFT } loss_mode;

#define LOSS_GRPO_EPS 1e-4

typedef struct loss_config {
    loss_mode mode;
    loss_estimator estimator;
    loss_aggregation aggregation;
    float eps_low, eps_high;  /* clip range [1 - eps_low, 1 + eps_high] */
    float beta;               /* KL weight; 0 = no reference needed */
    float entropy_coef;
    float temperature;        /* logits are divided by it */
    int max_new_tokens;       /* for AGG_CONSTANT */
    int drop_zero_signal;     /* dynamic sampling: drop groups whose rewards are all equal */
} loss_config;

/* grpo, token_mean, eps 0.2/0.2, beta 0, entropy 0, temperature 1, max_new_tokens 16. */
loss_config loss_config_default(void);

/* Names as on the command line and in metrics: "grpo", "drgrpo", "rloo", "reinforce",
 * "reinforce_pp"; "token_mean", "seq_mean_token_mean", "constant"; "rl", "sft".
 * Parsers return COH_EINVAL with the list of valid names. */
const char *loss_estimator_name(loss_estimator e);
const char *loss_aggregation_name(loss_aggregation a);
const char *loss_mode_name(loss_mode m);
int loss_parse_estimator(const char *s, loss_estimator *out, coh_err *err);
int loss_parse_aggregation(const char *s, loss_aggregation *out, coh_err *err);
int loss_parse_mode(const char *s, loss_mode *out, coh_err *err);
/* 1 when this configuration needs reference log-probabilities (beta > 0, RL mode). */
int loss_needs_ref(const loss_config *c);

/* Advantages of one group of G rewards (grpo, drgrpo, rloo, reinforce):
 *   grpo   A_i = (R_i - mean) / (std + 1e-4), std with divisor G - 1; A = 0 when G = 1
 *   drgrpo A_i = R_i - mean
 *   rloo   A_i = R_i - mean of the other G - 1 (A = 0 when G = 1)
 *   reinforce A_i = R_i
 * EST_REINFORCE_PP is refused here (it needs token KL: use loss_advantages). */
int loss_group_advantages(loss_estimator est, const double *rewards, int G, double *adv,
                          coh_err *err);

/* One sequence of a batch. */
typedef struct loss_seq {
    const int *tokens;           /* [len] the whole sequence (prompt then completion) */
    int group;                   /* sequences with equal group ids form one group */
    int prompt_len;              /* >= 1 */
    int len;                     /* total tokens, prompt_len < len <= T */
    double reward;
    const float *behaviour_logp; /* [len - prompt_len]; required in RL mode */
    const float *ref_logp;       /* [len - prompt_len]; required when loss_needs_ref */
} loss_seq;

typedef struct loss_adv_stats {
    int groups;              /* groups in the batch */
    int zero_signal_groups;  /* groups whose rewards were all equal */
    int dropped_groups;      /* of those, dropped (drop_zero_signal) */
    int used_seqs;           /* sequences whose weight is not zero */
} loss_adv_stats;

/* Per-token advantages adv[b*T + k] for every completion token of the batch (other entries
 * are 0), and a mask use[b] (1 = sequence takes part in the loss; 0 = its group was
 * dropped). Groups are formed from loss_seq.group (need not be contiguous). A group whose
 * rewards are all equal (a group of one included) is zero-signal: counted, its group-relative
 * advantages are exactly 0, and with drop_zero_signal its sequences get use 0 and adv 0. For reinforce_pp: per-token reward
 *   R_{b,k} = reward_b * [k == last] - beta * (behaviour_logp - ref_logp),
 * returns summed from k to the end, then whitened (mean 0, std 1) over every completion
 * token of the batch. In SFT mode every advantage is 1 and every use[b] is 1. */
int loss_advantages(const loss_config *c, const loss_seq *seqs, int B, int T, float *adv,
                    int *use, loss_adv_stats *st, coh_err *err);

typedef struct loss_stats {
    double loss;          /* the aggregated loss */
    double kl;            /* mean k3 KL over completion tokens (0 without reference) */
    double clip_frac;     /* fraction of tokens where the clipped branch was taken */
    double entropy;       /* mean entropy over completion tokens */
    double ratio_mean;    /* mean r_t */
    double logp_mean;     /* mean logp_t */
    double max_abs_logp_diff; /* max |logp_t - behaviour_logp_t| (log-prob parity) */
    long tokens;          /* completion tokens that took part */
} loss_stats;

/* Loss of the batch and its gradient. logits [B, T, V] from model_forward; dlogits
 * [B, T, V] is OVERWRITTEN (rows without a loss term are zero). adv and use from
 * loss_advantages (use may be NULL: every sequence takes part; adv may be NULL in SFT mode,
 * where it is not read). The aggregation denominators count only sequences with use[b] = 1
 * (constant: used sequences x max_new_tokens). Fails with COH_ENONFINITE (naming sequence and token) when an input
 * log-probability or advantage is not finite; dlogits is then all zero. */
int loss_compute(const loss_config *c, const loss_seq *seqs, int B, int T, const float *adv,
                 const int *use, const float *logits, int V, float *dlogits, loss_stats *st,
                 coh_err *err);

#endif
