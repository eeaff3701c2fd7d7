/* cpu backend: memory is host memory; nothing is queued, so sync never fails. */
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "kernels/cpu/cpu.h"

int cpu_init(void) { return 0; }

void *cpu_alloc(size_t bytes)
{
    /* 64-byte alignment for vector loads; calloc-like zeroing */
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = NULL;
    if (rounded == 0) rounded = 64;
    if (posix_memalign(&p, 64, rounded) != 0) {
        pf_error("cpu: out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    memset(p, 0, rounded);
    return p;
}

void cpu_free(void *p) { free(p); }

void cpu_memcpy(void *dst, const void *src, size_t bytes)
{
    if (bytes) memmove(dst, src, bytes);
}

void cpu_zero(void *dst, size_t bytes)
{
    if (bytes) memset(dst, 0, bytes);
}

int cpu_sync(void) { return 0; }
