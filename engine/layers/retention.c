/* retention: RetNet multi-scale retention (Sun et al. 2023, "Retentive Network: A Successor to
 * Transformer for Large Language Models"), in its three forms.
 *
 * Shapes: B batch, T tokens, C model width, H heads, dk = C/H key (and query) dim per head,
 * V = value_factor*C value width (value_factor 2 as in the paper), dv = V/H value dim per head;
 * rows = B*T. Weights are stored (out, in) as in torch.nn.Linear.
 *
 *   Q = (X W_Q^T) rotated, K = (X W_K^T) dk^-0.5 rotated, V = X W_V^T, G = X W_G^T   (per head)
 *   rotation (xPos without its decay scale, as torchscale's RetNet): at position n, pair
 *     (2i, 2i+1) of a head's q and k turns by n * theta_i, theta_i = 10000^(-i/(dk/2-1))
 *   gamma_h = 1 - 2^(-5-h), h = 0..H-1
 *   parallel:  O = (Q K^T .* D) V,  D[n][m] = gamma^(n-m) for n >= m, else 0
 *   recurrent: S_n = gamma S_(n-1) + K_n^T V_n,  O_n = Q_n S_n
 *   chunkwise (chunks of B' tokens, the last one may be shorter):
 *     R_i = K_[i]^T (V_[i] .* zeta) + gamma^B' R_(i-1),  zeta_j = gamma^(B'-j-1)
 *     O_[i] = (Q_[i] K_[i]^T .* D) V_[i] + (Q_[i] R_(i-1)) .* xi,  xi_j = gamma^(j+1)
 *   Y = GroupNorm_H(O)   (per token and head: mean 0, variance 1 over dv, eps 1e-6, then
 *                         group_norm.weight and .bias per channel, as torch.nn.GroupNorm(H, V))
 *   out = (swish(G) .* Y) W_O^T
 *
 * The equations as written, and how public code differs. This layer computes the paper's
 * equations above with no further normalisation. torchscale's MultiScaleRetention (and RetNet
 * ports that copy it) adds three rescalings for numerical stability: (1) D is divided by the square
 * root of its row sums, D~[n][m] = D[n][m] / sqrt(sum_m' D[n][m']) (in the recurrent form the state
 * carries that running sum as a "scale"); (2) in the parallel form Q K^T .* D is divided per row by
 * max(|sum of the row|, 1); (3) the chunkwise form divides its inner and cross parts by a per-row
 * max(inner row sum, max-abs state column sum, 1). Each rescaling multiplies a whole row of one
 * head's output by a positive number, and the GroupNorm that follows is invariant to that, so
 * in exact arithmetic the outputs differ only through the norm's eps; in float32 the rescalings
 * keep the magnitudes near 1 over long sequences, where the raw form grows with the effective
 * window 1/(1-gamma) (up to 2^(4+H) tokens). With torchscale's init (small q and k) the raw
 * retention is small too, so eps weighs more here than after torchscale's rescaling: at C = 16,
 * H = 2, T = 12 the two forms' outputs differ by 4.5e-2 of the largest output
 * (tests/ref/retention_ref.py prints it; with eps = 0 they agree to 4e-16). Also unlike
 * torchscale: its current group_norm is an RMSNorm without parameters (earlier versions: a
 * LayerNorm without parameters); here it is the paper's GroupNorm with torch.nn.GroupNorm's
 * affine weight and bias. The rotation is torchscale's
 * (xPos's rotation without its length-extrapolation scale). Parameter names follow torchscale
 * (q_proj, k_proj, v_proj, g_proj, out_proj, no biases; group_norm), as does the init: xavier
 * uniform with gain 2^-2.5 for q, k, v, g and gain 1 for out_proj.
 *
 * Training runs the form chosen by `form`; a step always runs the recurrent form on an O(1) state
 * S (H, dk, dv). The four input projections are registered back to back, so they are one
 * (2C + 2V, C) matrix and one GEMM gives [q | k | v | g] per token. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "engine/layer.h"

enum { FORM_PARALLEL = 0, FORM_CHUNKWISE = 1, FORM_RECURRENT = 2 };

static const float GN_EPS = 1e-6f;   /* torchscale's layernorm_eps */
#define MAX_HEADS 64
#define MAX_HEAD_DIM 512             /* dk: the cpu rotation keeps dk/2 angles on the stack */

