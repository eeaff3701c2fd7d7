/* Checkpoints: the model's flat parameter buffer to named safetensors tensors and back. */
#include "engine/checkpoint.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"

#define LIST_MAX 10     /* problems named in one message; the rest are counted */

/* ---- a list of problems for one message ---------------------------------------------------------- */

typedef struct problems {
    char text[2048];
    int  n;
} problems;

static void problem(problems *p, const char *fmt, ...) PF_PRINTF(2, 3);

static void problem(problems *p, const char *fmt, ...)
{
    if (p->n++ >= LIST_MAX) return;
    size_t len = strlen(p->text);
    if (len + 4 >= sizeof p->text) return;
    if (len) {
        memcpy(p->text + len, ", ", 3);
        len += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->text + len, sizeof p->text - len, fmt, ap);
    va_end(ap);
}

static int problems_error(const problems *p, const char *what)
{
    if (p->n > LIST_MAX) return pf_error("%s: %s, and %d more", what, p->text, p->n - LIST_MAX);
    return pf_error("%s: %s", what, p->text);
}

/* ---- save ---------------------------------------------------------------------------------------- */

int pf_checkpoint_save(pf_model *m, const char *path, const char *const *meta, int n_meta, int optimizer)
{
    int n = pf_model_named_params(m, NULL, 0);
    int copies = optimizer ? 3 : 1;
    size_t total = pf_model_n_params(m);
    const pf_backend *be = pf_model_config_of(m)->be;
    pf_named_param *np = calloc((size_t)n, sizeof *np);
    pf_st_entry *e = calloc((size_t)n * copies, sizeof *e);
    char (*names)[112] = calloc((size_t)n * copies, sizeof *names);
    float *host = malloc(total * copies * sizeof(float));
    const char **allmeta = calloc((size_t)(n_meta + 1) * 2, sizeof *allmeta);
    int rc = 0;
    if (!np || !e || !names || !host || !allmeta) {
        rc = pf_error("save: out of memory for %zu parameters", total);
        goto out;
    }
    pf_model_named_params(m, np, n);
    be->download(host, pf_model_params(m), total * sizeof(float));
    if (optimizer) {
        be->download(host + total, pf_model_adam(m, 0), total * sizeof(float));
        be->download(host + 2 * total, pf_model_adam(m, 1), total * sizeof(float));
    }
    if (be->sync() < 0) {
        rc = -1;
        goto out;
    }
    static const char *const prefix[3] = {"", "optimizer.m.", "optimizer.v."};
    for (int c = 0; c < copies; c++)
        for (int i = 0; i < n; i++) {
            int k = c * n + i;
            snprintf(names[k], sizeof names[k], "%s%s", prefix[c], np[i].name);
            e[k] = (pf_st_entry){names[k], np[i].ndim, np[i].shape, host + c * total + np[i].offset};
        }
    for (int i = 0; i < 2 * n_meta; i++) allmeta[i] = meta[i];
    char steps[32];
    if (optimizer) {
        snprintf(steps, sizeof steps, "%d", pf_model_steps_taken(m));
        allmeta[2 * n_meta] = "optimizer.steps";
        allmeta[2 * n_meta + 1] = steps;
    }
    rc = pf_st_save(path, e, n * copies, allmeta, n_meta + (optimizer ? 1 : 0));
out:
    free(np);
    free(e);
    free(names);
    free(host);
    free(allmeta);
    return rc;
}

/* ---- load ---------------------------------------------------------------------------------------- */

static const pf_checkpoint_source *source_of(const pf_checkpoint_source *src, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(src[i].ours, name) == 0) return &src[i];
    return NULL;
}

static void shape_text(char *buf, size_t cap, int ndim, const uint64_t *shape)
{
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && len < cap; d++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%llu", d ? ", " : "", (unsigned long long)shape[d]);
    if (len < cap) snprintf(buf + len, cap - len, "]");
}

/* check tensor `theirs` of file against parameter p and read it into dst; problems go to absent
 * (no such tensor) or pr (the rest) */
static void load_one(problems *absent, problems *pr, const pf_named_param *p, const pf_st_file *file,
                     const char *theirs, float *dst)
{
    const pf_st_tensor *t = pf_st_find(file, theirs);
    if (!t) {
        if (strcmp(p->name, theirs) == 0) problem(absent, "%s", theirs);
        else problem(absent, "%s (for %s)", theirs, p->name);
        return;
    }
    int same = t->ndim == p->ndim;
    for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == (uint64_t)p->shape[d];
    if (!same) {
        uint64_t want[PF_MAX_DIMS];
        for (int d = 0; d < p->ndim; d++) want[d] = (uint64_t)p->shape[d];
        char a[96], b[96];
        shape_text(a, sizeof a, p->ndim, want);
        shape_text(b, sizeof b, t->ndim, t->shape);
        problem(pr, "%s: shape %s but '%s' in %s is %s", p->name, a, theirs, file->path, b);
        return;
    }
    if (pf_st_read_f32(file, t, dst) < 0) problem(pr, "%s", pf_error_message());
}

int pf_checkpoint_load(pf_model *m, const pf_checkpoint_source *src, int n, int optimizer)
{
    int np_n = pf_model_named_params(m, NULL, 0);
    size_t total = pf_model_n_params(m);
    int copies = optimizer ? 3 : 1;
    const pf_backend *be = pf_model_config_of(m)->be;
    pf_named_param *np = calloc((size_t)np_n, sizeof *np);
    float *host = calloc(total * copies, sizeof(float));
    if (!np || !host) {
        free(np);
        free(host);
        return pf_error("load: out of memory for %zu parameters", total);
    }
    pf_model_named_params(m, np, np_n);
    problems missing = {{0}, 0}, absent = {{0}, 0}, bad = {{0}, 0};
    for (int i = 0; i < np_n; i++) {
        const pf_checkpoint_source *s = source_of(src, n, np[i].name);
        if (!s) {
            problem(&missing, "%s", np[i].name);
            continue;
        }
        load_one(&absent, &bad, &np[i], s->file, s->theirs, host + np[i].offset);
        for (int c = 1; c < copies; c++) {
            char name[160];
            snprintf(name, sizeof name, "optimizer.%c.%s", c == 1 ? 'm' : 'v', s->theirs);
            load_one(&absent, &bad, &np[i], s->file, name, host + c * total + np[i].offset);
        }
    }
    int rc = 0, steps = 0;
    if (optimizer) {
        const char *v = n > 0 ? pf_st_meta(src[0].file, "optimizer.steps") : NULL;
        char *end = NULL;
        long s = v ? strtol(v, &end, 10) : -1;
        if (!v || *end || s < 0 || s > 1L << 30)
            rc = pf_error("load: %s has no valid optimizer.steps metadata (saved without the optimizer?)",
                          n > 0 ? src[0].file->path : "the checkpoint");
        steps = (int)s;
    }
    if (rc < 0) {
        /* the optimiser state is absent: that says it all */
    } else if (missing.n) rc = problems_error(&missing, "load: no tensor given for");
    else if (bad.n) rc = problems_error(&bad, "load");
    else if (absent.n) rc = problems_error(&absent, "load: tensors missing from the checkpoint");
    if (rc == 0) {
        be->upload(pf_model_params(m), host, total * sizeof(float));
        if (optimizer) {
            be->upload(pf_model_adam(m, 0), host + total, total * sizeof(float));
            be->upload(pf_model_adam(m, 1), host + 2 * total, total * sizeof(float));
            pf_model_set_steps_taken(m, steps);
        }
        rc = be->sync();
    }
    free(np);
    free(host);
    return rc;
}
