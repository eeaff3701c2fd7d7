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

/* the sum of v over the 32 lanes of a warp, in every lane (a fixed butterfly order) */
static __device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

#endif
