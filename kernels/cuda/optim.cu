/* cuda backend: the AdamW update, one thread per parameter (the formula of kernels/cpu/loss.c). */
#include <math.h>

#include "kernels/cuda/cuda.h"

__global__ void k_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                        float beta2, float eps, float weight_decay, float c1, float c2)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float gi = g[i];
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float mhat = mi / c1, vhat = vi / c2;
        p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * p[i]);
    }
}

void cuda_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                float beta2, float eps, float weight_decay, int t)
{
    if (n == 0) return;
    /* the bias corrections on the host, in float, exactly as the cpu backend computes them */
    float c1 = 1.0f - powf(beta1, (float)t), c2 = 1.0f - powf(beta2, (float)t);
    k_adamw<<<cuda_blocks(n, 256), 256>>>(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, c1, c2);
    CUDA_LAUNCHED("k_adamw");
}
