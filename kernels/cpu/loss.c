/* cpu backend: softmax cross-entropy over vocabulary rows, and the AdamW update. */
#include <math.h>

#include "kernels/cpu/cpu.h"

void cpu_cross_entropy(float *loss, float *correct, float *dlogits, const float *logits,
                       const int32_t *targets, const float *mask, int n, int V, float grad_scale)
{
#pragma omp parallel for schedule(static) if ((size_t)n * V > PF_CPU_PAR_MIN)
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * V;
        float w = mask ? mask[i] : 1.0f;
        int best = 0;
        float zmax = z[0];
        for (int j = 1; j < V; j++)
            if (z[j] > zmax) { zmax = z[j]; best = j; }
        double sum = 0;
        for (int j = 0; j < V; j++) sum += exp((double)(z[j] - zmax));
        double lse = zmax + log(sum);
        int t = targets[i];
        loss[i] = w != 0.0f ? (float)(w * (lse - z[t])) : 0.0f;
        if (correct) correct[i] = w * (best == t ? 1.0f : 0.0f);
        if (dlogits) {
            float *d = dlogits + (size_t)i * V;
            float k = grad_scale * w;
            for (int j = 0; j < V; j++) d[j] = k * (float)exp((double)z[j] - lse);
            d[t] -= k;
        }
    }
}

void cpu_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
               float beta2, float eps, float weight_decay, int t)
{
    float c1 = 1.0f - powf(beta1, (float)t), c2 = 1.0f - powf(beta2, (float)t);
#pragma omp parallel for schedule(static) if (n > PF_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        m[i] = beta1 * m[i] + (1.0f - beta1) * g[i];
        v[i] = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
        float mhat = m[i] / c1, vhat = v[i] / c2;
        p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * p[i]);
    }
}
