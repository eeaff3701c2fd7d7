/* mamba: the Mamba block (Gu & Dao 2023; mamba_simple.py of state-spaces/mamba, its names and init):
 *
 *   [x | z] = in_proj(u)                        in_proj.weight (2E, C), no bias
 *   x  = SiLU(conv1d(x))                        causal depthwise, conv1d.weight (E, 1, K), .bias (E)
 *   [dt_low | B | C] = x_proj(x)                x_proj.weight (R + 2N, E)
 *   dt_low, B, C = RMSNorm each (inner_norm)    dt_layernorm.weight (R), b_layernorm.weight (N),
 *                                               c_layernorm.weight (N); eps = norm_eps
 *   Δ  = softplus(dt_proj(dt_low))              dt_proj.weight (E, R), dt_proj.bias (E)
 *   A  = -exp(A_log)                            A_log (E, N), D (E)
 *   h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t x_t,   y_t = C_t · h_t + D x_t      (selective scan)
 *   out = out_proj(y * SiLU(z))                 out_proj.weight (C, E)
 *
 * Letters: B batch, T tokens, C model width, E = expand * C (d_inner), N = state (d_state), K = conv,
 * R = dt_rank ("auto": ceil(C / 16)). The scan is the backend's ssm_scan (kernels/cpu/ssm.c):
 * parallel over sequences and channels, in time order inside, h saved only every SSM_CHUNK tokens.
 * Stepping keeps O(1) state: the conv's last K-1 inputs (K-1, E) and h (E, N).
 *
 * inner_norm (off by default) is Jamba's Mamba layer (Lieber et al. 2024; JambaMambaMixer in
 * transformers): each token's dt_low, B and C are normalised on their own, v * w / sqrt(mean(v^2) +
 * eps) over their R, N and N values, before dt_proj and the scan (Jamba added them for stable
 * training at scale). x_proj then runs as three GEMMs into contiguous blocks so that the backend's
 * rmsnorm kernels normalise them; step runs the same code over one token.
 *
 * This file also holds the block code shared with s4d (engine/layers/s4d.c, the same block with a
 * time-invariant scan); see engine/layers/mamba.h. */
#include "engine/layers/mamba.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"

/* ==== the shared block ======================================================================= */

const pf_probe_info ssm_block_probes[3] = {
    {"state", "[d_inner, d_state]", PF_REFRESH_STEP, "the SSM hidden state h after the last step"},
    {"dt", "[d_inner]", PF_REFRESH_STEP, "Δ of the last step (selectivity)"},
    {"decay", "[d_inner, d_state]", PF_REFRESH_STEP, "exp(Δ A) of the last step: how much of h survives"},
};

/* every kernel the block calls (mamba and s4d share it) */
const pf_kernel_need ssm_block_kernels[] = {
    PF_KERNEL(act_backward), PF_KERNEL(act_forward), PF_KERNEL(alloc), PF_KERNEL(bias_grad),
    PF_KERNEL(conv1d_causal_backward), PF_KERNEL(conv1d_causal_forward), PF_KERNEL(copy),
    PF_KERNEL(download), PF_KERNEL(free), PF_KERNEL(gemm), PF_KERNEL(rmsnorm_backward),
    PF_KERNEL(rmsnorm_forward), PF_KERNEL(ssm_scan_backward),
    PF_KERNEL(ssm_scan_forward), PF_KERNEL(swiglu_backward), PF_KERNEL(swiglu_forward),
    PF_KERNEL(zero), {0, NULL},
};

int ssm_block_create(pf_layer *l, int selective, int N, int expand, int K, int R)
{
    ssm_block *s = calloc(1, sizeof *s);
    if (!s) return pf_error("%s: out of memory", l->kind->name);
    l->impl = s;
    s->selective = selective;
    s->C = l->dim;
    s->E = expand * l->dim;
    s->N = N;
    s->K = K;
    s->R = R;
    const pf_backend *be = l->be;
    if (K > 1 && !(s->conv_state = be->alloc((size_t)(K - 1) * s->E * sizeof(float)))) return -1;
    if (!(s->h = be->alloc((size_t)s->E * N * sizeof(float)))) return -1;
    if (!(s->dt_last = be->alloc((size_t)s->E * sizeof(float)))) return -1;
    return 0;
}

