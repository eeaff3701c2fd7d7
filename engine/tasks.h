/* Tasks: generators of training batches for the standard synthetic tasks, and byte-level text.
 *
 * A batch is inputs (n, T), targets (n, T) and mask (n, T): the loss and the accuracy count only
 * positions whose mask is 1. Every task draws from the caller's RNG, so a seed fixes the data.
 * Accuracy is the fraction of masked positions whose argmax prediction equals the target. */
#ifndef PF_TASKS_H
#define PF_TASKS_H

#include <stdint.h>

#include "engine/rng.h"

typedef enum pf_task_kind {
    PF_TASK_COPY,            /* tokens, a separator, then the same tokens again */
    PF_TASK_SELECTIVE_COPY,  /* `tokens` data tokens scattered among noise; recall them in order */
    PF_TASK_MQAR,            /* multi-query associative recall: key-value pairs, then queried keys */
    PF_TASK_INDUCTION,       /* random tokens with a repeated trigger: predict what followed it */
    PF_TASK_TEXT,            /* bytes of a file, next-byte prediction */
} pf_task_kind;

typedef struct pf_task {
    pf_task_kind kind;
    int    vocab;           /* model vocabulary the task needs */
    int    seq;             /* T */
    int    pairs;           /* mqar: key-value pairs */
    int    tokens;          /* selective copy: tokens to remember */
    unsigned char *text;    /* text: the file's bytes */
    long   text_len;
    char   name[32];
} pf_task;

/* Constructors validate the sizes; NULL with pf_error naming the bad one. */
pf_task *pf_task_copy(int vocab, int seq);
pf_task *pf_task_selective_copy(int vocab, int seq, int tokens);
pf_task *pf_task_mqar(int vocab, int seq, int pairs);
pf_task *pf_task_induction(int vocab, int seq);
pf_task *pf_task_text(const char *path, int seq);
void     pf_task_free(pf_task *t);

/* Fill a batch of n sequences: inputs, targets (n, T) and mask (n, T), host memory. */
int pf_task_batch(const pf_task *t, pf_rng *rng, int n, int32_t *inputs, int32_t *targets,
                  float *mask);

#endif
