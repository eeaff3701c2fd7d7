/* attention: causal multi-head self-attention with grouped KV heads (GQA), rotary position
 * embedding (RoPE) and an optional sliding window, in the Llama form and names (q_proj, k_proj,
 * v_proj, o_proj, no biases), computed by the backend's tiled FlashAttention kernel.
 *
 * Shapes: B batch, T tokens, C model width, Hq query heads, Hkv key/value heads (Hq % Hkv == 0),
 * D = C / Hq head dim, N = (Hq + 2 Hkv) D the packed qkv width; rows = B * T. Weights are stored
 * (out, in) as in torch.nn.Linear. q_proj, k_proj and v_proj are registered back to back, so they are
 * one (N, C) matrix and one GEMM gives the packed row [q heads | k heads | v heads] per token.
 *
 * Forward: qkv = x Wqkv^T; RoPE on the q and k heads in place (position t in the sequence); the
 * flash kernel; out = att Wo^T. Step: the same for one token at position kv_len, its k and v appended
 * to a KV cache that grows by doubling (attention cannot be stepped in O(1)). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "engine/layer.h"

static const pf_option attention_options[] = {
    {"heads", PF_OPT_INT, 4, 1, 1024, NULL, "query heads Hq (must divide dim; default 4)"},
    {"kv_heads", PF_OPT_INT_AUTO, 0, 1, 1024, NULL,
     "key/value heads Hkv, must divide heads; auto: = heads (plain multi-head)"},
    {"rope", PF_OPT_BOOL, 1, 0, 1, NULL, "rotary position embedding on q and k (default true)"},
    {"rope_theta", PF_OPT_NUMBER, 10000, 1, 1e9, NULL, "RoPE base (default 10000)"},
    {"window", PF_OPT_INT, 0, 0, 1 << 30, NULL,
     "sliding window in tokens: a query sees the last `window` tokens; 0: the whole prefix"},
    {"tile", PF_OPT_INT, 32, 4, 256, NULL, "the attention kernel's tile size in tokens (default 32)"},
};

static const pf_probe_info attention_probes[] = {
    {"weights", "[heads, kv_len]", PF_REFRESH_STEP, "attention of the last stepped token over the cache"},
    {"tiles", "[q_tiles, k_tiles]", PF_REFRESH_FORWARD,
     "last forward's tiles: 0 skipped, 1 computed with masking inside, 2 computed in full"},
    {"kv_len", "[1]", PF_REFRESH_STEP, "tokens held in the KV cache"},
    {"tile_counts", "[3]", PF_REFRESH_FORWARD,
     "last forward's tiles skipped, partial and full, summed over batch and heads"},
};

typedef struct attention {
    int Hq, Hkv, D, N, rope, window, tile;
    float theta;
    float *w_qkv;      /* (N, C) [q_proj; k_proj; v_proj] */
    float *w_k, *w_v;  /* (Hkv*D, C) views inside w_qkv */
    float *w_o;        /* (C, Hq*D) */
    float *dw_qkv, *dw_k, *dw_v, *dw_o;
    /* forward cache */
    float *qkv;        /* (rows, N) after RoPE */
    float *att;        /* (rows, Hq*D) the kernel's output */
    float *lse;        /* (B, Hq, T) */
    float *dqkv;       /* (rows, N) backward scratch */
    float *datt;       /* (rows, Hq*D) backward scratch */
    size_t qkv_cap, att_cap, lse_cap, dqkv_cap, datt_cap;
    uint8_t *tile_map; /* (q_tiles, k_tiles) device bytes of the last forward */
    size_t map_cap;
    int map_n;         /* q_tiles = k_tiles of the last forward; 0 before the first */
    long counts[3];    /* skipped, partial, full of the last forward (host) */
    /* step state */
    float *kcache, *vcache; /* (cache_cap, Hkv, D) */
    int cache_cap, kv_len;
    float *step_qkv;   /* (N) */
    float *step_att;   /* (Hq*D) */
    float *weights;    /* (Hq, kv_len) of the last step */
    size_t step_qkv_cap, step_att_cap, weights_cap;
} attention;

