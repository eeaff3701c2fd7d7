/* mamba2: the Mamba-2 block (Dao & Gu 2024), with the names and shapes of the public reference
 * (mamba_ssm/modules/mamba2.py, HF Mamba2Mixer), one group (ngroups = 1):
 *
 *   [z, xBC, dt] = in_proj(u)                         z (E), xBC (E + 2N), dt (H)
 *   xBC = silu(conv1d(xBC))                           causal depthwise, kernel `conv`
 *   [x, B, C] = xBC                                   x (H, P), B (N), C (N)
 *   Δ = softplus(dt + dt_bias), A = -exp(A_log)       per head
 *   h_t = exp(Δ_t A) h_{t-1} + Δ_t x_t B_tᵀ,  y_t = h_t C_t + D x_t      h (H, P, N)
 *   out = out_proj(rmsnorm(y * silu(z)) * norm.weight)
 *
 * Training runs the SSD chunked algorithm (be->ssd_forward / ssd_backward: masked quadratic form
 * inside chunks of `chunk` tokens, states passed between chunks); step runs the recurrence with O(1)
 * state: the conv tail and h.
 *
 * Shapes: B batch, T tokens, C model width, E = expand * C (d_inner), P head_dim, H = E / P heads,
 * N state size, K conv kernel, CD = E + 2N (conv channels), DIN = 2E + 2N + H (in_proj rows);
 * rows = B * T. Weights are stored (out, in) as in torch.nn.Linear. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "engine/layer.h"

static const pf_option mamba2_options[] = {
    {"state", PF_OPT_INT, 64, 1, 1024, NULL, "SSM state size N per head (default 64)"},
    {"head_dim", PF_OPT_INT, 64, 1, 1024, NULL, "head dim P; expand*dim must be a multiple (default 64)"},
    {"expand", PF_OPT_INT, 2, 1, 16, NULL, "inner width E = expand*dim (default 2)"},
    {"chunk", PF_OPT_INT, 64, 1, 4096, NULL, "SSD chunk length in tokens for training (default 64)"},
    {"conv", PF_OPT_INT, 4, 1, 16, NULL, "causal conv1d kernel size (default 4)"},
};

static const pf_probe_info mamba2_probes[] = {
    {"state", "[heads, head_dim, d_state]", PF_REFRESH_STEP, "per-head SSM state h after the last step"},
    {"dt", "[heads]", PF_REFRESH_STEP, "Δ of the last step per head (selectivity)"},
    {"decay", "[heads]", PF_REFRESH_STEP, "exp(Δ A) of the last step: how much of h survives"},
};

static const float NORM_EPS = 1e-5f;   /* RMSNormGated's eps in the reference */

typedef struct mamba2 {
    int N, P, E, H, K, Q, CD, DIN;
    /* parameters (views) and their gradients */
    float *w_in;      /* (DIN, C) in_proj.weight: rows [z | xBC | dt] */
    float *conv_w;    /* (CD, 1, K) conv1d.weight */
    float *conv_b;    /* (CD) conv1d.bias */
    float *dt_bias;   /* (H) */
    float *A_log;     /* (H) */
    float *D;         /* (H) */
    float *norm_w;    /* (E) norm.weight */
    float *w_out;     /* (C, E) out_proj.weight */
    float *dw_in, *dconv_w, *dconv_b, *ddt_bias, *dA_log, *dD, *dnorm_w, *dw_out;
    /* forward cache */
    float *zxbcdt;    /* (rows, DIN) in_proj output */
    float *xbc_pre;   /* (rows, CD) conv output before SiLU */
    float *xbc;       /* (rows, CD) after SiLU: [x | B | C] */
    float *y;         /* (rows, E) SSD output */
    float *states;    /* (B, H, nchunks, P, N) state entering each chunk */
    float *rstd;      /* (rows) */
    float *yn;        /* (rows, E) gated-norm output, input of out_proj */
    size_t zxbcdt_cap, xbc_pre_cap, xbc_cap, y_cap, states_cap, rstd_cap, yn_cap;
    /* backward scratch */
    float *dzxbcdt;   /* (rows, DIN) */
    float *dxbc;      /* (rows, CD) */
    float *dyn;       /* (rows, E) gradient of yn */
    float *dy;        /* (rows, E) */
    float *dhead;     /* (B, 3H) per sequence [d dt_bias | d A_log | d D] */
    size_t dzxbcdt_cap, dxbc_cap, dyn_cap, dy_cap, dhead_cap;
    /* step state */
    float *tail;      /* (K-1, CD) last K-1 conv inputs, oldest first */
    float *h;         /* (H, P, N) SSM state */
    float *s_zxbcdt;  /* (DIN) */
    float *s_xbc;     /* (CD) */
    float *s_y;       /* (E) then the normed y */
    float *s_yn;      /* (E) */
    float *s_rstd;    /* (1) */
    float *s_dt;      /* (H) Δ of the last step */
    float *s_decay;   /* (H) exp(Δ A) of the last step */
    int stepped;      /* a step has run since create or reset */
} mamba2;

