/* attention layer and the cpu attention kernels:
 *   - gradients by finite differences (MHA, GQA, sliding window, no RoPE; T not a multiple of tile),
 *   - stepping over the KV cache equals one forward (128 tokens),
 *   - the flash forward (and backward) against a plain double-precision softmax(QK^T/sqrt(D)+mask)V,
 *   - the tile map and counts against a classification made pair by pair from the mask definition,
 *   - probes (shapes, weights rows sum to 1, kv_len), describe, option validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "tests/c/layer_check.h"

extern const pf_layer_kind pf_layer_attention;

/* The default init (normal 0.02) gives near-uniform softmaxes, where a wrong dq or dk would hide:
 * scale q_proj and k_proj up so that the attention is peaked. */
static void sharpen(pf_layer *l, float factor)
{
    for (int p = 0; p < l->n_params; p++) {
        const pf_layer_param *pp = &l->params[p];
        if (strcmp(pp->name, "q_proj.weight") && strcmp(pp->name, "k_proj.weight")) continue;
        for (size_t i = 0; i < pp->numel; i++) (*pp->value)[i] *= factor;
    }
}

/* ---- gradients -------------------------------------------------------------------------------- */

static void gradients(const char *spec)
{
    pf_layer *l = check_layer_new(&pf_layer_attention, spec, 16, 7);
    sharpen(l, 15.0f);
    /* T = 11 with tile = 4: three q tiles, the last one short, so partial tiles are exercised */
    double err = check_gradients(l, 2, 11, 24, 1e-2, 11);
    assert_true(err < 1e-2);
    check_layer_free(l);
}

static void test_gradients_mha(void **state) { (void)state; gradients("heads=4 tile=4"); }
static void test_gradients_gqa(void **state) { (void)state; gradients("heads=4 kv_heads=2 tile=4"); }
static void test_gradients_window(void **state) { (void)state; gradients("heads=4 kv_heads=2 window=3 tile=4"); }
static void test_gradients_no_rope(void **state) { (void)state; gradients("heads=2 rope=false tile=4"); }

/* ---- step equals forward ---------------------------------------------------------------------- */

static void step_matches(const char *spec)
{
    pf_layer *l = check_layer_new(&pf_layer_attention, spec, 32, 3);
    sharpen(l, 10.0f);
    assert_true(check_step_matches_forward(l, 128, 5) <= 1e-4);
    check_layer_free(l);
}

static void test_step_mha(void **state) { (void)state; step_matches("heads=4"); }
static void test_step_gqa(void **state) { (void)state; step_matches("heads=4 kv_heads=2"); }
static void test_step_window(void **state) { (void)state; step_matches("heads=4 window=16 tile=8"); }
static void test_step_no_rope(void **state) { (void)state; step_matches("heads=4 rope=false"); }

/* ---- RoPE ------------------------------------------------------------------------------------- */

/* The rope kernel against the Hugging Face Llama formula written plainly in double:
 * inv_freq_i = theta^(-2i/D), emb = [freqs, freqs], out = x cos(emb) + rotate_half(x) sin(emb) with
 * rotate_half(x) = [-x2, x1]; then the inverse brings x back. Rows are (B=2, T=7) at pos0 = 3, with
 * 3 heads of D = 8 in a row of stride 29 (the padding is left alone). */
static void test_rope_matches_formula(void **state)
{
    (void)state;
    int rows = 14, T = 7, stride = 29, heads = 3, D = 8, pos0 = 3, half = D / 2;
    double theta = 500.0;
    float x[14 * 29], x0[14 * 29];
    check_fill_normal(x0, sizeof x0 / sizeof x0[0], 1.0, 77);
    memcpy(x, x0, sizeof x);
    pf_backend_cpu.rope(x, rows, T, stride, heads, D, pos0, (float)theta, 0);
    double diff = 0;
    for (int r = 0; r < rows; r++) {
        int pos = pos0 + r % T;
        for (int h = 0; h < heads; h++)
            for (int d = 0; d < D; d++) {
                const float *v = x0 + r * stride + h * D;
                double ang = pos * pow(theta, -2.0 * (d % half) / D);
                double rot = d < half ? -v[d + half] : v[d - half];
                double want = v[d] * cos(ang) + rot * sin(ang);
                diff = fmax(diff, fabs(x[r * stride + h * D + d] - want));
            }
        for (int c = heads * D; c < stride; c++) assert_true(x[r * stride + c] == x0[r * stride + c]);
    }
    printf("#   rope vs formula: max abs diff %.2e\n", diff);
    assert_true(diff < 1e-5);
    pf_backend_cpu.rope(x, rows, T, stride, heads, D, pos0, (float)theta, 1);
    assert_true(check_max_rel_diff(x0, x, sizeof x / sizeof x[0]) < 1e-6);
}

