/* trainer.h - the single-process training run: SFT warm start, optional RAFT, then RL.
 *
 * One trainer owns the policy, the optional frozen reference, the optimizer, the task's data
 * cursor and the sampling RNG. trainer_step advances by exactly one optimizer step of the
 * current phase, logs one metrics record, evaluates and checkpoints on schedule.
 *
 * Phases run in order: sft (sft_steps), raft (raft_steps), rl (rl_steps); a phase with 0
 * steps is skipped. The optimizer's moments restart at each phase (fresh AdamW with that
 * phase's learning rate and warm-up). At the start of rl the reference policy is frozen
 * (a copy of the policy, also written to OUT/reference/) unless beta == 0.
 *
 * Checkpoints: OUT/checkpoints/step-NNNNNN/ holds the policy (config.json,
 * model.safetensors, tokenizer.json), optimizer.safetensors (AdamW moments) and
 * trainer_state.json (step, phase, data cursor, RNG, settings, reference pointer).
 * OUT/checkpoints/latest names the newest one; it is replaced atomically after the folder is
 * complete, so a crash mid-write leaves the previous checkpoint as latest.
 * trainer_create with resume = 1 continues from latest with the same numbers an
 * uninterrupted run would produce (BLAS thread count held equal).
 */
#ifndef COHORT_TRAINER_H
#define COHORT_TRAINER_H

#include <stdint.h>
#include <stdio.h>

#include "err.h"
#include "loss.h"
#include "model.h"
#include "optim.h"
#include "sampler.h"
#include "stops.h"
#include "tasks.h"
#include "tokenizer.h"

typedef struct trainer_config {
    char out_dir[512];      /* run folder: metrics.jsonl, checkpoints/, reference/ */
    char task[32];          /* "addition", "countdown", "reverse", "sort" */
    task_config task_cfg;
    char init_from[512];    /* start from this checkpoint folder instead of random ("" = random) */
    model_config model;     /* used when init_from is empty */
    int model_from_config;  /* 1: `model` was given (--model-config) and is used as is; 0: the
                             * default, whose max_seq trainer_create raises so that the task's
                             * longest prompt plus max_new_tokens fits */
    uint64_t seed;

    int sft_steps, sft_batch;
    float sft_lr;
    int sft_warmup;
    int sft_demos;          /* > 0: SFT cycles through only this many demonstrations */
    float sft_until;        /* > 0: end SFT early once two evaluations in a row reach this
                             * held-out accuracy (sft_steps is then the maximum) */

    int raft_steps;
    float raft_threshold;   /* keep completions with reward >= this */

    int rl_steps;
    int prompts_per_step;   /* groups per RL step */
    int group_size;         /* G completions per prompt */
    float rl_lr;
    int rl_warmup;

    loss_config loss;       /* estimator, aggregation, clip, beta, entropy, temperature */
    optim_config optim;     /* betas, eps, weight decay, clip, schedule (lr set per phase) */
    sample_params sampling; /* temperature (kept equal to loss.temperature), top-k/p, max new */
    stops_list stop;        /* --stop: a completion also ends right after the token whose
                             * decoded text completes one of these (common/stops.h) */
    float format_weight;    /* reward = correct + format_weight * format */

    int eval_every;         /* evaluate every N steps (and at phase ends); 0 = never */
    int eval_size;          /* held-out prompts per evaluation (<= the task's set) */
    int ckpt_every;         /* checkpoint every N steps (and at the end); 0 = only at the end */
    int log_every_sft;      /* progress line every N SFT steps (RL prints every step) */
    int quiet;              /* no progress lines */
    char chat_template[512];/* cohort-learner: the Jinja template that renders prompt files'
                             * "messages" ("" = the policy's tokenizer_config.json) */
    char prompts_file[512]; /* cohort-learner: RL prompts from this JSON Lines file ("" =
                             * the task's generator); the settings record then says
                             * "task": "file" */
} trainer_config;

/* Defaults that learn 3-digit addition on this machine (see learning-calibration notes). */
trainer_config trainer_config_default(void);

typedef struct trainer trainer; /* opaque */

/* Build a trainer. resume = 1 loads OUT/checkpoints/latest (its settings replace the
 * algorithm settings in c, except step counts, which may be raised to train longer). */
int trainer_create(const trainer_config *c, int resume, trainer **out, coh_err *err);
void trainer_destroy(trainer *t);

/* Why a group was left out of training. The trainer itself drops only zero-signal groups
 * (dynamic sampling); the distributed learner counts the groups it refused before they reached
 * the buffer and hands those counts to trainer_step_groups, so every step's record carries
 * all of them. Names (metrics key "groups_dropped_by_reason"): "zero_signal", "stale",
 * "reward_failed", "invalid", "temperature", "lease_expired", "lease_lost". */
