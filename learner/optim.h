/* optim.h - AdamW with decoupled weight decay, global grad-norm clipping, and the
 * learning-rate schedule (linear warm-up, then constant, linear or cosine decay).
 *
 * One AdamW step for parameter p with gradient g (after clipping), step count t >= 1:
 *   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *   mhat = m / (1 - b1^t);  vhat = v / (1 - b2^t)
 *   p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)     (wd only on decayed segments)
 * A non-finite gradient norm skips the step: parameters, moments and t are untouched.
 */
#ifndef COHORT_OPTIM_H
#define COHORT_OPTIM_H

#include <stddef.h>

#include "err.h"

typedef enum { SCHED_CONSTANT, SCHED_LINEAR, SCHED_COSINE } optim_schedule;

typedef struct optim_config {
    float lr;            /* peak learning rate */
    float beta1, beta2, eps;
    float weight_decay;
    float grad_clip;     /* max global L2 norm; <= 0 = off */
    int warmup_steps;    /* lr rises linearly from lr/warmup to lr over these steps */
    int total_steps;     /* for linear / cosine decay; <= 0 = no decay */
    optim_schedule schedule;
    float min_lr_ratio;  /* floor of the decay, as a fraction of lr */
} optim_config;

/* lr 1e-3, betas 0.9/0.99, eps 1e-8, wd 0.0, clip 1.0, no warm-up, constant. */
optim_config optim_config_default(void);
const char *optim_schedule_name(optim_schedule s);
int optim_parse_schedule(const char *s, optim_schedule *out, coh_err *err);

/* Learning rate for step (0-based count of completed steps). */
float optim_lr_at(const optim_config *c, long step);

/* Global L2 norm of g[0..n), accumulated in double. */
double optim_grad_norm(const float *g, size_t n);

/* A parameter range [offset, offset + n) and whether it is weight-decayed. */
typedef struct optim_segment {
    size_t offset, n;
    int decay;
} optim_segment;

typedef struct adamw adamw; /* opaque: moments m, v and the step count */

int adamw_create(size_t n_params, const optim_segment *segs, int n_segs, adamw **out,
                 coh_err *err);
void adamw_destroy(adamw *o);

typedef struct adamw_stats {
    double grad_norm;  /* before clipping */
    double clip_scale; /* factor applied to the gradient (1 = not clipped) */
    float lr;
    int skipped;       /* 1 when the step was skipped for a non-finite gradient */
} adamw_stats;

/* Clip grads (in place) to c->grad_clip, then one AdamW step with lr = lr_override if > 0,
 * else optim_lr_at(c, step). Returns COH_ENONFINITE (and changes nothing) when the gradient
 * holds a NaN or infinity. */
int adamw_step(adamw *o, const optim_config *c, float *params, float *grads, float lr_override,
               adamw_stats *st, coh_err *err);

/* Access for checkpoints: the moment slabs (n_params floats each) and completed steps. */
float *adamw_m(adamw *o);
float *adamw_v(adamw *o);
long adamw_steps(const adamw *o);
void adamw_set_steps(adamw *o, long t);
size_t adamw_size(const adamw *o);

#endif
