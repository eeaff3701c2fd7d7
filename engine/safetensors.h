/* safetensors: read and write the format of https://github.com/huggingface/safetensors
 * (docs: "Format"): an 8-byte little-endian unsigned header length N, N bytes of a UTF-8 JSON object
 * (the header), then the data. The header maps each tensor name to {"dtype", "shape",
 * "data_offsets": [begin, end]} (byte offsets relative to the start of the data) and may hold
 * "__metadata__", an object of string values.
 *
 * Reading validates as the reference implementation does (safetensors' Metadata::validate), with a
 * message that names the tensor and the rule it broke:
 *   - the file holds at least the 8 length bytes; N <= PF_ST_MAX_HEADER (100 000 000) and 8 + N is
 *     inside the file;
 *   - the header is a JSON object (UTF-8, no duplicate keys at any level), each entry an object
 *     with exactly a known dtype, a shape of non-negative integers (at most PF_ST_MAX_DIMS) and two
 *     non-negative integer data_offsets; __metadata__ maps strings to strings;
 *   - sorted by offsets, the tensors tile the data exactly: each begins where the previous ended
 *     (no gap, no overlap), begin <= end, the last ends at the end of the file;
 *   - product(shape) * dtype size equals end - begin, the product computed with overflow checks.
 * The file is memory-mapped read-only and never written through; pf_st_parse validates a buffer in
 * memory the same way (the fuzz target's entry). Tensors of dtype F32, F16, BF16 and F64 convert to
 * float32; the other known dtypes are validated and listed but not converted.
 *
 * Writing (pf_st_save) emits float32 tensors with the keys sorted and the data in that order, the
 * header padded with spaces to a multiple of 8 so the data is aligned, into a temporary file in the
 * same directory that is fsync'd and renamed over `path`, so a crash leaves either the old file or
 * the new one, never a torn one. */
#ifndef PF_SAFETENSORS_H
#define PF_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define PF_ST_MAX_HEADER 100000000ULL
#define PF_ST_MAX_DIMS   16

typedef enum pf_st_dtype {
    PF_ST_BOOL, PF_ST_U8, PF_ST_I8, PF_ST_F8_E5M2, PF_ST_F8_E4M3, PF_ST_I16, PF_ST_U16, PF_ST_F16,
    PF_ST_BF16, PF_ST_I32, PF_ST_U32, PF_ST_F32, PF_ST_F64, PF_ST_I64, PF_ST_U64, PF_ST_N_DTYPES
} pf_st_dtype;

typedef struct pf_st_tensor {
    char       *name;
    pf_st_dtype dtype;
    int         ndim;
    uint64_t    shape[PF_ST_MAX_DIMS];
    uint64_t    numel;
    uint64_t    begin, end;           /* bytes from the start of the data */
} pf_st_tensor;

typedef struct pf_st_file {
    char          *path;              /* for messages ("<memory>" for a buffer) */
    const uint8_t *data;              /* (data_size) bytes after the header */
    uint64_t       data_size;
    pf_st_tensor  *tensors;           /* (n_tensors) in header order */
    int            n_tensors;
    char         **meta_keys, **meta_values;   /* (n_meta) __metadata__ */
    int            n_meta;
    void          *map;               /* the mapping (NULL for a buffer) */
    size_t         map_size;
} pf_st_file;

/* Open and validate a file (memory-mapped); NULL with pf_error naming the file and the problem. */
pf_st_file *pf_st_open(const char *path);
/* Validate a buffer of `size` bytes; the result points into buf, which must outlive it. `what`
 * names it in messages. */
pf_st_file *pf_st_parse(const void *buf, size_t size, const char *what);
void        pf_st_close(pf_st_file *f);

const char         *pf_st_dtype_name(pf_st_dtype d);
const pf_st_tensor *pf_st_find(const pf_st_file *f, const char *name);   /* NULL when absent */
const char         *pf_st_meta(const pf_st_file *f, const char *key);    /* NULL when absent */

/* Convert tensor t to float32 into out (t->numel floats); -1 with pf_error for a dtype that does
 * not convert. */
int pf_st_read_f32(const pf_st_file *f, const pf_st_tensor *t, float *out);

/* One float32 tensor to write: name, shape and host data (product(shape) floats). */
typedef struct pf_st_entry {
    const char  *name;
    int          ndim;
    const int   *shape;
    const float *data;
} pf_st_entry;

/* Write n entries and n_meta metadata pairs (meta[2i] = key, meta[2i+1] = value) to path, through
 * a temporary file in the same directory (fsync, rename). Names must be distinct and not
 * "__metadata__". */
int pf_st_save(const char *path, const pf_st_entry *entries, int n, const char *const *meta, int n_meta);

#endif
