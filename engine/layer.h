/* Layers: the interface every layer kind implements, and the pieces they share.
 *
 * A layer maps (B, T, C) to (B, T, C). Its kind (engine/layers/<kind>.c) is a const pf_layer_kind:
 * the option table, the parameter list it registers at create, and the functions
 *   forward  (a batch of sequences, caching what backward needs),
 *   backward (din overwritten, parameter gradients accumulated with +=),
 *   step     (one token of one sequence, using and updating the recurrent state or KV cache),
 *   reset    (clears that state), probe (fills a host tensor on demand; costs nothing otherwise).
 * The model wraps every layer as a pre-norm residual block; a layer does not see the residual.
 *
 * Parameters: at create a layer registers each named parameter (pf_layer_param) with a pointer to
 * its view; the model carves all views out of one flat buffer (and the gradients out of another), so
 * views are valid from bind on, never before forward/backward/step run. Shared (weight-tied) layers
 * are bound to the same memory, so their gradients add up. */
#ifndef PF_LAYER_H
#define PF_LAYER_H

#include <stddef.h>

#include "engine/options.h"
#include "engine/rng.h"
#include "engine/tensor.h"
#include "kernels/kernels.h"

typedef struct pf_layer pf_layer;

typedef enum pf_init {
    PF_INIT_ZEROS,
    PF_INIT_ONES,
    PF_INIT_NORMAL,     /* normal(0, arg) */
    PF_INIT_UNIFORM,    /* uniform(-arg, arg) */
    PF_INIT_CUSTOM,     /* the kind's init_custom fills it */
} pf_init;

typedef struct pf_layer_param {
    char     name[48];          /* the public reference's name: "in_proj.weight" */
    int      ndim;
    int      shape[PF_MAX_DIMS];
    size_t   numel;
    pf_init  init;
    float    init_arg;
    int      decay;             /* 1: AdamW weight decay applies (matrices); 0: norms, biases, A_log... */
    float  **value;             /* where the view into the parameter buffer is stored */
    float  **grad;              /* where the view into the gradient buffer is stored */
    size_t   offset;            /* floats from the start of the layer's block, set by the model */
} pf_layer_param;

typedef enum pf_refresh {
    PF_REFRESH_STEP,            /* after every step */
    PF_REFRESH_FORWARD,         /* after every forward */
    PF_REFRESH_TRAIN,           /* after every training step */
} pf_refresh;

typedef struct pf_probe_info {
    const char *name;
    const char *shape;          /* as documented: "[heads, kv_len]" */
    pf_refresh  refresh;
    const char *help;
} pf_probe_info;

/* What m:describe() shows per layer. */
typedef struct pf_layer_info {
    double flops_per_token;     /* forward multiply-adds x2 for one stepped token */
    double state_bytes;         /* recurrent state or KV cache held now by step */
    int    constant_state;      /* 1 when step is O(1) in the sequence length */
} pf_layer_info;

/* A kernel of pf_backend that a layer kind calls: the field's offset and its name (for the error). */
typedef struct pf_kernel_need {
    size_t      offset;         /* offsetof(pf_backend, field) */
    const char *name;           /* "ssm_scan_forward"; NULL ends a list */
} pf_kernel_need;
#define PF_KERNEL(field) {offsetof(pf_backend, field), #field}

