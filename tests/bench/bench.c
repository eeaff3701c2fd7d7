/* Benchmark: training tokens/s and stepping us/token of one fixed configuration, printed as one
 * JSON line per figure so that run_bench.sh can set them beside the PyTorch peer's.
 *
 *   bench [--device cpu|cuda] [--layers attention,mlp,attention,mlp] [--vocab 256] [--dim 128]
 *         [--seq 256] [--batch 16] [--steps 10] [--gen 256]
 *
 * Training: random tokens, full mask, AdamW; the first two steps are warm-up and not timed.
 * Stepping: reset, then `gen` tokens one at a time, timed whole (us per token). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/model.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int fail(const char *what)
{
    fprintf(stderr, "bench: %s: %s\n", what, pf_error_message());
    return 1;
}

int main(int argc, char **argv)
{
    const char *device = "cpu", *layers = "attention,mlp,attention,mlp";
    int vocab = 256, dim = 128, seq = 256, batch = 16, steps = 10, gen = 256;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--device")) device = v;
        else if (!strcmp(k, "--layers")) layers = v;
        else if (!strcmp(k, "--vocab")) vocab = atoi(v);
        else if (!strcmp(k, "--dim")) dim = atoi(v);
        else if (!strcmp(k, "--seq")) seq = atoi(v);
        else if (!strcmp(k, "--batch")) batch = atoi(v);
        else if (!strcmp(k, "--steps")) steps = atoi(v);
        else if (!strcmp(k, "--gen")) gen = atoi(v);
        else {
            fprintf(stderr, "bench: unknown option %s\n", k);
            return 64;
        }
    }
    const pf_backend *be = pf_device(device);
    if (!be) return fail("device");
    pf_model_config cfg = {.vocab = vocab, .dim = dim, .seed = 1, .norm = PF_NORM_RMS, .be = be};
    pf_model *m = pf_model_new(&cfg);
    if (!m) return fail("model");
    char list[256];
    snprintf(list, sizeof list, "%s", layers);
    for (char *save = NULL, *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        const pf_layer_kind *kind = pf_layer_kind_find(name);
        if (!kind) {
            fprintf(stderr, "bench: no layer kind %s\n", name);
            return 64;
        }
        if (pf_model_add_layer(m, kind, NULL, -1) < 0) return fail(name);
    }
    if (pf_model_build(m) < 0) return fail("build");

    size_t n = (size_t)batch * seq;
    int32_t *in = malloc(n * sizeof *in), *tg = malloc(n * sizeof *tg);
    pf_rng r;
    pf_rng_seed(&r, 7);
    for (size_t i = 0; i < n; i++) {
        in[i] = (int32_t)pf_rng_below(&r, (uint32_t)vocab);
        tg[i] = (int32_t)pf_rng_below(&r, (uint32_t)vocab);
    }
    pf_train_config tc;
    pf_train_config_default(&tc);
    tc.lr = 1e-3f;
    pf_train_stats st;
    double t0 = 0;
    for (int s = 0; s < steps + 2; s++) {
        if (s == 2) t0 = now();
        if (pf_model_train_step(m, in, tg, NULL, batch, seq, &tc, &st) < 0) return fail("train");
    }
    double train_s = now() - t0;

    pf_model_reset(m);
    pf_tensor *lt;
    for (int i = 0; i < 8; i++) { /* warm-up */
        if (pf_model_step(m, (int)in[i], &lt) < 0) return fail("step");
        pf_tensor_free(lt);
    }
    pf_model_reset(m);
    double t1 = now();
    for (int i = 0; i < gen; i++) {
        if (pf_model_step(m, (int)in[i % n], &lt) < 0) return fail("step");
        pf_tensor_free(lt);
    }
    double step_s = now() - t1;

    printf("{\"impl\":\"postformer\",\"device\":\"%s\",\"layers\":\"%s\",\"vocab\":%d,\"dim\":%d,"
           "\"seq\":%d,\"batch\":%d,\"params\":%zu,\"train_tokens_per_s\":%.1f,\"step_us_per_token\":%.2f,"
           "\"final_loss\":%.4f}\n",
           device, layers, vocab, dim, seq, batch, pf_model_n_params(m), (double)steps * n / train_s,
           step_s / gen * 1e6, st.loss);
    free(in);
    free(tg);
    pf_model_free(m);
    return 0;
}