static int mamba2_create(pf_layer *l)
{
    mamba2 *m = calloc(1, sizeof *m);
    if (!m) return pf_error("mamba2: out of memory");
    l->impl = m;
    int C = l->dim;
    m->N = pf_config_int(&l->cfg, "state");
    m->P = pf_config_int(&l->cfg, "head_dim");
    m->K = pf_config_int(&l->cfg, "conv");
    m->Q = pf_config_int(&l->cfg, "chunk");
    m->E = pf_config_int(&l->cfg, "expand") * C;
    if (m->E % m->P != 0)
        return pf_error("mamba2: option 'head_dim' (%d) must divide expand*dim = %d", m->P, m->E);
    m->H = m->E / m->P;
    m->CD = m->E + 2 * m->N;
    m->DIN = 2 * m->E + 2 * m->N + m->H;
    int E = m->E, H = m->H, K = m->K, CD = m->CD;
    /* nn.Linear's and nn.Conv1d's default init: uniform(+-1/sqrt(fan_in)) */
    PF_TRY(pf_layer_add_param(l, "in_proj.weight", 2, (int[]){m->DIN, C}, PF_INIT_UNIFORM,
                              1.0f / sqrtf((float)C), 1, &m->w_in, &m->dw_in));
    PF_TRY(pf_layer_add_param(l, "conv1d.weight", 3, (int[]){CD, 1, K}, PF_INIT_UNIFORM,
                              1.0f / sqrtf((float)K), 1, &m->conv_w, &m->dconv_w));
    PF_TRY(pf_layer_add_param(l, "conv1d.bias", 1, (int[]){CD}, PF_INIT_UNIFORM, 1.0f / sqrtf((float)K), 0,
                              &m->conv_b, &m->dconv_b));
    /* dt_bias, A_log, D stay in this order: their gradients are one (3H) block for ssd_backward */
    PF_TRY(pf_layer_add_param(l, "dt_bias", 1, (int[]){H}, PF_INIT_CUSTOM, 0, 0, &m->dt_bias, &m->ddt_bias));
    PF_TRY(pf_layer_add_param(l, "A_log", 1, (int[]){H}, PF_INIT_CUSTOM, 0, 0, &m->A_log, &m->dA_log));
    PF_TRY(pf_layer_add_param(l, "D", 1, (int[]){H}, PF_INIT_ONES, 0, 0, &m->D, &m->dD));
    PF_TRY(pf_layer_add_param(l, "norm.weight", 1, (int[]){E}, PF_INIT_ONES, 0, 0, &m->norm_w, &m->dnorm_w));
    PF_TRY(pf_layer_add_param(l, "out_proj.weight", 2, (int[]){C, E}, PF_INIT_UNIFORM,
                              1.0f / sqrtf((float)E), 1, &m->w_out, &m->dw_out));

    const pf_backend *be = l->be;
    size_t tail = (size_t)CD * (K > 1 ? K - 1 : 1);
    size_t step_floats = tail + (size_t)H * m->P * m->N + m->DIN + CD + 2 * (size_t)E + 1 + 2 * (size_t)H;
    float *s = be->alloc(step_floats * sizeof(float));
    if (!s) return -1;
    m->tail = s; s += tail;
    m->h = s; s += (size_t)H * m->P * m->N;
    m->s_zxbcdt = s; s += m->DIN;
    m->s_xbc = s; s += CD;
    m->s_y = s; s += E;
    m->s_yn = s; s += E;
    m->s_rstd = s; s += 1;
    m->s_dt = s; s += H;
    m->s_decay = s;
    return 0;
}

