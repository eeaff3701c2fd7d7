/* The learning run both the cpu test (tests/c/test_learning.c) and the GPU parity test
 * (tests/gpu/test_parity.c) make: two attention layers of width 64 on multi-query associative
 * recall (vocab 64, seq 64, 8 pairs), 2000 steps of 32 sequences, AdamW lr 3e-3, 200 warm-up
 * steps, model and data seed 1; then the accuracy on 512 fresh sequences. */
#ifndef PF_LEARN_MQAR_H
#define PF_LEARN_MQAR_H

#include "kernels/kernels.h"

enum { LEARN_MQAR_STEPS = 2000, LEARN_MQAR_EVAL = 16 * 32 };

/* The accuracy in [0, 1] on be, or -1 with pf_error set; *loss: the last training step's loss. */
double learn_mqar(const pf_backend *be, double *loss);

#endif
