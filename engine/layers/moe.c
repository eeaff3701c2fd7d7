/* moe: a mixture of experts. A linear router (gate.weight, no bias) gives each token logits over E
 * experts and a softmax p; the token is sent to some experts, each an MLP (SwiGLU as in Mixtral:
 * w2(silu(w1 x) * w3 x), or GELU: w2 gelu(w1 x + b1) + b2), and the experts' outputs come back
 * weighted by gates. `shared` always-on experts are added with weight 1 (DeepSeek-MoE style).
 *
 * Shapes: B batch, T tokens, C model width, N = B*T routed tokens, E experts, F expert hidden width,
 * H = 2F (SwiGLU: [w1; w3] is one (2F, C) matrix) or F (GELU), k = top_k, K slots per token
 * (k for token choice, 1 for switch, E for expert choice), R grouped rows: each token once for every
 * expert that takes it, the rows of one expert contiguous, so that every expert is one GEMM over its
 * tokens (gather -> per-expert GEMMs -> weighted scatter back).
 *
 * Routers (logits z = x Wg^T, p = softmax(z)):
 *   topk           each token picks its k most probable experts (ties: lower id), gates
 *                  p_e / sum of the k chosen p (Mixtral), or with renorm = false p_e itself, the
 *                  softmax over all E experts (Jamba; the gates then sum to at most 1);
 *   switch         top-1, gate p_e unrenormalised (Switch Transformer); top_k must be 1 or unset;
 *   expert_choice  each expert takes the c tokens with the largest p[:, e] (ties: lower token index),
 *                  gate p[t, e]; c = floor(cf * N * k / E) clamped to [1, N], cf = capacity or 1 when
 *                  capacity is 0. A token may be taken by 0..E experts.
 * Capacity (token choice, capacity > 0): each expert accepts at most floor(capacity * N * k / E)
 * slots per forward, offered in priority order: all first choices in token order, then all second
 * choices, ... (GShard). A dropped slot contributes 0 (its gate is not renormalised away); a token
 * with all slots dropped passes through the residual unchanged.
 *
 * Auxiliary losses (l->aux_loss = aux * balance + zloss * z; their gradients are part of backward):
 *   balance = E * sum_i f_i P_i, f_i = (slots the router assigned to expert i, before any capacity
 *             drop) / (all assigned slots) (= /(N k) for token choice; 1/E for expert choice, where
 *             the loss is then the constant aux with zero gradient), P_i = (1/N) sum_t p[t, i];
 *             f is held constant. Exactly 1 (so the weighted loss exactly aux) when P is uniform;
 *   z       = (1/N) sum_t logsumexp(z_t)^2 (ST-MoE router z-loss).
 * Jitter (training only, l->train): the router input (not the experts') is multiplied elementwise by
 * uniform(1 - jitter, 1 + jitter), from a hash of (l->seed, training step counter, element): every
 * forward within one training step sees the same noise; train_step_end moves to the next.
 *
 * Step routes one token as a forward over B = T = 1 without a capacity limit (a single token is never
 * dropped); expert_choice, which needs the other tokens of a batch, steps as token choice over the
 * k most probable experts with gates p unrenormalised. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "engine/layer.h"

enum { ACT_GELU = 0, ACT_SWIGLU = 1 };
enum { ROUTER_TOPK = 0, ROUTER_SWITCH = 1, ROUTER_EXPERT_CHOICE = 2 };

#define MOE_HISTORY 1024     /* training steps kept by load_history */
#define MOE_DEAD_WINDOW 100  /* steps over which an expert with no token counts as dead */

static const pf_option moe_options[] = {
    {"experts", PF_OPT_INT, 8, 1, 64, NULL, "number of routed experts E (default 8)"},
    {"top_k", PF_OPT_INT, 2, 1, 64, NULL,
     "experts per token k (default 2); switch: 1; expert_choice: the average, sets the capacity"},
    {"hidden", PF_OPT_INT_AUTO, 0, 1, 1 << 16, NULL,
     "expert hidden width F; auto: as mlp (4*dim for gelu, 8/3*dim rounded up to 8 for swiglu)"},
    {"act", PF_OPT_CHOICE, ACT_SWIGLU, 0, 1, "gelu|swiglu", "expert activation (default swiglu)"},
    {"router", PF_OPT_CHOICE, ROUTER_TOPK, 0, 2, "topk|switch|expert_choice",
     "routing (default topk: Mixtral top-k renormalised)"},
    {"renorm", PF_OPT_BOOL, 1, 0, 1, NULL,
     "topk: gates divided by the sum of the k chosen probabilities (default true); false: the "
     "probabilities themselves (Jamba)"},
    {"aux", PF_OPT_NUMBER, 0.01, 0, 100, NULL, "weight of the load-balancing loss (default 0.01)"},
    {"zloss", PF_OPT_NUMBER, 0.001, 0, 100, NULL, "weight of the router z-loss (default 0.001)"},
    {"capacity", PF_OPT_NUMBER, 0, 0, 64, NULL,
     "capacity factor: at most floor(capacity*tokens*k/experts) per expert; 0: no limit (default)"},
    {"jitter", PF_OPT_NUMBER, 0, 0, 1, NULL,
     "router input noise in training: x * uniform(1-jitter, 1+jitter) (default 0)"},
    {"shared", PF_OPT_INT, 0, 0, 4, NULL, "always-on shared experts (default 0)"},
};

