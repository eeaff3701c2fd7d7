/* Every layer kind the engine knows, for lookup by name. A new kind adds one line to each list. */
#include "engine/layer.h"

extern const pf_layer_kind pf_layer_mlp;
extern const pf_layer_kind pf_layer_linear_attention;
extern const pf_layer_kind pf_layer_gla;

const pf_layer_kind *const pf_layer_kinds[] = {
    &pf_layer_mlp,
    &pf_layer_linear_attention,
    &pf_layer_gla,
    NULL,
};
