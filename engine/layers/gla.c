/* gla: Gated Linear Attention (Yang et al. 2023, "Gated Linear Attention Transformers with
 * Hardware-Efficient Training"), the layer of flash-linear-attention (fla.layers.GatedLinearAttention)
 * with its defaults: no feature map, no short convolution, swish output gate, RMSNorm per head.
 *
 *   q = x W_q^T, k = x W_k^T, v = x W_v^T                       (H heads: q, k of K, v of V)
 *   log a_t = logsigmoid(x W_a1^T W_a2^T + b) / tau             (per key: the low-rank gate gk_proj)
 *   S_t = diag(a_t) S_{t-1} + k_t v_t^T,   o_t = K^-1/2 S_t^T q_t   (per head, S (K, V))
 *   y = RMSNorm_head(o) * swish(x W_g^T),   out = y W_o^T
 * so a_t = sigmoid(.)^(1/tau) lies in (0, 1); tau = 16 as in the paper (fla's gate_logit_normalizer).
 * The norm is an RMSNorm over each head's V values with one weight (V) shared by the heads (fla's
 * g_norm). Parameter names and shapes are fla's: q_proj, k_proj (key_dim = expand_k * C, default
 * C / 2), v_proj, g_proj (value_dim = expand_v * C, default C), gk_proj.0 (rank, C), gk_proj.1 (key_dim,
 * rank) with a bias, o_proj (C, value_dim), g_norm (V). fla's default fused module calls the norm
 * weight g_norm_swish_gate.weight; the unfused one, the same numbers, g_norm.weight.
 *
 * Shapes: B batch, T tokens, C model width, H heads, K = key_dim / H, V = value_dim / H, R the gate
 * rank, rows = B * T. Training runs the chunkwise kernel with the log-decays (be->linattn_forward);
 * a step is the same kernel over one token, carrying the state (H, K, V): O(1) in the length. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "engine/layer.h"
#include "engine/layers/linear_attention.h"

static const pf_option gla_options[] = {
    {"heads", PF_OPT_INT, 4, 1, 1024, NULL, "number of heads (must divide key and value widths; default 4)"},
    {"expand_k", PF_OPT_NUMBER, 0.5, 0.0625, 8, NULL, "key width / dim (default 0.5, as fla)"},
    {"expand_v", PF_OPT_NUMBER, 1.0, 0.0625, 8, NULL, "value width / dim (default 1)"},
    {"gate_rank", PF_OPT_INT, 16, 1, 4096, NULL, "rank of the low-rank decay gate gk_proj (default 16)"},
    {"tau", PF_OPT_NUMBER, 16, 1, 1024, NULL,
     "gate temperature: log a = logsigmoid(.) / tau (default 16, fla's gate_logit_normalizer)"},
    {"norm_eps", PF_OPT_NUMBER, 1e-5, 1e-12, 1, NULL, "epsilon of the per-head RMSNorm (default 1e-5)"},
    {"chunk", PF_OPT_INT, 64, 1, 4096, NULL, "tokens per chunk of the chunkwise training form (default 64)"},
};

static const pf_probe_info gla_probes[] = {
    {"state", "[heads, d_k, d_v]", PF_REFRESH_STEP, "the recurrent state S after the last step"},
    {"state_norm", "[heads]", PF_REFRESH_STEP, "Frobenius norm of S per head after the last step"},
    {"decay", "[heads, d_k]", PF_REFRESH_STEP, "a of the last step: how much of each row of S survives"},
};

/* The activations of `rows` tokens, carved from one buffer (forward cache or step scratch). */
typedef struct gla_bufs {
    float *q, *k;        /* (rows, H*K) */
    float *v;            /* (rows, H*V) */
    float *gp;           /* (rows, H*V) output gate before swish */
    float *sg;           /* (rows, H*V) swish(gp) */
    float *lr;           /* (rows, R) the low-rank gate projection */
    float *nz;           /* (rows, H*K) minus the gate logits */
    float *g;            /* (rows, H*K) log-decay */
    float *o;            /* (rows, H*V) attention output */
    float *on;           /* (rows, H*V) after the per-head RMSNorm */
    float *y;            /* (rows, H*V) on * sg, the input of o_proj */
    float *rstd;         /* (rows, H) */
    float *states;       /* (B, H, ceil(T / chunk), K, V) chunk states */
} gla_bufs;

