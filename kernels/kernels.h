/* The kernel API: one table of functions per device, the same signatures on every backend.
 *
 * Layers are written once against this table and never branch on the device. Every pointer a kernel
 * takes lives on the backend's device (host memory for cpu, device memory for cuda) unless its comment
 * says "host". Shapes are in comments beside the pointers. Unless a comment says otherwise an output
 * is overwritten; parameter gradients (d<weight>) are accumulated with +=.
 *
 * Conventions: B batch, T sequence length, C model width, H heads, D head dim. A row-major matrix
 * with leading dimension ld has element (i, j) at [i * ld + j].
 *
 * A kernel never knows about layers. A kernel that can fail (allocation on the device) returns int
 * (0 ok, -1 with pf_error set); the rest are void and report device faults through sync(). */
#ifndef PF_KERNELS_H
#define PF_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef enum pf_act {
    PF_ACT_GELU = 0,   /* tanh approximation (GPT-2) */
    PF_ACT_SILU = 1,
    PF_ACT_RELU = 2,
    PF_ACT_SOFTPLUS = 3,
    PF_ACT_ELU1 = 4,   /* elu(x) + 1, the linear-attention feature map */
} pf_act;

/* Tile classes written by the attention forward into its tile map. */
enum { PF_TILE_SKIPPED = 0, PF_TILE_PARTIAL = 1, PF_TILE_FULL = 2 };

