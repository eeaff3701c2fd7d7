/* mamba2 layer: gradients by finite differences, step equals forward, the SSD chunked kernel against
 * the plain recurrence (written here in double, with its own reverse-mode gradient, itself checked by
 * finite differences) for chunk sizes that do and do not divide the length, probes, options. */
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
#include "tests/c/layer_check.h"

extern const pf_layer_kind pf_layer_mamba2;

/* ---- helpers ------------------------------------------------------------------------------------ */

static float *param(pf_layer *l, const char *name)
{
    for (int i = 0; i < l->n_params; i++)
        if (strcmp(l->params[i].name, name) == 0) return *l->params[i].value;
    fail_msg("no parameter %s", name);
    return NULL;
}

/* Δ of order 0.1..1 and A in [1, 4], so that the decay and the state matter in the small checks
 * (the reference init gives Δ in [0.001, 0.1], where the SSM path is nearly invisible). */
static void stronger_ssm(pf_layer *l, int H, uint64_t seed)
{
    pf_rng rng;
    pf_rng_seed(&rng, seed);
    float *dt_bias = param(l, "dt_bias"), *A_log = param(l, "A_log"), *D = param(l, "D");
    float *norm_w = param(l, "norm.weight");
    for (int h = 0; h < H; h++) {
        dt_bias[h] = (float)(-1.5 + 1.5 * pf_rng_uniform(&rng));
        A_log[h] = (float)log(1.0 + 3.0 * pf_rng_uniform(&rng));
        D[h] = (float)(0.5 + pf_rng_uniform(&rng));
    }
    for (size_t i = 0; i < l->params[6].numel; i++) norm_w[i] = (float)(0.5 + pf_rng_uniform(&rng));
}

static double softplus(double x) { return x > 20 ? x : log1p(exp(x)); }
static double sigmoid(double x) { return 1 / (1 + exp(-x)); }

/* ---- layer checks -------------------------------------------------------------------------------- */

static void test_gradients(void **state)
{
    (void)state;
    /* E = 32, H = 4 heads of 8, N = 8; T = 10 with chunk 4: chunks of 4, 4 and 2 */
    pf_layer *l = check_layer_new(&pf_layer_mamba2, "head_dim=8 state=8 chunk=4", 16, 7);
    stronger_ssm(l, 4, 3);
    double err = check_gradients(l, 2, 10, 32, 1e-2, 11);
    assert_true(err < 1e-2);
    check_layer_free(l);
}

static void test_gradients_conv2_chunk3(void **state)
{
    (void)state;
    pf_layer *l = check_layer_new(&pf_layer_mamba2, "head_dim=4 state=4 chunk=3 conv=2 expand=1", 16, 9);
    stronger_ssm(l, 4, 5);
    double err = check_gradients(l, 3, 7, 32, 1e-2, 13);
    assert_true(err < 1e-2);
    check_layer_free(l);
}

static void step_matches(const char *spec)
{
    pf_layer *l = check_layer_new(&pf_layer_mamba2, spec, 32, 3);
    stronger_ssm(l, 64 / (int)pf_config_int(&l->cfg, "head_dim"), 4);
    assert_true(check_step_matches_forward(l, 128, 5) <= 1e-4);
    check_layer_free(l);
}

static void test_step_matches_forward(void **state)
{
    (void)state;
    step_matches("head_dim=16 state=16 chunk=16");
    step_matches("head_dim=16 state=16 chunk=48");  /* 48 does not divide 128 */
    step_matches("");                               /* the defaults: one head of 64, N = 64 */
    step_matches("head_dim=32 state=4 chunk=1 conv=1");   /* no conv tail, one token per chunk */
}