typedef struct gla {
    int H, K, V, R, chunk;
    float tau, norm_eps;
    float *w_q, *w_k;    /* (H*K, C) */
    float *w_v, *w_g;    /* (H*V, C) */
    float *w_a1;         /* (R, C) gk_proj.0 */
    float *w_a2;         /* (H*K, R) gk_proj.1 */
    float *b_a;          /* (H*K) */
    float *w_o;          /* (C, H*V) */
    float *w_n;          /* (V) g_norm */
    float *dw_q, *dw_k, *dw_v, *dw_g, *dw_a1, *dw_a2, *db_a, *dw_o, *dw_n;
    float *fwd;          /* forward cache */
    size_t fwd_cap;
    gla_bufs f;
    float *bwd;          /* backward scratch */
    size_t bwd_cap;
    float *sbuf;         /* step scratch */
    gla_bufs s;
    float *state;        /* (H, K, V) */
    int stepped;         /* a step ran since create/reset: the decay probe has data */
} gla;

/* floats needed by gla_carve for rows tokens and ns chunk-state floats */
static size_t gla_bufs_size(const gla *a, int rows, size_t ns)
{
    size_t kd = (size_t)a->H * a->K, vd = (size_t)a->H * a->V;
    return (size_t)rows * (4 * kd + 7 * vd + a->R + a->H) + ns;
}

static void gla_carve(const gla *a, gla_bufs *b, float *base, int rows)
{
    size_t kd = (size_t)rows * a->H * a->K, vd = (size_t)rows * a->H * a->V;
    b->q = base;
    b->k = b->q + kd;
    b->nz = b->k + kd;
    b->g = b->nz + kd;
    b->v = b->g + kd;
    b->gp = b->v + vd;
    b->sg = b->gp + vd;
    b->o = b->sg + vd;
    b->on = b->o + vd;
    b->y = b->on + vd;
    b->lr = b->y + vd;
    b->rstd = b->lr + (size_t)rows * a->R;
    b->states = b->rstd + (size_t)rows * a->H;
}

static int gla_create(pf_layer *l)
{
    gla *a = calloc(1, sizeof *a);
    if (!a) return pf_error("gla: out of memory");
    l->impl = a;
    int C = l->dim;
    a->H = pf_config_int(&l->cfg, "heads");
    a->R = pf_config_int(&l->cfg, "gate_rank");
    a->chunk = pf_config_int(&l->cfg, "chunk");
    a->tau = (float)pf_config_get(&l->cfg, "tau");
    a->norm_eps = (float)pf_config_get(&l->cfg, "norm_eps");
    int kd = (int)(C * pf_config_get(&l->cfg, "expand_k"));
    int vd = (int)(C * pf_config_get(&l->cfg, "expand_v"));
    if (kd < a->H || kd % a->H)
        return pf_error("gla: heads (%d) must divide the key width expand_k * dim (%d)", a->H, kd);
    if (vd < a->H || vd % a->H)
        return pf_error("gla: heads (%d) must divide the value width expand_v * dim (%d)", a->H, vd);
    a->K = kd / a->H;
    a->V = vd / a->H;
    float std = 0.02f;
    PF_TRY(pf_layer_add_param(l, "q_proj.weight", 2, (int[]){kd, C}, PF_INIT_NORMAL, std, 1, &a->w_q, &a->dw_q));
    PF_TRY(pf_layer_add_param(l, "k_proj.weight", 2, (int[]){kd, C}, PF_INIT_NORMAL, std, 1, &a->w_k, &a->dw_k));
    PF_TRY(pf_layer_add_param(l, "v_proj.weight", 2, (int[]){vd, C}, PF_INIT_NORMAL, std, 1, &a->w_v, &a->dw_v));
    PF_TRY(pf_layer_add_param(l, "g_proj.weight", 2, (int[]){vd, C}, PF_INIT_NORMAL, std, 1, &a->w_g, &a->dw_g));
    PF_TRY(pf_layer_add_param(l, "gk_proj.0.weight", 2, (int[]){a->R, C}, PF_INIT_NORMAL, std, 1, &a->w_a1, &a->dw_a1));
    PF_TRY(pf_layer_add_param(l, "gk_proj.1.weight", 2, (int[]){kd, a->R}, PF_INIT_NORMAL, std, 1, &a->w_a2, &a->dw_a2));
    PF_TRY(pf_layer_add_param(l, "gk_proj.1.bias", 1, (int[]){kd}, PF_INIT_ZEROS, 0, 0, &a->b_a, &a->db_a));
    PF_TRY(pf_layer_add_param(l, "o_proj.weight", 2, (int[]){C, vd}, PF_INIT_NORMAL, std, 1, &a->w_o, &a->dw_o));
    PF_TRY(pf_layer_add_param(l, "g_norm.weight", 1, (int[]){a->V}, PF_INIT_ONES, 0, 0, &a->w_n, &a->dw_n));
    a->state = l->be->alloc((size_t)a->H * a->K * a->V * sizeof(float));
    a->sbuf = l->be->alloc(gla_bufs_size(a, 1, 0) * sizeof(float));
    if (!a->state || !a->sbuf) return -1;
    gla_carve(a, &a->s, a->sbuf, 1);
    return 0;
}

