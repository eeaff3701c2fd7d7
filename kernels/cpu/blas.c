/* cpu backend: matrix products through OpenBLAS (row-major cblas_sgemm). */
#include <cblas.h>

#include "kernels/cpu/cpu.h"

void cpu_gemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc)
{
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        /* C = beta C: BLAS leaves C alone for k == 0 only when beta == 1 */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) c[(long)i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[(long)i * ldc + j];
        return;
    }
    if (m == 1) {
        /* one row (every step's projections): a matrix-vector product, which OpenBLAS does without
         * packing the whole matrix first as sgemm would */
        int inc_a = ta ? lda : 1;
        if (tb) cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, alpha, b, ldb, a, inc_a, beta, c, 1);
        else cblas_sgemv(CblasRowMajor, CblasTrans, k, n, alpha, b, ldb, a, inc_a, beta, c, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k,
                alpha, a, lda, b, ldb, beta, c, ldc);
}

void cpu_gemm_batched(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                      long stride_a, const float *b, int ldb, long stride_b, float beta, float *c,
                      int ldc, long stride_c, int batch)
{
    /* Small per-head products: one thread each, in parallel over the batch; a large single product
     * is left to OpenBLAS's own threads. */
    if (batch == 1) {
        cpu_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    int nthreads = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel for schedule(static) if ((long)m * n * k * batch > (1L << 18))
    for (int i = 0; i < batch; i++)
        cpu_gemm(ta, tb, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta,
                 c + i * stride_c, ldc);
    openblas_set_num_threads(nthreads);
}
