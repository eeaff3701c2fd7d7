/* The model: token embedding -> blocks -> final norm -> LM head, trained with AdamW.
 *
 * A block is pre-norm residual, x + layer(norm(x)). Blocks may share weights (pf.repeat with
 * shared = true): a block built with share_with = j uses block j's parameters (layer and norm), and
 * its gradients add into the same buffer. Parameters, gradients and the two AdamW moments each live
 * in one flat device buffer carved into views, so the optimiser, checkpoints and device copies are
 * one loop or one memcpy.
 *
 * Lifecycle: pf_model_new, then pf_model_add_layer for each block, then pf_model_build (allocates
 * and initialises from the seed); pf_model_free. Every function returning int gives 0, or -1 with
 * pf_error set; a failed call leaves the model usable. */
#ifndef PF_MODEL_H
#define PF_MODEL_H

#include <stdint.h>

#include "engine/layer.h"
#include "engine/tensor.h"

typedef enum pf_norm_kind { PF_NORM_RMS = 0, PF_NORM_LAYER = 1 } pf_norm_kind;

typedef struct pf_model_config {
    int          vocab;          /* V */
    int          dim;            /* C */
    uint64_t     seed;
    pf_norm_kind norm;           /* norm of every block and the final norm */
    float        norm_eps;       /* 1e-5 */
    int          tie_embeddings; /* 1: the head reuses the embedding matrix */
    const pf_backend *be;        /* from pf_device */
} pf_model_config;

typedef struct pf_model pf_model;

/* What one training step does: the optimiser and schedule settings. */
typedef struct pf_train_config {
    float lr;              /* peak learning rate */
    float min_lr_ratio;    /* cosine decays to lr * min_lr_ratio at total_steps */
    int   warmup;          /* linear warmup steps */
    int   total_steps;     /* length of the schedule */
    float weight_decay;    /* AdamW, on matrices only */
    float beta1, beta2, eps;
    float clip;            /* max global gradient norm; 0: none */
    int   schedule_step;   /* where this step is in the schedule (1-based); 0: the optimiser's step */
} pf_train_config;

typedef struct pf_train_stats {
    int    step;           /* 1-based optimiser step just taken */
    double loss;           /* mean cross-entropy over the masked positions */
    double accuracy;       /* fraction of masked positions predicted right (argmax) */
    double aux_loss;       /* sum of the layers' weighted auxiliary losses */
    double grad_norm;      /* before clipping */
    double lr;             /* learning rate used */
    long   tokens;         /* tokens in the batch */
} pf_train_stats;

typedef struct pf_block_info {
    const pf_layer_kind *kind;
    int    share_with;     /* -1, or the block whose weights this one uses */
    size_t params;         /* parameters of the layer and its norm (0 if shared) */
    double step_seconds;   /* wall time of the layer's last step, host clock (0: not stepped yet) */
    pf_layer_info info;
} pf_block_info;

void pf_train_config_default(pf_train_config *c);

pf_model *pf_model_new(const pf_model_config *cfg);
/* Add a block of `kind` (options cfg, NULL for defaults). share_with: -1, or the index of an
 * earlier block of the same kind and options whose weights this block uses. Returns the index. */
int  pf_model_add_layer(pf_model *m, const pf_layer_kind *kind, const pf_config *cfg, int share_with);
int  pf_model_build(pf_model *m);
void pf_model_free(pf_model *m);

int              pf_model_n_layers(const pf_model *m);
pf_layer        *pf_model_layer(pf_model *m, int i);            /* 0-based */
const pf_model_config *pf_model_config_of(const pf_model *m);
size_t           pf_model_n_params(const pf_model *m);          /* distinct parameters */
void             pf_model_block_info(const pf_model *m, int i, pf_block_info *out);

/* Logits for a batch of sequences: tokens (B, T) on the host -> *logits (B, T, V) host tensor. */
int pf_model_forward(pf_model *m, const int32_t *tokens, int B, int T, pf_tensor **logits);
/* One token of the stepped sequence -> *logits (V). */
int pf_model_step(pf_model *m, int token, pf_tensor **logits);
/* Forget the stepped sequence (recurrent states, KV caches). */
void pf_model_reset(pf_model *m);
/* Tokens stepped since the last reset. */
int pf_model_position(const pf_model *m);

/* One optimiser step on a batch: inputs, targets (B, T) and mask (B, T) (weight of each position's
 * loss, 0 to skip) on the host. */
int pf_model_train_step(pf_model *m, const int32_t *inputs, const int32_t *targets,
                        const float *mask, int B, int T, const pf_train_config *cfg,
                        pf_train_stats *stats);
/* Loss and accuracy without updating: the same numbers train_step reports, no gradients. */
int pf_model_evaluate(pf_model *m, const int32_t *inputs, const int32_t *targets, const float *mask,
                      int B, int T, double *loss, double *accuracy);

/* Optimiser steps taken so far. */
int pf_model_steps_taken(const pf_model *m);

/* Flat buffers, for checkpoints and tests: parameters and gradients (n_params floats, device). */
float *pf_model_params(pf_model *m);
float *pf_model_grads(pf_model *m);
/* The AdamW moments (n_params floats, device): which = 0 the first, 1 the second. */
float *pf_model_adam(pf_model *m, int which);
/* Restore the optimiser step count (resuming from a checkpoint: AdamW's bias correction uses it). */
void   pf_model_set_steps_taken(pf_model *m, int steps);

/* The distinct parameters under checkpoint names, in flat-buffer order:
 *   embed.weight (V, C)                 the token embedding
 *   layers.{i}.norm.weight (C)          block i's pre-norm (and layers.{i}.norm.bias for LayerNorm)
 *   layers.{i}.mixer.{name}             block i's layer parameters, under the names it registers
 *   norm.weight (C), norm.bias (C)      the final norm (bias for LayerNorm)
 *   head.weight (V, C)                  the LM head, absent when tied to the embedding
 * i is the 0-based block index; a block that shares another's weights is not listed (its weights
 * are the other block's). */
typedef struct pf_named_param {
    char   name[96];
    int    ndim;
    int    shape[PF_MAX_DIMS];
    size_t offset;      /* floats from the start of the flat buffers (parameters, gradients, moments) */
    size_t numel;
} pf_named_param;
/* Fill out[0 .. cap-1] and return how many there are (call with cap = 0 to count). */
int pf_model_named_params(const pf_model *m, pf_named_param *out, int cap);

#endif