/* ---- the kernels against a plain reference ---------------------------------------------------- */

typedef struct shape {
    int B, T, Hq, Hkv, D, window, tile;
} shape;

static int sees(int i, int j, int window) { return j <= i && (window == 0 || i - j < window); }

/* P (T, T) in double for query head h of batch b: softmax(q k^T / sqrt(D) + mask); lse (T) */
static void reference_probs(double *P, double *lse, const float *qkv, int stride, const shape *s,
                            int b, int h)
{
    int G = s->Hq / s->Hkv, T = s->T, D = s->D;
    const float *q = qkv, *k = qkv + s->Hq * D;
    for (int i = 0; i < T; i++) {
        double mx = -INFINITY;
        for (int j = 0; j < T; j++) {
            double dot = 0;
            for (int d = 0; d < D; d++)
                dot += (double)q[((size_t)b * T + i) * stride + h * D + d] *
                       k[((size_t)b * T + j) * stride + (h / G) * D + d];
            P[i * T + j] = sees(i, j, s->window) ? dot / sqrt((double)D) : -INFINITY;
            if (P[i * T + j] > mx) mx = P[i * T + j];
        }
        double sum = 0;
        for (int j = 0; j < T; j++) sum += P[i * T + j] = exp(P[i * T + j] - mx);
        for (int j = 0; j < T; j++) P[i * T + j] /= sum;
        lse[i] = mx + log(sum);
    }
}

/* a packed qkv buffer (rows, stride) with stride wider than the heads (padding must be ignored) */
static float *random_qkv(const shape *s, int *stride, uint64_t seed)
{
    *stride = (s->Hq + 2 * s->Hkv) * s->D + 3;
    size_t n = (size_t)s->B * s->T * *stride;
    float *qkv = malloc(n * sizeof(float));
    check_fill_normal(qkv, n, 1.5, seed);
    return qkv;
}

static void forward_vs_reference(const shape *s)
{
    const pf_backend *be = &pf_backend_cpu;
    int stride, T = s->T, D = s->D, Hq = s->Hq;
    float *qkv = random_qkv(s, &stride, 100 + (uint64_t)T);
    size_t nout = (size_t)s->B * T * Hq * D;
    float *out = malloc(nout * sizeof(float)), *lse = malloc((size_t)s->B * Hq * T * sizeof(float));
    double *P = malloc((size_t)T * T * sizeof(double)), *L = malloc((size_t)T * sizeof(double));
    int nt = (T + s->tile - 1) / s->tile;
    uint8_t *map = malloc((size_t)nt * nt);
    assert_int_equal(be->attention_forward(out, lse, qkv, qkv + Hq * D, qkv + (Hq + s->Hkv) * D, stride,
                                           s->B, T, Hq, s->Hkv, D, s->window, s->tile, map, NULL), 0);
    double diff = 0, scale = 0, lse_diff = 0;
    const float *v = qkv + (Hq + s->Hkv) * D;
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < Hq; h++) {
            reference_probs(P, L, qkv, stride, s, b, h);
            for (int i = 0; i < T; i++) {
                for (int d = 0; d < D; d++) {
                    double ref = 0;
                    for (int j = 0; j < T; j++)
                        ref += P[i * T + j] * v[((size_t)b * T + j) * stride + (h / (Hq / s->Hkv)) * D + d];
                    double got = out[(((size_t)b * T + i) * Hq + h) * D + d];
                    diff = fmax(diff, fabs(got - ref));
                    scale = fmax(scale, fabs(ref));
                }
                double dl = fabs(lse[((size_t)b * Hq + h) * T + i] - L[i]) / fmax(1.0, fabs(L[i]));
                lse_diff = fmax(lse_diff, dl);
            }
        }
    printf("#   flash forward B=%d T=%d Hq=%d Hkv=%d D=%d window=%d tile=%d: rel diff %.2e, lse %.2e\n",
           s->B, T, Hq, s->Hkv, D, s->window, s->tile, diff / scale, lse_diff);
    assert_true(diff / scale <= 1e-5);
    assert_true(lse_diff <= 1e-5);
    free(qkv);
    free(out);
    free(lse);
    free(P);
    free(L);
    free(map);
}

