/* The cuda backend's kernels, one file per family (kernels/cuda/<family>.cu), gathered into the table
 * in backend.cu. Signatures and semantics are those of pf_backend (kernels/kernels.h); every pointer
 * is device memory unless the table says "host".
 *
 * Errors: the engine never prints or exits. Functions that return int report failures through
 * pf_error at once. The void kernels cannot: a failed launch or CUDA call is remembered here
 * (cuda_fail) and the next sync() returns -1 with that message; a sticky device fault (an illegal
 * address in a kernel) also surfaces at sync(). */
#ifndef PF_CUDA_H
#define PF_CUDA_H

#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "engine/error.h"
#include "kernels/kernels.h"
}

/* Remember the first failure since the last sync() (for the void kernels); `what` names the call.
 * Also sets pf_error. Returns -1. */
int cuda_fail(const char *what, cudaError_t err);
int cuda_fail_blas(const char *what, cublasStatus_t st);
/* pf_error only (for functions that return int and report at once). Returns -1. */
int cuda_error(const char *what, cudaError_t err);

/* Check a runtime call (CUDA_CHECK) or the last launch (CUDA_LAUNCHED, after <<<...>>>): on failure
 * remember it for sync() and evaluate to -1. The _NOW forms report through pf_error alone. */
static inline int cuda_check(cudaError_t e, const char *what) { return e == cudaSuccess ? 0 : cuda_fail(what, e); }
static inline int cuda_check_now(cudaError_t e, const char *what) { return e == cudaSuccess ? 0 : cuda_error(what, e); }
#define CUDA_CHECK(call) cuda_check((call), #call)
#define CUDA_CHECK_NOW(call) cuda_check_now((call), #call)
#define CUDA_LAUNCHED(name) cuda_check(cudaGetLastError(), "launch of " name)
#define CUDA_LAUNCHED_NOW(name) cuda_check_now(cudaGetLastError(), "launch of " name)

/* Grid size for n elements at `threads` per block, capped (kernels loop with a grid stride). */
static inline unsigned cuda_blocks(size_t n, int threads)
{
    size_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    return b > 65535u * 8 ? 65535u * 8 : (unsigned)b;
}

/* memory.cu */
int   cuda_init(void);
void *cuda_alloc(size_t bytes);
void  cuda_free(void *p);
void  cuda_upload(void *dst, const void *host_src, size_t bytes);
void  cuda_download(void *host_dst, const void *src, size_t bytes);
void  cuda_copy(void *dst, const void *src, size_t bytes);
void  cuda_zero(void *dst, size_t bytes);
int   cuda_sync(void);
/* A device scratch buffer of at least `bytes` owned by the backend (grown on demand, never shrunk);
 * slot picks one of a few independent buffers. NULL with pf_error when it cannot grow. */
void *cuda_scratch(int slot, size_t bytes);

/* blas.cu */
cublasHandle_t cuda_blas_handle(void); /* NULL with pf_error on failure */
void cuda_gemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
               const float *b, int ldb, float beta, float *c, int ldc);
void cuda_gemm_batched(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                       long stride_a, const float *b, int ldb, long stride_b, float beta, float *c,
                       int ldc, long stride_c, int batch);

/* elementwise.cu */
void   cuda_add(float *out, const float *a, const float *b, size_t n);
void   cuda_axpy(float *y, const float *x, float alpha, size_t n);
void   cuda_scale(float *x, float alpha, size_t n);
void   cuda_fill(float *x, float value, size_t n);
void   cuda_mul(float *out, const float *a, const float *b, size_t n);
void   cuda_act_forward(pf_act act, float *out, const float *in, size_t n);
void   cuda_act_backward(pf_act act, float *din, const float *dout, const float *in, size_t n,
                         int accumulate);
void   cuda_bias_add(float *out, const float *bias, int rows, int cols);
void   cuda_bias_grad(float *dbias, const float *dout, int rows, int cols);
double cuda_sumsq(const float *x, size_t n);
void   cuda_swiglu_forward(float *out, const float *gate_up, int rows, int F);
void   cuda_swiglu_backward(float *dgate_up, const float *dout, const float *gate_up, int rows, int F);

/* embedding.cu */
void cuda_embedding_forward(float *out, const int32_t *tokens, const float *table, int n, int C);
void cuda_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int n, int C);

/* norm.cu */
void cuda_rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, int rows, int C,
                          float eps);
void cuda_rmsnorm_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                           const float *rstd, int rows, int C);
void cuda_layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                            const float *b, int rows, int C, float eps);
void cuda_layernorm_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                             const float *w, const float *mean, const float *rstd, int rows, int C);

/* loss.cu */
void cuda_cross_entropy(float *loss, float *correct, float *dlogits, const float *logits,
                        const int32_t *targets, const float *mask, int n, int V, float grad_scale);

/* optim.cu */
void cuda_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                float beta2, float eps, float weight_decay, int t);

/* attention.cu; head dim up to PF_CUDA_ATTN_MAX_D, tiles of 1..1024 tokens (as on the cpu) */
#define PF_CUDA_ATTN_MAX_D 256
void cuda_rope(float *x, int rows, int T, int stride, int heads, int D, int pos0, float theta,
               int inverse);
int  cuda_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                            int stride, int B, int T, int Hq, int Hkv, int D, int window, int tile,
                            uint8_t *tile_map, long *counts);
int  cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                             const float *lse, const float *q, const float *k, const float *v,
                             int stride, int B, int T, int Hq, int Hkv, int D, int window, int tile);
void cuda_attention_step(float *out, float *weights, const float *q, const float *kcache,
                         const float *vcache, int len, int Hq, int Hkv, int D, int window);

