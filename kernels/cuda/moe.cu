/* cuda backend: mixture-of-experts routing, token grouping by expert and the weighted scatter back,
 * with the semantics of kernels/cpu/moe.c (see pf_backend in kernels/kernels.h).
 *
 * N tokens (rows), E experts, K slots per token, C model width, R grouped rows.
 * Deterministic, and the integer results (expert ids, rows, counts) identical to the cpu's:
 *   - routing is one thread per token, the softmax in double as on the cpu;
 *   - token-choice grouping: a slot is kept iff its rank among the slots that chose the same expert,
 *     in priority order (j major, then t), is below the capacity, which is exactly what the cpu's
 *     sequential scan accepts; ranks are block-wide prefix counts (one block per expert, ballots);
 *   - expert choice: a token's rank for an expert counts the tokens with a larger probability (ties:
 *     lower token id first), the cpu's stable sort order; rows are numbered in token order;
 *   - the sums (gate gradient, router statistics) run in an order fixed by the code. */
#include <math.h>

#include "kernels/cuda/cuda.h"
#include "kernels/pointwise.h"

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)(n);              \
         i += (size_t)gridDim.x * blockDim.x)

/* ---- jitter ---------------------------------------------------------------------------------- */

__device__ __forceinline__ uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

__global__ void k_moe_jitter(float *out, float *noise, const float *in, size_t n, float eps, uint64_t key)
{
    GRID_STRIDE(i, n)
    {
        float u = (float)(mix64(key + 0x9e3779b97f4a7c15ULL * (uint64_t)i) >> 40) * 0x1.0p-24f;
        float s = 1.0f + eps * (2.0f * u - 1.0f);
        noise[i] = s;
        out[i] = in[i] * s;
    }
}

static uint64_t mix64_host(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void cuda_moe_jitter(float *out, float *noise, const float *in, size_t n, float eps, uint64_t seed, uint64_t counter)
{
    if (n == 0) return;
    uint64_t key = mix64_host(seed + 0x9e3779b97f4a7c15ULL * (counter + 1));
    k_moe_jitter<<<cuda_blocks(n, 256), 256>>>(out, noise, in, n, eps, key);
    CUDA_LAUNCHED("k_moe_jitter");
}

/* ---- routing --------------------------------------------------------------------------------- */

__global__ void k_moe_route(float *probs, float *lse, int32_t *idx, float *w, const float *logits, int N, int E,
                            int K, int renorm)
{
    GRID_STRIDE(tt, N)
    {
        int t = (int)tt;
        lse[t] = pf_moe_route_row(probs + (size_t)t * E, idx + (size_t)t * (K > 0 ? K : 0),
                                  w + (size_t)t * (K > 0 ? K : 0), logits + (size_t)t * E, E, K > 0 ? K : 0, renorm);
    }
}

void cuda_moe_route(float *probs, float *lse, int32_t *idx, float *w, const float *logits, int N, int E, int K,
                    int renorm)
{
    if (N == 0) return;
    k_moe_route<<<cuda_blocks(N, 128), 128>>>(probs, lse, idx, w, logits, N, E, K, renorm);
    CUDA_LAUNCHED("k_moe_route");
}

/* ---- grouping -------------------------------------------------------------------------------- */

enum { RANK_THREADS = 1024 };

/* Block-wide exclusive prefix count of `flag` over the block's threads, in thread order; *total gets
 * the block's count. warp_counts: shared (32). */
__device__ int block_rank(int flag, int *total, int *warp_counts)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    unsigned ballot = __ballot_sync(0xffffffffu, flag);
    int below = __popc(ballot & ((1u << lane) - 1u));
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, all = 0;
    for (int i = 0; i < nwarps; i++) {
        if (i < warp) before += warp_counts[i];
        all += warp_counts[i];
    }
    __syncthreads();
    *total = all;
    return before + below;
}

/* one block per expert e: rank of every slot that chose e, in priority order (j major, then t);
 * slot_row = rank when kept (rank < cap), else -1; counts: kept[e], chosen[e] */
__global__ void k_moe_rank(int32_t *slot_row, int32_t *counts, const int32_t *idx, int N, int E, int K, int cap)
{
    __shared__ int warp_counts[32];
    int e = blockIdx.x;
    long n_slots = (long)N * K;
    int seen = 0;
    for (long base = 0; base < n_slots; base += blockDim.x) {
        long p = base + threadIdx.x; /* priority position: j = p / N, t = p % N */
        size_t s = 0;
        int flag = 0;
        if (p < n_slots) {
            s = (size_t)(p % N) * K + p / N;
            flag = idx[s] == e;
        }
        int total, rank = seen + block_rank(flag, &total, warp_counts);
        if (flag) slot_row[s] = cap < 0 || rank < cap ? rank : -1;
        seen += total;
    }
    if (threadIdx.x == 0) {
        counts[E + e] = seen;
        counts[e] = cap < 0 || seen < cap ? seen : cap;
    }
}