/* Each sequence of a batch is computed alone, and the threaded forward gives the same bits twice. */
static void test_batch_independent_and_deterministic(void **state)
{
    (void)state;
    int C = 32, B = 3, T = 40;
    pf_layer *l = check_layer_new(&pf_layer_mamba2, "head_dim=8 state=16 chunk=16", C, 21);
    stronger_ssm(l, 8, 2);
    size_t n = (size_t)B * T * C;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float)), *y2 = malloc(n * sizeof(float));
    float *one = malloc((size_t)T * C * sizeof(float));
    check_fill_normal(x, n, 1.0, 8);
    assert_int_equal(pf_layer_mamba2.forward(l, y, x, B, T), 0);
    assert_int_equal(pf_layer_mamba2.forward(l, y2, x, B, T), 0);
    assert_memory_equal(y, y2, n * sizeof(float));
    for (int b = 0; b < B; b++) {
        assert_int_equal(pf_layer_mamba2.forward(l, one, x + (size_t)b * T * C, 1, T), 0);
        double err = check_max_rel_diff(y + (size_t)b * T * C, one, (size_t)T * C);
        assert_true(err <= 1e-6);
    }
    free(x);
    free(y);
    free(y2);
    free(one);
    check_layer_free(l);
}

/* ---- the SSD kernel against the recurrence ------------------------------------------------------ */

/* Inputs of the kernel in the layer's layout: xbc rows [x (H*P) | B (N) | C (N)], dt rows of H at a
 * wider stride (as inside in_proj's output). */
typedef struct ssd_case {
    int Bn, T, H, P, N, ldx, ldt;
    float *xbc, *dt, *dt_bias, *A_log, *D, *R;   /* R (Bn, T, H*P): L = Σ y ∘ R */
} ssd_case;

