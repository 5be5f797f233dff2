/* softmax.c - log-softmax, entropy and their backward for one logits row (see softmax.h). */
#include "softmax.h"

#include <math.h>

double sm_logsumexp(const float *logits, int V, float temperature)
{
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
