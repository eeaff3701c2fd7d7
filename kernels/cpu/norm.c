/* cpu backend: RMSNorm and LayerNorm, forward and backward, one row per token. */
#include <math.h>
#include <stdlib.h>

#include "kernels/cpu/cpu.h"

void cpu_rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, int rows, int C,
                         float eps)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * C > PF_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *x = in + (size_t)r * C;
        float *y = out + (size_t)r * C;
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
        float s = (float)(1.0 / sqrt(ss / C + eps));
        rstd[r] = s;
        for (int c = 0; c < C; c++) y[c] = x[c] * s * w[c];
    }
}

/* Backward in two passes, both parallel and deterministic: din per row, then the weight gradient
 * per column (each thread owns its columns and sums rows in order). */
void cpu_rmsnorm_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                          const float *rstd, int rows, int C)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * C > PF_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *x = in + (size_t)r * C, *dy = dout + (size_t)r * C;
        float *dx = din + (size_t)r * C;
        float s = rstd[r];
        double dot = 0;
        for (int c = 0; c < C; c++) dot += (double)dy[c] * w[c] * x[c];
        float k = (float)(dot / C) * s * s * s;
        for (int c = 0; c < C; c++) dx[c] = dy[c] * w[c] * s - k * x[c];
    }
#pragma omp parallel for schedule(static) if ((size_t)rows * C > PF_CPU_PAR_MIN)
    for (int c = 0; c < C; c++) {
        double g = 0;
        for (int r = 0; r < rows; r++) g += (double)dout[(size_t)r * C + c] * in[(size_t)r * C + c] * rstd[r];
        dw[c] += (float)g;
    }
}

void cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                           const float *b, int rows, int C, float eps)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * C > PF_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *x = in + (size_t)r * C;
        float *y = out + (size_t)r * C;
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        v /= C;
        float s = (float)(1.0 / sqrt(v + eps));
        mean[r] = (float)m;
        rstd[r] = s;
        for (int c = 0; c < C; c++) y[c] = (float)(x[c] - m) * s * w[c] + b[c];
    }
}

void cpu_layernorm_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                            const float *w, const float *mean, const float *rstd, int rows, int C)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * C > PF_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *x = in + (size_t)r * C, *dy = dout + (size_t)r * C;
        float *dx = din + (size_t)r * C;
        float m = mean[r], s = rstd[r];
        double sum_g = 0, sum_gx = 0;
        for (int c = 0; c < C; c++) {
            float g = dy[c] * w[c];
            sum_g += g;
            sum_gx += (double)g * (x[c] - m) * s;
        }
        float mg = (float)(sum_g / C), mgx = (float)(sum_gx / C);
        for (int c = 0; c < C; c++) dx[c] = s * (dy[c] * w[c] - mg - (x[c] - m) * s * mgx);
    }
#pragma omp parallel for schedule(static) if ((size_t)rows * C > PF_CPU_PAR_MIN)
    for (int c = 0; c < C; c++) {
        double gw = 0, gb = 0;
        for (int r = 0; r < rows; r++) {
            float dy = dout[(size_t)r * C + c];
            gw += (double)dy * (in[(size_t)r * C + c] - mean[r]) * rstd[r];
            gb += dy;
        }
        dw[c] += (float)gw;
        db[c] += (float)gb;
    }
}
