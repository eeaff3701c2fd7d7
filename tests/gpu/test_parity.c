/* GPU parity: every kernel of the cuda backend against the cpu backend (and, for attention, against
 * a plain double-precision reference written here), then a small model's logits and one training
 * step's gradients on both devices.
 *
 * Inputs are fresh random numbers (never zeros); outputs that a kernel overwrites are poisoned with
 * NaN on the GPU first, so an element left unwritten fails. Error: ||out - ref|| / ||ref|| in double,
 * at most 1e-4 (float32, TF32 off); NaN fails. Sizes are deliberately not multiples of any tile.
 * One line per check, then "N passed, N failed". Where no GPU answers: "skipped: no GPU", exit 0.
 *
 * Usage: test_parity [--bench|--no-bench [SEED]]   (--bench adds a timing of the attention forward) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/layer.h"
#include "engine/layers/mamba.h" /* SSM_CHUNK: the scan bench runs the layer's chunk */
#include "engine/model.h"
#include "engine/rng.h"
#include "kernels/kernels.h"
#include "tests/c/learn_mqar.h"

#define TOL 1e-4

static const pf_backend *G;                    /* cuda */
static const pf_backend *const C = &pf_backend_cpu;
static int n_pass, n_fail;
static pf_rng rng;

/* ---- buffers ----------------------------------------------------------------------------------- */

enum { MAX_DEV = 512 };
static void *dev_list[MAX_DEV];
static int n_dev;

static void *dev_track(void *p)
{
    if (!p) {
        fprintf(stderr, "cuda alloc failed: %s\n", pf_error_message());
        exit(2);
    }
    if (n_dev < MAX_DEV) dev_list[n_dev++] = p;
    return p;
}

static void dev_free_all(void)
{
    for (int i = 0; i < n_dev; i++) G->free(dev_list[i]);
    n_dev = 0;
}

static float *hrand(size_t n, double scale)
{
    float *h = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = (float)(pf_rng_normal(&rng) * scale);
    return h;
}

static float *hcopy(const float *a, size_t n)
{
    float *h = malloc((n ? n : 1) * sizeof(float));
    memcpy(h, a, n * sizeof(float));
    return h;
}

static void *dev_of(const void *h, size_t bytes)
{
    void *d = dev_track(G->alloc(bytes));
    G->upload(d, h, bytes);
    return d;
}
#define DEVF(h, n) ((float *)dev_of((h), (size_t)(n) * sizeof(float)))

static float *dev_poison(size_t n)
{
    float *d = dev_track(G->alloc(n * sizeof(float)));
    G->fill(d, NAN, n);
    return d;
}

static float *fetch(const float *d, size_t n)
{
    float *h = malloc((n ? n : 1) * sizeof(float));
    G->download(h, d, n * sizeof(float));
    return h;
}

/* ||out - ref|| / ||ref||; NaN or inf anywhere gives NaN */
static double rel(const float *out, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(out[i]) || !isfinite(ref[i])) return NAN;
        double d = (double)out[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* error of the GPU buffer d against the host reference */
static double rel_dev(const float *d, const float *ref, size_t n)
{
    float *h = fetch(d, n);
    double e = rel(h, ref, n);
    free(h);
    return e;
}

static void report(const char *name, const char *detail, double err)
{
    int ok = isfinite(err) && err <= TOL;
    if (G->sync() < 0) {
        ok = 0;
        printf("%-22s %-34s FAIL (device: %s)\n", name, detail, pf_error_message());
    } else {
        printf("%-22s %-34s rel err %.2e  %s\n", name, detail, err, ok ? "ok" : "FAIL");
    }
    ok ? n_pass++ : n_fail++;
    fflush(stdout);
}

static void report_exact(const char *name, const char *detail, int same)
{
    printf("%-22s %-34s %s\n", name, detail, same ? "identical  ok" : "DIFFERENT  FAIL");
    same ? n_pass++ : n_fail++;
}

/* ---- memory ------------------------------------------------------------------------------------ */

static void test_memory(void)
{
    size_t n = 100003;
    float *h = hrand(n, 1.0);
    float *d = dev_track(G->alloc(n * sizeof(float)));
    float *z = fetch(d, n);
    int zeroed = 1;
    for (size_t i = 0; i < n; i++) zeroed &= z[i] == 0.0f;
    G->upload(d, h, n * sizeof(float));
    float *d2 = dev_poison(n);
    G->copy(d2, d, n * sizeof(float));
    double e = rel_dev(d2, h, n);
    G->zero(d2 + 7, 1000 * sizeof(float));
    float *back = fetch(d2, n);
    int zero_ok = 1;
    for (size_t i = 0; i < n; i++) zero_ok &= (i >= 7 && i < 1007) ? back[i] == 0.0f : back[i] == h[i];
    report_exact("memory", "alloc zeroed", zeroed);
    report("memory", "upload/copy/download", e);
    report_exact("memory", "zero (a sub-range)", zero_ok);
    /* out of memory: NULL with a message that names the size and suggests a smaller batch, and the
     * device stays usable */
    void *huge = G->alloc((size_t)1 << 46);
    int oom_ok = huge == NULL && strstr(pf_error_message(), "out of GPU memory") &&
                 strstr(pf_error_message(), "smaller batch");
    printf("%-22s %-34s \"%.60s...\"\n", "memory", "64 TiB request", pf_error_message());
    if (huge) G->free(huge);
    float *after = dev_track(G->alloc(1024));
    oom_ok &= after != NULL && G->sync() == 0;
    report_exact("memory", "out of memory: clean error, usable", oom_ok);
    free(h), free(z), free(back);
    dev_free_all();
}

/* ---- gemm -------------------------------------------------------------------------------------- */

static void gemm_case(int ta, int tb, int m, int n, int k, int batch)
{
    int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
    long sa = (long)(ta ? k : m) * lda + 5, sb = (long)(tb ? n : k) * ldb + 2, sc = (long)m * ldc + 1;
    float alpha = 0.7f, beta = 0.3f;
    float *a = hrand(sa * batch, 1), *b = hrand(sb * batch, 1), *c = hrand(sc * batch, 1);
    float *da = DEVF(a, sa * batch), *db = DEVF(b, sb * batch), *dc = DEVF(c, sc * batch);
    char detail[64];
    if (batch == 1) {
        C->gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        G->gemm(ta, tb, m, n, k, alpha, da, lda, db, ldb, beta, dc, ldc);
        snprintf(detail, sizeof detail, "ta=%d tb=%d %dx%dx%d", ta, tb, m, n, k);
        report("gemm", detail, rel_dev(dc, c, sc));
    } else {
        C->gemm_batched(ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, batch);
        G->gemm_batched(ta, tb, m, n, k, alpha, da, lda, sa, db, ldb, sb, beta, dc, ldc, sc, batch);
        snprintf(detail, sizeof detail, "ta=%d tb=%d %dx%dx%d x%d", ta, tb, m, n, k, batch);
        report("gemm_batched", detail, rel_dev(dc, c, sc * batch));
    }
    free(a), free(b), free(c);
    dev_free_all();
}

static void test_gemm(void)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) gemm_case(ta, tb, 37, 53, 129, 1);
    gemm_case(0, 0, 17, 9, 0, 1); /* k = 0: C = beta C */
    gemm_case(0, 1, 301, 257, 67, 1);
    for (int ta = 0; ta < 2; ta++) gemm_case(ta, 1 - ta, 33, 29, 41, 5);
}

/* ---- elementwise -------------------------------------------------------------------------------- */

static void test_elementwise(void)
{
    size_t n = 100003;
    float *a = hrand(n, 1), *b = hrand(n, 1), *ref = hrand(n, 1);
    float *da = DEVF(a, n), *db = DEVF(b, n), *dout = dev_poison(n);

    C->add(ref, a, b, n);
    G->add(dout, da, db, n);
    report("add", "n=100003", rel_dev(dout, ref, n));
    C->mul(ref, a, b, n);
    G->mul(dout, da, db, n);
    report("mul", "n=100003", rel_dev(dout, ref, n));

    float *y = hcopy(a, n), *dy = DEVF(a, n);
    C->axpy(y, b, -1.3f, n);
    G->axpy(dy, db, -1.3f, n);
    report("axpy", "n=100003", rel_dev(dy, y, n));
    C->scale(y, 0.37f, n);
    G->scale(dy, 0.37f, n);
    report("scale", "n=100003", rel_dev(dy, y, n));
    C->fill(y, 2.5f, n);
    G->fill(dy, 2.5f, n);
    report("fill", "n=100003", rel_dev(dy, y, n));

    const char *names[] = {"gelu", "silu", "relu", "softplus", "elu1"};
    float *x = hrand(n, 3), *dx = DEVF(x, n);
    for (int act = 0; act < 5; act++) {
        char detail[64];
        C->act_forward((pf_act)act, ref, x, n);
        G->act_forward((pf_act)act, dout, dx, n);
        snprintf(detail, sizeof detail, "%s forward", names[act]);
        report("act_forward", detail, rel_dev(dout, ref, n));
        for (int acc = 0; acc < 2; acc++) {
            float *din = hcopy(b, n), *ddin = acc ? DEVF(b, n) : dev_poison(n);
            C->act_backward((pf_act)act, din, a, x, n, acc);
            G->act_backward((pf_act)act, ddin, da, dx, n, acc);
            snprintf(detail, sizeof detail, "%s backward%s", names[act], acc ? " (accumulate)" : "");
            report("act_backward", detail, rel_dev(ddin, din, n));
            free(din);
        }
    }

    int rows = 301, cols = 77;
    float *o = hrand((size_t)rows * cols, 1), *bias = hrand(cols, 1);
    float *dO = DEVF(o, rows * cols), *dbias = DEVF(bias, cols);
    C->bias_add(o, bias, rows, cols);
    G->bias_add(dO, dbias, rows, cols);
    report("bias_add", "301x77", rel_dev(dO, o, (size_t)rows * cols));
    C->bias_grad(bias, o, rows, cols);
    G->bias_grad(dbias, dO, rows, cols);
    report("bias_grad", "301x77 (accumulate)", rel_dev(dbias, bias, cols));

    double s1 = C->sumsq(x, n), s2 = G->sumsq(dx, n);
    report("sumsq", "n=100003", fabs(s1 - s2) / s1);

    int F = 45;
    float *gu = hrand((size_t)rows * 2 * F, 2), *dgu = DEVF(gu, rows * 2 * F);
    float *sw = hrand((size_t)rows * F, 1), *dsw = dev_poison((size_t)rows * F);
    C->swiglu_forward(sw, gu, rows, F);
    G->swiglu_forward(dsw, dgu, rows, F);
    report("swiglu_forward", "301 rows F=45", rel_dev(dsw, sw, (size_t)rows * F));
    float *g = hrand((size_t)rows * F, 1), *dg = DEVF(g, rows * F);
    float *dgate = hrand((size_t)rows * 2 * F, 1), *ddgate = dev_poison((size_t)rows * 2 * F);
    C->swiglu_backward(dgate, g, gu, rows, F);
    G->swiglu_backward(ddgate, dg, dgu, rows, F);
    report("swiglu_backward", "301 rows F=45", rel_dev(ddgate, dgate, (size_t)rows * 2 * F));

    free(a), free(b), free(ref), free(y), free(x), free(o), free(bias), free(gu), free(sw), free(g), free(dgate);
    dev_free_all();
}

/* ---- embedding, norms, loss, optimiser ---------------------------------------------------------- */

static void test_embedding(void)
{
    int V = 150, n = 3001, Cc = 70;
    int32_t *tok = malloc(n * sizeof(int32_t));
    for (int i = 0; i < n; i++) tok[i] = (int32_t)pf_rng_below(&rng, V); /* many repeats */
    float *table = hrand((size_t)V * Cc, 1), *out = hrand((size_t)n * Cc, 1);
    int32_t *dtok = dev_of(tok, n * sizeof(int32_t));
    float *dtable = DEVF(table, V * Cc), *dout = dev_poison((size_t)n * Cc);
    C->embedding_forward(out, tok, table, n, Cc);
    G->embedding_forward(dout, dtok, dtable, n, Cc);
    report("embedding_forward", "n=3001 C=70", rel_dev(dout, out, (size_t)n * Cc));
    float *grad = hrand((size_t)n * Cc, 1), *dgrad = DEVF(grad, n * Cc);
    C->embedding_backward(table, grad, tok, n, Cc);
    G->embedding_backward(dtable, dgrad, dtok, n, Cc);
    report("embedding_backward", "n=3001 V=150 C=70 (accumulate)", rel_dev(dtable, table, (size_t)V * Cc));
    free(tok), free(table), free(out), free(grad);
    dev_free_all();
}

static void test_norms(void)
{
    int rows = 133, Cc = 97;
    size_t n = (size_t)rows * Cc;
    float *in = hrand(n, 2), *w = hrand(Cc, 1), *b = hrand(Cc, 1), *dy = hrand(n, 1);
    for (size_t i = 0; i < n; i++) in[i] += 0.5f; /* a non-zero mean for LayerNorm */
    float *din_ = DEVF(in, n), *dw_ = DEVF(w, Cc), *db_ = DEVF(b, Cc), *ddy = DEVF(dy, n);
    float *out = malloc(n * sizeof(float)), *mean = malloc(rows * sizeof(float)), *rstd = malloc(rows * sizeof(float));
    float *dout = dev_poison(n), *dmean = dev_poison(rows), *drstd = dev_poison(rows);

    C->rmsnorm_forward(out, rstd, in, w, rows, Cc, 1e-5f);
    G->rmsnorm_forward(dout, drstd, din_, dw_, rows, Cc, 1e-5f);
    report("rmsnorm_forward", "133x97 out", rel_dev(dout, out, n));
    report("rmsnorm_forward", "133x97 rstd", rel_dev(drstd, rstd, rows));
    float *gw = hrand(Cc, 1), *dgw = DEVF(gw, Cc), *gin = malloc(n * sizeof(float)), *dgin = dev_poison(n);
    C->rmsnorm_backward(gin, gw, dy, in, w, rstd, rows, Cc);
    G->rmsnorm_backward(dgin, dgw, ddy, din_, dw_, drstd, rows, Cc);
    report("rmsnorm_backward", "133x97 din", rel_dev(dgin, gin, n));
    report("rmsnorm_backward", "133x97 dw (accumulate)", rel_dev(dgw, gw, Cc));

    C->layernorm_forward(out, mean, rstd, in, w, b, rows, Cc, 1e-5f);
    G->layernorm_forward(dout, dmean, drstd, din_, dw_, db_, rows, Cc, 1e-5f);
    report("layernorm_forward", "133x97 out", rel_dev(dout, out, n));
    report("layernorm_forward", "133x97 mean, rstd",
           fmax(rel_dev(dmean, mean, rows), rel_dev(drstd, rstd, rows)));
    float *gb = hrand(Cc, 1), *dgb = DEVF(gb, Cc);
    G->fill(dgin, NAN, n);
    C->layernorm_backward(gin, gw, gb, dy, in, w, mean, rstd, rows, Cc);
    G->layernorm_backward(dgin, dgw, dgb, ddy, din_, dw_, dmean, drstd, rows, Cc);
    report("layernorm_backward", "133x97 din", rel_dev(dgin, gin, n));
    report("layernorm_backward", "133x97 dw, db (accumulate)", fmax(rel_dev(dgw, gw, Cc), rel_dev(dgb, gb, Cc)));
    free(in), free(w), free(b), free(dy), free(out), free(mean), free(rstd), free(gw), free(gin), free(gb);
    dev_free_all();
}

