/* cuda backend: matrix products through cuBLAS.
 *
 * cuBLAS is column-major; a row-major matrix with leading dimension ld is the column-major view of its
 * transpose with the same ld. So the row-major C (m, n) = op(A) op(B) is computed as the column-major
 * C^T (n, m) = op(B)^T op(A)^T: operands swapped, each keeping its own transpose flag.
 *
 * Precision: float32 throughout with TF32 off (CUBLAS_DEFAULT_MATH, which for Sgemm does not use the
 * tensor cores' TF32 mode), so products match the cpu backend to float32 rounding. To trade that for
 * speed, set the environment variable PF_CUDA_TF32=1 before the backend initialises: the handle then
 * uses CUBLAS_TF32_TENSOR_OP_MATH (inputs rounded to 10-bit mantissas; expect relative errors near
 * 3e-4 instead of 1e-6). NVIDIA_TF32_OVERRIDE=0 forbids TF32 regardless. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda.h"

static cublasHandle_t handle;

cublasHandle_t cuda_blas_handle(void)
{
    if (handle) return handle;
    cublasStatus_t st = cublasCreate(&handle);
    if (st != CUBLAS_STATUS_SUCCESS) {
        handle = NULL;
        pf_error("cuda: cublasCreate failed: %s", cublasGetStatusString(st));
        return NULL;
    }
    const char *tf32 = getenv("PF_CUDA_TF32");
    cublasMath_t mode = tf32 && strcmp(tf32, "1") == 0 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH;
    st = cublasSetMathMode(handle, mode);
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST);
    if (st != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(handle);
        handle = NULL;
        pf_error("cuda: configuring cuBLAS failed: %s", cublasGetStatusString(st));
        return NULL;
    }
    return handle;
}

/* C (m, n) = beta C for the degenerate k == 0 product (BLAS would leave C alone when beta == 1) */
__global__ void scale_matrix(float *c, int m, int n, int ldc, float beta)
{
    for (long idx = blockIdx.x * (long)blockDim.x + threadIdx.x; idx < (long)m * n;
         idx += (long)gridDim.x * blockDim.x) {
        long i = idx / n, j = idx % n;
        float *p = c + i * ldc + j;
        *p = beta == 0.0f ? 0.0f : beta * *p;
    }
}

void cuda_gemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
               const float *b, int ldb, float beta, float *c, int ldc)
{
    cuda_gemm_batched(ta, tb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);
}

void cuda_gemm_batched(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                       long stride_a, const float *b, int ldb, long stride_b, float beta, float *c,
                       int ldc, long stride_c, int batch)
{
    if (m <= 0 || n <= 0 || batch <= 0) return;
    if (k <= 0) {
        for (int i = 0; i < batch; i++) {
            scale_matrix<<<cuda_blocks((size_t)m * n, 256), 256>>>(c + i * stride_c, m, n, ldc, beta);
            if (CUDA_LAUNCHED("scale_matrix") < 0) return;
        }
        return;
    }
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasStatus_t st;
    if (batch == 1)
        st = cublasSgemm(handle, opb, opa, n, m, k, &alpha, b, ldb, a, lda, &beta, c, ldc);
    else
        st = cublasSgemmStridedBatched(handle, opb, opa, n, m, k, &alpha, b, ldb, stride_b, a, lda,
                                       stride_a, &beta, c, ldc, stride_c, batch);
    if (st != CUBLAS_STATUS_SUCCESS) cuda_fail_blas(batch == 1 ? "cublasSgemm" : "cublasSgemmStridedBatched", st);
}
