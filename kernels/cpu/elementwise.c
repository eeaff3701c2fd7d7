/* cpu backend: elementwise maps, activations, biases, the gated (SwiGLU) product, sum of squares. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu.h"
#include "kernels/pointwise.h"

#define PAR_FOR _Pragma("omp parallel for schedule(static) if (n > PF_CPU_PAR_MIN)")

void cpu_add(float *out, const float *a, const float *b, size_t n)
{
    PAR_FOR
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void cpu_axpy(float *y, const float *x, float alpha, size_t n)
{
    PAR_FOR
    for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

void cpu_scale(float *x, float alpha, size_t n)
{
    PAR_FOR
    for (size_t i = 0; i < n; i++) x[i] *= alpha;
}

void cpu_fill(float *x, float value, size_t n)
{
    PAR_FOR
    for (size_t i = 0; i < n; i++) x[i] = value;
}

void cpu_mul(float *out, const float *a, const float *b, size_t n)
{
    PAR_FOR
    for (size_t i = 0; i < n; i++) out[i] = a[i] * b[i];
}

void cpu_act_forward(pf_act act, float *out, const float *in, size_t n)
{
    PAR_FOR
    for (size_t i = 0; i < n; i++) out[i] = pf_act_value(act, in[i]);
}

void cpu_act_backward(pf_act act, float *din, const float *dout, const float *in, size_t n,
                      int accumulate)
{
    if (accumulate) {
        PAR_FOR
        for (size_t i = 0; i < n; i++) din[i] += dout[i] * pf_act_slope(act, in[i]);
    } else {
        PAR_FOR
        for (size_t i = 0; i < n; i++) din[i] = dout[i] * pf_act_slope(act, in[i]);
    }
}

void cpu_bias_add(float *out, const float *bias, int rows, int cols)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > PF_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) out[(size_t)r * cols + c] += bias[c];
}

void cpu_bias_grad(float *dbias, const float *dout, int rows, int cols)
{
    /* parallel over columns: each thread owns its outputs, so the sum order is fixed */
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > PF_CPU_PAR_MIN)
    for (int c = 0; c < cols; c++) {
        double s = 0;
        for (int r = 0; r < rows; r++) s += dout[(size_t)r * cols + c];
        dbias[c] += (float)s;
    }
}

double cpu_sumsq(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

void cpu_swiglu_forward(float *out, const float *gate_up, int rows, int F)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * F > PF_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *g = gate_up + (size_t)r * 2 * F, *u = g + F;
        float *o = out + (size_t)r * F;
        for (int j = 0; j < F; j++) o[j] = g[j] * pf_sigmoid(g[j]) * u[j];
    }
}

void cpu_swiglu_backward(float *dgate_up, const float *dout, const float *gate_up, int rows, int F)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * F > PF_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *g = gate_up + (size_t)r * 2 * F, *u = g + F, *d = dout + (size_t)r * F;
        float *dg = dgate_up + (size_t)r * 2 * F, *du = dg + F;
        for (int j = 0; j < F; j++) {
            float s = pf_sigmoid(g[j]);
            du[j] = d[j] * g[j] * s;
            dg[j] = d[j] * u[j] * s * (1.0f + g[j] * (1.0f - s));
        }
    }
}