static const pf_probe_info moe_probes[] = {
    {"gates", "[tokens, experts]", PF_REFRESH_STEP, "router probabilities of the last forward or step"},
    {"topk", "[tokens, k]", PF_REFRESH_STEP,
     "expert ids a token was routed to, best first (expert_choice: experts that took it, -1: none)"},
    {"load", "[experts]", PF_REFRESH_FORWARD,
     "fraction of routed token-slots per expert, last forward (router assignment before capacity)"},
    {"load_history", "[steps, experts]", PF_REFRESH_TRAIN,
     "load of each training step, oldest first (the last 1024 steps)"},
    {"entropy", "[1]", PF_REFRESH_FORWARD, "mean router entropy / log(experts), last forward"},
    {"dead", "[1]", PF_REFRESH_TRAIN, "experts that got no token in the last 100 training steps"},
    {"drop_rate", "[1]", PF_REFRESH_FORWARD,
     "slots dropped over capacity / all slots (expert_choice: tokens no expert took / tokens)"},
    {"max_violation", "[1]", PF_REFRESH_FORWARD, "max_i load_i / mean load - 1 (0: balanced)"},
    {"aux_loss", "[1]", PF_REFRESH_FORWARD,
     "balance loss before its weight: experts * sum_i f_i P_i (1 when the router is uniform)"},
    {"z_loss", "[1]", PF_REFRESH_FORWARD, "router z-loss before its weight: mean logsumexp(logits)^2"},
};

/* One expert MLP's parameter views. */
typedef struct expert {
    float *w1;   /* (F, C); swiglu: w3 (F, C) follows, together (2F, C) */
    float *w3;   /* (F, C) swiglu only */
    float *w2;   /* (C, F) */
    float *b1;   /* (F) gelu only */
    float *b2;   /* (C) gelu only */
    float *dw1, *dw3, *dw2, *db1, *db2;
} expert;

typedef struct moe {
    int E, k, K, F, H, S, act, router;   /* K: slots per token of the last run */
    int renorm;             /* topk gates renormalised over the k chosen (the renorm option) */
    float aux, zloss, capacity, jitter;
    float *wg, *dwg;        /* gate.weight (E, C) */
    expert *experts;        /* (E) */
    expert *shared;         /* (S) */

    /* forward cache, device */
    float   *xr;            /* (N, C) jittered router input */
    float   *noise;         /* (N, C) jitter factors */
    float   *logits;        /* (N, E) */
    float   *probs;         /* (N, E) */
    float   *lse;           /* (N) */
    int32_t *idx;           /* (N, K) chosen experts (token choice) */
    float   *w;             /* (N, K) gate weights */
    int32_t *slot_row;      /* (N, K) grouped row of each slot, -1 dropped */
    int32_t *row_token;     /* (Rmax) */
    float   *row_w;         /* (Rmax) */
    int32_t *counts;        /* (2E + 1) kept, chosen, dropped */
    int32_t *scratch;       /* (E, 2N) expert-choice sort */
    float   *xg;            /* (Rmax, C) gathered expert inputs */
    float   *h;             /* (Rmax, H) */
    float   *a;             /* (Rmax, F) */
    float   *y;             /* (Rmax, C) expert outputs before gating */
    float   *sh_h;          /* (S, N, H) */
    float   *sh_a;          /* (S, N, F) */
    float   *stats;         /* (E + 2) */
    /* backward scratch, device */
    float *dy, *dxg;        /* (Rmax, C) */
    float *da;              /* (max(Rmax, N), F) */
    float *dh;              /* (max(Rmax, N), H) */
    float *dw;              /* (N, K) */
    float *dlogits;         /* (N, E) */
    float *tmp;             /* (N, C) */
    float *aux_grad;        /* (E) */
    size_t xr_cap, noise_cap, logits_cap, probs_cap, lse_cap, idx_cap, w_cap, slot_cap, rtok_cap,
        roww_cap, counts_cap, scratch_cap, xg_cap, h_cap, a_cap, y_cap, shh_cap, sha_cap, stats_cap,
        dy_cap, dxg_cap, da_cap, dh_cap, dw_cap, dlogits_cap, tmp_cap, auxg_cap;

    /* the last run (forward or step) */
    int N, R, jittered, ec_layout, ran;
    int32_t *counts_h;      /* (2E + 1) host */
    int     *offset;        /* (E + 1) host: expert e's rows are [offset[e], offset[e+1]) */
    float   *stats_h;       /* (E + 2) host */
    float   *aux_grad_h;    /* (E) host */
    /* the last forward (batch), host */
    int    have_batch;
    float *load;            /* (E) f_i */
    double entropy, drop_rate, balance, z;
    /* training history, host */
    float   *history;       /* (MOE_HISTORY, E) ring */
    long     n_history;
    uint64_t jitter_counter;
} moe;

