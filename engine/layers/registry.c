/* Every layer kind the engine knows, for lookup by name. A new kind adds one line to each list. */
#include "engine/layer.h"

extern const pf_layer_kind pf_layer_mlp;
extern const pf_layer_kind pf_layer_attention;
extern const pf_layer_kind pf_layer_mamba;
extern const pf_layer_kind pf_layer_mamba2;
extern const pf_layer_kind pf_layer_s4d;
extern const pf_layer_kind pf_layer_retention;
extern const pf_layer_kind pf_layer_moe;

const pf_layer_kind *const pf_layer_kinds[] = {
    &pf_layer_mlp,
    &pf_layer_attention,
    &pf_layer_mamba,
    &pf_layer_mamba2,
    &pf_layer_s4d,
    &pf_layer_retention,
    &pf_layer_moe,
    NULL,
};