/* The whole layer over B x T tokens into the buffers b; state as for be->linattn_forward. */
static int gla_run(pf_layer *l, gla_bufs *b, float *out, const float *in, int B, int T, int chunk,
                   float *state, float *states)
{
    gla *a = l->impl;
    const pf_backend *be = l->be;
    int C = l->dim, rows = B * T, kd = a->H * a->K, vd = a->H * a->V;
    size_t rk = (size_t)rows * kd, rv = (size_t)rows * vd;
    be->gemm(0, 1, rows, kd, C, 1.0f, in, C, a->w_q, C, 0.0f, b->q, kd);
    be->gemm(0, 1, rows, kd, C, 1.0f, in, C, a->w_k, C, 0.0f, b->k, kd);
    be->gemm(0, 1, rows, vd, C, 1.0f, in, C, a->w_v, C, 0.0f, b->v, vd);
    be->gemm(0, 1, rows, vd, C, 1.0f, in, C, a->w_g, C, 0.0f, b->gp, vd);
    /* log a = logsigmoid(z) / tau = -softplus(-z) / tau, z = lr W_a2^T + b */
    be->gemm(0, 1, rows, a->R, C, 1.0f, in, C, a->w_a1, C, 0.0f, b->lr, a->R);
    be->gemm(0, 1, rows, kd, a->R, 1.0f, b->lr, a->R, a->w_a2, a->R, 0.0f, b->nz, kd);
    be->bias_add(b->nz, a->b_a, rows, kd);
    be->scale(b->nz, -1.0f, rk);
    be->act_forward(PF_ACT_SOFTPLUS, b->g, b->nz, rk);
    be->scale(b->g, -1.0f / a->tau, rk);
    PF_TRY(be->linattn_forward(b->o, states, NULL, state, b->q, b->k, b->v, b->g, B, T, a->H, a->K,
                               a->V, chunk, 1.0f / sqrtf((float)a->K), 0, 0.0f));
    be->rmsnorm_forward(b->on, b->rstd, b->o, a->w_n, rows * a->H, a->V, a->norm_eps);
    be->act_forward(PF_ACT_SILU, b->sg, b->gp, rv);
    be->mul(b->y, b->on, b->sg, rv);
    be->gemm(0, 1, rows, C, vd, 1.0f, b->y, vd, a->w_o, vd, 0.0f, out, C);
    return 0;
}

static int gla_forward(pf_layer *l, float *out, const float *in, int B, int T)
{
    gla *a = l->impl;
    size_t ns = (size_t)B * a->H * ((T + a->chunk - 1) / a->chunk) * a->K * a->V;
    PF_TRY(pf_buffer_reserve(l->be, &a->fwd, &a->fwd_cap, gla_bufs_size(a, B * T, ns)));
    gla_carve(a, &a->f, a->fwd, B * T);
    return gla_run(l, &a->f, out, in, B, T, a->chunk, NULL, a->f.states);
}

static int gla_backward(pf_layer *l, float *din, const float *dout, const float *in, int B, int T)
{
    gla *a = l->impl;
    const pf_backend *be = l->be;
    const gla_bufs *f = &a->f;
    int C = l->dim, rows = B * T, kd = a->H * a->K, vd = a->H * a->V;
    size_t rk = (size_t)rows * kd, rv = (size_t)rows * vd;
    PF_TRY(pf_buffer_reserve(be, &a->bwd, &a->bwd_cap, 3 * rk + 4 * rv + (size_t)rows * a->R));
    float *dq = a->bwd, *dk = dq + rk, *dg = dk + rk;
    float *dy = dg + rk, *dgp = dy + rv, *don = dgp + rv, *dv = don + rv, *dlr = dv + rv;
    /* out = y W_o^T */
    be->gemm(1, 0, C, vd, rows, 1.0f, dout, C, f->y, vd, 1.0f, a->dw_o, vd);
    be->gemm(0, 0, rows, vd, C, 1.0f, dout, C, a->w_o, vd, 0.0f, dy, vd);
    /* y = on * swish(gp) */
    be->mul(dgp, dy, f->on, rv);
    be->act_backward(PF_ACT_SILU, dgp, dgp, f->gp, rv, 0);
    be->mul(don, dy, f->sg, rv);
    float *dO = dy;   /* dy is spent: reuse it for the gradient of o */
    be->rmsnorm_backward(dO, a->dw_n, don, f->o, a->w_n, f->rstd, rows * a->H, a->V);
    PF_TRY(be->linattn_backward(dq, dk, dv, dg, dO, f->o, f->states, NULL, f->q, f->k, f->v, f->g, B,
                                T, a->H, a->K, a->V, a->chunk, 1.0f / sqrtf((float)a->K), 0));
    /* g = -softplus(nz) / tau with nz = -z: dz = softplus'(nz) dg / tau, in place in dg */
    be->act_backward(PF_ACT_SOFTPLUS, dg, dg, f->nz, rk, 0);
    be->scale(dg, 1.0f / a->tau, rk);
    be->bias_grad(a->db_a, dg, rows, kd);
    be->gemm(1, 0, kd, a->R, rows, 1.0f, dg, kd, f->lr, a->R, 1.0f, a->dw_a2, a->R);
    be->gemm(0, 0, rows, a->R, kd, 1.0f, dg, kd, a->w_a2, a->R, 0.0f, dlr, a->R);
    /* the five projections of the input */
    const float *dp[5] = {dq, dk, dv, dgp, dlr};
    float *w[5] = {a->w_q, a->w_k, a->w_v, a->w_g, a->w_a1};
    float *dw[5] = {a->dw_q, a->dw_k, a->dw_v, a->dw_g, a->dw_a1};
    int width[5] = {kd, kd, vd, vd, a->R};
    for (int i = 0; i < 5; i++) {
        be->gemm(1, 0, width[i], C, rows, 1.0f, dp[i], width[i], in, C, 1.0f, dw[i], C);
        be->gemm(0, 0, rows, C, width[i], 1.0f, dp[i], width[i], w[i], C, i ? 1.0f : 0.0f, din, C);
    }
    return 0;
}