/* ---- create ---------------------------------------------------------------------------------- */

static int moe_hidden(const pf_layer *l, int act)
{
    int hidden = pf_config_int(&l->cfg, "hidden");
    if (hidden > 0) return hidden;
    if (act == ACT_GELU) return 4 * l->dim;
    return (8 * l->dim / 3 + 7) / 8 * 8;
}

static int add_expert(pf_layer *l, const moe *m, expert *ex, const char *prefix, int i)
{
    int C = l->dim, F = m->F;
    float std = 0.02f;
    char name[48];
#define NAME(suffix) (snprintf(name, sizeof name, "%s.%d.%s", prefix, i, suffix), name)
    PF_TRY(pf_layer_add_param(l, NAME("w1.weight"), 2, (int[]){F, C}, PF_INIT_NORMAL, std, 1, &ex->w1, &ex->dw1));
    if (m->act == ACT_SWIGLU) {
        /* w3 follows w1 in memory: together one (2F, C) matrix */
        PF_TRY(pf_layer_add_param(l, NAME("w3.weight"), 2, (int[]){F, C}, PF_INIT_NORMAL, std, 1, &ex->w3, &ex->dw3));
    } else {
        PF_TRY(pf_layer_add_param(l, NAME("w1.bias"), 1, (int[]){F}, PF_INIT_ZEROS, 0, 0, &ex->b1, &ex->db1));
    }
    PF_TRY(pf_layer_add_param(l, NAME("w2.weight"), 2, (int[]){C, F}, PF_INIT_NORMAL, std, 1, &ex->w2, &ex->dw2));
    if (m->act == ACT_GELU)
        PF_TRY(pf_layer_add_param(l, NAME("w2.bias"), 1, (int[]){C}, PF_INIT_ZEROS, 0, 0, &ex->b2, &ex->db2));
#undef NAME
    return 0;
}

static int moe_create(pf_layer *l)
{
    moe *m = calloc(1, sizeof *m);
    if (!m) return pf_error("moe: out of memory");
    l->impl = m;
    m->E = pf_config_int(&l->cfg, "experts");
    m->k = pf_config_int(&l->cfg, "top_k");
    m->act = pf_config_int(&l->cfg, "act");
    m->router = pf_config_int(&l->cfg, "router");
    m->renorm = m->router == ROUTER_TOPK && pf_config_int(&l->cfg, "renorm");
    if (m->router != ROUTER_TOPK && pf_config_is_set(&l->cfg, "renorm"))
        return pf_error("moe: option 'renorm' applies to router \"topk\" only (switch and expert_choice "
                        "gates are the probabilities themselves)");
    m->aux = (float)pf_config_get(&l->cfg, "aux");
    m->zloss = (float)pf_config_get(&l->cfg, "zloss");
    m->capacity = (float)pf_config_get(&l->cfg, "capacity");
    m->jitter = (float)pf_config_get(&l->cfg, "jitter");
    m->S = pf_config_int(&l->cfg, "shared");
    m->F = moe_hidden(l, m->act);
    m->H = m->act == ACT_SWIGLU ? 2 * m->F : m->F;
    if (m->router == ROUTER_SWITCH) {
        if (pf_config_is_set(&l->cfg, "top_k") && m->k != 1)
            return pf_error("moe: router \"switch\" sends each token to one expert: top_k must be 1 "
                            "or unset, got %d", m->k);
        m->k = 1;
    }
    if (m->k > m->E)
        return pf_error("moe: option 'top_k' must be in [1, experts = %d], got %d", m->E, m->k);

    int C = l->dim, E = m->E;
    m->experts = calloc((size_t)E, sizeof *m->experts);
    m->shared = calloc((size_t)(m->S > 0 ? m->S : 1), sizeof *m->shared);
    m->counts_h = calloc((size_t)(2 * E + 1), sizeof *m->counts_h);
    m->offset = calloc((size_t)(E + 1), sizeof *m->offset);
    m->stats_h = calloc((size_t)(E + 2), sizeof *m->stats_h);
    m->load = calloc((size_t)E, sizeof *m->load);
    m->aux_grad_h = calloc((size_t)E, sizeof *m->aux_grad_h);
    m->history = calloc((size_t)MOE_HISTORY * E, sizeof *m->history);
    if (!m->experts || !m->shared || !m->counts_h || !m->offset || !m->stats_h || !m->load || !m->aux_grad_h ||
        !m->history)
        return pf_error("moe: out of memory");

    PF_TRY(pf_layer_add_param(l, "gate.weight", 2, (int[]){E, C}, PF_INIT_NORMAL, 0.02f, 1, &m->wg, &m->dwg));
    for (int i = 0; i < E; i++) PF_TRY(add_expert(l, m, &m->experts[i], "experts", i));
    for (int i = 0; i < m->S; i++) PF_TRY(add_expert(l, m, &m->shared[i], "shared_experts", i));
    return 0;
}

