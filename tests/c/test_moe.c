/* moe layer: forward against an independent reference (double precision, written here from the
 * formulas), gradients by finite differences (routing held fixed: weights with clear margins, and the
 * margins asserted), the auxiliary losses' values and gradients, step equals forward, capacity drops
 * in the stated order, expert choice takes equal numbers of tokens, probes. */
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
#include "engine/model.h"
#include "engine/tasks.h"
#include "tests/c/layer_check.h"

extern const pf_layer_kind pf_layer_moe;

/* ---- helpers --------------------------------------------------------------------------------- */

static float *param(pf_layer *l, const char *name)
{
    for (int i = 0; i < l->n_params; i++)
        if (!strcmp(l->params[i].name, name)) return *l->params[i].value;
    return NULL;
}

static const pf_layer_param *param_info(pf_layer *l, const char *name)
{
    for (int i = 0; i < l->n_params; i++)
        if (!strcmp(l->params[i].name, name)) return &l->params[i];
    return NULL;
}

/* gate.weight ~ normal(gate_std), every other parameter ~ normal(expert_std): outputs of order one
 * and router logits far apart, so that small perturbations do not change the routing. */
static void reinit(pf_layer *l, double gate_std, double expert_std, uint64_t seed)
{
    for (int i = 0; i < l->n_params; i++) {
        const pf_layer_param *p = &l->params[i];
        int gate = !strcmp(p->name, "gate.weight");
        check_fill_normal(*p->value, p->numel, gate ? gate_std : expert_std, seed + (uint64_t)i);
    }
}

static pf_tensor *probe(pf_layer *l, const char *name)
{
    pf_tensor *t = NULL;
    if (pf_layer_probe(l, name, &t) < 0) fail_msg("probe %s: %s", name, pf_error_message());
    return t;
}

static double probe1(pf_layer *l, const char *name)
{
    pf_tensor *t = probe(l, name);
    assert_int_equal(t->ndim, 1);
    assert_int_equal(t->shape[0], 1);
    double v = t->data[0];
    pf_tensor_free(t);
    return v;
}

static void forward(pf_layer *l, float *out, const float *x, int B, int T)
{
    if (l->kind->forward(l, out, x, B, T) < 0) fail_msg("forward: %s", pf_error_message());
}

/* ---- the reference ---------------------------------------------------------------------------- */

static double gelu(double x) { return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

/* y (C) += g * expert(x); prefix "experts.3" or "shared_experts.0" */
static void ref_expert(pf_layer *l, const char *prefix, int F, const float *x, double g, double *y)
{
    int C = l->dim;
    char name[64];
    snprintf(name, sizeof name, "%s.w1.weight", prefix);
    const float *w1 = param(l, name);
    snprintf(name, sizeof name, "%s.w3.weight", prefix);
    const float *w3 = param(l, name);
    snprintf(name, sizeof name, "%s.w2.weight", prefix);
    const float *w2 = param(l, name);
    snprintf(name, sizeof name, "%s.w1.bias", prefix);
    const float *b1 = param(l, name);
    snprintf(name, sizeof name, "%s.w2.bias", prefix);
    const float *b2 = param(l, name);
    assert_non_null(w1);
    assert_non_null(w2);
    double *a = calloc((size_t)F, sizeof *a);
    for (int f = 0; f < F; f++) {
        double h1 = b1 ? b1[f] : 0, h3 = 0;
        for (int c = 0; c < C; c++) {
            h1 += (double)w1[(size_t)f * C + c] * x[c];
            if (w3) h3 += (double)w3[(size_t)f * C + c] * x[c];
        }
        a[f] = w3 ? h1 / (1.0 + exp(-h1)) * h3 : gelu(h1);
    }
    for (int c = 0; c < C; c++) {
        double s = b2 ? b2[c] : 0;
        for (int f = 0; f < F; f++) s += (double)w2[(size_t)c * F + f] * a[f];
        y[c] += g * s;
    }
    free(a);
}

typedef struct ref_cfg {
    int E, k, F, S;
    int router;          /* 0 topk, 1 switch, 2 expert choice */
    int c;               /* expert choice: tokens per expert */
    const int *keep;     /* (N, k) token choice: 0 where the slot is dropped; NULL: all kept */
    int plain;           /* topk with renorm=false: gates are p itself, not p / (sum of the chosen) */
} ref_cfg;

/* router probabilities p (N, E) in double */
static void ref_probs(pf_layer *l, const float *x, int N, int E, double *p)
{
    int C = l->dim;
    const float *wg = param(l, "gate.weight");
    for (int t = 0; t < N; t++) {
        double z[64], mx = -INFINITY, sum = 0;
        for (int e = 0; e < E; e++) {
            z[e] = 0;
            for (int c = 0; c < C; c++) z[e] += (double)wg[(size_t)e * C + c] * x[(size_t)t * C + c];
            mx = z[e] > mx ? z[e] : mx;
        }
        for (int e = 0; e < E; e++) sum += exp(z[e] - mx);
        for (int e = 0; e < E; e++) p[(size_t)t * E + e] = exp(z[e] - mx) / sum;
    }
}

/* out (N, C) from the formulas: softmax router, choices, gates, experts, shared experts */
static void ref_forward(pf_layer *l, const ref_cfg *r, const float *x, int N, double *out)
{
    int C = l->dim, E = r->E;
    double *p = malloc((size_t)N * E * sizeof *p);
    ref_probs(l, x, N, E, p);
    memset(out, 0, (size_t)N * C * sizeof *out);
    char prefix[32];
    for (int t = 0; t < N; t++) {
        const double *pt = p + (size_t)t * E;
        const float *xt = x + (size_t)t * C;
        double *ot = out + (size_t)t * C;
        if (r->router == 2) {
            /* expert e takes token t when fewer than c tokens beat it (higher p, or equal p and a
             * lower index) */
            for (int e = 0; e < E; e++) {
                int better = 0;
                for (int u = 0; u < N; u++) {
                    double q = p[(size_t)u * E + e];
                    better += q > pt[e] || (q == pt[e] && u < t);
                }
                if (better < r->c) {
                    snprintf(prefix, sizeof prefix, "experts.%d", e);
                    ref_expert(l, prefix, r->F, xt, pt[e], ot);
                }
            }
        } else {
            int k = r->router == 1 ? 1 : r->k, chosen[64];
            double kept = 0;
            for (int j = 0; j < k; j++) {
                int best = -1;
                for (int e = 0; e < E; e++) {
                    int taken = 0;
                    for (int i = 0; i < j; i++) taken |= chosen[i] == e;
                    if (!taken && (best < 0 || pt[e] > pt[best])) best = e;
                }
                chosen[j] = best;
                kept += pt[best];
            }
            for (int j = 0; j < k; j++) {
                if (r->keep && !r->keep[t * k + j]) continue;
                double g = r->router == 1 || r->plain ? pt[chosen[j]] : pt[chosen[j]] / kept;
                snprintf(prefix, sizeof prefix, "experts.%d", chosen[j]);
                ref_expert(l, prefix, r->F, xt, g, ot);
            }
        }
        for (int s = 0; s < r->S; s++) {
            snprintf(prefix, sizeof prefix, "shared_experts.%d", s);
            ref_expert(l, prefix, r->F, xt, 1.0, ot);
        }
    }
    free(p);
}

static double max_rel(const float *a, const double *b, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs(a[i] - b[i]));
        s = fmax(s, fabs(b[i]));
    }
    return d / (s > 0 ? s : 1);
}

