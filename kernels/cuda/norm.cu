/* cuda backend: RMSNorm and LayerNorm, forward and backward.
 *
 * One warp per row (rows, C): lanes stride over the row and combine by shuffles. The weight
 * gradients sum over rows with per-column ownership (a block owns 32 columns, 32 x 16 threads, fixed
 * summation order, no atomics), as in bias_grad, so they repeat bit for bit. */
#include <math.h>

#include "kernels/cuda/cuda.h"
#include "kernels/cuda/tiles.cuh"

enum { WARPS = 8 };

#define ROW_OF_WARP() (blockIdx.x * WARPS + threadIdx.x / 32)
#define LANE() (threadIdx.x % 32)

__global__ void k_rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, int rows,
                                  int C, float eps)
{
    int r = ROW_OF_WARP(), lane = LANE();
    if (r >= rows) return;
    const float *x = in + (size_t)r * C;
    float *y = out + (size_t)r * C;
    float ss = 0;
    for (int c = lane; c < C; c += 32) ss += x[c] * x[c];
    ss = warp_sum(ss);
    float s = (float)(1.0 / sqrt((double)ss / C + eps));
    if (lane == 0) rstd[r] = s;
    for (int c = lane; c < C; c += 32) y[c] = x[c] * s * w[c];
}

__global__ void k_rmsnorm_backward_din(float *din, const float *dout, const float *in, const float *w,
                                       const float *rstd, int rows, int C)
{
    int r = ROW_OF_WARP(), lane = LANE();
    if (r >= rows) return;
    const float *x = in + (size_t)r * C, *dy = dout + (size_t)r * C;
    float *dx = din + (size_t)r * C;
    float s = rstd[r], dot = 0;
    for (int c = lane; c < C; c += 32) dot += dy[c] * w[c] * x[c];
    dot = warp_sum(dot);
    float k = dot / C * s * s * s;
    for (int c = lane; c < C; c += 32) dx[c] = dy[c] * w[c] * s - k * x[c];
}

/* dw (C) += sum_r dout * (in - mean) * rstd ; db (C) += sum_r dout (db and mean may be NULL) */
__global__ void k_norm_dweight(float *dw, float *db, const float *dout, const float *in,
                               const float *mean, const float *rstd, int rows, int C)
{
    __shared__ double pw[16][33], pb[16][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    double gw = 0, gb = 0;
    if (c < C)
        for (int r = threadIdx.y; r < rows; r += 16) {
            float dy = dout[(size_t)r * C + c];
            float xh = (in[(size_t)r * C + c] - (mean ? mean[r] : 0.0f)) * rstd[r];
            gw += (double)dy * xh;
            gb += dy;
        }
    pw[threadIdx.y][threadIdx.x] = gw;
    pb[threadIdx.y][threadIdx.x] = gb;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        double tw = 0, tb = 0;
        for (int y = 0; y < 16; y++) {
            tw += pw[y][threadIdx.x];
            tb += pb[y][threadIdx.x];
        }
        dw[c] += (float)tw;
        if (db) db[c] += (float)tb;
    }
}

void cuda_rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, int rows, int C,
                          float eps)
{
    if (rows <= 0) return;
    k_rmsnorm_forward<<<(rows + WARPS - 1) / WARPS, WARPS * 32>>>(out, rstd, in, w, rows, C, eps);
    CUDA_LAUNCHED("k_rmsnorm_forward");
}

void cuda_rmsnorm_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                           const float *rstd, int rows, int C)
{
    if (rows <= 0) return;
    k_rmsnorm_backward_din<<<(rows + WARPS - 1) / WARPS, WARPS * 32>>>(din, dout, in, w, rstd, rows, C);
    if (CUDA_LAUNCHED("k_rmsnorm_backward_din") < 0) return;
    k_norm_dweight<<<(C + 31) / 32, dim3(32, 16)>>>(dw, NULL, dout, in, NULL, rstd, rows, C);
    CUDA_LAUNCHED("k_norm_dweight");
}

__global__ void k_layernorm_forward(float *out, float *mean, float *rstd, const float *in,
                                    const float *w, const float *b, int rows, int C, float eps)
{
    int r = ROW_OF_WARP(), lane = LANE();
    if (r >= rows) return;
    const float *x = in + (size_t)r * C;
    float *y = out + (size_t)r * C;
    float m = 0;
    for (int c = lane; c < C; c += 32) m += x[c];
    m = warp_sum(m) / C;
    float v = 0;
    for (int c = lane; c < C; c += 32) v += (x[c] - m) * (x[c] - m);
    v = warp_sum(v) / C;
    float s = (float)(1.0 / sqrt((double)v + eps));
    if (lane == 0) {
        mean[r] = m;
        rstd[r] = s;
    }
    for (int c = lane; c < C; c += 32) y[c] = (x[c] - m) * s * w[c] + b[c];
}

__global__ void k_layernorm_backward_din(float *din, const float *dout, const float *in,
                                         const float *w, const float *mean, const float *rstd,
                                         int rows, int C)
{
    int r = ROW_OF_WARP(), lane = LANE();
    if (r >= rows) return;
    const float *x = in + (size_t)r * C, *dy = dout + (size_t)r * C;
    float *dx = din + (size_t)r * C;
    float m = mean[r], s = rstd[r], sum_g = 0, sum_gx = 0;
    for (int c = lane; c < C; c += 32) {
        float g = dy[c] * w[c];
        sum_g += g;
        sum_gx += g * (x[c] - m) * s;
    }
    float mg = warp_sum(sum_g) / C, mgx = warp_sum(sum_gx) / C;
    for (int c = lane; c < C; c += 32) dx[c] = s * (dy[c] * w[c] - mg - (x[c] - m) * s * mgx);
}

void cuda_layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                            const float *b, int rows, int C, float eps)
{
    if (rows <= 0) return;
    k_layernorm_forward<<<(rows + WARPS - 1) / WARPS, WARPS * 32>>>(out, mean, rstd, in, w, b, rows, C, eps);
    CUDA_LAUNCHED("k_layernorm_forward");
}

void cuda_layernorm_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                             const float *w, const float *mean, const float *rstd, int rows, int C)
{
    if (rows <= 0) return;
    k_layernorm_backward_din<<<(rows + WARPS - 1) / WARPS, WARPS * 32>>>(din, dout, in, w, mean, rstd, rows, C);
    if (CUDA_LAUNCHED("k_layernorm_backward_din") < 0) return;
    k_norm_dweight<<<(C + 31) / 32, dim3(32, 16)>>>(dw, db, dout, in, mean, rstd, rows, C);
    CUDA_LAUNCHED("k_norm_dweight");
}
