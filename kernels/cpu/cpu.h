/* The cpu backend's kernels, one file per family (kernels/cpu/<family>.c), gathered into the table in
 * backend.c. Signatures and semantics are those of pf_backend (kernels/kernels.h). */
#ifndef PF_CPU_H
#define PF_CPU_H

#include "kernels/kernels.h"

/* Work below this many floats runs on one thread: spawning costs more than it saves. */
#define PF_CPU_PAR_MIN 32768

/* memory.c */
int   cpu_init(void);
void *cpu_alloc(size_t bytes);
void  cpu_free(void *p);
void  cpu_memcpy(void *dst, const void *src, size_t bytes);
void  cpu_zero(void *dst, size_t bytes);
int   cpu_sync(void);

/* blas.c */
void cpu_gemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc);
void cpu_gemm_batched(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                      long stride_a, const float *b, int ldb, long stride_b, float beta, float *c,
                      int ldc, long stride_c, int batch);

/* elementwise.c */
void   cpu_add(float *out, const float *a, const float *b, size_t n);
void   cpu_axpy(float *y, const float *x, float alpha, size_t n);
void   cpu_scale(float *x, float alpha, size_t n);
void   cpu_fill(float *x, float value, size_t n);
void   cpu_mul(float *out, const float *a, const float *b, size_t n);
void   cpu_act_forward(pf_act act, float *out, const float *in, size_t n);
void   cpu_act_backward(pf_act act, float *din, const float *dout, const float *in, size_t n,
                        int accumulate);
void   cpu_bias_add(float *out, const float *bias, int rows, int cols);
void   cpu_bias_grad(float *dbias, const float *dout, int rows, int cols);
double cpu_sumsq(const float *x, size_t n);
void   cpu_swiglu_forward(float *out, const float *gate_up, int rows, int F);
void   cpu_swiglu_backward(float *dgate_up, const float *dout, const float *gate_up, int rows, int F);

/* embedding.c */
void cpu_embedding_forward(float *out, const int32_t *tokens, const float *table, int n, int C);
void cpu_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int n, int C);

/* norm.c */
void cpu_rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, int rows, int C,
                         float eps);
void cpu_rmsnorm_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                          const float *rstd, int rows, int C);
void cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                           const float *b, int rows, int C, float eps);
void cpu_layernorm_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                            const float *w, const float *mean, const float *rstd, int rows, int C);

/* loss.c */
void cpu_cross_entropy(float *loss, float *correct, float *dlogits, const float *logits,
                       const int32_t *targets, const float *mask, int n, int V, float grad_scale);
void cpu_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
               float beta2, float eps, float weight_decay, int t);

/* rope.c */
void cpu_rope(float *x, int rows, int T, int stride, int heads, int D, int pos0, float theta,
              int inverse);

/* attention.c; tiles of 1..PF_CPU_ATTN_MAX_TILE tokens */
#define PF_CPU_ATTN_MAX_TILE 1024
int  cpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                           int stride, int B, int T, int Hq, int Hkv, int D, int window, int tile,
                           uint8_t *tile_map, long *counts);
int  cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                            const float *lse, const float *q, const float *k, const float *v,
                            int stride, int B, int T, int Hq, int Hkv, int D, int window, int tile);
void cpu_attention_step(float *out, float *weights, const float *q, const float *kcache,
                        const float *vcache, int len, int Hq, int Hkv, int D, int window);
/* retention.c */
void cpu_retention_split(float *qr, float *kr, float *vh, const float *qkvg, int B, int T, int H,
                         int dk, int dv, int pos0);
void cpu_retention_split_backward(float *dqkvg, const float *dqr, const float *dkr,
                                  const float *dvh, int B, int T, int H, int dk, int dv, int pos0);
void cpu_retention_chunkwise_forward(float *o, float *states, float *state, const float *qr,
                                     const float *kr, const float *vh, const float *gamma, int B,
                                     int T, int H, int dk, int dv, int chunk, float *work);
void cpu_retention_chunkwise_backward(float *dqr, float *dkr, float *dvh, const float *do_,
                                      const float *states, const float *qr, const float *kr,
                                      const float *vh, const float *gamma, int B, int T, int H,
                                      int dk, int dv, int chunk, float *work);
