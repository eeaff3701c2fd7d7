/* The MQAR learning run shared by test_learning.c and the GPU parity test; see learn_mqar.h. */
#include "tests/c/learn_mqar.h"

#include "engine/model.h"
#include "engine/rng.h"
#include "engine/tasks.h"

double learn_mqar(const pf_backend *be, double *loss)
{
    enum { V = 64, T = 64, PAIRS = 8, B = 32 };
    static int32_t in[B * T], tg[B * T];
    static float mask[B * T];
    pf_model_config cfg = {.vocab = V, .dim = 64, .seed = 1, .be = be};
    pf_model *m = pf_model_new(&cfg);
    pf_task *task = pf_task_mqar(V, T, PAIRS);
    const pf_layer_kind *attention = pf_layer_kind_find("attention");
    double acc = -1;
    if (!m || !task || pf_model_add_layer(m, attention, NULL, -1) < 0 ||
        pf_model_add_layer(m, attention, NULL, -1) < 0 || pf_model_build(m) < 0)
        goto done;
    pf_rng rng;
    pf_rng_seed(&rng, 1);
    pf_train_config tc;
    pf_train_config_default(&tc);
    tc.lr = 3e-3f, tc.total_steps = LEARN_MQAR_STEPS, tc.warmup = LEARN_MQAR_STEPS / 10;
    pf_train_stats st = {0};
    for (int s = 0; s < LEARN_MQAR_STEPS; s++)
        if (pf_task_batch(task, &rng, B, in, tg, mask) < 0 || pf_model_train_step(m, in, tg, mask, B, T, &tc, &st) < 0)
            goto done;
    *loss = st.loss;
    /* fresh sequences: the task's stream goes on past everything trained on */
    double sum = 0;
    for (int e = 0; e < LEARN_MQAR_EVAL / B; e++) {
        double l, a;
        if (pf_task_batch(task, &rng, B, in, tg, mask) < 0 || pf_model_evaluate(m, in, tg, mask, B, T, &l, &a) < 0)
            goto done;
        sum += a;
    }
    acc = sum / (LEARN_MQAR_EVAL / B);
done:
    pf_task_free(task);
    pf_model_free(m);
    return acc;
}
