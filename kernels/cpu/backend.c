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
    /* mixture of experts (issue 4) */
};