static ssd_case ssd_case_new(int Bn, int T, int H, int P, int N, uint64_t seed)
{
    ssd_case s = {Bn, T, H, P, N, H * P + 2 * N, H + 3, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t rows = (size_t)Bn * T;
    s.xbc = malloc(rows * s.ldx * sizeof(float));
    s.dt = malloc(rows * s.ldt * sizeof(float));
    s.R = malloc(rows * H * P * sizeof(float));
    s.dt_bias = malloc(3 * (size_t)H * sizeof(float));
    s.A_log = s.dt_bias + H;
    s.D = s.dt_bias + 2 * H;
    check_fill_normal(s.xbc, rows * s.ldx, 1.0, seed);
    check_fill_normal(s.dt, rows * s.ldt, 1.0, seed + 1);
    check_fill_normal(s.R, rows * H * P, 1.0, seed + 2);
    pf_rng rng;
    pf_rng_seed(&rng, seed + 3);
    for (int h = 0; h < H; h++) {
        s.dt_bias[h] = (float)(-2.0 + 2.0 * pf_rng_uniform(&rng));
        s.A_log[h] = (float)log(1.0 + 15.0 * pf_rng_uniform(&rng));   /* the reference's A range */
        s.D[h] = (float)pf_rng_normal(&rng);
    }
    return s;
}

static void ssd_case_free(ssd_case *s)
{
    free(s->xbc);
    free(s->dt);
    free(s->R);
    free(s->dt_bias);
}

/* The gradients of L = Σ y ∘ R, in double, in the kernel's layouts. */
typedef struct ssd_grads {
    double *dx, *ddt, *dB, *dC;   /* (Bn, T, H*P), (Bn, T, H), (Bn, T, N), (Bn, T, N) */
    double dhead[3 * 64];         /* [d dt_bias | d A_log | d D] */
} ssd_grads;

/* The token-by-token recurrence in double: y (Bn, T, H*P); its loss Σ y ∘ R is returned. With g not
 * NULL, also the reverse-mode gradient of that loss. */
static double ssd_reference(const ssd_case *s, double *y, ssd_grads *g)
{
    int T = s->T, H = s->H, P = s->P, N = s->N;
    size_t pn = (size_t)P * N;
    double *hist = malloc((size_t)(T + 1) * pn * sizeof(double)), *gh = malloc(pn * sizeof(double));
    double loss = 0;
    if (g) {
        memset(g->dx, 0, (size_t)s->Bn * T * H * P * sizeof(double));
        memset(g->ddt, 0, (size_t)s->Bn * T * H * sizeof(double));
        memset(g->dB, 0, (size_t)s->Bn * T * N * sizeof(double));
        memset(g->dC, 0, (size_t)s->Bn * T * N * sizeof(double));
        memset(g->dhead, 0, sizeof g->dhead);
    }
    for (int b = 0; b < s->Bn; b++)
        for (int h = 0; h < H; h++) {
            double A = -exp(s->A_log[h]), Dh = s->D[h], bias = s->dt_bias[h];
#define X_(t, p) ((double)s->xbc[((size_t)b * T + (t)) * s->ldx + (size_t)h * P + (p)])
#define B_(t, n) ((double)s->xbc[((size_t)b * T + (t)) * s->ldx + (size_t)H * P + (n)])
#define C_(t, n) ((double)s->xbc[((size_t)b * T + (t)) * s->ldx + (size_t)H * P + N + (n)])
#define DT_(t) ((double)s->dt[((size_t)b * T + (t)) * s->ldt + h])
#define R_(t, p) ((double)s->R[((size_t)b * T + (t)) * H * P + (size_t)h * P + (p)])
            memset(hist, 0, pn * sizeof(double));
            for (int t = 0; t < T; t++) {
                double d = softplus(DT_(t) + bias), a = exp(d * A);
                double *h0 = hist + (size_t)t * pn, *h1 = h0 + pn;
                for (int p = 0; p < P; p++) {
                    double acc = 0;
                    for (int n = 0; n < N; n++) {
                        h1[p * N + n] = a * h0[p * N + n] + d * X_(t, p) * B_(t, n);
                        acc += h1[p * N + n] * C_(t, n);
                    }
                    double yv = acc + Dh * X_(t, p);
                    if (y) y[((size_t)b * T + t) * H * P + (size_t)h * P + p] = yv;
                    loss += yv * R_(t, p);
                }
            }
            if (!g) continue;
            memset(gh, 0, pn * sizeof(double));
            double dA = 0, dD = 0, dbias = 0;
            for (int t = T - 1; t >= 0; t--) {
                double d = softplus(DT_(t) + bias), a = exp(d * A);
                const double *h0 = hist + (size_t)t * pn, *h1 = h0 + pn;
                double *dx = g->dx + ((size_t)b * T + t) * H * P + (size_t)h * P;
                double *dB = g->dB + ((size_t)b * T + t) * N, *dC = g->dC + ((size_t)b * T + t) * N;
                /* y_t = h_t C_t + D x_t */
                for (int p = 0; p < P; p++) {
                    dD += R_(t, p) * X_(t, p);
                    dx[p] += Dh * R_(t, p);
                    for (int n = 0; n < N; n++) {
                        gh[p * N + n] += R_(t, p) * C_(t, n);
                        dC[n] += R_(t, p) * h1[p * N + n];
                    }
                }
                /* h_t = a h_{t-1} + d x_t B_tᵀ */
                double da = 0, dd = 0;
                for (int p = 0; p < P; p++)
                    for (int n = 0; n < N; n++) {
                        double gv = gh[p * N + n];
                        da += gv * h0[p * N + n];
                        dd += gv * X_(t, p) * B_(t, n);
                        dx[p] += d * gv * B_(t, n);
                        dB[n] += d * gv * X_(t, p);
                        gh[p * N + n] = a * gv;
                    }
                /* a = exp(d A), d = softplus(dt + bias) */
                dd += da * a * A;
                dA += da * a * d;
                double gdt = dd * sigmoid(DT_(t) + bias);
                g->ddt[((size_t)b * T + t) * H + h] = gdt;
                dbias += gdt;
            }
            g->dhead[h] += dbias;
            g->dhead[H + h] += dA * A;
            g->dhead[2 * H + h] += dD;
#undef X_
#undef B_
#undef C_
#undef DT_
#undef R_
        }
    free(hist);
    free(gh);
    return loss;
}

static ssd_grads ssd_grads_new(const ssd_case *s)
{
    size_t rows = (size_t)s->Bn * s->T;
    ssd_grads g;
    g.dx = malloc(rows * s->H * s->P * sizeof(double));
    g.ddt = malloc(rows * s->H * sizeof(double));
    g.dB = malloc(rows * s->N * sizeof(double));
    g.dC = malloc(rows * s->N * sizeof(double));
    return g;
}

static void ssd_grads_free(ssd_grads *g)
{
    free(g->dx);
    free(g->ddt);
    free(g->dB);
    free(g->dC);
}

/* The reference's own gradient against central differences of its loss (in double), so that the
 * kernel is compared with a gradient known to be right. */
static void test_reference_gradient(void **state)
{
    (void)state;
    ssd_case s = ssd_case_new(2, 12, 2, 3, 4, 40);
    ssd_grads g = ssd_grads_new(&s);
    ssd_reference(&s, NULL, &g);
    const double eps = 1e-3;
    double worst = 0;
    /* every input entry: x, B, C (in xbc), dt, and the per-head parameters */
    struct { float *v; size_t n, stride, width; int kind; } groups[] = {
        {s.xbc, (size_t)s.Bn * s.T, (size_t)s.ldx, (size_t)s.H * s.P + 2 * s.N, 0},
        {s.dt, (size_t)s.Bn * s.T, (size_t)s.ldt, (size_t)s.H, 1},
        {s.dt_bias, 1, 0, 3 * (size_t)s.H, 2},
    };
    for (int gi = 0; gi < 3; gi++)
        for (size_t r = 0; r < groups[gi].n; r++)
            for (size_t c = 0; c < groups[gi].width; c++) {
                float *v = groups[gi].v + r * groups[gi].stride + c, keep = *v;
                *v = (float)(keep + eps);
                double lp = ssd_reference(&s, NULL, NULL);
                double hp = (double)*v - keep;
                *v = (float)(keep - eps);
                double lm = ssd_reference(&s, NULL, NULL);
                double hm = keep - (double)*v;
                *v = keep;
                double num = (lp - lm) / (hp + hm), ana;
                if (gi == 1) ana = g.ddt[r * s.H + c];
                else if (gi == 2) ana = g.dhead[c];
                else if (c < (size_t)s.H * s.P) ana = g.dx[r * s.H * s.P + c];
                else if (c < (size_t)s.H * s.P + s.N) ana = g.dB[r * s.N + c - s.H * s.P];
                else ana = g.dC[r * s.N + c - s.H * s.P - s.N];
                double err = fabs(num - ana) / (1.0 + fabs(ana));
                if (err > worst) worst = err;
            }
    printf("#   reference recurrence: reverse-mode vs central differences, worst %.2e\n", worst);
    assert_true(worst < 1e-5);
    ssd_grads_free(&g);
    ssd_case_free(&s);
}

/* max |a - b| / max |b| over n entries, a float at stride sa and width w, b double (dense, width w) */
static double rel_diff(const float *a, size_t rows, size_t sa, size_t w, const double *b)
{
    double diff = 0, scale = 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < w; c++) {
            double d = fabs(a[r * sa + c] - b[r * w + c]);
            if (d > diff || isnan(d)) diff = isnan(d) ? INFINITY : d;
            if (fabs(b[r * w + c]) > scale) scale = fabs(b[r * w + c]);
        }
    return diff / (scale > 1e-30 ? scale : 1e-30);
}