/* ---- forward against the reference ------------------------------------------------------------ */

static void forward_matches(const char *spec, ref_cfg r, int C)
{
    pf_layer *l = check_layer_new(&pf_layer_moe, spec, C, 5);
    reinit(l, 0.5, 0.3, 17);
    int B = 2, T = 12, N = B * T;
    float *x = malloc((size_t)N * C * sizeof *x), *out = malloc((size_t)N * C * sizeof *out);
    double *ref = malloc((size_t)N * C * sizeof *ref);
    check_fill_normal(x, (size_t)N * C, 1.0, 23);
    forward(l, out, x, B, T);
    ref_forward(l, &r, x, N, ref);
    double err = max_rel(out, ref, (size_t)N * C);
    printf("#   forward vs reference (%s): max rel diff %.2e\n", spec, err);
    assert_true(err < 1e-5);
    free(x);
    free(out);
    free(ref);
    check_layer_free(l);
}

static void test_forward_reference(void **state)
{
    (void)state;
    forward_matches("experts=4 top_k=2 hidden=16", (ref_cfg){4, 2, 16, 0, 0, 0, NULL, 0}, 16);
    forward_matches("experts=6 top_k=3 hidden=16 shared=1", (ref_cfg){6, 3, 16, 1, 0, 0, NULL, 0}, 16);
    /* top-k without renormalisation (Jamba): the gates are the softmax probabilities */
    forward_matches("experts=4 top_k=2 hidden=16 renorm=false", (ref_cfg){4, 2, 16, 0, 0, 0, NULL, 1}, 16);
    forward_matches("experts=6 top_k=3 hidden=16 shared=1 renorm=false", (ref_cfg){6, 3, 16, 1, 0, 0, NULL, 1}, 16);
    forward_matches("experts=4 router=switch hidden=16", (ref_cfg){4, 1, 16, 0, 1, 0, NULL, 0}, 16);
    forward_matches("experts=4 top_k=2 act=gelu hidden=20 shared=1", (ref_cfg){4, 2, 20, 1, 0, 0, NULL, 0}, 16);
    /* expert choice: c = floor(1 * 24 * 2 / 4) = 12, and with capacity 0.5: 6 */
    forward_matches("experts=4 top_k=2 hidden=16 router=expert_choice", (ref_cfg){4, 2, 16, 0, 2, 12, NULL, 0}, 16);
    forward_matches("experts=4 top_k=2 hidden=16 router=expert_choice capacity=0.5",
                    (ref_cfg){4, 2, 16, 0, 2, 6, NULL, 0}, 16);
}

/* ---- gradients -------------------------------------------------------------------------------- */

/* The smallest gap in log-probability at the routing boundary for the inputs check_gradients draws:
 * token choice, per token between the k-th and (k+1)-th expert; expert choice, per expert between
 * its c-th and (c+1)-th token. Perturbations move a log-probability by at most ~8 eps. */
static double routing_margin(pf_layer *l, int B, int T, uint64_t seed, int k, int ec_c)
{
    int C = l->dim, N = B * T;
    float *x = malloc((size_t)N * C * sizeof *x), *out = malloc((size_t)N * C * sizeof *out);
    check_fill_normal(x, (size_t)N * C, 1.0, seed);
    forward(l, out, x, B, T);
    pf_tensor *g = probe(l, "gates");
    int E = g->shape[1];
    double margin = INFINITY;
    if (!ec_c) {
        for (int t = 0; t < N; t++) {
            double v[64];
            for (int e = 0; e < E; e++) v[e] = log(g->data[(size_t)t * E + e]);
            for (int i = 0; i < E; i++)     /* sort descending */
                for (int j = i + 1; j < E; j++)
                    if (v[j] > v[i]) { double s = v[i]; v[i] = v[j]; v[j] = s; }
            if (k < E) margin = fmin(margin, v[k - 1] - v[k]);
        }
    } else {
        for (int e = 0; e < E; e++) {
            double v[256];
            for (int t = 0; t < N; t++) v[t] = log(g->data[(size_t)t * E + e]);
            for (int i = 0; i < N; i++)
                for (int j = i + 1; j < N; j++)
                    if (v[j] > v[i]) { double s = v[i]; v[i] = v[j]; v[j] = s; }
            if (ec_c < N) margin = fmin(margin, v[ec_c - 1] - v[ec_c]);
        }
    }
    pf_tensor_free(g);
    free(x);
    free(out);
    return margin;
}

static void gradients(const char *spec, int k, int ec_c, int train)
{
    int B = 2, T = 8, C = 16;
    double eps = 1e-3;
    uint64_t seed = 11;
    printf("# gradients: %s%s\n", spec, train ? " (training: jitter on)" : "");
    pf_layer *l = check_layer_new(&pf_layer_moe, spec, C, 7);
    reinit(l, 0.5, 0.3, 3);
    l->train = train;
    double margin = routing_margin(l, B, T, seed, k, ec_c);
    printf("#   routing margin %.3g (perturbation moves it by <= %.3g)\n", margin, 16 * eps);
    assert_true(margin > 16 * eps);
    double err = check_gradients(l, B, T, 40, eps, seed);
    assert_true(err < 1e-2);
    check_layer_free(l);
}

