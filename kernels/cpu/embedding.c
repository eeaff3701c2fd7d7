/* cpu backend: token embedding lookup and its scatter-add gradient. */
#include <string.h>

#include "kernels/cpu/cpu.h"

void cpu_embedding_forward(float *out, const int32_t *tokens, const float *table, int n, int C)
{
    for (int i = 0; i < n; i++) memcpy(out + (size_t)i * C, table + (size_t)tokens[i] * C, (size_t)C * sizeof(float));
}

void cpu_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int n, int C)
{
    /* parallel over channels: every thread walks all tokens for its own columns, so repeated tokens
     * never race and the sum order is fixed */
#pragma omp parallel for schedule(static) if ((size_t)n * C > PF_CPU_PAR_MIN)
    for (int c = 0; c < C; c++)
        for (int i = 0; i < n; i++) dtable[(size_t)tokens[i] * C + c] += dout[(size_t)i * C + c];
}
