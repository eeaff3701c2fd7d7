/* linear_attention and gla layers, and the chunkwise (gated) linear-attention kernel:
 *   - gradients of every parameter and the input by finite differences, for each feature map and
 *     for gla, with a chunk that does not divide T;
 *   - stepping 128 tokens equals one forward;
 *   - the chunked kernel (forward and backward) equals a plain recurrence written here in double,
 *     for several chunk sizes, with and without decay and normaliser, from a nonzero state;
 *   - the ungated kernel equals the gated one with decay 1;
 *   - probe shapes, decay in (0, 1), state_norm equal to the Frobenius norm of state; options. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "engine/rng.h"
#include "tests/c/layer_check.h"

extern const pf_layer_kind pf_layer_linear_attention;
extern const pf_layer_kind pf_layer_gla;

/* Parameters drawn wider than the 0.02 init (norm weights around 1), so that the feature maps, the
 * gate and the normaliser work in their nonlinear range and every gradient is well above noise. */
static void spread_params(pf_layer *l, uint64_t seed)
{
    for (int i = 0; i < l->n_params; i++) {
        const pf_layer_param *p = &l->params[i];
        float *x = *p->value;
        int is_norm = strstr(p->name, "norm") != NULL, fan_in = p->ndim == 2 ? p->shape[1] : 1;
        check_fill_normal(x, p->numel, is_norm ? 0.2 : p->ndim == 2 ? 1.0 / sqrt(fan_in) : 1.0, seed + i);
        if (is_norm)
            for (size_t j = 0; j < p->numel; j++) x[j] += 1.0f;
    }
}

/* ---- gradients ------------------------------------------------------------------------------- */

static void gradients(const pf_layer_kind *kind, const char *spec)
{
    pf_layer *l = check_layer_new(kind, spec, 16, 7);
    spread_params(l, 100);
    double err = check_gradients(l, 2, 10, 24, 3e-3, 11);
    printf("#   %s {%s}: worst rel err %.2e\n", kind->name, spec, err);
    assert_true(err < 1e-2);
    check_layer_free(l);
}

static void test_gradients_elu1(void **s) { (void)s; gradients(&pf_layer_linear_attention, "heads=2 chunk=4 feature=elu1"); }
static void test_gradients_relu(void **s) { (void)s; gradients(&pf_layer_linear_attention, "heads=2 chunk=4 feature=relu"); }
static void test_gradients_identity(void **s)
{
    (void)s;
    gradients(&pf_layer_linear_attention, "heads=2 chunk=4 feature=identity normalize=false");
}
static void test_gradients_elu1_unnormalised(void **s)
{
    (void)s;
    gradients(&pf_layer_linear_attention, "heads=2 chunk=4 feature=elu1 normalize=false");
}
static void test_gradients_gla(void **s) { (void)s; gradients(&pf_layer_gla, "heads=2 chunk=4 gate_rank=4"); }

/* ---- step equals forward --------------------------------------------------------------------- */

static void step_matches(const pf_layer_kind *kind, const char *spec)
{
    pf_layer *l = check_layer_new(kind, spec, 32, 3);
    spread_params(l, 200);
    double err = check_step_matches_forward(l, 128, 5);
    assert_true(err <= 1e-4);
    check_layer_free(l);
}

static void test_step_linear_attention(void **s)
{
    (void)s;
    step_matches(&pf_layer_linear_attention, "heads=4 chunk=48");
    step_matches(&pf_layer_linear_attention, "heads=4 feature=relu");
    step_matches(&pf_layer_linear_attention, "heads=4 feature=identity normalize=false chunk=128");
}
static void test_step_gla(void **s)
{
    (void)s;
    step_matches(&pf_layer_gla, "heads=4");
    step_matches(&pf_layer_gla, "heads=2 chunk=20");
}

/* ---- the kernel against a plain recurrence in double ----------------------------------------- */

typedef struct problem {
    int B, T, H, K, V, normalize, gated;
    float scale, eps;
    float *q, *k, *v, *g, *dout;   /* (B,T,H,K) (B,T,H,K) (B,T,H,V) (B,T,H,K) (B,T,H,V) */
    float *state0;                 /* (B,H,K,Vw) initial state */
} problem;

