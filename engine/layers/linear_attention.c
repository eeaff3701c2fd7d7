/* linear_attention: causal linear attention (Katharopoulos et al. 2020, "Transformers are RNNs").
 *
 *   q = phi(x W_q^T), k = phi(x W_k^T), v = x W_v^T, split into H heads of D = C / H,
 *   S_t = S_{t-1} + k_t v_t^T,   z_t = z_{t-1} + k_t,
 *   o_t = q_t^T S_t / (q_t^T z_t + eps)    (normalize = true, the paper's form), or q_t^T S_t,
 *   out = o W_o^T.
 * phi is the feature map: elu(x) + 1 (the paper's), relu, or identity (only without the
 * normaliser, whose denominator could then be zero or negative). No biases, as in the paper.
 *
 * Shapes: B batch, T tokens, C model width, H heads, K = V = D the key and value widths per head,
 * Vw = V + 1 with the normaliser (z is kept as column V of the state), else V; rows = B * T.
 * Weights are stored (out, in) as in torch.nn.Linear. Training runs the chunkwise kernel
 * (be->linattn_forward with no decay); a step is the same kernel over one token, carrying the state
 * (H, K, Vw): O(1) in the sequence length. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "engine/layer.h"
#include "engine/layers/linear_attention.h"

enum { FEAT_ELU1 = 0, FEAT_RELU = 1, FEAT_IDENTITY = 2 };

static const float LA_EPS = 1e-6f;

static const pf_option la_options[] = {
    {"heads", PF_OPT_INT, 4, 1, 1024, NULL, "number of heads (must divide dim; default 4)"},
    {"feature", PF_OPT_CHOICE, FEAT_ELU1, 0, 2, "elu1|relu|identity",
     "feature map applied to q and k (default elu1: elu(x) + 1)"},
    {"normalize", PF_OPT_BOOL, 1, 0, 1, NULL,
     "divide by q . z, the running sum of the keys (default true, as in the paper)"},
    {"chunk", PF_OPT_INT, 64, 1, 4096, NULL, "tokens per chunk of the chunkwise training form (default 64)"},
};

static const pf_probe_info la_probes[] = {
    {"state", "[heads, d_k, d_v]", PF_REFRESH_STEP, "the running sum S of k v^T after the last step"},
    {"state_norm", "[heads]", PF_REFRESH_STEP, "Frobenius norm of S per head after the last step"},
};

typedef struct linattn {
    int H, K, V, Vw, feature, normalize, chunk;
    float *w_q;          /* (C, C) q_proj; k_proj and v_proj follow */
    float *w_k;          /* (C, C) */
    float *w_v;          /* (C, C) */
    float *w_o;          /* (C, C) */
    float *dw_q, *dw_k, *dw_v, *dw_o;
    /* forward cache, carved from fwd */
    float *fwd;
    size_t fwd_cap;
    float *qp, *kp;      /* (rows, C) before the feature map */
    float *q, *k;        /* (rows, C) after it (qp, kp themselves for identity) */
    float *v;            /* (rows, C) */
    float *att;          /* (rows, C) attention output before o_proj */
    float *states;       /* (B, H, ceil(T / chunk), K, Vw) */
    float *den;          /* (rows, H) */
    /* backward scratch */
    float *bwd;
    size_t bwd_cap;
    /* step */
    float *state;        /* (H, K, Vw) */
    float *sbuf;         /* (6C + H) step scratch */
} linattn;

static pf_act feature_act(int feature) { return feature == FEAT_RELU ? PF_ACT_RELU : PF_ACT_ELU1; }

static int la_create(pf_layer *l)
{
    linattn *a = calloc(1, sizeof *a);
    if (!a) return pf_error("linear_attention: out of memory");
    l->impl = a;
    int C = l->dim;
    a->H = pf_config_int(&l->cfg, "heads");
    a->feature = pf_config_int(&l->cfg, "feature");
    a->normalize = pf_config_int(&l->cfg, "normalize");
    a->chunk = pf_config_int(&l->cfg, "chunk");
    if (C % a->H)
        return pf_error("linear_attention: heads (%d) must divide dim (%d)", a->H, C);
    if (a->normalize && a->feature == FEAT_IDENTITY)
        return pf_error("linear_attention: feature = \"identity\" needs normalize = false (the "
                        "denominator q . z can be zero or negative); use elu1 or relu to normalise");
    a->K = a->V = C / a->H;
    a->Vw = a->V + a->normalize;
    float std = 0.02f;
    int sh[2] = {C, C};
    PF_TRY(pf_layer_add_param(l, "q_proj.weight", 2, sh, PF_INIT_NORMAL, std, 1, &a->w_q, &a->dw_q));
    PF_TRY(pf_layer_add_param(l, "k_proj.weight", 2, sh, PF_INIT_NORMAL, std, 1, &a->w_k, &a->dw_k));
    PF_TRY(pf_layer_add_param(l, "v_proj.weight", 2, sh, PF_INIT_NORMAL, std, 1, &a->w_v, &a->dw_v));
    PF_TRY(pf_layer_add_param(l, "o_proj.weight", 2, sh, PF_INIT_NORMAL, std, 1, &a->w_o, &a->dw_o));
    a->state = l->be->alloc((size_t)a->H * a->K * a->Vw * sizeof(float));
    a->sbuf = l->be->alloc((size_t)(6 * C + a->H) * sizeof(float));
    if (!a->state || !a->sbuf) return -1;
    return 0;
}