/* ---- buffers --------------------------------------------------------------------------------- */

static int reserve(const pf_backend *be, float **buf, size_t *cap, size_t n)
{
    return pf_buffer_reserve(be, buf, cap, n > 0 ? n : 1);
}

static int reserve_i32(const pf_backend *be, int32_t **buf, size_t *cap, size_t n)
{
    if (n == 0) n = 1;
    if (*buf && *cap >= n) return 0;
    if (*buf) be->free(*buf);
    *cap = 0;
    *buf = be->alloc(n * sizeof(int32_t));
    if (!*buf) return -1;
    *cap = n;
    return 0;
}

/* ---- a group of expert MLPs over their row blocks ------------------------------------------- */

/* Expert i of ex (n) owns rows [offset[i], offset[i+1]) of x, h, a, y: one GEMM per expert and
 * phase, the activation once over all rows (fewer switches between OpenMP loops and BLAS threads).
 * y (rows, C) = mlp(x) (beta 0) or += (beta 1); h (rows, H) and a (rows, F) are kept for backward. */
static void experts_forward(const pf_layer *l, const moe *m, const expert *ex, int n, const int *offset,
                            const float *x, float *h, float *a, float *y, float beta)
{
    const pf_backend *be = l->be;
    int C = l->dim, F = m->F, H = m->H, all = offset[n] - offset[0];
    if (all <= 0) return;
    for (int i = 0; i < n; i++) {
        int o = offset[i], rows = offset[i + 1] - o;
        if (rows <= 0) continue;
        be->gemm(0, 1, rows, H, C, 1.0f, x + (size_t)o * C, C, ex[i].w1, C, 0.0f, h + (size_t)o * H, H);
        if (ex[i].b1) be->bias_add(h + (size_t)o * H, ex[i].b1, rows, F);
    }
    if (m->act == ACT_SWIGLU) be->swiglu_forward(a + (size_t)offset[0] * F, h + (size_t)offset[0] * H, all, F);
    else be->act_forward(PF_ACT_GELU, a + (size_t)offset[0] * F, h + (size_t)offset[0] * H, (size_t)all * F);
    for (int i = 0; i < n; i++) {
        int o = offset[i], rows = offset[i + 1] - o;
        if (rows <= 0) continue;
        be->gemm(0, 1, rows, C, F, 1.0f, a + (size_t)o * F, F, ex[i].w2, F, beta, y + (size_t)o * C, C);
        if (ex[i].b2) be->bias_add(y + (size_t)o * C, ex[i].b2, rows, C);
    }
}

/* dy (rows, C) -> dx (rows, C) (= with beta 0, += with beta 1); weight gradients +=; da (rows, F)
 * and dh (rows, H) scratch, indexed like h */