__global__ void k_moe_dropped(int32_t *counts, int E)
{
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    int d = 0;
    for (int e = 0; e < E; e++) d += counts[E + e] - counts[e];
    counts[2 * E] = d;
}

/* positions -> rows: expert e's rows start after the kept rows of the experts before it */
__global__ void k_moe_place(int32_t *slot_row, int32_t *row_token, float *row_w, const int32_t *counts,
                            const int32_t *idx, const float *w, int N, int K)
{
    GRID_STRIDE(s, (size_t)N * K)
    {
        int pos = slot_row[s];
        if (pos < 0) continue;
        int e = idx[s], off = 0;
        for (int i = 0; i < e; i++) off += counts[i];
        int r = off + pos;
        slot_row[s] = r;
        row_token[r] = (int32_t)(s / K);
        row_w[r] = w[s];
    }
}

void cuda_moe_dispatch(int32_t *slot_row, int32_t *row_token, float *row_w, int32_t *counts, const int32_t *idx,
                       const float *w, int N, int E, int K, int cap)
{
    if (N == 0 || K == 0) {
        cuda_zero(counts, (size_t)(2 * E + 1) * sizeof(int32_t));
        return;
    }
    k_moe_rank<<<E, RANK_THREADS>>>(slot_row, counts, idx, N, E, K, cap);
    CUDA_LAUNCHED("k_moe_rank");
    k_moe_dropped<<<1, 32>>>(counts, E);
    CUDA_LAUNCHED("k_moe_dropped");
    k_moe_place<<<cuda_blocks((size_t)N * K, 256), 256>>>(slot_row, row_token, row_w, counts, idx, w, N, K);
    CUDA_LAUNCHED("k_moe_place");
}

/* expert choice, step 1: taken[e][t] = 1 when token t is among the c best of expert e (rank by
 * probability descending, ties: lower token id first) */
__global__ void k_moe_ec_take(int32_t *taken, const float *probs, int N, int E, int c)
{
    GRID_STRIDE(i, (size_t)N * E)
    {
        int e = (int)(i / N), t = (int)(i % N);
        float pt = probs[(size_t)t * E + e];
        int rank = 0;
        for (int u = 0; u < N && rank < c; u++) {
            float pu = probs[(size_t)u * E + e];
            rank += pu > pt || (pu == pt && u < t);
        }
        taken[(size_t)e * N + t] = rank < c;
    }
}

/* step 2, one block per expert: rows numbered in token order; slot_row, w (N, E) of this expert */
__global__ void k_moe_ec_rows(int32_t *slot_row, float *w, int32_t *row_token, float *row_w, const int32_t *taken,
                              const float *probs, int N, int E, int c)
{
    __shared__ int warp_counts[32];
    int e = blockIdx.x, seen = 0;
    for (int base = 0; base < N; base += blockDim.x) {
        int t = base + threadIdx.x;
        int flag = t < N ? taken[(size_t)e * N + t] : 0;
        int total, rank = seen + block_rank(flag, &total, warp_counts);
        if (t < N) {
            size_t s = (size_t)t * E + e;
            if (flag) {
                int r = e * c + rank;
                slot_row[s] = r;
                w[s] = probs[s];
                row_token[r] = t;
                row_w[r] = probs[s];
            } else {
                slot_row[s] = -1;
                w[s] = 0.0f;
            }
        }
        seen += total;
    }
}

/* step 3: counts; dropped = tokens no expert took (one block, a fixed-order sum) */
__global__ void k_moe_ec_counts(int32_t *counts, const int32_t *taken, int N, int E, int c)
{
    __shared__ int part[256];
    int d = 0;
    for (int t = threadIdx.x; t < N; t += blockDim.x) {
        int any = 0;
        for (int e = 0; e < E; e++) any |= taken[(size_t)e * N + t];
        d += !any;
    }
    part[threadIdx.x] = d;
    __syncthreads();
    if (threadIdx.x == 0) {
        int s = 0;
        for (int i = 0; i < (int)blockDim.x; i++) s += part[i];
        counts[2 * E] = s;
        for (int e = 0; e < E; e++) counts[e] = counts[E + e] = c;
    }
}

void cuda_moe_expert_choice(int32_t *slot_row, float *w, int32_t *row_token, float *row_w, int32_t *counts,
                            int32_t *scratch, const float *probs, int N, int E, int c)
{
    if (N == 0 || E == 0) return;
    k_moe_ec_take<<<cuda_blocks((size_t)N * E, 256), 256>>>(scratch, probs, N, E, c);
    CUDA_LAUNCHED("k_moe_ec_take");
    k_moe_ec_rows<<<E, RANK_THREADS>>>(slot_row, w, row_token, row_w, scratch, probs, N, E, c);
    CUDA_LAUNCHED("k_moe_ec_rows");
    k_moe_ec_counts<<<1, 256>>>(counts, scratch, N, E, c);
    CUDA_LAUNCHED("k_moe_ec_counts");
}

/* ---- gather, scatter back -------------------------------------------------------------------- */