typedef enum trainer_drop_reason {
    TRAINER_DROP_ZERO_SIGNAL,  /* all rewards of the group equal (with --drop-zero-signal) */
    TRAINER_DROP_STALE,        /* sampled with a version older than max_staleness allows */
    TRAINER_DROP_REWARD_FAILED,/* the reward service could not score some items */
    TRAINER_DROP_INVALID,      /* malformed (shapes, token ids, non-finite numbers) */
    TRAINER_DROP_TEMPERATURE,  /* sampled at another temperature than the learner's */
    TRAINER_DROP_LEASE_EXPIRED,/* submitted after its lease expired */
    TRAINER_DROP_LEASE_LOST,   /* unknown actor or lease, lease returned or of a dead actor */
    TRAINER_DROP_N
} trainer_drop_reason;

const char *trainer_drop_name(int reason); /* "unknown" outside the enum */

/* Metrics of one step (the fields of DESIGN.md's metrics file). */
typedef struct trainer_metrics {
    long step;
    long version;
    const char *phase;
    double loss, reward_mean, reward_std, eval_accuracy; /* eval_accuracy < 0: not evaluated */
    double kl, clip_frac, entropy, grad_norm, lr;
    double learner_tokens_per_s, sampler_tokens_per_s, staleness_mean;
    double logp_max_abs_diff;
    int groups_used, groups_dropped, skipped;  /* groups_dropped: sum of dropped_by_reason */
    long dropped_by_reason[TRAINER_DROP_N];    /* this step's drops, by trainer_drop_reason */
    uint64_t seq_first, seq_last;  /* acceptance numbers of the groups trained (0 0: none) */
    int checkpointed;              /* 1 when this step wrote a checkpoint */
    double time_s;
} trainer_metrics;

/* 1 while steps remain. */
int trainer_has_next(const trainer *t);
/* One optimizer step (or a skipped step for non-finite numbers, reported in m->skipped). */
int trainer_step(trainer *t, trainer_metrics *m, coh_err *err);
/* One completion an actor sampled and the reward service scored. */
typedef struct trainer_completion {
    const int *tokens;            /* [len] completion ids (EOS included if sampled) */
    int len;
    const float *behaviour_logp;  /* [len] log-probs the actor sampled them with */
    double reward;
    long version;                 /* policy version it was sampled with */
} trainer_completion;

/* The scored completions of one prompt. */
typedef struct trainer_group {
    const int *prompt;            /* [prompt_len] ids, <bos> first */
    int prompt_len;
    int n;
    const trainer_completion *completions;
} trainer_group;

/* Change a hyper-parameter from the next step on: "lr" (RL learning rate), "beta",
 * "temperature" (sampling and loss), "entropy_coef", "eps_low", "eps_high". COH_EINVAL for
 * an unknown key, COH_ERANGE for a value out of range, COH_ESTATE for beta > 0 in a run that
 * keeps no reference policy. Not thread-safe against a running step. */
int trainer_set_hparam(trainer *t, const char *key, double value, coh_err *err);
/* 1 when the next step is an RL step (the phase that takes actors' groups). */
int trainer_in_rl(const trainer *t);
/* One RL step on groups sampled elsewhere (the distributed learner): the same update,
 * evaluation, metrics and checkpoints as trainer_step, with staleness_mean measured from
 * each completion's version (the version of a policy is its step count). The groups must
 * fit the configured batch (prompts_per_step x group_size sequences); they were validated
 * by the caller. COH_ESTATE outside the RL phase. */
int trainer_step_groups(trainer *t, const trainer_group *groups, int n, trainer_metrics *m,
                        coh_err *err);
/* The same, for the distributed learner: refused[TRAINER_DROP_N] (may be NULL) are the
 * groups refused since the previous step, added to this step's dropped_by_reason; seq_first
 * and seq_last (the acceptance numbers of the groups, 0 0 when none) go to the metrics
 * record, so that a log proves which accepted groups each step trained. */
int trainer_step_groups_ex(trainer *t, const trainer_group *groups, int n,
                           const long *refused, uint64_t seq_first, uint64_t seq_last,
                           trainer_metrics *m, coh_err *err);
/* A file written into every checkpoint folder from now on (before OUT/checkpoints/latest
 * names it), e.g. the learner service's cluster state: name is a plain file name, text is
 * copied. NULL text stops writing it. Call only while no step runs. */
int trainer_set_checkpoint_file(trainer *t, const char *name, const char *text, coh_err *err);
/* The folder of the newest checkpoint (OUT/checkpoints/step-NNNNNN) into buf, or COH_ENOTFOUND
 * when there is none. */
int trainer_latest_checkpoint(const trainer *t, char *buf, size_t cap, coh_err *err);
/* Greedy accuracy on the first n held-out prompts (n <= 0: eval_size). */
int trainer_evaluate(trainer *t, int n, double *accuracy, coh_err *err);
/* Write a checkpoint of the current state now. */
int trainer_checkpoint(trainer *t, coh_err *err);

long trainer_current_step(const trainer *t);
long trainer_total_steps(const trainer *t);
/* The effective configuration (after --resume applied the checkpoint's settings). */
const trainer_config *trainer_get_config(const trainer *t);
const tokenizer *trainer_tokenizer(const trainer *t);
model *trainer_policy(trainer *t);

#endif