static const pf_option retention_options[] = {
    {"heads", PF_OPT_INT, 4, 1, MAX_HEADS, NULL, "heads H (default 4); H divides dim, dim/H even"},
    {"form", PF_OPT_CHOICE, FORM_CHUNKWISE, 0, 2, "parallel|chunkwise|recurrent",
     "the form training runs (default chunkwise); step is always recurrent"},
    {"chunk", PF_OPT_INT, 64, 1, 65536, NULL, "tokens per chunk of the chunkwise form (default 64)"},
    {"value_factor", PF_OPT_INT, 2, 1, 4, NULL, "value width V = value_factor * dim (default 2)"},
};

static const pf_probe_info retention_probes[] = {
    {"gamma", "[heads]", PF_REFRESH_STEP, "decay per head, 1 - 2^(-5-h)"},
    {"state", "[heads, d_k, d_v]", PF_REFRESH_STEP, "the recurrent state S after the last step"},
    {"state_norm", "[heads]", PF_REFRESH_STEP, "Frobenius norm of S per head after the last step"},
};

/* a device scratch buffer and its capacity in floats */
typedef struct scratch {
    float *p;
    size_t cap;
} scratch;

typedef struct retention {
    int H, dk, dv, V, N, form, chunk;   /* N = 2C + 2V */
    float *gamma;       /* (H) host */
    float *w_qkvg;      /* (N, C) [q_proj; k_proj; v_proj; g_proj] */
    float *w_k, *w_v, *w_g;             /* views inside w_qkvg */
    float *w_out;       /* (C, V) */
    float *gn_w, *gn_b; /* (V) */
    float *dw_qkvg, *dw_k, *dw_v, *dw_g, *dw_out, *dgn_w, *dgn_b;
    /* forward cache */
    scratch qkvg;       /* (rows, N) */
    scratch qr, kr;     /* (B, H, T, dk) */
    scratch vh, o;      /* (B, H, T, dv) */
    scratch mean, rstd; /* (rows, H) */
    scratch hg;         /* (rows, V) swish(G) .* Y */
    scratch states;     /* (B, H, chunks, dk, dv) chunkwise/parallel; (B, H, dk, dv) recurrent */
    scratch work;       /* kernel scratch, see kernels.h */
    /* backward scratch */
    scratch dqkvg;      /* (rows, N) */
    scratch dqr, dkr;   /* (B, H, T, dk) */
    scratch dvh, d_o;   /* (B, H, T, dv) */
    scratch dh;         /* (rows, V) */
    /* step */
    float *S;           /* (H, dk, dv) the recurrent state */
    float *s_buf;       /* one token: qkvg (N), q, k (C), v, o, h (V), mean, rstd (H) */
    int pos;            /* tokens stepped since reset */
} retention;

static int reserve(const pf_backend *be, scratch *s, size_t n)
{
    if (pf_buffer_reserve(be, &s->p, &s->cap, n) < 0) return pf_error("retention: out of memory");
    return 0;
}

static void release(const pf_backend *be, scratch *s) { pf_buffer_release(be, &s->p, &s->cap); }