static void test_gradients_topk(void **state)
{
    (void)state;
    gradients("experts=4 top_k=2 hidden=16", 2, 0, 0);
    gradients("experts=4 top_k=2 hidden=16 aux=1 zloss=0.1", 2, 0, 0);
    gradients("experts=4 top_k=2 hidden=16 renorm=false", 2, 0, 0);
    gradients("experts=4 top_k=2 hidden=16 renorm=false aux=1 zloss=0.1", 2, 0, 0);
}

static void test_gradients_switch(void **state)
{
    (void)state;
    gradients("experts=4 router=switch hidden=16 aux=1 zloss=0.1", 1, 0, 0);
}

static void test_gradients_expert_choice(void **state)
{
    (void)state;
    /* 16 tokens, c = 16 * 2 / 4 = 8 */
    gradients("experts=4 top_k=2 hidden=16 router=expert_choice aux=1 zloss=0.1", 2, 8, 0);
}

static void test_gradients_shared_gelu(void **state)
{
    (void)state;
    gradients("experts=4 top_k=2 hidden=16 shared=2 aux=0.5 zloss=0.1", 2, 0, 0);
    gradients("experts=3 top_k=2 hidden=12 act=gelu shared=1 aux=0.5 zloss=0.1", 2, 0, 0);
}

static void test_gradients_capacity_jitter(void **state)
{
    (void)state;
    /* 16 tokens, 2 slots each, cap = floor(0.75 * 16 * 2 / 4) = 6: some slots are dropped */
    gradients("experts=4 top_k=2 hidden=16 capacity=0.75 aux=1 zloss=0.1", 2, 0, 0);
    gradients("experts=4 top_k=2 hidden=16 jitter=0.2 aux=1 zloss=0.1", 2, 0, 1);
}

/* The auxiliary losses alone: dout = 0, so backward gives only d(aux_loss)/d(gate.weight, input);
 * central differences of l->aux_loss must agree. */
static void aux_gradient(const char *spec)
{
    int B = 2, T = 8, C = 16, N = B * T;
    pf_layer *l = check_layer_new(&pf_layer_moe, spec, C, 7);
    reinit(l, 0.5, 0.3, 3);
    size_t n = (size_t)N * C;
    float *x = malloc(n * sizeof *x), *out = malloc(n * sizeof *out), *dout = calloc(n, sizeof *dout);
    float *dx = malloc(n * sizeof *dx);
    check_fill_normal(x, n, 1.0, 11);
    float *wg = param(l, "gate.weight");
    const pf_layer_param *pg = param_info(l, "gate.weight");
    float *g = *pg->grad;
    memset(g, 0, pg->numel * sizeof *g);
    forward(l, out, x, B, T);
    if (l->kind->backward(l, dx, dout, x, B, T) < 0) fail_msg("backward: %s", pf_error_message());
    double eps = 1e-3, dd = 0, na = 0, nn = 0;
    for (int pass = 0; pass < 2; pass++) {
        float *v = pass ? x : wg, *ana = pass ? dx : g;
        size_t count = pass ? n : pg->numel;
        for (size_t i = 0; i < count; i += pass ? 7 : 1) {
            float keep = v[i];
            v[i] = keep + (float)eps;
            forward(l, out, x, B, T);
            double lp = l->aux_loss;
            v[i] = keep - (float)eps;
            forward(l, out, x, B, T);
            double lm = l->aux_loss;
            v[i] = keep;
            double num = (lp - lm) / (2 * eps);
            dd += (ana[i] - num) * (ana[i] - num);
            na += (double)ana[i] * ana[i];
            nn += num * num;
        }
    }
    double err = sqrt(dd) / fmax(sqrt(fmax(na, nn)), 1e-12);
    printf("#   aux-only gradient (%s): |g| %.3e, rel err %.2e\n", spec, sqrt(na), err);
    assert_true(sqrt(na) > 1e-3 || strstr(spec, "expert_choice"));
    assert_true(err < 1e-2);
    free(x);
    free(out);
    free(dout);
    free(dx);
    check_layer_free(l);
}

static void test_aux_gradients(void **state)
{
    (void)state;
    aux_gradient("experts=4 top_k=2 hidden=8 aux=1 zloss=0");
    aux_gradient("experts=4 top_k=2 hidden=8 aux=0 zloss=1");
    aux_gradient("experts=4 router=switch hidden=8 aux=1 zloss=0.5");
    aux_gradient("experts=4 top_k=2 hidden=8 router=expert_choice aux=1 zloss=0.5");
}

/* ---- step equals forward ---------------------------------------------------------------------- */

static void step_matches(const char *spec)
{
    pf_layer *l = check_layer_new(&pf_layer_moe, spec, 32, 3);
    reinit(l, 0.3, 0.1, 9);
    double err = check_step_matches_forward(l, 128, 5);
    assert_true(err <= 1e-4);
    check_layer_free(l);
}

static void test_step_matches_forward(void **state)
{
    (void)state;
    step_matches("experts=4 top_k=2");
    step_matches("experts=6 top_k=2 shared=1 hidden=24");
    step_matches("experts=4 router=switch");
    step_matches("experts=4 top_k=2 renorm=false");
    step_matches("experts=4 top_k=2 act=gelu hidden=32");
}

/* ---- balance loss ----------------------------------------------------------------------------- */

/* x (N, C): channels 0..E-1 hold the router logits directly (gate.weight = [I | 0]), the rest noise */
static void identity_router(pf_layer *l, int E)
{
    int C = l->dim;
    float *wg = param(l, "gate.weight");
    memset(wg, 0, (size_t)E * C * sizeof *wg);
    for (int e = 0; e < E; e++) wg[(size_t)e * C + e] = 1.0f;
}

