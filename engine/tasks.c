/* Task generators (see tasks.h). Each sequence is built as x (T + 1 tokens); inputs are x[0..T-1],
 * targets x[1..T], and the mask marks the positions whose target the task is about.
 *
 * Token conventions: 0 is the blank / noise token and 1 the separator where a task needs them;
 * content tokens come from the rest of the vocabulary. */
#include "engine/tasks.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"

enum { BLANK = 0, SEP = 1, MAX_PAIRS = 4096 };

static pf_task *task_new(pf_task_kind kind, const char *name, int vocab, int seq)
{
    pf_task *t = calloc(1, sizeof *t);
    if (!t) {
        pf_error("%s: out of memory", name);
        return NULL;
    }
    t->kind = kind;
    t->vocab = vocab;
    t->seq = seq;
    snprintf(t->name, sizeof t->name, "%s", name);
    return t;
}

static int check_sizes(const char *name, int vocab, int min_vocab, int seq, int min_seq)
{
    if (vocab < min_vocab || vocab > (1 << 24))
        return pf_error("%s: vocab must be in [%d, %d], got %d", name, min_vocab, 1 << 24, vocab);
    if (seq < min_seq || seq > (1 << 20))
        return pf_error("%s: seq must be in [%d, %d], got %d", name, min_seq, 1 << 20, seq);
    return 0;
}

pf_task *pf_task_copy(int vocab, int seq)
{
    if (check_sizes("copy", vocab, 3, seq, 3) < 0) return NULL;
    return task_new(PF_TASK_COPY, "copy", vocab, seq);
}

pf_task *pf_task_selective_copy(int vocab, int seq, int tokens)
{
    if (check_sizes("selective_copy", vocab, 3, seq, 3) < 0) return NULL;
    if (tokens < 1 || 2 * tokens > seq) {
        pf_error("selective_copy: tokens must be in [1, seq/2 = %d], got %d", seq / 2, tokens);
        return NULL;
    }
    pf_task *t = task_new(PF_TASK_SELECTIVE_COPY, "selective_copy", vocab, seq);
    if (t) t->tokens = tokens;
    return t;
}

pf_task *pf_task_mqar(int vocab, int seq, int pairs)
{
    if (check_sizes("mqar", vocab, 5, seq, 3) < 0) return NULL;
    if (pairs < 1 || pairs > MAX_PAIRS || 4 * pairs > seq + 1) {
        pf_error("mqar: pairs must be in [1, min(%d, (seq+1)/4 = %d)] so that the pairs and their queries fit, got %d",
                 MAX_PAIRS, (seq + 1) / 4, pairs);
        return NULL;
    }
    if (pairs > (vocab - 1) / 2) {
        pf_error("mqar: pairs (%d) needs vocab >= %d (keys and values are distinct halves of the vocabulary), got %d",
                 pairs, 2 * pairs + 1, vocab);
        return NULL;
    }
    pf_task *t = task_new(PF_TASK_MQAR, "mqar", vocab, seq);
    if (t) t->pairs = pairs;
    return t;
}

pf_task *pf_task_induction(int vocab, int seq)
{
    if (check_sizes("induction", vocab, 3, seq, 4) < 0) return NULL;
    return task_new(PF_TASK_INDUCTION, "induction", vocab, seq);
}

pf_task *pf_task_text(const char *path, int seq)
{
    if (check_sizes("text", 256, 256, seq, 1) < 0) return NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        pf_error("text: cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    unsigned char *buf = NULL;
    long len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : 1 << 16;
            unsigned char *nb = realloc(buf, (size_t)cap);
            if (!nb) {
                free(buf);
                fclose(f);
                pf_error("text: out of memory reading '%s'", path);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, (size_t)(cap - len), f);
        if (got == 0) break;
        len += (long)got;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed || len < seq + 1) {
        free(buf);
        if (failed) pf_error("text: error reading '%s'", path);
        else pf_error("text: '%s' has %ld bytes; seq = %d needs at least %d", path, len, seq, seq + 1);
        return NULL;
    }
    pf_task *t = task_new(PF_TASK_TEXT, "text", 256, seq);
    if (!t) {
        free(buf);
        return NULL;
    }
    t->text = buf;
    t->text_len = len;
    return t;
}

void pf_task_free(pf_task *t)
{
    if (!t) return;
    free(t->text);
    free(t);
}

/* a content token in [lo, hi) */
static int32_t draw(pf_rng *rng, int lo, int hi) { return (int32_t)(lo + (int)pf_rng_below(rng, (uint32_t)(hi - lo))); }