static int attention_create(pf_layer *l)
{
    attention *a = calloc(1, sizeof *a);
    if (!a) return pf_error("attention: out of memory");
    l->impl = a;
    int C = l->dim;
    a->Hq = pf_config_int(&l->cfg, "heads");
    a->Hkv = pf_config_int(&l->cfg, "kv_heads");
    if (a->Hkv == 0) a->Hkv = a->Hq;
    a->rope = pf_config_int(&l->cfg, "rope");
    a->theta = (float)pf_config_get(&l->cfg, "rope_theta");
    a->window = pf_config_int(&l->cfg, "window");
    a->tile = pf_config_int(&l->cfg, "tile");
    if (C % a->Hq != 0)
        return pf_error("attention: option 'heads' (%d) must divide dim (%d)", a->Hq, C);
    if (a->Hq % a->Hkv != 0)
        return pf_error("attention: option 'kv_heads' (%d) must divide heads (%d)", a->Hkv, a->Hq);
    a->D = C / a->Hq;
    if (a->rope && a->D % 2 != 0)
        return pf_error("attention: option 'rope' needs an even head dim, but dim %d / heads %d = %d",
                        C, a->Hq, a->D);
    a->N = (a->Hq + 2 * a->Hkv) * a->D;
    int HqD = a->Hq * a->D, HkvD = a->Hkv * a->D;
    float std = 0.02f;
    PF_TRY(pf_layer_add_param(l, "q_proj.weight", 2, (int[]){HqD, C}, PF_INIT_NORMAL, std, 1, &a->w_qkv, &a->dw_qkv));
    /* k_proj and v_proj follow q_proj in memory: together they are w_qkv (N, C) */
    PF_TRY(pf_layer_add_param(l, "k_proj.weight", 2, (int[]){HkvD, C}, PF_INIT_NORMAL, std, 1, &a->w_k, &a->dw_k));
    PF_TRY(pf_layer_add_param(l, "v_proj.weight", 2, (int[]){HkvD, C}, PF_INIT_NORMAL, std, 1, &a->w_v, &a->dw_v));
    PF_TRY(pf_layer_add_param(l, "o_proj.weight", 2, (int[]){C, HqD}, PF_INIT_NORMAL, std, 1, &a->w_o, &a->dw_o));
    return 0;
}

/* ---- forward and backward --------------------------------------------------------------------- */

static int attention_forward(pf_layer *l, float *out, const float *in, int B, int T)
{
    attention *a = l->impl;
    const pf_backend *be = l->be;
    int rows = B * T, C = l->dim, N = a->N, HqD = a->Hq * a->D;
    int nt = (T + a->tile - 1) / a->tile;
    PF_TRY(pf_buffer_reserve(be, &a->qkv, &a->qkv_cap, (size_t)rows * N));
    PF_TRY(pf_buffer_reserve(be, &a->att, &a->att_cap, (size_t)rows * HqD));
    PF_TRY(pf_buffer_reserve(be, &a->lse, &a->lse_cap, (size_t)rows * a->Hq));
    if (a->map_cap < (size_t)nt * nt) {
        if (a->tile_map) be->free(a->tile_map);
        a->map_cap = 0;
        a->tile_map = be->alloc((size_t)nt * nt);
        if (!a->tile_map) return -1;
        a->map_cap = (size_t)nt * nt;
    }
    be->gemm(0, 1, rows, N, C, 1.0f, in, C, a->w_qkv, C, 0.0f, a->qkv, N);
    /* the q heads and the k heads are adjacent in a row: one call rotates both */
    if (a->rope) be->rope(a->qkv, rows, T, N, a->Hq + a->Hkv, a->D, 0, a->theta, 0);
    long counts[3] = {0, 0, 0};
    PF_TRY(be->attention_forward(a->att, a->lse, a->qkv, a->qkv + HqD, a->qkv + HqD + a->Hkv * a->D,
                                 N, B, T, a->Hq, a->Hkv, a->D, a->window, a->tile, a->tile_map, counts));
    memcpy(a->counts, counts, sizeof counts);
    a->map_n = nt;
    be->gemm(0, 1, rows, C, HqD, 1.0f, a->att, HqD, a->w_o, HqD, 0.0f, out, C);
    return 0;
}