static int gla_step(pf_layer *l, float *out, const float *in)
{
    gla *a = l->impl;
    PF_TRY(gla_run(l, &a->s, out, in, 1, 1, 1, a->state, NULL));
    a->stepped = 1;
    return 0;
}

static void gla_reset(pf_layer *l)
{
    gla *a = l->impl;
    l->be->zero(a->state, (size_t)a->H * a->K * a->V * sizeof(float));
    a->stepped = 0;
}

static int gla_probe(pf_layer *l, const char *name, pf_tensor **out)
{
    gla *a = l->impl;
    if (strcmp(name, "decay") != 0)
        return pf_linattn_probe_state(l->be, name, a->state, a->H, a->K, a->V, a->V, out);
    if (!a->stepped) return pf_error("gla: probe 'decay' has no data before the first step");
    PF_TRY(pf_probe_from_device(l->be, out, a->s.g, 2, (int[]){a->H, a->K}));
    pf_tensor *t = *out;
    for (size_t i = 0; i < pf_tensor_numel(t); i++) t->data[i] = expf(t->data[i]);
    return 0;
}

static void gla_describe(const pf_layer *l, pf_layer_info *info)
{
    const gla *a = l->impl;
    double C = l->dim, kd = a->H * a->K, vd = a->H * a->V, kv = (double)a->H * a->K * a->V;
    /* projections q, k, v, g, the gate's two factors, o_proj; the state update and read-out */
    info->flops_per_token = 2.0 * (C * (2 * kd + 3 * vd + a->R) + a->R * kd) + 2.0 * 2 * kv;
    info->state_bytes = kv * sizeof(float);
    info->constant_state = 1;
}

static void gla_destroy(pf_layer *l)
{
    gla *a = l->impl;
    if (!a) return;
    pf_buffer_release(l->be, &a->fwd, &a->fwd_cap);
    pf_buffer_release(l->be, &a->bwd, &a->bwd_cap);
    if (a->state) l->be->free(a->state);
    if (a->sbuf) l->be->free(a->sbuf);
    free(a);
    l->impl = NULL;
}

/* every kernel this kind calls: pf_layer_create checks that the backend has them */
static const pf_kernel_need gla_kernels[] = {
    PF_KERNEL(act_backward), PF_KERNEL(act_forward), PF_KERNEL(alloc), PF_KERNEL(bias_add),
    PF_KERNEL(bias_grad), PF_KERNEL(download), PF_KERNEL(free), PF_KERNEL(gemm),
    PF_KERNEL(linattn_backward), PF_KERNEL(linattn_forward), PF_KERNEL(mul),
    PF_KERNEL(rmsnorm_backward), PF_KERNEL(rmsnorm_forward), PF_KERNEL(scale), PF_KERNEL(zero), {0, NULL},
};

const pf_layer_kind pf_layer_gla = {
    .name = "gla",
    .summary = "gated linear attention: data-dependent decay per key, swish gate, per-head RMSNorm",
    .options = gla_options,
    .n_options = sizeof gla_options / sizeof gla_options[0],
    .probes = gla_probes,
    .n_probes = sizeof gla_probes / sizeof gla_probes[0],
    .create = gla_create,
    .forward = gla_forward,
    .backward = gla_backward,
    .step = gla_step,
    .reset = gla_reset,
    .probe = gla_probe,
    .describe = gla_describe,
    .destroy = gla_destroy,
    .kernels = gla_kernels,
};
