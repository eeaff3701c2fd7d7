/* mlp layer: gradients by finite differences, step equals forward, option validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "engine/error.h"
#include "tests/c/layer_check.h"

extern const pf_layer_kind pf_layer_mlp;

static void gradients(const char *spec)
{
    pf_layer *l = check_layer_new(&pf_layer_mlp, spec, 16, 7);
    double err = check_gradients(l, 2, 5, 24, 1e-2, 11);
    assert_true(err < 1e-2);
    check_layer_free(l);
}

static void test_gradients_swiglu(void **state) { (void)state; gradients("act=swiglu hidden=24"); }
static void test_gradients_gelu(void **state) { (void)state; gradients("act=gelu"); }

static void test_step_matches_forward(void **state)
{
    (void)state;
    pf_layer *l = check_layer_new(&pf_layer_mlp, "", 32, 3);
    assert_true(check_step_matches_forward(l, 64, 5) <= 1e-4);
    check_layer_free(l);
}

static void test_bad_options(void **state)
{
    (void)state;
    pf_config cfg;
    pf_config_init(&cfg, pf_layer_mlp.options, pf_layer_mlp.n_options);
    assert_int_equal(pf_config_set_number(&cfg, "mlp", "hiden", 8), -1);
    assert_non_null(strstr(pf_error_message(), "unknown option 'hiden'"));
    assert_int_equal(pf_config_set_number(&cfg, "mlp", "hidden", -3), -1);
    assert_non_null(strstr(pf_error_message(), "'hidden' must be"));
    assert_int_equal(pf_config_set_string(&cfg, "mlp", "act", "tanh"), -1);
    assert_non_null(strstr(pf_error_message(), "gelu|swiglu"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients_swiglu),
        cmocka_unit_test(test_gradients_gelu),
        cmocka_unit_test(test_step_matches_forward),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests_name("mlp", tests, NULL, NULL);
}