static void test_loss(void)
{
    int n = 203, V = 301;
    size_t nv = (size_t)n * V;
    float *logits = hrand(nv, 3), *mask = malloc(n * sizeof(float));
    int32_t *tg = malloc(n * sizeof(int32_t));
    for (int i = 0; i < n; i++) {
        tg[i] = (int32_t)pf_rng_below(&rng, V);
        mask[i] = pf_rng_uniform(&rng) < 0.7 ? 1.0f : 0.0f;
        if (i % 5 == 0) logits[(size_t)i * V + tg[i]] += 8.0f; /* some rows predicted right */
    }
    float *loss = malloc(n * sizeof(float)), *corr = malloc(n * sizeof(float)), *dl = malloc(nv * sizeof(float));
    float *dlog = DEVF(logits, nv), *dmask = DEVF(mask, n), *dloss = dev_poison(n), *dcorr = dev_poison(n);
    float *ddl = dev_poison(nv);
    int32_t *dtg = dev_of(tg, n * sizeof(int32_t));
    C->cross_entropy(loss, corr, dl, logits, tg, mask, n, V, 0.01f);
    G->cross_entropy(dloss, dcorr, ddl, dlog, dtg, dmask, n, V, 0.01f);
    report("cross_entropy", "203x301 loss", rel_dev(dloss, loss, n));
    float *hc = fetch(dcorr, n);
    report_exact("cross_entropy", "203x301 correct", memcmp(hc, corr, n * sizeof(float)) == 0);
    report("cross_entropy", "203x301 dlogits", rel_dev(ddl, dl, nv));
    /* in place, as engine/model.c calls it: dlogits is the logits buffer */
    G->fill(dloss, NAN, n);
    G->cross_entropy(dloss, dcorr, dlog, dlog, dtg, dmask, n, V, 0.01f);
    report("cross_entropy", "in place (dlogits = logits)", fmax(rel_dev(dlog, dl, nv), rel_dev(dloss, loss, n)));
    /* no mask, no gradient */
    G->fill(dloss, NAN, n);
    float *dlog2 = DEVF(logits, nv);
    C->cross_entropy(loss, corr, NULL, logits, tg, NULL, n, V, 1.0f);
    G->cross_entropy(dloss, dcorr, NULL, dlog2, dtg, NULL, n, V, 1.0f);
    report("cross_entropy", "no mask, no dlogits", rel_dev(dloss, loss, n));
    free(logits), free(mask), free(tg), free(loss), free(corr), free(dl), free(hc);
    dev_free_all();
}

static void test_adamw(void)
{
    size_t n = 50021;
    float *p = hrand(n, 1), *g = hrand(n, 1), *m = hrand(n, 0.1), *v = hrand(n, 0.1);
    for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
    float *dp = DEVF(p, n), *dg = DEVF(g, n), *dm = DEVF(m, n), *dv = DEVF(v, n);
    for (int t = 1; t <= 3; t++) {
        C->adamw(p, g, m, v, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
        G->adamw(dp, dg, dm, dv, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, t);
    }
    report("adamw", "n=50021, 3 steps: p", rel_dev(dp, p, n));
    report("adamw", "n=50021, 3 steps: m, v", fmax(rel_dev(dm, m, n), rel_dev(dv, v, n)));
    free(p), free(g), free(m), free(v);
    dev_free_all();
}

/* ---- attention ---------------------------------------------------------------------------------- */

static void test_rope(void)
{
    int B = 2, T = 37, heads = 3, D = 24, stride = 5 * D + 4, rows = B * T;
    size_t n = (size_t)rows * stride;
    float *x = hrand(n, 1), *dx = DEVF(x, n), *ref = hcopy(x, n);
    for (int inv = 0; inv < 2; inv++) {
        if (C->rope) {
            C->rope(ref, rows, T, stride, heads, D, 1000, 10000.0f, inv);
        } else { /* reference: the documented rotation, in double */
            for (int r = 0; r < rows; r++)
                for (int h = 0; h < heads; h++)
                    for (int i = 0; i < D / 2; i++) {
                        double ang = (1000.0 + r % T) * pow(10000.0, -2.0 * i / D) * (inv ? -1 : 1);
                        float *v = ref + (size_t)r * stride + h * D;
                        double a = v[i], b = v[i + D / 2];
                        v[i] = (float)(a * cos(ang) - b * sin(ang));
                        v[i + D / 2] = (float)(a * sin(ang) + b * cos(ang));
                    }
        }
        G->rope(dx, rows, T, stride, heads, D, 1000, 10000.0f, inv);
        report("rope", inv ? "inverse, pos0=1000 (packed rows)" : "pos0=1000 (packed rows)", rel_dev(dx, ref, n));
    }
    float *back = fetch(dx, n);
    report("rope", "forward then inverse = identity", rel(back, x, n));
    free(x), free(ref), free(back);
    dev_free_all();
}

typedef struct attn_case {
    int B, T, Hq, Hkv, D, window, tile;
} attn_case;

static int seen(int i, int j, int window) { return j <= i && (window == 0 || i - j < window); }

/* The plain reference, in double: out (B, T, Hq, D), lse (B, Hq, T); with dout, the gradients. */
static void attn_reference(const attn_case *c, int stride, const float *q, const float *k, const float *v,
                           float *out, float *lse, const float *dout, float *dq, float *dk, float *dv)
{
    int T = c->T, D = c->D, Gq = c->Hq / c->Hkv;
    double scale = 1.0 / sqrt((double)D);
    double *p = malloc(T * sizeof(double)), *dp = malloc(T * sizeof(double));
    if (dq) {
        for (size_t i = 0; i < (size_t)c->B * T * stride; i++) dq[i] = dk[i] = dv[i] = 0.0f;
    }
    double *gk = dq ? calloc((size_t)c->B * T * stride, sizeof(double)) : NULL;
    double *gv = dq ? calloc((size_t)c->B * T * stride, sizeof(double)) : NULL;
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->Hq; h++)
            for (int i = 0; i < T; i++) {
                const float *qi = q + ((size_t)b * T + i) * stride + h * D;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < T; j++) {
                    if (!seen(i, j, c->window)) continue;
                    const float *kj = k + ((size_t)b * T + j) * stride + (h / Gq) * D;
                    double s = 0;
                    for (int d = 0; d < D; d++) s += (double)qi[d] * kj[d];
                    p[j] = s * scale;
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j < T; j++)
                    if (seen(i, j, c->window)) sum += exp(p[j] - mx);
                lse[((size_t)b * c->Hq + h) * T + i] = (float)(mx + log(sum));
                float *o = out + (((size_t)b * T + i) * c->Hq + h) * D;
                for (int d = 0; d < D; d++) {
                    double a = 0;
                    for (int j = 0; j < T; j++)
                        if (seen(i, j, c->window))
                            a += exp(p[j] - mx) / sum * v[((size_t)b * T + j) * stride + (h / Gq) * D + d];
                    o[d] = (float)a;
                }
                if (!dq) continue;
                const float *doi = dout + (((size_t)b * T + i) * c->Hq + h) * D;
                double Di = 0;
                for (int j = 0; j < T; j++) {
                    if (!seen(i, j, c->window)) continue;
                    p[j] = exp(p[j] - mx) / sum;
                    const float *vj = v + ((size_t)b * T + j) * stride + (h / Gq) * D;
                    dp[j] = 0;
                    for (int d = 0; d < D; d++) dp[j] += (double)doi[d] * vj[d];
                    Di += p[j] * dp[j];
                }
                for (int j = 0; j < T; j++) {
                    if (!seen(i, j, c->window)) continue;
                    double ds = p[j] * (dp[j] - Di) * scale;
                    size_t kr = ((size_t)b * T + j) * stride + (h / Gq) * D;
                    for (int d = 0; d < D; d++) {
                        dq[((size_t)b * T + i) * stride + h * D + d] += (float)(ds * k[kr + d]);
                        gk[kr + d] += ds * qi[d];
                        gv[kr + d] += p[j] * doi[d];
                    }
                }
            }
    if (dq)
        for (size_t i = 0; i < (size_t)c->B * T * stride; i++) {
            dk[i] = (float)gk[i];
            dv[i] = (float)gv[i];
        }
    free(p), free(dp), free(gk), free(gv);
}

static int tile_class_ref(int i0, int i1, int j0, int j1, int window)
{
    int any = 0, all = 1;
    for (int i = i0; i < i1; i++)
        for (int j = j0; j < j1; j++) {
            int s = seen(i, j, window);
            any |= s;
            all &= s;
        }
    return !any ? PF_TILE_SKIPPED : all ? PF_TILE_FULL : PF_TILE_PARTIAL;
}

/* Only the head slots of dq, dk, dv inside the packed buffer are compared: out's slots start at
 * column off of each row; the reference's at column 0 (it indexes dk, dv like k, v). */
static double rel_slots(const float *out, const float *ref, const attn_case *c, int stride, int off, int heads)
{
    size_t rows = (size_t)c->B * c->T, w = (size_t)heads * c->D, n = rows * w;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    for (size_t r = 0; r < rows; r++) {
        memcpy(a + r * w, out + r * stride + off, w * sizeof(float));
        memcpy(b + r * w, ref + r * stride, w * sizeof(float));
    }
    double e = rel(a, b, n);
    free(a), free(b);
    return e;
}

static void test_attention_case(const attn_case *c)
{
    int B = c->B, T = c->T, Hq = c->Hq, Hkv = c->Hkv, D = c->D;
    int stride = (Hq + 2 * Hkv) * D, nt = (T + c->tile - 1) / c->tile;
    size_t nqkv = (size_t)B * T * stride, no = (size_t)B * T * Hq * D, nl = (size_t)B * Hq * T;
    float *qkv = hrand(nqkv, 1.0), *dout = hrand(no, 1.0);
    const float *q = qkv, *k = qkv + Hq * D, *v = qkv + (Hq + Hkv) * D;
    float *out = malloc(no * sizeof(float)), *lse = malloc(nl * sizeof(float));
    float *rq = calloc(nqkv, sizeof(float)), *rk = calloc(nqkv, sizeof(float)), *rv = calloc(nqkv, sizeof(float));
    attn_reference(c, stride, q, k, v, out, lse, dout, rq, rk, rv);

    float *gqkv = DEVF(qkv, nqkv), *gdout = DEVF(dout, no);
    float *gout = dev_poison(no), *glse = dev_poison(nl);
    uint8_t *gmap = dev_track(G->alloc((size_t)nt * nt));
    long gcounts[3] = {0, 0, 0};
    char detail[96];
    snprintf(detail, sizeof detail, "B%d T%d Hq%d Hkv%d D%d w%d tile%d", B, T, Hq, Hkv, D, c->window, c->tile);
    int rc = G->attention_forward(gout, glse, gqkv, gqkv + Hq * D, gqkv + (Hq + Hkv) * D, stride, B, T, Hq, Hkv,
                                  D, c->window, c->tile, gmap, gcounts);
    if (rc < 0) {
        printf("%-22s %-34s FAIL (%s)\n", "attention_forward", detail, pf_error_message());
        n_fail++;
        goto done;
    }
    float *hout = fetch(gout, no), *hlse = fetch(glse, nl);
    report("attention_forward", detail, fmax(rel(hout, out, no), rel(hlse, lse, nl)));
    uint8_t *hmap = malloc((size_t)nt * nt);
    G->download(hmap, gmap, (size_t)nt * nt);
    /* tile map and counts: against the documented rule, and against the cpu kernel when it has one */
    long rcounts[3] = {0, 0, 0};
    int same = 1;
    for (int qt = 0; qt < nt; qt++)
        for (int kt = 0; kt < nt; kt++) {
            int i1 = qt * c->tile + c->tile < T ? qt * c->tile + c->tile : T;
            int j1 = kt * c->tile + c->tile < T ? kt * c->tile + c->tile : T;
            int cls = tile_class_ref(qt * c->tile, i1, kt * c->tile, j1, c->window);
            rcounts[cls] += (long)B * Hq;
            same &= hmap[qt * nt + kt] == cls;
        }
    same &= memcmp(rcounts, gcounts, sizeof rcounts) == 0;
    char tiles[96];
    snprintf(tiles, sizeof tiles, "tiles %ld/%ld/%ld vs rule", gcounts[0], gcounts[1], gcounts[2]);
    report_exact("attention_tiles", tiles, same);
    if (C->attention_forward) {
        float *cout = malloc(no * sizeof(float)), *clse = malloc(nl * sizeof(float));
        uint8_t *cmap = malloc((size_t)nt * nt);
        long ccounts[3] = {0, 0, 0};
        C->attention_forward(cout, clse, q, k, v, stride, B, T, Hq, Hkv, D, c->window, c->tile, cmap, ccounts);
        report("attention_forward", "  ... vs the cpu kernel", fmax(rel(hout, cout, no), rel(hlse, clse, nl)));
        report_exact("attention_tiles", "  ... map and counts vs the cpu kernel",
                     memcmp(cmap, hmap, (size_t)nt * nt) == 0 && memcmp(ccounts, gcounts, sizeof ccounts) == 0);
        free(cout), free(clse), free(cmap);
    }

    /* backward into one packed dqkv buffer, poisoned: every head slot must be written */
    float *gd = dev_poison(nqkv);
    rc = G->attention_backward(gd, gd + Hq * D, gd + (Hq + Hkv) * D, gdout, gout, glse, gqkv, gqkv + Hq * D,
                               gqkv + (Hq + Hkv) * D, stride, B, T, Hq, Hkv, D, c->window, c->tile);
    if (rc < 0) {
        printf("%-22s %-34s FAIL (%s)\n", "attention_backward", detail, pf_error_message());
        n_fail++;
    } else {
        float *hd = fetch(gd, nqkv);
        double e = fmax(rel_slots(hd, rq, c, stride, 0, Hq),
                        fmax(rel_slots(hd, rk, c, stride, Hq * D, Hkv), rel_slots(hd, rv, c, stride, (Hq + Hkv) * D, Hkv)));
        report("attention_backward", detail, e);
        if (C->attention_backward) {
            float *cd = malloc(nqkv * sizeof(float));
            C->attention_backward(cd, cd + Hq * D, cd + (Hq + Hkv) * D, dout, out, lse, q, k, v, stride, B, T, Hq,
                                  Hkv, D, c->window, c->tile);
            report("attention_backward", "  ... vs the cpu kernel", rel(hd, cd, nqkv));
            free(cd);
        }
        /* deterministic: a second run gives the same bits */
        float *gd2 = dev_poison(nqkv);
        G->attention_backward(gd2, gd2 + Hq * D, gd2 + (Hq + Hkv) * D, gdout, gout, glse, gqkv, gqkv + Hq * D,
                              gqkv + (Hq + Hkv) * D, stride, B, T, Hq, Hkv, D, c->window, c->tile);
        float *hd2 = fetch(gd2, nqkv);
        report_exact("attention_backward", "  ... run twice: same bits", memcmp(hd, hd2, nqkv * sizeof(float)) == 0);
        free(hd), free(hd2);
    }
    free(hout), free(hlse), free(hmap);
done:
    free(qkv), free(dout), free(out), free(lse), free(rq), free(rk), free(rv);
    dev_free_all();
}

