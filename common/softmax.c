/* softmax.c - log-softmax, entropy and their backward for one logits row (see softmax.h). */
#include "softmax.h"

#include <math.h>

#include "kern.h"

/* Rows of at least SM_VEC_MIN logits (real vocabularies) take one vectorised pass
 * (kern_exp_sums: exp in float lanes, sums in double) for the max, the sum of exponentials
 * and the entropy together; shorter rows keep the scalar double-precision code. */
#define SM_VEC_MIN 256

static int sm_vec(int V, float temperature)
{
    return V >= SM_VEC_MIN && temperature > 0.0f && isfinite(temperature);
}

/* lse and entropy of one row in one pass (vector path). The shift is the float image of the
 * largest z, so the largest term is exactly exp(0); lse adds the shift in double. */
static void sm_stats_vec(const float *logits, int V, float temperature, double *lse, double *H)
{
    double inv_t = 1.0 / (double)temperature;
    float inv_tf = (float)inv_t;
    float xmax = kern_max_scaled(logits, V, 1.0f);
    float shift = xmax * inv_tf;
    double se, st;
    kern_exp_sums(logits, V, inv_tf, shift, &se, H ? &st : NULL);
    *lse = (double)xmax * inv_t + log(se);
    if (H) /* H = lse - sum p z = log(se) - sum e t / se */
        *H = log(se) - st / se;
}

double sm_logsumexp(const float *logits, int V, float temperature)
{
    if (sm_vec(V, temperature)) {
        double lse;
        sm_stats_vec(logits, V, temperature, &lse, NULL);
        return lse;
    }
    double inv_t = 1.0 / (double)temperature;
    double mx = -INFINITY;
    for (int i = 0; i < V; i++) {
        double z = (double)logits[i] * inv_t;
        if (z > mx)
            mx = z;
    }
    double s = 0.0;
    for (int i = 0; i < V; i++)
        s += exp((double)logits[i] * inv_t - mx);
    return mx + log(s);
}

/* entropy = lse - sum p z */
static double entropy_given_lse(const float *logits, int V, double inv_t, double lse)
{
    double ez = 0.0;
    for (int i = 0; i < V; i++) {
        double z = (double)logits[i] * inv_t;
        ez += exp(z - lse) * z;
    }
    return lse - ez;
}

void sm_logp_entropy(const float *logits, int V, float temperature, int target, float *logp,
                     float *entropy)
{
    double inv_t = 1.0 / (double)temperature;
    if (sm_vec(V, temperature)) {
        double lse, H;
        sm_stats_vec(logits, V, temperature, &lse, entropy ? &H : NULL);
        if (logp)
            *logp = (float)((double)logits[target] * inv_t - lse);
        if (entropy)
            *entropy = (float)H;
        return;
    }
    double lse = sm_logsumexp(logits, V, temperature);
    if (logp)
        *logp = (float)((double)logits[target] * inv_t - lse);
    if (entropy)
        *entropy = (float)entropy_given_lse(logits, V, inv_t, lse);
}

void sm_backward(const float *logits, int V, float temperature, int target, float g_logp,
                 float g_ent, float *dlogits)
{
    double inv_t = 1.0 / (double)temperature;
    if (sm_vec(V, temperature)) {
        double lse, H;
        sm_stats_vec(logits, V, temperature, &lse, &H);
        float d0 = dlogits[target];
        kern_softmax_grad(dlogits, logits, V, (float)inv_t, (float)lse,
                          (float)(-(double)g_logp - (double)g_ent * H), -g_ent);
        /* the target's term cancels when p -> 1: take it in double, as the scalar path */
        double lpt = (double)logits[target] * inv_t - lse, pt = exp(lpt);
        double dt = -(double)g_logp * pt - (double)g_ent * pt * (lpt + H) + g_logp;
        dlogits[target] = d0 + (float)(dt * inv_t);
        return;
    }
    double lse = sm_logsumexp(logits, V, temperature);
    double H = g_ent != 0.0f ? entropy_given_lse(logits, V, inv_t, lse) : 0.0;
    for (int i = 0; i < V; i++) {
        double logp_i = (double)logits[i] * inv_t - lse;
        double p = exp(logp_i);
        double d = -(double)g_logp * p;
        if (g_ent != 0.0f)
            d += -(double)g_ent * p * (logp_i + H);
        if (i == target)
            d += g_logp;
        dlogits[i] += (float)(d * inv_t);
    }
}
