/* The gated SSM block shared by the mamba and s4d layer kinds (engine/layers/mamba.c holds the
 * code, s4d.c only its options, parameters and init). The two differ only in where the scan's Δ, B
 * and C come from: computed from every token (mamba, selective) or parameters fixed per channel
 * (s4d, time-invariant); in_proj, conv1d, SiLU, the D skip, the SiLU(z) gate and out_proj are the
 * same, so the two can be compared with everything else equal.
 *
 * Letters: B batch, T tokens, C model width, E = expand * C (d_inner), N states per channel
 * (d_state), K conv width, R dt_rank; rows = B * T. */
#ifndef PF_LAYERS_MAMBA_H
#define PF_LAYERS_MAMBA_H

#include "engine/layer.h"

typedef struct ssm_block {
    int selective;              /* 1: mamba, 0: s4d */
    int C, E, N, K, R;          /* R: dt_rank (mamba only) */
    int inner_norm;             /* mamba's inner_norm: RMSNorm of dt_low, B and C (Jamba) */
    float norm_eps;             /* their epsilon */
    /* parameters (views bound by the model) and their gradients */
    float *w_in, *dw_in;        /* (2E, C) in_proj.weight: rows [0, E) give x, [E, 2E) give z */
    float *conv_w, *dconv_w;    /* (E, 1, K) conv1d.weight */
    float *conv_b, *dconv_b;    /* (E) conv1d.bias */
    float *w_x, *dw_x;          /* (R + 2N, E) x_proj.weight -> [dt_low | B | C] (mamba) */
    float *w_ndt, *dw_ndt;      /* (R) dt_layernorm.weight (inner_norm) */
    float *w_nb, *dw_nb;        /* (N) b_layernorm.weight (inner_norm) */
    float *w_nc, *dw_nc;        /* (N) c_layernorm.weight (inner_norm) */
    float *w_dt, *dw_dt;        /* (E, R) dt_proj.weight (mamba) */
    float *b_dt, *db_dt;        /* (E) dt_proj.bias (mamba) */
    float *log_dt, *dlog_dt;    /* (E) Δ = exp(log_dt) (s4d) */
    float *Bp, *dBp;            /* (E, N) B (s4d) */
    float *Cp, *dCp;            /* (E, N) C (s4d) */
    float *A_log, *dA_log;      /* (E, N) A = -exp(A_log) */
    float *D, *dD;              /* (E) */
    float *w_out, *dw_out;      /* (C, E) out_proj.weight */
    /* forward cache, carved from `cache` for the last B, T */
    float *cache;  size_t cache_cap;
    float *xin;                 /* (rows, E) the x half of in_proj */
    float *xpre;                /* (rows, E) conv1d output, before SiLU */
    float *xc;                  /* (rows, E) SiLU(conv1d(x)): the scan's input */
    float *xdbl;                /* (rows, R + 2N) x_proj output [dt_low | B | C] (mamba); with
                                   inner_norm as three blocks: dt_low (rows, R), B (rows, N), C (rows, N) */
    float *xn;                  /* inner_norm: the three blocks of xdbl normalised, as the scan reads them */
    float *rstd;                /* inner_norm: (3, rows) 1/rms of each row of the three blocks */
    float *dtr;                 /* (rows, E) dt_proj output before bias and softplus (mamba) */
    float *zy;                  /* (rows, 2E) [z | y]: the gate's input, y from the scan */
    float *yg;                  /* (rows, E) SiLU(z) * y */
    float *hsave;               /* (B, ceil(T/chunk), E, N) h entering each scan chunk */
    /* backward scratch */
    float *grad;   size_t grad_cap;
    /* step state */
    float *conv_state;          /* (K-1, E) the last K-1 inputs of the conv (NULL when K = 1) */
    float *h;                   /* (E, N) the SSM state */
    float *dt_last;             /* (E) dt_proj output of the last step, before bias (mamba) */
    int stepped;                /* a step ran since the last reset */
} ssm_block;

/* The scan's chunk: h is saved every SSM_CHUNK tokens in forward and recomputed inside in backward. */
#define SSM_CHUNK 32

extern const pf_probe_info ssm_block_probes[3];
extern const pf_kernel_need ssm_block_kernels[];  /* every kernel the block calls */

/* Allocates l->impl; the kind then registers its parameters (ssm_block_add_* in order). */
int  ssm_block_create(pf_layer *l, int selective, int N, int expand, int K, int R);
int  ssm_block_add_in(pf_layer *l);      /* in_proj.weight, conv1d.weight, conv1d.bias */
int  ssm_block_add_out(pf_layer *l);     /* D, out_proj.weight (after the kind's own) */
/* log(1..N) in every row of A_log, the S4D-Real / Mamba initialisation */
void ssm_block_init_A_log(const ssm_block *s, float *host);
/* Δ sampled log-uniform in [dt_min, dt_max] per channel (floored at 1e-4, as the reference) */
double ssm_block_sample_dt(pf_rng *rng, double dt_min, double dt_max);

int  ssm_block_forward(pf_layer *l, float *out, const float *in, int B, int T);
int  ssm_block_backward(pf_layer *l, float *din, const float *dout, const float *in, int B, int T);
int  ssm_block_step(pf_layer *l, float *out, const float *in);
void ssm_block_reset(pf_layer *l);
int  ssm_block_probe(pf_layer *l, const char *name, pf_tensor **out);
void ssm_block_describe(const pf_layer *l, pf_layer_info *info);
void ssm_block_destroy(pf_layer *l);

#endif