int ssm_block_add_in(pf_layer *l)
{
    ssm_block *s = l->impl;
    int C = s->C, E = s->E, K = s->K;
    /* torch defaults: Linear and Conv1d weights and biases uniform(+-1/sqrt(fan_in)) */
    PF_TRY(pf_layer_add_param(l, "in_proj.weight", 2, (int[]){2 * E, C}, PF_INIT_UNIFORM,
                              1.0f / sqrtf((float)C), 1, &s->w_in, &s->dw_in));
    PF_TRY(pf_layer_add_param(l, "conv1d.weight", 3, (int[]){E, 1, K}, PF_INIT_UNIFORM,
                              1.0f / sqrtf((float)K), 1, &s->conv_w, &s->dconv_w));
    PF_TRY(pf_layer_add_param(l, "conv1d.bias", 1, (int[]){E}, PF_INIT_UNIFORM, 1.0f / sqrtf((float)K), 0,
                              &s->conv_b, &s->dconv_b));
    return 0;
}

int ssm_block_add_out(pf_layer *l)
{
    ssm_block *s = l->impl;
    PF_TRY(pf_layer_add_param(l, "D", 1, (int[]){s->E}, PF_INIT_ONES, 0, 0, &s->D, &s->dD));
    PF_TRY(pf_layer_add_param(l, "out_proj.weight", 2, (int[]){s->C, s->E}, PF_INIT_UNIFORM,
                              1.0f / sqrtf((float)s->E), 1, &s->w_out, &s->dw_out));
    return 0;
}

void ssm_block_init_A_log(const ssm_block *s, float *host)
{
    for (int e = 0; e < s->E; e++)
        for (int n = 0; n < s->N; n++) host[(size_t)e * s->N + n] = logf((float)(n + 1));
}

double ssm_block_sample_dt(pf_rng *rng, double dt_min, double dt_max)
{
    double dt = exp(pf_rng_uniform(rng) * (log(dt_max) - log(dt_min)) + log(dt_min));
    return dt < 1e-4 ? 1e-4 : dt;
}

/* Where dt_proj and the scan find dt_low, B and C of `rows` rows of an x_proj-shaped buffer at base
 * (xdbl, xn or a gradient of them): interleaved [dt_low | B | C] per row (ld R + 2N), or with
 * inner_norm three blocks, (rows, R), (rows, N), (rows, N), each a contiguous matrix for the norm. */
typedef struct sel_view {
    float *dt, *B, *C;
    int ld_dt, ld_bc;
} sel_view;

static sel_view sel_at(const ssm_block *s, float *base, int rows)
{
    int R = s->R, N = s->N;
    if (s->inner_norm)
        return (sel_view){base, base + (size_t)rows * R, base + (size_t)rows * (R + N), R, N};
    return (sel_view){base, base + R, base + R + N, R + 2 * N, R + 2 * N};
}

/* The scan's operands for the cached forward of B x T (state: the step's h, or NULL). */
static pf_ssm_scan block_scan(const ssm_block *s, int B, int T, float *state, float *hsave)
{
    int E = s->E, N = s->N;
    pf_ssm_scan sc = {
        .B = B, .T = T, .E = E, .N = N, .chunk = SSM_CHUNK,
        .x = s->xc, .A_log = s->A_log, .D = s->D,
        .y = s->zy + E, .y_ld = 2 * E, .hsave = hsave, .state = state,
    };
    if (s->selective) {
        sel_view v = sel_at(s, s->inner_norm ? s->xn : s->xdbl, B * T);
        sc.dt = s->dtr, sc.dt_tok = E, sc.dt_bias = s->b_dt, sc.dt_softplus = 1;
        sc.Bm = v.B, sc.b_tok = v.ld_bc, sc.b_chan = 0;
        sc.Cm = v.C, sc.c_tok = v.ld_bc, sc.c_chan = 0;
    } else {
        sc.dt = s->log_dt, sc.dt_tok = 0, sc.dt_bias = NULL, sc.dt_softplus = 0;
        sc.Bm = s->Bp, sc.b_tok = 0, sc.b_chan = N;
        sc.Cm = s->Cp, sc.c_tok = 0, sc.c_chan = N;
    }
    return sc;
}

