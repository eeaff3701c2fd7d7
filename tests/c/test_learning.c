/* Learning, asserted on numbers after a fixed number of steps (never on time): two attention
 * layers of width 64 learn multi-query associative recall (seq 64, 8 pairs) to accuracy >= 0.99. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>

#include "engine/error.h"
#include "engine/model.h"
#include "engine/tasks.h"

enum { V = 64, T = 64, PAIRS = 8, B = 32, STEPS = 2000, EVAL_BATCHES = 16 };

static void test_two_attention_layers_learn_mqar(void **state)
{
    (void)state;
    pf_model_config cfg = {.vocab = V, .dim = 64, .seed = 1, .be = &pf_backend_cpu};
    pf_model *m = pf_model_new(&cfg);
    assert_non_null(m);
    const pf_layer_kind *attention = pf_layer_kind_find("attention");
    assert_true(pf_model_add_layer(m, attention, NULL, -1) >= 0);
    assert_true(pf_model_add_layer(m, attention, NULL, -1) >= 0);
    assert_int_equal(pf_model_build(m), 0);
    pf_task *task = pf_task_mqar(V, T, PAIRS);
    pf_rng rng;
    pf_rng_seed(&rng, 1);
    static int32_t in[B * T], tg[B * T];
    static float mask[B * T];
    pf_train_config tc;
    pf_train_config_default(&tc);
    tc.lr = 3e-3f;
    tc.total_steps = STEPS;
    tc.warmup = STEPS / 10;
    pf_train_stats st = {0};
    for (int s = 0; s < STEPS; s++) {
        assert_int_equal(pf_task_batch(task, &rng, B, in, tg, mask), 0);
        if (pf_model_train_step(m, in, tg, mask, B, T, &tc, &st) < 0) fail_msg("%s", pf_error_message());
        if ((s + 1) % 250 == 0) printf("#   step %d loss %.4f acc %.3f\n", s + 1, st.loss, st.accuracy);
    }
    /* fresh sequences: the task's stream goes on past everything trained on */
    double acc_sum = 0;
    for (int e = 0; e < EVAL_BATCHES; e++) {
        double loss, acc;
        assert_int_equal(pf_task_batch(task, &rng, B, in, tg, mask), 0);
        assert_int_equal(pf_model_evaluate(m, in, tg, mask, B, T, &loss, &acc), 0);
        acc_sum += acc;
    }
    double acc = acc_sum / EVAL_BATCHES;
    printf("#   mqar (seq %d, %d pairs), 2 attention layers, dim 64: accuracy %.4f on %d fresh sequences after %d steps\n",
           T, PAIRS, acc, EVAL_BATCHES * B, STEPS);
    assert_true(acc >= 0.99);
    pf_task_free(task);
    pf_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_attention_layers_learn_mqar),
    };
    return cmocka_run_group_tests_name("learning", tests, NULL, NULL);
}