__global__ void k_moe_gather(float *out, const float *in, const int32_t *row_token, const float *scale, int R, int C)
{
    GRID_STRIDE(i, (size_t)R * C)
    {
        size_t r = i / C, c = i % C;
        out[i] = (scale ? scale[r] : 1.0f) * in[(size_t)row_token[r] * C + c];
    }
}

void cuda_moe_gather(float *out, const float *in, const int32_t *row_token, const float *scale, int R, int C)
{
    if ((size_t)R * C == 0) return;
    k_moe_gather<<<cuda_blocks((size_t)R * C, 256), 256>>>(out, in, row_token, scale, R, C);
    CUDA_LAUNCHED("k_moe_gather");
}

__global__ void k_moe_combine(float *out, const float *y, const int32_t *slot_row, const float *w, int N, int K,
                              int C, int accumulate)
{
    GRID_STRIDE(i, (size_t)N * C)
    {
        size_t t = i / C, c = i % C;
        float o = accumulate ? out[i] : 0.0f;
        for (int j = 0; j < K; j++) {
            int r = slot_row[t * K + j];
            if (r < 0) continue;
            o += (w ? w[t * K + j] : 1.0f) * y[(size_t)r * C + c];
        }
        out[i] = o;
    }
}

void cuda_moe_combine(float *out, const float *y, const int32_t *slot_row, const float *w, int N, int K, int C,
                      int accumulate)
{
    if ((size_t)N * C == 0) return;
    k_moe_combine<<<cuda_blocks((size_t)N * C, 256), 256>>>(out, y, slot_row, w, N, K, C, accumulate);
    CUDA_LAUNCHED("k_moe_combine");
}

/* one warp per slot: <dout[t], y[row]> summed in lane order, then a fixed shuffle tree */
__global__ void k_moe_gate_grad(float *dw, const float *dout, const float *y, const int32_t *slot_row, int N, int K,
                                int C)
{
    size_t warp = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32, nwarps = (size_t)gridDim.x * blockDim.x / 32;
    int lane = threadIdx.x & 31;
    for (size_t s = warp; s < (size_t)N * K; s += nwarps) {
        int r = slot_row[s];
        float v = 0;
        if (r >= 0) {
            const float *d = dout + (s / K) * C, *yr = y + (size_t)r * C;
            for (int c = lane; c < C; c += 32) v += d[c] * yr[c];
        }
        for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) dw[s] = v;
    }
}

void cuda_moe_gate_grad(float *dw, const float *dout, const float *y, const int32_t *slot_row, int N, int K, int C)
{
    if ((size_t)N * K == 0) return;
    k_moe_gate_grad<<<cuda_blocks((size_t)N * K * 32, 256), 256>>>(dw, dout, y, slot_row, N, K, C);
    CUDA_LAUNCHED("k_moe_gate_grad");
}

/* ---- router backward and statistics ---------------------------------------------------------- */

__global__ void k_moe_router_backward(float *dlogits, const float *probs, const float *lse, const int32_t *idx,
                                      const float *w, const float *dw, const float *aux_grad, float z_coef, int N,
                                      int E, int K, int renorm)
{
    GRID_STRIDE(tt, N)
    {
        int t = (int)tt;
        pf_moe_router_backward_row(dlogits + (size_t)t * E, probs + (size_t)t * E, lse[t],
                                   idx ? idx + (size_t)t * K : NULL, w + (size_t)t * K, dw + (size_t)t * K,
                                   aux_grad, z_coef, E, K, renorm);
    }
}

void cuda_moe_router_backward(float *dlogits, const float *probs, const float *lse, const int32_t *idx,
                              const float *w, const float *dw, const float *aux_grad, float z_coef, int N, int E,
                              int K, int renorm)
{
    if (N == 0) return;
    k_moe_router_backward<<<cuda_blocks(N, 128), 128>>>(dlogits, probs, lse, idx, w, dw, aux_grad, z_coef, N, E,
                                                        K, renorm);
    CUDA_LAUNCHED("k_moe_router_backward");
}

/* block e < E: sum of probs[:, e]; block E: sum of lse^2; block E + 1: the entropy. Each thread sums
 * its tokens in order (double), then the block's partials are added in thread order. */
__global__ void k_moe_router_stats(float *stats, const float *probs, const float *lse, int N, int E)
{
    __shared__ double part[256];
    int what = blockIdx.x;
    double s = 0;
    for (int t = threadIdx.x; t < N; t += blockDim.x) {
        if (what < E) s += probs[(size_t)t * E + what];
        else if (what == E) s += (double)lse[t] * lse[t];
        else
            for (int e = 0; e < E; e++) {
                double p = probs[(size_t)t * E + e];
                if (p > 0) s -= p * log(p);
            }
    }
    part[threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double v = 0;
        for (int i = 0; i < (int)blockDim.x; i++) v += part[i];
        stats[what] = (float)v;
    }
}

void cuda_moe_router_stats(float *stats, const float *probs, const float *lse, int N, int E)
{
    k_moe_router_stats<<<E + 2, 256>>>(stats, probs, lse, N, E);
    CUDA_LAUNCHED("k_moe_router_stats");
}
