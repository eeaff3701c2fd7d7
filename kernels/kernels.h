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

/* A selective scan (recurrent-state layers, issue 3): B sequences of T tokens (row r = b*T + t), E
 * channels of N states each. Per channel e, with h_{-1} = state (or zeros):
 *   Δ_t = softplus(dt[r, e] + dt_bias[e])  when dt_softplus,  else  exp(dt[r, e])   (S4D's log_dt)
 *   A   = -exp(A_log[e, :]);   h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t x_t B_t;   y_t = C_t · h_t + D[e] x_t
 * Δ, B and C are addressed by strides, so one kernel serves the selective form (Mamba: per token,
 * B and C shared by the channels) and the time-invariant one (S4D: per channel, token stride 0). */
typedef struct pf_ssm_scan {
    int B, T, E, N;
    int chunk;                        /* h is saved entering every `chunk` tokens; backward recomputes between */
    const float *x;                   /* (B*T, E) */
    const float *dt; int dt_tok;      /* element (r, e) at dt[r*dt_tok + e]; dt_tok 0: (E) per channel */
    const float *dt_bias;             /* (E) or NULL */
    int dt_softplus;                  /* 1: Δ = softplus(dt + dt_bias); 0: Δ = exp(dt) */
    const float *A_log;               /* (E, N) */
    const float *Bm; int b_tok, b_chan; /* B_t[n] of channel e at Bm[r*b_tok + e*b_chan + n] */
    const float *Cm; int c_tok, c_chan; /* likewise for C */
    const float *D;                   /* (E) or NULL */
    float *y; int y_ld;               /* (B*T, y_ld) written by forward */
    float *hsave;                     /* (B, ceil(T/chunk), E, N) h entering each chunk: written by forward
                                         (NULL: no backward follows), read by backward */
    float *state;                     /* (B, E, N) or NULL: initial h, replaced by the last h (forward) */
} pf_ssm_scan;

/* Gradients of a pf_ssm_scan for the loss with dL/dy = dy. dx is overwritten; the rest are
 * accumulated (+=) in the layout of their operand (they may be parameters, as in S4D, or activations,
 * as in Mamba: then the caller zeroes them). ddt is the gradient with respect to dt before the bias
 * (so also dt_bias's, which the caller sums over rows). */