static const shape forward_cases[] = {
    {2, 37, 4, 2, 8, 0, 8},     /* GQA, T not a multiple of the tile */
    {1, 64, 2, 2, 16, 0, 16},   /* T a multiple of the tile */
    {2, 50, 3, 1, 8, 7, 4},     /* one kv head for three query heads, window shorter than 2 tiles */
    {1, 33, 2, 1, 4, 20, 32},   /* a window inside one large tile, a 1-token last tile */
    {1, 5, 2, 2, 8, 0, 8},      /* T shorter than a tile */
    {1, 29, 2, 2, 6, 1, 5},     /* window 1: each query sees only itself */
    {1, 100, 4, 4, 8, 40, 16},  /* window not a multiple of the tile */
};

static void test_forward_matches_reference(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof forward_cases / sizeof forward_cases[0]; c++)
        forward_vs_reference(&forward_cases[c]);
}

/* The backward kernel against the same reference differentiated by hand:
 * dV = P^T dO, dP = dO V^T, dS = P o (dP - rowsum(dP o P)), dQ = dS K / sqrt(D), dK = dS^T Q / sqrt(D). */
static void backward_vs_reference(const shape *s)
{
    const pf_backend *be = &pf_backend_cpu;
    int stride, T = s->T, D = s->D, Hq = s->Hq, Hkv = s->Hkv, G = Hq / Hkv;
    float *qkv = random_qkv(s, &stride, 200 + (uint64_t)T);
    size_t nout = (size_t)s->B * T * Hq * D, nqkv = (size_t)s->B * T * stride;
    float *out = malloc(nout * sizeof(float)), *dout = malloc(nout * sizeof(float));
    float *lse = malloc((size_t)s->B * Hq * T * sizeof(float));
    float *dqkv = malloc(nqkv * sizeof(float));
    double *ref = calloc(nqkv, sizeof(double));
    double *P = malloc((size_t)T * T * sizeof(double)), *L = malloc((size_t)T * sizeof(double));
    double *dS = malloc((size_t)T * T * sizeof(double));
    check_fill_normal(dout, nout, 1.0, 300);
    const float *q = qkv, *k = qkv + Hq * D, *v = qkv + (Hq + Hkv) * D;
    assert_int_equal(be->attention_forward(out, lse, q, k, v, stride, s->B, T, Hq, Hkv, D, s->window,
                                           s->tile, NULL, NULL), 0);
    assert_int_equal(be->attention_backward(dqkv, dqkv + Hq * D, dqkv + (Hq + Hkv) * D, dout, out, lse,
                                            q, k, v, stride, s->B, T, Hq, Hkv, D, s->window, s->tile), 0);
    double rs = 1.0 / sqrt((double)D);
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < Hq; h++) {
            int hk = h / G;
            reference_probs(P, L, qkv, stride, s, b, h);
            for (int i = 0; i < T; i++) {
                const float *dOi = dout + (((size_t)b * T + i) * Hq + h) * D;
                double rowsum = 0;
                for (int j = 0; j < T; j++) {
                    double dp = 0;
                    for (int d = 0; d < D; d++) dp += (double)dOi[d] * v[((size_t)b * T + j) * stride + hk * D + d];
                    dS[i * T + j] = dp;
                    rowsum += dp * P[i * T + j];
                }
                for (int j = 0; j < T; j++) dS[i * T + j] = P[i * T + j] * (dS[i * T + j] - rowsum);
            }
            for (int i = 0; i < T; i++)
                for (int j = 0; j < T; j++)
                    for (int d = 0; d < D; d++) {
                        size_t ri = ((size_t)b * T + i) * stride, rj = ((size_t)b * T + j) * stride;
                        ref[ri + h * D + d] += dS[i * T + j] * rs * k[rj + hk * D + d];
                        ref[rj + Hq * D + hk * D + d] += dS[i * T + j] * rs * q[ri + h * D + d];
                        ref[rj + (Hq + Hkv) * D + hk * D + d] +=
                            P[i * T + j] * dout[(((size_t)b * T + i) * Hq + h) * D + d];
                    }
        }
    double diff = 0, scale = 0;
    for (size_t r = 0; r < (size_t)s->B * T; r++)
        for (int c = 0; c < (Hq + 2 * Hkv) * D; c++) {
            diff = fmax(diff, fabs(dqkv[r * stride + c] - ref[r * stride + c]));
            scale = fmax(scale, fabs(ref[r * stride + c]));
        }
    printf("#   flash backward B=%d T=%d Hq=%d Hkv=%d D=%d window=%d tile=%d: rel diff %.2e\n", s->B, T,
           Hq, Hkv, D, s->window, s->tile, diff / scale);
    assert_true(diff / scale <= 1e-5);
    free(qkv);
    free(out);
    free(dout);
    free(lse);
    free(dqkv);
    free(ref);
    free(P);
    free(L);
    free(dS);
}