static void experts_backward(const pf_layer *l, const moe *m, const expert *ex, int n, const int *offset,
                             const float *x, const float *h, const float *a, const float *dy, float *da,
                             float *dh, float *dx, float beta)
{
    const pf_backend *be = l->be;
    int C = l->dim, F = m->F, H = m->H, all = offset[n] - offset[0];
    if (all <= 0) return;
    for (int i = 0; i < n; i++) {
        int o = offset[i], rows = offset[i + 1] - o;
        if (rows <= 0) continue;
        const float *dyi = dy + (size_t)o * C;
        be->gemm(1, 0, C, F, rows, 1.0f, dyi, C, a + (size_t)o * F, F, 1.0f, ex[i].dw2, F);
        if (ex[i].db2) be->bias_grad(ex[i].db2, dyi, rows, C);
        be->gemm(0, 0, rows, F, C, 1.0f, dyi, C, ex[i].w2, F, 0.0f, da + (size_t)o * F, F);
    }
    const float *h0 = h + (size_t)offset[0] * H;
    float *da0 = da + (size_t)offset[0] * F, *dh0 = dh + (size_t)offset[0] * H;
    if (m->act == ACT_SWIGLU) be->swiglu_backward(dh0, da0, h0, all, F);
    else be->act_backward(PF_ACT_GELU, dh0, da0, h0, (size_t)all * F, 0);
    for (int i = 0; i < n; i++) {
        int o = offset[i], rows = offset[i + 1] - o;
        if (rows <= 0) continue;
        const float *dhi = dh + (size_t)o * H;
        /* dw1 spans dw3 too for swiglu: (2F, C) */
        be->gemm(1, 0, H, C, rows, 1.0f, dhi, H, x + (size_t)o * C, C, 1.0f, ex[i].dw1, C);
        if (ex[i].db1) be->bias_grad(ex[i].db1, dhi, rows, F);
        be->gemm(0, 0, rows, C, H, 1.0f, dhi, H, ex[i].w1, C, beta, dx + (size_t)o * C, C);
    }
}

/* ---- forward --------------------------------------------------------------------------------- */

/* expert-choice tokens per expert for N tokens */
static int ec_capacity(const moe *m, int N)
{
    double cf = m->capacity > 0 ? m->capacity : 1.0;
    long c = (long)floor(cf * N * m->k / m->E);
    return (int)(c < 1 ? 1 : c > N ? N : c);
}

/* The host-side numbers of a batch: load, balance, z-loss, entropy, drop rate; l->aux_loss. */
static void batch_stats(pf_layer *l, moe *m, int N)
{
    int E = m->E;
    const int32_t *chosen = m->counts_h + E;
    double assigned = 0, balance = 0;
    for (int e = 0; e < E; e++) assigned += chosen[e];
    for (int e = 0; e < E; e++) {
        m->load[e] = assigned > 0 ? (float)(chosen[e] / assigned) : 0.0f;
        balance += (double)m->load[e] * (m->stats_h[e] / N);
    }
    m->balance = E * balance;
    m->z = m->stats_h[E] / N;
    m->entropy = E > 1 ? m->stats_h[E + 1] / N / log((double)E) : 0.0;
    m->drop_rate = m->counts_h[2 * E] / (m->ec_layout ? (double)N : assigned > 0 ? assigned : 1.0);
    m->have_batch = 1;
    l->aux_loss = (float)(m->aux * m->balance + m->zloss * m->z);
}

