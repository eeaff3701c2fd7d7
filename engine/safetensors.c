/* safetensors: parse, validate, convert and write (see safetensors.h for the format and the rules).
 *
 * The JSON header is parsed by jansson (Debian's libjansson-dev), chosen over cJSON because it
 * parses a length-bounded buffer (no NUL terminator needed, so the header is never copied), keeps
 * integers exact as 64-bit json_int_t (cJSON keeps numbers as doubles, which cannot hold offsets
 * past 2^53 exactly), rejects duplicate object keys when asked (JSON_REJECT_DUPLICATES), checks
 * UTF-8, and reports the line and column of a syntax error. */
#include "engine/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/error.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c reads and writes little-endian data in place: port it for a big-endian host"
#endif

/* ---- dtypes ------------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    unsigned    bytes;
} dtypes[PF_ST_N_DTYPES] = {
    [PF_ST_BOOL] = {"BOOL", 1},       [PF_ST_U8] = {"U8", 1},     [PF_ST_I8] = {"I8", 1},
    [PF_ST_F8_E5M2] = {"F8_E5M2", 1}, [PF_ST_F8_E4M3] = {"F8_E4M3", 1},
    [PF_ST_I16] = {"I16", 2},         [PF_ST_U16] = {"U16", 2},   [PF_ST_F16] = {"F16", 2},
    [PF_ST_BF16] = {"BF16", 2},       [PF_ST_I32] = {"I32", 4},   [PF_ST_U32] = {"U32", 4},
    [PF_ST_F32] = {"F32", 4},         [PF_ST_F64] = {"F64", 8},   [PF_ST_I64] = {"I64", 8},
    [PF_ST_U64] = {"U64", 8},
};

const char *pf_st_dtype_name(pf_st_dtype d) { return (unsigned)d < PF_ST_N_DTYPES ? dtypes[d].name : "?"; }

static int dtype_of(const char *s)
{
    for (int i = 0; i < PF_ST_N_DTYPES; i++)
        if (strcmp(s, dtypes[i].name) == 0) return i;
    return -1;
}

/* ---- parsing ----------------------------------------------------------------------------------- */

void pf_st_close(pf_st_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_values);
    if (f->map) munmap(f->map, f->map_size);
    free(f->path);
    free(f);
}

/* a JSON value as a non-negative 64-bit integer */
static int get_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int parse_meta(pf_st_file *f, const json_t *meta)
{
    if (!json_is_object(meta)) return pf_error("%s: __metadata__ must be an object of strings", f->path);
    size_t n = json_object_size(meta);
    f->meta_keys = calloc(n ? n : 1, sizeof *f->meta_keys);
    f->meta_values = calloc(n ? n : 1, sizeof *f->meta_values);
    if (!f->meta_keys || !f->meta_values) return pf_error("%s: out of memory", f->path);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)meta, key, val) {
        if (!json_is_string(val))
            return pf_error("%s: __metadata__ entry '%s' must be a string", f->path, key);
        f->meta_keys[f->n_meta] = strdup(key);
        f->meta_values[f->n_meta] = strdup(json_string_value(val));
        f->n_meta++;
        if (!f->meta_keys[f->n_meta - 1] || !f->meta_values[f->n_meta - 1])
            return pf_error("%s: out of memory", f->path);
    }
    return 0;
}

