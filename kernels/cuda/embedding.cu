/* cuda backend: token embedding lookup and its scatter-add gradient.
 *
 * The backward is deterministic without sorting and without atomics: ownership. Block (cx, p) owns
 * the 32 columns [32 cx, 32 cx + 32) of every vocabulary row v with v % OWNERS == p. It walks all n
 * tokens in order (staged through shared memory) and adds the rows of the tokens it owns, so every
 * dtable element is written by exactly one thread, which adds its contributions in token order: the
 * same order as the cpu backend, hence the same float sums. Parallelism is (C / 32) x OWNERS blocks;
 * each reads the token list (n ints) once. */
#include "kernels/cuda/cuda.h"

enum { OWNERS = 64, CHUNK = 1024 };

__global__ void k_embedding_forward(float *out, const int32_t *tokens, const float *table, int n, int C)
{
    size_t total = (size_t)n * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = table[(size_t)tokens[i / C] * C + i % C];
}

__global__ void k_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int n, int C)
{
    __shared__ int32_t tok[CHUNK];
    int c = blockIdx.x * 32 + threadIdx.x, owner = blockIdx.y;
    for (int base = 0; base < n; base += CHUNK) {
        int len = n - base < CHUNK ? n - base : CHUNK;
        __syncthreads();
        for (int i = threadIdx.x; i < len; i += 32) tok[i] = tokens[base + i];
        __syncthreads();
        if (c >= C) continue;
        for (int i = 0; i < len; i++) {
            int v = tok[i];
            if (v % OWNERS != owner) continue;
            dtable[(size_t)v * C + c] += dout[(size_t)(base + i) * C + c];
        }
    }
}

void cuda_embedding_forward(float *out, const int32_t *tokens, const float *table, int n, int C)
{
    if (n <= 0 || C <= 0) return;
    k_embedding_forward<<<cuda_blocks((size_t)n * C, 256), 256>>>(out, tokens, table, n, C);
    CUDA_LAUNCHED("k_embedding_forward");
}

void cuda_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int n, int C)
{
    if (n <= 0 || C <= 0) return;
    k_embedding_backward<<<dim3((C + 31) / 32, OWNERS), 32>>>(dtable, dout, tokens, n, C);
    CUDA_LAUNCHED("k_embedding_backward");
}