/* ssm.cu */
void cuda_conv1d_causal_forward(float *out, const float *x, int ldx, const float *w, const float *bias,
                                float *state, int B, int T, int E, int K);
void cuda_conv1d_causal_backward(float *dx, int lddx, float *dw, float *dbias, const float *dout, const float *x,
                                 int ldx, const float *w, int B, int T, int E, int K);
int  cuda_ssm_scan_forward(const pf_ssm_scan *s);
int  cuda_ssm_scan_backward(const pf_ssm_scan *s, const pf_ssm_scan_grad *g);

/* ssd.cu */
int  cuda_ssd_forward(float *y, float *states, const float *x, int ldx, const float *dt, int ldt, const float *Bm,
                      const float *Cm, int ldbc, const float *dt_bias, const float *A_log, const float *D, int Bn,
                      int T, int H, int P, int N, int Q);
int  cuda_ssd_backward(float *dx, float *ddt, float *dB, float *dC, float *dhead, const float *dy,
                       const float *states, const float *x, int ldx, const float *dt, int ldt, const float *Bm,
                       const float *Cm, int ldbc, const float *dt_bias, const float *A_log, const float *D, int Bn,
                       int T, int H, int P, int N, int Q);
void cuda_ssd_step(float *y, float *state, float *delta, float *decay, const float *x, const float *dt,
                   const float *Bv, const float *Cv, const float *dt_bias, const float *A_log, const float *D, int H,
                   int P, int N);
void cuda_rmsnorm_gated_forward(float *out, float *rstd, const float *y, const float *z, int ldz, const float *w,
                                int rows, int E, float eps);
void cuda_rmsnorm_gated_backward(float *dy, float *dz, int ldz, float *dw, const float *dout, const float *y,
                                 const float *z, const float *w, const float *rstd, int rows, int E);

/* retention.cu (gamma is a host pointer, as in pf_backend; the recurrent kernels take dk <= 512) */
void cuda_retention_split(float *qr, float *kr, float *vh, const float *qkvg, int B, int T, int H, int dk, int dv,
                          int pos0);
void cuda_retention_split_backward(float *dqkvg, const float *dqr, const float *dkr, const float *dvh, int B, int T,
                                   int H, int dk, int dv, int pos0);
void cuda_retention_chunkwise_forward(float *o, float *states, float *state, const float *qr, const float *kr,
                                      const float *vh, const float *gamma, int B, int T, int H, int dk, int dv,
                                      int chunk, float *work);
void cuda_retention_chunkwise_backward(float *dqr, float *dkr, float *dvh, const float *do_, const float *states,
                                       const float *qr, const float *kr, const float *vh, const float *gamma,
                                       int B, int T, int H, int dk, int dv, int chunk, float *work);
void cuda_retention_recurrent_forward(float *o, float *state, const float *qr, const float *kr, const float *vh,
                                      const float *gamma, int B, int T, int H, int dk, int dv);
void cuda_retention_recurrent_backward(float *dqr, float *dkr, float *dvh, const float *do_, const float *qr,
                                       const float *kr, const float *vh, const float *gamma, int B, int T, int H,
                                       int dk, int dv, float *work);
void cuda_retention_norm_gate_forward(float *h, float *mean, float *rstd, const float *o, const float *g, int ldg,
                                      const float *w, const float *b, int B, int T, int H, int dv, float eps);
void cuda_retention_norm_gate_backward(float *do_, float *dg, float *dw, float *db, const float *dh, const float *o,
                                       const float *g, int ldg, const float *w, const float *b, const float *mean,
                                       const float *rstd, int B, int T, int H, int dv);

/* linear_attention.cu */
int  cuda_linattn_forward(float *out, float *chunk_states, float *den, float *state, const float *q, const float *k,
                          const float *v, const float *g, int B, int T, int H, int K, int V, int chunk, float scale,
                          int normalize, float eps);
int  cuda_linattn_backward(float *dq, float *dk, float *dv, float *dg, const float *dout, const float *out,
                           const float *chunk_states, const float *den, const float *q, const float *k,
                           const float *v, const float *g, int B, int T, int H, int K, int V, int chunk, float scale,
                           int normalize);

/* moe.cu */
void cuda_moe_jitter(float *out, float *noise, const float *in, size_t n, float eps, uint64_t seed, uint64_t counter);
void cuda_moe_route(float *probs, float *lse, int32_t *idx, float *w, const float *logits, int N, int E, int K,
                    int renorm);
void cuda_moe_dispatch(int32_t *slot_row, int32_t *row_token, float *row_w, int32_t *counts, const int32_t *idx,
                       const float *w, int N, int E, int K, int cap);
void cuda_moe_expert_choice(int32_t *slot_row, float *w, int32_t *row_token, float *row_w, int32_t *counts,
                            int32_t *scratch, const float *probs, int N, int E, int c);
void cuda_moe_gather(float *out, const float *in, const int32_t *row_token, const float *scale, int R, int C);
void cuda_moe_combine(float *out, const float *y, const int32_t *slot_row, const float *w, int N, int K, int C,
                      int accumulate);
void cuda_moe_gate_grad(float *dw, const float *dout, const float *y, const int32_t *slot_row, int N, int K, int C);
void cuda_moe_router_backward(float *dlogits, const float *probs, const float *lse, const int32_t *idx,
                              const float *w, const float *dw, const float *aux_grad, float z_coef, int N, int E,
                              int K, int renorm);
void cuda_moe_router_stats(float *stats, const float *probs, const float *lse, int N, int E);

#endif
