/* mlp: the position-wise feed-forward layer, GELU (fc1 -> gelu -> fc2, with biases) or SwiGLU
 * (down_proj(silu(gate_proj x) * up_proj x), no biases, the Llama form and names).
 *
 * Shapes: B batch, T tokens, C model width, F hidden width; rows = B * T. Weights are stored
 * (out, in) as in torch.nn.Linear, so y = x W^T. gate_proj and up_proj are registered back to back,
 * which makes them one (2F, C) matrix: one GEMM gives [gate | up] per row. */
#include <math.h>
#include <stdlib.h>

#include "engine/error.h"
#include "engine/layer.h"

enum { ACT_GELU = 0, ACT_SWIGLU = 1 };

static const pf_option mlp_options[] = {
    {"hidden", PF_OPT_INT_AUTO, 0, 1, 1 << 16, NULL,
     "hidden width F; auto: 4*dim for gelu, 8/3*dim rounded up to a multiple of 8 for swiglu"},
    {"act", PF_OPT_CHOICE, ACT_SWIGLU, 0, 1, "gelu|swiglu", "activation (default swiglu)"},
};

typedef struct mlp {
    int act, F;
    float *w_in;     /* (2F, C) for swiglu [gate_proj; up_proj], (F, C) for gelu */
    float *b_in;     /* (F) gelu only */
    float *w_up;     /* (F, C) swiglu: the second half of w_in */
    float *w_out;    /* (C, F) */
    float *b_out;    /* (C) gelu only */
    float *dw_in, *dw_up, *db_in, *dw_out, *db_out;
    /* forward cache */
    float *h;        /* (rows, 2F or F) pre-activation */
    float *a;        /* (rows, F) activation */
    float *da;       /* (rows, 2F or F) scratch for backward */
    size_t h_cap, a_cap, da_cap;
} mlp;

/* the hidden width a given config resolves to */
static int mlp_hidden(const pf_layer *l, int act)
{
    int hidden = pf_config_int(&l->cfg, "hidden");
    if (hidden > 0) return hidden;
    if (act == ACT_GELU) return 4 * l->dim;
    return (8 * l->dim / 3 + 7) / 8 * 8;
}

static int mlp_create(pf_layer *l)
{
    mlp *m = calloc(1, sizeof *m);
    if (!m) return pf_error("mlp: out of memory");
    l->impl = m;
    m->act = pf_config_int(&l->cfg, "act");
    m->F = mlp_hidden(l, m->act);
    int C = l->dim, F = m->F;
    float std = 0.02f;
    if (m->act == ACT_SWIGLU) {
        PF_TRY(pf_layer_add_param(l, "gate_proj.weight", 2, (int[]){F, C}, PF_INIT_NORMAL, std, 1, &m->w_in, &m->dw_in));
        /* up_proj follows gate_proj in memory: together they are w_in (2F, C) */
        PF_TRY(pf_layer_add_param(l, "up_proj.weight", 2, (int[]){F, C}, PF_INIT_NORMAL, std, 1, &m->w_up, &m->dw_up));
        PF_TRY(pf_layer_add_param(l, "down_proj.weight", 2, (int[]){C, F}, PF_INIT_NORMAL, std, 1, &m->w_out, &m->dw_out));
    } else {
        PF_TRY(pf_layer_add_param(l, "fc1.weight", 2, (int[]){F, C}, PF_INIT_NORMAL, std, 1, &m->w_in, &m->dw_in));
        PF_TRY(pf_layer_add_param(l, "fc1.bias", 1, (int[]){F}, PF_INIT_ZEROS, 0, 0, &m->b_in, &m->db_in));
        PF_TRY(pf_layer_add_param(l, "fc2.weight", 2, (int[]){C, F}, PF_INIT_NORMAL, std, 1, &m->w_out, &m->dw_out));
        PF_TRY(pf_layer_add_param(l, "fc2.bias", 1, (int[]){C}, PF_INIT_ZEROS, 0, 0, &m->b_out, &m->db_out));
    }
    return 0;
}