static int attention_backward(pf_layer *l, float *din, const float *dout, const float *in, int B, int T)
{
    attention *a = l->impl;
    const pf_backend *be = l->be;
    int rows = B * T, C = l->dim, N = a->N, HqD = a->Hq * a->D, HkvD = a->Hkv * a->D;
    PF_TRY(pf_buffer_reserve(be, &a->dqkv, &a->dqkv_cap, (size_t)rows * N));
    PF_TRY(pf_buffer_reserve(be, &a->datt, &a->datt_cap, (size_t)rows * HqD));
    /* out = att Wo^T */
    be->gemm(1, 0, C, HqD, rows, 1.0f, dout, C, a->att, HqD, 1.0f, a->dw_o, HqD);
    be->gemm(0, 0, rows, HqD, C, 1.0f, dout, C, a->w_o, HqD, 0.0f, a->datt, HqD);
    PF_TRY(be->attention_backward(a->dqkv, a->dqkv + HqD, a->dqkv + HqD + HkvD, a->datt, a->att, a->lse,
                                  a->qkv, a->qkv + HqD, a->qkv + HqD + HkvD, N, B, T, a->Hq, a->Hkv,
                                  a->D, a->window, a->tile));
    /* RoPE is a rotation: its backward rotates the gradients back */
    if (a->rope) be->rope(a->dqkv, rows, T, N, a->Hq + a->Hkv, a->D, 0, a->theta, 1);
    /* qkv = in Wqkv^T */
    be->gemm(1, 0, N, C, rows, 1.0f, a->dqkv, N, in, C, 1.0f, a->dw_qkv, C);
    be->gemm(0, 0, rows, C, N, 1.0f, a->dqkv, N, a->w_qkv, C, 0.0f, din, C);
    return 0;
}

/* ---- step ------------------------------------------------------------------------------------- */

/* room for at least n tokens in the KV cache, keeping what is there */
static int cache_grow(pf_layer *l, int n)
{
    attention *a = l->impl;
    const pf_backend *be = l->be;
    if (n <= a->cache_cap) return 0;
    int cap = a->cache_cap ? a->cache_cap : 64;
    while (cap < n) cap *= 2;
    size_t row = (size_t)a->Hkv * a->D * sizeof(float);
    float *kc = be->alloc((size_t)cap * row), *vc = be->alloc((size_t)cap * row);
    if (!kc || !vc) {
        if (kc) be->free(kc);
        if (vc) be->free(vc);
        return -1;
    }
    if (a->kv_len) {
        be->copy(kc, a->kcache, (size_t)a->kv_len * row);
        be->copy(vc, a->vcache, (size_t)a->kv_len * row);
    }
    if (a->kcache) be->free(a->kcache);
    if (a->vcache) be->free(a->vcache);
    a->kcache = kc;
    a->vcache = vc;
    a->cache_cap = cap;
    return 0;
}

static int attention_step(pf_layer *l, float *out, const float *in)
{
    attention *a = l->impl;
    const pf_backend *be = l->be;
    int C = l->dim, N = a->N, HqD = a->Hq * a->D, HkvD = a->Hkv * a->D, len = a->kv_len + 1;
    PF_TRY(cache_grow(l, len));
    PF_TRY(pf_buffer_reserve(be, &a->step_qkv, &a->step_qkv_cap, (size_t)N));
    PF_TRY(pf_buffer_reserve(be, &a->step_att, &a->step_att_cap, (size_t)HqD));
    PF_TRY(pf_buffer_reserve(be, &a->weights, &a->weights_cap, (size_t)a->Hq * a->cache_cap));
    be->gemm(0, 1, 1, N, C, 1.0f, in, C, a->w_qkv, C, 0.0f, a->step_qkv, N);
    if (a->rope) be->rope(a->step_qkv, 1, 1, N, a->Hq + a->Hkv, a->D, a->kv_len, a->theta, 0);
    be->copy(a->kcache + (size_t)a->kv_len * HkvD, a->step_qkv + HqD, (size_t)HkvD * sizeof(float));
    be->copy(a->vcache + (size_t)a->kv_len * HkvD, a->step_qkv + HqD + HkvD, (size_t)HkvD * sizeof(float));
    a->kv_len = len;
    be->attention_step(a->step_att, a->weights, a->step_qkv, a->kcache, a->vcache, len, a->Hq, a->Hkv,
                       a->D, a->window);
    be->gemm(0, 1, 1, C, HqD, 1.0f, a->step_att, HqD, a->w_o, HqD, 0.0f, out, C);
    return 0;
}

/* Empties the cache; its memory is kept for the next sequence. */
static void attention_reset(pf_layer *l)
{
    attention *a = l->impl;
    a->kv_len = 0;
}