typedef struct pf_ssm_scan_grad {
    const float *dy; int dy_ld;       /* (B*T, dy_ld) */
    float *dx;                        /* (B*T, E) */
    float *ddt;                       /* as dt */
    float *dA_log;                    /* (E, N) */
    float *dB, *dC;                   /* as Bm, Cm */
    float *dD;                        /* (E); NULL when D is */
} pf_ssm_scan_grad;

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
     * summed over batch and heads (either may be NULL). Returns -1 with pf_error when tile is not
     * supported (cpu: 1..1024) or the shape is bad. */
    int (*attention_forward)(float *out, float *lse, const float *q, const float *k, const float *v,
                             int stride, int B, int T, int Hq, int Hkv, int D, int window, int tile,
                             uint8_t *tile_map, long *counts);
    /* dq, dk, dv: same layout and stride as q, k, v (their head slots overwritten; so a packed dqkv
     * buffer is written whole); recomputes the probabilities from q, k and lse (FlashAttention-2);
     * dk, dv of a kv head sum over the query heads that share it. */
    int (*attention_backward)(float *dq, float *dk, float *dv, const float *dout, const float *out,
                              const float *lse, const float *q, const float *k, const float *v,
                              int stride, int B, int T, int Hq, int Hkv, int D, int window, int tile);
    /* One query token, the cache's last (position len - 1), over a cache of len tokens: q (Hq, D);
     * kcache, vcache (len, Hkv, D); out (Hq, D); weights (Hq, len) the softmax probabilities (zero
     * outside the window). */
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
    /* retention (RetNet). Per token, qkvg (B*T, N) holds [q (C) | k (C) | v (V) | g (V)], N = 2C + 2V,
     * C = H*dk, V = H*dv; head h owns columns h*dk.. of q and k and h*dv.. of v and g. Per head the
     * kernels work on qr, kr (B, H, T, dk) and vh, o (B, H, T, dv). gamma (H) is on the host.
     * work: scratch of B*H*(2*L*L + L*(dk+dv) + (L+1) + 2*dk*dv) floats, L = min(chunk, T) for the
     * chunkwise kernels and L = 0 for the recurrent ones. */
    /* qr, kr, vh overwritten from qkvg; q and k are rotated (xPos/RoPE) at position pos0 + t: pair
     * (2i, 2i+1) by the angle (pos0+t) * 10000^(-i/(dk/2-1)); k is scaled by dk^-0.5. */
    void (*retention_split)(float *qr, float *kr, float *vh, const float *qkvg, int B, int T, int H,
                            int dk, int dv, int pos0);
    /* The adjoint of retention_split: the q, k, v columns of dqkvg (B*T, N) overwritten; its g
     * columns are left alone. */
    void (*retention_split_backward)(float *dqkvg, const float *dqr, const float *dkr,
                                     const float *dvh, int B, int T, int H, int dk, int dv, int pos0);
    /* Chunkwise retention from a zero state: o (B, H, T, dv) overwritten; inside a chunk
     * (Q K^T .* D) V, across chunks the state R (dk, dv). chunk >= T is the parallel form.
     * states (B, H, ceil(T/chunk), dk, dv) receives the state entering each chunk (for backward);
     * state (B, H, dk, dv) the final state, or NULL. */
    void (*retention_chunkwise_forward)(float *o, float *states, float *state, const float *qr,
                                        const float *kr, const float *vh, const float *gamma, int B,
                                        int T, int H, int dk, int dv, int chunk, float *work);
    /* dqr, dkr, dvh overwritten from do (B, H, T, dv) and the forward's states. */
    void (*retention_chunkwise_backward)(float *dqr, float *dkr, float *dvh, const float *do_,
                                         const float *states, const float *qr, const float *kr,
                                         const float *vh, const float *gamma, int B, int T, int H,
                                         int dk, int dv, int chunk, float *work);
    /* Recurrent retention: S = gamma S + k^T v, o = q S per token, from state (B, H, dk, dv)
     * (read, then left holding the final state); T = 1 is one step. o overwritten. */
    void (*retention_recurrent_forward)(float *o, float *state, const float *qr, const float *kr,
                                        const float *vh, const float *gamma, int B, int T, int H,
                                        int dk, int dv);
    /* Backward of a recurrent forward that started from a zero state; dqr, dkr, dvh overwritten. */
    void (*retention_recurrent_backward)(float *dqr, float *dkr, float *dvh, const float *do_,
                                         const float *qr, const float *kr, const float *vh,
                                         const float *gamma, int B, int T, int H, int dk, int dv,
                                         float *work);
    /* h (B*T, V) = silu(g) * GroupNorm_H(o): per token and head the dv values of o (B, H, T, dv)
     * normalised to mean 0, variance 1 (+eps), times w (V) plus b (V). g: rows of stride ldg.
     * mean, rstd (B*T, H) saved for backward. */
    void (*retention_norm_gate_forward)(float *h, float *mean, float *rstd, const float *o,
                                        const float *g, int ldg, const float *w, const float *b,
                                        int B, int T, int H, int dv, float eps);
    /* dh (B*T, V) -> do (B, H, T, dv) and dg (rows of stride ldg) overwritten; dw, db (V) += */
    void (*retention_norm_gate_backward)(float *do_, float *dg, float *dw, float *db,
                                         const float *dh, const float *o, const float *g, int ldg,
                                         const float *w, const float *b, const float *mean,
                                         const float *rstd, int B, int T, int H, int dv);
    /* Causal depthwise conv1d over time (torch Conv1d groups=E, padding K-1, first T outputs):
     * out (B*T, E) = bias[e] + sum_k w[e, k] x[t - K + 1 + k, e]; x (B*T, ldx); w (E, K); bias (E) or
     * NULL; state (B, K-1, E) or NULL: the K-1 inputs before the first token (oldest first; NULL:
     * zeros), replaced by the last K-1 inputs (this is how step carries the conv's window). */
    void (*conv1d_causal_forward)(float *out, const float *x, int ldx, const float *w,
                                  const float *bias, float *state, int B, int T, int E, int K);
    /* zeros before the first token; dx (B*T, lddx) overwritten; dw (E, K), dbias (E) += (or NULL) */
    void (*conv1d_causal_backward)(float *dx, int lddx, float *dw, float *dbias, const float *dout,
                                   const float *x, int ldx, const float *w, int B, int T, int E, int K);
    /* The scan of pf_ssm_scan (above), in time order per (sequence, channel); never holds all
     * (T, E, N) states. -1 with pf_error on allocation failure. */
    int (*ssm_scan_forward)(const pf_ssm_scan *s);
    /* After ssm_scan_forward on the same s (with hsave); fills g as documented there. */
    int (*ssm_scan_backward)(const pf_ssm_scan *s, const pf_ssm_scan_grad *g);
    /* mamba2 (SSD, kernels/cpu/ssd.c). Bn batch, T tokens, H heads, P head dim, N state, Q chunk;
     * one group: B and C are shared by all heads. Per head: Δ = softplus(dt + dt_bias), A = -exp(A_log),
     * h_t = exp(Δ_t A) h_{t-1} + Δ_t x_t B_tᵀ (P, N), y_t = h_t C_t + D x_t.
     * x (Bn, T, H*P) at row stride ldx; dt (Bn, T, H) raw, at row stride ldt; Bm, Cm (Bn, T, N) at
     * row stride ldbc; dt_bias, A_log, D (H). y (Bn, T, H*P) contiguous; states (Bn, H, ceil(T/Q), P, N)
     * the state entering each chunk, written by forward for backward. -1 with pf_error on no memory. */
    int (*ssd_forward)(float *y, float *states, const float *x, int ldx, const float *dt, int ldt,
                       const float *Bm, const float *Cm, int ldbc, const float *dt_bias,
                       const float *A_log, const float *D, int Bn, int T, int H, int P, int N, int Q);
    /* dx, ddt, dB, dC: the layouts and strides of x, dt, Bm, Cm (overwritten); dhead (Bn, 3H)
     * overwritten with each sequence's [d dt_bias | d A_log | d D] (sum it over Bn). */
    int (*ssd_backward)(float *dx, float *ddt, float *dB, float *dC, float *dhead, const float *dy,
                        const float *states, const float *x, int ldx, const float *dt, int ldt,
                        const float *Bm, const float *Cm, int ldbc, const float *dt_bias,
                        const float *A_log, const float *D, int Bn, int T, int H, int P, int N, int Q);
    /* One token: state (H, P, N) updated in place; x (H*P), dt (H) raw, Bv, Cv (N); y (H*P);
     * delta (H) = Δ and decay (H) = exp(Δ A) of this token. */
    void (*ssd_step)(float *y, float *state, float *delta, float *decay, const float *x,
                     const float *dt, const float *Bv, const float *Cv, const float *dt_bias,
                     const float *A_log, const float *D, int H, int P, int N);
    /* Gated RMSNorm (norm_before_gate = False): out = rmsnorm(y * silu(z)) * w over E per row.
     * y, out (rows, E); z (rows, E) at row stride ldz; w (E); rstd (rows) saved for backward. */
    void (*rmsnorm_gated_forward)(float *out, float *rstd, const float *y, const float *z, int ldz,
                                  const float *w, int rows, int E, float eps);
    /* dy (rows, E) and dz (at row stride ldz) overwritten; dw (E) += */
    void (*rmsnorm_gated_backward)(float *dy, float *dz, int ldz, float *dw, const float *dout,
                                   const float *y, const float *z, const float *w, const float *rstd,
                                   int rows, int E);
    /* ---- mixture of experts (issue 4) ------------------------------------------------------ */
    /* N tokens (rows), E experts, K slots per token (top_k for token choice, E for expert choice),
     * R grouped rows (a token once per expert that takes it; expert e's rows are contiguous).
     * Index arrays are int32 on the device. */
    /* Router jitter: out, noise (n) with noise[i] = uniform(1 - eps, 1 + eps) from a counter-based
     * hash of (seed, counter, i), out = in * noise: the same numbers on every backend and thread count. */
    void (*moe_jitter)(float *out, float *noise, const float *in, size_t n, float eps, uint64_t seed,
                       uint64_t counter);
    /* logits (N, E) -> probs (N, E) softmax, lse (N) logsumexp. With K > 0 also idx (N, K): the K
     * most probable experts, best first (ties: lower expert id), and w (N, K) their gate weights:
     * p renormalised over the K when renorm, else p itself. */
    void (*moe_route)(float *probs, float *lse, int32_t *idx, float *w, const float *logits, int N,
                      int E, int K, int renorm);
    /* Token-choice grouping. Slots (t, j) are offered in priority order, j major then t (all first
     * choices by token index, then all second choices, ...); expert idx[t, j] accepts while it holds
     * fewer than cap slots (cap < 0: no limit). slot_row (N, K): the slot's grouped row, -1 when
     * dropped. row_token, row_w (N*K, first R used): token and gate weight of each grouped row,
     * rows of one expert in acceptance order. counts (2E + 1): kept per expert (E), chosen per expert
     * before the limit (E), dropped slots (1). */
    void (*moe_dispatch)(int32_t *slot_row, int32_t *row_token, float *row_w, int32_t *counts,
                         const int32_t *idx, const float *w, int N, int E, int K, int cap);
    /* Expert-choice grouping: expert e takes the c tokens with the largest probs[:, e] (ties: lower
     * token index); its rows are [e*c, (e+1)*c), in token order. slot_row (N, E): row of (t, e) or
     * -1; w (N, E): probs where taken, else 0; row_token, row_w (E*c); counts (2E + 1) as in
     * moe_dispatch (kept = chosen = c; the last: tokens no expert took); scratch (E, 2N) int32. */
    void (*moe_expert_choice)(int32_t *slot_row, float *w, int32_t *row_token, float *row_w,
                              int32_t *counts, int32_t *scratch, const float *probs, int N, int E,
                              int c);
    /* out (R, C): row r = in[row_token[r]] * (scale ? scale[r] : 1); in (N, C). */
    void (*moe_gather)(float *out, const float *in, const int32_t *row_token, const float *scale, int R,
                       int C);
    /* Weighted scatter back, one token at a time (no atomics): out[t] (=, or += when accumulate)
     * sum over j < K with slot_row[t, j] >= 0 of (w ? w[t, j] : 1) * y[slot_row[t, j]];
     * out (N, C), y (R, C), slot_row and w (N, K). A token with no row gets 0 (or is left). */
    void (*moe_combine)(float *out, const float *y, const int32_t *slot_row, const float *w, int N,
                        int K, int C, int accumulate);
    /* dw (N, K) = <dout[t], y[slot_row[t, j]]>, 0 where slot_row is -1. */
    void (*moe_gate_grad)(float *dw, const float *dout, const float *y, const int32_t *slot_row, int N,
                          int K, int C);
    /* Router backward, dlogits (N, E) overwritten. dw (N, K): gradient of the gate weights of the
     * slots, whose experts are idx (N, K) (NULL: slot j is expert j) with weights w (N, K) as
     * moe_route made them (renorm or not). aux_grad (E): a gradient added to every token's probs
     * (the balance loss); z_coef: dlogits += z_coef * lse[t] * probs[t] (the z-loss). */
    void (*moe_router_backward)(float *dlogits, const float *probs, const float *lse,
                                const int32_t *idx, const float *w, const float *dw,
                                const float *aux_grad, float z_coef, int N, int E, int K, int renorm);
    /* stats (E + 2): sum over tokens of probs (E), of lse^2 (1), of the entropy -sum p log p (1). */
    void (*moe_router_stats)(float *stats, const float *probs, const float *lse, int N, int E);
} pf_backend;

/* The cpu backend is always there. */
extern const pf_backend pf_backend_cpu;
#ifdef PF_HAVE_CUDA
extern const pf_backend pf_backend_cuda;
#endif

#endif