/* q, k, v and the feature map for `rows` tokens of x into the given buffers (rows, C) each */
static void la_project(const pf_layer *l, float *qp, float *kp, float *q, float *k, float *v,
                       const float *x, int rows)
{
    const linattn *a = l->impl;
    const pf_backend *be = l->be;
    int C = l->dim;
    be->gemm(0, 1, rows, C, C, 1.0f, x, C, a->w_q, C, 0.0f, qp, C);
    be->gemm(0, 1, rows, C, C, 1.0f, x, C, a->w_k, C, 0.0f, kp, C);
    be->gemm(0, 1, rows, C, C, 1.0f, x, C, a->w_v, C, 0.0f, v, C);
    if (a->feature != FEAT_IDENTITY) {
        be->act_forward(feature_act(a->feature), q, qp, (size_t)rows * C);
        be->act_forward(feature_act(a->feature), k, kp, (size_t)rows * C);
    }
}

static int la_forward(pf_layer *l, float *out, const float *in, int B, int T)
{
    linattn *a = l->impl;
    const pf_backend *be = l->be;
    int C = l->dim, rows = B * T, NC = (T + a->chunk - 1) / a->chunk;
    size_t rc = (size_t)rows * C, ns = (size_t)B * a->H * NC * a->K * a->Vw;
    PF_TRY(pf_buffer_reserve(be, &a->fwd, &a->fwd_cap, 6 * rc + ns + (size_t)rows * a->H));
    a->qp = a->fwd;
    a->kp = a->qp + rc;
    a->q = a->feature == FEAT_IDENTITY ? a->qp : a->kp + rc;
    a->k = a->feature == FEAT_IDENTITY ? a->kp : a->kp + 2 * rc;
    a->v = a->kp + 3 * rc;
    a->att = a->v + rc;
    a->states = a->att + rc;
    a->den = a->states + ns;
    la_project(l, a->qp, a->kp, a->q, a->k, a->v, in, rows);
    PF_TRY(be->linattn_forward(a->att, a->states, a->den, NULL, a->q, a->k, a->v, NULL, B, T, a->H,
                               a->K, a->V, a->chunk, 1.0f, a->normalize, LA_EPS));
    be->gemm(0, 1, rows, C, C, 1.0f, a->att, C, a->w_o, C, 0.0f, out, C);
    return 0;
}

static int la_backward(pf_layer *l, float *din, const float *dout, const float *in, int B, int T)
{
    linattn *a = l->impl;
    const pf_backend *be = l->be;
    int C = l->dim, rows = B * T;
    size_t rc = (size_t)rows * C;
    PF_TRY(pf_buffer_reserve(be, &a->bwd, &a->bwd_cap, 4 * rc));
    float *datt = a->bwd, *dq = datt + rc, *dk = dq + rc, *dv = dk + rc;
    /* out = att W_o^T */
    be->gemm(1, 0, C, C, rows, 1.0f, dout, C, a->att, C, 1.0f, a->dw_o, C);
    be->gemm(0, 0, rows, C, C, 1.0f, dout, C, a->w_o, C, 0.0f, datt, C);
    PF_TRY(be->linattn_backward(dq, dk, dv, NULL, datt, a->att, a->states, a->den, a->q, a->k, a->v,
                                NULL, B, T, a->H, a->K, a->V, a->chunk, 1.0f, a->normalize));
    if (a->feature != FEAT_IDENTITY) {   /* in place: dq, dk become the gradients before phi */
        be->act_backward(feature_act(a->feature), dq, dq, a->qp, rc, 0);
        be->act_backward(feature_act(a->feature), dk, dk, a->kp, rc, 0);
    }
    const float *dp[3] = {dq, dk, dv};
    float *w[3] = {a->w_q, a->w_k, a->w_v}, *dw[3] = {a->dw_q, a->dw_k, a->dw_v};
    for (int i = 0; i < 3; i++) {
        be->gemm(1, 0, C, C, rows, 1.0f, dp[i], C, in, C, 1.0f, dw[i], C);
        be->gemm(0, 0, rows, C, C, 1.0f, dp[i], C, w[i], C, i ? 1.0f : 0.0f, din, C);
    }
    return 0;
}