/* ---- probes and describe ---------------------------------------------------------------------- */

static int attention_probe(pf_layer *l, const char *name, pf_tensor **out)
{
    attention *a = l->impl;
    const pf_backend *be = l->be;
    if (strcmp(name, "weights") == 0) {
        if (a->kv_len == 0) return pf_error("attention: probe 'weights' has no data before a step");
        return pf_probe_from_device(be, out, a->weights, 2, (int[]){a->Hq, a->kv_len});
    }
    if (strcmp(name, "kv_len") == 0) {
        pf_tensor *t = pf_tensor_new1(1);
        if (!t) return -1;
        t->data[0] = (float)a->kv_len;
        *out = t;
        return 0;
    }
    if (strcmp(name, "tile_counts") == 0) {
        if (a->map_n == 0) return pf_error("attention: probe 'tile_counts' has no data before a forward");
        pf_tensor *t = pf_tensor_new1(3);
        if (!t) return -1;
        for (int i = 0; i < 3; i++) t->data[i] = (float)a->counts[i];
        *out = t;
        return 0;
    }
    if (strcmp(name, "tiles") == 0) {
        int n = a->map_n;
        if (n == 0) return pf_error("attention: probe 'tiles' has no data before a forward");
        uint8_t *host = malloc((size_t)n * n);
        if (!host) return pf_error("attention: out of memory");
        pf_tensor *t = pf_tensor_new2(n, n);
        if (!t) {
            free(host);
            return -1;
        }
        be->download(host, a->tile_map, (size_t)n * n);
        for (int i = 0; i < n * n; i++) t->data[i] = host[i];
        free(host);
        *out = t;
        return 0;
    }
    return pf_error("attention: no probe '%s'", name);
}

static void attention_describe(const pf_layer *l, pf_layer_info *info)
{
    const attention *a = l->impl;
    int C = l->dim, HqD = a->Hq * a->D;
    /* the next stepped token attends over the cache plus itself, within the window */
    double ctx = a->kv_len + 1;
    if (a->window > 0 && ctx > a->window) ctx = a->window;
    info->flops_per_token = 2.0 * C * (a->N + HqD) + 2.0 * 2.0 * HqD * ctx;
    info->state_bytes = 2.0 * a->kv_len * a->Hkv * a->D * sizeof(float);
    info->constant_state = 0;
}

static void attention_destroy(pf_layer *l)
{
    attention *a = l->impl;
    if (!a) return;
    const pf_backend *be = l->be;
    pf_buffer_release(be, &a->qkv, &a->qkv_cap);
    pf_buffer_release(be, &a->att, &a->att_cap);
    pf_buffer_release(be, &a->lse, &a->lse_cap);
    pf_buffer_release(be, &a->dqkv, &a->dqkv_cap);
    pf_buffer_release(be, &a->datt, &a->datt_cap);
    pf_buffer_release(be, &a->step_qkv, &a->step_qkv_cap);
    pf_buffer_release(be, &a->step_att, &a->step_att_cap);
    pf_buffer_release(be, &a->weights, &a->weights_cap);
    if (a->tile_map) be->free(a->tile_map);
    if (a->kcache) be->free(a->kcache);
    if (a->vcache) be->free(a->vcache);
    free(a);
    l->impl = NULL;
}

/* every kernel this kind calls: pf_layer_create checks that the backend has them */
static const pf_kernel_need attention_kernels[] = {
    PF_KERNEL(alloc), PF_KERNEL(attention_backward), PF_KERNEL(attention_forward),
    PF_KERNEL(attention_step), PF_KERNEL(copy), PF_KERNEL(download), PF_KERNEL(free),
    PF_KERNEL(gemm), PF_KERNEL(rope), {0, NULL},
};

const pf_layer_kind pf_layer_attention = {
    .name = "attention",
    .summary = "causal multi-head attention: grouped KV heads, RoPE, sliding window, flash tiles",
    .options = attention_options,
    .n_options = sizeof attention_options / sizeof attention_options[0],
    .probes = attention_probes,
    .n_probes = sizeof attention_probes / sizeof attention_probes[0],
    .create = attention_create,
    .forward = attention_forward,
    .backward = attention_backward,
    .step = attention_step,
    .reset = attention_reset,
    .probe = attention_probe,
    .describe = attention_describe,
    .destroy = attention_destroy,
    .kernels = attention_kernels,
};