static float *normal_array(size_t n, double std, uint64_t seed)
{
    float *x = malloc(n * sizeof(float));
    check_fill_normal(x, n, std, seed);
    return x;
}

/* big: large enough that the kernel runs its OpenMP-parallel path (B*T*H*K*Vw > PF_CPU_PAR_MIN) */
static problem problem_new(int normalize, int gated, int big, uint64_t seed)
{
    problem p = {.B = 2, .T = 37, .H = 2, .K = 5, .V = 3, .normalize = normalize, .gated = gated,
                 .scale = 0.6f, .eps = 1e-6f};
    if (big) p = (problem){.B = 3, .T = 100, .H = 4, .K = 12, .V = 10, .normalize = normalize,
                           .gated = gated, .scale = 0.3f, .eps = 1e-6f};
    size_t nk = (size_t)p.B * p.T * p.H * p.K, nv = (size_t)p.B * p.T * p.H * p.V;
    int Vw = p.V + normalize;
    p.q = normal_array(nk, 1.0, seed);
    p.k = normal_array(nk, 1.0, seed + 1);
    p.v = normal_array(nv, 1.0, seed + 2);
    p.dout = normal_array(nv, 1.0, seed + 3);
    p.g = normal_array(nk, 1.0, seed + 4);
    p.state0 = normal_array((size_t)p.B * p.H * p.K * Vw, 0.5, seed + 5);
    pf_rng rng;
    pf_rng_seed(&rng, seed + 6);
    for (size_t i = 0; i < nk; i++) {
        /* log-decays from -0.01 to -5: over a chunk of 64 they reach far below float's exp range */
        p.g[i] = (float)-(0.01 + 5.0 * pow(pf_rng_uniform(&rng), 3));
        if (normalize) {   /* a positive feature map keeps the denominator away from zero */
            p.q[i] = fabsf(p.q[i]) + 0.1f;
            p.k[i] = fabsf(p.k[i]) + 0.1f;
        }
    }
    if (normalize)   /* a positive starting z for the same reason */
        for (size_t i = 0; i < (size_t)p.B * p.H * p.K; i++) p.state0[i * Vw + p.V] = fabsf(p.state0[i * Vw + p.V]);
    return p;
}

static void problem_free(problem *p)
{
    free(p->q);
    free(p->k);
    free(p->v);
    free(p->g);
    free(p->dout);
    free(p->state0);
}

#define AT(x, b, t, h, i, W) ((x)[((((size_t)(b) * p->T + (t)) * p->H + (h)) * (W)) + (i)])

/* S_t = diag(exp(g_t)) S_{t-1} + k_t [v_t, 1]^T, n_t = scale S_t^T q_t, out as the kernel; then the
 * gradients by backpropagating through the same recurrence step by step (not the chunk formulas,
 * not the cumulative-sum identity for dg). from_zero: start from zeros instead of state0. */