static int retention_create(pf_layer *l)
{
    retention *r = calloc(1, sizeof *r);
    if (!r) return pf_error("retention: out of memory");
    l->impl = r;
    int C = l->dim, H = pf_config_int(&l->cfg, "heads");
    if (C % H != 0) return pf_error("retention: heads (%d) must divide dim (%d)", H, C);
    if ((C / H) % 2 != 0 || C / H > MAX_HEAD_DIM)
        return pf_error("retention: dim/heads (%d) must be even and at most %d (the rotation pairs "
                        "channels)", C / H, MAX_HEAD_DIM);
    r->H = H;
    r->dk = C / H;
    r->V = pf_config_int(&l->cfg, "value_factor") * C;
    r->dv = r->V / H;
    r->N = 2 * C + 2 * r->V;
    r->form = pf_config_int(&l->cfg, "form");
    r->chunk = pf_config_int(&l->cfg, "chunk");
    r->gamma = malloc((size_t)H * sizeof(float));
    if (!r->gamma) return pf_error("retention: out of memory");
    for (int h = 0; h < H; h++) r->gamma[h] = (float)(1.0 - pow(2.0, -5.0 - h));

    int V = r->V;
    /* xavier uniform: bound = gain * sqrt(6 / (fan_in + fan_out)) */
    float qk = (float)(pow(2.0, -2.5) * sqrt(6.0 / (C + C)));
    float vg = (float)(pow(2.0, -2.5) * sqrt(6.0 / (C + V)));
    float ob = (float)sqrt(6.0 / (C + V));
    PF_TRY(pf_layer_add_param(l, "q_proj.weight", 2, (int[]){C, C}, PF_INIT_UNIFORM, qk, 1, &r->w_qkvg, &r->dw_qkvg));
    PF_TRY(pf_layer_add_param(l, "k_proj.weight", 2, (int[]){C, C}, PF_INIT_UNIFORM, qk, 1, &r->w_k, &r->dw_k));
    PF_TRY(pf_layer_add_param(l, "v_proj.weight", 2, (int[]){V, C}, PF_INIT_UNIFORM, vg, 1, &r->w_v, &r->dw_v));
    PF_TRY(pf_layer_add_param(l, "g_proj.weight", 2, (int[]){V, C}, PF_INIT_UNIFORM, vg, 1, &r->w_g, &r->dw_g));
    PF_TRY(pf_layer_add_param(l, "out_proj.weight", 2, (int[]){C, V}, PF_INIT_UNIFORM, ob, 1, &r->w_out, &r->dw_out));
    PF_TRY(pf_layer_add_param(l, "group_norm.weight", 1, (int[]){V}, PF_INIT_ONES, 0, 0, &r->gn_w, &r->dgn_w));
    PF_TRY(pf_layer_add_param(l, "group_norm.bias", 1, (int[]){V}, PF_INIT_ZEROS, 0, 0, &r->gn_b, &r->dgn_b));

    const pf_backend *be = l->be;
    r->S = be->alloc((size_t)H * r->dk * r->dv * sizeof(float));
    r->s_buf = be->alloc((size_t)(r->N + 2 * C + 3 * V + 2 * H) * sizeof(float));
    if (!r->S || !r->s_buf) return -1;
    return 0;
}

/* floats of kernel scratch for T tokens with chunks of `chunk` (0: the recurrent kernels) */
static size_t work_floats(const retention *r, int B, int T, int chunk)
{
    size_t L = chunk == 0 ? 0 : (size_t)(chunk < T ? chunk : T);
    return (size_t)B * r->H * (2 * L * L + L * (r->dk + r->dv) + (L + 1) + 2 * (size_t)r->dk * r->dv);
}

/* chunk length the chunkwise kernels use for the training form (T: the parallel form) */
static int form_chunk(const retention *r, int T)
{
    return r->form == FORM_PARALLEL ? T : r->chunk;
}

static int retention_forward(pf_layer *l, float *out, const float *in, int B, int T)
{
    retention *r = l->impl;
    const pf_backend *be = l->be;
    int C = l->dim, H = r->H, V = r->V, N = r->N, rows = B * T;
    PF_TRY(reserve(be, &r->qkvg, (size_t)rows * N));
    PF_TRY(reserve(be, &r->qr, (size_t)rows * C));
    PF_TRY(reserve(be, &r->kr, (size_t)rows * C));
    PF_TRY(reserve(be, &r->vh, (size_t)rows * V));
    PF_TRY(reserve(be, &r->o, (size_t)rows * V));
    PF_TRY(reserve(be, &r->mean, (size_t)rows * H));
    PF_TRY(reserve(be, &r->rstd, (size_t)rows * H));
    PF_TRY(reserve(be, &r->hg, (size_t)rows * V));

    be->gemm(0, 1, rows, N, C, 1.0f, in, C, r->w_qkvg, C, 0.0f, r->qkvg.p, N);
    be->retention_split(r->qr.p, r->kr.p, r->vh.p, r->qkvg.p, B, T, H, r->dk, r->dv, 0);
    size_t sd = (size_t)r->dk * r->dv;
    if (r->form == FORM_RECURRENT) {
        PF_TRY(reserve(be, &r->states, (size_t)B * H * sd));
        be->zero(r->states.p, (size_t)B * H * sd * sizeof(float));
        be->retention_recurrent_forward(r->o.p, r->states.p, r->qr.p, r->kr.p, r->vh.p, r->gamma, B,
                                        T, H, r->dk, r->dv);
    } else {
        int chunk = form_chunk(r, T), L = chunk < T ? chunk : T, nc = (T + L - 1) / L;
        PF_TRY(reserve(be, &r->states, (size_t)B * H * nc * sd));
        PF_TRY(reserve(be, &r->work, work_floats(r, B, T, chunk)));
        be->retention_chunkwise_forward(r->o.p, r->states.p, NULL, r->qr.p, r->kr.p, r->vh.p,
                                        r->gamma, B, T, H, r->dk, r->dv, chunk, r->work.p);
    }
    be->retention_norm_gate_forward(r->hg.p, r->mean.p, r->rstd.p, r->o.p, r->qkvg.p + 2 * C + V, N,
                                    r->gn_w, r->gn_b, B, T, H, r->dv, GN_EPS);
    be->gemm(0, 1, rows, C, V, 1.0f, r->hg.p, V, r->w_out, V, 0.0f, out, C);
    return 0;
}

