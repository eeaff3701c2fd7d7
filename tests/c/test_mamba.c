/* mamba layer and the kernels under it (causal conv1d, selective scan):
 *   - the scan kernel against a plain recurrence in double, forward and (by finite differences of
 *     that recurrence) backward, in the selective and the time-invariant layout, with a chunk that
 *     does not divide T and an initial state;
 *   - the conv kernel against a direct sum in double, whole and in pieces carrying its state;
 *   - finite-difference gradients of every parameter and the input; step equals forward; probes;
 *   - output and gradients against a PyTorch Mamba block (tests/ref/mamba_ref.py -> .bin). */
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
#include "kernels/cpu/cpu.h"
#include "tests/c/layer_check.h"

extern const pf_layer_kind pf_layer_mamba;

/* ==== scan kernel against a double recurrence ================================================ */

/* The operands of one scan problem in one flat double vector (so that each entry can be perturbed),
 * laid out exactly as the float operands handed to the kernel. */
typedef struct scan_case {
    int B, T, E, N, selective;
    int dt_tok, b_tok, b_chan, y_ld, dy_ld;
    size_t n_x, n_dt, n_A, n_bc, n_D, n_h0, total;   /* n_bc: the buffer holding B and C */
    size_t o_x, o_dt, o_bias, o_A, o_bc, o_D, o_h0;
    long b_off, c_off;                                /* B and C inside the bc buffer */
} scan_case;

static scan_case make_case(int B, int T, int E, int N, int selective)
{
    scan_case s = {.B = B, .T = T, .E = E, .N = N, .selective = selective};
    long rows = (long)B * T;
    if (selective) {
        /* per token, inside a wider row (like x_proj's [dt | B | C]), with padding to test strides */
        s.dt_tok = E + 1;
        s.b_tok = 2 * N + 3, s.b_chan = 0, s.b_off = 1, s.c_off = 1 + N;
        s.n_dt = (size_t)rows * s.dt_tok;
        s.n_bc = (size_t)rows * s.b_tok;
    } else {
        s.dt_tok = 0;
        s.b_tok = 0, s.b_chan = N, s.b_off = 0, s.c_off = (long)E * N;
        s.n_dt = (size_t)E;
        s.n_bc = 2 * (size_t)E * N;
    }
    s.y_ld = E + 2, s.dy_ld = E + 3;
    s.n_x = (size_t)rows * E, s.n_A = (size_t)E * N, s.n_D = (size_t)E, s.n_h0 = (size_t)B * E * N;
    s.o_x = 0;
    s.o_dt = s.o_x + s.n_x;
    s.o_bias = s.o_dt + s.n_dt;
    s.o_A = s.o_bias + (size_t)E;
    s.o_bc = s.o_A + s.n_A;
    s.o_D = s.o_bc + s.n_bc;
    s.o_h0 = s.o_D + s.n_D;
    s.total = s.o_h0 + s.n_h0;
    return s;
}

/* L = sum_r,e y[r, e] * R[r, e] for theta, by the textbook recurrence in double */
static double ref_scan_loss(const scan_case *s, const double *th, const double *Rw, double *y, double *hT)
{
    int E = s->E, N = s->N;
    double L = 0;
    for (int b = 0; b < s->B; b++)
        for (int e = 0; e < E; e++) {
            double h[16];
            for (int n = 0; n < N; n++) h[n] = th[s->o_h0 + ((size_t)b * E + e) * N + n];
            for (int t = 0; t < s->T; t++) {
                long r = (long)b * s->T + t;
                double v = th[s->o_dt + r * s->dt_tok + e], delta;
                if (s->selective) {
                    v += th[s->o_bias + e];
                    delta = log1p(exp(v));
                } else {
                    delta = exp(v);
                }
                double xv = th[s->o_x + r * E + e], acc = th[s->o_D + e] * xv;
                for (int n = 0; n < N; n++) {
                    double A = -exp(th[s->o_A + (size_t)e * N + n]);
                    double Bv = th[s->o_bc + s->b_off + r * s->b_tok + (long)e * s->b_chan + n];
                    double Cv = th[s->o_bc + s->c_off + r * s->b_tok + (long)e * s->b_chan + n];
                    h[n] = exp(delta * A) * h[n] + delta * Bv * xv;
                    acc += Cv * h[n];
                }
                if (y) y[r * E + e] = acc;
                L += acc * Rw[r * E + e];
            }
            if (hT)
                for (int n = 0; n < N; n++) hT[((size_t)b * E + e) * N + n] = h[n];
        }
    return L;
}