typedef struct pf_layer_kind {
    const char          *name;          /* "attention" */
    const char          *summary;       /* one line for help and describe */
    const pf_option     *options;       /* (n_options) */
    int                  n_options;
    const pf_probe_info *probes;        /* (n_probes) */
    int                  n_probes;

    /* Read l->cfg and l->dim, allocate l->impl and register parameters with pf_layer_add_param.
     * -1 with pf_error when the options do not fit (e.g. heads does not divide dim). */
    int  (*create)(pf_layer *l);
    /* Optional: fill a PF_INIT_CUSTOM parameter on the host: host (numel). */
    void (*init_custom)(const pf_layer *l, const pf_layer_param *p, float *host, pf_rng *rng);
    /* in, out (B, T, C) device. */
    int  (*forward)(pf_layer *l, float *out, const float *in, int B, int T);
    /* dout (B, T, C) -> din (B, T, C) overwritten; gradients += . Called after forward on the same
     * in (passed again, unchanged) with the same B, T. */
    int  (*backward)(pf_layer *l, float *din, const float *dout, const float *in, int B, int T);
    /* in, out (C) device: one token of the stepped sequence. */
    int  (*step)(pf_layer *l, float *out, const float *in);
    void (*reset)(pf_layer *l);
    /* Fill *out with a new host tensor for probe `name`; -1 with pf_error when it has no data yet. */
    int  (*probe)(pf_layer *l, const char *name, pf_tensor **out);
    void (*describe)(const pf_layer *l, pf_layer_info *info);
    /* Optional: called after every optimiser step (1-based), for per-training-step probes. */
    void (*train_step_end)(pf_layer *l, int step);
    void (*destroy)(pf_layer *l);                  /* frees impl and device buffers */
    /* Every kernel the kind calls through l->be (PF_KERNEL(field) each, ending with {0, NULL}).
     * pf_layer_create fails with a clear error when the backend leaves one NULL (a kernel not
     * written for that device yet), so no layer ever calls through a NULL pointer. */
    const pf_kernel_need *kernels;
} pf_layer_kind;

struct pf_layer {
    const pf_layer_kind *kind;
    const pf_backend    *be;
    int                  dim;                /* C */
    pf_config            cfg;
    pf_layer_param      *params;             /* (n_params) registered at create, in bind order */
    int                  n_params, cap_params;
    size_t               numel;              /* floats in all parameters */
    int                  train;              /* 1 while training (jitter, dropout, history probes) */
    uint64_t             seed;               /* per-layer seed for anything random at run time */
    float                aux_loss;           /* weighted auxiliary loss of the last forward (0: none);
                                                its gradient is part of the layer's backward */
    void                *impl;               /* the kind's own state */
};

/* ---- for layer kinds ------------------------------------------------------------------------- */

/* Register a parameter; value/grad receive the views at bind. -1 when out of memory. */
int pf_layer_add_param(pf_layer *l, const char *name, int ndim, const int *shape, pf_init init,
                       float init_arg, int decay, float **value, float **grad);

/* Grow a device scratch buffer to hold at least n floats (contents are not kept). */
int pf_buffer_reserve(const pf_backend *be, float **buf, size_t *capacity, size_t n);
void pf_buffer_release(const pf_backend *be, float **buf, size_t *capacity);

/* Probe helpers: a new host tensor of the given shape filled from device (or host) memory. */
int pf_probe_from_device(const pf_backend *be, pf_tensor **out, const float *src, int ndim,
                         const int *shape);

/* ---- for the model and tests ----------------------------------------------------------------- */

/* All layer kinds, for lookup by name; NULL-terminated. */
extern const pf_layer_kind *const pf_layer_kinds[];
const pf_layer_kind *pf_layer_kind_find(const char *name);

/* A layer of `kind` with width dim and options cfg on backend be; NULL with pf_error (also when be
 * lacks a kernel that kind->kernels names). */
pf_layer *pf_layer_create(const pf_layer_kind *kind, const pf_config *cfg, int dim,
                          const pf_backend *be, uint64_t seed);
void      pf_layer_destroy(pf_layer *l);
/* 0 when be has every kernel the kind lists; -1 with pf_error naming the first missing one. */
int       pf_layer_kind_check_backend(const pf_layer_kind *kind, const pf_backend *be);
/* Point every parameter view at params + offset (and grads likewise). */
void      pf_layer_bind(pf_layer *l, float *params, float *grads);
/* Initialise this layer's parameters into host (l->numel), in bind order. */
void      pf_layer_init_params(const pf_layer *l, float *host, pf_rng *rng);
int       pf_layer_probe(pf_layer *l, const char *name, pf_tensor **out);

#endif