/* forward over B x T; stepping: B = T = 1, carrying the conv window and h, no hsave */
static int block_run(pf_layer *l, float *out, const float *in, int B, int T, int stepping)
{
    ssm_block *s = l->impl;
    const pf_backend *be = l->be;
    int C = s->C, E = s->E, N = s->N, K = s->K, R = s->R, rows = B * T;
    int nch = (T + SSM_CHUNK - 1) / SSM_CHUNK;
    size_t per_row = 6 * (size_t)E + (s->selective ? (size_t)(R + 2 * N) + E : 0) +
                     (s->inner_norm ? (size_t)(R + 2 * N) + 3 : 0);
    size_t hs = stepping ? 0 : (size_t)B * nch * E * N;
    PF_TRY(pf_buffer_reserve(be, &s->cache, &s->cache_cap, per_row * rows + hs));
    float *p = s->cache;
    s->xin = p;  p += (size_t)rows * E;
    s->xpre = p; p += (size_t)rows * E;
    s->xc = p;   p += (size_t)rows * E;
    s->zy = p;   p += (size_t)rows * 2 * E;
    s->yg = p;   p += (size_t)rows * E;
    if (s->selective) {
        s->xdbl = p; p += (size_t)rows * (R + 2 * N);
        s->dtr = p;  p += (size_t)rows * E;
    }
    if (s->inner_norm) {
        s->xn = p;   p += (size_t)rows * (R + 2 * N);
        s->rstd = p; p += (size_t)rows * 3;
    }
    s->hsave = stepping ? NULL : p;

    be->gemm(0, 1, rows, E, C, 1.0f, in, C, s->w_in, C, 0.0f, s->xin, E);
    be->gemm(0, 1, rows, E, C, 1.0f, in, C, s->w_in + (size_t)E * C, C, 0.0f, s->zy, 2 * E);
    be->conv1d_causal_forward(s->xpre, s->xin, E, s->conv_w, s->conv_b, stepping ? s->conv_state : NULL,
                              B, T, E, K);
    be->act_forward(PF_ACT_SILU, s->xc, s->xpre, (size_t)rows * E);
    if (s->inner_norm) {
        /* x_proj block by block (its rows [0, R), [R, R+N), [R+N, R+2N)), each block normalised */
        sel_view raw = sel_at(s, s->xdbl, rows), nv = sel_at(s, s->xn, rows);
        be->gemm(0, 1, rows, R, E, 1.0f, s->xc, E, s->w_x, E, 0.0f, raw.dt, R);
        be->gemm(0, 1, rows, N, E, 1.0f, s->xc, E, s->w_x + (size_t)R * E, E, 0.0f, raw.B, N);
        be->gemm(0, 1, rows, N, E, 1.0f, s->xc, E, s->w_x + (size_t)(R + N) * E, E, 0.0f, raw.C, N);
        be->rmsnorm_forward(nv.dt, s->rstd, raw.dt, s->w_ndt, rows, R, s->norm_eps);
        be->rmsnorm_forward(nv.B, s->rstd + rows, raw.B, s->w_nb, rows, N, s->norm_eps);
        be->rmsnorm_forward(nv.C, s->rstd + 2 * rows, raw.C, s->w_nc, rows, N, s->norm_eps);
        be->gemm(0, 1, rows, E, R, 1.0f, nv.dt, R, s->w_dt, R, 0.0f, s->dtr, E);
    } else if (s->selective) {
        be->gemm(0, 1, rows, R + 2 * N, E, 1.0f, s->xc, E, s->w_x, E, 0.0f, s->xdbl, R + 2 * N);
        be->gemm(0, 1, rows, E, R, 1.0f, s->xdbl, R + 2 * N, s->w_dt, R, 0.0f, s->dtr, E);
    }
    pf_ssm_scan sc = block_scan(s, B, T, stepping ? s->h : NULL, s->hsave);
    PF_TRY(be->ssm_scan_forward(&sc));
    be->swiglu_forward(s->yg, s->zy, rows, E);     /* [z | y] -> SiLU(z) * y */
    be->gemm(0, 1, rows, C, E, 1.0f, s->yg, E, s->w_out, E, 0.0f, out, C);
    if (stepping && s->selective) be->copy(s->dt_last, s->dtr, (size_t)E * sizeof(float));
    return 0;
}