static void test_balance_uniform(void **state)
{
    (void)state;
    int C = 16, B = 2, T = 8, N = B * T;
    float *x = malloc((size_t)N * C * sizeof *x), *out = malloc((size_t)N * C * sizeof *out);
    check_fill_normal(x, (size_t)N * C, 1.0, 4);
    /* zero router weights: p uniform, so E * sum f_i P_i = 1 whatever f is */
    const char *specs[] = {"experts=4 top_k=2 hidden=8 aux=0.01 zloss=0",
                           "experts=2 top_k=1 hidden=8 aux=0.01 zloss=0",
                           "experts=4 router=switch hidden=8 aux=0.25 zloss=0",
                           "experts=4 router=expert_choice hidden=8 aux=0.01 zloss=0"};
    const float alpha[] = {0.01f, 0.01f, 0.25f, 0.01f};
    for (int i = 0; i < 4; i++) {
        pf_layer *l = check_layer_new(&pf_layer_moe, specs[i], C, 1);
        memset(param(l, "gate.weight"), 0, param_info(l, "gate.weight")->numel * sizeof(float));
        forward(l, out, x, B, T);
        printf("#   uniform router (%s): aux_loss %.9g (aux %.9g), entropy %.9g\n", specs[i], l->aux_loss,
               alpha[i], probe1(l, "entropy"));
        assert_true(l->aux_loss == alpha[i]);
        assert_true(probe1(l, "aux_loss") == 1.0);
        assert_true(fabs(probe1(l, "entropy") - 1.0) < 1e-6);
        check_layer_free(l);
    }
    /* balanced assignment with peaked, symmetric probabilities: token t strongly prefers t % 4 */
    pf_layer *l = check_layer_new(&pf_layer_moe, "experts=4 router=switch hidden=8 aux=0.01 zloss=0", C, 1);
    identity_router(l, 4);
    for (int t = 0; t < N; t++)
        for (int e = 0; e < 4; e++) x[(size_t)t * C + e] = e == t % 4 ? 3.0f : 0.0f;
    forward(l, out, x, B, T);
    printf("#   balanced peaked router: aux_loss %.9g\n", l->aux_loss);
    assert_true(fabs(l->aux_loss - 0.01) < 1e-8);
    assert_true(fabs(probe1(l, "max_violation")) < 1e-7);
    check_layer_free(l);
    free(x);
    free(out);
}

static void test_balance_grows_with_imbalance(void **state)
{
    (void)state;
    int C = 16, N = 16, E = 4;
    float alpha = 0.01f, beta = 0.002f;
    float *x = malloc((size_t)N * C * sizeof *x), *out = malloc((size_t)N * C * sizeof *out);
    pf_layer *l = check_layer_new(&pf_layer_moe, "experts=4 router=switch hidden=8 aux=0.01 zloss=0.002", C, 1);
    identity_router(l, E);
    double last = 0;
    const double strengths[] = {0, 0.5, 1, 2, 4, 8};
    for (int i = 0; i < 6; i++) {
        double s = strengths[i];
        /* every token: logits (s, 0, 0, 0); all go to expert 0 (ties at s = 0: the lower id) */
        check_fill_normal(x, (size_t)N * C, 1.0, 8);
        for (int t = 0; t < N; t++)
            for (int e = 0; e < E; e++) x[(size_t)t * C + e] = e == 0 ? (float)s : 0.0f;
        forward(l, out, x, 1, N);
        double P0 = exp(s) / (exp(s) + E - 1), lse = log(exp(s) + E - 1);
        double balance = E * 1.0 * P0;  /* f = (1, 0, 0, 0) */
        double want = alpha * balance + beta * lse * lse;
        printf("#   s %.1f: balance %.6f (want %.6f), aux_loss %.6g (want %.6g), max_violation %.3f\n", s,
               probe1(l, "aux_loss"), balance, l->aux_loss, want, probe1(l, "max_violation"));
        assert_true(fabs(probe1(l, "aux_loss") - balance) < 1e-5 * balance);
        assert_true(fabs(probe1(l, "z_loss") - lse * lse) < 1e-5 * lse * lse);
        assert_true(fabs(l->aux_loss - want) < 1e-5 * want);
        assert_true(fabs(probe1(l, "max_violation") - 3.0) < 1e-6);
        assert_true(probe1(l, "aux_loss") > last);
        last = probe1(l, "aux_loss");
    }
    check_layer_free(l);
    free(x);
    free(out);
}

/* ---- capacity --------------------------------------------------------------------------------- */

/* x rows: routing channels 0..E-1 set from logits (N, E), the rest noise */
static float *routed_input(int N, int C, int E, const float *logits)
{
    float *x = malloc((size_t)N * C * sizeof *x);
    check_fill_normal(x, (size_t)N * C, 1.0, 31);
    for (int t = 0; t < N; t++)
        for (int e = 0; e < E; e++) x[(size_t)t * C + e] = logits[t * E + e];
    return x;
}

static void test_capacity_switch_token_order(void **state)
{
    (void)state;
    int C = 16, E = 4, N = 8;
    /* first choices [0,0,0,1,0,2,2,2]; cap = floor(1 * 8 * 1 / 4) = 2: expert 0 keeps tokens 0, 1 and
     * drops 2, 4; expert 2 keeps 5, 6 and drops 7 */
    const int pref[8] = {0, 0, 0, 1, 0, 2, 2, 2};
    const int keep[8] = {1, 1, 0, 1, 0, 1, 1, 0};
    float logits[8 * 4] = {0};
    for (int t = 0; t < N; t++) logits[t * E + pref[t]] = 3.0f;
    float *x = routed_input(N, C, E, logits), *out = malloc((size_t)N * C * sizeof *out);
    double *ref = malloc((size_t)N * C * sizeof *ref);
    pf_layer *l = check_layer_new(&pf_layer_moe, "experts=4 router=switch hidden=8 capacity=1", C, 2);
    reinit(l, 0.5, 0.3, 5);
    identity_router(l, E);
    forward(l, out, x, 1, N);
    ref_forward(l, &(ref_cfg){E, 1, 8, 0, 1, 0, keep, 0}, x, N, ref);
    for (int t = 0; t < N; t++) {
        double norm = 0;
        for (int c = 0; c < C; c++) norm += fabs(out[(size_t)t * C + c]);
        printf("#   token %d -> expert %d: %s (|out| %.3f)\n", t, pref[t], keep[t] ? "kept" : "dropped", norm);
        assert_true(keep[t] ? norm > 0 : norm == 0);
    }
    assert_true(max_rel(out, ref, (size_t)N * C) < 1e-5);
    assert_true(fabs(probe1(l, "drop_rate") - 3.0 / 8) < 1e-7);
    /* load counts the router's choices, before the limit */
    pf_tensor *load = probe(l, "load");
    const float want[4] = {4.0f / 8, 1.0f / 8, 3.0f / 8, 0};
    for (int e = 0; e < E; e++) assert_true(fabs(load->data[e] - want[e]) < 1e-7);
    pf_tensor_free(load);
    check_layer_free(l);
    free(x);
    free(out);
    free(ref);
}