static int mlp_forward(pf_layer *l, float *out, const float *in, int B, int T)
{
    mlp *m = l->impl;
    const pf_backend *be = l->be;
    int rows = B * T, C = l->dim, F = m->F, H = m->act == ACT_SWIGLU ? 2 * F : F;
    PF_TRY(pf_buffer_reserve(be, &m->h, &m->h_cap, (size_t)rows * H));
    PF_TRY(pf_buffer_reserve(be, &m->a, &m->a_cap, (size_t)rows * F));
    be->gemm(0, 1, rows, H, C, 1.0f, in, C, m->w_in, C, 0.0f, m->h, H);
    if (m->act == ACT_SWIGLU) {
        be->swiglu_forward(m->a, m->h, rows, F);
    } else {
        be->bias_add(m->h, m->b_in, rows, F);
        be->act_forward(PF_ACT_GELU, m->a, m->h, (size_t)rows * F);
    }
    be->gemm(0, 1, rows, C, F, 1.0f, m->a, F, m->w_out, F, 0.0f, out, C);
    if (m->b_out) be->bias_add(out, m->b_out, rows, C);
    return 0;
}

static int mlp_backward(pf_layer *l, float *din, const float *dout, const float *in, int B, int T)
{
    mlp *m = l->impl;
    const pf_backend *be = l->be;
    int rows = B * T, C = l->dim, F = m->F, H = m->act == ACT_SWIGLU ? 2 * F : F;
    PF_TRY(pf_buffer_reserve(be, &m->da, &m->da_cap, (size_t)rows * (F + H)));
    float *da = m->da;                      /* (rows, F) */
    float *dh = m->da + (size_t)rows * F;   /* (rows, H) */
    /* out = a W_out^T (+ b_out) */
    be->gemm(1, 0, C, F, rows, 1.0f, dout, C, m->a, F, 1.0f, m->dw_out, F);
    if (m->db_out) be->bias_grad(m->db_out, dout, rows, C);
    be->gemm(0, 0, rows, F, C, 1.0f, dout, C, m->w_out, F, 0.0f, da, F);
    if (m->act == ACT_SWIGLU) {
        be->swiglu_backward(dh, da, m->h, rows, F);
    } else {
        be->act_backward(PF_ACT_GELU, dh, da, m->h, (size_t)rows * F, 0);
    }
    /* h = in W_in^T */
    be->gemm(1, 0, H, C, rows, 1.0f, dh, H, in, C, 1.0f, m->dw_in, C);
    be->gemm(0, 0, rows, C, H, 1.0f, dh, H, m->w_in, C, 0.0f, din, C);
    if (m->b_in) be->bias_grad(m->db_in, dh, rows, F);
    return 0;
}

/* Stateless: a step is a forward over one token. */
static int mlp_step(pf_layer *l, float *out, const float *in) { return mlp_forward(l, out, in, 1, 1); }

static void mlp_reset(pf_layer *l) { (void)l; }

static void mlp_describe(const pf_layer *l, pf_layer_info *info)
{
    const mlp *m = l->impl;
    int H = m->act == ACT_SWIGLU ? 2 * m->F : m->F;
    info->flops_per_token = 2.0 * l->dim * (H + m->F);
    info->state_bytes = 0;
    info->constant_state = 1;
}

static void mlp_destroy(pf_layer *l)
{
    mlp *m = l->impl;
    if (!m) return;
    pf_buffer_release(l->be, &m->h, &m->h_cap);
    pf_buffer_release(l->be, &m->a, &m->a_cap);
    pf_buffer_release(l->be, &m->da, &m->da_cap);
    free(m);
    l->impl = NULL;
}

/* every kernel this kind calls: pf_layer_create checks that the backend has them */
static const pf_kernel_need mlp_kernels[] = {
    PF_KERNEL(act_backward), PF_KERNEL(act_forward), PF_KERNEL(alloc), PF_KERNEL(bias_add),
    PF_KERNEL(bias_grad), PF_KERNEL(free), PF_KERNEL(gemm), PF_KERNEL(swiglu_backward),
    PF_KERNEL(swiglu_forward), {0, NULL},
};

const pf_layer_kind pf_layer_mlp = {
    .name = "mlp",
    .summary = "feed-forward: GELU (fc1, fc2) or SwiGLU (gate_proj, up_proj, down_proj)",
    .options = mlp_options,
    .n_options = sizeof mlp_options / sizeof mlp_options[0],
    .create = mlp_create,
    .forward = mlp_forward,
    .backward = mlp_backward,
    .step = mlp_step,
    .reset = mlp_reset,
    .describe = mlp_describe,
    .destroy = mlp_destroy,
    .kernels = mlp_kernels,
};