static void reference(const problem *p, int from_zero, double *out, double *state_end, double *dq,
                      double *dk, double *dv, double *dg)
{
    int K = p->K, V = p->V, Vw = V + p->normalize, T = p->T;
    double *S = calloc((size_t)(T + 1) * K * Vw, sizeof(double));   /* S_{-1} .. S_{T-1} */
    double *n = calloc((size_t)T * Vw, sizeof(double)), *dS = calloc((size_t)K * Vw, sizeof(double));
    double *dn = calloc((size_t)Vw, sizeof(double));
    for (int b = 0; b < p->B; b++)
        for (int h = 0; h < p->H; h++) {
            for (int i = 0; i < K * Vw; i++)
                S[i] = from_zero ? 0 : p->state0[((size_t)b * p->H + h) * K * Vw + i];
            for (int t = 0; t < T; t++) {
                double *prev = S + (size_t)t * K * Vw, *cur = prev + K * Vw;
                for (int kk = 0; kk < K; kk++)
                    for (int j = 0; j < Vw; j++) {
                        double a = p->gated ? exp((double)AT(p->g, b, t, h, kk, K)) : 1.0;
                        double vj = j < V ? AT(p->v, b, t, h, j, V) : 1.0;
                        cur[kk * Vw + j] = a * prev[kk * Vw + j] + AT(p->k, b, t, h, kk, K) * vj;
                    }
                for (int j = 0; j < Vw; j++) {
                    double s = 0;
                    for (int kk = 0; kk < K; kk++) s += cur[kk * Vw + j] * AT(p->q, b, t, h, kk, K);
                    n[(size_t)t * Vw + j] = p->scale * s;
                }
                for (int j = 0; j < V; j++)
                    AT(out, b, t, h, j, V) = p->normalize ? n[(size_t)t * Vw + j] / (n[(size_t)t * Vw + V] + p->eps)
                                                          : n[(size_t)t * Vw + j];
            }
            if (state_end)
                memcpy(state_end + ((size_t)b * p->H + h) * K * Vw, S + (size_t)T * K * Vw, (size_t)K * Vw * sizeof(double));
            if (!dq) continue;
            memset(dS, 0, (size_t)K * Vw * sizeof(double));
            for (int t = T - 1; t >= 0; t--) {
                double *prev = S + (size_t)t * K * Vw, *cur = prev + K * Vw;
                double d = p->normalize ? n[(size_t)t * Vw + V] + p->eps : 1.0, dd = 0;
                for (int j = 0; j < V; j++) {
                    double doj = AT(p->dout, b, t, h, j, V);
                    dn[j] = doj / d;
                    dd += doj * AT(out, b, t, h, j, V);
                }
                if (p->normalize) dn[V] = -dd / d;
                for (int kk = 0; kk < K; kk++) {
                    double s = 0;
                    for (int j = 0; j < Vw; j++) {
                        s += cur[kk * Vw + j] * dn[j];
                        dS[kk * Vw + j] += p->scale * AT(p->q, b, t, h, kk, K) * dn[j];
                    }
                    AT(dq, b, t, h, kk, K) = p->scale * s;
                }
                for (int kk = 0; kk < K; kk++) {
                    double s = 0, sg = 0;
                    double a = p->gated ? exp((double)AT(p->g, b, t, h, kk, K)) : 1.0;
                    for (int j = 0; j < Vw; j++) {
                        s += dS[kk * Vw + j] * (j < V ? AT(p->v, b, t, h, j, V) : 1.0);
                        sg += dS[kk * Vw + j] * a * prev[kk * Vw + j];
                    }
                    AT(dk, b, t, h, kk, K) = s;
                    AT(dg, b, t, h, kk, K) = sg;
                }
                for (int j = 0; j < V; j++) {
                    double s = 0;
                    for (int kk = 0; kk < K; kk++) s += dS[kk * Vw + j] * AT(p->k, b, t, h, kk, K);
                    AT(dv, b, t, h, j, V) = s;
                }
                for (int kk = 0; kk < K; kk++) {
                    double a = p->gated ? exp((double)AT(p->g, b, t, h, kk, K)) : 1.0;
                    for (int j = 0; j < Vw; j++) dS[kk * Vw + j] *= a;
                }
            }
        }
    free(S);
    free(n);
    free(dS);
    free(dn);
}

/* max |a - ref| / max |ref| */
static double rel_diff(const float *a, const double *ref, size_t n)
{
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - ref[i]);
        if (!(d <= diff)) diff = d;   /* NaN wins */
        if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
    }
    return diff / (scale > 1e-30 ? scale : 1e-30);
}