static void ssd_against_recurrence(int chunk)
{
    const pf_backend *be = &pf_backend_cpu;
    ssd_case s = ssd_case_new(2, 128, 3, 8, 16, 100);
    int Bn = s.Bn, T = s.T, H = s.H, P = s.P, N = s.N, HP = H * P, nch = (T + chunk - 1) / chunk;
    size_t rows = (size_t)Bn * T;
    float *y = malloc(rows * HP * sizeof(float));
    float *states = malloc((size_t)Bn * H * nch * P * N * sizeof(float));
    float *dxbc = malloc(rows * s.ldx * sizeof(float)), *ddt = malloc(rows * s.ldt * sizeof(float));
    float *dhead = malloc((size_t)Bn * 3 * H * sizeof(float));
    double *yref = malloc(rows * HP * sizeof(double));
    ssd_grads g = ssd_grads_new(&s);
    ssd_reference(&s, yref, &g);

    const float *x = s.xbc, *Bm = s.xbc + HP, *Cm = s.xbc + HP + N;
    assert_int_equal(be->ssd_forward(y, states, x, s.ldx, s.dt, s.ldt, Bm, Cm, s.ldx, s.dt_bias, s.A_log,
                                     s.D, Bn, T, H, P, N, chunk), 0);
    double ey = rel_diff(y, rows, HP, HP, yref);
    assert_int_equal(be->ssd_backward(dxbc, ddt, dxbc + HP, dxbc + HP + N, dhead, s.R, states, x, s.ldx,
                                      s.dt, s.ldt, Bm, Cm, s.ldx, s.dt_bias, s.A_log, s.D, Bn, T, H, P, N,
                                      chunk), 0);
    double ex = rel_diff(dxbc, rows, s.ldx, HP, g.dx);
    double eB = rel_diff(dxbc + HP, rows, s.ldx, N, g.dB);
    double eC = rel_diff(dxbc + HP + N, rows, s.ldx, N, g.dC);
    double edt = rel_diff(ddt, rows, s.ldt, H, g.ddt);
    double head[3 * 64] = {0};
    float headsum[3 * 64];
    for (int b = 0; b < Bn; b++)
        for (int i = 0; i < 3 * H; i++) head[i] += dhead[b * 3 * H + i];
    for (int i = 0; i < 3 * H; i++) headsum[i] = (float)head[i];
    double eh = rel_diff(headsum, 1, 0, 3 * H, g.dhead);
    printf("#   ssd chunk %3d, T %d: rel diff y %.1e  dx %.1e  dB %.1e  dC %.1e  ddt %.1e  "
           "d(dt_bias, A_log, D) %.1e\n", chunk, T, ey, ex, eB, eC, edt, eh);
    assert_true(ey <= 1e-5);
    assert_true(ex <= 1e-4 && eB <= 1e-4 && eC <= 1e-4 && edt <= 1e-4 && eh <= 1e-4);
    free(y);
    free(states);
    free(dxbc);
    free(ddt);
    free(dhead);
    free(yref);
    ssd_grads_free(&g);
    ssd_case_free(&s);
}

