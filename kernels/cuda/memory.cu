/* cuda backend: device lifetime, memory, copies and the error bookkeeping of the void kernels.
 *
 * Everything runs on the default stream of device 0, so work is ordered; download and sync wait.
 * A failure inside a void kernel is kept (the first one since the last sync) and reported by sync();
 * a sticky device fault (illegal address, launch timeout) makes every later call fail, and sync()
 * says so with the message CUDA gives: the run ends with an error, never a hang. */
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/cuda.h"

/* ---- error bookkeeping -------------------------------------------------------------------------- */

static char pending[512]; /* first failure since the last sync, "" when none */

int cuda_error(const char *what, cudaError_t err)
{
    return pf_error("cuda: %s failed: %s (%s)", what, cudaGetErrorString(err), cudaGetErrorName(err));
}

int cuda_fail(const char *what, cudaError_t err)
{
    if (!pending[0])
        snprintf(pending, sizeof pending, "cuda: %s failed: %s (%s)", what, cudaGetErrorString(err),
                 cudaGetErrorName(err));
    return pf_error("%s", pending);
}

int cuda_fail_blas(const char *what, cublasStatus_t st)
{
    if (!pending[0])
        snprintf(pending, sizeof pending, "cuda: %s failed: cuBLAS %s (%s)", what,
                 cublasGetStatusString(st), cublasGetStatusName(st));
    return pf_error("%s", pending);
}

/* ---- lifetime ----------------------------------------------------------------------------------- */

static int init_state;        /* 0 not tried, 1 ok, -1 failed */
static char init_message[512];

int cuda_init(void)
{
    if (init_state == 1) return 0;
    if (init_state == -1) return pf_error("%s", init_message);
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        snprintf(init_message, sizeof init_message, "cuda: no GPU: no usable NVIDIA device or driver (CUDA says: %s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device found");
        cudaGetLastError();
        init_state = -1;
        return pf_error("%s", init_message);
    }
    e = cudaSetDevice(0);
    if (e == cudaSuccess) e = cudaFree(0); /* create the context now, not inside the first kernel */
    if (e != cudaSuccess) {
        snprintf(init_message, sizeof init_message, "cuda: device 0 is not usable: %s",
                 cudaGetErrorString(e));
        init_state = -1;
        return pf_error("%s", init_message);
    }
    if (!cuda_blas_handle()) {
        snprintf(init_message, sizeof init_message, "%s", pf_error_message());
        init_state = -1;
        return -1;
    }
    init_state = 1;
    return 0;
}

/* ---- memory ------------------------------------------------------------------------------------- */

void *cuda_alloc(size_t bytes)
{
    void *p = NULL;
    size_t rounded = (bytes + 255) & ~(size_t)255;
    if (rounded == 0) rounded = 256;
    cudaError_t e = cudaMalloc(&p, rounded);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError(); /* not sticky: clear it so the model stays usable */
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        pf_error("cuda: out of GPU memory allocating %.1f MiB (%.1f MiB free of %.1f MiB); a smaller "
                 "batch or sequence may fit",
                 bytes / 1048576.0, free_b / 1048576.0, total_b / 1048576.0);
        return NULL;
    }
    if (e != cudaSuccess) {
        cuda_error("cudaMalloc", e);
        return NULL;
    }
    e = cudaMemset(p, 0, rounded);
    if (e != cudaSuccess) {
        cuda_error("cudaMemset", e);
        cudaFree(p);
        return NULL;
    }
    return p;
}

void cuda_free(void *p)
{
    if (p) CUDA_CHECK(cudaFree(p));
}

void cuda_upload(void *dst, const void *host_src, size_t bytes)
{
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice));
}

void cuda_download(void *host_dst, const void *src, size_t bytes)
{
    if (bytes) CUDA_CHECK(cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost));
}

void cuda_copy(void *dst, const void *src, size_t bytes)
{
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0));
}

void cuda_zero(void *dst, size_t bytes)
{
    if (bytes) CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, 0));
}

int cuda_sync(void)
{
    cudaError_t e = cudaDeviceSynchronize();
    if (pending[0]) {
        pf_error("%s", pending);
        pending[0] = '\0';
        return -1;
    }
    if (e != cudaSuccess) return cuda_error("a kernel (reported at sync)", e);
    return 0;
}

/* ---- scratch ------------------------------------------------------------------------------------ */

enum { N_SCRATCH = 4 };
static void  *scratch_ptr[N_SCRATCH];
static size_t scratch_size[N_SCRATCH];

void *cuda_scratch(int slot, size_t bytes)
{
    if (bytes <= scratch_size[slot]) return scratch_ptr[slot];
    if (scratch_ptr[slot]) {
        /* queued kernels may still read the old buffer: cudaFree waits for the device */
        cudaFree(scratch_ptr[slot]);
        scratch_ptr[slot] = NULL;
        scratch_size[slot] = 0;
    }
    size_t want = bytes < 4096 ? 4096 : bytes + bytes / 4;
    void *p = cuda_alloc(want);
    if (!p) return NULL;
    scratch_ptr[slot] = p;
    scratch_size[slot] = want;
    return p;
}