static void test_attention_step(int len, int Hq, int Hkv, int D, int window)
{
    float *q = hrand((size_t)Hq * D, 1), *kc = hrand((size_t)len * Hkv * D, 1), *vc = hrand((size_t)len * Hkv * D, 1);
    float *out = malloc((size_t)Hq * D * sizeof(float)), *w = malloc((size_t)Hq * len * sizeof(float));
    int G_ = Hq / Hkv;
    for (int h = 0; h < Hq; h++) { /* reference in double */
        int lo = window > 0 && len > window ? len - window : 0;
        double mx = -INFINITY, sum = 0, *s = calloc(len, sizeof(double));
        for (int j = lo; j < len; j++) {
            for (int d = 0; d < D; d++) s[j] += (double)q[h * D + d] * kc[((size_t)j * Hkv + h / G_) * D + d];
            s[j] /= sqrt((double)D);
            if (s[j] > mx) mx = s[j];
        }
        for (int j = lo; j < len; j++) sum += exp(s[j] - mx);
        for (int j = 0; j < len; j++) w[(size_t)h * len + j] = j < lo ? 0.0f : (float)(exp(s[j] - mx) / sum);
        for (int d = 0; d < D; d++) {
            double a = 0;
            for (int j = lo; j < len; j++) a += (double)w[(size_t)h * len + j] * vc[((size_t)j * Hkv + h / G_) * D + d];
            out[h * D + d] = (float)a;
        }
        free(s);
    }
    float *gq = DEVF(q, Hq * D), *gk = DEVF(kc, len * Hkv * D), *gv = DEVF(vc, len * Hkv * D);
    float *gout = dev_poison((size_t)Hq * D), *gw = dev_poison((size_t)Hq * len);
    G->attention_step(gout, gw, gq, gk, gv, len, Hq, Hkv, D, window);
    char detail[64];
    snprintf(detail, sizeof detail, "len%d Hq%d Hkv%d D%d w%d", len, Hq, Hkv, D, window);
    report("attention_step", detail, fmax(rel_dev(gout, out, (size_t)Hq * D), rel_dev(gw, w, (size_t)Hq * len)));
    if (C->attention_step) {
        float *co = malloc((size_t)Hq * D * sizeof(float)), *cw = malloc((size_t)Hq * len * sizeof(float));
        C->attention_step(co, cw, q, kc, vc, len, Hq, Hkv, D, window);
        report("attention_step", "  ... vs the cpu kernel",
               fmax(rel_dev(gout, co, (size_t)Hq * D), rel_dev(gw, cw, (size_t)Hq * len)));
        free(co), free(cw);
    }
    free(q), free(kc), free(vc), free(out), free(w);
    dev_free_all();
}

