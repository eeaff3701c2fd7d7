/* The cuda backend's kernel table: cuBLAS for products, own kernels for the rest (kernels/cuda/<family>.cu).
 * C linkage, so the engine's C code finds it through kernels/kernels.h. Fields are in the order of
 * pf_backend (C++ designated initializers must be); kernels not written for cuda yet stay NULL. */
#include "kernels/cuda/cuda.h"

/* kernels other helpers add to pf_backend before their cuda versions exist stay NULL on purpose */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

extern "C" const pf_backend pf_backend_cuda = {
    .name = "cuda",
    .init = cuda_init,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .copy = cuda_copy,
    .zero = cuda_zero,
    .sync = cuda_sync,

    .gemm = cuda_gemm,
    .gemm_batched = cuda_gemm_batched,

    .add = cuda_add,
    .axpy = cuda_axpy,
    .scale = cuda_scale,
    .fill = cuda_fill,
    .mul = cuda_mul,
    .act_forward = cuda_act_forward,
    .act_backward = cuda_act_backward,
    .bias_add = cuda_bias_add,
    .bias_grad = cuda_bias_grad,
    .sumsq = cuda_sumsq,

    .embedding_forward = cuda_embedding_forward,
    .embedding_backward = cuda_embedding_backward,

    .rmsnorm_forward = cuda_rmsnorm_forward,
    .rmsnorm_backward = cuda_rmsnorm_backward,
    .layernorm_forward = cuda_layernorm_forward,
    .layernorm_backward = cuda_layernorm_backward,

    .swiglu_forward = cuda_swiglu_forward,
    .swiglu_backward = cuda_swiglu_backward,

    .rope = cuda_rope,
    .attention_forward = cuda_attention_forward,
    .attention_backward = cuda_attention_backward,
    .attention_step = cuda_attention_step,

    .cross_entropy = cuda_cross_entropy,
    .adamw = cuda_adamw,

    .retention_split = cuda_retention_split,
    .retention_split_backward = cuda_retention_split_backward,
    .retention_chunkwise_forward = cuda_retention_chunkwise_forward,
    .retention_chunkwise_backward = cuda_retention_chunkwise_backward,
    .retention_recurrent_forward = cuda_retention_recurrent_forward,
    .retention_recurrent_backward = cuda_retention_recurrent_backward,
    .retention_norm_gate_forward = cuda_retention_norm_gate_forward,
    .retention_norm_gate_backward = cuda_retention_norm_gate_backward,
    .conv1d_causal_forward = cuda_conv1d_causal_forward,
    .conv1d_causal_backward = cuda_conv1d_causal_backward,
    .ssm_scan_forward = cuda_ssm_scan_forward,
    .ssm_scan_backward = cuda_ssm_scan_backward,
    .ssd_forward = cuda_ssd_forward,
    .ssd_backward = cuda_ssd_backward,
    .ssd_step = cuda_ssd_step,
    .rmsnorm_gated_forward = cuda_rmsnorm_gated_forward,
    .rmsnorm_gated_backward = cuda_rmsnorm_gated_backward,
    .linattn_forward = cuda_linattn_forward,
    .linattn_backward = cuda_linattn_backward,

    .moe_jitter = cuda_moe_jitter,
    .moe_route = cuda_moe_route,
    .moe_dispatch = cuda_moe_dispatch,
    .moe_expert_choice = cuda_moe_expert_choice,
    .moe_gather = cuda_moe_gather,
    .moe_combine = cuda_moe_combine,
    .moe_gate_grad = cuda_moe_gate_grad,
    .moe_router_backward = cuda_moe_router_backward,
    .moe_router_stats = cuda_moe_router_stats,
};
