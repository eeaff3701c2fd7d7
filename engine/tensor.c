/* Host tensors (see tensor.h). */
#include "engine/tensor.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"

size_t pf_shape_numel(int ndim, const int *shape)
{
    if (ndim < 1 || ndim > PF_MAX_DIMS) return 0;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0) return 0;
        if (n > SIZE_MAX / sizeof(float) / (size_t)shape[i]) return 0;
        n *= (size_t)shape[i];
    }
    return n;
}

pf_tensor *pf_tensor_new(int ndim, const int *shape)
{
    size_t n = pf_shape_numel(ndim, shape);
    if (n == 0) {
        pf_error("tensor: bad shape (%d dims)", ndim);
        return NULL;
    }
    pf_tensor *t = calloc(1, sizeof *t);
    float *data = calloc(n, sizeof(float));
    if (!t || !data) {
        free(t);
        free(data);
        pf_error("tensor: out of memory for %zu floats", n);
        return NULL;
    }
    t->data = data;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof(int));
    return t;
}

pf_tensor *pf_tensor_new1(int d0) { return pf_tensor_new(1, (int[]){d0}); }
pf_tensor *pf_tensor_new2(int d0, int d1) { return pf_tensor_new(2, (int[]){d0, d1}); }
pf_tensor *pf_tensor_new3(int d0, int d1, int d2) { return pf_tensor_new(3, (int[]){d0, d1, d2}); }

pf_tensor *pf_tensor_copy(const pf_tensor *t)
{
    pf_tensor *c = pf_tensor_new(t->ndim, t->shape);
    if (c) memcpy(c->data, t->data, pf_tensor_numel(t) * sizeof(float));
    return c;
}

void pf_tensor_free(pf_tensor *t)
{
    if (!t) return;
    free(t->data);
    free(t);
}

size_t pf_tensor_numel(const pf_tensor *t) { return pf_shape_numel(t->ndim, t->shape); }