static void test_capacity_topk_priority_order(void **state)
{
    (void)state;
    int C = 16, E = 4, N = 4;
    /* (first, second) choices: t0 (0,1), t1 (0,1), t2 (1,0), t3 (0,2); cap = floor(1 * 4 * 2 / 4) = 2.
     * First choices go first, by token: e0 <- t0, t1; e1 <- t2; t3's first (e0) is dropped. Then the
     * second choices: e1 <- t0; t1's (e1) is dropped; t2's (e0) is dropped; e2 <- t3.
     * (Token order would have kept t1's second and dropped t2's and t3's first instead.) */
    const float logits[4 * 4] = {3, 2, 0, 0, 3, 2, 0, 0, 2, 3, 0, 0, 3, 0, 2, 0};
    const int keep[4 * 2] = {1, 1, 1, 0, 1, 0, 0, 1};
    float *x = routed_input(N, C, E, logits), *out = malloc((size_t)N * C * sizeof *out);
    double *ref = malloc((size_t)N * C * sizeof *ref);
    pf_layer *l = check_layer_new(&pf_layer_moe, "experts=4 top_k=2 hidden=8 capacity=1", C, 2);
    reinit(l, 0.5, 0.3, 5);
    identity_router(l, E);
    forward(l, out, x, 1, N);
    ref_forward(l, &(ref_cfg){E, 2, 8, 0, 0, 0, keep, 0}, x, N, ref);
    double err = max_rel(out, ref, (size_t)N * C);
    printf("#   top-2 with capacity 2 per expert: max rel diff to the expected drops %.2e, drop_rate %.4f\n",
           err, probe1(l, "drop_rate"));
    assert_true(err < 1e-5);
    /* and not what the all-kept output would be */
    double *full = malloc((size_t)N * C * sizeof *full);
    ref_forward(l, &(ref_cfg){E, 2, 8, 0, 0, 0, NULL, 0}, x, N, full);
    assert_true(max_rel(out, full, (size_t)N * C) > 1e-2);
    assert_true(fabs(probe1(l, "drop_rate") - 3.0 / 8) < 1e-7);
    pf_tensor *topk = probe(l, "topk");
    assert_int_equal(topk->shape[0], N);
    assert_int_equal(topk->shape[1], 2);
    const float ids[8] = {0, 1, 0, 1, 1, 0, 0, 2};
    for (int i = 0; i < 8; i++) assert_true(topk->data[i] == ids[i]);
    pf_tensor_free(topk);
    pf_tensor *load = probe(l, "load");
    const float want[4] = {4.0f / 8, 3.0f / 8, 1.0f / 8, 0};
    for (int e = 0; e < E; e++) assert_true(fabs(load->data[e] - want[e]) < 1e-7);
    pf_tensor_free(load);
    /* a single stepped token is never dropped: step t3 alone gives both its experts */
    float *o1 = malloc((size_t)C * sizeof *o1);
    if (l->kind->step(l, o1, x + 3 * C) < 0) fail_msg("step: %s", pf_error_message());
    ref_forward(l, &(ref_cfg){E, 2, 8, 0, 0, 0, NULL, 0}, x + 3 * C, 1, full);
    assert_true(max_rel(o1, full, (size_t)C) < 1e-5);
    free(o1);
    free(full);
    check_layer_free(l);
    free(x);
    free(out);
    free(ref);
}

/* ---- expert choice ---------------------------------------------------------------------------- */

static void test_expert_choice_equal_load(void **state)
{
    (void)state;
    int C = 16, E = 4, B = 4, T = 8, N = B * T;
    const char *specs[] = {"experts=4 top_k=2 hidden=8 router=expert_choice",
                           "experts=4 top_k=1 hidden=8 router=expert_choice capacity=0.5"};
    const int cs[] = {16, 4}; /* floor(32*2/4), floor(0.5*32*1/4): 16 slots for 32 tokens */
    for (int i = 0; i < 2; i++) {
        pf_layer *l = check_layer_new(&pf_layer_moe, specs[i], C, 4);
        reinit(l, 1.0, 0.3, 6);
        float *x = malloc((size_t)N * C * sizeof *x), *out = malloc((size_t)N * C * sizeof *out);
        double *ref = malloc((size_t)N * C * sizeof *ref), *p = malloc((size_t)N * E * sizeof *p);
        check_fill_normal(x, (size_t)N * C, 1.0, 12);
        forward(l, out, x, B, T);
        /* the reference gives every expert exactly its c best tokens */
        ref_forward(l, &(ref_cfg){E, 2, 8, 0, 2, cs[i], NULL, 0}, x, N, ref);
        double err = max_rel(out, ref, (size_t)N * C);
        pf_tensor *load = probe(l, "load");
        for (int e = 0; e < E; e++) assert_true(load->data[e] == 0.25f);
        pf_tensor_free(load);
        /* tokens no expert took */
        ref_probs(l, x, N, E, p);
        int unrouted = 0;
        for (int t = 0; t < N; t++) {
            int any = 0;
            for (int e = 0; e < E; e++) {
                int better = 0;
                for (int u = 0; u < N; u++)
                    better += p[u * E + e] > p[t * E + e] || (p[u * E + e] == p[t * E + e] && u < t);
                any |= better < cs[i];
            }
            unrouted += !any;
        }
        printf("#   %s: c = %d per expert, max rel diff %.2e, unrouted tokens %d, drop_rate %.4f\n", specs[i],
               cs[i], err, unrouted, probe1(l, "drop_rate"));
        assert_true(err < 1e-5);
        assert_true(fabs(probe1(l, "drop_rate") - (double)unrouted / N) < 1e-7);
        if (i == 1) assert_true(unrouted >= N - E * cs[i]);
        assert_true(probe1(l, "aux_loss") > 1 - 1e-6 && probe1(l, "aux_loss") < 1 + 1e-6);
        free(x);
        free(out);
        free(ref);
        free(p);
        check_layer_free(l);
    }
}

