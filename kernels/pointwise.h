/* Per-element and per-row formulas that every backend computes the same way, written once: the cpu
 * backend's .c files compile them for the host, the cuda backend's .cu files for host and device,
 * so the two backends cannot drift apart. */
#ifndef PF_POINTWISE_H
#define PF_POINTWISE_H

#include <math.h>
#include <stdint.h>

#include "kernels/kernels.h"

#ifdef __CUDACC__
#define PF_HD __host__ __device__ __forceinline__
#else
#define PF_HD static inline
#endif

#define PF_GELU_K 0.7978845608028654f /* sqrt(2/pi) */

PF_HD float pf_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

PF_HD float pf_act_value(pf_act act, float x)
{
    switch (act) {
    case PF_ACT_GELU: return 0.5f * x * (1.0f + tanhf(PF_GELU_K * (x + 0.044715f * x * x * x)));
    case PF_ACT_SILU: return x * pf_sigmoid(x);
    case PF_ACT_RELU: return x > 0 ? x : 0;
    case PF_ACT_SOFTPLUS: return x > 20.0f ? x : log1pf(expf(x));
    case PF_ACT_ELU1: return x > 0 ? x + 1.0f : expf(x);
    }
    return x;
}

/* d act(x) / dx */
PF_HD float pf_act_slope(pf_act act, float x)
{
    switch (act) {
    case PF_ACT_GELU: {
        float t = tanhf(PF_GELU_K * (x + 0.044715f * x * x * x));
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * PF_GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
    }
    case PF_ACT_SILU: {
        float s = pf_sigmoid(x);
        return s * (1.0f + x * (1.0f - s));
    }
    case PF_ACT_RELU: return x > 0 ? 1.0f : 0.0f;
    case PF_ACT_SOFTPLUS: return pf_sigmoid(x);
    case PF_ACT_ELU1: return x > 0 ? 1.0f : expf(x);
    }
    return 1.0f;
}

/* The router of one token: p (E) = softmax(z), returns logsumexp(z); then the K largest
 * probabilities (K passes of an arg-max over the experts not taken yet; '>' keeps the lower id on
 * ties) into id (K) and their weights into wt (K), renormalised to sum 1 when renorm is set. */
PF_HD float pf_moe_route_row(float *p, int32_t *id, float *wt, const float *z, int E, int K, int renorm)
{
    float mx = z[0];
    for (int e = 1; e < E; e++) mx = z[e] > mx ? z[e] : mx;
    double sum = 0;
    for (int e = 0; e < E; e++) sum += exp((double)z[e] - mx);
    for (int e = 0; e < E; e++) p[e] = (float)(exp((double)z[e] - mx) / sum);
    double kept = 0;
    for (int j = 0; j < K; j++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            int taken = 0;
            for (int i = 0; i < j; i++) taken |= id[i] == e;
            if (!taken && (best < 0 || p[e] > p[best])) best = e;
        }
        id[j] = best;
        kept += p[best];
    }
    for (int j = 0; j < K; j++) wt[j] = renorm ? (float)(p[id[j]] / kept) : p[id[j]];
    return (float)(mx + log(sum));
}

/* The router gradient of one token: g (K) = dL/dw of its chosen weights, aux (E) dL/dp from the
 * balance loss (or NULL), z_coef * lse * p the z-loss term; dz (E) overwritten with dL/dz. */
PF_HD void pf_moe_router_backward_row(float *dz, const float *p, float lse, const int32_t *id,
                                      const float *wt, const float *g, const float *aux, float z_coef,
                                      int E, int K, int renorm)
{
    /* dz first holds dL/dp */
    for (int e = 0; e < E; e++) dz[e] = aux ? aux[e] : 0.0f;
    if (renorm) {
        /* w_j = p_j / S, S = sum of the K chosen p: dL/dp_j = (g_j - sum_i g_i w_i) / S */
        double S = 0, gw = 0;
        for (int j = 0; j < K; j++) {
            S += p[id ? id[j] : j];
            gw += (double)g[j] * wt[j];
        }
        for (int j = 0; j < K; j++) dz[id ? id[j] : j] += (float)((g[j] - gw) / S);
    } else {
        for (int j = 0; j < K; j++) dz[id ? id[j] : j] += g[j];
    }
    /* softmax backward, then the z-loss */
    double dot = 0;
    for (int e = 0; e < E; e++) dot += (double)p[e] * dz[e];
    for (int e = 0; e < E; e++) dz[e] = (float)(p[e] * (dz[e] - dot) + z_coef * lse * p[e]);
}

#endif
