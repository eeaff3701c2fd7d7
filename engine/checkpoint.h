/* Checkpoints: a model's parameters to and from safetensors files (engine/safetensors.h).
 *
 * Names are those of pf_model_named_params (embed.weight, layers.{i}.norm.weight,
 * layers.{i}.mixer.{name}, norm.weight, head.weight); with the optimiser, the AdamW moments follow
 * as optimizer.m.{name} and optimizer.v.{name} and the step count as the metadata entry
 * "optimizer.steps". What describes the model itself (its layers and options) is the caller's
 * metadata: the engine does not know the Lua config. */
#ifndef PF_CHECKPOINT_H
#define PF_CHECKPOINT_H

#include "engine/model.h"
#include "engine/safetensors.h"

/* Save the parameters (and, with optimizer set, the moments and step count) and the n_meta
 * metadata pairs (meta[2i] key, meta[2i+1] value) to path, atomically (pf_st_save). */
int pf_checkpoint_save(pf_model *m, const char *path, const char *const *meta, int n_meta, int optimizer);

/* Where one parameter comes from: tensor `theirs` of `file`. */
typedef struct pf_checkpoint_source {
    const char         *ours;       /* a pf_model_named_params name */
    const pf_st_file   *file;
    const char         *theirs;
} pf_checkpoint_source;

/* Fill every parameter from its source (converting F16/BF16/F64 to float32); shapes must match
 * exactly. Every parameter of the model must have a source: the error lists the ones that have
 * none, or whose tensor is missing from its file, and the shape mismatches. Nothing is changed
 * unless everything loads. With optimizer set, the sources' optimizer.m./optimizer.v. tensors and
 * the "optimizer.steps" metadata of the first source's file are restored too. */
int pf_checkpoint_load(pf_model *m, const pf_checkpoint_source *src, int n, int optimizer);

#endif
