/* Checks every layer kind must pass, written once for all kinds (tests/c/test_*.c call them):
 *   - a finite-difference gradient check of every parameter and of the input,
 *   - stepping token by token equals one forward over the sequence.
 * Everything runs on the cpu backend in float32. */
#ifndef PF_LAYER_CHECK_H
#define PF_LAYER_CHECK_H

#include "engine/layer.h"

/* A config for kind from "name=value name=word ..." (numbers, words, true/false); aborts the test
 * on a bad string, since a test's own config is a programming error. */
pf_config check_config(const pf_layer_kind *kind, const char *spec);

/* A layer on the cpu with its parameters initialised from seed and gradients zeroed; the flat
 * buffers belong to the layer check and are freed by check_layer_free. */
pf_layer *check_layer_new(const pf_layer_kind *kind, const char *spec, int dim, uint64_t seed);
void      check_layer_free(pf_layer *l);

/* Finite-difference gradient check of L = sum(forward(x) * R) over random x, R (B, T, dim).
 * For every parameter and for the input, up to `samples` entries are perturbed by +-eps (central
 * difference, loss in double) and the norm-wise relative error
 *     |g_analytic - g_numeric| / max(|g_analytic|, |g_numeric|)
 * over those entries is computed. Prints one line per tensor; returns the worst error. */
double check_gradients(pf_layer *l, int B, int T, int samples, double eps, uint64_t seed);

/* Runs forward over one random sequence of T tokens, then reset and T steps; returns
 * max |forward - step| / max |forward| over all outputs. */
double check_step_matches_forward(pf_layer *l, int T, uint64_t seed);

/* helpers shared by tests */
void   check_fill_normal(float *x, size_t n, double std, uint64_t seed);
double check_max_rel_diff(const float *a, const float *b, size_t n);

#endif