/* ---- probes ----------------------------------------------------------------------------------- */

static void test_probes(void **state)
{
    (void)state;
    int C = 16, E = 4, N = 6;
    pf_layer *l = check_layer_new(&pf_layer_moe, "experts=4 top_k=2 hidden=8", C, 2);
    pf_tensor *t = NULL;
    assert_int_equal(pf_layer_probe(l, "gates", &t), -1);
    assert_int_equal(pf_layer_probe(l, "load", &t), -1);
    assert_int_equal(pf_layer_probe(l, "load_history", &t), -1);
    assert_true(probe1(l, "dead") == 0);
    assert_int_equal(pf_layer_probe(l, "weights", &t), -1);
    assert_non_null(strstr(pf_error_message(), "gates, topk, load"));

    float *x = malloc((size_t)N * C * sizeof *x), *out = malloc((size_t)N * C * sizeof *out);
    check_fill_normal(x, (size_t)N * C, 1.0, 3);
    forward(l, out, x, 2, 3);
    t = probe(l, "gates");
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], N);
    assert_int_equal(t->shape[1], E);
    for (int i = 0; i < N; i++) {
        double s = 0;
        for (int e = 0; e < E; e++) s += t->data[i * E + e];
        assert_true(fabs(s - 1) < 1e-6);
    }
    pf_tensor_free(t);
    t = probe(l, "topk");
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], N);
    assert_int_equal(t->shape[1], 2);
    pf_tensor_free(t);
    t = probe(l, "load");
    assert_int_equal(t->ndim, 1);
    assert_int_equal(t->shape[0], E);
    double s = 0;
    for (int e = 0; e < E; e++) s += t->data[e];
    assert_true(fabs(s - 1) < 1e-6);
    pf_tensor_free(t);
    const char *scalars[] = {"entropy", "dead", "drop_rate", "max_violation", "aux_loss", "z_loss"};
    for (int i = 0; i < 6; i++) (void)probe1(l, scalars[i]);
    assert_true(probe1(l, "drop_rate") == 0);
    /* a step refreshes gates and topk to one token */
    if (l->kind->step(l, out, x) < 0) fail_msg("step");
    t = probe(l, "gates");
    assert_int_equal(t->shape[0], 1);
    assert_int_equal(t->shape[1], E);
    pf_tensor_free(t);
    check_layer_free(l);
    free(x);
    free(out);
}

static void test_load_history_and_dead(void **state)
{
    (void)state;
    int C = 8, E = 4, N = 8, steps = 1030;
    pf_layer *l = check_layer_new(&pf_layer_moe, "experts=4 router=switch hidden=8", C, 2);
    identity_router(l, E);
    float *x = malloc((size_t)N * C * sizeof *x), *out = malloc((size_t)N * C * sizeof *out);
    float *loads = malloc((size_t)steps * E * sizeof *loads);
    pf_rng rng;
    pf_rng_seed(&rng, 1);
    for (int s = 0; s < steps; s++) {
        /* a different routing every step: token t goes to a random expert */
        check_fill_normal(x, (size_t)N * C, 0.1, (uint64_t)s);
        for (int t = 0; t < N; t++) x[(size_t)t * C + pf_rng_below(&rng, (uint32_t)E)] = 5.0f;
        forward(l, out, x, 1, N);
        pf_tensor *ld = probe(l, "load");
        memcpy(loads + (size_t)s * E, ld->data, (size_t)E * sizeof(float));
        pf_tensor_free(ld);
        l->kind->train_step_end(l, s + 1);
        if (s == 2) {
            pf_tensor *h = probe(l, "load_history");
            assert_int_equal(h->shape[0], 3);
            assert_int_equal(h->shape[1], E);
            assert_memory_equal(h->data, loads, 3 * E * sizeof(float));
            pf_tensor_free(h);
        }
    }
    pf_tensor *h = probe(l, "load_history");
    assert_int_equal(h->shape[0], 1024);
    assert_int_equal(h->shape[1], E);
    /* oldest first: the last 1024 of 1030 steps start at step index 6 */
    assert_memory_equal(h->data, loads + 6 * E, 1024 * E * sizeof(float));
    pf_tensor_free(h);
    assert_true(probe1(l, "dead") == 0);

    /* 100 steps where every token goes to expert 0: three dead experts */
    for (int s = 0; s < 100; s++) {
        check_fill_normal(x, (size_t)N * C, 0.1, (uint64_t)s);
        for (int t = 0; t < N; t++) x[(size_t)t * C] = 5.0f;
        forward(l, out, x, 1, N);
        l->kind->train_step_end(l, steps + s + 1);
        if (s == 98) assert_true(probe1(l, "dead") < 3);  /* step 1030 had other experts */
    }
    printf("#   dead after 100 steps on expert 0: %g, max_violation %g\n", probe1(l, "dead"),
           probe1(l, "max_violation"));
    assert_true(probe1(l, "dead") == 3);
    assert_true(probe1(l, "max_violation") == 3);
    /* one token to expert 2 revives it */
    x[0] = 0;
    x[2] = 9.0f;
    forward(l, out, x, 1, N);
    l->kind->train_step_end(l, steps + 101);
    assert_true(probe1(l, "dead") == 2);
    check_layer_free(l);
    free(x);
    free(out);
    free(loads);
}

/* ---- jitter ----------------------------------------------------------------------------------- */