static int run(pf_layer *l, float *out, const float *in, int N, int stepping)
{
    moe *m = l->impl;
    const pf_backend *be = l->be;
    int C = l->dim, E = m->E, F = m->F, H = m->H;
    int ec = m->router == ROUTER_EXPERT_CHOICE && !stepping;
    int K = ec ? E : m->k;
    int renorm = m->renorm;
    int c = ec ? ec_capacity(m, N) : 0;
    size_t Rmax = ec ? (size_t)E * c : (size_t)N * K;
    size_t NC = (size_t)N * C;

    PF_TRY(reserve(be, &m->logits, &m->logits_cap, (size_t)N * E));
    PF_TRY(reserve(be, &m->probs, &m->probs_cap, (size_t)N * E));
    PF_TRY(reserve(be, &m->lse, &m->lse_cap, (size_t)N));
    PF_TRY(reserve_i32(be, &m->idx, &m->idx_cap, (size_t)N * K));
    PF_TRY(reserve(be, &m->w, &m->w_cap, (size_t)N * K));
    PF_TRY(reserve_i32(be, &m->slot_row, &m->slot_cap, (size_t)N * K));
    PF_TRY(reserve_i32(be, &m->row_token, &m->rtok_cap, Rmax));
    PF_TRY(reserve(be, &m->row_w, &m->roww_cap, Rmax));
    PF_TRY(reserve_i32(be, &m->counts, &m->counts_cap, (size_t)(2 * E + 1)));
    PF_TRY(reserve(be, &m->xg, &m->xg_cap, Rmax * C));
    PF_TRY(reserve(be, &m->h, &m->h_cap, Rmax * H));
    PF_TRY(reserve(be, &m->a, &m->a_cap, Rmax * F));
    PF_TRY(reserve(be, &m->y, &m->y_cap, Rmax * C));
    PF_TRY(reserve(be, &m->sh_h, &m->shh_cap, (size_t)m->S * N * H));
    PF_TRY(reserve(be, &m->sh_a, &m->sha_cap, (size_t)m->S * N * F));
    PF_TRY(reserve(be, &m->stats, &m->stats_cap, (size_t)E + 2));
    if (ec) PF_TRY(reserve_i32(be, &m->scratch, &m->scratch_cap, (size_t)E * 2 * N));

    /* router */
    const float *rin = in;
    m->jittered = l->train && m->jitter > 0 && !stepping;
    if (m->jittered) {
        PF_TRY(reserve(be, &m->xr, &m->xr_cap, NC));
        PF_TRY(reserve(be, &m->noise, &m->noise_cap, NC));
        be->moe_jitter(m->xr, m->noise, in, NC, m->jitter, l->seed, m->jitter_counter);
        rin = m->xr;
    }
    be->gemm(0, 1, N, E, C, 1.0f, rin, C, m->wg, C, 0.0f, m->logits, E);
    if (ec) {
        be->moe_route(m->probs, m->lse, NULL, NULL, m->logits, N, E, 0, 0);
        be->moe_expert_choice(m->slot_row, m->w, m->row_token, m->row_w, m->counts, m->scratch, m->probs,
                              N, E, c);
    } else {
        int cap = m->capacity > 0 && !stepping ? (int)floor((double)m->capacity * N * K / E) : -1;
        be->moe_route(m->probs, m->lse, m->idx, m->w, m->logits, N, E, K, renorm);
        be->moe_dispatch(m->slot_row, m->row_token, m->row_w, m->counts, m->idx, m->w, N, E, K, cap);
    }
    be->download(m->counts_h, m->counts, (size_t)(2 * E + 1) * sizeof(int32_t));
    m->offset[0] = 0;
    for (int e = 0; e < E; e++) m->offset[e + 1] = m->offset[e] + m->counts_h[e];
    m->N = N;
    m->K = K;
    m->R = m->offset[E];
    m->ec_layout = ec;
    m->ran = 1;

    /* experts: gather, one GEMM chain per expert over its rows, weighted scatter back */
    be->moe_gather(m->xg, in, m->row_token, NULL, m->R, C);
    experts_forward(l, m, m->experts, E, m->offset, m->xg, m->h, m->a, m->y, 0.0f);
    be->moe_combine(out, m->y, m->slot_row, m->w, N, K, C, 0);
    for (int s = 0; s < m->S; s++)
        experts_forward(l, m, &m->shared[s], 1, (int[]){0, N}, in, m->sh_h + (size_t)s * N * H,
                        m->sh_a + (size_t)s * N * F, out, 1.0f);

    if (!stepping) {
        be->moe_router_stats(m->stats, m->probs, m->lse, N, E);
        be->download(m->stats_h, m->stats, (size_t)(E + 2) * sizeof(float));
        batch_stats(l, m, N);
    }
    return 0;
}

static int moe_forward(pf_layer *l, float *out, const float *in, int B, int T)
{
    return run(l, out, in, B * T, 0);
}

static int moe_step(pf_layer *l, float *out, const float *in) { return run(l, out, in, 1, 1); }

static void moe_reset(pf_layer *l) { (void)l; }

/* ---- backward -------------------------------------------------------------------------------- */

static int moe_backward(pf_layer *l, float *din, const float *dout, const float *in, int B, int T)
{
    moe *m = l->impl;
    const pf_backend *be = l->be;
    int N = B * T, C = l->dim, E = m->E, F = m->F, H = m->H, K = m->K, R = m->R;
    if (!m->ran || m->N != N) return pf_error("moe: backward without a matching forward");
    size_t big = (size_t)(R > N ? R : N);
    PF_TRY(reserve(be, &m->dy, &m->dy_cap, (size_t)R * C));
    PF_TRY(reserve(be, &m->dxg, &m->dxg_cap, (size_t)R * C));
    PF_TRY(reserve(be, &m->da, &m->da_cap, big * F));
    PF_TRY(reserve(be, &m->dh, &m->dh_cap, big * H));
    PF_TRY(reserve(be, &m->dw, &m->dw_cap, (size_t)N * K));
    PF_TRY(reserve(be, &m->dlogits, &m->dlogits_cap, (size_t)N * E));
    PF_TRY(reserve(be, &m->aux_grad, &m->auxg_cap, (size_t)E));

    /* gates: dL/dw of every slot; experts: the gated gradient gathered into their rows */
    be->moe_gate_grad(m->dw, dout, m->y, m->slot_row, N, K, C);
    be->moe_gather(m->dy, dout, m->row_token, m->row_w, R, C);
    experts_backward(l, m, m->experts, E, m->offset, m->xg, m->h, m->a, m->dy, m->da, m->dh, m->dxg, 0.0f);
    be->moe_combine(din, m->dxg, m->slot_row, NULL, N, K, C, 0);
    for (int s = 0; s < m->S; s++)
        experts_backward(l, m, &m->shared[s], 1, (int[]){0, N}, in, m->sh_h + (size_t)s * N * H,
                         m->sh_a + (size_t)s * N * F, dout, m->da, m->dh, din, 1.0f);

    /* router: gates, balance loss (dL/dp[t, i] = aux * E * f_i / N) and z-loss */
    for (int e = 0; e < E; e++) m->aux_grad_h[e] = (float)(m->aux * E * m->load[e] / N);
    be->upload(m->aux_grad, m->aux_grad_h, (size_t)E * sizeof(float));
    be->moe_router_backward(m->dlogits, m->probs, m->lse, m->ec_layout ? NULL : m->idx, m->w, m->dw,
                            m->aux_grad, 2.0f * m->zloss / N, N, E, K, m->renorm);
    const float *rin = m->jittered ? m->xr : in;
    be->gemm(1, 0, E, C, N, 1.0f, m->dlogits, E, rin, C, 1.0f, m->dwg, C);
    if (m->jittered) {
        PF_TRY(reserve(be, &m->tmp, &m->tmp_cap, (size_t)N * C));
        be->gemm(0, 0, N, C, E, 1.0f, m->dlogits, E, m->wg, C, 0.0f, m->tmp, C);
        be->mul(m->tmp, m->tmp, m->noise, (size_t)N * C);
        be->add(din, din, m->tmp, (size_t)N * C);
    } else {
        be->gemm(0, 0, N, C, E, 1.0f, m->dlogits, E, m->wg, C, 1.0f, din, C);
    }
    return 0;
}