/* The reference's init: dt_bias = softplus⁻¹(Δ) with Δ log-uniform in [0.001, 0.1] (floor 1e-4);
 * A_log = log(A) with A uniform in [1, 16]. */
static void mamba2_init_custom(const pf_layer *l, const pf_layer_param *p, float *host, pf_rng *rng)
{
    (void)l;
    if (strcmp(p->name, "dt_bias") == 0) {
        const double lo = log(0.001), hi = log(0.1);
        for (size_t i = 0; i < p->numel; i++) {
            double dt = exp(lo + pf_rng_uniform(rng) * (hi - lo));
            if (dt < 1e-4) dt = 1e-4;
            host[i] = (float)(dt + log(-expm1(-dt)));
        }
    } else if (strcmp(p->name, "A_log") == 0) {
        for (size_t i = 0; i < p->numel; i++) host[i] = (float)log(1.0 + 15.0 * pf_rng_uniform(rng));
    }
}

static int mamba2_forward(pf_layer *l, float *out, const float *in, int B, int T)
{
    mamba2 *m = l->impl;
    const pf_backend *be = l->be;
    int rows = B * T, C = l->dim, E = m->E, N = m->N, CD = m->CD, DIN = m->DIN, H = m->H;
    int nch = (T + m->Q - 1) / m->Q;
    PF_TRY(pf_buffer_reserve(be, &m->zxbcdt, &m->zxbcdt_cap, (size_t)rows * DIN));
    PF_TRY(pf_buffer_reserve(be, &m->xbc_pre, &m->xbc_pre_cap, (size_t)rows * CD));
    PF_TRY(pf_buffer_reserve(be, &m->xbc, &m->xbc_cap, (size_t)rows * CD));
    PF_TRY(pf_buffer_reserve(be, &m->y, &m->y_cap, (size_t)rows * E));
    PF_TRY(pf_buffer_reserve(be, &m->states, &m->states_cap, (size_t)B * H * nch * m->P * N));
    PF_TRY(pf_buffer_reserve(be, &m->rstd, &m->rstd_cap, (size_t)rows));
    PF_TRY(pf_buffer_reserve(be, &m->yn, &m->yn_cap, (size_t)rows * E));

    be->gemm(0, 1, rows, DIN, C, 1.0f, in, C, m->w_in, C, 0.0f, m->zxbcdt, DIN);
    be->conv1d_causal_forward(m->xbc_pre, m->zxbcdt + E, DIN, m->conv_w, m->conv_b, NULL, B, T, CD, m->K);
    be->act_forward(PF_ACT_SILU, m->xbc, m->xbc_pre, (size_t)rows * CD);
    PF_TRY(be->ssd_forward(m->y, m->states, m->xbc, CD, m->zxbcdt + E + CD, DIN, m->xbc + E,
                           m->xbc + E + N, CD, m->dt_bias, m->A_log, m->D, B, T, H, m->P, N, m->Q));
    be->rmsnorm_gated_forward(m->yn, m->rstd, m->y, m->zxbcdt, DIN, m->norm_w, rows, E, NORM_EPS);
    be->gemm(0, 1, rows, C, E, 1.0f, m->yn, E, m->w_out, E, 0.0f, out, C);
    return 0;
}