static int la_step(pf_layer *l, float *out, const float *in)
{
    linattn *a = l->impl;
    const pf_backend *be = l->be;
    int C = l->dim;
    float *qp = a->sbuf, *kp = qp + C, *v = kp + C, *att = v + C;
    float *q = a->feature == FEAT_IDENTITY ? qp : att + C, *k = a->feature == FEAT_IDENTITY ? kp : att + 2 * C;
    la_project(l, qp, kp, q, k, v, in, 1);
    PF_TRY(be->linattn_forward(att, NULL, NULL, a->state, q, k, v, NULL, 1, 1, a->H, a->K, a->V, 1,
                               1.0f, a->normalize, LA_EPS));
    be->gemm(0, 1, 1, C, C, 1.0f, att, C, a->w_o, C, 0.0f, out, C);
    return 0;
}

static void la_reset(pf_layer *l)
{
    linattn *a = l->impl;
    l->be->zero(a->state, (size_t)a->H * a->K * a->Vw * sizeof(float));
}

int pf_linattn_probe_state(const pf_backend *be, const char *name, const float *state, int H, int K,
                        int V, int Vw, pf_tensor **out)
{
    size_t n = (size_t)H * K * Vw;
    float *host = malloc(n * sizeof(float));
    if (!host) return pf_error("probe %s: out of memory", name);
    be->download(host, state, n * sizeof(float));
    pf_tensor *t = strcmp(name, "state") == 0 ? pf_tensor_new3(H, K, V) : pf_tensor_new1(H);
    if (!t) {
        free(host);
        return -1;
    }
    for (int h = 0; h < H; h++) {
        double ss = 0;
        for (int kk = 0; kk < K; kk++)
            for (int j = 0; j < V; j++) {
                float s = host[((size_t)h * K + kk) * Vw + j];
                if (t->ndim == 3) t->data[((size_t)h * K + kk) * V + j] = s;
                ss += (double)s * s;
            }
        if (t->ndim == 1) t->data[h] = (float)sqrt(ss);
    }
    free(host);
    *out = t;
    return 0;
}

static int la_probe(pf_layer *l, const char *name, pf_tensor **out)
{
    linattn *a = l->impl;
    return pf_linattn_probe_state(l->be, name, a->state, a->H, a->K, a->V, a->Vw, out);
}

static void la_describe(const pf_layer *l, pf_layer_info *info)
{
    const linattn *a = l->impl;
    double C = l->dim, kv = (double)a->H * a->K * a->Vw;
    /* four C x C projections; the state update and the read-out */
    info->flops_per_token = 2.0 * 4 * C * C + 2.0 * 2 * kv;
    info->state_bytes = kv * sizeof(float);
    info->constant_state = 1;
}

static void la_destroy(pf_layer *l)
{
    linattn *a = l->impl;
    if (!a) return;
    pf_buffer_release(l->be, &a->fwd, &a->fwd_cap);
    pf_buffer_release(l->be, &a->bwd, &a->bwd_cap);
    if (a->state) l->be->free(a->state);
    if (a->sbuf) l->be->free(a->sbuf);
    free(a);
    l->impl = NULL;
}

/* every kernel this kind calls: pf_layer_create checks that the backend has them */
static const pf_kernel_need linear_attention_kernels[] = {
    PF_KERNEL(act_backward), PF_KERNEL(act_forward), PF_KERNEL(alloc), PF_KERNEL(download),
    PF_KERNEL(free), PF_KERNEL(gemm), PF_KERNEL(linattn_backward), PF_KERNEL(linattn_forward),
    PF_KERNEL(zero), {0, NULL},
};

const pf_layer_kind pf_layer_linear_attention = {
    .name = "linear_attention",
    .summary = "causal linear attention: feature map phi, running state S = sum phi(k) v^T (and z)",
    .options = la_options,
    .n_options = sizeof la_options / sizeof la_options[0],
    .probes = la_probes,
    .n_probes = sizeof la_probes / sizeof la_probes[0],
    .create = la_create,
    .forward = la_forward,
    .backward = la_backward,
    .step = la_step,
    .reset = la_reset,
    .probe = la_probe,
    .describe = la_describe,
    .destroy = la_destroy,
    .kernels = linear_attention_kernels,
};