/* ---- training history, probes, describe ------------------------------------------------------ */

static void moe_train_step_end(pf_layer *l, int step)
{
    moe *m = l->impl;
    (void)step;
    if (m->have_batch) {
        memcpy(m->history + (size_t)(m->n_history % MOE_HISTORY) * m->E, m->load, (size_t)m->E * sizeof(float));
        m->n_history++;
    }
    m->jitter_counter++;
}

static int dead_experts(const moe *m)
{
    long window = m->n_history < MOE_DEAD_WINDOW ? m->n_history : MOE_DEAD_WINDOW;
    int dead = 0;
    if (window == 0) return 0;
    for (int e = 0; e < m->E; e++) {
        int any = 0;
        for (long s = m->n_history - window; s < m->n_history; s++)
            any |= m->history[(size_t)(s % MOE_HISTORY) * m->E + e] > 0;
        dead += !any;
    }
    return dead;
}

static int scalar(pf_tensor **out, double v)
{
    pf_tensor *t = pf_tensor_new1(1);
    if (!t) return -1;
    t->data[0] = (float)v;
    *out = t;
    return 0;
}

/* topk probe: [tokens, k] expert ids as floats */
static int probe_topk(pf_layer *l, moe *m, pf_tensor **out)
{
    const pf_backend *be = l->be;
    int N = m->N, K = m->K, E = m->E, k = m->ec_layout ? m->k : K;
    pf_tensor *t = pf_tensor_new2(N, k);
    int32_t *rows = malloc((size_t)N * K * sizeof *rows);
    float *p = malloc((size_t)N * E * sizeof *p);
    if (!t || !rows || !p) {
        pf_tensor_free(t);
        free(rows);
        free(p);
        return t ? pf_error("moe: out of memory") : -1;
    }
    if (!m->ec_layout) {
        be->download(rows, m->idx, (size_t)N * K * sizeof *rows);
        for (size_t i = 0; i < (size_t)N * K; i++) t->data[i] = (float)rows[i];
    } else {
        /* the experts that took each token, most probable first */
        be->download(rows, m->slot_row, (size_t)N * E * sizeof *rows);
        be->download(p, m->probs, (size_t)N * E * sizeof *p);
        for (int n = 0; n < N; n++)
            for (int j = 0; j < k; j++) {
                int best = -1;
                for (int e = 0; e < E; e++) {
                    int taken = 0;
                    for (int i = 0; i < j; i++) taken |= (int)t->data[(size_t)n * k + i] == e;
                    if (rows[(size_t)n * E + e] >= 0 && !taken &&
                        (best < 0 || p[(size_t)n * E + e] > p[(size_t)n * E + best]))
                        best = e;
                }
                t->data[(size_t)n * k + j] = (float)best;
            }
    }
    free(rows);
    free(p);
    *out = t;
    return 0;
}

