/* Every layer kind lists the kernels it calls (pf_layer_kind.kernels), and pf_layer_create refuses a
 * backend that lacks one with a clear error instead of a later call through NULL (issue 6: the cuda
 * backend gains its kernels family by family).
 *
 * The lists are checked against the code: each kind runs forward, backward, step, reset and its
 * probes on a backend that holds ONLY the kernels its list names (the cpu's, the rest NULL); a
 * kernel missing from the list is a call through NULL here, which crashes the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "engine/model.h"
#include "tests/c/layer_check.h"

/* the cpu backend with only the kernels of `kind`'s list (and the lifetime ones the model and the
 * checks use from outside the layer) */
static pf_backend trimmed(const pf_layer_kind *kind)
{
    pf_backend be;
    memset(&be, 0, sizeof be);
    be.name = "trimmed";
    be.init = pf_backend_cpu.init;
    be.sync = pf_backend_cpu.sync;
    for (const pf_kernel_need *k = kind->kernels; k && k->name; k++)
        memcpy((char *)&be + k->offset, (const char *)&pf_backend_cpu + k->offset, sizeof(void (*)(void)));
    return be;
}

static void test_missing_kernel_is_an_error(void **state)
{
    (void)state;
    const pf_layer_kind *mamba = pf_layer_kind_find("mamba");
    assert_non_null(mamba);
    pf_backend be = pf_backend_cpu;
    be.name = "cuda";
    be.ssm_scan_forward = NULL;
    pf_config cfg = check_config(mamba, "");
    pf_error_clear();
    assert_null(pf_layer_create(mamba, &cfg, 16, &be, 1));
    assert_string_equal(pf_error_message(),
                        "mamba: the cuda backend has no kernel 'ssm_scan_forward' yet (this layer kind cannot run there)");
    /* through the model: the layer's number and kind in front */
    pf_model_config mc = {.vocab = 11, .dim = 16, .seed = 1, .norm = PF_NORM_RMS, .norm_eps = 1e-5f, .be = &be};
    pf_model *m = pf_model_new(&mc);
    assert_non_null(m);
    assert_int_equal(pf_model_add_layer(m, pf_layer_kind_find("mlp"), NULL, -1), 0);
    assert_int_equal(pf_model_add_layer(m, mamba, &cfg, -1), -1);
    assert_non_null(strstr(pf_error_message(), "layer 2 (mamba): mamba: the cuda backend has no kernel 'ssm_scan_forward'"));
    pf_model_free(m);
}

static void test_every_kind_has_a_list(void **state)
{
    (void)state;
    for (int i = 0; pf_layer_kinds[i]; i++) {
        if (!pf_layer_kinds[i]->kernels) fail_msg("layer kind %s lists no kernels", pf_layer_kinds[i]->name);
        assert_int_equal(pf_layer_kind_check_backend(pf_layer_kinds[i], &pf_backend_cpu), 0);
    }
}

/* forward, backward, step, reset and every probe of kind (with options spec) on the trimmed backend */
static void run_trimmed(const char *kind_name, const char *spec)
{
    const pf_layer_kind *kind = pf_layer_kind_find(kind_name);
    assert_non_null(kind);
    pf_backend be = trimmed(kind);
    pf_config cfg = check_config(kind, spec);
    enum { B = 2, T = 37, C = 16 };
    pf_layer *l = pf_layer_create(kind, &cfg, C, &be, 5);
    if (!l) fail_msg("%s %s: %s", kind_name, spec, pf_error_message());
    float *params = calloc(l->numel, sizeof(float)), *grads = calloc(l->numel, sizeof(float));
    pf_rng rng;
    pf_rng_seed(&rng, 3);
    pf_layer_init_params(l, params, &rng);
    pf_layer_bind(l, params, grads);
    float *in = malloc(B * T * C * sizeof(float)), *out = malloc(B * T * C * sizeof(float));
    float *dout = malloc(B * T * C * sizeof(float)), *din = malloc(B * T * C * sizeof(float));
    check_fill_normal(in, B * T * C, 1.0, 7);
    check_fill_normal(dout, B * T * C, 1.0, 8);
    l->train = 1;
    assert_int_equal(l->kind->forward(l, out, in, B, T), 0);
    assert_int_equal(l->kind->backward(l, din, dout, in, B, T), 0);
    if (l->kind->train_step_end) l->kind->train_step_end(l, 1);
    l->train = 0;
    l->kind->reset(l);
    for (int t = 0; t < 3; t++) assert_int_equal(l->kind->step(l, out, in + t * C), 0);
    for (int i = 0; i < kind->n_probes; i++) {
        pf_tensor *p = NULL;
        if (pf_layer_probe(l, kind->probes[i].name, &p) == 0) pf_tensor_free(p);
    }
    pf_layer_info info;
    l->kind->describe(l, &info);
    pf_layer_destroy(l);
    free(params), free(grads), free(in), free(out), free(dout), free(din);
}

static void test_lists_cover_the_code(void **state)
{
    (void)state;
    static const char *const runs[][2] = {
        {"mlp", "act=swiglu"}, {"mlp", "act=gelu"},
        {"attention", "kv_heads=2 window=9 tile=8"}, {"attention", "rope=false"},
        {"mamba", ""}, {"mamba", "inner_norm=true dt_rank=3"}, {"s4d", ""}, {"mamba2", "head_dim=8 chunk=16"},
        {"retention", "form=chunkwise chunk=16"}, {"retention", "form=recurrent"}, {"retention", "form=parallel"},
        {"linear_attention", ""}, {"gla", ""},
        {"moe", "experts=4 top_k=2 jitter=0.1 capacity=1.5 shared=1"}, {"moe", "router=switch act=gelu"},
        {"moe", "router=expert_choice experts=4"}, {"moe", "experts=4 top_k=2 renorm=false"},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) run_trimmed(runs[i][0], runs[i][1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_kernel_is_an_error),
        cmocka_unit_test(test_every_kind_has_a_list),
        cmocka_unit_test(test_lists_cover_the_code),
    };
    return cmocka_run_group_tests_name("kernel_needs", tests, NULL, NULL);
}