static void kernel_vs_recurrence(int normalize, int gated, int big)
{
    problem pr = problem_new(normalize, gated, big, 40 + 2 * normalize + gated), *p = &pr;
    int Vw = p->V + normalize;
    size_t nk = (size_t)p->B * p->T * p->H * p->K, nv = (size_t)p->B * p->T * p->H * p->V;
    size_t ns = (size_t)p->B * p->H * p->K * Vw;
    double *out = malloc(nv * sizeof(double)), *send = malloc(ns * sizeof(double));
    double *dq = malloc(nk * sizeof(double)), *dk = malloc(nk * sizeof(double));
    double *dv = malloc(nv * sizeof(double)), *dg = malloc(nk * sizeof(double));
    float *o = malloc(nv * sizeof(float)), *state = malloc(ns * sizeof(float));
    float *den = malloc((size_t)p->B * p->T * p->H * sizeof(float));
    float *cs = malloc((size_t)p->B * p->H * p->T * p->K * Vw * sizeof(float));   /* chunk >= 1 */
    float *fdq = malloc(nk * sizeof(float)), *fdk = malloc(nk * sizeof(float));
    float *fdv = malloc(nv * sizeof(float)), *fdg = malloc(nk * sizeof(float));
    const float *g = gated ? p->g : NULL;
    const pf_backend *be = &pf_backend_cpu;
    int chunks[] = {1, 4, 7, 16, 37, 64};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        int L = chunks[c];
        /* from a nonzero state, carrying it out */
        reference(p, 0, out, send, NULL, NULL, NULL, NULL);
        memcpy(state, p->state0, ns * sizeof(float));
        assert_int_equal(be->linattn_forward(o, NULL, NULL, state, p->q, p->k, p->v, g, p->B, p->T, p->H,
                                             p->K, p->V, L, p->scale, normalize, p->eps), 0);
        double e_out = rel_diff(o, out, nv), e_state = rel_diff(state, send, ns);
        /* from zero, with the gradients */
        reference(p, 1, out, NULL, dq, dk, dv, dg);
        assert_int_equal(be->linattn_forward(o, cs, den, NULL, p->q, p->k, p->v, g, p->B, p->T, p->H, p->K,
                                             p->V, L, p->scale, normalize, p->eps), 0);
        double e_out0 = rel_diff(o, out, nv);
        assert_int_equal(be->linattn_backward(fdq, fdk, fdv, gated ? fdg : NULL, p->dout, o, cs, den, p->q,
                                              p->k, p->v, g, p->B, p->T, p->H, p->K, p->V, L, p->scale,
                                              normalize), 0);
        double e_dq = rel_diff(fdq, dq, nk), e_dk = rel_diff(fdk, dk, nk), e_dv = rel_diff(fdv, dv, nv);
        double e_dg = gated ? rel_diff(fdg, dg, nk) : 0;
        printf("#   kernel %s%s%s chunk %2d: out %.1e (from state %.1e, state %.1e)  dq %.1e dk %.1e dv %.1e dg %.1e\n",
               gated ? "gated" : "ungated", normalize ? " normalised" : "", big ? " (B3 T100 H4 K12 V10)" : "", L, e_out0, e_out, e_state, e_dq,
               e_dk, e_dv, e_dg);
        assert_true(e_out <= 1e-5 && e_state <= 1e-5 && e_out0 <= 1e-5);
        assert_true(e_dq <= 1e-5 && e_dk <= 1e-5 && e_dv <= 1e-5 && e_dg <= 1e-4);
    }
    free(out), free(send), free(dq), free(dk), free(dv), free(dg), free(o), free(state), free(den);
    free(cs), free(fdq), free(fdk), free(fdv), free(fdg);
    problem_free(p);
}

static void test_kernel_gated(void **s) { (void)s; kernel_vs_recurrence(0, 1, 0); }
static void test_kernel_ungated(void **s) { (void)s; kernel_vs_recurrence(0, 0, 0); }
static void test_kernel_normalised(void **s) { (void)s; kernel_vs_recurrence(1, 0, 0); }
static void test_kernel_gated_normalised(void **s) { (void)s; kernel_vs_recurrence(1, 1, 0); }
static void test_kernel_parallel(void **s)
{
    (void)s;
    kernel_vs_recurrence(0, 1, 1);
    kernel_vs_recurrence(1, 0, 1);
}