static int mamba2_backward(pf_layer *l, float *din, const float *dout, const float *in, int B, int T)
{
    mamba2 *m = l->impl;
    const pf_backend *be = l->be;
    int rows = B * T, C = l->dim, E = m->E, N = m->N, CD = m->CD, DIN = m->DIN, H = m->H;
    PF_TRY(pf_buffer_reserve(be, &m->dzxbcdt, &m->dzxbcdt_cap, (size_t)rows * DIN));
    PF_TRY(pf_buffer_reserve(be, &m->dxbc, &m->dxbc_cap, (size_t)rows * CD));
    PF_TRY(pf_buffer_reserve(be, &m->dyn, &m->dyn_cap, (size_t)rows * E));
    PF_TRY(pf_buffer_reserve(be, &m->dy, &m->dy_cap, (size_t)rows * E));
    PF_TRY(pf_buffer_reserve(be, &m->dhead, &m->dhead_cap, (size_t)B * 3 * H));

    /* out = yn W_outᵀ */
    be->gemm(1, 0, C, E, rows, 1.0f, dout, C, m->yn, E, 1.0f, m->dw_out, E);
    be->gemm(0, 0, rows, E, C, 1.0f, dout, C, m->w_out, E, 0.0f, m->dyn, E);
    /* yn = rmsnorm(y * silu(z)) * w: dy, and dz into the z columns of dzxbcdt */
    be->rmsnorm_gated_backward(m->dy, m->dzxbcdt, DIN, m->dnorm_w, m->dyn, m->y, m->zxbcdt, m->norm_w,
                               m->rstd, rows, E);
    /* SSD: dx, dB, dC into dxbc; ddt into the dt columns of dzxbcdt */
    PF_TRY(be->ssd_backward(m->dxbc, m->dzxbcdt + E + CD, m->dxbc + E, m->dxbc + E + N, m->dhead, m->dy,
                            m->states, m->xbc, CD, m->zxbcdt + E + CD, DIN, m->xbc + E, m->xbc + E + N, CD,
                            m->dt_bias, m->A_log, m->D, B, T, H, m->P, N, m->Q));
    be->bias_grad(m->ddt_bias, m->dhead, B, 3 * H);   /* ddt_bias, dA_log, dD are contiguous */
    /* xbc = silu(conv(xBC)) */
    be->act_backward(PF_ACT_SILU, m->dxbc, m->dxbc, m->xbc_pre, (size_t)rows * CD, 0);
    be->conv1d_causal_backward(m->dzxbcdt + E, DIN, m->dconv_w, m->dconv_b, m->dxbc, m->zxbcdt + E,
                               DIN, m->conv_w, B, T, CD, m->K);
    /* zxbcdt = in W_inᵀ */
    be->gemm(1, 0, DIN, C, rows, 1.0f, m->dzxbcdt, DIN, in, C, 1.0f, m->dw_in, C);
    be->gemm(0, 0, rows, C, DIN, 1.0f, m->dzxbcdt, DIN, m->w_in, C, 0.0f, din, C);
    return 0;
}

static int mamba2_step(pf_layer *l, float *out, const float *in)
{
    mamba2 *m = l->impl;
    const pf_backend *be = l->be;
    int C = l->dim, E = m->E, N = m->N, CD = m->CD, DIN = m->DIN;
    be->gemm(0, 1, 1, DIN, C, 1.0f, in, C, m->w_in, C, 0.0f, m->s_zxbcdt, DIN);
    be->conv1d_causal_forward(m->s_xbc, m->s_zxbcdt + E, DIN, m->conv_w, m->conv_b, m->tail, 1, 1, CD, m->K);
    be->act_forward(PF_ACT_SILU, m->s_xbc, m->s_xbc, (size_t)CD);
    be->ssd_step(m->s_y, m->h, m->s_dt, m->s_decay, m->s_xbc, m->s_zxbcdt + E + CD, m->s_xbc + E,
                 m->s_xbc + E + N, m->dt_bias, m->A_log, m->D, m->H, m->P, N);
    be->rmsnorm_gated_forward(m->s_yn, m->s_rstd, m->s_y, m->s_zxbcdt, DIN, m->norm_w, 1, E, NORM_EPS);
    be->gemm(0, 1, 1, C, E, 1.0f, m->s_yn, E, m->w_out, E, 0.0f, out, C);
    m->stepped = 1;
    return 0;
}

static void mamba2_reset(pf_layer *l)
{
    mamba2 *m = l->impl;
    l->be->zero(m->tail, (size_t)m->CD * (m->K > 1 ? m->K - 1 : 1) * sizeof(float));
    l->be->zero(m->h, (size_t)m->H * m->P * m->N * sizeof(float));
    l->be->zero(m->s_dt, (size_t)m->H * sizeof(float));
    l->be->zero(m->s_decay, (size_t)m->H * sizeof(float));
    m->stepped = 0;
}

