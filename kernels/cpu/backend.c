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

    .cross_entropy = cpu_cross_entropy,
    .adamw = cpu_adamw,

    /* recurrent-state layers (issue 3) */
    .linattn_forward = cpu_linattn_forward,
    .linattn_backward = cpu_linattn_backward,
    /* mixture of experts (issue 4) */
};
