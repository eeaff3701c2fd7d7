/* libFuzzer target for the safetensors parser (engine/safetensors.c): any byte string must either
 * parse, with every tensor inside the buffer and convertible ones readable, or fail with a message;
 * never crash, hang or read outside the buffer (built with ASan + UBSan by `make fuzz`).
 *
 *   make fuzz                  60 s from the committed corpus (tests/fuzz/corpus: seeds made by
 *                              tests/fuzz/make_corpus.py plus units the fuzzer found, merged with
 *                              -merge=1); new finds go to build-fuzz/corpus
 *   make fuzz FUZZ_TIME=600    longer */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "engine/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a copy of exactly `size` bytes, so that ASan catches a read one past the end */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    pf_st_file *f = pf_st_parse(buf, size, "fuzz");
    if (f) {
        for (int i = 0; i < f->n_tensors; i++) {
            const pf_st_tensor *t = &f->tensors[i];
            if (t->end > f->data_size || t->begin > t->end) __builtin_trap();   /* validation let it through */
            if (t->numel > (1u << 20)) continue;
            float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
            if (out && pf_st_read_f32(f, t, out) < 0 && !pf_error_message()[0]) __builtin_trap();
            free(out);
            if (pf_st_find(f, t->name) == NULL) __builtin_trap();
        }
        pf_st_meta(f, "format");
        pf_st_close(f);
    } else if (!pf_error_message()[0]) {
        __builtin_trap();                                        /* an error without a message */
    }
    pf_error_clear();
    free(buf);
    return 0;
}