int ssm_block_forward(pf_layer *l, float *out, const float *in, int B, int T)
{
    return block_run(l, out, in, B, T, 0);
}

int ssm_block_backward(pf_layer *l, float *din, const float *dout, const float *in, int B, int T)
{
    ssm_block *s = l->impl;
    const pf_backend *be = l->be;
    int C = s->C, E = s->E, N = s->N, K = s->K, R = s->R, rows = B * T, ldx = R + 2 * N;
    size_t per_row = 5 * (size_t)E + (s->selective ? (size_t)ldx + E : 0) + (s->inner_norm ? (size_t)ldx : 0);
    PF_TRY(pf_buffer_reserve(be, &s->grad, &s->grad_cap, per_row * rows));
    float *p = s->grad;
    float *gyg = p;  p += (size_t)rows * E;        /* (rows, E) dL/d(SiLU(z) y) */
    float *gzy = p;  p += (size_t)rows * 2 * E;    /* (rows, 2E) [dz | dy] */
    float *gxc = p;  p += (size_t)rows * E;        /* (rows, E) dL/dxc, then dL/dxpre */
    float *gxin = gyg;                             /* (rows, E) dL/dxin, reusing gyg */
    float *gxdbl = NULL, *gdt = NULL, *graw = NULL;
    if (s->selective) {
        gxdbl = p; p += (size_t)rows * ldx;        /* (rows, R + 2N) laid out as xdbl (inner_norm: as xn) */
        gdt = p;   p += (size_t)rows * E;          /* (rows, E) dL/d dt_proj output */
    }
    if (s->inner_norm) {
        graw = p;  p += (size_t)rows * ldx;        /* (rows, R + 2N) as xdbl: before the norms */
    }

    /* out = yg W_out^T */
    be->gemm(1, 0, C, E, rows, 1.0f, dout, C, s->yg, E, 1.0f, s->dw_out, E);
    be->gemm(0, 0, rows, E, C, 1.0f, dout, C, s->w_out, E, 0.0f, gyg, E);
    be->swiglu_backward(gzy, gyg, s->zy, rows, E);

    /* the scan */
    pf_ssm_scan sc = block_scan(s, B, T, NULL, s->hsave);
    pf_ssm_scan_grad g = {.dy = gzy + E, .dy_ld = 2 * E, .dx = gxc, .dA_log = s->dA_log, .dD = s->dD};
    if (s->selective) {
        be->zero(gxdbl, (size_t)rows * ldx * sizeof(float));
        be->zero(gdt, (size_t)rows * E * sizeof(float));
        sel_view gv = sel_at(s, gxdbl, rows);
        g.ddt = gdt, g.dB = gv.B, g.dC = gv.C;
    } else {
        g.ddt = s->dlog_dt, g.dB = s->dBp, g.dC = s->dCp;
    }
    PF_TRY(be->ssm_scan_backward(&sc, &g));

    if (s->inner_norm) {
        /* dtr = norm(dt_low) W_dt^T (+ bias inside the scan) */
        sel_view nv = sel_at(s, s->xn, rows), raw = sel_at(s, s->xdbl, rows);
        sel_view gn = sel_at(s, gxdbl, rows), gr = sel_at(s, graw, rows);
        be->gemm(1, 0, E, R, rows, 1.0f, gdt, E, nv.dt, R, 1.0f, s->dw_dt, R);
        be->bias_grad(s->db_dt, gdt, rows, E);
        be->gemm(0, 0, rows, R, E, 1.0f, gdt, E, s->w_dt, R, 0.0f, gn.dt, R);
        /* the three norms */
        be->rmsnorm_backward(gr.dt, s->dw_ndt, gn.dt, raw.dt, s->w_ndt, s->rstd, rows, R);
        be->rmsnorm_backward(gr.B, s->dw_nb, gn.B, raw.B, s->w_nb, s->rstd + rows, rows, N);
        be->rmsnorm_backward(gr.C, s->dw_nc, gn.C, raw.C, s->w_nc, s->rstd + 2 * rows, rows, N);
        /* each block = xc (its rows of W_x)^T */
        const float *blk[3] = {gr.dt, gr.B, gr.C};
        int width[3] = {R, N, N}, first[3] = {0, R, R + N};
        for (int i = 0; i < 3; i++) {
            be->gemm(1, 0, width[i], E, rows, 1.0f, blk[i], width[i], s->xc, E, 1.0f,
                     s->dw_x + (size_t)first[i] * E, E);
            be->gemm(0, 0, rows, E, width[i], 1.0f, blk[i], width[i], s->w_x + (size_t)first[i] * E, E, 1.0f,
                     gxc, E);
        }
    } else if (s->selective) {
        /* dtr = dt_low W_dt^T (+ bias inside the scan) */
        be->gemm(1, 0, E, R, rows, 1.0f, gdt, E, s->xdbl, ldx, 1.0f, s->dw_dt, R);
        be->bias_grad(s->db_dt, gdt, rows, E);
        be->gemm(0, 0, rows, R, E, 1.0f, gdt, E, s->w_dt, R, 0.0f, gxdbl, ldx);
        /* xdbl = xc W_x^T */
        be->gemm(1, 0, ldx, E, rows, 1.0f, gxdbl, ldx, s->xc, E, 1.0f, s->dw_x, E);
        be->gemm(0, 0, rows, E, ldx, 1.0f, gxdbl, ldx, s->w_x, E, 1.0f, gxc, E);
    }
    be->act_backward(PF_ACT_SILU, gxc, gxc, s->xpre, (size_t)rows * E, 0);
    be->conv1d_causal_backward(gxin, E, s->dconv_w, s->dconv_b, gxc, s->xin, E, s->conv_w, B, T, E, K);

    /* [xin | z] = in W_in^T */
    const float *w_z = s->w_in + (size_t)E * C;
    be->gemm(1, 0, E, C, rows, 1.0f, gxin, E, in, C, 1.0f, s->dw_in, C);
    be->gemm(1, 0, E, C, rows, 1.0f, gzy, 2 * E, in, C, 1.0f, s->dw_in + (size_t)E * C, C);
    be->gemm(0, 0, rows, C, E, 1.0f, gxin, E, s->w_in, C, 0.0f, din, C);
    be->gemm(0, 0, rows, C, E, 1.0f, gzy, 2 * E, w_z, C, 1.0f, din, C);
    return 0;
}