/* The ungated kernel (g NULL) and the gated one with every decay 1 (g = 0) agree. */
static void test_ungated_is_gated_with_decay_one(void **s)
{
    (void)s;
    for (int normalize = 0; normalize <= 1; normalize++) {
        problem pr = problem_new(normalize, 1, 0, 70), *p = &pr;
        int Vw = p->V + normalize;
        size_t nk = (size_t)p->B * p->T * p->H * p->K, nv = (size_t)p->B * p->T * p->H * p->V;
        size_t ncs = (size_t)p->B * p->H * 5 * p->K * Vw, nden = (size_t)p->B * p->T * p->H;
        float *zeros = calloc(nk, sizeof(float));
        float *o[2], *cs[2], *den[2], *d[2][4];
        for (int r = 0; r < 2; r++) {
            o[r] = malloc(nv * sizeof(float));
            cs[r] = malloc(ncs * sizeof(float));
            den[r] = malloc(nden * sizeof(float));
            for (int i = 0; i < 4; i++) d[r][i] = malloc((i == 2 ? nv : nk) * sizeof(float));
            const float *g = r ? zeros : NULL;
            assert_int_equal(pf_backend_cpu.linattn_forward(o[r], cs[r], den[r], NULL, p->q, p->k, p->v, g, p->B,
                                                            p->T, p->H, p->K, p->V, 8, p->scale, normalize, p->eps), 0);
            assert_int_equal(pf_backend_cpu.linattn_backward(d[r][0], d[r][1], d[r][2], r ? d[r][3] : NULL, p->dout,
                                                             o[r], cs[r], den[r], p->q, p->k, p->v, g, p->B, p->T,
                                                             p->H, p->K, p->V, 8, p->scale, normalize), 0);
        }
        double e_o = check_max_rel_diff(o[1], o[0], nv), e_q = check_max_rel_diff(d[1][0], d[0][0], nk);
        double e_k = check_max_rel_diff(d[1][1], d[0][1], nk), e_v = check_max_rel_diff(d[1][2], d[0][2], nv);
        printf("#   ungated vs decay 1%s: out %.1e dq %.1e dk %.1e dv %.1e\n", normalize ? " (normalised)" : "",
               e_o, e_q, e_k, e_v);
        assert_true(e_o <= 1e-6 && e_q <= 1e-6 && e_k <= 1e-6 && e_v <= 1e-6);
        for (int r = 0; r < 2; r++) {
            free(o[r]), free(cs[r]), free(den[r]);
            for (int i = 0; i < 4; i++) free(d[r][i]);
        }
        free(zeros);
        problem_free(p);
    }
}

/* ---- probes and options ---------------------------------------------------------------------- */

static void check_state_probes(pf_layer *l, int H, int K, int V)
{
    pf_tensor *st, *nrm;
    assert_int_equal(pf_layer_probe(l, "state", &st), 0);
    assert_int_equal(pf_layer_probe(l, "state_norm", &nrm), 0);
    assert_int_equal(st->ndim, 3);
    assert_int_equal(st->shape[0], H);
    assert_int_equal(st->shape[1], K);
    assert_int_equal(st->shape[2], V);
    assert_int_equal(nrm->ndim, 1);
    assert_int_equal(nrm->shape[0], H);
    for (int h = 0; h < H; h++) {
        double ss = 0;
        for (int i = 0; i < K * V; i++) ss += (double)st->data[(size_t)h * K * V + i] * st->data[(size_t)h * K * V + i];
        assert_true(ss > 0);
        assert_true(fabs(nrm->data[h] - sqrt(ss)) <= 1e-5 * sqrt(ss));
    }
    pf_tensor_free(st);
    pf_tensor_free(nrm);
}

static void step_tokens(pf_layer *l, int n)
{
    int C = l->dim;
    float *x = normal_array((size_t)n * C, 1.0, 9), *y = malloc((size_t)C * sizeof(float));
    l->kind->reset(l);
    for (int t = 0; t < n; t++) assert_int_equal(l->kind->step(l, y, x + (size_t)t * C), 0);
    free(x);
    free(y);
}

static void test_probes_linear_attention(void **s)
{
    (void)s;
    pf_layer *l = check_layer_new(&pf_layer_linear_attention, "heads=4", 32, 3);
    spread_params(l, 300);
    step_tokens(l, 20);
    check_state_probes(l, 4, 8, 8);
    pf_tensor *t;
    assert_int_equal(pf_layer_probe(l, "decay", &t), -1);
    check_layer_free(l);
}

