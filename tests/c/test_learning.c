/* Learning, asserted on numbers after a fixed number of steps (never on time): two attention
 * layers of width 64 learn multi-query associative recall (seq 64, 8 pairs) to accuracy >= 0.99
 * (the run is tests/c/learn_mqar.c, shared with the GPU parity test). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>

#include "engine/error.h"
#include "tests/c/learn_mqar.h"

static void test_two_attention_layers_learn_mqar(void **state)
{
    (void)state;
    double loss = 0, acc = learn_mqar(&pf_backend_cpu, &loss);
    if (acc < 0) fail_msg("%s", pf_error_message());
    printf("#   mqar (seq 64, 8 pairs), 2 attention layers, dim 64: accuracy %.4f on %d fresh sequences after %d "
           "steps (last loss %.4f)\n", acc, LEARN_MQAR_EVAL, LEARN_MQAR_STEPS, loss);
    assert_true(acc >= 0.99);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_attention_layers_learn_mqar),
    };
    return cmocka_run_group_tests_name("learning", tests, NULL, NULL);
}
