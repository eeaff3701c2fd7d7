/* s4d: the Mamba block with its selective scan replaced by a linear time-invariant one (S4D-Real,
 * Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State Space Models"):
 * Δ, B and C are parameters fixed per channel instead of functions of the token. Everything else is
 * the mamba layer's (in_proj, causal conv1d + SiLU, D skip, SiLU(z) gate, out_proj: the same shapes
 * and code, engine/layers/mamba.h), so the two differ only in selectivity: the "Mamba block + S4"
 * row of Table 1 of the Mamba paper, against "Mamba block + S6".
 *
 *   [x | z] = in_proj(u);  x = SiLU(conv1d(x))
 *   Δ = exp(log_dt),  A = -exp(A_log)           log_dt (E), A_log (E, N), B (E, N), C (E, N), D (E)
 *   h_t = exp(Δ A) ⊙ h_{t-1} + Δ B x_t,   y_t = C · h_t + D x_t
 *   out = out_proj(y * SiLU(z))
 *
 * Letters: B batch, T tokens, C model width, E = expand * C (d_inner), N = state, K = conv.
 * Init: S4D-Real, A = -(1..N) per channel (A_log = log(1..N), the same as Mamba's), log_dt from a
 * log-uniform Δ in [dt_min, dt_max], B = 1, C ~ normal(0, 1), D = 1. Training runs the recurrence
 * through the same scan kernel as mamba (Δ, B, C broadcast over tokens), not the convolution form. */
#include <math.h>
#include <string.h>

#include "engine/error.h"
#include "engine/layers/mamba.h"

static const pf_option s4d_options[] = {
    {"state", PF_OPT_INT, 16, 1, 256, NULL, "d_state N: states per channel (default 16)"},
    {"expand", PF_OPT_INT, 2, 1, 16, NULL, "d_inner = expand * dim (default 2)"},
    {"conv", PF_OPT_INT, 4, 1, 64, NULL, "width of the causal depthwise conv1d (default 4)"},
    {"dt_min", PF_OPT_NUMBER, 0.001, 1e-6, 10, NULL, "smallest Δ at init (default 0.001)"},
    {"dt_max", PF_OPT_NUMBER, 0.1, 1e-6, 10, NULL, "largest Δ at init (default 0.1)"},
};

static int s4d_create(pf_layer *l)
{
    if (pf_config_get(&l->cfg, "dt_min") > pf_config_get(&l->cfg, "dt_max"))
        return pf_error("s4d: 'dt_min' must not exceed 'dt_max'");
    int N = pf_config_int(&l->cfg, "state");
    PF_TRY(ssm_block_create(l, 0, N, pf_config_int(&l->cfg, "expand"), pf_config_int(&l->cfg, "conv"), 0));
    ssm_block *s = l->impl;
    int E = s->E;
    PF_TRY(ssm_block_add_in(l));
    PF_TRY(pf_layer_add_param(l, "log_dt", 1, (int[]){E}, PF_INIT_CUSTOM, 0, 0, &s->log_dt, &s->dlog_dt));
    PF_TRY(pf_layer_add_param(l, "A_log", 2, (int[]){E, N}, PF_INIT_CUSTOM, 0, 0, &s->A_log, &s->dA_log));
    PF_TRY(pf_layer_add_param(l, "B", 2, (int[]){E, N}, PF_INIT_ONES, 0, 0, &s->Bp, &s->dBp));
    PF_TRY(pf_layer_add_param(l, "C", 2, (int[]){E, N}, PF_INIT_NORMAL, 1.0f, 0, &s->Cp, &s->dCp));
    return ssm_block_add_out(l);
}

static void s4d_init_custom(const pf_layer *l, const pf_layer_param *p, float *host, pf_rng *rng)
{
    const ssm_block *s = l->impl;
    if (!strcmp(p->name, "A_log")) {
        ssm_block_init_A_log(s, host);
        return;
    }
    double lo = pf_config_get(&l->cfg, "dt_min"), hi = pf_config_get(&l->cfg, "dt_max");
    for (int e = 0; e < s->E; e++) host[e] = (float)log(ssm_block_sample_dt(rng, lo, hi));
}

const pf_layer_kind pf_layer_s4d = {
    .name = "s4d",
    .summary = "the Mamba block with a time-invariant diagonal SSM (S4D-Real): Δ, B, C fixed per channel",
    .options = s4d_options,
    .n_options = sizeof s4d_options / sizeof s4d_options[0],
    .probes = ssm_block_probes,
    .n_probes = 3,
    .create = s4d_create,
    .init_custom = s4d_init_custom,
    .forward = ssm_block_forward,
    .backward = ssm_block_backward,
    .step = ssm_block_step,
    .reset = ssm_block_reset,
    .probe = ssm_block_probe,
    .describe = ssm_block_describe,
    .destroy = ssm_block_destroy,
    .kernels = ssm_block_kernels,
};