static int parse_tensor(pf_st_file *f, pf_st_tensor *t, const char *name, const json_t *v)
{
    if (!(t->name = strdup(name))) return pf_error("%s: out of memory", f->path);
    if (!json_is_object(v))
        return pf_error("%s: tensor '%s': its entry must be an object {dtype, shape, data_offsets}", f->path, name);
    const json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape"),
                 *offs = json_object_get(v, "data_offsets");
    if (!json_is_string(dt)) return pf_error("%s: tensor '%s': missing or non-string dtype", f->path, name);
    int d = dtype_of(json_string_value(dt));
    if (d < 0)
        return pf_error("%s: tensor '%s': unknown dtype '%s' (known: BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, "
                        "U16, F16, BF16, I32, U32, F32, F64, I64, U64)", f->path, name, json_string_value(dt));
    t->dtype = (pf_st_dtype)d;
    if (!json_is_array(shape)) return pf_error("%s: tensor '%s': missing or non-array shape", f->path, name);
    size_t nd = json_array_size(shape);
    if (nd > PF_ST_MAX_DIMS)
        return pf_error("%s: tensor '%s': %zu dimensions, more than the %d supported", f->path, name, nd,
                        PF_ST_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        if (get_u64(json_array_get(shape, i), &t->shape[i]) < 0)
            return pf_error("%s: tensor '%s': shape[%zu] is not a non-negative integer", f->path, name, i);
        if (__builtin_mul_overflow(numel, t->shape[i], &numel))
            return pf_error("%s: tensor '%s': the product of the shape overflows 64 bits", f->path, name);
    }
    t->numel = numel;
    if (!json_is_array(offs) || json_array_size(offs) != 2 || get_u64(json_array_get(offs, 0), &t->begin) < 0 ||
        get_u64(json_array_get(offs, 1), &t->end) < 0)
        return pf_error("%s: tensor '%s': data_offsets must be two non-negative integers [begin, end]",
                        f->path, name);
    return 0;
}

static int by_offsets(const void *a, const void *b, void *base)
{
    const pf_st_tensor *x = (const pf_st_tensor *)base + *(const int *)a, *y = (const pf_st_tensor *)base + *(const int *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return *(const int *)a - *(const int *)b;
}

/* offsets tile the data exactly, and each span fits its shape and dtype */
static int validate_layout(pf_st_file *f)
{
    int n = f->n_tensors;
    int *order = malloc((size_t)(n ? n : 1) * sizeof *order);
    if (!order) return pf_error("%s: out of memory", f->path);
    for (int i = 0; i < n; i++) order[i] = i;
    qsort_r(order, (size_t)n, sizeof *order, by_offsets, f->tensors);
    uint64_t at = 0;
    int rc = 0;
    for (int k = 0; k < n && rc == 0; k++) {
        const pf_st_tensor *t = &f->tensors[order[k]];
        uint64_t bytes;
        if (t->end < t->begin)
            rc = pf_error("%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", f->path, t->name,
                          (unsigned long long)t->begin, (unsigned long long)t->end);
        else if (t->begin > at)
            rc = pf_error("%s: tensor '%s': data_offsets [%llu, %llu] leave a gap: the data before it ends at "
                          "byte %llu (offsets must be contiguous)", f->path, t->name, (unsigned long long)t->begin,
                          (unsigned long long)t->end, (unsigned long long)at);
        else if (t->begin < at)
            rc = pf_error("%s: tensor '%s': data_offsets [%llu, %llu] overlap the data before it, which ends at "
                          "byte %llu", f->path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                          (unsigned long long)at);
        else if (t->end > f->data_size)
            rc = pf_error("%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the data (%llu bytes): "
                          "the file is truncated", f->path, t->name, (unsigned long long)t->begin,
                          (unsigned long long)t->end, (unsigned long long)f->data_size);
        else if (__builtin_mul_overflow(t->numel, (uint64_t)dtypes[t->dtype].bytes, &bytes))
            rc = pf_error("%s: tensor '%s': the byte size of its shape overflows 64 bits", f->path, t->name);
        else if (bytes != t->end - t->begin)
            rc = pf_error("%s: tensor '%s': its shape and dtype %s make %llu bytes but data_offsets [%llu, %llu] "
                          "span %llu", f->path, t->name, dtypes[t->dtype].name, (unsigned long long)bytes,
                          (unsigned long long)t->begin, (unsigned long long)t->end,
                          (unsigned long long)(t->end - t->begin));
        at = t->end;
    }
    free(order);
    if (rc == 0 && at != f->data_size)
        rc = pf_error("%s: the tensors cover %llu bytes of data but the file holds %llu after the header "
                      "(the data must end exactly where the last tensor ends)", f->path, (unsigned long long)at,
                      (unsigned long long)f->data_size);
    return rc;
}

static int parse_into(pf_st_file *f, const uint8_t *buf, size_t size)
{
    if (size < 8)
        return pf_error("%s: not a safetensors file: %zu bytes, fewer than the 8 of the header length", f->path,
                        size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | buf[i];
    if (n > PF_ST_MAX_HEADER)
        return pf_error("%s: header length %llu exceeds the limit of %llu bytes", f->path, (unsigned long long)n,
                        PF_ST_MAX_HEADER);
    if (n > size - 8)
        return pf_error("%s: header length %llu runs past the end of the file (%zu bytes): truncated or not a "
                        "safetensors file", f->path, (unsigned long long)n, size);
    const char *hdr = (const char *)buf + 8;
    if (n < 2 || hdr[0] != '{')
        return pf_error("%s: the header does not start with '{' (not a safetensors file)", f->path);
    f->data = buf + 8 + n;
    f->data_size = size - 8 - n;

    json_error_t err;
    json_t *root = json_loadb(hdr, (size_t)n, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return pf_error("%s: the header is not valid JSON: %s (line %d, column %d)", f->path, err.text, err.line,
                        err.column);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = pf_error("%s: the header is not a JSON object", f->path);
        goto done;
    }
    size_t count = json_object_size(root);
    f->tensors = calloc(count ? count : 1, sizeof *f->tensors);
    if (!f->tensors) {
        rc = pf_error("%s: out of memory", f->path);
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) rc = parse_meta(f, val);
        else rc = parse_tensor(f, &f->tensors[f->n_tensors++], key, val);
        if (rc < 0) goto done;
    }
    rc = validate_layout(f);
done:
    json_decref(root);
    return rc;
}

static pf_st_file *new_file(const char *what)
{
    pf_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(what))) {
        free(f);
        pf_error("safetensors: out of memory");
        return NULL;
    }
    return f;
}

