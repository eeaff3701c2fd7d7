/* cuda backend: elementwise maps, activations, biases, the gated (SwiGLU) product, sum of squares.
 *
 * Maps run one thread per element with a grid stride. The reductions (bias_grad, sumsq) sum in an
 * order fixed by the code, never by scheduling (no atomics), so results repeat bit for bit. */
#include <math.h>

#include "kernels/cuda/cuda.h"
#include "kernels/pointwise.h"

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);                      \
         i += (size_t)gridDim.x * blockDim.x)

enum { THREADS = 256 };

__global__ void k_add(float *out, const float *a, const float *b, size_t n)
{
    GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}
__global__ void k_axpy(float *y, const float *x, float alpha, size_t n)
{
    GRID_STRIDE(i, n) y[i] += alpha * x[i];
}
__global__ void k_scale(float *x, float alpha, size_t n)
{
    GRID_STRIDE(i, n) x[i] *= alpha;
}
__global__ void k_fill(float *x, float value, size_t n)
{
    GRID_STRIDE(i, n) x[i] = value;
}
__global__ void k_mul(float *out, const float *a, const float *b, size_t n)
{
    GRID_STRIDE(i, n) out[i] = a[i] * b[i];
}

#define LAUNCH_MAP(kernel, n, ...)                                                                 \
    do {                                                                                           \
        if ((n) == 0) return;                                                                      \
        kernel<<<cuda_blocks((n), THREADS), THREADS>>>(__VA_ARGS__);                               \
        CUDA_LAUNCHED(#kernel);                                                                    \
    } while (0)

void cuda_add(float *out, const float *a, const float *b, size_t n) { LAUNCH_MAP(k_add, n, out, a, b, n); }
void cuda_axpy(float *y, const float *x, float alpha, size_t n) { LAUNCH_MAP(k_axpy, n, y, x, alpha, n); }
void cuda_scale(float *x, float alpha, size_t n) { LAUNCH_MAP(k_scale, n, x, alpha, n); }
void cuda_fill(float *x, float value, size_t n) { LAUNCH_MAP(k_fill, n, x, value, n); }
void cuda_mul(float *out, const float *a, const float *b, size_t n) { LAUNCH_MAP(k_mul, n, out, a, b, n); }

/* ---- activations (the same formulas as kernels/cpu/elementwise.c) ------------------------------- */

__global__ void k_act_forward(pf_act act, float *out, const float *in, size_t n)
{
    GRID_STRIDE(i, n) out[i] = pf_act_value(act, in[i]);
}

__global__ void k_act_backward(pf_act act, float *din, const float *dout, const float *in, size_t n,
                               int accumulate)
{
    GRID_STRIDE(i, n)
    {
        float g = dout[i] * pf_act_slope(act, in[i]);
        din[i] = accumulate ? din[i] + g : g;
    }
}

void cuda_act_forward(pf_act act, float *out, const float *in, size_t n)
{
    LAUNCH_MAP(k_act_forward, n, act, out, in, n);
}

void cuda_act_backward(pf_act act, float *din, const float *dout, const float *in, size_t n, int accumulate)
{
    LAUNCH_MAP(k_act_backward, n, act, din, dout, in, n, accumulate);
}

/* ---- biases ------------------------------------------------------------------------------------- */

__global__ void k_bias_add(float *out, const float *bias, int rows, int cols)
{
    size_t n = (size_t)rows * cols;
    GRID_STRIDE(i, n) out[i] += bias[i % cols];
}

void cuda_bias_add(float *out, const float *bias, int rows, int cols)
{
    LAUNCH_MAP(k_bias_add, (size_t)rows * cols, out, bias, rows, cols);
}

/* Column sums with per-column ownership: a block owns 32 columns; its 32 x 16 threads each sum every
 * 16th row of one column in row order (in double), then one thread per column adds the 16 partial
 * sums in a fixed order. Reads are coalesced along the row. */
__global__ void k_bias_grad(float *dbias, const float *dout, int rows, int cols)
{
    __shared__ double part[16][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    double s = 0;
    if (c < cols)
        for (int r = threadIdx.y; r < rows; r += 16) s += dout[(size_t)r * cols + c];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        double t = 0;
        for (int y = 0; y < 16; y++) t += part[y][threadIdx.x];
        dbias[c] += (float)t;
    }
}

void cuda_bias_grad(float *dbias, const float *dout, int rows, int cols)
{
    if (rows <= 0 || cols <= 0) return;
    k_bias_grad<<<(cols + 31) / 32, dim3(32, 16)>>>(dbias, dout, rows, cols);
    CUDA_LAUNCHED("k_bias_grad");
}

/* ---- sum of squares ----------------------------------------------------------------------------- */

enum { SUMSQ_BLOCKS = 264 };

/* A fixed grid (independent of the GPU) so the summation order is fixed: each thread sums its
 * grid-stride elements in double, each block reduces by a fixed tree, the host adds the blocks. */
__global__ void k_sumsq(double *partial, const float *x, size_t n)
{
    __shared__ double s[THREADS];
    double a = 0;
    GRID_STRIDE(i, n) a += (double)x[i] * x[i];
    s[threadIdx.x] = a;
    __syncthreads();
    for (int w = THREADS / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

double cuda_sumsq(const float *x, size_t n)
{
    if (n == 0) return 0.0;
    double *partial = (double *)cuda_scratch(0, SUMSQ_BLOCKS * sizeof(double));
    double host[SUMSQ_BLOCKS];
    if (!partial) return NAN;
    k_sumsq<<<SUMSQ_BLOCKS, THREADS>>>(partial, x, n);
    if (CUDA_LAUNCHED("k_sumsq") < 0) return NAN;
    if (CUDA_CHECK(cudaMemcpy(host, partial, sizeof host, cudaMemcpyDeviceToHost)) < 0) return NAN;
    double s = 0;
    for (int i = 0; i < SUMSQ_BLOCKS; i++) s += host[i];
    return s;
}

/* ---- SwiGLU ------------------------------------------------------------------------------------- */

__global__ void k_swiglu_forward(float *out, const float *gate_up, int rows, int F)
{
    size_t n = (size_t)rows * F;
    GRID_STRIDE(i, n)
    {
        size_t r = i / F, j = i % F;
        float g = gate_up[r * 2 * F + j], u = gate_up[r * 2 * F + F + j];
        out[i] = g * pf_sigmoid(g) * u;
    }
}

__global__ void k_swiglu_backward(float *dgate_up, const float *dout, const float *gate_up, int rows, int F)
{
    size_t n = (size_t)rows * F;
    GRID_STRIDE(i, n)
    {
        size_t r = i / F, j = i % F;
        float g = gate_up[r * 2 * F + j], u = gate_up[r * 2 * F + F + j], d = dout[i];
        float s = pf_sigmoid(g);
        dgate_up[r * 2 * F + F + j] = d * g * s;
        dgate_up[r * 2 * F + j] = d * u * s * (1.0f + g * (1.0f - s));
    }
}

void cuda_swiglu_forward(float *out, const float *gate_up, int rows, int F)
{
    LAUNCH_MAP(k_swiglu_forward, (size_t)rows * F, out, gate_up, rows, F);
}

void cuda_swiglu_backward(float *dgate_up, const float *dout, const float *gate_up, int rows, int F)
{
    LAUNCH_MAP(k_swiglu_backward, (size_t)rows * F, dgate_up, dout, gate_up, rows, F);
}