static void test_ssd_matches_recurrence(void **state)
{
    (void)state;
    const int chunks[] = {16, 64, 48, 7, 1, 128, 200};
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) ssd_against_recurrence(chunks[i]);
}

/* ---- the full block against PyTorch (tests/ref/mamba2_block.py) ------------------------------------ */

/* Reads the next "name numel" block of the fixture into a new array (double); NULL at the end. */
static double *fixture_next(FILE *f, char *name, size_t *n)
{
    if (fscanf(f, "%63s %zu", name, n) != 2) return NULL;
    double *v = malloc(*n * sizeof(double));
    for (size_t i = 0; i < *n; i++)
        if (fscanf(f, "%lf", &v[i]) != 1) fail_msg("fixture: short block %s", name);
    return v;
}

static void test_matches_pytorch(void **state)
{
    (void)state;
    const char *path = "tests/ref/mamba2_block.txt";
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot open %s (run the test from the repository root)", path);
    int C, T, B, P, N, K, expand;
    assert_int_equal(fscanf(f, "%d %d %d %d %d %d %d", &C, &T, &B, &P, &N, &K, &expand), 7);
    /* chunk 5 does not divide T = 12; the reference used chunks of 4 */
    char spec[128];
    snprintf(spec, sizeof spec, "head_dim=%d state=%d conv=%d expand=%d chunk=5", P, N, K, expand);
    pf_layer *l = check_layer_new(&pf_layer_mamba2, spec, C, 1);
    char name[64];
    size_t n;
    for (int i = 0; i < l->n_params; i++) {
        double *v = fixture_next(f, name, &n);
        assert_non_null(v);
        assert_string_equal(name, l->params[i].name);
        assert_int_equal(n, l->params[i].numel);
        for (size_t j = 0; j < n; j++) (*l->params[i].value)[j] = (float)v[j];
        free(v);
    }
    size_t rows = (size_t)B * T * C;
    double *u = fixture_next(f, name, &n), *R = fixture_next(f, name, &n);
    double *out_ref = fixture_next(f, name, &n), *du_ref = fixture_next(f, name, &n);
    assert_non_null(du_ref);
    assert_int_equal(n, rows);
    float *uf = malloc(rows * sizeof(float)), *Rf = malloc(rows * sizeof(float));
    float *out = malloc(rows * sizeof(float)), *du = malloc(rows * sizeof(float));
    for (size_t i = 0; i < rows; i++) {
        uf[i] = (float)u[i];
        Rf[i] = (float)R[i];
    }
    for (int i = 0; i < l->n_params; i++)
        memset(*l->params[i].grad, 0, l->params[i].numel * sizeof(float));
    assert_int_equal(pf_layer_mamba2.forward(l, out, uf, B, T), 0);
    assert_int_equal(pf_layer_mamba2.backward(l, du, Rf, uf, B, T), 0);
    double e = rel_diff(out, 1, 0, rows, out_ref), worst_grad = rel_diff(du, 1, 0, rows, du_ref);
    printf("#   vs pytorch: out %.1e  grad.u %.1e\n", e, worst_grad);
    for (int i = 0; i < l->n_params; i++) {
        double *g = fixture_next(f, name, &n);
        assert_non_null(g);
        assert_int_equal(n, l->params[i].numel);
        double eg = rel_diff(*l->params[i].grad, 1, 0, n, g);
        printf("#   vs pytorch: %-22s %.1e\n", name, eg);
        if (eg > worst_grad) worst_grad = eg;
        free(g);
    }
    assert_true(e <= 1e-5);
    assert_true(worst_grad <= 1e-4);
    free(u);
    free(R);
    free(out_ref);
    free(du_ref);
    free(uf);
    free(Rf);
    free(out);
    free(du);
    fclose(f);
    check_layer_free(l);
}