static void check_scan(int selective)
{
    const int B = 2, T = 23, E = 5, N = 3, chunk = 5;
    scan_case s = make_case(B, T, E, N, selective);
    long rows = (long)B * T;
    double *th = malloc(s.total * sizeof(double)), *Rw = malloc(rows * E * sizeof(double));
    float *f = malloc(s.total * sizeof(float));
    pf_rng rng;
    pf_rng_seed(&rng, 42 + selective);
    for (size_t i = 0; i < s.total; i++) f[i] = (float)pf_rng_normal(&rng);
    /* plausible ranges: Δ of order 0.1..1, A_log around log(1..N) */
    for (size_t i = 0; i < s.n_dt; i++) f[s.o_dt + i] = (selective ? -1.0f : -1.5f) + 0.5f * f[s.o_dt + i];
    for (size_t i = 0; i < s.n_A; i++) f[s.o_A + i] = logf((float)(i % N + 1)) + 0.2f * f[s.o_A + i];
    for (size_t i = 0; i < s.total; i++) th[i] = f[i];
    for (long i = 0; i < rows * E; i++) Rw[i] = pf_rng_normal(&rng);

    /* forward */
    double *y_ref = malloc(rows * E * sizeof(double)), *h_ref = malloc(s.n_h0 * sizeof(double));
    ref_scan_loss(&s, th, Rw, y_ref, h_ref);
    int nch = (T + chunk - 1) / chunk;
    float *y = calloc((size_t)rows * s.y_ld, sizeof(float)), *state = malloc(s.n_h0 * sizeof(float));
    float *hsave = calloc((size_t)B * nch * E * N, sizeof(float));
    memcpy(state, f + s.o_h0, s.n_h0 * sizeof(float));
    pf_ssm_scan sc = {
        .B = B, .T = T, .E = E, .N = N, .chunk = chunk, .x = f + s.o_x,
        .dt = f + s.o_dt, .dt_tok = s.dt_tok, .dt_bias = selective ? f + s.o_bias : NULL,
        .dt_softplus = selective, .A_log = f + s.o_A,
        .Bm = f + s.o_bc + s.b_off, .b_tok = s.b_tok, .b_chan = s.b_chan,
        .Cm = f + s.o_bc + s.c_off, .c_tok = s.b_tok, .c_chan = s.b_chan,
        .D = f + s.o_D, .y = y, .y_ld = s.y_ld, .hsave = hsave, .state = state,
    };
    assert_int_equal(pf_backend_cpu.ssm_scan_forward(&sc), 0);
    double ey = 0, sy = 0, eh = 0, sh = 0;
    for (long r = 0; r < rows; r++)
        for (int e = 0; e < E; e++) {
            ey = fmax(ey, fabs(y[r * s.y_ld + e] - y_ref[r * E + e]));
            sy = fmax(sy, fabs(y_ref[r * E + e]));
        }
    for (size_t i = 0; i < s.n_h0; i++) {
        eh = fmax(eh, fabs(state[i] - h_ref[i]));
        sh = fmax(sh, fabs(h_ref[i]));
    }
    printf("#   scan %-11s forward vs double recurrence: y max rel %.2e, final h max rel %.2e\n",
           selective ? "selective" : "invariant", ey / sy, eh / sh);
    assert_true(ey / sy < 1e-5);
    assert_true(eh / sh < 1e-5);

    /* backward: against central differences of the double recurrence (the initial state is a
     * constant to the kernel: not checked) */
    float *dy = calloc((size_t)rows * s.dy_ld, sizeof(float)), *grad = calloc(s.total, sizeof(float));
    for (long r = 0; r < rows; r++)
        for (int e = 0; e < E; e++) dy[r * s.dy_ld + e] = (float)Rw[r * E + e];
    for (long i = 0; i < rows * E; i++) Rw[i] = dy[(i / E) * s.dy_ld + i % E];
    pf_ssm_scan_grad g = {
        .dy = dy, .dy_ld = s.dy_ld, .dx = grad + s.o_x, .ddt = grad + s.o_dt,
        .dA_log = grad + s.o_A, .dB = grad + s.o_bc + s.b_off, .dC = grad + s.o_bc + s.c_off,
        .dD = grad + s.o_D,
    };
    assert_int_equal(pf_backend_cpu.ssm_scan_backward(&sc, &g), 0);
    if (selective) {
        /* the bias gradient is the row sum of ddt (the caller's job): do it here */
        for (long r = 0; r < rows; r++)
            for (int e = 0; e < E; e++) grad[s.o_bias + e] += grad[s.o_dt + r * s.dt_tok + e];
    }
    static const char *names[] = {"x", "dt", "dt_bias", "A_log", "B|C", "D"};
    size_t offs[] = {s.o_x, s.o_dt, s.o_bias, s.o_A, s.o_bc, s.o_D, s.o_h0};
    for (int k = 0; k < 6; k++) {
        if (k == 2 && !selective) continue;
        double dd = 0, na = 0, nn = 0;
        for (size_t i = offs[k]; i < offs[k + 1]; i++) {
            double keep = th[i], eps = 1e-6;
            th[i] = keep + eps;
            double lp = ref_scan_loss(&s, th, Rw, NULL, NULL);
            th[i] = keep - eps;
            double lm = ref_scan_loss(&s, th, Rw, NULL, NULL);
            th[i] = keep;
            double num = (lp - lm) / (2 * eps), ana = grad[i];
            dd += (ana - num) * (ana - num);
            na += ana * ana;
            nn += num * num;
        }
        double err = sqrt(dd) / fmax(sqrt(fmax(na, nn)), 1e-30);
        printf("#   scan %-11s backward d%-8s |g| %.3e  rel err %.2e\n", selective ? "selective" : "invariant",
               names[k], sqrt(na), err);
        assert_true(err < 1e-4);
    }
    free(th), free(Rw), free(f), free(y_ref), free(h_ref), free(y), free(state), free(hsave);
    free(dy), free(grad);
}