void cpu_retention_recurrent_forward(float *o, float *state, const float *qr, const float *kr,
                                     const float *vh, const float *gamma, int B, int T, int H,
                                     int dk, int dv);
void cpu_retention_recurrent_backward(float *dqr, float *dkr, float *dvh, const float *do_,
                                      const float *qr, const float *kr, const float *vh,
                                      const float *gamma, int B, int T, int H, int dk, int dv,
                                      float *work);
void cpu_retention_norm_gate_forward(float *h, float *mean, float *rstd, const float *o,
                                     const float *g, int ldg, const float *w, const float *b,
                                     int B, int T, int H, int dv, float eps);
void cpu_retention_norm_gate_backward(float *do_, float *dg, float *dw, float *db,
                                      const float *dh, const float *o, const float *g, int ldg,
                                      const float *w, const float *b, const float *mean,
                                      const float *rstd, int B, int T, int H, int dv);
/* ssm.c: causal depthwise conv1d and the selective scan (mamba, s4d) */
void cpu_conv1d_causal_forward(float *out, const float *x, int ldx, const float *w,
                               const float *bias, float *state, int B, int T, int E, int K);
void cpu_conv1d_causal_backward(float *dx, int lddx, float *dw, float *dbias, const float *dout,
                                const float *x, int ldx, const float *w, int B, int T, int E, int K);
int  cpu_ssm_scan_forward(const pf_ssm_scan *s);
int  cpu_ssm_scan_backward(const pf_ssm_scan *s, const pf_ssm_scan_grad *g);
/* ssd.c (mamba2) */
int  cpu_ssd_forward(float *y, float *states, const float *x, int ldx, const float *dt, int ldt,
                     const float *Bm, const float *Cm, int ldbc, const float *dt_bias,
                     const float *A_log, const float *D, int Bn, int T, int H, int P, int N, int Q);
int  cpu_ssd_backward(float *dx, float *ddt, float *dB, float *dC, float *dhead, const float *dy,
                      const float *states, const float *x, int ldx, const float *dt, int ldt,
                      const float *Bm, const float *Cm, int ldbc, const float *dt_bias,
                      const float *A_log, const float *D, int Bn, int T, int H, int P, int N, int Q);
void cpu_ssd_step(float *y, float *state, float *delta, float *decay, const float *x, const float *dt,
                  const float *Bv, const float *Cv, const float *dt_bias, const float *A_log,
                  const float *D, int H, int P, int N);
void cpu_rmsnorm_gated_forward(float *out, float *rstd, const float *y, const float *z, int ldz,
                               const float *w, int rows, int E, float eps);
void cpu_rmsnorm_gated_backward(float *dy, float *dz, int ldz, float *dw, const float *dout,
                                const float *y, const float *z, const float *w, const float *rstd,
                                int rows, int E);

/* moe.c */
void cpu_moe_jitter(float *out, float *noise, const float *in, size_t n, float eps, uint64_t seed,
                    uint64_t counter);
void cpu_moe_route(float *probs, float *lse, int32_t *idx, float *w, const float *logits, int N, int E,
                   int K, int renorm);
void cpu_moe_dispatch(int32_t *slot_row, int32_t *row_token, float *row_w, int32_t *counts,
                      const int32_t *idx, const float *w, int N, int E, int K, int cap);
void cpu_moe_expert_choice(int32_t *slot_row, float *w, int32_t *row_token, float *row_w,
                           int32_t *counts, int32_t *scratch, const float *probs, int N, int E, int c);
void cpu_moe_gather(float *out, const float *in, const int32_t *row_token, const float *scale, int R,
                    int C);
void cpu_moe_combine(float *out, const float *y, const int32_t *slot_row, const float *w, int N, int K,
                     int C, int accumulate);
void cpu_moe_gate_grad(float *dw, const float *dout, const float *y, const int32_t *slot_row, int N,
                       int K, int C);
void cpu_moe_router_backward(float *dlogits, const float *probs, const float *lse, const int32_t *idx,
                             const float *w, const float *dw, const float *aux_grad, float z_coef,
                             int N, int E, int K, int renorm);
void cpu_moe_router_stats(float *stats, const float *probs, const float *lse, int N, int E);

#endif
