/* Every layer kind the engine knows, for lookup by name. A new kind adds one line to each list
 * (.gitattributes merges this file as a union, so branches adding kinds merge cleanly). */
#include "engine/layer.h"

extern const pf_layer_kind pf_layer_mlp;
extern const pf_layer_kind pf_layer_attention;
extern const pf_layer_kind pf_layer_retention;

const pf_layer_kind *const pf_layer_kinds[] = {
    &pf_layer_mlp,
    &pf_layer_attention,
    &pf_layer_retention,
    NULL,
};