typedef struct pf_backend {
    const char *name;                          /* "cpu", "cuda" */

    /* ---- lifetime and memory ---------------------------------------------------------------- */
    int   (*init)(void);                       /* -1 with pf_error when the device is not usable */
    void *(*alloc)(size_t bytes);              /* zeroed; NULL with pf_error on failure */
    void  (*free)(void *p);
    void  (*upload)(void *dst, const void *host_src, size_t bytes);
    void  (*download)(void *host_dst, const void *src, size_t bytes);
    void  (*copy)(void *dst, const void *src, size_t bytes);
    void  (*zero)(void *dst, size_t bytes);
    int   (*sync)(void);                       /* wait for queued work; -1 with pf_error on a device fault */

    /* ---- dense algebra --------------------------------------------------------------------- */
    /* C = alpha * op(A) op(B) + beta * C, row-major; op(A) (m, k), op(B) (k, n), C (m, n).
     * ta: A is stored (k, m); tb: B is stored (n, k). */
    void (*gemm)(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc);
    /* `batch` independent gemms; matrix i starts at a + i*stride_a (likewise b, c). */
    void (*gemm_batched)(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                         long stride_a, const float *b, int ldb, long stride_b, float beta, float *c,
                         int ldc, long stride_c, int batch);

    /* ---- elementwise ----------------------------------------------------------------------- */
    void (*add)(float *out, const float *a, const float *b, size_t n);          /* out = a + b */
    void (*axpy)(float *y, const float *x, float alpha, size_t n);             /* y += alpha x */
    void (*scale)(float *x, float alpha, size_t n);                            /* x *= alpha */
    void (*fill)(float *x, float value, size_t n);
    void (*mul)(float *out, const float *a, const float *b, size_t n);          /* out = a * b */
    void (*act_forward)(pf_act act, float *out, const float *in, size_t n);
    /* din = dout * act'(in); accumulate: din += instead */
    void (*act_backward)(pf_act act, float *din, const float *dout, const float *in, size_t n,
                         int accumulate);
    /* out (rows, cols) += bias (cols) */
    void (*bias_add)(float *out, const float *bias, int rows, int cols);
    /* dbias (cols) += sum over rows of dout (rows, cols) */
    void (*bias_grad)(float *dbias, const float *dout, int rows, int cols);
    /* sum of squares of x (n); synchronises */
    double (*sumsq)(const float *x, size_t n);

    /* ---- embedding ------------------------------------------------------------------------- */
    /* out (n, C) = table[tokens[i]] ; tokens (n) on the device */
    void (*embedding_forward)(float *out, const int32_t *tokens, const float *table, int n, int C);
    /* dtable (V, C) += scatter of dout (n, C) by tokens */
    void (*embedding_backward)(float *dtable, const float *dout, const int32_t *tokens, int n, int C);

    /* ---- normalisation --------------------------------------------------------------------- */
    /* out, in (rows, C); w (C); rstd (rows) saved for backward */
    void (*rmsnorm_forward)(float *out, float *rstd, const float *in, const float *w, int rows, int C,
                            float eps);
    /* din (rows, C) overwritten; dw (C) += */
    void (*rmsnorm_backward)(float *din, float *dw, const float *dout, const float *in, const float *w,
                             const float *rstd, int rows, int C);
    /* mean, rstd (rows); w, b (C) */
    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *in, const float *w,
                              const float *b, int rows, int C, float eps);
    void (*layernorm_backward)(float *din, float *dw, float *db, const float *dout, const float *in,
                               const float *w, const float *mean, const float *rstd, int rows, int C);

    /* ---- gated MLP ------------------------------------------------------------------------- */
    /* gate_up (rows, 2F) = [gate | up]; out (rows, F) = silu(gate) * up */
    void (*swiglu_forward)(float *out, const float *gate_up, int rows, int F);
    /* dgate_up (rows, 2F) overwritten */
    void (*swiglu_backward)(float *dgate_up, const float *dout, const float *gate_up, int rows, int F);

    /* ---- attention ------------------------------------------------------------------------- */
    /* Rotary embedding in place on x: row r of `rows` is token (r % T) of its sequence, at position
     * pos0 + r % T; each row holds `heads` vectors of D (D even) at x + r*stride + h*D. Pairs are
     * (i, i + D/2) (the Llama / GPT-NeoX layout). inverse rotates by minus the angle (the backward). */
    void (*rope)(float *x, int rows, int T, int stride, int heads, int D, int pos0, float theta,
                 int inverse);
    /* Tiled causal attention with an online softmax (FlashAttention).
     * q (B, T, Hq, D), k and v (B, T, Hkv, D), each token's vectors at row stride `stride` (so they
     * may sit inside one packed qkv buffer); Hq % Hkv == 0 (grouped KV heads).
     * out (B, T, Hq, D) contiguous; lse (B, Hq, T) log-sum-exp of each query's scores, kept for
     * backward. Query i sees key j when j <= i and (window == 0 or i - j < window). Tiles are
     * tile x tile tokens; tiles wholly masked are skipped. tile_map (ceil(T/tile)^2, bytes, device)
     * receives PF_TILE_* per (q tile, k tile); counts (3, host) += tiles skipped, partial and full
     * summed over batch and heads. Returns -1 with pf_error when tile is not supported. */
    int (*attention_forward)(float *out, float *lse, const float *q, const float *k, const float *v,
                             int stride, int B, int T, int Hq, int Hkv, int D, int window, int tile,
                             uint8_t *tile_map, long *counts);
    /* dq, dk, dv: same layout and stride as q, k, v (overwritten); recomputes the probabilities. */
    int (*attention_backward)(float *dq, float *dk, float *dv, const float *dout, const float *out,
                              const float *lse, const float *q, const float *k, const float *v,
                              int stride, int B, int T, int Hq, int Hkv, int D, int window, int tile);
    /* One query token over a cache of len tokens: q (Hq, D); kcache, vcache (len, Hkv, D);
     * out (Hq, D); weights (Hq, len) the softmax probabilities (zero outside the window). */
    void (*attention_step)(float *out, float *weights, const float *q, const float *kcache,
                           const float *vcache, int len, int Hq, int Hkv, int D, int window);

    /* ---- loss and optimiser ---------------------------------------------------------------- */
    /* Softmax cross-entropy per row: logits (n, V), targets (n), mask (n) weights (0 skips a row).
     * loss (n) = mask * -log softmax[target]; correct (n) = mask * (argmax == target);
     * dlogits (n, V) = grad_scale * mask * (softmax - onehot), or skipped when dlogits is NULL. */
    void (*cross_entropy)(float *loss, float *correct, float *dlogits, const float *logits,
                          const int32_t *targets, const float *mask, int n, int V, float grad_scale);
    /* AdamW on one parameter segment; t is the 1-based step; grads are read, not cleared. */
    void (*adamw)(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int t);

    /* ---- recurrent-state layers (issue 3) --------------------------------------------------- */
    /* linear attention and GLA: chunkwise (gated) linear attention, per (batch, head)
     *   S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T,  n_t = scale * S_t^T q_t,  S (K, Vw)
     *   out_t = n_t, or with normalize: out_t[j] = n_t[j] / (n_t[V] + eps), where a 1 is appended to
     *   every v (Vw = V + 1) so that column V of S is the normaliser z_t = sum of decayed k's.
     * q, k, g (B, T, H, K); v, out (B, T, H, V). g: log-decay per key (<= 0), or NULL: no decay (the
     * ungated form). chunk: tokens per chunk (any T). chunk_states (B, H, ceil(T/chunk), K, Vw): the
     * state before each chunk, kept for backward (NULL: not kept); den (B, T, H): the denominators
     * (normalize only; NULL: not kept). state (B, H, K, Vw): read as the state before token 0 and
     * overwritten with the state after the last token (NULL: start from zeros, keep nothing); a
     * one-token step is a call with T = 1. -1 with pf_error when out of memory. */
    int (*linattn_forward)(float *out, float *chunk_states, float *den, float *state, const float *q,
                           const float *k, const float *v, const float *g, int B, int T, int H, int K,
                           int V, int chunk, float scale, int normalize, float eps);
    /* Gradients of a forward from a zero state, given its out, chunk_states and den: dq, dk (B, T, H, K),
     * dv (B, T, H, V) and dg (B, T, H, K, only when g is not NULL) overwritten. */
    int (*linattn_backward)(float *dq, float *dk, float *dv, float *dg, const float *dout,
                            const float *out, const float *chunk_states, const float *den,
                            const float *q, const float *k, const float *v, const float *g, int B,
                            int T, int H, int K, int V, int chunk, float scale, int normalize);
    /* ---- mixture of experts (issue 4) ------------------------------------------------------ */
} pf_backend;

/* The cpu backend is always there. */
extern const pf_backend pf_backend_cpu;
#ifdef PF_HAVE_CUDA
extern const pf_backend pf_backend_cuda;
#endif

#endif