static void test_scan_selective(void **state) { (void)state; check_scan(1); }
static void test_scan_invariant(void **state) { (void)state; check_scan(0); }

/* ==== conv kernel ============================================================================ */

static void test_conv(void **st)
{
    (void)st;
    const int B = 2, T = 11, E = 3, K = 4, ldx = 5;
    float x[2 * 11 * 5], w[3 * 4], bias[3], out[2 * 11 * 3], piece[2 * 11 * 3], state[2 * 3 * 3] = {0};
    check_fill_normal(x, sizeof x / sizeof x[0], 1.0, 1);
    check_fill_normal(w, 12, 1.0, 2);
    check_fill_normal(bias, 3, 1.0, 3);
    pf_backend_cpu.conv1d_causal_forward(out, x, ldx, w, bias, NULL, B, T, E, K);
    double err = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int e = 0; e < E; e++) {
                double s = bias[e];
                for (int j = 0; j < K; j++) /* out[t] = bias + sum_j w[K-1-j] x[t-j] */
                    if (t - j >= 0) s += (double)w[e * K + K - 1 - j] * x[(b * T + t - j) * ldx + e];
                err = fmax(err, fabs(s - out[(b * T + t) * E + e]));
            }
    printf("#   conv1d forward vs direct sum: max abs diff %.2e\n", err);
    assert_true(err < 1e-5);
    /* the same sequences fed in pieces of 1, 2 and 8 tokens, carrying the state, one sequence at a time */
    for (int b = 0; b < B; b++) {
        memset(state, 0, sizeof state);
        int lens[] = {1, 2, 8};
        for (int i = 0, t = 0; i < 3; t += lens[i], i++)
            pf_backend_cpu.conv1d_causal_forward(piece + (b * T + t) * E, x + (b * T + t) * ldx, ldx, w, bias,
                                                 state, 1, lens[i], E, K);
    }
    double perr = check_max_rel_diff(out, piece, sizeof out / sizeof out[0]);
    printf("#   conv1d in pieces with state vs whole: max rel diff %.2e\n", perr);
    assert_true(perr < 1e-6);
}

/* ==== the layer ============================================================================== */

static void test_gradients(void **st)
{
    (void)st;
    /* T = 40 crosses the scan's chunk (32): backward recomputes from a saved state. Δ in [0.1, 1] and
     * eps 3e-2: at the default init (Δ 0.001..0.1) the gradients of dt_proj.weight and A_log are
     * ~1e-4, below what float32 finite differences resolve (the PyTorch test checks them there). */
    pf_layer *l = check_layer_new(&pf_layer_mamba, "state=4 expand=2 conv=4 dt_min=0.1 dt_max=1", 16, 7);
    double err = check_gradients(l, 2, 40, 24, 3e-2, 11);
    assert_true(err < 1e-2);
    check_layer_free(l);
}

