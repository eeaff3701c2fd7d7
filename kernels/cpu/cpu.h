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

/* linear_attention.c */
int cpu_linattn_forward(float *out, float *chunk_states, float *den, float *state, const float *q,
                        const float *k, const float *v, const float *g, int B, int T, int H, int K,
                        int V, int chunk, float scale, int normalize, float eps);
int cpu_linattn_backward(float *dq, float *dk, float *dv, float *dg, const float *dout,
                         const float *out, const float *chunk_states, const float *den,
                         const float *q, const float *k, const float *v, const float *g, int B,
                         int T, int H, int K, int V, int chunk, float scale, int normalize);

#endif