/* ---- probes and options ------------------------------------------------------------------------- */

static void test_probes(void **state)
{
    (void)state;
    int C = 32;
    pf_layer *l = check_layer_new(&pf_layer_mamba2, "head_dim=16 state=8", C, 5);
    int H = 4, P = 16, N = 8;
    pf_tensor *t = NULL;
    pf_layer_mamba2.reset(l);
    assert_int_equal(pf_layer_probe(l, "dt", &t), -1);   /* nothing stepped yet */
    assert_int_equal(pf_layer_probe(l, "nope", &t), -1);
    assert_non_null(strstr(pf_error_message(), "state, dt, decay"));
    float x[32], out[32];
    for (int s = 0; s < 5; s++) {
        check_fill_normal(x, (size_t)C, 1.0, 30 + (uint64_t)s);
        assert_int_equal(pf_layer_mamba2.step(l, out, x), 0);
    }
    assert_int_equal(pf_layer_probe(l, "state", &t), 0);
    assert_int_equal(t->ndim, 3);
    assert_int_equal(t->shape[0], H);
    assert_int_equal(t->shape[1], P);
    assert_int_equal(t->shape[2], N);
    double norm = 0;
    for (size_t i = 0; i < pf_tensor_numel(t); i++) norm += (double)t->data[i] * t->data[i];
    assert_true(norm > 0);
    pf_tensor_free(t);

    pf_tensor *dt = NULL, *decay = NULL;
    assert_int_equal(pf_layer_probe(l, "dt", &dt), 0);
    assert_int_equal(pf_layer_probe(l, "decay", &decay), 0);
    assert_int_equal(dt->ndim, 1);
    assert_int_equal(dt->shape[0], H);
    assert_int_equal(decay->ndim, 1);
    assert_int_equal(decay->shape[0], H);
    const float *A_log = param(l, "A_log");
    for (int h = 0; h < H; h++) {
        assert_true(dt->data[h] > 0);
        assert_true(decay->data[h] > 0 && decay->data[h] < 1);
        double expect = exp(-(double)dt->data[h] * exp(A_log[h]));
        assert_true(fabs(decay->data[h] - expect) <= 1e-5 * expect);
    }
    pf_tensor_free(dt);
    pf_tensor_free(decay);

    pf_layer_mamba2.reset(l);
    assert_int_equal(pf_layer_probe(l, "state", &t), 0);
    for (size_t i = 0; i < pf_tensor_numel(t); i++) assert_true(t->data[i] == 0.0f);
    pf_tensor_free(t);
    check_layer_free(l);
}