pf_st_file *pf_st_parse(const void *buf, size_t size, const char *what)
{
    pf_st_file *f = new_file(what ? what : "<memory>");
    if (!f) return NULL;
    if (parse_into(f, buf, size) < 0) {
        pf_st_close(f);
        return NULL;
    }
    return f;
}

pf_st_file *pf_st_open(const char *path)
{
    pf_st_file *f = new_file(path);
    if (!f) return NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        pf_error("%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        pf_error("%s: not a regular file", path);
        goto fail;
    }
    if (st.st_size > 0) {
        void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            pf_error("%s: cannot map: %s", path, strerror(errno));
            goto fail;
        }
        f->map = map;
        f->map_size = (size_t)st.st_size;
    }
    close(fd);
    fd = -1;
    if (parse_into(f, f->map ? f->map : (const void *)"", f->map_size) < 0) goto fail;
    return f;
fail:
    if (fd >= 0) close(fd);
    pf_st_close(f);
    return NULL;
}

const pf_st_tensor *pf_st_find(const pf_st_file *f, const char *name)
{
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *pf_st_meta(const pf_st_file *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

/* ---- conversion -------------------------------------------------------------------------------- */

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0) {
        float v = (float)man * 0x1p-24f;         /* zero or subnormal: man * 2^-24, exact in float */
        return sign ? -v : v;
    }
    if (exp == 31) bits = sign | 0x7f800000u | man << 13;            /* inf, NaN (payload kept) */
    else bits = sign | (exp + 112) << 23 | man << 13;                /* rebias 15 -> 127 */
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

int pf_st_read_f32(const pf_st_file *f, const pf_st_tensor *t, float *out)
{
    const uint8_t *p = f->data + t->begin;     /* any alignment: read through memcpy */
    uint64_t n = t->numel;
    switch (t->dtype) {
    case PF_ST_F32:
        memcpy(out, p, n * sizeof(float));
        return 0;
    case PF_ST_F16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = half_to_float(h);
        }
        return 0;
    case PF_ST_BF16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&out[i], &bits, 4);
        }
        return 0;
    case PF_ST_F64:
        for (uint64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
        }
        return 0;
    default:
        return pf_error("%s: tensor '%s' has dtype %s, which does not convert to float32 (F32, F16, BF16 and "
                        "F64 do)", f->path, t->name, dtypes[t->dtype].name);
    }
}

/* ---- writing ----------------------------------------------------------------------------------- */

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int by_name(const void *a, const void *b, void *base)
{
    const pf_st_entry *e = base;
    return strcmp(e[*(const int *)a].name, e[*(const int *)b].name);
}