static void test_probes_gla(void **s)
{
    (void)s;
    pf_layer *l = check_layer_new(&pf_layer_gla, "heads=4", 32, 3);   /* K = 16 / 4, V = 32 / 4 */
    spread_params(l, 400);
    pf_tensor *t;
    assert_int_equal(pf_layer_probe(l, "decay", &t), -1);   /* no step yet */
    assert_non_null(strstr(pf_error_message(), "first step"));
    step_tokens(l, 20);
    check_state_probes(l, 4, 4, 8);
    assert_int_equal(pf_layer_probe(l, "decay", &t), 0);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 4);
    assert_int_equal(t->shape[1], 4);
    float lo = 1, hi = 0;
    for (int i = 0; i < 16; i++) {
        lo = fminf(lo, t->data[i]);
        hi = fmaxf(hi, t->data[i]);
    }
    printf("#   gla decay after 20 steps: min %.4f max %.4f\n", lo, hi);
    assert_true(lo > 0 && hi < 1);
    pf_tensor_free(t);
    check_layer_free(l);
}

static void test_options(void **s)
{
    (void)s;
    pf_config cfg = check_config(&pf_layer_linear_attention, "heads=3");
    assert_null(pf_layer_create(&pf_layer_linear_attention, &cfg, 16, &pf_backend_cpu, 1));
    assert_non_null(strstr(pf_error_message(), "heads (3) must divide dim (16)"));
    cfg = check_config(&pf_layer_linear_attention, "feature=identity");
    assert_null(pf_layer_create(&pf_layer_linear_attention, &cfg, 16, &pf_backend_cpu, 1));
    assert_non_null(strstr(pf_error_message(), "normalize = false"));
    pf_config_init(&cfg, pf_layer_linear_attention.options, pf_layer_linear_attention.n_options);
    assert_int_equal(pf_config_set_string(&cfg, "linear_attention", "feature", "softmax"), -1);
    assert_non_null(strstr(pf_error_message(), "elu1|relu|identity"));
    cfg = check_config(&pf_layer_gla, "heads=3");
    assert_null(pf_layer_create(&pf_layer_gla, &cfg, 16, &pf_backend_cpu, 1));
    assert_non_null(strstr(pf_error_message(), "key width"));
    /* fla's parameter names and shapes at dim 16, heads 2: key_dim 8, value_dim 16, rank 16 */
    pf_layer *l = check_layer_new(&pf_layer_gla, "heads=2", 16, 1);
    const char *names[] = {"q_proj.weight", "k_proj.weight", "v_proj.weight", "g_proj.weight", "gk_proj.0.weight",
                           "gk_proj.1.weight", "gk_proj.1.bias", "o_proj.weight", "g_norm.weight"};
    int shapes[][2] = {{8, 16}, {8, 16}, {16, 16}, {16, 16}, {16, 16}, {8, 16}, {8, 0}, {16, 16}, {8, 0}};
    assert_int_equal(l->n_params, 9);
    for (int i = 0; i < 9; i++) {
        assert_string_equal(l->params[i].name, names[i]);
        assert_int_equal(l->params[i].shape[0], shapes[i][0]);
        if (shapes[i][1]) assert_int_equal(l->params[i].shape[1], shapes[i][1]);
    }
    check_layer_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernel_gated),
        cmocka_unit_test(test_kernel_ungated),
        cmocka_unit_test(test_kernel_normalised),
        cmocka_unit_test(test_kernel_gated_normalised),
        cmocka_unit_test(test_kernel_parallel),
        cmocka_unit_test(test_ungated_is_gated_with_decay_one),
        cmocka_unit_test(test_gradients_elu1),
        cmocka_unit_test(test_gradients_relu),
        cmocka_unit_test(test_gradients_identity),
        cmocka_unit_test(test_gradients_elu1_unnormalised),
        cmocka_unit_test(test_gradients_gla),
        cmocka_unit_test(test_step_linear_attention),
        cmocka_unit_test(test_step_gla),
        cmocka_unit_test(test_probes_linear_attention),
        cmocka_unit_test(test_probes_gla),
        cmocka_unit_test(test_options),
    };
    return cmocka_run_group_tests_name("linear_attention", tests, NULL, NULL);
}
