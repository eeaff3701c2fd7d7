/* cuda backend: softmax cross-entropy over vocabulary rows.
 *
 * One block per row. dlogits may be the logits buffer itself (engine/model.c scores in place): the
 * block finds the max and the sum of exponentials, reads z[target] into shared memory, and only
 * after a barrier does each thread overwrite the elements it alone read. */
#include <math.h>

#include "kernels/cuda/cuda.h"

enum { THREADS = 256 };

__global__ void k_cross_entropy(float *loss, float *correct, float *dlogits, const float *logits,
                                const int32_t *targets, const float *mask, int V, float grad_scale)
{
    __shared__ float smax[THREADS];
    __shared__ int sarg[THREADS];
    __shared__ double ssum[THREADS];
    __shared__ float zt;
    int i = blockIdx.x, tid = threadIdx.x;
    const float *z = logits + (size_t)i * V;

    /* max and its first index (ties go to the smaller index, as on the cpu) */
    float mx = -INFINITY;
    int arg = V;
    for (int j = tid; j < V; j += THREADS)
        if (z[j] > mx) {
            mx = z[j];
            arg = j;
        }
    smax[tid] = mx;
    sarg[tid] = arg;
    __syncthreads();
    for (int w = THREADS / 2; w > 0; w /= 2) {
        if (tid < w) {
            float o = smax[tid + w];
            int oa = sarg[tid + w];
            if (o > smax[tid] || (o == smax[tid] && oa < sarg[tid])) {
                smax[tid] = o;
                sarg[tid] = oa;
            }
        }
        __syncthreads();
    }
    float zmax = smax[0];
    int best = sarg[0];

    double s = 0;
    for (int j = tid; j < V; j += THREADS) s += exp((double)(z[j] - zmax));
    ssum[tid] = s;
    int t = targets[i];
    if (tid == 0) zt = z[t];
    __syncthreads();
    for (int w = THREADS / 2; w > 0; w /= 2) {
        if (tid < w) ssum[tid] += ssum[tid + w];
        __syncthreads();
    }
    double lse = zmax + log(ssum[0]);
    float w = mask ? mask[i] : 1.0f;
    if (tid == 0) {
        loss[i] = w != 0.0f ? (float)(w * (lse - zt)) : 0.0f;
        if (correct) correct[i] = w * (best == t ? 1.0f : 0.0f);
    }
    if (dlogits) {
        float *d = dlogits + (size_t)i * V;
        float k = grad_scale * w;
        for (int j = tid; j < V; j += THREADS) {
            float p = k * (float)exp((double)z[j] - lse);
            d[j] = j == t ? p - k : p;
        }
    }
}

void cuda_cross_entropy(float *loss, float *correct, float *dlogits, const float *logits,
                        const int32_t *targets, const float *mask, int n, int V, float grad_scale)
{
    if (n <= 0) return;
    k_cross_entropy<<<n, THREADS>>>(loss, correct, dlogits, logits, targets, mask, V, grad_scale);
    CUDA_LAUNCHED("k_cross_entropy");
}
