/* s4d layer: finite-difference gradients, step equals forward, probes (Δ and decay fixed per channel:
 * no selectivity), and the time-invariant scan against its convolution form computed in double. */
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

extern const pf_layer_kind pf_layer_s4d;

static void test_gradients(void **st)
{
    (void)st;
    /* T = 37 crosses the scan's chunk (32). Δ in [0.1, 1] as in the mamba test, so that log_dt and
     * A_log have gradients float32 finite differences resolve. */
    pf_layer *l = check_layer_new(&pf_layer_s4d, "state=4 expand=2 conv=3 dt_min=0.1 dt_max=1", 16, 5);
    double err = check_gradients(l, 2, 37, 24, 3e-2, 17);
    assert_true(err < 1e-2);
    check_layer_free(l);
}

static void test_gradients_default(void **st)
{
    (void)st;
    pf_layer *l = check_layer_new(&pf_layer_s4d, "state=8 expand=1", 16, 6);
    double err = check_gradients(l, 2, 12, 24, 3e-2, 19);
    assert_true(err < 1e-2);
    check_layer_free(l);
}

static void test_step_matches_forward(void **st)
{
    (void)st;
    pf_layer *l = check_layer_new(&pf_layer_s4d, "", 16, 3);
    assert_true(check_step_matches_forward(l, 128, 5) <= 1e-4);
    check_layer_free(l);
}

static void test_probes(void **st)
{
    (void)st;
    const int C = 16, E = 32, N = 16;
    pf_layer *l = check_layer_new(&pf_layer_s4d, "", C, 3);
    pf_tensor *t = NULL, *dt1 = NULL, *dt2 = NULL, *decay = NULL;
    l->kind->reset(l);
    assert_int_equal(pf_layer_probe(l, "decay", &t), -1);
    float x[16], y[16];
    check_fill_normal(x, C, 1.0, 1);
    assert_int_equal(l->kind->step(l, y, x), 0);
    assert_int_equal(pf_layer_probe(l, "dt", &dt1), 0);
    check_fill_normal(x, C, 3.0, 2);
    assert_int_equal(l->kind->step(l, y, x), 0);
    assert_int_equal(pf_layer_probe(l, "dt", &dt2), 0);
    assert_int_equal(dt1->ndim, 1);
    assert_int_equal(dt1->shape[0], E);
    /* time-invariant: Δ does not depend on the token */
    assert_memory_equal(dt1->data, dt2->data, E * sizeof(float));
    assert_int_equal(pf_layer_probe(l, "state", &t), 0);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], E);
    assert_int_equal(t->shape[1], N);
    assert_int_equal(pf_layer_probe(l, "decay", &decay), 0);
    assert_int_equal(decay->ndim, 2);
    assert_int_equal(decay->shape[0], E);
    assert_int_equal(decay->shape[1], N);
    for (int e = 0; e < E; e++) {
        /* S4D-Real init: dt log-uniform in [0.001, 0.1]; A = -(n + 1) */
        assert_true(dt1->data[e] >= 0.00099f && dt1->data[e] <= 0.1001f);
        for (int n = 0; n < N; n++) {
            float d = decay->data[e * N + n];
            assert_true(d > 0 && d < 1);
            assert_true(fabs(d - exp(-dt1->data[e] * (n + 1))) < 1e-5);
        }
    }
    printf("#   s4d probes: state [%d, %d], dt [%d] (the same at every step), decay [%d, %d] in (0, 1)\n",
           E, N, E, E, N);
    pf_tensor_free(t);
    pf_tensor_free(dt1);
    pf_tensor_free(dt2);
    pf_tensor_free(decay);
    check_layer_free(l);
}

/* The time-invariant scan is a causal convolution: y_t = D x_t + sum_j K_j x_{t-j} with
 * K_j = sum_n C_n Δ B_n exp(Δ A_n)^j (the S4 convolution kernel), computed here in double. */
static void test_scan_convolution_form(void **st)
{
    (void)st;
    const int B = 2, T = 50, E = 4, N = 5;
    float x[2 * 50 * 4], log_dt[4], A_log[4 * 5], Bm[4 * 5], Cm[4 * 5], D[4], y[2 * 50 * 4];
    check_fill_normal(x, sizeof x / sizeof x[0], 1.0, 1);
    check_fill_normal(log_dt, E, 0.5, 2);
    check_fill_normal(A_log, E * N, 0.5, 3);
    check_fill_normal(Bm, E * N, 1.0, 4);
    check_fill_normal(Cm, E * N, 1.0, 5);
    check_fill_normal(D, E, 1.0, 6);
    for (int e = 0; e < E; e++) log_dt[e] -= 2.0f;
    float hsave[2 * 2 * 4 * 5];
    pf_ssm_scan sc = {
        .B = B, .T = T, .E = E, .N = N, .chunk = 32, .x = x, .dt = log_dt, .dt_tok = 0,
        .A_log = A_log, .Bm = Bm, .b_chan = N, .Cm = Cm, .c_chan = N, .D = D, .y = y, .y_ld = E,
        .hsave = hsave,
    };
    assert_int_equal(pf_backend_cpu.ssm_scan_forward(&sc), 0);
    double err = 0, scale = 0;
    for (int e = 0; e < E; e++) {
        double K[50], delta = exp((double)log_dt[e]);
        for (int j = 0; j < T; j++) {
            K[j] = 0;
            for (int n = 0; n < N; n++) {
                double a = exp(-delta * exp((double)A_log[e * N + n]));
                K[j] += (double)Cm[e * N + n] * delta * Bm[e * N + n] * pow(a, j);
            }
        }
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                double s = (double)D[e] * x[(b * T + t) * E + e];
                for (int j = 0; j <= t; j++) s += K[j] * x[(b * T + t - j) * E + e];
                err = fmax(err, fabs(s - y[(b * T + t) * E + e]));
                scale = fmax(scale, fabs(s));
            }
    }
    printf("#   s4d scan vs convolution form: max rel diff %.2e\n", err / scale);
    assert_true(err / scale < 1e-5);
}

static void test_bad_options(void **st)
{
    (void)st;
    pf_config cfg;
    pf_config_init(&cfg, pf_layer_s4d.options, pf_layer_s4d.n_options);
    assert_int_equal(pf_config_set_number(&cfg, "s4d", "dt_rank", 4), -1);      /* mamba only */
    assert_non_null(strstr(pf_error_message(), "unknown option 'dt_rank'"));
    assert_int_equal(pf_config_set_number(&cfg, "s4d", "conv", 0), -1);
    assert_int_equal(pf_config_set_number(&cfg, "s4d", "dt_max", 0.0001), 0);
    assert_null(pf_layer_create(&pf_layer_s4d, &cfg, 16, &pf_backend_cpu, 1));
    assert_non_null(strstr(pf_error_message(), "dt_min"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_gradients_default),
        cmocka_unit_test(test_step_matches_forward),
        cmocka_unit_test(test_probes),
        cmocka_unit_test(test_scan_convolution_form),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests_name("s4d", tests, NULL, NULL);
}
