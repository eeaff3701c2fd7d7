/* The cpu backend's kernel table: OpenBLAS for products, plain C with OpenMP for the rest. */
#include "kernels/cpu/cpu.h"

const pf_backend pf_backend_cpu = {
    .name = "cpu",
    .init = cpu_init,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_memcpy,
    .download = cpu_memcpy,
    .copy = cpu_memcpy,
    .zero = cpu_zero,
    .sync = cpu_sync,

    .gemm = cpu_gemm,
    .gemm_batched = cpu_gemm_batched,

    .add = cpu_add,
    .axpy = cpu_axpy,
    .scale = cpu_scale,
    .fill = cpu_fill,
    .mul = cpu_mul,
    .act_forward = cpu_act_forward,
    .act_backward = cpu_act_backward,
    .bias_add = cpu_bias_add,
    .bias_grad = cpu_bias_grad,
    .sumsq = cpu_sumsq,

    .embedding_forward = cpu_embedding_forward,
    .embedding_backward = cpu_embedding_backward,

    .rmsnorm_forward = cpu_rmsnorm_forward,
    .rmsnorm_backward = cpu_rmsnorm_backward,
    .layernorm_forward = cpu_layernorm_forward,
    .layernorm_backward = cpu_layernorm_backward,

    .swiglu_forward = cpu_swiglu_forward,
    .swiglu_backward = cpu_swiglu_backward,

    /* attention */
    .rope = cpu_rope,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .attention_step = cpu_attention_step,

    .cross_entropy = cpu_cross_entropy,
    .adamw = cpu_adamw,

    /* recurrent-state layers (issue 3) */
    .retention_split = cpu_retention_split,
    .retention_split_backward = cpu_retention_split_backward,
    .retention_chunkwise_forward = cpu_retention_chunkwise_forward,
    .retention_chunkwise_backward = cpu_retention_chunkwise_backward,
    .retention_recurrent_forward = cpu_retention_recurrent_forward,
    .retention_recurrent_backward = cpu_retention_recurrent_backward,
    .retention_norm_gate_forward = cpu_retention_norm_gate_forward,
    .retention_norm_gate_backward = cpu_retention_norm_gate_backward,
    .conv1d_causal_forward = cpu_conv1d_causal_forward,
    .conv1d_causal_backward = cpu_conv1d_causal_backward,
    .ssm_scan_forward = cpu_ssm_scan_forward,
    .ssm_scan_backward = cpu_ssm_scan_backward,
    .ssd_forward = cpu_ssd_forward,
    .ssd_backward = cpu_ssd_backward,
    .ssd_step = cpu_ssd_step,
    .rmsnorm_gated_forward = cpu_rmsnorm_gated_forward,
    .rmsnorm_gated_backward = cpu_rmsnorm_gated_backward,
    /* mixture of experts (issue 4) */
    .moe_jitter = cpu_moe_jitter,
    .moe_route = cpu_moe_route,
    .moe_dispatch = cpu_moe_dispatch,
    .moe_expert_choice = cpu_moe_expert_choice,
    .moe_gather = cpu_moe_gather,
    .moe_combine = cpu_moe_combine,
    .moe_gate_grad = cpu_moe_gate_grad,
    .moe_router_backward = cpu_moe_router_backward,
    .moe_router_stats = cpu_moe_router_stats,
};