static void test_attention(void)
{
    static const attn_case cases[] = {
        {2, 100, 4, 2, 32, 0, 32},  {1, 77, 2, 1, 64, 20, 16}, {2, 130, 6, 2, 16, 0, 64},
        {1, 200, 2, 2, 128, 50, 128}, {2, 45, 3, 1, 24, 0, 7}, {1, 150, 4, 4, 80, 33, 64},
        {1, 66, 2, 1, 200, 0, 1024}, {3, 1, 2, 2, 8, 0, 16},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_attention_case(&cases[i]);
    test_attention_step(1, 4, 2, 32, 0);
    test_attention_step(300, 4, 2, 64, 0);
    test_attention_step(300, 6, 3, 48, 50);
}

/* ---- recurrent-state layers: causal conv1d, selective scan -------------------------------------- */

/* rel over the (rows, cols) block of matrices with leading dimension ld */
static double rel_strided(const float *out, const float *ref, long rows, int cols, int ld)
{
    double num = 0, den = 0;
    for (long r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            float o = out[r * ld + c], f = ref[r * ld + c];
            if (!isfinite(o) || !isfinite(f)) return NAN;
            num += ((double)o - f) * ((double)o - f);
            den += (double)f * f;
        }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static double rel_dev_strided(const float *d, const float *ref, long rows, int cols, int ld)
{
    float *h = fetch(d, (size_t)rows * ld);
    double e = rel_strided(h, ref, rows, cols, ld);
    free(h);
    return e;
}

static void test_conv1d(int B, int T, int E, int K, int with_state)
{
    int ldx = E + 5, rows = B * T;
    float *x = hrand((size_t)rows * ldx, 1), *w = hrand((size_t)E * K, 0.5), *bias = hrand(E, 1);
    float *st = with_state ? hrand((size_t)B * (K - 1) * E + 1, 1) : NULL;
    float *out = malloc((size_t)rows * E * sizeof(float));
    float *gx = DEVF(x, rows * ldx), *gw = DEVF(w, E * K), *gb = DEVF(bias, E), *gout = dev_poison((size_t)rows * E);
    float *gst = with_state ? DEVF(st, B * (K - 1) * E + 1) : NULL;
    C->conv1d_causal_forward(out, x, ldx, w, bias, st, B, T, E, K);
    G->conv1d_causal_forward(gout, gx, ldx, gw, gb, gst, B, T, E, K);
    char detail[80];
    snprintf(detail, sizeof detail, "B%d T%d E%d K%d%s", B, T, E, K, with_state ? " state" : "");
    double e = rel_dev(gout, out, (size_t)rows * E);
    if (with_state && K > 1) e = fmax(e, rel_dev(gst, st, (size_t)B * (K - 1) * E));
    report("conv1d_forward", detail, e);
    /* backward: dx overwritten (strided), dw and dbias accumulated */
    float *dout = hrand((size_t)rows * E, 1), *dx = hrand((size_t)rows * ldx, 1), *dw = hrand((size_t)E * K, 1);
    float *db = hrand(E, 1);
    float *gdout = DEVF(dout, rows * E), *gdx = dev_poison((size_t)rows * ldx), *gdw = DEVF(dw, E * K), *gdb = DEVF(db, E);
    C->conv1d_causal_backward(dx, ldx, dw, db, dout, x, ldx, w, B, T, E, K);
    G->conv1d_causal_backward(gdx, ldx, gdw, gdb, gdout, gx, ldx, gw, B, T, E, K);
    report("conv1d_backward", detail,
           fmax(rel_dev_strided(gdx, dx, rows, E, ldx), fmax(rel_dev(gdw, dw, (size_t)E * K), rel_dev(gdb, db, E))));
    free(x), free(w), free(bias), free(st), free(out), free(dout), free(dx), free(dw), free(db);
    dev_free_all();
}

typedef struct scan_case {
    int B, T, E, N, chunk, selective, with_state, with_D;
} scan_case;

/* the operands of one scan case on the host (h*) and the device (g*), laid out as the layers do:
 * selective: dt (rows, E) + dt_bias, B and C inside an x_proj output (rows, R + 2N); time-invariant:
 * Δ = exp(dt) per channel, B and C (E, N) */
typedef struct scan_ops {
    pf_ssm_scan hs, gs;
    float *bufs_h[8];
    size_t sizes[8];
    int n;
} scan_ops;

static float *ops_add(scan_ops *o, float *h, size_t n, float **g)
{
    o->bufs_h[o->n] = h;
    o->sizes[o->n++] = n;
    *g = DEVF(h, n);
    return h;
}

static void scan_setup(const scan_case *c, scan_ops *o)
{
    memset(o, 0, sizeof *o);
    int B = c->B, T = c->T, E = c->E, N = c->N, rows = B * T, R = 3, ld = R + 2 * N;
    int nch = (T + (c->chunk > 0 ? c->chunk : T) - 1) / (c->chunk > 0 ? c->chunk : T);
    pf_ssm_scan s = {.B = B, .T = T, .E = E, .N = N, .chunk = c->chunk};
    pf_ssm_scan g = s;
    float *gp;
    s.x = ops_add(o, hrand((size_t)rows * E, 1), (size_t)rows * E, &gp), g.x = gp;
    float *alog = hrand((size_t)E * N, 0.3);
    for (int e = 0; e < E; e++)
        for (int n = 0; n < N; n++) alog[(size_t)e * N + n] += logf((float)(n + 1));
    s.A_log = ops_add(o, alog, (size_t)E * N, &gp), g.A_log = gp;
    if (c->with_D) s.D = ops_add(o, hrand(E, 1), E, &gp), g.D = gp;
    if (c->selective) {
        float *dt = hrand((size_t)rows * E, 1);
        for (size_t i = 0; i < (size_t)rows * E; i++) dt[i] = dt[i] - 1.5f;
        s.dt = ops_add(o, dt, (size_t)rows * E, &gp), g.dt = gp;
        s.dt_tok = g.dt_tok = E;
        s.dt_bias = ops_add(o, hrand(E, 0.5), E, &gp), g.dt_bias = gp;
        s.dt_softplus = g.dt_softplus = 1;
        float *xd = ops_add(o, hrand((size_t)rows * ld, 1), (size_t)rows * ld, &gp);
        s.Bm = xd + R, g.Bm = gp + R, s.Cm = xd + R + N, g.Cm = gp + R + N;
        s.b_tok = s.c_tok = g.b_tok = g.c_tok = ld;
    } else {
        float *dt = hrand(E, 0.5);
        for (int e = 0; e < E; e++) dt[e] -= 3.0f;
        s.dt = ops_add(o, dt, E, &gp), g.dt = gp;
        float *bc = ops_add(o, hrand((size_t)2 * E * N, 1), (size_t)2 * E * N, &gp);
        s.Bm = bc, g.Bm = gp, s.Cm = bc + (size_t)E * N, g.Cm = gp + (size_t)E * N;
        s.b_chan = s.c_chan = g.b_chan = g.c_chan = N;
    }
    s.y_ld = g.y_ld = E + 3;
    s.y = malloc((size_t)rows * (E + 3) * sizeof(float));
    g.y = dev_poison((size_t)rows * (E + 3));
    s.hsave = malloc((size_t)B * nch * E * N * sizeof(float));
    g.hsave = dev_poison((size_t)B * nch * E * N);
    if (c->with_state) {
        s.state = hrand((size_t)B * E * N, 1);
        g.state = DEVF(s.state, B * E * N);
    }
    o->hs = s, o->gs = g;
}

static void test_scan(const scan_case *c)
{
    scan_ops o;
    scan_setup(c, &o);
    pf_ssm_scan *s = &o.hs, *g = &o.gs;
    int B = c->B, T = c->T, E = c->E, N = c->N, rows = B * T;
    int nch = (T + (c->chunk > 0 ? c->chunk : T) - 1) / (c->chunk > 0 ? c->chunk : T);
    char detail[80];
    snprintf(detail, sizeof detail, "%s B%d T%d E%d N%d ch%d%s", c->selective ? "sel" : "lti", B, T, E, N, c->chunk,
             c->with_state ? " st" : "");
    int rc = C->ssm_scan_forward(s), rg = G->ssm_scan_forward(g);
    if (rc < 0 || rg < 0) {
        printf("%-22s %-34s FAIL (%s)\n", "ssm_scan_forward", detail, pf_error_message());
        n_fail++;
        return;
    }
    double e = rel_dev_strided(g->y, s->y, rows, E, E + 3);
    e = fmax(e, rel_dev(g->hsave, s->hsave, (size_t)B * nch * E * N));
    if (c->with_state) e = fmax(e, rel_dev(g->state, s->state, (size_t)B * E * N));
    report("ssm_scan_forward", detail, e);

    if (c->with_state) goto done; /* backward follows a forward from zeros */
    {
        /* the gradients: dx overwritten, the rest accumulated onto random values */
        int ld = 3 + 2 * N;
        size_t ndt = c->selective ? (size_t)rows * E : (size_t)E;
        size_t nbc = c->selective ? (size_t)rows * ld : (size_t)2 * E * N;
        float *dy = hrand((size_t)rows * (E + 1), 1), *ddt = hrand(ndt, 1), *dA = hrand((size_t)E * N, 1);
        float *dbc = hrand(nbc, 1), *dD = hrand(E, 1), *dx = malloc((size_t)rows * E * sizeof(float));
        float *gdy = DEVF(dy, rows * (E + 1)), *gddt = DEVF(ddt, ndt), *gdA = DEVF(dA, E * N), *gdbc = DEVF(dbc, nbc);
        float *gdD = DEVF(dD, E), *gdx = dev_poison((size_t)rows * E);
        float *dbc0 = hcopy(dbc, nbc), *dA0 = hcopy(dA, (size_t)E * N), *ddt0 = hcopy(ddt, ndt);
        size_t offB = c->selective ? 3 : 0, offC = c->selective ? (size_t)(3 + N) : (size_t)E * N;
        pf_ssm_scan_grad hg = {.dy = dy, .dy_ld = E + 1, .dx = dx, .ddt = ddt, .dA_log = dA, .dB = dbc + offB,
                               .dC = dbc + offC, .dD = c->with_D ? dD : NULL};
        pf_ssm_scan_grad gg = {.dy = gdy, .dy_ld = E + 1, .dx = gdx, .ddt = gddt, .dA_log = gdA, .dB = gdbc + offB,
                               .dC = gdbc + offC, .dD = c->with_D ? gdD : NULL};
        rc = C->ssm_scan_backward(s, &hg);
        rg = G->ssm_scan_backward(g, &gg);
        if (rc < 0 || rg < 0) {
            printf("%-22s %-34s FAIL (%s)\n", "ssm_scan_backward", detail, pf_error_message());
            n_fail++;
            goto done;
        }
        char d2[96];
        snprintf(d2, sizeof d2, "%s dx", detail);
        report("ssm_scan_backward", d2, rel_dev(gdx, dx, (size_t)rows * E));
        snprintf(d2, sizeof d2, "%s ddt", detail);
        report("ssm_scan_backward", d2, rel_dev(gddt, ddt, ndt));
        snprintf(d2, sizeof d2, "%s dA_log", detail);
        report("ssm_scan_backward", d2, rel_dev(gdA, dA, (size_t)E * N));
        snprintf(d2, sizeof d2, "%s dB, dC", detail);
        report("ssm_scan_backward", d2, rel_dev(gdbc, dbc, nbc));
        if (c->with_D) {
            snprintf(d2, sizeof d2, "%s dD", detail);
            report("ssm_scan_backward", d2, rel_dev(gdD, dD, E));
        }
        /* deterministic: the same accumulation again from the same start gives the same bits */
        float *r1 = fetch(gdbc, nbc), *r1A = fetch(gdA, (size_t)E * N), *r1t = fetch(gddt, ndt);
        G->upload(gdbc, dbc0, nbc * sizeof(float));
        G->upload(gdA, dA0, (size_t)E * N * sizeof(float));
        G->upload(gddt, ddt0, ndt * sizeof(float));
        G->ssm_scan_backward(g, &gg);
        float *r2 = fetch(gdbc, nbc), *r2A = fetch(gdA, (size_t)E * N), *r2t = fetch(gddt, ndt);
        report_exact("ssm_scan_backward", "  ... run twice: same bits",
                     !memcmp(r1, r2, nbc * sizeof(float)) && !memcmp(r1A, r2A, (size_t)E * N * sizeof(float)) &&
                         !memcmp(r1t, r2t, ndt * sizeof(float)));
        free(r1), free(r1A), free(r1t), free(r2), free(r2A), free(r2t), free(dbc0), free(dA0), free(ddt0);
        free(dy), free(ddt), free(dA), free(dbc), free(dD), free(dx);
    }
done:
    free(s->y), free(s->hsave), free(s->state);
    for (int i = 0; i < o.n; i++) free(o.bufs_h[i]);
    dev_free_all();
}

static void test_ssm(void)
{
    test_conv1d(3, 45, 37, 4, 0);
    test_conv1d(2, 33, 70, 4, 1);
    test_conv1d(2, 2, 19, 5, 1); /* T < K - 1: the window keeps older state rows */
    test_conv1d(1, 17, 8, 1, 1);
    static const scan_case cases[] = {
        {3, 77, 37, 16, 32, 1, 0, 1}, {2, 100, 64, 5, 32, 1, 0, 1}, {2, 45, 20, 40, 16, 1, 0, 0},
        {3, 77, 37, 16, 32, 0, 0, 1}, {2, 50, 33, 7, 0, 0, 0, 1}, {1, 1, 16, 16, 32, 1, 0, 1},
        {2, 64, 48, 16, 32, 1, 1, 1}, {1, 1, 24, 16, 32, 1, 1, 1}, {2, 9, 13, 16, 32, 0, 1, 1},
        {1, 130, 5, 256, 32, 1, 0, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_scan(&cases[i]);
}

/* ---- Mamba-2: the SSD chunked scan, its step, the gated RMSNorm ---------------------------------- */

typedef struct ssd_case {
    int Bn, T, H, P, N, Q;
} ssd_case;

/* rel over the (rows, cols) block at column off of the host copies of two buffers of leading
 * dimension ld */
static double rel_cols(const float *out, const float *ref, long rows, int off, int cols, int ld)
{
    return rel_strided(out + off, ref + off, rows, cols, ld);
}

/* Operands laid out as mamba2.c passes them: xbc (rows, CD) = [x | B | C], CD = E + 2N, so ldx = ldbc
 * = CD; dt the last H columns of the in_proj output (rows, DIN), DIN = 2E + 2N + H, so ldt = DIN.
 * Gradients go into the same layouts (dxbc, the dt columns of dzx); outputs are poisoned on the GPU. */
static void test_ssd_case(const ssd_case *c)
{
    int Bn = c->Bn, T = c->T, H = c->H, P = c->P, N = c->N, Q = c->Q;
    int E = H * P, CD = E + 2 * N, DIN = 2 * E + 2 * N + H, rows = Bn * T, nch = (T + Q - 1) / Q, dto = 2 * E + 2 * N;
    size_t nx = (size_t)rows * CD, nz = (size_t)rows * DIN, ny = (size_t)rows * E, nst = (size_t)Bn * H * nch * P * N;
    float *xbc = hrand(nx, 1), *zx = hrand(nz, 1), *dt_bias = hrand(H, 0.5), *A_log = hrand(H, 0.5), *D = hrand(H, 1);
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < H; h++) zx[(size_t)r * DIN + dto + h] -= 1.0f; /* Δ around 0.3 */
    for (int h = 0; h < H; h++) A_log[h] += 1.0f;
    float *y = malloc(ny * sizeof(float)), *st = malloc(nst * sizeof(float));
    float *gx = DEVF(xbc, nx), *gz = DEVF(zx, nz), *gbias = DEVF(dt_bias, H), *gA = DEVF(A_log, H), *gD = DEVF(D, H);
    float *gy = dev_poison(ny), *gst = dev_poison(nst);
    char detail[96], d2[112];
    snprintf(detail, sizeof detail, "Bn%d T%d H%d P%d N%d Q%d", Bn, T, H, P, N, Q);
    int rc = C->ssd_forward(y, st, xbc, CD, zx + dto, DIN, xbc + E, xbc + E + N, CD, dt_bias, A_log, D, Bn, T, H, P, N, Q);
    int rg = G->ssd_forward(gy, gst, gx, CD, gz + dto, DIN, gx + E, gx + E + N, CD, gbias, gA, gD, Bn, T, H, P, N, Q);
    if (rc < 0 || rg < 0) {
        printf("%-22s %-34s FAIL (%s)\n", "ssd_forward", detail, pf_error_message());
        n_fail++;
        goto done;
    }
    snprintf(d2, sizeof d2, "%s y", detail);
    report("ssd_forward", d2, rel_dev(gy, y, ny));
    snprintf(d2, sizeof d2, "%s states", detail);
    report("ssd_forward", d2, rel_dev(gst, st, nst));
    {
        float *dy = hrand(ny, 1), *dxbc = hrand(nx, 1), *dzx = hrand(nz, 1), *dhead = malloc((size_t)Bn * 3 * H * sizeof(float));
        float *gdy = DEVF(dy, ny), *gdx = dev_poison(nx), *gdz = dev_poison(nz), *gdh = dev_poison((size_t)Bn * 3 * H);
        rc = C->ssd_backward(dxbc, dzx + dto, dxbc + E, dxbc + E + N, dhead, dy, st, xbc, CD, zx + dto, DIN, xbc + E,
                             xbc + E + N, CD, dt_bias, A_log, D, Bn, T, H, P, N, Q);
        rg = G->ssd_backward(gdx, gdz + dto, gdx + E, gdx + E + N, gdh, gdy, gst, gx, CD, gz + dto, DIN, gx + E,
                             gx + E + N, CD, gbias, gA, gD, Bn, T, H, P, N, Q);
        if (rc < 0 || rg < 0) {
            printf("%-22s %-34s FAIL (%s)\n", "ssd_backward", detail, pf_error_message());
            n_fail++;
        } else {
            float *hx = fetch(gdx, nx), *hz = fetch(gdz, nz), *hh = fetch(gdh, (size_t)Bn * 3 * H);
            static const char *parts[] = {"dx", "dB", "dC"};
            int offs[] = {0, E, E + N}, widths[] = {E, N, N};
            for (int i = 0; i < 3; i++) {
                snprintf(d2, sizeof d2, "%s %s", detail, parts[i]);
                report("ssd_backward", d2, rel_cols(hx, dxbc, rows, offs[i], widths[i], CD));
            }
            snprintf(d2, sizeof d2, "%s ddt", detail);
            report("ssd_backward", d2, rel_cols(hz, dzx, rows, dto, H, DIN));
            static const char *heads[] = {"dhead: dt_bias", "dhead: A_log", "dhead: D"};
            for (int i = 0; i < 3; i++) {
                snprintf(d2, sizeof d2, "%s %s", detail, heads[i]);
                report("ssd_backward", d2, rel_cols(hh, dhead, Bn, i * H, H, 3 * H));
            }
            /* deterministic: a second run gives the same bits */
            G->ssd_backward(gdx, gdz + dto, gdx + E, gdx + E + N, gdh, gdy, gst, gx, CD, gz + dto, DIN, gx + E,
                            gx + E + N, CD, gbias, gA, gD, Bn, T, H, P, N, Q);
            float *hx2 = fetch(gdx, nx), *hz2 = fetch(gdz, nz), *hh2 = fetch(gdh, (size_t)Bn * 3 * H);
            report_exact("ssd_backward", "  ... run twice: same bits",
                         !memcmp(hx, hx2, nx * sizeof(float)) && !memcmp(hz, hz2, nz * sizeof(float)) &&
                             !memcmp(hh, hh2, (size_t)Bn * 3 * H * sizeof(float)));
            free(hx), free(hz), free(hh), free(hx2), free(hz2), free(hh2);
        }
        free(dy), free(dxbc), free(dzx), free(dhead);
    }
done:
    free(xbc), free(zx), free(dt_bias), free(A_log), free(D), free(y), free(st);
    dev_free_all();
}

/* a few steps from a random state */
static void test_ssd_step(int H, int P, int N)
{
    size_t ns = (size_t)H * P * N;
    float *st = hrand(ns, 1), *x = hrand((size_t)H * P, 1), *dt = hrand(H, 1), *Bv = hrand(N, 1), *Cv = hrand(N, 1);
    float *dt_bias = hrand(H, 0.5), *A_log = hrand(H, 0.5), *D = hrand(H, 1);
    float *y = malloc((size_t)H * P * sizeof(float)), *delta = malloc(H * sizeof(float)), *decay = malloc(H * sizeof(float));
    for (int h = 0; h < H; h++) A_log[h] += 1.0f, dt[h] -= 1.0f;
    float *gst = DEVF(st, ns), *gx = DEVF(x, H * P), *gdt = DEVF(dt, H), *gB = DEVF(Bv, N), *gC = DEVF(Cv, N);
    float *gbias = DEVF(dt_bias, H), *gA = DEVF(A_log, H), *gD = DEVF(D, H);
    float *gy = dev_poison((size_t)H * P), *gdelta = dev_poison(H), *gdecay = dev_poison(H);
    for (int s = 0; s < 3; s++) {
        C->ssd_step(y, st, delta, decay, x, dt, Bv, Cv, dt_bias, A_log, D, H, P, N);
        G->ssd_step(gy, gst, gdelta, gdecay, gx, gdt, gB, gC, gbias, gA, gD, H, P, N);
    }
    char detail[64];
    snprintf(detail, sizeof detail, "H%d P%d N%d, 3 steps", H, P, N);
    report("ssd_step", detail, fmax(rel_dev(gy, y, (size_t)H * P), rel_dev(gst, st, ns)));
    report("ssd_step", "  ... delta, decay", fmax(rel_dev(gdelta, delta, H), rel_dev(gdecay, decay, H)));
    free(st), free(x), free(dt), free(Bv), free(Cv), free(dt_bias), free(A_log), free(D), free(y), free(delta), free(decay);
    dev_free_all();
}

/* z strided inside a wider buffer, as the layer's in_proj output */
static void test_rmsnorm_gated(int rows, int E)
{
    int ldz = 2 * E + 11;
    size_t n = (size_t)rows * E, nz = (size_t)rows * ldz;
    float *y = hrand(n, 1), *z = hrand(nz, 2), *w = hrand(E, 1), *dout = hrand(n, 1), *dw = hrand(E, 1);
    float *out = malloc(n * sizeof(float)), *rstd = malloc(rows * sizeof(float));
    float *dy = malloc(n * sizeof(float)), *dz = hrand(nz, 1);
    float *gy = DEVF(y, n), *gz = DEVF(z, nz), *gw = DEVF(w, E), *gdout = DEVF(dout, n), *gdw = DEVF(dw, E);
    float *gout = dev_poison(n), *grstd = dev_poison(rows), *gdy = dev_poison(n), *gdz = dev_poison(nz);
    char detail[64];
    snprintf(detail, sizeof detail, "%dx%d (ldz %d)", rows, E, ldz);
    C->rmsnorm_gated_forward(out, rstd, y, z + 3, ldz, w, rows, E, 1e-5f);
    G->rmsnorm_gated_forward(gout, grstd, gy, gz + 3, ldz, gw, rows, E, 1e-5f);
    report("rmsnorm_gated_forward", detail, fmax(rel_dev(gout, out, n), rel_dev(grstd, rstd, rows)));
    C->rmsnorm_gated_backward(dy, dz + 3, ldz, dw, dout, y, z + 3, w, rstd, rows, E);
    G->rmsnorm_gated_backward(gdy, gdz + 3, ldz, gdw, gdout, gy, gz + 3, gw, grstd, rows, E);
    float *hdz = fetch(gdz, nz);
    report("rmsnorm_gated_backward", detail, fmax(rel_dev(gdy, dy, n), rel_cols(hdz, dz, rows, 3, E, ldz)));
    report("rmsnorm_gated_backward", "  ... dw (accumulate)", rel_dev(gdw, dw, E));
    free(y), free(z), free(w), free(dout), free(dw), free(out), free(rstd), free(dy), free(dz), free(hdz);
    dev_free_all();
}

static void test_ssd(void)
{
    static const ssd_case cases[] = {
        {2, 45, 4, 16, 64, 16},  /* the model check's first layer */
        {3, 100, 3, 24, 13, 32}, /* the last chunk 4 tokens */
        {1, 20, 2, 8, 5, 64},    /* T < Q */
        {2, 130, 2, 70, 65, 64}, /* P and N over one 64-wide tile; the last chunk 2 tokens */
        {1, 200, 2, 32, 16, 100}, /* two tiles inside a chunk */
        {2, 7, 3, 4, 3, 1},      /* Q = 1 */
        {1, 1, 2, 8, 4, 16},     /* one token */
        {2, 300, 6, 64, 128, 64}, /* the reference's sizes (P 64, N 128) */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_ssd_case(&cases[i]);
    test_ssd_step(4, 16, 64);
    test_ssd_step(3, 70, 13);
    test_rmsnorm_gated(133, 64);
    test_rmsnorm_gated(7, 200);
    test_rmsnorm_gated(1, 45);
}

/* ---- mixture of experts ------------------------------------------------------------------------ */

static int32_t *ifetch(const int32_t *d, size_t n)
{
    int32_t *h = malloc((n ? n : 1) * sizeof(int32_t));
    G->download(h, d, n * sizeof(int32_t));
    return h;
}

static int32_t *idev_poison(size_t n)
{
    int32_t *d = dev_track(G->alloc((n ? n : 1) * sizeof(int32_t)));
    G->fill((float *)d, NAN, n); /* NaN bits: never a valid row or id */
    return d;
}

static int same_ints(const int32_t *d, const int32_t *ref, size_t n)
{
    int32_t *h = ifetch(d, n);
    int same = memcmp(h, ref, n * sizeof(int32_t)) == 0;
    free(h);
    return same;
}

static void test_moe_route(int N, int E, int K, int renorm)
{
    float *logits = hrand((size_t)N * E, 2);
    float *probs = malloc((size_t)N * E * sizeof(float)), *lse = malloc(N * sizeof(float));
    float *w = malloc((size_t)N * K * sizeof(float) + 1);
    int32_t *idx = malloc((size_t)N * K * sizeof(int32_t) + 1);
    float *gl = DEVF(logits, N * E), *gp = dev_poison((size_t)N * E), *glse = dev_poison(N), *gw = dev_poison((size_t)N * K);
    int32_t *gidx = idev_poison((size_t)N * K);
    C->moe_route(probs, lse, idx, w, logits, N, E, K, renorm);
    G->moe_route(gp, glse, gidx, gw, gl, N, E, K, renorm);
    char detail[80];
    snprintf(detail, sizeof detail, "N%d E%d K%d%s", N, E, K, renorm ? " renorm" : "");
    report("moe_route", detail, fmax(rel_dev(gp, probs, (size_t)N * E), rel_dev(glse, lse, N)));
    if (K > 0) {
        report_exact("moe_route", "  ... top-k ids", same_ints(gidx, idx, (size_t)N * K));
        report("moe_route", "  ... gate weights", rel_dev(gw, w, (size_t)N * K));
    }
    free(logits), free(probs), free(lse), free(w), free(idx);
    dev_free_all();
}

static void test_moe_dispatch(int N, int E, int K, int cap)
{
    /* ids and weights from the cpu's routing, the same on both sides */
    float *logits = hrand((size_t)N * E, 2), *probs = malloc((size_t)N * E * sizeof(float)), *lse = malloc(N * sizeof(float));
    float *w = malloc((size_t)N * K * sizeof(float));
    int32_t *idx = malloc((size_t)N * K * sizeof(int32_t));
    C->moe_route(probs, lse, idx, w, logits, N, E, K, 1);
    int32_t *slot_row = malloc((size_t)N * K * sizeof(int32_t)), *row_token = malloc((size_t)N * K * sizeof(int32_t));
    int32_t *counts = malloc((2 * (size_t)E + 1) * sizeof(int32_t));
    float *row_w = malloc((size_t)N * K * sizeof(float));
    C->moe_dispatch(slot_row, row_token, row_w, counts, idx, w, N, E, K, cap);
    int R = 0;
    for (int e = 0; e < E; e++) R += counts[e];
    int32_t *gidx = dev_of(idx, (size_t)N * K * sizeof(int32_t));
    float *gw = DEVF(w, N * K), *grow_w = dev_poison((size_t)N * K);
    int32_t *gslot = idev_poison((size_t)N * K), *grow_tok = idev_poison((size_t)N * K), *gcounts = idev_poison(2 * E + 1);
    G->moe_dispatch(gslot, grow_tok, grow_w, gcounts, gidx, gw, N, E, K, cap);
    char detail[80];
    snprintf(detail, sizeof detail, "N%d E%d K%d cap%d (R %d, dropped %d)", N, E, K, cap, R, counts[2 * E]);
    int same = same_ints(gslot, slot_row, (size_t)N * K) && same_ints(grow_tok, row_token, R) &&
               same_ints(gcounts, counts, 2 * E + 1);
    G->sync();
    report_exact("moe_dispatch", detail, same);
    report("moe_dispatch", "  ... row weights", rel_dev(grow_w, row_w, R));
    free(logits), free(probs), free(lse), free(w), free(idx), free(slot_row), free(row_token), free(counts), free(row_w);
    dev_free_all();
}

static void test_moe_expert_choice(int N, int E, int c)
{
    float *logits = hrand((size_t)N * E, 2), *probs = malloc((size_t)N * E * sizeof(float)), *lse = malloc(N * sizeof(float));
    C->moe_route(probs, lse, NULL, NULL, logits, N, E, 0, 0);
    for (int t = 5; t < N; t += 7) /* ties: the same probability for two tokens */
        for (int e = 0; e < E; e++) probs[(size_t)t * E + e] = probs[(size_t)(t - 3) * E + e];
    size_t NE = (size_t)N * E, Ec = (size_t)E * c;
    int32_t *slot = malloc(NE * sizeof(int32_t)), *rtok = malloc(Ec * sizeof(int32_t)), *counts = malloc((2 * E + 1) * sizeof(int32_t));
    int32_t *scratch = malloc(2 * NE * sizeof(int32_t));
    float *w = malloc(NE * sizeof(float)), *rw = malloc(Ec * sizeof(float));
    C->moe_expert_choice(slot, w, rtok, rw, counts, scratch, probs, N, E, c);
    float *gp = DEVF(probs, NE), *gw = dev_poison(NE), *grw = dev_poison(Ec);
    int32_t *gslot = idev_poison(NE), *grtok = idev_poison(Ec), *gcounts = idev_poison(2 * E + 1), *gscr = idev_poison(2 * NE);
    G->moe_expert_choice(gslot, gw, grtok, grw, gcounts, gscr, gp, N, E, c);
    char detail[80];
    snprintf(detail, sizeof detail, "N%d E%d c%d with ties (untaken %d)", N, E, c, counts[2 * E]);
    int same = same_ints(gslot, slot, NE) && same_ints(grtok, rtok, Ec) && same_ints(gcounts, counts, 2 * E + 1);
    G->sync();
    report_exact("moe_expert_choice", detail, same);
    report("moe_expert_choice", "  ... w, row weights", fmax(rel_dev(gw, w, NE), rel_dev(grw, rw, Ec)));
    free(logits), free(probs), free(lse), free(slot), free(rtok), free(counts), free(scratch), free(w), free(rw);
    dev_free_all();
}

static void test_moe_rows(void)
{
    int N = 203, E = 6, K = 2, Cc = 45;
    float *logits = hrand((size_t)N * E, 2), *probs = malloc((size_t)N * E * sizeof(float)), *lse = malloc(N * sizeof(float));
    float *w = malloc((size_t)N * K * sizeof(float)), *row_w = malloc((size_t)N * K * sizeof(float));
    int32_t *idx = malloc((size_t)N * K * sizeof(int32_t)), *slot = malloc((size_t)N * K * sizeof(int32_t));
    int32_t *rtok = malloc((size_t)N * K * sizeof(int32_t)), *counts = malloc((2 * E + 1) * sizeof(int32_t));
    C->moe_route(probs, lse, idx, w, logits, N, E, K, 1);
    C->moe_dispatch(slot, rtok, row_w, counts, idx, w, N, E, K, 60); /* some dropped */
    int R = 0;
    for (int e = 0; e < E; e++) R += counts[e];
    float *x = hrand((size_t)N * Cc, 1), *y = hrand((size_t)R * Cc, 1), *out = malloc((size_t)R * Cc * sizeof(float));
    float *gx = DEVF(x, N * Cc), *gy = DEVF(y, R * Cc), *grw = DEVF(row_w, N * K), *gw = DEVF(w, N * K);
    int32_t *grtok = dev_of(rtok, (size_t)N * K * sizeof(int32_t)), *gslot = dev_of(slot, (size_t)N * K * sizeof(int32_t));
    float *gout = dev_poison((size_t)R * Cc);
    for (int sc = 0; sc < 2; sc++) {
        C->moe_gather(out, x, rtok, sc ? row_w : NULL, R, Cc);
        G->moe_gather(gout, gx, grtok, sc ? grw : NULL, R, Cc);
        report("moe_gather", sc ? "R rows of 45, scaled" : "R rows of 45", rel_dev(gout, out, (size_t)R * Cc));
    }
    float *comb = hrand((size_t)N * Cc, 1), *gcomb = DEVF(comb, N * Cc);
    C->moe_combine(comb, y, slot, w, N, K, Cc, 1);
    G->moe_combine(gcomb, gy, gslot, gw, N, K, Cc, 1);
    report("moe_combine", "weighted, accumulate", rel_dev(gcomb, comb, (size_t)N * Cc));
    G->fill(gcomb, NAN, (size_t)N * Cc);
    C->moe_combine(comb, y, slot, NULL, N, K, Cc, 0);
    G->moe_combine(gcomb, gy, gslot, NULL, N, K, Cc, 0);
    report("moe_combine", "unweighted, overwrite", rel_dev(gcomb, comb, (size_t)N * Cc));
    float *dout = hrand((size_t)N * Cc, 1), *dw = malloc((size_t)N * K * sizeof(float));
    float *gdout = DEVF(dout, N * Cc), *gdw = dev_poison((size_t)N * K);
    C->moe_gate_grad(dw, dout, y, slot, N, K, Cc);
    G->moe_gate_grad(gdw, gdout, gy, gslot, N, K, Cc);
    report("moe_gate_grad", "N203 K2 C45", rel_dev(gdw, dw, (size_t)N * K));
    /* router backward: top-k with and without renorm, and the expert-choice layout (idx NULL, K = E) */
    float *aux = hrand(E, 0.1), *dl = malloc((size_t)N * E * sizeof(float));
    float *gp = DEVF(probs, N * E), *glse = DEVF(lse, N), *gaux = DEVF(aux, E), *gdl = dev_poison((size_t)N * E);
    int32_t *gidx = dev_of(idx, (size_t)N * K * sizeof(int32_t));
    for (int renorm = 0; renorm < 2; renorm++) {
        C->moe_router_backward(dl, probs, lse, idx, w, dw, renorm ? aux : NULL, 0.01f, N, E, K, renorm);
        G->moe_router_backward(gdl, gp, glse, gidx, gw, gdw, renorm ? gaux : NULL, 0.01f, N, E, K, renorm);
        report("moe_router_backward", renorm ? "top-2, renorm, aux, z" : "top-2, z", rel_dev(gdl, dl, (size_t)N * E));
    }
    float *wE = hrand((size_t)N * E, 1), *dwE = hrand((size_t)N * E, 1);
    float *gwE = DEVF(wE, N * E), *gdwE = DEVF(dwE, N * E);
    C->moe_router_backward(dl, probs, lse, NULL, wE, dwE, aux, 0.0f, N, E, E, 0);
    G->moe_router_backward(gdl, gp, glse, NULL, gwE, gdwE, gaux, 0.0f, N, E, E, 0);
    report("moe_router_backward", "expert-choice layout (idx NULL)", rel_dev(gdl, dl, (size_t)N * E));
    float *stats = malloc((E + 2) * sizeof(float)), *gst = dev_poison(E + 2);
    C->moe_router_stats(stats, probs, lse, N, E);
    G->moe_router_stats(gst, gp, glse, N, E);
    report("moe_router_stats", "N203 E6", rel_dev(gst, stats, E + 2));
    size_t nj = 10007;
    float *jin = hrand(nj, 1), *jout = malloc(nj * sizeof(float)), *jn = malloc(nj * sizeof(float));
    float *gjin = DEVF(jin, nj), *gjout = dev_poison(nj), *gjn = dev_poison(nj);
    C->moe_jitter(jout, jn, jin, nj, 0.05f, 1234, 17);
    G->moe_jitter(gjout, gjn, gjin, nj, 0.05f, 1234, 17);
    report("moe_jitter", "n=10007 (the same hash)", fmax(rel_dev(gjout, jout, nj), rel_dev(gjn, jn, nj)));
    free(logits), free(probs), free(lse), free(w), free(row_w), free(idx), free(slot), free(rtok), free(counts);
    free(x), free(y), free(out), free(comb), free(dout), free(dw), free(aux), free(dl), free(wE), free(dwE), free(stats);
    free(jin), free(jout), free(jn);
    dev_free_all();
}

static void test_moe(void)
{
    test_moe_route(301, 8, 2, 1);
    test_moe_route(301, 8, 2, 0);
    test_moe_route(77, 5, 1, 0);
    test_moe_route(50, 64, 8, 1);
    test_moe_route(33, 6, 0, 0);
    test_moe_dispatch(301, 8, 2, -1);
    test_moe_dispatch(301, 8, 2, 70);
    test_moe_dispatch(1500, 8, 2, 300);
    test_moe_dispatch(77, 5, 1, 0);
    test_moe_dispatch(4099, 16, 4, 1100);
    test_moe_expert_choice(203, 6, 40);
    test_moe_expert_choice(1500, 8, 375);
    test_moe_rows();
}

/* ---- retention and (gated) linear attention ------------------------------------------------------ */

typedef struct ret_case {
    int B, T, H, dk, dv, chunk;
} ret_case;

/* floats of the retention kernels' work for chunk (0: the recurrent kernels), as the layer sizes it */
static size_t ret_work_floats(const ret_case *c, int chunk)
{
    size_t L = chunk == 0 ? 0 : (size_t)(chunk < c->T ? chunk : c->T);
    return (size_t)c->B * c->H * (2 * L * L + L * (c->dk + c->dv) + (L + 1) + 2 * (size_t)c->dk * c->dv);
}

/* the layer's decays on even heads, others drawn from [0.5, 0.99] */
static void ret_gammas(float *gamma, int H)
{
    for (int h = 0; h < H; h++)
        gamma[h] = h % 2 ? (float)(0.5 + 0.49 * pf_rng_uniform(&rng)) : (float)(1.0 - pow(2.0, -5.0 - h));
}

/* a host copy of a (rows, ld) buffer with columns [c0, c1) set to NaN: the part a kernel overwrites */
static float *poison_cols(const float *h, long rows, int ld, int c0, int c1)
{
    float *p = hcopy(h, (size_t)rows * ld);
    for (long r = 0; r < rows; r++)
        for (int j = c0; j < c1; j++) p[r * ld + j] = NAN;
    return p;
}

static void test_retention_case(const ret_case *c)
{
    const int B = c->B, T = c->T, H = c->H, dk = c->dk, dv = c->dv, Cq = H * dk, V = H * dv, N = 2 * Cq + 2 * V;
    const int rows = B * T, L = c->chunk < T ? c->chunk : T, nc = (T + L - 1) / L;
    const size_t nq = (size_t)rows * Cq, nv = (size_t)rows * V, nqkvg = (size_t)rows * N, kv = (size_t)dk * dv;
    const size_t nst = (size_t)B * H * nc * kv, nS = (size_t)B * H * kv, nr = (size_t)rows * H;
    char d[80], d2[120];
    snprintf(d, sizeof d, "B%d T%d H%d dk%d dv%d ch%d", B, T, H, dk, dv, c->chunk);
    float gamma[64];
    ret_gammas(gamma, H);

    /* split and its adjoint */
    float *qkvg = hrand(nqkvg, 1), *qr = malloc(nq * sizeof(float)), *kr = malloc(nq * sizeof(float));
    float *vh = malloc(nv * sizeof(float));
    float *gqkvg = DEVF(qkvg, nqkvg), *gqr = dev_poison(nq), *gkr = dev_poison(nq), *gvh = dev_poison(nv);
    for (int pos0 = 0; pos0 <= 1000; pos0 += 1000) {
        C->retention_split(qr, kr, vh, qkvg, B, T, H, dk, dv, pos0);
        G->fill(gqr, NAN, nq), G->fill(gkr, NAN, nq), G->fill(gvh, NAN, nv);
        G->retention_split(gqr, gkr, gvh, gqkvg, B, T, H, dk, dv, pos0);
        snprintf(d2, sizeof d2, "%s pos0=%d", d, pos0);
        report("retention_split", d2, fmax(rel_dev(gqr, qr, nq), fmax(rel_dev(gkr, kr, nq), rel_dev(gvh, vh, nv))));
    }
    float *dqkvg = hrand(nqkvg, 1), *pois = poison_cols(dqkvg, rows, N, 0, 2 * Cq + V);
    float *gdqkvg = DEVF(pois, nqkvg);
    G->upload(gqr, qr, nq * sizeof(float)), G->upload(gkr, kr, nq * sizeof(float)), G->upload(gvh, vh, nv * sizeof(float));
    C->retention_split_backward(dqkvg, qr, kr, vh, B, T, H, dk, dv, 37);
    G->retention_split_backward(gdqkvg, gqr, gkr, gvh, B, T, H, dk, dv, 37);
    report("retention_split_bwd", "  ... pos0=37 (g columns kept)", rel_dev(gdqkvg, dqkvg, nqkvg));

    /* chunkwise: rotated q, k (k carries dk^-0.5 as after the split), v */
    float *q = hrand(nq, 1), *k = hrand(nq, 1.0 / sqrt(dk)), *v = hrand(nv, 1), *dO = hrand(nv, 1);
    float *gq = DEVF(q, nq), *gk = DEVF(k, nq), *gv = DEVF(v, nv), *gdO = DEVF(dO, nv);
    size_t nw = ret_work_floats(c, c->chunk), nw0 = ret_work_floats(c, 0);
    float *o = malloc(nv * sizeof(float)), *st = malloc(nst * sizeof(float)), *S = malloc(nS * sizeof(float));
    float *work = malloc((nw > nw0 ? nw : nw0) * sizeof(float));
    float *go = dev_poison(nv), *gst = dev_poison(nst), *gS = dev_poison(nS), *gwork = dev_poison(nw > nw0 ? nw : nw0);
    C->retention_chunkwise_forward(o, st, S, q, k, v, gamma, B, T, H, dk, dv, c->chunk, work);
    G->retention_chunkwise_forward(go, gst, gS, gq, gk, gv, gamma, B, T, H, dk, dv, c->chunk, gwork);
    snprintf(d2, sizeof d2, "%s o, states, state", d);
    report("retention_chunk_fwd", d2, fmax(rel_dev(go, o, nv), fmax(rel_dev(gst, st, nst), rel_dev(gS, S, nS))));
    G->fill(go, NAN, nv), G->fill(gst, NAN, nst);
    G->retention_chunkwise_forward(go, gst, NULL, gq, gk, gv, gamma, B, T, H, dk, dv, c->chunk, gwork);
    report("retention_chunk_fwd", "  ... no final state", fmax(rel_dev(go, o, nv), rel_dev(gst, st, nst)));

    float *dq = malloc(nq * sizeof(float)), *dk_ = malloc(nq * sizeof(float)), *dv_ = malloc(nv * sizeof(float));
    float *gdq = dev_poison(nq), *gdk = dev_poison(nq), *gdv = dev_poison(nv);
    C->retention_chunkwise_backward(dq, dk_, dv_, dO, st, q, k, v, gamma, B, T, H, dk, dv, c->chunk, work);
    G->retention_chunkwise_backward(gdq, gdk, gdv, gdO, gst, gq, gk, gv, gamma, B, T, H, dk, dv, c->chunk, gwork);
    snprintf(d2, sizeof d2, "%s dq, dk, dv", d);
    report("retention_chunk_bwd", d2, fmax(rel_dev(gdq, dq, nq), fmax(rel_dev(gdk, dk_, nq), rel_dev(gdv, dv_, nv))));
    {
        float *h1 = fetch(gdq, nq), *h2 = fetch(gdk, nq), *h3 = fetch(gdv, nv);
        G->fill(gdq, NAN, nq), G->fill(gdk, NAN, nq), G->fill(gdv, NAN, nv);
        G->retention_chunkwise_backward(gdq, gdk, gdv, gdO, gst, gq, gk, gv, gamma, B, T, H, dk, dv, c->chunk, gwork);
        float *r1 = fetch(gdq, nq), *r2 = fetch(gdk, nq), *r3 = fetch(gdv, nv);
        report_exact("retention_chunk_bwd", "  ... run twice: same bits",
                     !memcmp(h1, r1, nq * sizeof(float)) && !memcmp(h2, r2, nq * sizeof(float)) &&
                         !memcmp(h3, r3, nv * sizeof(float)));
        free(h1), free(h2), free(h3), free(r1), free(r2), free(r3);
    }

    /* recurrent: from zeros and from a carried state; backward from zeros */
    float *S0 = hrand(nS, 0.5);
    for (int carried = 0; carried < 2; carried++) {
        float *Sc = carried ? hcopy(S0, nS) : calloc(nS, sizeof(float)), *gSc = DEVF(Sc, nS);
        C->retention_recurrent_forward(o, Sc, q, k, v, gamma, B, T, H, dk, dv);
        G->fill(go, NAN, nv);
        G->retention_recurrent_forward(go, gSc, gq, gk, gv, gamma, B, T, H, dk, dv);
        snprintf(d2, sizeof d2, "%s o, state%s", d, carried ? " (carried)" : "");
        report("retention_recur_fwd", d2, fmax(rel_dev(go, o, nv), rel_dev(gSc, Sc, nS)));
        free(Sc);
    }
    G->fill(gdq, NAN, nq), G->fill(gdk, NAN, nq), G->fill(gdv, NAN, nv);
    C->retention_recurrent_backward(dq, dk_, dv_, dO, q, k, v, gamma, B, T, H, dk, dv, work);
    G->retention_recurrent_backward(gdq, gdk, gdv, gdO, gq, gk, gv, gamma, B, T, H, dk, dv, gwork);
    snprintf(d2, sizeof d2, "%s dq, dk, dv", d);
    report("retention_recur_bwd", d2, fmax(rel_dev(gdq, dq, nq), fmax(rel_dev(gdk, dk_, nq), rel_dev(gdv, dv_, nv))));

    /* group norm and swish gate, g read from the g columns of qkvg (row stride N) */
    float *on = hrand(nv, 2), *w = hrand(V, 1), *bb = hrand(V, 1);
    for (size_t i = 0; i < nv; i++) on[i] += 0.3f;
    float *hh = malloc(nv * sizeof(float)), *mean = malloc(nr * sizeof(float)), *rstd = malloc(nr * sizeof(float));
    float *gon = DEVF(on, nv), *gw = DEVF(w, V), *gb = DEVF(bb, V);
    float *gh = dev_poison(nv), *gmean = dev_poison(nr), *grstd = dev_poison(nr);
    C->retention_norm_gate_forward(hh, mean, rstd, on, qkvg + 2 * Cq + V, N, w, bb, B, T, H, dv, 1e-6f);
    G->retention_norm_gate_forward(gh, gmean, grstd, gon, gqkvg + 2 * Cq + V, N, gw, gb, B, T, H, dv, 1e-6f);
    snprintf(d2, sizeof d2, "%s forward", d);
    report("retention_norm_gate", d2, fmax(rel_dev(gh, hh, nv), fmax(rel_dev(gmean, mean, nr), rel_dev(grstd, rstd, nr))));
    float *dh = hrand(nv, 1), *gdh = DEVF(dh, nv), *dwn = hrand(V, 1), *dbn = hrand(V, 1);
    float *gdwn = DEVF(dwn, V), *gdbn = DEVF(dbn, V);
    float *dgb = hrand(nqkvg, 1), *pg = poison_cols(dgb, rows, N, 2 * Cq + V, N), *gdgb = DEVF(pg, nqkvg);
    C->retention_norm_gate_backward(dv_, dgb + 2 * Cq + V, dwn, dbn, dh, on, qkvg + 2 * Cq + V, N, w, bb, mean, rstd,
                                    B, T, H, dv);
    G->fill(gdv, NAN, nv);
    G->retention_norm_gate_backward(gdv, gdgb + 2 * Cq + V, gdwn, gdbn, gdh, gon, gqkvg + 2 * Cq + V, N, gw, gb, gmean,
                                    grstd, B, T, H, dv);
    report("retention_norm_gate", "  ... backward do, dg (strided)", fmax(rel_dev(gdv, dv_, nv), rel_dev(gdgb, dgb, nqkvg)));
    report("retention_norm_gate", "  ... backward dw, db (accumulate)", fmax(rel_dev(gdwn, dwn, V), rel_dev(gdbn, dbn, V)));

    free(qkvg), free(qr), free(kr), free(vh), free(dqkvg), free(pois), free(q), free(k), free(v), free(dO);
    free(o), free(st), free(S), free(work), free(dq), free(dk_), free(dv_), free(S0), free(on), free(w), free(bb);
    free(hh), free(mean), free(rstd), free(dh), free(dwn), free(dbn), free(dgb), free(pg);
    dev_free_all();
}

/* one token at a time with a carried state, as the layer's step calls it (fresh inputs each token) */
static void test_retention_steps(int B, int H, int dk, int dv, int steps)
{
    size_t nS = (size_t)B * H * dk * dv, nq = (size_t)B * H * dk, nv = (size_t)B * H * dv;
    float gamma[64];
    ret_gammas(gamma, H);
    float *S = hrand(nS, 0.3), *gS = DEVF(S, nS), *go = dev_poison(nv), *o = malloc(nv * sizeof(float));
    double e = 0;
    for (int t = 0; t < steps; t++) {
        float *q = hrand(nq, 1), *k = hrand(nq, 0.3), *v = hrand(nv, 1);
        float *gq = DEVF(q, nq), *gk = DEVF(k, nq), *gv = DEVF(v, nv);
        C->retention_recurrent_forward(o, S, q, k, v, gamma, B, 1, H, dk, dv);
        G->fill(go, NAN, nv);
        G->retention_recurrent_forward(go, gS, gq, gk, gv, gamma, B, 1, H, dk, dv);
        e = fmax(e, rel_dev(go, o, nv));
        free(q), free(k), free(v);
    }
    char d[80];
    snprintf(d, sizeof d, "B%d H%d dk%d dv%d: %d steps, o, state", B, H, dk, dv, steps);
    report("retention_step", d, fmax(e, rel_dev(gS, S, nS)));
    free(S), free(o);
    dev_free_all();
}

static void test_retention(void)
{
    static const ret_case cases[] = {
        {2, 45, 4, 8, 16, 16},   /* the model check's shape; the last chunk 13 tokens */
        {1, 100, 2, 16, 32, 64}, /* two row tiles in a chunk; the last chunk 36 */
        {3, 20, 2, 8, 16, 64},   /* T < chunk: the parallel form */
        {2, 130, 3, 40, 72, 50}, /* dk, dv over one 32-wide tile (3 value blocks in the recurrent form) */
        {1, 77, 2, 64, 128, 77}, /* chunk = T */
        {2, 9, 2, 6, 12, 1},     /* chunk 1 */
        {1, 1, 3, 8, 16, 16},    /* one token */
        {1, 300, 2, 24, 40, 32}, /* many chunks */
        {1, 33, 1, 130, 20, 8},  /* dk 130: 32 state rows per thread in the recurrent kernels */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_retention_case(&cases[i]);
    test_retention_steps(1, 4, 8, 16, 20);
    test_retention_steps(2, 3, 32, 70, 9);
}

typedef struct la_case {
    int B, T, H, K, V, chunk, normalize, gated;
    double gs;   /* decay strength: g = -gs * softplus(normal) */
    float scale;
} la_case;

static float elu1(float x) { return x > 0 ? x + 1.0f : expf(x); }

/* q, k, v (and g) for a case: positive features when normalised (the denominator stays away from 0) */
static void la_inputs(const la_case *c, int T, float **q, float **k, float **v, float **g)
{
    size_t nk = (size_t)c->B * T * c->H * c->K, nv = (size_t)c->B * T * c->H * c->V;
    *q = hrand(nk, 1), *k = hrand(nk, 1), *v = hrand(nv, 1);
    if (c->normalize)
        for (size_t i = 0; i < nk; i++) (*q)[i] = elu1((*q)[i]), (*k)[i] = elu1((*k)[i]);
    *g = NULL;
    if (c->gated) {
        *g = hrand(nk, 1);
        for (size_t i = 0; i < nk; i++) (*g)[i] = (float)(-c->gs * log1p(exp((*g)[i])));
    }
}

/* a random state (B, H, K, Vw) whose normaliser column is positive */
static float *la_state(const la_case *c)
{
    int Vw = c->V + c->normalize;
    size_t n = (size_t)c->B * c->H * c->K * Vw;
    float *s = hrand(n, 0.3);
    if (c->normalize)
        for (size_t i = c->V; i < n; i += Vw) s[i] = fabsf(s[i]) + 0.5f;
    return s;
}

static void test_linattn_case(const la_case *c)
{
    const int B = c->B, T = c->T, H = c->H, K = c->K, V = c->V, ch = c->chunk, nz = c->normalize;
    const int Vw = V + nz, NC = (T + ch - 1) / ch, rows = B * T;
    const size_t nk = (size_t)rows * H * K, nv = (size_t)rows * H * V, nd = (size_t)rows * H;
    const size_t nS = (size_t)B * H * K * Vw, ncs = (size_t)B * H * NC * K * Vw;
    char d[80];
    snprintf(d, sizeof d, "B%d T%d H%d K%d V%d ch%d%s%s", B, T, H, K, V, ch, nz ? " norm" : "",
             c->gated ? (c->gs > 1 ? " gated(strong)" : " gated") : "");
    float *q, *k, *v, *g;
    la_inputs(c, T, &q, &k, &v, &g);
    float *gq = DEVF(q, nk), *gk = DEVF(k, nk), *gv = DEVF(v, nv), *gg = g ? DEVF(g, nk) : NULL;
    float *out = malloc(nv * sizeof(float)), *cs = malloc(ncs * sizeof(float)), *den = malloc(nd * sizeof(float));
    float *gout = dev_poison(nv), *gcs = dev_poison(ncs), *gden = dev_poison(nd);
    float *dout = hrand(nv, 1), *gdout = DEVF(dout, nv);
    float *dq = malloc(nk * sizeof(float)), *dk = malloc(nk * sizeof(float)), *dv = malloc(nv * sizeof(float));
    float *dg = malloc(nk * sizeof(float));
    float *gdq = dev_poison(nk), *gdk = dev_poison(nk), *gdv = dev_poison(nv), *gdg = dev_poison(nk);
    float *S0 = la_state(c), *Sc = hcopy(S0, nS), *gS = DEVF(S0, nS);
    int rc = C->linattn_forward(out, cs, nz ? den : NULL, NULL, q, k, v, g, B, T, H, K, V, ch, c->scale, nz, 1e-6f);
    int rg = G->linattn_forward(gout, gcs, nz ? gden : NULL, NULL, gq, gk, gv, gg, B, T, H, K, V, ch, c->scale, nz, 1e-6f);
    if (rc < 0 || rg < 0) {
        printf("%-22s %-34s FAIL (%s)\n", "linattn_forward", d, pf_error_message());
        n_fail++;
        goto done;
    }
    double e = fmax(rel_dev(gout, out, nv), rel_dev(gcs, cs, ncs));
    if (nz) e = fmax(e, rel_dev(gden, den, nd));
    report("linattn_forward", d, e);

    rc = C->linattn_backward(dq, dk, dv, g ? dg : NULL, dout, out, cs, nz ? den : NULL, q, k, v, g, B, T, H, K, V, ch,
                             c->scale, nz);
    rg = G->linattn_backward(gdq, gdk, gdv, g ? gdg : NULL, gdout, gout, gcs, nz ? gden : NULL, gq, gk, gv, gg, B, T, H,
                             K, V, ch, c->scale, nz);
    if (rc < 0 || rg < 0) {
        printf("%-22s %-34s FAIL (%s)\n", "linattn_backward", d, pf_error_message());
        n_fail++;
        goto done;
    }
    report("linattn_backward", g ? "  ... dq, dk, dv, dg" : "  ... dq, dk, dv",
           fmax(fmax(rel_dev(gdq, dq, nk), rel_dev(gdk, dk, nk)), fmax(rel_dev(gdv, dv, nv), g ? rel_dev(gdg, dg, nk) : 0)));
    {
        float *h1 = fetch(gdq, nk), *h2 = fetch(gdk, nk), *h3 = fetch(gdv, nv), *h4 = fetch(gdg, nk);
        G->fill(gdq, NAN, nk), G->fill(gdk, NAN, nk), G->fill(gdv, NAN, nv);
        if (g) G->fill(gdg, NAN, nk);
        G->linattn_backward(gdq, gdk, gdv, g ? gdg : NULL, gdout, gout, gcs, nz ? gden : NULL, gq, gk, gv, gg, B, T, H,
                            K, V, ch, c->scale, nz);
        float *r1 = fetch(gdq, nk), *r2 = fetch(gdk, nk), *r3 = fetch(gdv, nv), *r4 = fetch(gdg, nk);
        report_exact("linattn_backward", "  ... run twice: same bits",
                     !memcmp(h1, r1, nk * sizeof(float)) && !memcmp(h2, r2, nk * sizeof(float)) &&
                         !memcmp(h3, r3, nv * sizeof(float)) && (!g || !memcmp(h4, r4, nk * sizeof(float))));
        free(h1), free(h2), free(h3), free(h4), free(r1), free(r2), free(r3), free(r4);
    }

    /* keeping nothing (no chunk states, denominators or state); then from a carried state */
    G->fill(gout, NAN, nv);
    rg = G->linattn_forward(gout, NULL, NULL, NULL, gq, gk, gv, gg, B, T, H, K, V, ch, c->scale, nz, 1e-6f);
    report("linattn_forward", "  ... keeping no states", rg < 0 ? NAN : rel_dev(gout, out, nv));
    G->fill(gout, NAN, nv);
    C->linattn_forward(out, NULL, NULL, Sc, q, k, v, g, B, T, H, K, V, ch, c->scale, nz, 1e-6f);
    rg = G->linattn_forward(gout, NULL, NULL, gS, gq, gk, gv, gg, B, T, H, K, V, ch, c->scale, nz, 1e-6f);
    report("linattn_forward", "  ... carried state (out, state)", rg < 0 ? NAN : fmax(rel_dev(gout, out, nv), rel_dev(gS, Sc, nS)));

done:
    free(q), free(k), free(v), free(g), free(out), free(cs), free(den), free(dout), free(dq), free(dk), free(dv), free(dg);
    free(S0), free(Sc);
    dev_free_all();
}

/* one token at a time, chunk 1, carrying the state, as the layers' steps call it */
static void test_linattn_steps(const la_case *c, int steps)
{
    const int B = c->B, H = c->H, K = c->K, V = c->V, nz = c->normalize;
    const size_t nk = (size_t)B * H * K, nv = (size_t)B * H * V, nS = (size_t)B * H * K * (V + nz);
    float *S = la_state(c), *gS = DEVF(S, nS), *out = malloc(nv * sizeof(float)), *gout = dev_poison(nv);
    double e = 0;
    for (int t = 0; t < steps; t++) {
        float *q, *k, *v, *g;
        la_inputs(c, 1, &q, &k, &v, &g);
        float *gq = DEVF(q, nk), *gk = DEVF(k, nk), *gv = DEVF(v, nv), *gg = g ? DEVF(g, nk) : NULL;
        C->linattn_forward(out, NULL, NULL, S, q, k, v, g, B, 1, H, K, V, 1, c->scale, nz, 1e-6f);
        G->fill(gout, NAN, nv);
        int rg = G->linattn_forward(gout, NULL, NULL, gS, gq, gk, gv, gg, B, 1, H, K, V, 1, c->scale, nz, 1e-6f);
        e = fmax(e, rg < 0 ? NAN : rel_dev(gout, out, nv));
        free(q), free(k), free(v), free(g);
    }
    char d[80];
    snprintf(d, sizeof d, "B%d H%d K%d V%d%s%s: %d steps", B, H, K, V, nz ? " norm" : "", c->gated ? " gated" : "", steps);
    report("linattn_step", d, fmax(e, rel_dev(gS, S, nS)));
    free(S), free(out);
    dev_free_all();
}

static void test_linattn(void)
{
    static const la_case cases[] = {
        {3, 45, 4, 8, 8, 64, 1, 0, 0, 1.0f},      /* linear_attention's defaults at the model's size: T < chunk */
        {3, 45, 4, 8, 8, 16, 1, 0, 0, 1.0f},      /* the last chunk 13 tokens */
        {2, 45, 4, 4, 8, 64, 0, 1, 1.0 / 16, 0.5f}, /* gla's defaults at the model's size */
        {2, 100, 2, 40, 32, 32, 1, 0, 0, 1.0f},   /* V = 32: the normaliser column in a second tile */
        {2, 100, 2, 40, 31, 32, 1, 1, 0.25, 0.3f}, /* gated and normalised; Vw = 32 */
        {1, 130, 3, 24, 70, 50, 0, 1, 0.25, 0.2f}, /* V over two tiles, two row tiles in a chunk */
        {2, 77, 2, 16, 16, 100, 0, 1, 3.0, 0.25f}, /* strong decays: exponents of masked pairs overflow */
        {2, 9, 2, 8, 8, 1, 1, 1, 0.25, 1.0f},     /* chunk 1 */
        {1, 1, 2, 8, 8, 16, 0, 0, 0, 1.0f},       /* one token (plain: normalised, dq and dk are ~eps; gated, dg ~0) */
        {1, 300, 2, 16, 24, 64, 0, 1, 0.1, 0.25f}, /* many chunks, the last one 44 */
        {1, 200, 1, 8, 8, 7, 0, 0, 0, 1.0f},      /* ungated, unnormalised */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_linattn_case(&cases[i]);
    static const la_case steps[] = {
        {1, 1, 4, 8, 8, 1, 1, 0, 0, 1.0f}, {1, 1, 4, 4, 8, 1, 0, 1, 1.0 / 16, 0.5f}, {2, 1, 3, 40, 33, 1, 1, 1, 0.25, 0.3f},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) test_linattn_steps(&steps[i], 15);
}

/* ---- a small model on both devices -------------------------------------------------------------- */

/* A layer spec: a kind and "name=value ..." options (numbers, true/false or words). */
typedef struct layer_spec {
    const char *kind, *options;
} layer_spec;

static int apply_options(pf_config *c, const char *kind, const char *options)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", options ? options : "");
    for (char *save = NULL, *tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) return pf_error("bad option '%s'", tok);
        *eq = '\0';
        char *end;
        double v = strtod(eq + 1, &end);
        int rc;
        if (eq[1] && !*end) rc = pf_config_set_number(c, kind, tok, v);
        else if (!strcmp(eq + 1, "true") || !strcmp(eq + 1, "false")) rc = pf_config_set_bool(c, kind, tok, eq[1] == 't');
        else rc = pf_config_set_string(c, kind, tok, eq + 1);
        if (rc < 0) return -1;
    }
    return 0;
}

static pf_model *small_model(const pf_backend *be, const layer_spec *layers, int n)
{
    pf_model_config cfg = {.vocab = 37, .dim = 32, .seed = 11, .norm = PF_NORM_RMS, .norm_eps = 1e-5f, .be = be};
    pf_model *m = pf_model_new(&cfg);
    if (!m) return NULL;
    for (int i = 0; i < n; i++) {
        const pf_layer_kind *kind = pf_layer_kind_find(layers[i].kind);
        if (!kind) {
            pf_error("no layer kind '%s'", layers[i].kind);
            pf_model_free(m);
            return NULL;
        }
        pf_config c;
        pf_config_init(&c, kind->options, kind->n_options);
        if (apply_options(&c, kind->name, layers[i].options) < 0 || pf_model_add_layer(m, kind, &c, -1) < 0) {
            pf_model_free(m);
            return NULL;
        }
    }
    if (pf_model_build(m) < 0) {
        pf_model_free(m);
        return NULL;
    }
    return m;
}

/* The model on both devices: forward logits, one training step (gradients, parameters after AdamW,
 * loss), then the stepped logits token by token after the update. */
static void model_check(const char *what, const layer_spec *layers, int n_layers)
{
    pf_model *mc = small_model(C, layers, n_layers), *mg = mc ? small_model(G, layers, n_layers) : NULL;
    if (!mc || !mg) {
        printf("%-22s %-34s FAIL (%s)\n", "model", what, pf_error_message());
        n_fail++;
        pf_model_free(mc);
        return;
    }
    enum { B = 3, T = 45 };
    int32_t in[B * T], tg[B * T];
    float mask[B * T];
    for (int i = 0; i < B * T; i++) {
        in[i] = (int32_t)pf_rng_below(&rng, 37);
        tg[i] = (int32_t)pf_rng_below(&rng, 37);
        mask[i] = pf_rng_uniform(&rng) < 0.8 ? 1.0f : 0.0f;
    }
    mask[0] = 1.0f;
    pf_tensor *lc = NULL, *lg = NULL;
    pf_train_config tc;
    pf_train_config_default(&tc);
    pf_train_stats sc, sg;
    size_t np = pf_model_n_params(mc);
    float *gg = NULL, *pg = NULL;
    double step_err = 0;
    if (pf_model_forward(mc, in, B, T, &lc) < 0 || pf_model_forward(mg, in, B, T, &lg) < 0) goto failed;
    report("model forward", what, rel(lg->data, lc->data, (size_t)B * T * 37));
    if (pf_model_train_step(mc, in, tg, mask, B, T, &tc, &sc) < 0 || pf_model_train_step(mg, in, tg, mask, B, T, &tc, &sg) < 0)
        goto failed;
    gg = fetch(pf_model_grads(mg), np), pg = fetch(pf_model_params(mg), np);
    report("model train step", "  ... gradients", rel(gg, pf_model_grads(mc), np));
    report("model train step", "  ... parameters after AdamW", rel(pg, pf_model_params(mc), np));
    report("model train step", "  ... loss", fabs(sg.loss - sc.loss) / sc.loss);
    /* stepping, token by token, after the update: the logits of every step. The GPU model takes the
     * cpu's updated weights first, so that this checks the step kernels alone: AdamW's first update
     * is about lr * sign(g), and a gradient that cancels to ~1e-10 may take either sign on either
     * device (the gradients and parameters are compared above). */
    G->upload(pf_model_params(mg), pf_model_params(mc), np * sizeof(float));
    pf_model_reset(mc);
    pf_model_reset(mg);
    for (int t = 0; t < 40; t++) {
        pf_tensor *sc_ = NULL, *sg_ = NULL;
        if (pf_model_step(mc, in[t], &sc_) < 0 || pf_model_step(mg, in[t], &sg_) < 0) goto failed;
        step_err = fmax(step_err, rel(sg_->data, sc_->data, 37));
        pf_tensor_free(sc_), pf_tensor_free(sg_);
    }
    report("model step", "  ... 40 tokens, worst step's logits", step_err);
    goto done;
failed:
    printf("%-22s %-34s FAIL (%s)\n", "model", what, pf_error_message());
    n_fail++;
done:
    free(gg), free(pg);
    pf_tensor_free(lc), pf_tensor_free(lg);
    pf_model_free(mc), pf_model_free(mg);
}

static void test_model(void)
{
    static const layer_spec attn[] = {{"mlp", ""}, {"attention", "kv_heads=2 tile=16"}, {"mlp", ""}};
    model_check("mlp+attention(GQA, tile 16)+mlp", attn, 3);
    /* every other layer kind whose kernels the cuda backend has (the rest: say so) */
    static const struct { const char *what; layer_spec layers[2]; } kinds[] = {
        {"mamba x2 (state 16, conv 4)", {{"mamba", ""}, {"mamba", "state=7 conv=3"}}},
        {"s4d x2", {{"s4d", ""}, {"s4d", "state=5 expand=1"}}},
        {"mamba2 x2", {{"mamba2", "head_dim=16 chunk=16"}, {"mamba2", "head_dim=8 chunk=7"}}},
        {"mamba2 x2 (N 13, Q 64 > T; E 32, Q 10)",
         {{"mamba2", "state=13 head_dim=32 chunk=64 conv=3"}, {"mamba2", "state=20 head_dim=16 expand=1 chunk=10"}}},
        {"retention x2 (chunkwise, recurrent)", {{"retention", "form=chunkwise chunk=16"}, {"retention", "form=recurrent"}}},
        {"retention x2 (parallel; ch 7, H2)", {{"retention", "form=parallel"}, {"retention", "form=chunkwise chunk=7 heads=2"}}},
        {"retention x2 (recurrent H2; ch 64>T)", {{"retention", "form=recurrent heads=2"}, {"retention", "chunk=64"}}},
        {"linear_attention + gla", {{"linear_attention", ""}, {"gla", ""}}},
        {"linear_attention x2 (ch 16; relu 7)",
         {{"linear_attention", "chunk=16"}, {"linear_attention", "feature=relu normalize=false chunk=7 heads=2"}}},
        {"gla x2 (chunk 16; H 2, chunk 7)", {{"gla", "chunk=16"}, {"gla", "heads=2 expand_k=1 chunk=7"}}},
        {"moe x2 (top-2; expert choice)", {{"moe", "experts=8 top_k=2 capacity=1.25"}, {"moe", "router=expert_choice experts=4"}}},
        {"moe (switch, jitter, shared, gelu)", {{"moe", "router=switch jitter=0.1 shared=1 act=gelu"}, {"mlp", ""}}},
        {"jamba's: mamba inner_norm, moe renorm=false",
         {{"mamba", "inner_norm=true state=6"}, {"moe", "experts=4 top_k=2 renorm=false"}}},
        {"attention rope=false window=9 + mlp gelu", {{"attention", "rope=false window=9 tile=8"}, {"mlp", "act=gelu"}}},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        const pf_layer_kind *k = pf_layer_kind_find(kinds[i].layers[0].kind);
        if (k && pf_layer_kind_check_backend(k, G) < 0) {
            printf("%-22s %-34s not yet (%s)\n", "model", kinds[i].what, pf_error_message());
            continue;
        }
        model_check(kinds[i].what, kinds[i].layers, 2);
    }
}

/* ---- timing ------------------------------------------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void bench(void)
{
    printf("\nattention forward timing (float32, causal, median of 20 after 3 warm-ups; then the backward alone)\n");
    printf("%6s %4s %4s %5s %10s %12s %10s %8s %12s\n", "T", "H", "D", "tile", "flash ms", "flash TFLOP/s", "gemm ms",
           "bwd ms", "bwd TFLOP/s");
    int cfgs[][4] = {{1024, 8, 64, 64}, {1024, 8, 128, 64}, {4096, 8, 64, 64}, {4096, 8, 128, 64}};
    for (int ci = 0; ci < 4; ci++) {
        int T = cfgs[ci][0], H = cfgs[ci][1], D = cfgs[ci][2], tile = cfgs[ci][3], B = 4;
        int stride = 3 * H * D;
        size_t nqkv = (size_t)B * T * stride;
        float *h = hrand(nqkv, 1.0);
        float *gqkv = DEVF(h, nqkv), *gout = dev_poison((size_t)B * T * H * D), *glse = dev_poison((size_t)B * H * T);
        /* the unfused baseline's two products: S = Q K^T (per head, full T x T), O = S V */
        float *S = dev_poison((size_t)H * T * T);
        float *hdo = hrand((size_t)B * T * H * D, 1.0), *gdout = DEVF(hdo, (size_t)B * T * H * D);
        float *gd = dev_poison(nqkv);
        double t_flash[20], t_gemm[20], t_bwd[20];
        for (int r = 0; r < 23; r++) {
            G->sync();
            double t0 = now();
            G->attention_forward(gout, glse, gqkv, gqkv + H * D, gqkv + 2 * H * D, stride, B, T, H, H, D, 0, tile,
                                 NULL, NULL);
            G->sync();
            double t1 = now();
            for (int b = 0; b < B; b++) {
                const float *qb = gqkv + (size_t)b * T * stride;
                G->gemm_batched(0, 1, T, T, D, 1.0f, qb, stride, D, qb + H * D, stride, D, 0.0f, S, T, (long)T * T, H);
                G->gemm_batched(0, 0, T, D, T, 1.0f, S, T, (long)T * T, qb + 2 * H * D, stride, D, 0.0f, gout, H * D,
                                D, H);
            }
            G->sync();
            double t2 = now();
            /* the backward from the forward's out and lse (gout was overwritten by the products above) */
            G->attention_forward(gout, glse, gqkv, gqkv + H * D, gqkv + 2 * H * D, stride, B, T, H, H, D, 0, tile,
                                 NULL, NULL);
            G->sync();
            double t3 = now();
            G->attention_backward(gd, gd + H * D, gd + 2 * H * D, gdout, gout, glse, gqkv, gqkv + H * D,
                                  gqkv + 2 * H * D, stride, B, T, H, H, D, 0, tile);
            G->sync();
            double t4 = now();
            if (r >= 3) t_flash[r - 3] = t1 - t0, t_gemm[r - 3] = t2 - t1, t_bwd[r - 3] = t4 - t3;
        }
        for (int i = 0; i < 20; i++) /* sort for medians */
            for (int j = i + 1; j < 20; j++) {
                if (t_flash[j] < t_flash[i]) { double x = t_flash[i]; t_flash[i] = t_flash[j]; t_flash[j] = x; }
                if (t_gemm[j] < t_gemm[i]) { double x = t_gemm[i]; t_gemm[i] = t_gemm[j]; t_gemm[j] = x; }
                if (t_bwd[j] < t_bwd[i]) { double x = t_bwd[i]; t_bwd[i] = t_bwd[j]; t_bwd[j] = x; }
            }
        double flops = 4.0 * B * H * D * (double)T * T / 2; /* causal: half of QK^T and PV */
        /* bwd TFLOP/s counts the backward's five products (2.5 times the forward's two), as FlashAttention-2
         * does; the kernels compute seven (S and dP in both the dq and the dk/dv kernels) */
        printf("%6d %4d %4d %5d %10.3f %12.2f %10.3f %8.3f %12.2f\n", T, H, D, tile, t_flash[10] * 1e3,
               flops / t_flash[10] / 1e12, t_gemm[10] * 1e3, t_bwd[10] * 1e3, 2.5 * flops / t_bwd[10] / 1e12);
        free(h), free(hdo);
        dev_free_all();
    }
    printf("(gemm ms: the two full T x T products of an unfused attention through cuBLAS, without its softmax "
           "or mask: a lower bound for a naive version)\n");

    /* the selective scan alone, as Mamba calls it (dim 256 and 512 with expand 2, state 16) */
    printf("\nselective scan timing (float32, median of 10 after 2 warm-ups; fwd, then fwd + bwd)\n");
    printf("%4s %5s %5s %5s %3s %9s %12s\n", "", "B", "T", "E", "N", "fwd ms", "fwd+bwd ms");
    int scfg[][4] = {{8, 512, 512, 16}, {8, 1024, 1024, 16}};
    for (int ci = 0; ci < 2; ci++) {
        scan_case c = {scfg[ci][0], scfg[ci][1], scfg[ci][2], scfg[ci][3], SSM_CHUNK, 1, 0, 1};
        scan_ops o;
        scan_setup(&c, &o);
        size_t rows = (size_t)c.B * c.T, ld = 3 + 2 * (size_t)c.N;
        float *hdy = hrand(rows * c.E, 1);
        pf_ssm_scan_grad gg = {.dy = DEVF(hdy, rows * c.E), .dy_ld = c.E,
                               .dx = dev_poison(rows * c.E), .ddt = dev_poison(rows * c.E),
                               .dA_log = dev_poison((size_t)c.E * c.N), .dD = dev_poison(c.E)};
        float *dbc = dev_poison(rows * ld);
        gg.dB = dbc + 3, gg.dC = dbc + 3 + c.N;
        double tf[10], tb[10];
        for (int r = 0; r < 12; r++) {
            G->sync();
            double t0 = now();
            G->ssm_scan_forward(&o.gs);
            G->sync();
            double t1 = now();
            G->ssm_scan_backward(&o.gs, &gg);
            G->sync();
            double t2 = now();
            if (r >= 2) tf[r - 2] = t1 - t0, tb[r - 2] = t2 - t0;
        }
        for (int i = 0; i < 10; i++)
            for (int j = i + 1; j < 10; j++) {
                if (tf[j] < tf[i]) { double x = tf[i]; tf[i] = tf[j]; tf[j] = x; }
                if (tb[j] < tb[i]) { double x = tb[i]; tb[i] = tb[j]; tb[j] = x; }
            }
        printf("scan %5d %5d %5d %3d %9.3f %12.3f\n", c.B, c.T, c.E, c.N, tf[5] * 1e3, tb[5] * 1e3);
        for (int i = 0; i < o.n; i++) free(o.bufs_h[i]);
        free(o.hs.y), free(o.hs.hsave), free(hdy);
        dev_free_all();
    }
}

/* ---- learning: the same training on both devices ---------------------------------------------- */

/* The training of tests/c/test_learning.c (tests/c/learn_mqar.c) on the cpu and on cuda: both reach
 * the same accuracy on the same 512 fresh sequences, within noise (0.02). */
static void test_learning(void)
{
    double lc = 0, lg = 0, ac = learn_mqar(C, &lc), ag = learn_mqar(G, &lg);
    int ok = ac >= 0 && ag >= 0 && fabs(ag - ac) <= 0.02;
    printf("%-22s %-34s cpu %.4f (loss %.4f), cuda %.4f (loss %.4f)  %s\n", "learning",
           "mqar, 2 attention, 2000 steps", ac, lc, ag, lg, ok ? "ok" : "FAIL");
    if (ac < 0 || ag < 0) printf("    (%s)\n", pf_error_message());
    ok ? n_pass++ : n_fail++;
}

int main(int argc, char **argv)
{
    G = pf_device("cuda");
    if (!G) {
        printf("skipped: no GPU (%s)\n", pf_error_message());
        return 0;
    }
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : (uint64_t)time(NULL);
    pf_rng_seed(&rng, seed);
    printf("cuda parity, inputs from seed %llu (tolerance %.0e)\n", (unsigned long long)seed, TOL);
    test_memory();
    test_gemm();
    test_elementwise();
    test_embedding();
    test_norms();
    test_loss();
    test_adamw();
    test_rope();
    test_attention();
    test_ssm();
    test_ssd();
    test_moe();
    test_retention();
    test_linattn();
    test_model();
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) bench();
    test_learning();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
