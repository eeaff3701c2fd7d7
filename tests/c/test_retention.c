/* retention layer: gradients by finite differences for each training form, step equals forward
 * for each form, the three forms agree on outputs and gradients, probes, option validation. */
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

extern const pf_layer_kind pf_layer_retention;

static const char *const FORMS[3] = {"parallel", "chunkwise", "recurrent"};

/* ---- gradients -------------------------------------------------------------------------------- */

/* C = 16, heads = 2, T = 10 with chunk = 4: the last chunk is partial. */
static void gradients(const char *form)
{
    char spec[128];
    snprintf(spec, sizeof spec, "heads=2 chunk=4 form=%s", form);
    pf_layer *l = check_layer_new(&pf_layer_retention, spec, 16, 7);
    double err = check_gradients(l, 2, 10, 24, 1e-2, 11);
    printf("# retention form=%s: worst gradient rel err %.2e\n", form, err);
    assert_true(err < 1e-2);
    check_layer_free(l);
}

static void test_gradients_parallel(void **state) { (void)state; gradients("parallel"); }
static void test_gradients_chunkwise(void **state) { (void)state; gradients("chunkwise"); }
static void test_gradients_recurrent(void **state) { (void)state; gradients("recurrent"); }

/* ---- step equals forward --------------------------------------------------------------------- */

static void test_step_matches_forward(void **state)
{
    (void)state;
    for (int f = 0; f < 3; f++) {
        char spec[128];
        snprintf(spec, sizeof spec, "heads=4 chunk=16 form=%s", FORMS[f]);
        pf_layer *l = check_layer_new(&pf_layer_retention, spec, 32, 3);
        double err = check_step_matches_forward(l, 128, 5);
        printf("# retention form=%s: step vs forward over 128 tokens %.2e\n", FORMS[f], err);
        assert_true(err <= 1e-4);
        check_layer_free(l);
    }
}

/* ---- the three forms agree ------------------------------------------------------------------- */

/* The flat gradient buffer of a checked layer: the view of its first parameter (offset 0). */
static float *grads_of(pf_layer *l) { return *l->params[0].grad; }

static double rel_diff_report(const char *what, const float *ref, const float *x, size_t n)
{
    double e = check_max_rel_diff(ref, x, n);
    printf("#   %-24s max rel diff %.2e\n", what, e);
    return e;
}

/* Layers of the three forms from one seed; forward and backward on the same x and dout (B = 2,
 * T = 37 with chunk = 8: a partial last chunk); outputs, input gradients and every parameter's
 * gradient compared with the parallel form's, relative to its largest entry. */
static void test_forms_agree(void **state)
{
    (void)state;
    const int B = 2, T = 37, C = 16;
    size_t n = (size_t)B * T * C;
    float *x = malloc(n * sizeof(float)), *dout = malloc(n * sizeof(float));
    check_fill_normal(x, n, 1.0, 21);
    check_fill_normal(dout, n, 1.0, 22);
    pf_layer *l[3];
    float *out[3], *din[3];
    for (int f = 0; f < 3; f++) {
        char spec[128];
        snprintf(spec, sizeof spec, "heads=2 chunk=8 form=%s", FORMS[f]);
        l[f] = check_layer_new(&pf_layer_retention, spec, C, 5);
        out[f] = malloc(n * sizeof(float));
        din[f] = malloc(n * sizeof(float));
        memset(grads_of(l[f]), 0, l[f]->numel * sizeof(float));
        assert_int_equal(l[f]->kind->forward(l[f], out[f], x, B, T), 0);
        assert_int_equal(l[f]->kind->backward(l[f], din[f], dout, x, B, T), 0);
    }
    assert_int_equal(l[0]->numel, l[1]->numel);
    assert_int_equal(l[0]->numel, l[2]->numel);
    /* the same seed gave the same parameters */
    assert_memory_equal(*l[0]->params[0].value, *l[1]->params[0].value, l[0]->numel * sizeof(float));
    assert_memory_equal(*l[0]->params[0].value, *l[2]->params[0].value, l[0]->numel * sizeof(float));
    for (int f = 1; f < 3; f++) {
        char what[64];
        printf("# retention %s vs parallel:\n", FORMS[f]);
        snprintf(what, sizeof what, "output");
        assert_true(rel_diff_report(what, out[0], out[f], n) <= 1e-5);
        assert_true(rel_diff_report("input grad", din[0], din[f], n) <= 1e-5);
        for (int p = 0; p < l[0]->n_params; p++) {
            const pf_layer_param *pp = &l[0]->params[p];
            double e = rel_diff_report(pp->name, grads_of(l[0]) + pp->offset,
                                       grads_of(l[f]) + pp->offset, pp->numel);
            assert_true(e <= 1e-5);
        }
    }
    for (int f = 0; f < 3; f++) {
        check_layer_free(l[f]);
        free(out[f]);
        free(din[f]);
    }
    free(x);
    free(dout);
}