/* the header JSON, padded with spaces to a multiple of 8; NULL with pf_error */
static char *build_header(const char *path, const pf_st_entry *e, const int *order, int n, const char *const *meta,
                          int n_meta, size_t *len)
{
    json_t *root = json_object();
    if (!root) goto oom;
    if (n_meta > 0) {
        json_t *m = json_object();
        if (!m || json_object_set_new(root, "__metadata__", m) < 0) goto oom;
        for (int i = 0; i < n_meta; i++)
            if (json_object_set_new(m, meta[2 * i], json_string(meta[2 * i + 1])) < 0) {
                json_decref(root);
                pf_error("%s: metadata '%s' is not valid UTF-8", path, meta[2 * i]);
                return NULL;
            }
    }
    uint64_t at = 0;
    for (int k = 0; k < n; k++) {
        const pf_st_entry *t = &e[order[k]];
        json_t *shape = json_array(), *obj = json_object();
        if (!shape || !obj || json_object_set_new(root, t->name, obj) < 0) {
            json_decref(shape);
            goto oom;
        }
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            json_array_append_new(shape, json_integer(t->shape[d]));
            numel *= (uint64_t)t->shape[d];
        }
        json_t *offs = json_array();
        if (!offs) goto oom;
        json_array_append_new(offs, json_integer((json_int_t)at));
        at += numel * sizeof(float);
        json_array_append_new(offs, json_integer((json_int_t)at));
        json_object_set_new(obj, "dtype", json_string("F32"));
        json_object_set_new(obj, "shape", shape);
        json_object_set_new(obj, "data_offsets", offs);
    }
    char *s = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    if (!s) goto oom_root_gone;
    size_t raw = strlen(s), padded = (raw + 7) / 8 * 8;
    char *out = realloc(s, padded + 1);
    if (!out) {
        free(s);
        goto oom_root_gone;
    }
    memset(out + raw, ' ', padded - raw);
    out[padded] = '\0';
    *len = padded;
    return out;
oom:
    json_decref(root);
oom_root_gone:
    pf_error("%s: out of memory building the header", path);
    return NULL;
}

int pf_st_save(const char *path, const pf_st_entry *entries, int n, const char *const *meta, int n_meta)
{
    int *order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    if (!order) return pf_error("%s: out of memory", path);
    for (int i = 0; i < n; i++) order[i] = i;
    qsort_r(order, (size_t)n, sizeof *order, by_name, (void *)entries);
    for (int k = 0; k < n; k++) {
        const pf_st_entry *t = &entries[order[k]];
        int bad = !t->name[0] || strcmp(t->name, "__metadata__") == 0 || t->ndim < 0 || t->ndim > PF_ST_MAX_DIMS;
        for (int d = 0; d < t->ndim && !bad; d++) bad = t->shape[d] < 0;
        if (bad || (k > 0 && strcmp(t->name, entries[order[k - 1]].name) == 0)) {
            free(order);
            return pf_error("%s: cannot save tensor '%s': %s", path, t->name,
                            bad ? "bad name or shape" : "the name appears twice");
        }
    }
    size_t hlen = 0;
    char *header = build_header(path, entries, order, n, meta, n_meta, &hlen);
    if (!header) {
        free(order);
        return -1;
    }

    /* a temporary file beside the target: rename is atomic within one file system */
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) {
        free(order);
        free(header);
        return pf_error("%s: out of memory", path);
    }
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    int rc = 0;
    if (fd < 0) {
        rc = pf_error("%s: cannot create a temporary file beside it: %s", path, strerror(errno));
        goto out;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    int ok = fchmod(fd, 0644) == 0 && write_all(fd, len8, 8) == 0 && write_all(fd, header, hlen) == 0;
    for (int k = 0; k < n && ok; k++) {
        const pf_st_entry *t = &entries[order[k]];
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
        ok = write_all(fd, t->data, numel * sizeof(float)) == 0;
    }
    ok = ok && fsync(fd) == 0;
    int saved = errno;
    if (close(fd) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        if (ok) saved = errno;
        unlink(tmp);
        rc = pf_error("%s: cannot write: %s", path, strerror(saved));
        goto out;
    }
    /* make the rename itself durable */
    char *slash = strrchr(tmp, '/');
    if (slash) *slash = '\0';
    int dfd = open(slash ? (slash == tmp ? "/" : tmp) : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
out:
    free(tmp);
    free(order);
    free(header);
    return rc;
}