int ssm_block_step(pf_layer *l, float *out, const float *in)
{
    ssm_block *s = l->impl;
    PF_TRY(block_run(l, out, in, 1, 1, 1));
    s->stepped = 1;
    return 0;
}

void ssm_block_reset(pf_layer *l)
{
    ssm_block *s = l->impl;
    if (s->conv_state) l->be->zero(s->conv_state, (size_t)(s->K - 1) * s->E * sizeof(float));
    l->be->zero(s->h, (size_t)s->E * s->N * sizeof(float));
    s->stepped = 0;
}

/* Δ (E) of the last step on the host, from the small things it depends on */
static int last_delta(pf_layer *l, float *delta)
{
    ssm_block *s = l->impl;
    int E = s->E;
    if (s->selective) {
        float *bias = malloc((size_t)E * sizeof(float));
        if (!bias) return pf_error("%s: out of memory", l->kind->name);
        l->be->download(delta, s->dt_last, (size_t)E * sizeof(float));
        l->be->download(bias, s->b_dt, (size_t)E * sizeof(float));
        for (int e = 0; e < E; e++) {
            float v = delta[e] + bias[e];
            delta[e] = v > 20.0f ? v : log1pf(expf(v));
        }
        free(bias);
    } else {
        l->be->download(delta, s->log_dt, (size_t)E * sizeof(float));
        for (int e = 0; e < E; e++) delta[e] = expf(delta[e]);
    }
    return 0;
}

