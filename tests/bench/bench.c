/* Benchmark: training tokens/s and stepping us/token of one configuration, printed as one JSON line
 * so that run_bench.sh can set them beside the PyTorch peer's (tests/bench/peer_torch.py).
 *
 *   bench [--device cpu|cuda] [--layers LIST] [--vocab 256] [--dim 128] [--seq 256] [--batch 16]
 *         [--steps 10] [--warmup 2] [--gen 256] [--layer-reps 0]
 *
 * LIST: blocks separated by commas, each a layer kind with optional options in braces, e.g.
 * "moe{experts=8,top_k=2},mlp{hidden=688},retention{form=parallel}". A value that reads as a
 * number is set as one (pf_config_set_number), any other as a word (choices, "auto").
 *
 * Training: random tokens, full mask, AdamW; `warmup` steps first, not timed, then `steps` timed.
 * Stepping: reset, then `gen` tokens one at a time, timed whole (us per token).
 * --layer-reps R > 0: also the first block's layer alone, forward + backward over one batch of
 * random (batch, seq, dim) inputs, R times after one warm-up (us per token; no norm, residual,
 * embedding, head or optimiser). */
#include <stdio.h>
#include <stdint.h>
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

/* Add the blocks of LIST (see the top) to m. 0, or 64 (bad usage) / 1 (engine error) after a message. */
static int add_layers(pf_model *m, const char *layers)
{
    const char *p = layers;
    while (*p) {
        char name[64], opts[256] = "";
        size_t n = strcspn(p, ",{");
        if (n == 0 || n >= sizeof name) {
            fprintf(stderr, "bench: bad layer list at '%s'\n", p);
            return 64;
        }
        memcpy(name, p, n);
        name[n] = 0;
        p += n;
        if (*p == '{') {
            const char *end = strchr(p, '}');
            if (!end || (size_t)(end - p - 1) >= sizeof opts) {
                fprintf(stderr, "bench: unclosed or long options after %s\n", name);
                return 64;
            }
            memcpy(opts, p + 1, (size_t)(end - p - 1));
            opts[end - p - 1] = 0;
            p = end + 1;
        }
        if (*p == ',') p++;
        const pf_layer_kind *kind = pf_layer_kind_find(name);
        if (!kind) {
            fprintf(stderr, "bench: no layer kind %s\n", name);
            return 64;
        }
        pf_config cfg;
        pf_config_init(&cfg, kind->options, kind->n_options);
        for (char *save = NULL, *kv = strtok_r(opts, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
            char *eq = strchr(kv, '=');
            if (!eq) {
                fprintf(stderr, "bench: option '%s' of %s has no '='\n", kv, name);
                return 64;
            }
            *eq = 0;
            char *rest;
            double v = strtod(eq + 1, &rest);
            int rc = rest != eq + 1 && *rest == 0 ? pf_config_set_number(&cfg, name, kv, v)
                                                  : pf_config_set_string(&cfg, name, kv, eq + 1);
            if (rc < 0) return fail("options");
        }
        if (pf_model_add_layer(m, kind, &cfg, -1) < 0) return fail(name);
    }
    return 0;
}

/* The first block's layer alone: forward + backward over (B, T, C) random inputs, `reps` times
 * after one warm-up; seconds per repetition, or -1 after a message. */
static double time_layer(pf_model *m, int B, int T, int reps)
{
    pf_layer *l = pf_model_layer(m, 0);
    const pf_backend *be = l->be;
    size_t n = (size_t)B * T * l->dim;
    float *host = malloc(n * sizeof *host);
    float *in = be->alloc(n * sizeof(float)), *out = be->alloc(n * sizeof(float));
    float *din = be->alloc(n * sizeof(float)), *dout = be->alloc(n * sizeof(float));
    double t0 = 0, dt = -1;
    if (!host || !in || !out || !din || !dout) {
        fail("layer timing");
        goto done;
    }
    pf_rng r;
    pf_rng_seed(&r, 11);
    for (size_t i = 0; i < n; i++) host[i] = (float)(2 * pf_rng_uniform(&r) - 1);
    be->upload(in, host, n * sizeof(float));
    for (size_t i = 0; i < n; i++) host[i] = (float)(2 * pf_rng_uniform(&r) - 1) * 1e-3f;
    be->upload(dout, host, n * sizeof(float));
    l->train = 1;
    for (int i = 0; i < reps + 1; i++) {
        if (i == 1) t0 = now();
        if (l->kind->forward(l, out, in, B, T) < 0 || l->kind->backward(l, din, dout, in, B, T) < 0) {
            fail("layer timing");
            goto done;
        }
    }
    be->download(host, din, sizeof(float)); /* waits for a device backend */
    dt = (now() - t0) / reps;
done:
    l->train = 0;
    free(host);
    float *bufs[] = {in, out, din, dout};
    for (int i = 0; i < 4; i++)
        if (bufs[i]) be->free(bufs[i]);
    return dt;
}

int main(int argc, char **argv)
{
    const char *device = "cpu", *layers = "attention,mlp,attention,mlp";
    int vocab = 256, dim = 128, seq = 256, batch = 16, steps = 10, gen = 256, layer_reps = 0, warmup = 2;
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
        else if (!strcmp(k, "--layer-reps")) layer_reps = atoi(v);
        else if (!strcmp(k, "--warmup")) warmup = atoi(v);
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
    int rc = add_layers(m, layers);
    if (rc) return rc;
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
    if (steps < 1 || warmup < 0) {
        fprintf(stderr, "bench: --steps must be at least 1 and --warmup at least 0\n");
        return 64;
    }
    for (int s = 0; s < steps + warmup; s++) {
        if (s == warmup) t0 = now();
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
    double layer_s = 0;
    if (layer_reps > 0 && (layer_s = time_layer(m, batch, seq, layer_reps)) < 0) return 1;

    printf("{\"impl\":\"postformer\",\"device\":\"%s\",\"layers\":\"%s\",\"vocab\":%d,\"dim\":%d,"
           "\"seq\":%d,\"batch\":%d,\"params\":%zu,\"train_tokens_per_s\":%.1f,\"step_us_per_token\":%.2f,"
           "\"layer_us_per_token\":%.3f,\"final_loss\":%.4f}\n",
           device, layers, vocab, dim, seq, batch, pf_model_n_params(m), (double)steps * n / train_s,
           step_s / gen * 1e6, layer_s / n * 1e6, st.loss);
    free(in);
    free(tg);
    pf_model_free(m);
    return 0;
}