static int retention_backward(pf_layer *l, float *din, const float *dout, const float *in, int B,
                              int T)
{
    retention *r = l->impl;
    const pf_backend *be = l->be;
    int C = l->dim, H = r->H, V = r->V, N = r->N, rows = B * T;
    PF_TRY(reserve(be, &r->dh, (size_t)rows * V));
    PF_TRY(reserve(be, &r->d_o, (size_t)rows * V));
    PF_TRY(reserve(be, &r->dqkvg, (size_t)rows * N));
    PF_TRY(reserve(be, &r->dqr, (size_t)rows * C));
    PF_TRY(reserve(be, &r->dkr, (size_t)rows * C));
    PF_TRY(reserve(be, &r->dvh, (size_t)rows * V));
    int chunk = r->form == FORM_RECURRENT ? 0 : form_chunk(r, T);
    PF_TRY(reserve(be, &r->work, work_floats(r, B, T, chunk)));

    /* out = hg W_O^T */
    be->gemm(1, 0, C, V, rows, 1.0f, dout, C, r->hg.p, V, 1.0f, r->dw_out, V);
    be->gemm(0, 0, rows, V, C, 1.0f, dout, C, r->w_out, V, 0.0f, r->dh.p, V);
    /* hg = swish(G) .* GroupNorm(O): dO, and dG into the g columns of dqkvg */
    be->retention_norm_gate_backward(r->d_o.p, r->dqkvg.p + 2 * C + V, r->dgn_w, r->dgn_b, r->dh.p,
                                     r->o.p, r->qkvg.p + 2 * C + V, N, r->gn_w, r->gn_b, r->mean.p,
                                     r->rstd.p, B, T, H, r->dv);
    /* O from the rotated Q, K and V */
    if (r->form == FORM_RECURRENT)
        be->retention_recurrent_backward(r->dqr.p, r->dkr.p, r->dvh.p, r->d_o.p, r->qr.p, r->kr.p,
                                         r->vh.p, r->gamma, B, T, H, r->dk, r->dv, r->work.p);
    else
        be->retention_chunkwise_backward(r->dqr.p, r->dkr.p, r->dvh.p, r->d_o.p, r->states.p, r->qr.p,
                                         r->kr.p, r->vh.p, r->gamma, B, T, H, r->dk, r->dv, chunk,
                                         r->work.p);
    be->retention_split_backward(r->dqkvg.p, r->dqr.p, r->dkr.p, r->dvh.p, B, T, H, r->dk, r->dv, 0);
    /* qkvg = in W_qkvg^T */
    be->gemm(1, 0, N, C, rows, 1.0f, r->dqkvg.p, N, in, C, 1.0f, r->dw_qkvg, C);
    be->gemm(0, 0, rows, C, N, 1.0f, r->dqkvg.p, N, r->w_qkvg, C, 0.0f, din, C);
    return 0;
}

/* One token through the recurrent form, on the O(1) state S. */
static int retention_step(pf_layer *l, float *out, const float *in)
{
    retention *r = l->impl;
    const pf_backend *be = l->be;
    int C = l->dim, H = r->H, V = r->V, N = r->N;
    float *qkvg = r->s_buf, *q = qkvg + N, *k = q + C, *v = k + C, *o = v + V, *h = o + V;
    float *mean = h + V, *rstd = mean + H;
    be->gemm(0, 1, 1, N, C, 1.0f, in, C, r->w_qkvg, C, 0.0f, qkvg, N);
    be->retention_split(q, k, v, qkvg, 1, 1, H, r->dk, r->dv, r->pos);
    be->retention_recurrent_forward(o, r->S, q, k, v, r->gamma, 1, 1, H, r->dk, r->dv);
    be->retention_norm_gate_forward(h, mean, rstd, o, qkvg + 2 * C + V, N, r->gn_w, r->gn_b, 1, 1, H,
                                    r->dv, GN_EPS);
    be->gemm(0, 1, 1, C, V, 1.0f, h, V, r->w_out, V, 0.0f, out, C);
    r->pos++;
    return 0;
}