/* state: h itself; dt and decay: computed when asked from the last step's dt_proj output and the
 * parameters (so they cost nothing while nobody watches) */
int ssm_block_probe(pf_layer *l, const char *name, pf_tensor **out)
{
    ssm_block *s = l->impl;
    int E = s->E, N = s->N;
    if (!strcmp(name, "state")) return pf_probe_from_device(l->be, out, s->h, 2, (int[]){E, N});
    if (!s->stepped) return pf_error("%s: probe '%s' has no data before the first step", l->kind->name, name);
    if (!strcmp(name, "dt")) {
        pf_tensor *t = pf_tensor_new1(E);
        if (!t) return -1;
        if (last_delta(l, t->data) < 0) {
            pf_tensor_free(t);
            return -1;
        }
        *out = t;
        return 0;
    }
    /* decay */
    pf_tensor *t = pf_tensor_new2(E, N);
    float *delta = malloc((size_t)E * sizeof(float));
    if (!t || !delta || last_delta(l, delta) < 0) {
        pf_tensor_free(t);
        free(delta);
        return t && delta ? -1 : pf_error("%s: out of memory", l->kind->name);
    }
    l->be->download(t->data, s->A_log, (size_t)E * N * sizeof(float));
    for (int e = 0; e < E; e++)
        for (int n = 0; n < N; n++) {
            float *v = &t->data[(size_t)e * N + n];
            *v = expf(-delta[e] * expf(*v));
        }
    free(delta);
    *out = t;
    return 0;
}

void ssm_block_describe(const pf_layer *l, pf_layer_info *info)
{
    const ssm_block *s = l->impl;
    double C = s->C, E = s->E, N = s->N, K = s->K, R = s->R;
    double macs = C * 2 * E + E * K + E * C + 3 * E * N + 2 * E;
    if (s->selective) macs += E * (R + 2 * N) + R * E;
    if (s->inner_norm) macs += 2 * (R + 2 * N);
    info->flops_per_token = 2.0 * macs;
    info->state_bytes = sizeof(float) * (E * N + (K - 1) * E);
    info->constant_state = 1;
}

void ssm_block_destroy(pf_layer *l)
{
    ssm_block *s = l->impl;
    if (!s) return;
    pf_buffer_release(l->be, &s->cache, &s->cache_cap);
    pf_buffer_release(l->be, &s->grad, &s->grad_cap);
    if (s->conv_state) l->be->free(s->conv_state);
    if (s->h) l->be->free(s->h);
    if (s->dt_last) l->be->free(s->dt_last);
    free(s);
    l->impl = NULL;
}

/* ==== the mamba kind ========================================================================= */

static const pf_option mamba_options[] = {
    {"state", PF_OPT_INT, 16, 1, 256, NULL, "d_state N: states per channel (default 16)"},
    {"expand", PF_OPT_INT, 2, 1, 16, NULL, "d_inner = expand * dim (default 2)"},
    {"conv", PF_OPT_INT, 4, 1, 64, NULL, "width of the causal depthwise conv1d (default 4)"},
    {"dt_rank", PF_OPT_INT_AUTO, 0, 1, 4096, NULL, "rank of the Δ projection; auto: ceil(dim / 16)"},
    {"dt_min", PF_OPT_NUMBER, 0.001, 1e-6, 10, NULL, "smallest Δ at init (default 0.001)"},
    {"dt_max", PF_OPT_NUMBER, 0.1, 1e-6, 10, NULL, "largest Δ at init (default 0.1)"},
    {"inner_norm", PF_OPT_BOOL, 0, 0, 1, NULL,
     "RMSNorm of dt_low, B and C after x_proj, weights dt_layernorm, b_layernorm, c_layernorm (Jamba; "
     "default false)"},
    {"norm_eps", PF_OPT_NUMBER, 1e-6, 1e-12, 1, NULL, "epsilon of the inner_norm RMSNorms (default 1e-6)"},
};

