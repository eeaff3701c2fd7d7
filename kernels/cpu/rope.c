/* cpu backend: rotary position embedding (RoPE), in place, Llama / GPT-NeoX layout.
 *
 * Row r of `rows` is token t = r % T of its sequence, at position p = pos0 + t. Each row holds
 * `heads` vectors of D floats at x + r*stride + h*D. Element pairs (i, i + D/2), i < D/2, rotate by
 * the angle p * theta^(-2i/D):
 *     x_i'       = x_i cos - x_{i+D/2} sin
 *     x_{i+D/2}' = x_i sin + x_{i+D/2} cos
 * The rotation is orthogonal, so its backward is the rotation by minus the angle (inverse = 1). */
#include <math.h>

#include "kernels/cpu/cpu.h"

void cpu_rope(float *x, int rows, int T, int stride, int heads, int D, int pos0, float theta,
              int inverse)
{
    int half = D / 2;
    double sign = inverse ? -1.0 : 1.0;
#pragma omp parallel for schedule(static) if ((size_t)rows * heads * D > PF_CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        double p = (double)pos0 + r % T;
        float *row = x + (size_t)r * stride;
        for (int i = 0; i < half; i++) {
            /* the angle in double: positions reach thousands, and step and forward must agree */
            double angle = p * pow((double)theta, -2.0 * i / D);
            float c = (float)cos(angle), s = (float)(sign * sin(angle));
            for (int h = 0; h < heads; h++) {
                float *v = row + (size_t)h * D;
                float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = a * s + b * c;
            }
        }
    }
}