static void retention_reset(pf_layer *l)
{
    retention *r = l->impl;
    l->be->zero(r->S, (size_t)r->H * r->dk * r->dv * sizeof(float));
    r->pos = 0;
}

static int retention_probe(pf_layer *l, const char *name, pf_tensor **out)
{
    retention *r = l->impl;
    int H = r->H;
    if (strcmp(name, "gamma") == 0) {
        pf_tensor *t = pf_tensor_new1(H);
        if (!t) return -1;
        memcpy(t->data, r->gamma, (size_t)H * sizeof(float));
        *out = t;
        return 0;
    }
    pf_tensor *s = NULL;
    PF_TRY(pf_probe_from_device(l->be, &s, r->S, 3, (int[]){H, r->dk, r->dv}));
    if (strcmp(name, "state") == 0) {
        *out = s;
        return 0;
    }
    /* state_norm: the Frobenius norm of each head's S, on the small host copy */
    pf_tensor *t = pf_tensor_new1(H);
    if (!t) {
        pf_tensor_free(s);
        return -1;
    }
    size_t per = (size_t)r->dk * r->dv;
    for (int h = 0; h < H; h++) {
        double ss = 0;
        for (size_t e = 0; e < per; e++) ss += (double)s->data[h * per + e] * s->data[h * per + e];
        t->data[h] = (float)sqrt(ss);
    }
    pf_tensor_free(s);
    *out = t;
    return 0;
}

static void retention_describe(const pf_layer *l, pf_layer_info *info)
{
    const retention *r = l->impl;
    double C = l->dim, sd = (double)r->H * r->dk * r->dv;
    /* projections in and out, then per head: the state update and the read-out */
    info->flops_per_token = 2.0 * C * r->N + 2.0 * r->V * C + 4.0 * sd;
    info->state_bytes = sd * sizeof(float);
    info->constant_state = 1;
}

static void retention_destroy(pf_layer *l)
{
    retention *r = l->impl;
    if (!r) return;
    const pf_backend *be = l->be;
    scratch *all[] = {&r->qkvg, &r->qr, &r->kr, &r->vh, &r->o, &r->mean, &r->rstd, &r->hg,
                      &r->states, &r->work, &r->dqkvg, &r->dqr, &r->dkr, &r->dvh, &r->dh, &r->d_o};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) release(be, all[i]);
    if (r->S) be->free(r->S);
    if (r->s_buf) be->free(r->s_buf);
    free(r->gamma);
    free(r);
    l->impl = NULL;
}

/* every kernel this kind calls: pf_layer_create checks that the backend has them */
static const pf_kernel_need retention_kernels[] = {
    PF_KERNEL(alloc), PF_KERNEL(download), PF_KERNEL(free), PF_KERNEL(gemm),
    PF_KERNEL(retention_chunkwise_backward), PF_KERNEL(retention_chunkwise_forward),
    PF_KERNEL(retention_norm_gate_backward), PF_KERNEL(retention_norm_gate_forward),
    PF_KERNEL(retention_recurrent_backward), PF_KERNEL(retention_recurrent_forward),
    PF_KERNEL(retention_split), PF_KERNEL(retention_split_backward), PF_KERNEL(zero), {0, NULL},
};

const pf_layer_kind pf_layer_retention = {
    .name = "retention",
    .summary = "RetNet multi-scale retention: parallel, chunkwise or recurrent training, recurrent step",
    .options = retention_options,
    .n_options = sizeof retention_options / sizeof retention_options[0],
    .probes = retention_probes,
    .n_probes = sizeof retention_probes / sizeof retention_probes[0],
    .create = retention_create,
    .forward = retention_forward,
    .backward = retention_backward,
    .step = retention_step,
    .reset = retention_reset,
    .probe = retention_probe,
    .describe = retention_describe,
    .destroy = retention_destroy,
    .kernels = retention_kernels,
};