/* ---- PyTorch reference ------------------------------------------------------------------------ */

#define REF_PATH "tests/ref/retention_ref.txt"

/* Reads the next tensor of the fixture, which must be called `name`; returns its values (n). */
static float *ref_next(FILE *f, const char *name, size_t n)
{
    char got[64];
    size_t count = 0;
    assert_int_equal(fscanf(f, "%63s %zu", got, &count), 2);
    if (strcmp(got, name) != 0 || count != n) fail_msg("fixture: expected %s (%zu), got %s (%zu)", name, n, got, count);
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) assert_int_equal(fscanf(f, "%f", &v[i]), 1);
    return v;
}

/* Outputs and gradients of each form against tests/ref/retention_ref.py (PyTorch, float64, the
 * paper's parallel form written out): the rotation, decay, group norm and gate, and the parameter
 * layout, checked against an implementation that shares no code with this one. */
static void test_pytorch_reference(void **state)
{
    (void)state;
    FILE *f = fopen(REF_PATH, "r");
    if (!f) fail_msg("cannot open %s (run the tests from the repository root)", REF_PATH);
    int dims[5];
    char word[16];
    size_t nd;
    assert_int_equal(fscanf(f, "%15s %zu", word, &nd), 2);
    for (int i = 0; i < 5; i++) assert_int_equal(fscanf(f, "%d", &dims[i]), 1);
    int B = dims[0], T = dims[1], C = dims[2], H = dims[3], VF = dims[4];
    size_t n = (size_t)B * T * C;
    char spec[128];
    snprintf(spec, sizeof spec, "heads=%d value_factor=%d", H, VF);
    pf_layer *probe_layer = check_layer_new(&pf_layer_retention, spec, C, 1);
    int np = probe_layer->n_params;
    assert_true(np <= 32);
    float *pv[32];
    for (int p = 0; p < np; p++)
        pv[p] = ref_next(f, probe_layer->params[p].name, probe_layer->params[p].numel);
    float *x = ref_next(f, "x", n), *dout = ref_next(f, "dout", n);
    float *out_ref = ref_next(f, "out", n), *din_ref = ref_next(f, "din", n);
    float *g_ref[32];
    for (int p = 0; p < np; p++) {
        char name[64];
        snprintf(name, sizeof name, "grad.%s", probe_layer->params[p].name);
        g_ref[p] = ref_next(f, name, probe_layer->params[p].numel);
    }
    fclose(f);
    check_layer_free(probe_layer);

    float *out = malloc(n * sizeof(float)), *din = malloc(n * sizeof(float));
    for (int fm = 0; fm < 3; fm++) {
        /* chunk 5 over 12 tokens: two full chunks and a partial one */
        snprintf(spec, sizeof spec, "heads=%d value_factor=%d chunk=5 form=%s", H, VF, FORMS[fm]);
        pf_layer *l = check_layer_new(&pf_layer_retention, spec, C, 1);
        for (int p = 0; p < np; p++)
            memcpy(*l->params[p].value, pv[p], l->params[p].numel * sizeof(float));
        memset(grads_of(l), 0, l->numel * sizeof(float));
        assert_int_equal(l->kind->forward(l, out, x, B, T), 0);
        assert_int_equal(l->kind->backward(l, din, dout, x, B, T), 0);
        printf("# retention form=%s vs PyTorch:\n", FORMS[fm]);
        assert_true(rel_diff_report("output", out_ref, out, n) <= 1e-5);
        assert_true(rel_diff_report("input grad", din_ref, din, n) <= 1e-5);
        for (int p = 0; p < np; p++)
            assert_true(rel_diff_report(l->params[p].name, g_ref[p], *l->params[p].grad,
                                        l->params[p].numel) <= 1e-5);
        check_layer_free(l);
    }
    for (int p = 0; p < np; p++) {
        free(pv[p]);
        free(g_ref[p]);
    }
    free(x);
    free(dout);
    free(out_ref);
    free(din_ref);
    free(out);
    free(din);
}