static int moe_probe(pf_layer *l, const char *name, pf_tensor **out)
{
    moe *m = l->impl;
    int E = m->E;
    if (!strcmp(name, "gates") || !strcmp(name, "topk")) {
        if (!m->ran) return pf_error("moe: probe '%s' has no data before a forward or step", name);
        if (!strcmp(name, "gates")) return pf_probe_from_device(l->be, out, m->probs, 2, (int[]){m->N, E});
        return probe_topk(l, m, out);
    }
    if (!strcmp(name, "load_history")) {
        if (m->n_history == 0) return pf_error("moe: probe 'load_history' has no data before a training step");
        long rows = m->n_history < MOE_HISTORY ? m->n_history : MOE_HISTORY, first = m->n_history - rows;
        pf_tensor *t = pf_tensor_new2((int)rows, E);
        if (!t) return -1;
        for (long r = 0; r < rows; r++)
            memcpy(t->data + (size_t)r * E, m->history + (size_t)((first + r) % MOE_HISTORY) * E,
                   (size_t)E * sizeof(float));
        *out = t;
        return 0;
    }
    if (!strcmp(name, "dead")) return scalar(out, dead_experts(m));
    if (!m->have_batch) return pf_error("moe: probe '%s' has no data before a forward", name);
    if (!strcmp(name, "load")) {
        pf_tensor *t = pf_tensor_new1(E);
        if (!t) return -1;
        memcpy(t->data, m->load, (size_t)E * sizeof(float));
        *out = t;
        return 0;
    }
    if (!strcmp(name, "entropy")) return scalar(out, m->entropy);
    if (!strcmp(name, "drop_rate")) return scalar(out, m->drop_rate);
    if (!strcmp(name, "aux_loss")) return scalar(out, m->balance);
    if (!strcmp(name, "z_loss")) return scalar(out, m->z);
    if (!strcmp(name, "max_violation")) {
        float mx = 0;
        for (int e = 0; e < E; e++) mx = m->load[e] > mx ? m->load[e] : mx;
        return scalar(out, (double)E * mx - 1.0);
    }
    return pf_error("moe has no probe '%s'", name);
}

static void moe_describe(const pf_layer *l, pf_layer_info *info)
{
    const moe *m = l->impl;
    double per_expert = 2.0 * l->dim * (m->H + m->F);
    info->flops_per_token = 2.0 * l->dim * m->E + (m->k + m->S) * per_expert;
    info->state_bytes = 0;
    info->constant_state = 1;
}

static void moe_destroy(pf_layer *l)
{
    moe *m = l->impl;
    if (!m) return;
    const pf_backend *be = l->be;
    float **f[] = {&m->xr, &m->noise, &m->logits, &m->probs, &m->lse, &m->w, &m->row_w, &m->xg, &m->h,
                   &m->a, &m->y, &m->sh_h, &m->sh_a, &m->stats, &m->dy, &m->dxg, &m->da, &m->dh, &m->dw,
                   &m->dlogits, &m->tmp, &m->aux_grad};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (*f[i]) be->free(*f[i]);
    int32_t **n[] = {&m->idx, &m->slot_row, &m->row_token, &m->counts, &m->scratch};
    for (size_t i = 0; i < sizeof n / sizeof n[0]; i++)
        if (*n[i]) be->free(*n[i]);
    free(m->experts);
    free(m->shared);
    free(m->counts_h);
    free(m->offset);
    free(m->stats_h);
    free(m->load);
    free(m->aux_grad_h);
    free(m->history);
    free(m);
    l->impl = NULL;
}

/* every kernel this kind calls: pf_layer_create checks that the backend has them */
static const pf_kernel_need moe_kernels[] = {
    PF_KERNEL(act_backward), PF_KERNEL(act_forward), PF_KERNEL(add), PF_KERNEL(alloc),
    PF_KERNEL(bias_add), PF_KERNEL(bias_grad), PF_KERNEL(download), PF_KERNEL(free),
    PF_KERNEL(gemm), PF_KERNEL(moe_combine), PF_KERNEL(moe_dispatch), PF_KERNEL(moe_expert_choice),
    PF_KERNEL(moe_gate_grad), PF_KERNEL(moe_gather), PF_KERNEL(moe_jitter), PF_KERNEL(moe_route),
    PF_KERNEL(moe_router_backward), PF_KERNEL(moe_router_stats), PF_KERNEL(mul),
    PF_KERNEL(swiglu_backward), PF_KERNEL(swiglu_forward), PF_KERNEL(upload), {0, NULL},
};

const pf_layer_kind pf_layer_moe = {
    .name = "moe",
    .summary = "mixture of experts: softmax router (topk, switch, expert_choice), MLP experts",
    .options = moe_options,
    .n_options = sizeof moe_options / sizeof moe_options[0],
    .probes = moe_probes,
    .n_probes = sizeof moe_probes / sizeof moe_probes[0],
    .create = moe_create,
    .forward = moe_forward,
    .backward = moe_backward,
    .step = moe_step,
    .reset = moe_reset,
    .probe = moe_probe,
    .describe = moe_describe,
    .train_step_end = moe_train_step_end,
    .destroy = moe_destroy,
    .kernels = moe_kernels,
};