static void test_backward_matches_reference(void **state)
{
    (void)state;
    for (size_t c = 0; c < 4; c++) backward_vs_reference(&forward_cases[c]);
}

/* Forward and backward give the same bits on one thread and on all: each task owns its outputs. */
static void test_threads_deterministic(void **state)
{
    (void)state;
    const pf_backend *be = &pf_backend_cpu;
    shape s = {2, 128, 4, 2, 16, 48, 16};
    int stride, T = s.T, D = s.D, Hq = s.Hq, Hkv = s.Hkv;
    float *qkv = random_qkv(&s, &stride, 5);
    size_t nout = (size_t)s.B * T * Hq * D, nqkv = (size_t)s.B * T * stride, nlse = (size_t)s.B * Hq * T;
    float *out[2], *lse[2], *dqkv[2], *dout = malloc(nout * sizeof(float));
    check_fill_normal(dout, nout, 1.0, 6);
    int threads = omp_get_max_threads();
    for (int r = 0; r < 2; r++) {
        out[r] = malloc(nout * sizeof(float));
        lse[r] = malloc(nlse * sizeof(float));
        dqkv[r] = calloc(nqkv, sizeof(float));
        omp_set_num_threads(r == 0 ? 1 : threads > 1 ? threads : 2);
        assert_int_equal(be->attention_forward(out[r], lse[r], qkv, qkv + Hq * D, qkv + (Hq + Hkv) * D,
                                               stride, s.B, T, Hq, Hkv, D, s.window, s.tile, NULL, NULL), 0);
        assert_int_equal(be->attention_backward(dqkv[r], dqkv[r] + Hq * D, dqkv[r] + (Hq + Hkv) * D, dout,
                                                out[r], lse[r], qkv, qkv + Hq * D, qkv + (Hq + Hkv) * D,
                                                stride, s.B, T, Hq, Hkv, D, s.window, s.tile), 0);
    }
    omp_set_num_threads(threads);
    assert_memory_equal(out[0], out[1], nout * sizeof(float));
    assert_memory_equal(lse[0], lse[1], nlse * sizeof(float));
    assert_memory_equal(dqkv[0], dqkv[1], nqkv * sizeof(float));
    for (int r = 0; r < 2; r++) {
        free(out[r]);
        free(lse[r]);
        free(dqkv[r]);
    }
    free(dout);
    free(qkv);
}

/* ---- tile map and counts ---------------------------------------------------------------------- */

/* The expected class of every tile, from the mask definition pair by pair (no shortcut):
 * no visible pair: skipped, every pair visible: full, otherwise partial. */