static void test_gradients_rank(void **st)
{
    (void)st;
    pf_layer *l = check_layer_new(&pf_layer_mamba, "state=3 expand=1 conv=2 dt_rank=3 dt_min=0.01 dt_max=0.5", 16, 9);
    double err = check_gradients(l, 3, 9, 24, 3e-2, 13);
    assert_true(err < 1e-2);
    check_layer_free(l);
}

static void test_step_matches_forward(void **st)
{
    (void)st;
    pf_layer *l = check_layer_new(&pf_layer_mamba, "", 16, 3);
    assert_true(check_step_matches_forward(l, 128, 5) <= 1e-4);
    check_layer_free(l);
}

static void test_probes(void **st)
{
    (void)st;
    const int C = 16, E = 32, N = 8;
    pf_layer *l = check_layer_new(&pf_layer_mamba, "state=8", C, 3);
    pf_tensor *t = NULL;
    l->kind->reset(l);
    assert_int_equal(pf_layer_probe(l, "dt", &t), -1);          /* nothing stepped yet */
    float x[16], y[16];
    for (int s = 0; s < 5; s++) {
        check_fill_normal(x, C, 1.0, 100 + s);
        assert_int_equal(l->kind->step(l, y, x), 0);
    }
    assert_int_equal(pf_layer_probe(l, "state", &t), 0);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], E);
    assert_int_equal(t->shape[1], N);
    double hn = 0;
    for (int i = 0; i < E * N; i++) hn += fabs(t->data[i]);
    assert_true(hn > 0);
    pf_tensor_free(t);
    pf_tensor *dt, *decay;
    assert_int_equal(pf_layer_probe(l, "dt", &dt), 0);
    assert_int_equal(dt->ndim, 1);
    assert_int_equal(dt->shape[0], E);
    assert_int_equal(pf_layer_probe(l, "decay", &decay), 0);
    assert_int_equal(decay->ndim, 2);
    assert_int_equal(decay->shape[0], E);
    assert_int_equal(decay->shape[1], N);
    double lo = 1, hi = 0;
    for (int e = 0; e < E; e++) {
        assert_true(dt->data[e] > 0);
        for (int n = 0; n < N; n++) {
            float d = decay->data[e * N + n];
            lo = fmin(lo, d), hi = fmax(hi, d);
            assert_true(d > 0 && d < 1);
            /* A_log is log(1..N) at init: decay = exp(-Δ (n + 1)), so it falls along n */
            assert_true(fabs(d - exp(-dt->data[e] * (n + 1))) < 1e-5);
        }
    }
    printf("#   mamba probes: state [%d, %d], dt [%d], decay [%d, %d] in [%.4f, %.4f]\n", E, N, E, E, N, lo, hi);
    pf_tensor_free(dt);
    pf_tensor_free(decay);
    assert_int_equal(pf_layer_probe(l, "gates", &t), -1);
    assert_non_null(strstr(pf_error_message(), "state, dt, decay"));
    l->kind->reset(l);
    assert_int_equal(pf_layer_probe(l, "decay", &t), -1);
    check_layer_free(l);
}

static void test_bad_options(void **st)
{
    (void)st;
    pf_config cfg;
    pf_config_init(&cfg, pf_layer_mamba.options, pf_layer_mamba.n_options);
    assert_int_equal(pf_config_set_number(&cfg, "mamba", "state", 0), -1);
    assert_non_null(strstr(pf_error_message(), "'state' must be"));
    assert_int_equal(pf_config_set_string(&cfg, "mamba", "dt_rank", "full"), -1);
    assert_int_equal(pf_config_set_string(&cfg, "mamba", "dt_rank", "auto"), 0);
    assert_int_equal(pf_config_set_number(&cfg, "mamba", "dt_min", 0.5), 0);
    assert_null(pf_layer_create(&pf_layer_mamba, &cfg, 16, &pf_backend_cpu, 1));
    assert_non_null(strstr(pf_error_message(), "dt_min"));
}

/* ==== against PyTorch ======================================================================== */

typedef struct ref_record {
    char name[64];
    int ndim, shape[4];
    size_t numel;
    float *data;
} ref_record;