/* ---- probes ----------------------------------------------------------------------------------- */

static void test_probes(void **state)
{
    (void)state;
    const int C = 24, H = 3, T = 20;
    pf_layer *l = check_layer_new(&pf_layer_retention, "heads=3", C, 9);
    pf_tensor *g = NULL, *s = NULL, *sn = NULL;
    assert_int_equal(pf_layer_probe(l, "gamma", &g), 0);
    assert_int_equal(g->ndim, 1);
    assert_int_equal(g->shape[0], H);
    for (int h = 0; h < H; h++) assert_float_equal(g->data[h], 1.0 - ldexp(1.0, -5 - h), 1e-7);
    pf_tensor_free(g);

    float *x = malloc((size_t)T * C * sizeof(float)), *y = malloc((size_t)C * sizeof(float));
    check_fill_normal(x, (size_t)T * C, 1.0, 4);
    l->kind->reset(l);
    for (int t = 0; t < T; t++) assert_int_equal(l->kind->step(l, y, x + (size_t)t * C), 0);
    assert_int_equal(pf_layer_probe(l, "state", &s), 0);
    assert_int_equal(pf_layer_probe(l, "state_norm", &sn), 0);
    int dk = C / H, dv = 2 * C / H;
    assert_int_equal(s->ndim, 3);
    assert_int_equal(s->shape[0], H);
    assert_int_equal(s->shape[1], dk);
    assert_int_equal(s->shape[2], dv);
    assert_int_equal(sn->ndim, 1);
    assert_int_equal(sn->shape[0], H);
    for (int h = 0; h < H; h++) {
        double ss = 0;
        for (int e = 0; e < dk * dv; e++) ss += (double)s->data[h * dk * dv + e] * s->data[h * dk * dv + e];
        printf("# head %d: state_norm %.6g, norm of state %.6g\n", h, sn->data[h], sqrt(ss));
        assert_true(sqrt(ss) > 0);
        assert_true(fabs(sn->data[h] - sqrt(ss)) <= 1e-6 * sqrt(ss));
    }
    pf_tensor_free(s);
    pf_tensor_free(sn);
    /* reset clears the state */
    l->kind->reset(l);
    assert_int_equal(pf_layer_probe(l, "state_norm", &sn), 0);
    for (int h = 0; h < H; h++) assert_true(sn->data[h] == 0.0f);
    pf_tensor_free(sn);
    assert_int_equal(pf_layer_probe(l, "weights", &sn), -1);
    assert_non_null(strstr(pf_error_message(), "gamma, state, state_norm"));
    free(x);
    free(y);
    check_layer_free(l);
}

/* ---- options ---------------------------------------------------------------------------------- */

static void test_bad_options(void **state)
{
    (void)state;
    pf_config cfg;
    pf_config_init(&cfg, pf_layer_retention.options, pf_layer_retention.n_options);
    assert_int_equal(pf_config_set_string(&cfg, "retention", "form", "fft"), -1);
    assert_non_null(strstr(pf_error_message(), "parallel|chunkwise|recurrent"));
    assert_int_equal(pf_config_set_number(&cfg, "retention", "chunk", 0), -1);
    assert_non_null(strstr(pf_error_message(), "'chunk' must be"));
    /* heads must divide dim, and dim/heads must be even */
    assert_int_equal(pf_config_set_number(&cfg, "retention", "heads", 3), 0);
    assert_null(pf_layer_create(&pf_layer_retention, &cfg, 16, &pf_backend_cpu, 1));
    assert_non_null(strstr(pf_error_message(), "heads (3) must divide dim (16)"));
    assert_int_equal(pf_config_set_number(&cfg, "retention", "heads", 2), 0);
    assert_null(pf_layer_create(&pf_layer_retention, &cfg, 6, &pf_backend_cpu, 1));
    assert_non_null(strstr(pf_error_message(), "must be even"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients_parallel),
        cmocka_unit_test(test_gradients_chunkwise),
        cmocka_unit_test(test_gradients_recurrent),
        cmocka_unit_test(test_step_matches_forward),
        cmocka_unit_test(test_forms_agree),
        cmocka_unit_test(test_pytorch_reference),
        cmocka_unit_test(test_probes),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests_name("retention", tests, NULL, NULL);
}
