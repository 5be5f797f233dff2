/* softmax.h - per-row log-softmax quantities shared by the sampler, the loss and the tools.
 *
 * All functions work on the temperature-scaled distribution p = softmax(logits / T), the one
 * an actor samples from, so actors and learner compute the same log-probabilities.
 * Sums are accumulated in double. Rows of 256 logits or more (real vocabularies) take one
 * vectorised pass (kern.h: exponentials in float lanes, sums in double; log-probabilities
 * within about 1e-6 of the all-double result); shorter rows are computed in double throughout.
 * Pure functions: no allocation, no I/O.
 */
#ifndef COHORT_SOFTMAX_H
#define COHORT_SOFTMAX_H

/* log-sum-exp of logits[0..V) / temperature. */
double sm_logsumexp(const float *logits, int V, float temperature);

/* log p(target) and the entropy -sum p log p of softmax(logits / temperature).
 * Either output may be NULL. */
void sm_logp_entropy(const float *logits, int V, float temperature, int target,
                     float *logp, float *entropy);

/* Backward of  g_logp * log p(target) + g_ent * entropy  with respect to the raw logits:
 * ADDS into dlogits[0..V). (d/dz of log p_a = onehot(a) - p; of H = -p (log p + H);
 * z = logits / T, so both are divided by T.) */
void sm_backward(const float *logits, int V, float temperature, int target,
                 float g_logp, float g_ent, float *dlogits);

#endif
