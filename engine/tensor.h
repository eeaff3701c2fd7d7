/* Tensors: float32, contiguous, row-major, up to 4 dims. The engine's hot paths work on raw device
 * pointers with shapes in comments (llm.c style); pf_tensor is what crosses the engine's boundary:
 * probes, logits and anything the Lua side or the display holds. A pf_tensor always owns host memory. */
#ifndef PF_TENSOR_H
#define PF_TENSOR_H

#include <stddef.h>

#define PF_MAX_DIMS 4

typedef struct pf_tensor {
    float *data;              /* (shape[0], ..., shape[ndim-1]) on the host */
    int    ndim;
    int    shape[PF_MAX_DIMS];
} pf_tensor;

/* A new zeroed tensor; NULL with pf_error set on a bad shape or no memory. */
pf_tensor *pf_tensor_new(int ndim, const int *shape);
pf_tensor *pf_tensor_new1(int d0);
pf_tensor *pf_tensor_new2(int d0, int d1);
pf_tensor *pf_tensor_new3(int d0, int d1, int d2);
pf_tensor *pf_tensor_copy(const pf_tensor *t);
void       pf_tensor_free(pf_tensor *t);
size_t     pf_tensor_numel(const pf_tensor *t);

/* Element count of a shape, or 0 when a dimension is not positive or the count overflows. */
size_t pf_shape_numel(int ndim, const int *shape);

#endif