static int mamba_create(pf_layer *l)
{
    int N = pf_config_int(&l->cfg, "state"), R = pf_config_int(&l->cfg, "dt_rank");
    if (R == 0) R = (l->dim + 15) / 16;
    if (pf_config_get(&l->cfg, "dt_min") > pf_config_get(&l->cfg, "dt_max"))
        return pf_error("mamba: 'dt_min' must not exceed 'dt_max'");
    PF_TRY(ssm_block_create(l, 1, N, pf_config_int(&l->cfg, "expand"), pf_config_int(&l->cfg, "conv"), R));
    ssm_block *s = l->impl;
    int E = s->E;
    s->inner_norm = pf_config_int(&l->cfg, "inner_norm");
    s->norm_eps = (float)pf_config_get(&l->cfg, "norm_eps");
    PF_TRY(ssm_block_add_in(l));
    PF_TRY(pf_layer_add_param(l, "x_proj.weight", 2, (int[]){R + 2 * N, E}, PF_INIT_UNIFORM,
                              1.0f / sqrtf((float)E), 1, &s->w_x, &s->dw_x));
    if (s->inner_norm) {
        PF_TRY(pf_layer_add_param(l, "dt_layernorm.weight", 1, (int[]){R}, PF_INIT_ONES, 0, 0, &s->w_ndt, &s->dw_ndt));
        PF_TRY(pf_layer_add_param(l, "b_layernorm.weight", 1, (int[]){N}, PF_INIT_ONES, 0, 0, &s->w_nb, &s->dw_nb));
        PF_TRY(pf_layer_add_param(l, "c_layernorm.weight", 1, (int[]){N}, PF_INIT_ONES, 0, 0, &s->w_nc, &s->dw_nc));
    }
    PF_TRY(pf_layer_add_param(l, "dt_proj.weight", 2, (int[]){E, R}, PF_INIT_UNIFORM,
                              1.0f / sqrtf((float)R), 1, &s->w_dt, &s->dw_dt));
    PF_TRY(pf_layer_add_param(l, "dt_proj.bias", 1, (int[]){E}, PF_INIT_CUSTOM, 0, 0, &s->b_dt, &s->db_dt));
    PF_TRY(pf_layer_add_param(l, "A_log", 2, (int[]){E, N}, PF_INIT_CUSTOM, 0, 0, &s->A_log, &s->dA_log));
    return ssm_block_add_out(l);
}

/* dt_proj.bias: the inverse softplus of a log-uniform Δ; A_log: log(1..N) per row */
static void mamba_init_custom(const pf_layer *l, const pf_layer_param *p, float *host, pf_rng *rng)
{
    const ssm_block *s = l->impl;
    if (!strcmp(p->name, "A_log")) {
        ssm_block_init_A_log(s, host);
        return;
    }
    double lo = pf_config_get(&l->cfg, "dt_min"), hi = pf_config_get(&l->cfg, "dt_max");
    for (int e = 0; e < s->E; e++) {
        double dt = ssm_block_sample_dt(rng, lo, hi);
        host[e] = (float)(dt + log(-expm1(-dt)));
    }
}

const pf_layer_kind pf_layer_mamba = {
    .name = "mamba",
    .summary = "Mamba block: in_proj, causal conv1d, selective scan (Δ, B, C from the input), SiLU gate",
    .options = mamba_options,
    .n_options = sizeof mamba_options / sizeof mamba_options[0],
    .probes = ssm_block_probes,
    .n_probes = 3,
    .create = mamba_create,
    .init_custom = mamba_init_custom,
    .forward = ssm_block_forward,
    .backward = ssm_block_backward,
    .step = ssm_block_step,
    .reset = ssm_block_reset,
    .probe = ssm_block_probe,
    .describe = ssm_block_describe,
    .destroy = ssm_block_destroy,
    .kernels = ssm_block_kernels,
};
