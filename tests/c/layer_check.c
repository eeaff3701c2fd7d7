/* The gradient and step-equals-forward checks shared by every layer's test (see layer_check.h). */
#include "tests/c/layer_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"

/* The flat parameter and gradient buffers of a checked layer, kept beside it. */
typedef struct checked {
    float *params, *grads;
} checked;

#define MAX_CHECKED 64
static struct { pf_layer *l; checked c; } registry[MAX_CHECKED];

static void die(const char *what)
{
    fprintf(stderr, "layer_check: %s: %s\n", what, pf_error_message());
    abort();
}

pf_config check_config(const pf_layer_kind *kind, const char *spec)
{
    pf_config cfg;
    pf_config_init(&cfg, kind->options, kind->n_options);
    char buf[512];
    snprintf(buf, sizeof buf, "%s", spec ? spec : "");
    for (char *save = NULL, *tok = strtok_r(buf, " ,", &save); tok; tok = strtok_r(NULL, " ,", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) die(tok);
        *eq = '\0';
        const char *val = eq + 1;
        char *end;
        double v = strtod(val, &end);
        int rc;
        if (*val && *end == '\0') rc = pf_config_set_number(&cfg, kind->name, tok, v);
        else if (!strcmp(val, "true") || !strcmp(val, "false"))
            rc = pf_config_set_bool(&cfg, kind->name, tok, !strcmp(val, "true"));
        else rc = pf_config_set_string(&cfg, kind->name, tok, val);
        if (rc < 0) die(spec);
    }
    return cfg;
}

pf_layer *check_layer_new(const pf_layer_kind *kind, const char *spec, int dim, uint64_t seed)
{
    pf_config cfg = check_config(kind, spec);
    pf_layer *l = pf_layer_create(kind, &cfg, dim, &pf_backend_cpu, seed);
    if (!l) die(kind->name);
    checked c = {calloc(l->numel + 1, sizeof(float)), calloc(l->numel + 1, sizeof(float))};
    pf_rng rng;
    pf_rng_seed(&rng, seed);
    pf_layer_init_params(l, c.params, &rng);
    pf_layer_bind(l, c.params, c.grads);
    for (int i = 0; i < MAX_CHECKED; i++)
        if (!registry[i].l) {
            registry[i].l = l;
            registry[i].c = c;
            return l;
        }
    abort();
}

static checked *find(const pf_layer *l)
{
    for (int i = 0; i < MAX_CHECKED; i++)
        if (registry[i].l == l) return &registry[i].c;
    abort();
}

void check_layer_free(pf_layer *l)
{
    for (int i = 0; i < MAX_CHECKED; i++)
        if (registry[i].l == l) {
            free(registry[i].c.params);
            free(registry[i].c.grads);
            registry[i].l = NULL;
        }
    pf_layer_destroy(l);
}

void check_fill_normal(float *x, size_t n, double std, uint64_t seed)
{
    pf_rng rng;
    pf_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) x[i] = (float)(std * pf_rng_normal(&rng));
}

double check_max_rel_diff(const float *a, const float *b, size_t n)
{
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > diff || isnan(d)) diff = isnan(d) ? INFINITY : d;
        if (fabs(a[i]) > scale) scale = fabs(a[i]);
    }
    return diff / (scale > 1e-30 ? scale : 1e-30);
}

/* L = sum(out * R) in double */
static double loss_of(pf_layer *l, float *out, const float *x, const float *R, int B, int T)
{
    if (l->kind->forward(l, out, x, B, T) < 0) die("forward");
    size_t n = (size_t)B * T * l->dim;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)out[i] * R[i];
    return s + l->aux_loss;
}

/* sampled entries of one tensor: analytic vs central difference */
static double check_tensor(pf_layer *l, float *out, float *x, const float *R, int B, int T,
                           float *value, const float *analytic, size_t numel, int samples, double eps,
                           pf_rng *rng, const char *name)
{
    double dd = 0, na = 0, nn = 0;
    int count = (size_t)samples < numel ? samples : (int)numel;
    for (int s = 0; s < count; s++) {
        size_t i = (size_t)samples < numel ? pf_rng_below(rng, (uint32_t)numel) : (size_t)s;
        float keep = value[i];
        value[i] = keep + (float)eps;
        double lp = loss_of(l, out, x, R, B, T);
        value[i] = keep - (float)eps;
        double lm = loss_of(l, out, x, R, B, T);
        value[i] = keep;
        double num = (lp - lm) / (2 * eps);
        double ana = analytic[i];
        dd += (ana - num) * (ana - num);
        na += ana * ana;
        nn += num * num;
    }
    double scale = sqrt(na > nn ? na : nn);
    double err = scale > 1e-12 ? sqrt(dd) / scale : sqrt(dd);
    printf("#   %-10s %-24s |g| %.3e  rel err %.2e\n", l->kind->name, name, sqrt(na), err);
    return err;
}

double check_gradients(pf_layer *l, int B, int T, int samples, double eps, uint64_t seed)
{
    checked *c = find(l);
    size_t n = (size_t)B * T * l->dim;
    float *x = malloc(n * sizeof(float)), *R = malloc(n * sizeof(float));
    float *out = malloc(n * sizeof(float)), *dx = malloc(n * sizeof(float));
    check_fill_normal(x, n, 1.0, seed);
    check_fill_normal(R, n, 1.0, seed + 1);

    memset(c->grads, 0, l->numel * sizeof(float));
    loss_of(l, out, x, R, B, T);
    if (l->kind->backward(l, dx, R, x, B, T) < 0) die("backward");
    float *analytic = malloc((l->numel + 1) * sizeof(float));
    memcpy(analytic, c->grads, l->numel * sizeof(float));

    pf_rng rng;
    pf_rng_seed(&rng, seed + 2);
    double worst = check_tensor(l, out, x, R, B, T, x, dx, n, samples, eps, &rng, "input");
    for (int p = 0; p < l->n_params; p++) {
        const pf_layer_param *pp = &l->params[p];
        double e = check_tensor(l, out, x, R, B, T, c->params + pp->offset, analytic + pp->offset,
                                pp->numel, samples, eps, &rng, pp->name);
        if (e > worst || isnan(e)) worst = isnan(e) ? INFINITY : e;
    }
    free(analytic);
    free(x);
    free(R);
    free(out);
    free(dx);
    return worst;
}

double check_step_matches_forward(pf_layer *l, int T, uint64_t seed)
{
    int C = l->dim;
    size_t n = (size_t)T * C;
    float *x = malloc(n * sizeof(float)), *full = malloc(n * sizeof(float));
    float *stepped = malloc(n * sizeof(float));
    check_fill_normal(x, n, 1.0, seed);
    if (l->kind->forward(l, full, x, 1, T) < 0) die("forward");
    l->kind->reset(l);
    for (int t = 0; t < T; t++)
        if (l->kind->step(l, stepped + (size_t)t * C, x + (size_t)t * C) < 0) die("step");
    double err = check_max_rel_diff(full, stepped, n);
    printf("#   %-10s step vs forward over %d tokens: max rel diff %.2e\n", l->kind->name, T, err);
    free(x);
    free(full);
    free(stepped);
    return err;
}