static void expected_tiles(uint8_t *map, long counts[3], int T, int tile, int window)
{
    int nt = (T + tile - 1) / tile;
    counts[0] = counts[1] = counts[2] = 0;
    for (int qt = 0; qt < nt; qt++)
        for (int kt = 0; kt < nt; kt++) {
            long visible = 0, pairs = 0;
            for (int i = qt * tile; i < T && i < (qt + 1) * tile; i++)
                for (int j = kt * tile; j < T && j < (kt + 1) * tile; j++) {
                    pairs++;
                    visible += sees(i, j, window);
                }
            int cls = visible == 0 ? PF_TILE_SKIPPED : visible == pairs ? PF_TILE_FULL : PF_TILE_PARTIAL;
            map[qt * nt + kt] = (uint8_t)cls;
            counts[cls]++;
        }
}

/* Runs the kernel with B = 2, Hq = 3, Hkv = 1 and compares its map and counts with the expectation;
 * the per-(batch, head) counts are returned. */
static void kernel_tiles(int T, int tile, int window, long per_head[3], int verbose)
{
    const pf_backend *be = &pf_backend_cpu;
    shape s = {2, T, 3, 1, 2, window, tile};
    int stride, nt = (T + tile - 1) / tile;
    float *qkv = random_qkv(&s, &stride, 7);
    float *out = malloc((size_t)s.B * T * s.Hq * s.D * sizeof(float));
    float *lse = malloc((size_t)s.B * s.Hq * T * sizeof(float));
    uint8_t *map = malloc((size_t)nt * nt), *want = malloc((size_t)nt * nt);
    long counts[3] = {5, 6, 7};  /* the kernel adds to counts */
    assert_int_equal(be->attention_forward(out, lse, qkv, qkv + 3 * 2, qkv + 4 * 2, stride, s.B, T, s.Hq,
                                           s.Hkv, s.D, window, tile, map, counts), 0);
    expected_tiles(want, per_head, T, tile, window);
    assert_memory_equal(map, want, (size_t)nt * nt);
    int bh = s.B * s.Hq;
    assert_int_equal(counts[0] - 5, bh * per_head[0]);
    assert_int_equal(counts[1] - 6, bh * per_head[1]);
    assert_int_equal(counts[2] - 7, bh * per_head[2]);
    if (verbose)
        printf("#   tiles T=%d tile=%d window=%d: skipped %ld partial %ld full %ld per batch*head\n", T,
               tile, window, per_head[0], per_head[1], per_head[2]);
    free(qkv);
    free(out);
    free(lse);
    free(map);
    free(want);
}

static void test_tile_map_causal(void **state)
{
    (void)state;
    /* through the layer: 8 x 8 tiles; 8 on the diagonal are partial, the 28 above it skipped, the
     * 28 below it full */
    pf_layer *l = check_layer_new(&pf_layer_attention, "heads=2 tile=32", 16, 1);
    int B = 2, T = 256;
    float *x = malloc((size_t)B * T * 16 * sizeof(float)), *y = malloc((size_t)B * T * 16 * sizeof(float));
    check_fill_normal(x, (size_t)B * T * 16, 1.0, 2);
    pf_tensor *t;
    assert_int_equal(pf_layer_probe(l, "tiles", &t), -1);  /* no forward yet */
    assert_int_equal(pf_layer_attention.forward(l, y, x, B, T), 0);
    assert_int_equal(pf_layer_probe(l, "tiles", &t), 0);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 8);
    assert_int_equal(t->shape[1], 8);
    int n[3] = {0, 0, 0};
    for (int qt = 0; qt < 8; qt++)
        for (int kt = 0; kt < 8; kt++) {
            float c = t->data[qt * 8 + kt];
            assert_true(c == (kt > qt ? 0.0f : kt == qt ? 1.0f : 2.0f));
            n[(int)c]++;
        }
    assert_int_equal(n[0], 28);
    assert_int_equal(n[1], 8);
    assert_int_equal(n[2], 28);
    pf_tensor_free(t);
    assert_int_equal(pf_layer_probe(l, "tile_counts", &t), 0);
    assert_int_equal(t->shape[0], 3);
    assert_true(t->data[0] == 28 * B * 2 && t->data[1] == 8 * B * 2 && t->data[2] == 28 * B * 2);
    pf_tensor_free(t);
    free(x);
    free(y);
    check_layer_free(l);

    /* through the kernel */
    long c[3];
    kernel_tiles(256, 32, 0, c, 1);
    assert_int_equal(c[0], 28);
    assert_int_equal(c[1], 8);
    assert_int_equal(c[2], 28);
}