/* One sequence x (T + 1) and the mask over its T input positions. */
static void make_sequence(const pf_task *t, pf_rng *rng, int32_t *x, float *mask, int *scratch)
{
    int T = t->seq, V = t->vocab;
    memset(mask, 0, (size_t)T * sizeof(float));
    for (int i = 0; i <= T; i++) x[i] = BLANK;
    switch (t->kind) {
    case PF_TASK_COPY: {
        /* d_1..d_L SEP d_1..d_L (blank padding): predict the second copy */
        int L = T / 2;
        for (int i = 0; i < L; i++) x[i] = x[L + 1 + i] = draw(rng, 2, V);
        x[L] = SEP;
        for (int i = L; i < 2 * L; i++) mask[i] = 1;
        break;
    }
    case PF_TASK_SELECTIVE_COPY: {
        /* k data tokens at random places of a blank region of T - k, then SEP, then the k in order */
        int k = t->tokens, R = T - k;
        for (int i = 0; i < R; i++) scratch[i] = i;
        pf_rng_shuffle(rng, scratch, R);
        /* the first k shuffled slots, sorted, hold the data */
        for (int a = 1; a < k; a++)
            for (int b = a; b > 0 && scratch[b - 1] > scratch[b]; b--) {
                int s = scratch[b]; scratch[b] = scratch[b - 1]; scratch[b - 1] = s;
            }
        x[R] = SEP;
        for (int i = 0; i < k; i++) x[scratch[i]] = x[R + 1 + i] = draw(rng, 2, V);
        for (int i = R; i < T; i++) mask[i] = 1;
        break;
    }
    case PF_TASK_MQAR: {
        /* k1 v1 .. kp vp, then each key queried once, in random order, at random places of the rest:
         * the model sees k and must say v. Keys from [1, 1+h), values from [1+h, 1+2h). */
        int p = t->pairs, h = (V - 1) / 2;
        for (int i = 0; i < h; i++) scratch[i] = 1 + i;
        pf_rng_shuffle(rng, scratch, h);
        int32_t keys[MAX_PAIRS], vals[MAX_PAIRS];
        for (int i = 0; i < p; i++) {
            keys[i] = scratch[i];
            vals[i] = draw(rng, 1 + h, 1 + 2 * h);
            x[2 * i] = keys[i];
            x[2 * i + 1] = vals[i];
        }
        /* query slots: choose p of the (R / 2) two-token slots of the region after the pairs */
        int start = 2 * p, slots = (T + 1 - start) / 2;
        for (int i = 0; i < slots; i++) scratch[i] = i;
        pf_rng_shuffle(rng, scratch, slots);
        int order[MAX_PAIRS];
        for (int i = 0; i < p; i++) order[i] = i;
        pf_rng_shuffle(rng, order, p);
        for (int q = 0; q < p; q++) {
            int pos = start + 2 * scratch[q];
            x[pos] = keys[order[q]];
            x[pos + 1] = vals[order[q]];
            mask[pos] = 1;
        }
        break;
    }
    case PF_TASK_INDUCTION: {
        /* random tokens; a trigger (token 0) at a random place in the first half followed by b;
         * the last input is the trigger again and the target is b */
        for (int i = 0; i <= T; i++) x[i] = draw(rng, 1, V);
        int p = (int)pf_rng_below(rng, (uint32_t)(T / 2 > 1 ? T / 2 - 1 : 1));
        x[p] = BLANK;
        x[T - 1] = BLANK;
        x[T] = x[p + 1];
        mask[T - 1] = 1;
        break;
    }
    case PF_TASK_TEXT: {
        long off = (long)(pf_rng_uniform(rng) * (double)(t->text_len - T));
        for (int i = 0; i <= T; i++) x[i] = t->text[off + i];
        for (int i = 0; i < T; i++) mask[i] = 1;
        break;
    }
    }
}

int pf_task_batch(const pf_task *t, pf_rng *rng, int n, int32_t *inputs, int32_t *targets,
                  float *mask)
{
    int T = t->seq;
    int32_t *x = malloc((size_t)(T + 1) * sizeof *x);
    int scratch_n = T + 1 > t->vocab ? T + 1 : t->vocab;
    int *scratch = malloc((size_t)scratch_n * sizeof *scratch);
    if (!x || !scratch) {
        free(x);
        free(scratch);
        return pf_error("%s: out of memory for a batch", t->name);
    }
    for (int b = 0; b < n; b++) {
        make_sequence(t, rng, x, mask + (size_t)b * T, scratch);
        memcpy(inputs + (size_t)b * T, x, (size_t)T * sizeof(int32_t));
        memcpy(targets + (size_t)b * T, x + 1, (size_t)T * sizeof(int32_t));
    }
    free(x);
    free(scratch);
    return 0;
}
