/* Device helpers shared by the cuda kernels that work on 32 x 32 tiles in shared memory (retention.cu,
 * linear_attention.cu) and by those that reduce across a warp (norm.cu too). Header-only: every
 * function is static inline, so each .cu file gets its own copy (no relocatable device code). */
#ifndef PF_CUDA_TILES_CUH
#define PF_CUDA_TILES_CUH

enum { TS = 32, NT = 256, RPT = TS / 8 }; /* tile edge, threads per block, rows per thread */

typedef float tile_t[TS][TS + 1];         /* one column of padding: conflict-free column reads */

__host__ __device__ static inline int tiles(int n) { return (n + TS - 1) / TS; }

/* dst[r][c] = src[r*ld + c] for r < nr and c < ncol, else 0 */
static __device__ __forceinline__ void load_tile(tile_t &dst, const float *src, size_t ld, int nr, int ncol)
{
    for (int e = threadIdx.x; e < TS * TS; e += NT) {
        int r = e / TS, c = e % TS;
        dst[r][c] = r < nr && c < ncol ? src[r * ld + c] : 0.0f;
    }
}

/* the transpose: dst[r][c] = src[c*ld + r] for r < nr and c < ncol, else 0 (reads run along r) */
static __device__ __forceinline__ void load_tile_t(tile_t &dst, const float *src, size_t ld, int nr, int ncol)
{
    for (int e = threadIdx.x; e < TS * TS; e += NT) {
        int r = e % TS, c = e / TS;
        dst[r][c] = r < nr && c < ncol ? src[c * ld + r] : 0.0f;
    }
}

/* The block's 256 threads on a tile pair: thread (ty, tx) = (threadIdx.x / 32, threadIdx.x % 32) owns
 * rows ty + 8u (u < RPT) of A and column tx; x runs in order, so every backend call sums alike. */
/* s[u] += sum over x of A[ty + 8u][x] * Bt[tx][x]  (A times Bt transposed) */
static __device__ __forceinline__ void rows_dot_rows(float (&s)[RPT], const tile_t &A, const tile_t &Bt)
{
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
#pragma unroll 8
    for (int x = 0; x < TS; x++) {
        float y = Bt[tx][x];
#pragma unroll
        for (int u = 0; u < RPT; u++) s[u] += A[ty + 8 * u][x] * y;
    }
}

/* s[u] += sum over x of A[ty + 8u][x] * B[x][tx]  (A times B) */
static __device__ __forceinline__ void rows_dot_cols(float (&s)[RPT], const tile_t &A, const tile_t &B)
{
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
#pragma unroll 8
    for (int x = 0; x < TS; x++) {
        float y = B[x][tx];
#pragma unroll
        for (int u = 0; u < RPT; u++) s[u] += A[ty + 8 * u][x] * y;
    }
}

/* the sum of v over the 32 lanes of a warp, in every lane (a fixed butterfly order) */
static __device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

#endif