static void test_tile_map_window(void **state)
{
    (void)state;
    long c[3];
    /* T = 256, tile = 32, window = 64. For q tile qt and k tile kt = qt - d, the differences i - j
     * run over [32d - 31, 32d + 31]; a pair is visible iff 0 <= i - j <= 63:
     *   d < 0: all differences negative            -> skipped
     *   d = 0: [-31, 31] mixes both                -> partial (8 tiles, qt = 0..7)
     *   d = 1: [1, 63] all visible                 -> full    (7 tiles, qt = 1..7)
     *   d = 2: [33, 95] mixes both                 -> partial (6 tiles, qt = 2..7)
     *   d >= 3: [65, ...] all beyond the window    -> skipped
     * so 8 + 6 = 14 partial, 7 full, 64 - 21 = 43 skipped. */
    kernel_tiles(256, 32, 64, c, 1);
    assert_int_equal(c[0], 43);
    assert_int_equal(c[1], 14);
    assert_int_equal(c[2], 7);
    /* other shapes, against the pair-by-pair expectation only */
    kernel_tiles(100, 16, 20, c, 1);
    kernel_tiles(77, 8, 5, c, 1);
    kernel_tiles(128, 32, 32, c, 1);
    kernel_tiles(61, 4, 1, c, 1);
    kernel_tiles(90, 32, 200, c, 1);
    kernel_tiles(11, 4, 3, c, 1);
    /* every window from 1 to 3 tiles and beyond, around each tile boundary */
    for (int w = 1; w <= 40; w++) kernel_tiles(53, 8, w, c, 0);
    for (int w = 1; w <= 20; w++) kernel_tiles(30, 4, w, c, 0);
}

/* ---- probes, describe, options ---------------------------------------------------------------- */

static void test_probes(void **state)
{
    (void)state;
    int C = 16;
    pf_layer *l = check_layer_new(&pf_layer_attention, "heads=4 kv_heads=2 window=3", C, 9);
    sharpen(l, 10.0f);
    float x[16], y[16];
    pf_tensor *t;
    assert_int_equal(pf_layer_probe(l, "weights", &t), -1);  /* no step yet */
    assert_int_equal(pf_layer_probe(l, "kv_len", &t), 0);
    assert_true(t->ndim == 1 && t->shape[0] == 1 && t->data[0] == 0.0f);
    pf_tensor_free(t);
    for (int s = 0; s < 5; s++) {
        check_fill_normal(x, (size_t)C, 1.0, 40 + (uint64_t)s);
        assert_int_equal(pf_layer_attention.step(l, y, x), 0);
    }
    assert_int_equal(pf_layer_probe(l, "kv_len", &t), 0);
    assert_true(t->data[0] == 5.0f);
    pf_tensor_free(t);
    assert_int_equal(pf_layer_probe(l, "weights", &t), 0);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 4);
    assert_int_equal(t->shape[1], 5);
    for (int h = 0; h < 4; h++) {
        double sum = 0;
        for (int j = 0; j < 5; j++) sum += t->data[h * 5 + j];
        assert_true(fabs(sum - 1.0) < 1e-5);
        /* window 3: the fifth token sees tokens 2, 3, 4 only */
        assert_true(t->data[h * 5 + 0] == 0.0f && t->data[h * 5 + 1] == 0.0f);
        assert_true(t->data[h * 5 + 4] > 0.0f);
    }
    pf_tensor_free(t);

    pf_layer_info info = {0};
    pf_layer_attention.describe(l, &info);
    assert_true(info.constant_state == 0);
    assert_true(info.state_bytes == 2.0 * 5 * 2 * 4 * sizeof(float));  /* k and v, 5 tokens, Hkv 2, D 4 */
    assert_true(info.flops_per_token > 0);

    pf_layer_attention.reset(l);
    assert_int_equal(pf_layer_probe(l, "kv_len", &t), 0);
    assert_true(t->data[0] == 0.0f);
    pf_tensor_free(t);
    assert_int_equal(pf_layer_probe(l, "weights", &t), -1);
    pf_layer_attention.describe(l, &info);
    assert_true(info.state_bytes == 0);
    assert_int_equal(pf_layer_probe(l, "nope", &t), -1);
    assert_non_null(strstr(pf_error_message(), "weights"));  /* the message lists the probes */

    /* tiles after a forward whose T is not a multiple of the tile: ceil(11 / 32) = 1 */
    float xs[3 * 11 * 16], ys[3 * 11 * 16];
    check_fill_normal(xs, sizeof xs / sizeof xs[0], 1.0, 3);
    assert_int_equal(pf_layer_attention.forward(l, ys, xs, 3, 11), 0);
    assert_int_equal(pf_layer_probe(l, "tiles", &t), 0);
    assert_true(t->ndim == 2 && t->shape[0] == 1 && t->shape[1] == 1 && t->data[0] == 1.0f);
    pf_tensor_free(t);
    check_layer_free(l);
}