static int load_ref(const char *path, ref_record *recs, int max)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char magic[4];
    int32_t n = 0;
    if (fread(magic, 1, 4, f) != 4 || memcmp(magic, "PFRF", 4) || fread(&n, 4, 1, f) != 1 || n > max) {
        fclose(f);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        ref_record *r = &recs[i];
        int32_t len, nd, shape[4];
        if (fread(&len, 4, 1, f) != 1 || len <= 0 || len >= 64 || fread(r->name, 1, (size_t)len, f) != (size_t)len ||
            fread(&nd, 4, 1, f) != 1 || nd < 1 || nd > 4 || fread(shape, 4, (size_t)nd, f) != (size_t)nd) {
            fclose(f);
            return -1;
        }
        r->name[len] = '\0';
        r->ndim = nd;
        r->numel = 1;
        for (int d = 0; d < nd; d++) r->numel *= (size_t)(r->shape[d] = shape[d]);
        r->data = malloc(r->numel * sizeof(float));
        if (fread(r->data, sizeof(float), r->numel, f) != r->numel) {
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    return n;
}

static const ref_record *find_ref(const ref_record *recs, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(recs[i].name, name)) return &recs[i];
    fail_msg("tests/ref/mamba_ref.bin has no record '%s'", name);
    return NULL;
}

static void test_torch_reference(void **st)
{
    (void)st;
    ref_record recs[64];
    int n = load_ref("tests/ref/mamba_ref.bin", recs, 64);
    if (n < 0) fail_msg("cannot read tests/ref/mamba_ref.bin (run from the repository root)");
    const float *cfg = find_ref(recs, n, "config")->data;
    int C = (int)cfg[0], E = (int)cfg[1], N = (int)cfg[2], K = (int)cfg[3], R = (int)cfg[4];
    int B = (int)cfg[5], T = (int)cfg[6];
    char spec[128];
    snprintf(spec, sizeof spec, "state=%d expand=%d conv=%d dt_rank=%d", N, E / C, K, R);
    pf_layer *l = check_layer_new(&pf_layer_mamba, spec, C, 1);
    /* every parameter of the layer is in the reference under the same name and shape */
    for (int i = 0; i < l->n_params; i++) {
        const pf_layer_param *p = &l->params[i];
        const ref_record *r = find_ref(recs, n, p->name);
        assert_int_equal(r->ndim, p->ndim);
        for (int d = 0; d < p->ndim; d++) assert_int_equal(r->shape[d], p->shape[d]);
        memcpy(*p->value, r->data, p->numel * sizeof(float));
        memset(*p->grad, 0, p->numel * sizeof(float));
    }
    size_t nx = (size_t)B * T * C;
    float *out = malloc(nx * sizeof(float)), *din = malloc(nx * sizeof(float));
    assert_int_equal(l->kind->forward(l, out, find_ref(recs, n, "input")->data, B, T), 0);
    double err = check_max_rel_diff(find_ref(recs, n, "output")->data, out, nx);
    printf("#   mamba vs PyTorch (C=%d T=%d N=%d): output max rel diff %.2e\n", C, T, N, err);
    assert_true(err <= 1e-4);
    assert_int_equal(l->kind->backward(l, din, find_ref(recs, n, "dout")->data, find_ref(recs, n, "input")->data, B, T), 0);
    double worst = check_max_rel_diff(find_ref(recs, n, "grad.input")->data, din, nx);
    printf("#   mamba vs PyTorch: grad %-16s max rel diff %.2e\n", "input", worst);
    for (int i = 0; i < l->n_params; i++) {
        const pf_layer_param *p = &l->params[i];
        char name[80];
        snprintf(name, sizeof name, "grad.%s", p->name);
        double e = check_max_rel_diff(find_ref(recs, n, name)->data, *p->grad, p->numel);
        printf("#   mamba vs PyTorch: grad %-16s max rel diff %.2e\n", p->name, e);
        worst = fmax(worst, e);
    }
    assert_true(worst <= 1e-4);
    free(out);
    free(din);
    for (int i = 0; i < n; i++) free(recs[i].data);
    check_layer_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_selective),
        cmocka_unit_test(test_scan_invariant),
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_gradients_rank),
        cmocka_unit_test(test_step_matches_forward),
        cmocka_unit_test(test_probes),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_torch_reference),
    };
    return cmocka_run_group_tests_name("mamba", tests, NULL, NULL);
}