static void test_parameters(void **state)
{
    (void)state;
    /* C = 16, E = 32, P = 8: H = 4, N = 8, K = 4, conv_dim = 48, in_proj rows = 2E + 2N + H = 84 */
    pf_layer *l = check_layer_new(&pf_layer_mamba2, "head_dim=8 state=8", 16, 1);
    const struct { const char *name; int ndim, s0, s1, s2; } want[] = {
        {"in_proj.weight", 2, 84, 16, 0}, {"conv1d.weight", 3, 48, 1, 4}, {"conv1d.bias", 1, 48, 0, 0},
        {"dt_bias", 1, 4, 0, 0}, {"A_log", 1, 4, 0, 0}, {"D", 1, 4, 0, 0},
        {"norm.weight", 1, 32, 0, 0}, {"out_proj.weight", 2, 16, 32, 0},
    };
    assert_int_equal(l->n_params, 8);
    for (int i = 0; i < 8; i++) {
        const pf_layer_param *p = &l->params[i];
        assert_string_equal(p->name, want[i].name);
        assert_int_equal(p->ndim, want[i].ndim);
        assert_int_equal(p->shape[0], want[i].s0);
        if (p->ndim > 1) assert_int_equal(p->shape[1], want[i].s1);
        if (p->ndim > 2) assert_int_equal(p->shape[2], want[i].s2);
    }
    pf_layer_info info;
    pf_layer_mamba2.describe(l, &info);
    assert_true(info.constant_state);
    assert_true(info.state_bytes == 4.0 * (48 * 3 + 4 * 8 * 8));   /* conv tail + (H, P, N) */
    /* the reference's init: A = exp(A_log) in [1, 16], softplus(dt_bias) in [0.001, 0.1], D = 1 */
    const float *A_log = param(l, "A_log"), *dt_bias = param(l, "dt_bias"), *D = param(l, "D");
    for (int h = 0; h < 4; h++) {
        assert_true(exp(A_log[h]) >= 1.0 - 1e-5 && exp(A_log[h]) <= 16.0 + 1e-4);
        double d = softplus(dt_bias[h]);
        assert_true(d >= 0.001 * (1 - 1e-4) && d <= 0.1 * (1 + 1e-4));
        assert_true(D[h] == 1.0f);
    }
    check_layer_free(l);
}

static void test_bad_options(void **state)
{
    (void)state;
    pf_config cfg = check_config(&pf_layer_mamba2, "head_dim=24");
    assert_null(pf_layer_create(&pf_layer_mamba2, &cfg, 16, &pf_backend_cpu, 1));
    assert_non_null(strstr(pf_error_message(), "'head_dim'"));
    assert_non_null(strstr(pf_error_message(), "32"));
    pf_config_init(&cfg, pf_layer_mamba2.options, pf_layer_mamba2.n_options);
    assert_int_equal(pf_config_set_number(&cfg, "mamba2", "chunk", 0), -1);
    assert_non_null(strstr(pf_error_message(), "'chunk' must be"));
    assert_int_equal(pf_config_set_number(&cfg, "mamba2", "ngroups", 2), -1);
    assert_non_null(strstr(pf_error_message(), "unknown option 'ngroups'"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_gradients_conv2_chunk3),
        cmocka_unit_test(test_step_matches_forward),
        cmocka_unit_test(test_batch_independent_and_deterministic),
        cmocka_unit_test(test_reference_gradient),
        cmocka_unit_test(test_ssd_matches_recurrence),
        cmocka_unit_test(test_matches_pytorch),
        cmocka_unit_test(test_probes),
        cmocka_unit_test(test_parameters),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests_name("mamba2", tests, NULL, NULL);
}