static int mamba2_probe(pf_layer *l, const char *name, pf_tensor **out)
{
    mamba2 *m = l->impl;
    if (strcmp(name, "state") == 0)
        return pf_probe_from_device(l->be, out, m->h, 3, (int[]){m->H, m->P, m->N});
    if (!m->stepped) return pf_error("mamba2: probe '%s' has no data before the first step", name);
    if (strcmp(name, "dt") == 0) return pf_probe_from_device(l->be, out, m->s_dt, 1, (int[]){m->H});
    if (strcmp(name, "decay") == 0) return pf_probe_from_device(l->be, out, m->s_decay, 1, (int[]){m->H});
    return pf_error("mamba2 has no probe '%s'", name);
}

static void mamba2_describe(const pf_layer *l, pf_layer_info *info)
{
    const mamba2 *m = l->impl;
    double C = l->dim, hpn = (double)m->H * m->P * m->N;
    /* in_proj, conv, the state update and readout (about 3 multiply-adds per state entry), the
     * gated norm, out_proj */
    info->flops_per_token = 2.0 * (C * m->DIN + (double)m->CD * m->K + 3.0 * hpn + 3.0 * m->E + C * m->E);
    info->state_bytes = sizeof(float) * ((double)m->CD * (m->K - 1) + hpn);
    info->constant_state = 1;
}

static void mamba2_destroy(pf_layer *l)
{
    mamba2 *m = l->impl;
    if (!m) return;
    const pf_backend *be = l->be;
    pf_buffer_release(be, &m->zxbcdt, &m->zxbcdt_cap);
    pf_buffer_release(be, &m->xbc_pre, &m->xbc_pre_cap);
    pf_buffer_release(be, &m->xbc, &m->xbc_cap);
    pf_buffer_release(be, &m->y, &m->y_cap);
    pf_buffer_release(be, &m->states, &m->states_cap);
    pf_buffer_release(be, &m->rstd, &m->rstd_cap);
    pf_buffer_release(be, &m->yn, &m->yn_cap);
    pf_buffer_release(be, &m->dzxbcdt, &m->dzxbcdt_cap);
    pf_buffer_release(be, &m->dxbc, &m->dxbc_cap);
    pf_buffer_release(be, &m->dyn, &m->dyn_cap);
    pf_buffer_release(be, &m->dy, &m->dy_cap);
    pf_buffer_release(be, &m->dhead, &m->dhead_cap);
    if (m->tail) be->free(m->tail);
    free(m);
    l->impl = NULL;
}

/* every kernel this kind calls: pf_layer_create checks that the backend has them */
static const pf_kernel_need mamba2_kernels[] = {
    PF_KERNEL(act_backward), PF_KERNEL(act_forward), PF_KERNEL(alloc), PF_KERNEL(bias_grad),
    PF_KERNEL(conv1d_causal_backward), PF_KERNEL(conv1d_causal_forward), PF_KERNEL(download),
    PF_KERNEL(free), PF_KERNEL(gemm), PF_KERNEL(rmsnorm_gated_backward),
    PF_KERNEL(rmsnorm_gated_forward), PF_KERNEL(ssd_backward), PF_KERNEL(ssd_forward),
    PF_KERNEL(ssd_step), PF_KERNEL(zero), {0, NULL},
};

const pf_layer_kind pf_layer_mamba2 = {
    .name = "mamba2",
    .summary = "Mamba-2: scalar decay per head, SSD chunked scan for training, recurrence for step",
    .options = mamba2_options,
    .n_options = sizeof mamba2_options / sizeof mamba2_options[0],
    .probes = mamba2_probes,
    .n_probes = sizeof mamba2_probes / sizeof mamba2_probes[0],
    .create = mamba2_create,
    .init_custom = mamba2_init_custom,
    .forward = mamba2_forward,
    .backward = mamba2_backward,
    .step = mamba2_step,
    .reset = mamba2_reset,
    .probe = mamba2_probe,
    .describe = mamba2_describe,
    .destroy = mamba2_destroy,
    .kernels = mamba2_kernels,
};
