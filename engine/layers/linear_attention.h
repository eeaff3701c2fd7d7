/* What the linear-attention layer kinds (linear_attention.c, gla.c) share: their state probes. */
#ifndef PF_LAYERS_LINEAR_ATTENTION_H
#define PF_LAYERS_LINEAR_ATTENTION_H

#include "engine/layer.h"

/* From a device state (H, K, Vw) whose first V columns are S (column V, when there, is the
 * normaliser z): "state" gives S as [H, K, V], "state_norm" gives the Frobenius norm of each
 * head's S as [H]. -1 with pf_error for any other name. */
int pf_linattn_probe_state(const pf_backend *be, const char *name, const float *state, int H, int K,
                        int V, int Vw, pf_tensor **out);

#endif
