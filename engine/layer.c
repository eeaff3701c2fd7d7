/* Shared machinery of layers: parameter registration, binding, init, scratch buffers, probes. */
#include "engine/layer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"

int pf_layer_add_param(pf_layer *l, const char *name, int ndim, const int *shape, pf_init init,
                       float init_arg, int decay, float **value, float **grad)
{
    if (l->n_params == l->cap_params) {
        int cap = l->cap_params ? 2 * l->cap_params : 8;
        pf_layer_param *grown = realloc(l->params, (size_t)cap * sizeof *grown);
        if (!grown) return pf_error("%s: out of memory for parameter %s", l->kind->name, name);
        l->params = grown;
        l->cap_params = cap;
    }
    size_t n = pf_shape_numel(ndim, shape);
    if (n == 0) return pf_error("%s: parameter %s has an empty or too large shape", l->kind->name, name);
    pf_layer_param *p = &l->params[l->n_params++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    memcpy(p->shape, shape, (size_t)ndim * sizeof(int));
    p->numel = n;
    p->init = init;
    p->init_arg = init_arg;
    p->decay = decay;
    p->value = value;
    p->grad = grad;
    p->offset = l->numel;
    l->numel += n;
    return 0;
}

int pf_layer_kind_check_backend(const pf_layer_kind *kind, const pf_backend *be)
{
    if (!kind->kernels) return 0;
    for (const pf_kernel_need *k = kind->kernels; k->name; k++) {
        void (*fn)(void);
        memcpy(&fn, (const char *)be + k->offset, sizeof fn); /* every field is a function pointer */
        if (!fn)
            return pf_error("%s: the %s backend has no kernel '%s' yet (this layer kind cannot run there)",
                            kind->name, be->name, k->name);
    }
    return 0;
}

pf_layer *pf_layer_create(const pf_layer_kind *kind, const pf_config *cfg, int dim,
                          const pf_backend *be, uint64_t seed)
{
    if (pf_layer_kind_check_backend(kind, be) < 0) return NULL;
    pf_layer *l = calloc(1, sizeof *l);
    if (!l) {
        pf_error("%s: out of memory", kind->name);
        return NULL;
    }
    l->kind = kind;
    l->be = be;
    l->dim = dim;
    l->seed = seed;
    if (cfg) l->cfg = *cfg;
    else pf_config_init(&l->cfg, kind->options, kind->n_options);
    if (kind->create(l) < 0) {
        if (kind->destroy) kind->destroy(l);
        free(l->params);
        free(l);
        return NULL;
    }
    return l;
}

void pf_layer_destroy(pf_layer *l)
{
    if (!l) return;
    if (l->kind->destroy) l->kind->destroy(l);
    free(l->params);
    free(l);
}

void pf_layer_bind(pf_layer *l, float *params, float *grads)
{
    for (int i = 0; i < l->n_params; i++) {
        pf_layer_param *p = &l->params[i];
        *p->value = params + p->offset;
        *p->grad = grads + p->offset;
    }
}

void pf_layer_init_params(const pf_layer *l, float *host, pf_rng *rng)
{
    for (int i = 0; i < l->n_params; i++) {
        const pf_layer_param *p = &l->params[i];
        float *x = host + p->offset;
        switch (p->init) {
        case PF_INIT_ZEROS:
            memset(x, 0, p->numel * sizeof(float));
            break;
        case PF_INIT_ONES:
            for (size_t j = 0; j < p->numel; j++) x[j] = 1.0f;
            break;
        case PF_INIT_NORMAL:
            for (size_t j = 0; j < p->numel; j++) x[j] = (float)(p->init_arg * pf_rng_normal(rng));
            break;
        case PF_INIT_UNIFORM:
            for (size_t j = 0; j < p->numel; j++)
                x[j] = (float)(p->init_arg * (2.0 * pf_rng_uniform(rng) - 1.0));
            break;
        case PF_INIT_CUSTOM:
            if (l->kind->init_custom) l->kind->init_custom(l, p, x, rng);
            break;
        }
    }
}

int pf_buffer_reserve(const pf_backend *be, float **buf, size_t *capacity, size_t n)
{
    if (*buf && *capacity >= n) return 0;
    if (*buf) be->free(*buf);
    *buf = NULL;
    *capacity = 0;
    if (n == 0) return 0;
    *buf = be->alloc(n * sizeof(float));
    if (!*buf) return -1;
    *capacity = n;
    return 0;
}

void pf_buffer_release(const pf_backend *be, float **buf, size_t *capacity)
{
    if (*buf) be->free(*buf);
    *buf = NULL;
    *capacity = 0;
}

int pf_probe_from_device(const pf_backend *be, pf_tensor **out, const float *src, int ndim,
                         const int *shape)
{
    pf_tensor *t = pf_tensor_new(ndim, shape);
    if (!t) return -1;
    be->download(t->data, src, pf_tensor_numel(t) * sizeof(float));
    *out = t;
    return 0;
}

const pf_layer_kind *pf_layer_kind_find(const char *name)
{
    for (int i = 0; pf_layer_kinds[i]; i++)
        if (strcmp(pf_layer_kinds[i]->name, name) == 0) return pf_layer_kinds[i];
    return NULL;
}

int pf_layer_probe(pf_layer *l, const char *name, pf_tensor **out)
{
    *out = NULL;
    for (int i = 0; i < l->kind->n_probes; i++)
        if (strcmp(l->kind->probes[i].name, name) == 0) {
            if (!l->kind->probe) break;
            return l->kind->probe(l, name, out);
        }
    char list[256] = "";
    size_t len = 0;
    for (int i = 0; i < l->kind->n_probes; i++) {
        int w = snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", l->kind->probes[i].name);
        if (w < 0 || (size_t)w >= sizeof list - len) break;
        len += (size_t)w;
    }
    return pf_error("%s has no probe '%s' (it has: %s)", l->kind->name, name,
                    l->kind->n_probes ? list : "none");
}