static void test_jitter(void **state)
{
    (void)state;
    int C = 16, N = 16;
    pf_layer *a = check_layer_new(&pf_layer_moe, "experts=4 top_k=2 hidden=8 jitter=0.5", C, 8);
    pf_layer *b = check_layer_new(&pf_layer_moe, "experts=4 top_k=2 hidden=8", C, 8);
    reinit(a, 1.0, 0.3, 1);
    reinit(b, 1.0, 0.3, 1);
    size_t n = (size_t)N * C;
    float *x = malloc(n * sizeof *x), *o1 = malloc(n * sizeof *o1), *o2 = malloc(n * sizeof *o2);
    check_fill_normal(x, n, 1.0, 2);
    /* not training: no noise */
    forward(a, o1, x, 1, N);
    forward(b, o2, x, 1, N);
    assert_memory_equal(o1, o2, n * sizeof *o1);
    /* training: noise, the same within a step, new after train_step_end */
    a->train = 1;
    forward(a, o1, x, 1, N);
    pf_tensor *g1 = probe(a, "gates");
    forward(a, o2, x, 1, N);
    assert_memory_equal(o1, o2, n * sizeof *o1);
    a->kind->train_step_end(a, 1);
    a->train = 1;
    forward(a, o2, x, 1, N);
    pf_tensor *g2 = probe(a, "gates");
    pf_tensor *g0 = probe(b, "gates");
    double d01 = check_max_rel_diff(g0->data, g1->data, (size_t)N * 4);
    double d12 = check_max_rel_diff(g1->data, g2->data, (size_t)N * 4);
    printf("#   jitter 0.5: gates differ from the clean router by %.3f, between steps by %.3f\n", d01, d12);
    assert_true(d01 > 1e-3 && d12 > 1e-3);
    pf_tensor_free(g0);
    pf_tensor_free(g1);
    pf_tensor_free(g2);
    check_layer_free(a);
    check_layer_free(b);
    free(x);
    free(o1);
    free(o2);
}

/* ---- inside a model --------------------------------------------------------------------------- */

static pf_model *moe_model(const char *spec, uint64_t seed)
{
    pf_model_config mc = {.vocab = 12, .dim = 16, .seed = seed, .norm = PF_NORM_RMS, .norm_eps = 1e-5f,
                          .be = &pf_backend_cpu};
    pf_model *m = pf_model_new(&mc);
    assert_non_null(m);
    pf_config cfg = check_config(&pf_layer_moe, spec);
    assert_true(pf_model_add_layer(m, &pf_layer_moe, &cfg, -1) >= 0);
    assert_true(pf_model_add_layer(m, &pf_layer_moe, &cfg, -1) >= 0);
    if (pf_model_build(m) < 0) fail_msg("build: %s", pf_error_message());
    return m;
}

/* Training through the model: aux losses reported, load_history filled by train_step_end, the same
 * numbers from the same seed; and the model's gradient (cross-entropy + the layers' aux_loss) against
 * finite differences on the routers. */
static void test_in_model(void **state)
{
    (void)state;
    enum { B = 4, T = 12, steps = 12 };
    const char *spec = "experts=4 top_k=2 hidden=16 aux=0.5 zloss=0.05 jitter=0.1";
    pf_task *task = pf_task_copy(12, T);
    assert_non_null(task);
    int32_t in[B * T], tg[B * T];
    float mask[B * T];
    pf_train_config tc;
    pf_train_config_default(&tc);
    double losses[2][steps];
    for (int run = 0; run < 2; run++) {
        pf_model *m = moe_model(spec, 3);
        pf_rng rng;
        pf_rng_seed(&rng, 5);
        for (int s = 0; s < steps; s++) {
            pf_train_stats st;
            assert_int_equal(pf_task_batch(task, &rng, B, in, tg, mask), 0);
            if (pf_model_train_step(m, in, tg, mask, B, T, &tc, &st) < 0) fail_msg("%s", pf_error_message());
            double aux = (double)pf_model_layer(m, 0)->aux_loss + pf_model_layer(m, 1)->aux_loss;
            assert_true(st.aux_loss == aux && aux > 0);
            losses[run][s] = st.loss + st.aux_loss;
        }
        pf_layer *l = pf_model_layer(m, 1);
        pf_tensor *h = probe(l, "load_history");
        assert_int_equal(h->shape[0], steps);
        pf_tensor *ld = probe(l, "load");
        assert_memory_equal(h->data + (size_t)(steps - 1) * 4, ld->data, 4 * sizeof(float));
        pf_tensor_free(h);
        pf_tensor_free(ld);
        pf_model_free(m);
    }
    printf("#   total loss step 1 %.4f -> step %d %.4f; two runs from one seed equal: %s\n", losses[0][0], steps,
           losses[0][steps - 1], memcmp(losses[0], losses[1], sizeof losses[0]) ? "no" : "yes");
    assert_memory_equal(losses[0], losses[1], sizeof losses[0]);
    assert_true(losses[0][steps - 1] < losses[0][0]);

    /* the model's gradient of cross-entropy + aux losses (no jitter: evaluate routes without it),
     * with lr = 0 and no clipping, after a few steps so that the routers are not at their init */
    pf_model *m = moe_model("experts=4 top_k=2 hidden=16 aux=0.5 zloss=0.05", 3);
    pf_rng rng;
    pf_rng_seed(&rng, 5);
    for (int s = 0; s < 4; s++) {
        pf_train_stats st;
        assert_int_equal(pf_task_batch(task, &rng, B, in, tg, mask), 0);
        if (pf_model_train_step(m, in, tg, mask, B, T, &tc, &st) < 0) fail_msg("%s", pf_error_message());
    }
    pf_train_config t0 = tc;
    t0.lr = 0;
    t0.clip = 0;
    pf_train_stats st;
    if (pf_model_train_step(m, in, tg, mask, B, T, &t0, &st) < 0) fail_msg("%s", pf_error_message());
    float *p = pf_model_params(m), *g = pf_model_grads(m);
    double dd = 0, na = 0, nn = 0, eps = 1e-3, loss, acc;
    /* the routing of the unperturbed batch; a sample whose perturbation changes it is skipped */
    pf_tensor *base[2];
    if (pf_model_evaluate(m, in, tg, mask, B, T, &loss, &acc) < 0) fail_msg("evaluate");
    for (int li = 0; li < 2; li++) base[li] = probe(pf_model_layer(m, li), "topk");
    int used = 0, flipped = 0;
    for (int li = 0; li < 2; li++) {
        const pf_layer_param *gp = &pf_model_layer(m, li)->params[0];   /* gate.weight */
        assert_string_equal(gp->name, "gate.weight");
        size_t base_off = (size_t)(*gp->value - p);
        for (size_t i = 0; i < gp->numel; i++) {
            size_t j = base_off + i;
            float keep = p[j];
            double lpm[2];
            int same = 1;
            for (int sgn = 0; sgn < 2; sgn++) {
                p[j] = keep + (float)(sgn ? -eps : eps);
                if (pf_model_evaluate(m, in, tg, mask, B, T, &loss, &acc) < 0) fail_msg("evaluate");
                lpm[sgn] = loss + (double)pf_model_layer(m, 0)->aux_loss + pf_model_layer(m, 1)->aux_loss;
                for (int lj = 0; lj < 2; lj++) {
                    pf_tensor *tk = probe(pf_model_layer(m, lj), "topk");
                    same &= !memcmp(tk->data, base[lj]->data, pf_tensor_numel(tk) * sizeof(float));
                    pf_tensor_free(tk);
                }
            }
            p[j] = keep;
            if (!same) {
                flipped++;
                continue;
            }
            used++;
            double num = (lpm[0] - lpm[1]) / (2 * eps);
            dd += (num - g[j]) * (num - g[j]);
            na += (double)g[j] * g[j];
            nn += num * num;
        }
    }
    pf_tensor_free(base[0]);
    pf_tensor_free(base[1]);
    printf("#   router entries checked %d, skipped because the perturbation changed a top-k choice %d\n",
           used, flipped);
    assert_true(used >= 3 * flipped);
    double err = sqrt(dd) / fmax(sqrt(fmax(na, nn)), 1e-12);
    printf("#   model gradient of the routers (cross-entropy + aux): |g| %.3e rel err %.2e\n", sqrt(na), err);
    assert_true(err < 2e-2);
    pf_model_free(m);
    pf_task_free(task);
}