static void expect_create_error(const char *spec, int dim, const char *needle)
{
    pf_config cfg = check_config(&pf_layer_attention, spec);
    pf_layer *l = pf_layer_create(&pf_layer_attention, &cfg, dim, &pf_backend_cpu, 1);
    assert_null(l);
    printf("#   %s (dim %d): %s\n", spec, dim, pf_error_message());
    assert_non_null(strstr(pf_error_message(), needle));
}

static void test_bad_options(void **state)
{
    (void)state;
    expect_create_error("heads=3", 16, "'heads'");
    expect_create_error("heads=4 kv_heads=3", 16, "'kv_heads'");
    expect_create_error("heads=8 kv_heads=16", 64, "'kv_heads'");
    expect_create_error("heads=4", 12, "'rope'");  /* head dim 3 */
    pf_config cfg = check_config(&pf_layer_attention, "heads=4 rope=false");
    pf_layer *l = pf_layer_create(&pf_layer_attention, &cfg, 12, &pf_backend_cpu, 1);
    assert_non_null(l);  /* an odd head dim is fine without RoPE */
    pf_layer_destroy(l);
    pf_config_init(&cfg, pf_layer_attention.options, pf_layer_attention.n_options);
    assert_int_equal(pf_config_set_number(&cfg, "attention", "tile", 2), -1);
    assert_non_null(strstr(pf_error_message(), "'tile' must be in [4, 256]"));
    assert_int_equal(pf_config_set_number(&cfg, "attention", "window", -1), -1);
    assert_non_null(strstr(pf_error_message(), "'window'"));
    assert_int_equal(pf_config_set_string(&cfg, "attention", "kv_heads", "auto"), 0);
    assert_int_equal(pf_config_set_number(&cfg, "attention", "head", 4), -1);
    assert_non_null(strstr(pf_error_message(), "unknown option 'head'"));
    assert_ptr_equal(pf_layer_kind_find("attention"), &pf_layer_attention);
    /* the kernel refuses a tile it does not support */
    float f[8] = {0};
    assert_int_equal(pf_backend_cpu.attention_forward(f, f, f, f, f, 2, 1, 1, 1, 1, 2, 0, 0, NULL, NULL), -1);
    assert_non_null(strstr(pf_error_message(), "tile"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients_mha),
        cmocka_unit_test(test_gradients_gqa),
        cmocka_unit_test(test_gradients_window),
        cmocka_unit_test(test_gradients_no_rope),
        cmocka_unit_test(test_step_mha),
        cmocka_unit_test(test_step_gqa),
        cmocka_unit_test(test_step_window),
        cmocka_unit_test(test_step_no_rope),
        cmocka_unit_test(test_rope_matches_formula),
        cmocka_unit_test(test_forward_matches_reference),
        cmocka_unit_test(test_backward_matches_reference),
        cmocka_unit_test(test_threads_deterministic),
        cmocka_unit_test(test_tile_map_causal),
        cmocka_unit_test(test_tile_map_window),
        cmocka_unit_test(test_probes),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests_name("attention", tests, NULL, NULL);
}