/* ---- options and parameters ------------------------------------------------------------------- */

static void test_options_and_names(void **state)
{
    (void)state;
    pf_config cfg = check_config(&pf_layer_moe, "experts=4 top_k=5");
    assert_null(pf_layer_create(&pf_layer_moe, &cfg, 16, &pf_backend_cpu, 1));
    assert_non_null(strstr(pf_error_message(), "'top_k'"));
    cfg = check_config(&pf_layer_moe, "experts=4 router=switch top_k=2");
    assert_null(pf_layer_create(&pf_layer_moe, &cfg, 16, &pf_backend_cpu, 1));
    assert_non_null(strstr(pf_error_message(), "switch"));
    /* renorm belongs to topk: given with another router it is an error, even when it agrees */
    for (int i = 0; i < 2; i++) {
        cfg = check_config(&pf_layer_moe,
                           i ? "experts=4 router=expert_choice renorm=true" : "experts=4 router=switch renorm=false");
        assert_null(pf_layer_create(&pf_layer_moe, &cfg, 16, &pf_backend_cpu, 1));
        assert_non_null(strstr(pf_error_message(), "option 'renorm' applies to router \"topk\" only"));
    }
    pf_config_init(&cfg, pf_layer_moe.options, pf_layer_moe.n_options);
    assert_int_equal(pf_config_set_string(&cfg, "moe", "router", "hash"), -1);
    assert_non_null(strstr(pf_error_message(), "topk|switch|expert_choice"));
    assert_int_equal(pf_config_set_number(&cfg, "moe", "capacity", -1), -1);
    assert_int_equal(pf_config_set_number(&cfg, "moe", "expert", 4), -1);
    assert_non_null(strstr(pf_error_message(), "unknown option 'expert'"));

    /* Mixtral names and shapes; shared experts likewise */
    pf_layer *l = check_layer_new(&pf_layer_moe, "experts=2 shared=1 hidden=24", 16, 1);
    const char *names[] = {"gate.weight", "experts.0.w1.weight", "experts.0.w3.weight", "experts.0.w2.weight",
                           "experts.1.w1.weight", "experts.1.w3.weight", "experts.1.w2.weight",
                           "shared_experts.0.w1.weight", "shared_experts.0.w3.weight",
                           "shared_experts.0.w2.weight"};
    const int shapes[][2] = {{2, 16}, {24, 16}, {24, 16}, {16, 24}, {24, 16}, {24, 16}, {16, 24},
                             {24, 16}, {24, 16}, {16, 24}};
    assert_int_equal(l->n_params, 10);
    for (int i = 0; i < 10; i++) {
        assert_string_equal(l->params[i].name, names[i]);
        assert_int_equal(l->params[i].shape[0], shapes[i][0]);
        assert_int_equal(l->params[i].shape[1], shapes[i][1]);
    }
    pf_layer_info info;
    l->kind->describe(l, &info);
    /* router 2*C*E + (k + shared) experts of 2*C*(2F + F) */
    assert_true(info.flops_per_token == 2.0 * 16 * 2 + 3 * 2.0 * 16 * 72);
    check_layer_free(l);
    l = check_layer_new(&pf_layer_moe, "experts=2 act=gelu", 16, 1);
    assert_int_equal(l->n_params, 9);
    assert_string_equal(l->params[2].name, "experts.0.w1.bias");
    assert_int_equal(l->params[2].shape[0], 64);   /* auto hidden for gelu: 4 * dim */
    assert_string_equal(l->params[4].name, "experts.0.w2.bias");
    check_layer_free(l);

    /* the defaults (8 swiglu experts: 25 parameter tensors) */
    pf_config_init(&cfg, pf_layer_moe.options, pf_layer_moe.n_options);
    l = pf_layer_create(&pf_layer_moe, &cfg, 32, &pf_backend_cpu, 1);
    assert_non_null(l);
    assert_int_equal(l->n_params, 25);
    pf_layer_destroy(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_reference),
        cmocka_unit_test(test_gradients_topk),
        cmocka_unit_test(test_gradients_switch),
        cmocka_unit_test(test_gradients_expert_choice),
        cmocka_unit_test(test_gradients_shared_gelu),
        cmocka_unit_test(test_gradients_capacity_jitter),
        cmocka_unit_test(test_aux_gradients),
        cmocka_unit_test(test_step_matches_forward),
        cmocka_unit_test(test_balance_uniform),
        cmocka_unit_test(test_balance_grows_with_imbalance),
        cmocka_unit_test(test_capacity_switch_token_order),
        cmocka_unit_test(test_capacity_topk_priority_order),
        cmocka_unit_test(test_expert_choice_equal_load),
        cmocka_unit_test(test_probes),
        cmocka_unit_test(test_load_history_and_dead),
        cmocka_unit_test(test_jitter),
        cmocka_unit_test(test_in_model),
        cmocka_unit_test(test_options_and_names),
    };
    return cmocka_run_group_tests_name("moe", tests, NULL, NULL);
}
