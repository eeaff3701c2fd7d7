/* safetensors: round trip, dtype conversion against hand-computed values, every kind of bad file
 * (each a clear error naming the rule, never a crash: run under `make SAN=1` too), every truncation
 * of a good file, atomic saves; and model checkpoints: parameters and AdamW state round-trip so that
 * logits and the next training step are bit-identical. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/checkpoint.h"
#include "engine/error.h"
#include "engine/model.h"
#include "engine/safetensors.h"
#include "tests/c/layer_check.h"

/* ---- helpers ----------------------------------------------------------------------------------- */

/* a file image: 8-byte length, the header as given, then `data` bytes (0xAB) */
static uint8_t *image(const char *header, size_t data, size_t *size)
{
    size_t n = strlen(header);
    *size = 8 + n + data;
    uint8_t *b = malloc(*size);
    assert_non_null(b);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(b + 8, header, n);
    memset(b + 8 + n, 0xAB, data);
    return b;
}

/* parse must fail with a message containing `want` */
static void expect_bad(const uint8_t *buf, size_t size, const char *want)
{
    pf_error_clear();
    pf_st_file *f = pf_st_parse(buf, size, "bad.safetensors");
    if (f) {
        pf_st_close(f);
        fail_msg("parsed a bad file (expected an error with '%s')", want);
    }
    const char *msg = pf_error_message();
    printf("# %s\n", msg);
    if (!strstr(msg, want)) fail_msg("error '%s' does not say '%s'", msg, want);
}

static void expect_bad_header(const char *header, size_t data, const char *want)
{
    size_t size;
    uint8_t *b = image(header, data, &size);
    expect_bad(b, size, want);
    free(b);
}

static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pf_st_XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char p[512];
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
    if (d) closedir(d);
    rmdir(tmpdir);
}

static int count_files(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

/* ---- format ------------------------------------------------------------------------------------ */

static void test_round_trip(void **state)
{
    (void)state;
    make_tmpdir();
    char path[128];
    snprintf(path, sizeof path, "%s/a.safetensors", tmpdir);
    float a[6], b[4], s[1] = {-0.0f};
    for (int i = 0; i < 6; i++) a[i] = (float)i / 3.0f - 1e-30f * i;
    for (int i = 0; i < 4; i++) b[i] = nextafterf((float)i, 100.0f);
    pf_st_entry e[] = {
        {"layers.0.w", 2, (int[]){2, 3}, a}, {"b", 1, (int[]){4}, b}, {"scalar", 0, NULL, s},
        {"empty", 2, (int[]){0, 5}, NULL},
    };
    const char *meta[] = {"format", "pt", "note", "unicode: \xc3\xa9 \"quoted\""};
    assert_int_equal(pf_st_save(path, e, 4, meta, 2), 0);
    assert_int_equal(count_files(), 1);        /* no temporary file left behind */
    pf_st_file *f = pf_st_open(path);
    if (!f) fail_msg("%s", pf_error_message());
    assert_int_equal(f->n_tensors, 4);
    assert_string_equal(pf_st_meta(f, "note"), meta[3]);
    assert_null(pf_st_meta(f, "absent"));
    const pf_st_tensor *t = pf_st_find(f, "layers.0.w");
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[1], 3);
    float got[6];
    assert_int_equal(pf_st_read_f32(f, t, got), 0);
    assert_memory_equal(got, a, sizeof a);
    assert_int_equal(pf_st_read_f32(f, pf_st_find(f, "b"), got), 0);
    assert_memory_equal(got, b, sizeof b);
    t = pf_st_find(f, "scalar");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(t->numel, 1);
    assert_int_equal(pf_st_read_f32(f, t, got), 0);
    assert_memory_equal(got, s, sizeof s);
    assert_int_equal(pf_st_find(f, "empty")->numel, 0);
    /* the header length keeps the data 8-byte aligned, as the reference writes it */
    assert_int_equal((uintptr_t)(f->data - (const uint8_t *)f->map) % 8, 0);
    pf_st_close(f);

    /* a save over an existing file replaces it; a failing save leaves it and no temporary */
    assert_int_equal(pf_st_save(path, e + 1, 1, NULL, 0), 0);
    pf_st_entry dup[] = {{"x", 1, (int[]){1}, s}, {"x", 1, (int[]){1}, s}};
    assert_int_equal(pf_st_save(path, dup, 2, NULL, 0), -1);
    assert_non_null(strstr(pf_error_message(), "appears twice"));
    char nodir[160];
    snprintf(nodir, sizeof nodir, "%s/missing/dir.safetensors", tmpdir);
    assert_int_equal(pf_st_save(nodir, e, 1, NULL, 0), -1);
    assert_int_equal(count_files(), 1);
    f = pf_st_open(path);
    assert_non_null(f);
    assert_int_equal(f->n_tensors, 1);
    pf_st_close(f);
    remove_tmpdir();
}

/* F16, BF16 and F64 against values computed by hand from their bit patterns */
static void test_dtype_conversion(void **state)
{
    (void)state;
    const char *h = "{\"h\":{\"dtype\":\"F16\",\"shape\":[8],\"data_offsets\":[0,16]},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[16,24]},"
                    "\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[24,32]},"
                    "\"i\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[32,40]}}";
    size_t size;
    uint8_t *img = image(h, 40, &size);
    uint8_t *data = img + size - 40;
    /* 1, -2, 2^-24 (smallest subnormal), 65504 (largest), +inf, 1/3 rounded, -0, 2^-14 (smallest normal) */
    const uint16_t hb[8] = {0x3C00, 0xC000, 0x0001, 0x7BFF, 0x7C00, 0x3555, 0x8000, 0x0400};
    const float hv[8] = {1.0f, -2.0f, 5.9604644775390625e-08f, 65504.0f, INFINITY, 0.333251953125f, -0.0f,
                         6.103515625e-05f};
    const uint16_t bb[4] = {0x3F80, 0x4049, 0xBF00, 0x7FC0};    /* 1, 3.140625, -0.5, NaN */
    for (int i = 0; i < 8; i++) memcpy(data + 2 * i, &hb[i], 2);
    for (int i = 0; i < 4; i++) memcpy(data + 16 + 2 * i, &bb[i], 2);
    double dv = 0.1;
    memcpy(data + 24, &dv, 8);
    pf_st_file *f = pf_st_parse(img, size, "conv");
    if (!f) fail_msg("%s", pf_error_message());
    float out[8];
    assert_int_equal(pf_st_read_f32(f, pf_st_find(f, "h"), out), 0);
    for (int i = 0; i < 8; i++) {
        assert_memory_equal(&out[i], &hv[i], 4);
    }
    assert_int_equal(pf_st_read_f32(f, pf_st_find(f, "b"), out), 0);
    assert_true(out[0] == 1.0f && out[1] == 3.140625f && out[2] == -0.5f && isnan(out[3]));
    assert_int_equal(pf_st_read_f32(f, pf_st_find(f, "d"), out), 0);
    assert_true(out[0] == 0.1f);
    assert_int_equal(pf_st_read_f32(f, pf_st_find(f, "i"), out), -1);
    printf("# %s\n", pf_error_message());
    assert_non_null(strstr(pf_error_message(), "tensor 'i' has dtype I32"));
    pf_st_close(f);
    free(img);
}

static void test_bad_files(void **state)
{
    (void)state;
    const uint8_t tiny[5] = {1, 0, 0, 0, 0};
    expect_bad(tiny, 5, "fewer than the 8");
    expect_bad(tiny, 0, "fewer than the 8");
    /* header length past the end, and past the limit */
    uint8_t len[16] = {200, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    expect_bad(len, 10, "runs past the end of the file");
    uint8_t huge[16] = {0, 0, 0, 0, 0, 0, 0, 0x80, '{', '}'};
    expect_bad(huge, 16, "exceeds the limit");
    uint8_t big[16] = {0x01, 0xe1, 0xf5, 0x05, 0, 0, 0, 0, '{', '}'};     /* 100000001 */
    expect_bad(big, 16, "exceeds the limit");
    expect_bad_header("[1, 2]", 0, "does not start with '{'");
    expect_bad_header("{\"a\": ", 0, "not valid JSON");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", 4, "not valid JSON");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "the tensors cover 4 bytes");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "the file is truncated");
    /* overlapping and gapped offsets */
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "tensor 'b'");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, "leave a gap");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "leave a gap");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, "end before they begin");
    /* shape and span disagree; shape products that overflow */
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                      "make 12 bytes but data_offsets [0, 8] span 8");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
                      "tensor 'a': the product of the shape overflows");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", 4,
                      "tensor 'a': the byte size of its shape overflows");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551615]}}", 4,
                      "not valid JSON");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "data_offsets");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"
                      "\"data_offsets\":[0,4]}}", 4, "17 dimensions");
    /* duplicate names, at the top level and inside an entry */
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "duplicate object key");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      "duplicate object key");
    /* unknown and missing dtypes, bad metadata, bad entries, bad UTF-8 */
    expect_bad_header("{\"a\":{\"dtype\":\"F17\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      "tensor 'a': unknown dtype 'F17'");
    expect_bad_header("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': missing or non-string dtype");
    expect_bad_header("{\"a\":[1]}", 0, "tensor 'a': its entry must be an object");
    expect_bad_header("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ entry 'k' must be a string");
    expect_bad_header("{\"__metadata__\":[]}", 0, "__metadata__ must be an object");
    expect_bad_header("{\"\xff\":{}}", 0, "not valid JSON");
    expect_bad_header("{\"a\\u0000b\":{}}", 0, "not valid JSON");

    /* empty header and empty tensors are fine */
    size_t size;
    uint8_t *ok = image("{}", 0, &size);
    pf_st_file *f = pf_st_parse(ok, size, "empty");
    assert_non_null(f);
    assert_int_equal(f->n_tensors, 0);
    pf_st_close(f);
    free(ok);
}

/* every prefix of a good file is an error (and never a read past the prefix: ASan) */
static void test_every_truncation(void **state)
{
    (void)state;
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],"
                    "\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[16,22]}}";
    size_t size;
    uint8_t *img = image(h, 22, &size);
    pf_st_file *f = pf_st_parse(img, size, "whole");
    assert_non_null(f);
    pf_st_close(f);
    for (size_t n = 0; n < size; n++) {
        uint8_t *cut = malloc(n ? n : 1);      /* its own allocation, so ASan sees any overread */
        memcpy(cut, img, n);
        f = pf_st_parse(cut, n, "cut");
        if (f) fail_msg("a file cut to %zu of %zu bytes parsed", n, size);
        free(cut);
    }
    free(img);
}

static void test_open_errors(void **state)
{
    (void)state;
    assert_null(pf_st_open("/nonexistent/x.safetensors"));
    assert_non_null(strstr(pf_error_message(), "cannot open"));
    assert_null(pf_st_open("/tmp"));
    assert_non_null(strstr(pf_error_message(), "not a regular file"));
    make_tmpdir();
    char path[128];
    snprintf(path, sizeof path, "%s/empty.safetensors", tmpdir);
    FILE *fp = fopen(path, "wb");
    fclose(fp);
    assert_null(pf_st_open(path));
    assert_non_null(strstr(pf_error_message(), "fewer than the 8"));
    remove_tmpdir();
}

/* ---- model checkpoints ------------------------------------------------------------------------- */

static pf_model *model(uint64_t seed, pf_norm_kind norm, int tie)
{
    pf_model_config cfg = {.vocab = 19, .dim = 16, .seed = seed, .norm = norm, .tie_embeddings = tie,
                           .be = &pf_backend_cpu};
    pf_model *m = pf_model_new(&cfg);
    assert_non_null(m);
    const char *kinds[] = {"mamba", "attention", "moe", "mlp", "mamba2"};
    const char *opts[] = {"state=4", "heads=2", "experts=4 top_k=2 hidden=16", "hidden=24",
                          "state=8 head_dim=8 chunk=4"};
    for (int i = 0; i < 5; i++) {
        pf_config c = check_config(pf_layer_kind_find(kinds[i]), opts[i]);
        assert_true(pf_model_add_layer(m, pf_layer_kind_find(kinds[i]), &c, -1) >= 0);
    }
    pf_config c = check_config(pf_layer_kind_find("mlp"), "hidden=24");
    assert_true(pf_model_add_layer(m, pf_layer_kind_find("mlp"), &c, 3) >= 0);     /* shares block 3 */
    if (pf_model_build(m) < 0) fail_msg("%s", pf_error_message());
    return m;
}

static void batch(int32_t *in, int32_t *tg, int n, uint64_t seed)
{
    pf_rng r;
    pf_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        in[i] = (int32_t)pf_rng_below(&r, 19);
        tg[i] = (int32_t)pf_rng_below(&r, 19);
    }
}

static void check_model_round_trip(pf_norm_kind norm, int tie)
{
    enum { B = 2, T = 12 };
    int32_t in[B * T], tg[B * T];
    pf_train_config tc;
    pf_train_config_default(&tc);
    pf_train_stats st;
    pf_model *a = model(1, norm, tie), *b = model(2, norm, tie);
    for (int s = 0; s < 3; s++) {
        batch(in, tg, B * T, 10 + s);
        assert_int_equal(pf_model_train_step(a, in, tg, NULL, B, T, &tc, &st), 0);
    }
    int n = pf_model_named_params(a, NULL, 0);
    pf_named_param *np = calloc((size_t)n, sizeof *np);
    pf_model_named_params(a, np, n);
    size_t sum = 0;
    for (int i = 0; i < n; i++) sum += np[i].numel;
    assert_int_equal(sum, pf_model_n_params(a));       /* the names cover the flat buffer once */
    assert_string_equal(np[0].name, "embed.weight");
    assert_string_equal(np[1].name, "layers.0.norm.weight");
    make_tmpdir();
    char path[128];
    snprintf(path, sizeof path, "%s/m.safetensors", tmpdir);
    const char *meta[] = {"postformer.model", "{}"};
    if (pf_checkpoint_save(a, path, meta, 1, 1) < 0) fail_msg("%s", pf_error_message());
    pf_st_file *f = pf_st_open(path);
    assert_non_null(f);
    assert_int_equal(f->n_tensors, 3 * n);
    assert_null(pf_st_find(f, "layers.5.norm.weight"));     /* the shared block is saved once */
    assert_true((pf_st_find(f, "head.weight") == NULL) == tie);
    pf_checkpoint_source *src = calloc((size_t)n, sizeof *src);
    for (int i = 0; i < n; i++) src[i] = (pf_checkpoint_source){np[i].name, f, np[i].name};
    /* a missing source is named, and nothing is loaded */
    assert_int_equal(pf_checkpoint_load(b, src + 1, n - 1, 0), -1);
    printf("# %s\n", pf_error_message());
    assert_non_null(strstr(pf_error_message(), "no tensor given for: embed.weight"));
    if (pf_checkpoint_load(b, src, n, 1) < 0) fail_msg("%s", pf_error_message());
    assert_int_equal(pf_model_steps_taken(b), 3);
    pf_st_close(f);

    /* bit-identical logits, forward and stepped, and the same next training step */
    batch(in, tg, B * T, 99);
    pf_tensor *la, *lb;
    assert_int_equal(pf_model_forward(a, in, B, T, &la), 0);
    assert_int_equal(pf_model_forward(b, in, B, T, &lb), 0);
    assert_memory_equal(la->data, lb->data, pf_tensor_numel(la) * sizeof(float));
    pf_tensor_free(la);
    pf_tensor_free(lb);
    pf_model_reset(a);
    pf_model_reset(b);
    for (int t = 0; t < T; t++) {
        assert_int_equal(pf_model_step(a, in[t], &la), 0);
        assert_int_equal(pf_model_step(b, in[t], &lb), 0);
        assert_memory_equal(la->data, lb->data, pf_tensor_numel(la) * sizeof(float));
        pf_tensor_free(la);
        pf_tensor_free(lb);
    }
    pf_train_stats sa, sb;
    assert_int_equal(pf_model_train_step(a, in, tg, NULL, B, T, &tc, &sa), 0);
    assert_int_equal(pf_model_train_step(b, in, tg, NULL, B, T, &tc, &sb), 0);
    assert_int_equal(sa.step, sb.step);
    assert_true(sa.loss == sb.loss && sa.grad_norm == sb.grad_norm);
    size_t P = pf_model_n_params(a);
    float *pa = malloc(P * sizeof(float)), *pb = malloc(P * sizeof(float));
    memcpy(pa, pf_model_params(a), P * sizeof(float));
    memcpy(pb, pf_model_params(b), P * sizeof(float));
    assert_memory_equal(pa, pb, P * sizeof(float));
    free(pa);
    free(pb);
    free(src);
    free(np);
    pf_model_free(a);
    pf_model_free(b);
    remove_tmpdir();
}

static void test_model_round_trip_rms_untied(void **state)
{
    (void)state;
    check_model_round_trip(PF_NORM_RMS, 0);
}

static void test_model_round_trip_layernorm_tied(void **state)
{
    (void)state;
    check_model_round_trip(PF_NORM_LAYER, 1);
}

/* a checkpoint of another shape is refused with the parameter and both shapes named */
static void test_model_shape_mismatch(void **state)
{
    (void)state;
    pf_model *a = model(1, PF_NORM_RMS, 0);
    make_tmpdir();
    char path[128];
    snprintf(path, sizeof path, "%s/m.safetensors", tmpdir);
    float w[19 * 8] = {0};
    pf_st_entry e[] = {{"embed.weight", 2, (int[]){19, 8}, w}};
    assert_int_equal(pf_st_save(path, e, 1, NULL, 0), 0);
    pf_st_file *f = pf_st_open(path);
    pf_checkpoint_source src[] = {{"embed.weight", f, "embed.weight"}};
    int n = pf_model_named_params(a, NULL, 0);
    pf_named_param *np = calloc((size_t)n, sizeof *np);
    pf_model_named_params(a, np, n);
    pf_checkpoint_source *all = calloc((size_t)n, sizeof *all);
    for (int i = 0; i < n; i++) all[i] = (pf_checkpoint_source){np[i].name, f, np[i].name};
    assert_int_equal(pf_checkpoint_load(a, all, n, 0), -1);
    printf("# %s\n", pf_error_message());
    assert_non_null(strstr(pf_error_message(), "embed.weight: shape [19, 16] but 'embed.weight'"));
    assert_non_null(strstr(pf_error_message(), "is [19, 8]"));
    /* with the shape fixed, the missing ones are listed */
    float w2[19 * 16] = {0};
    e[0] = (pf_st_entry){"embed.weight", 2, (int[]){19, 16}, w2};
    pf_st_close(f);
    assert_int_equal(pf_st_save(path, e, 1, NULL, 0), 0);
    f = pf_st_open(path);
    for (int i = 0; i < n; i++) all[i].file = f;
    assert_int_equal(pf_checkpoint_load(a, all, n, 0), -1);
    printf("# %s\n", pf_error_message());
    assert_non_null(strstr(pf_error_message(), "tensors missing from the checkpoint: layers.0.norm.weight, "));
    assert_non_null(strstr(pf_error_message(), "more"));
    (void)src;
    free(all);
    free(np);
    pf_st_close(f);
    pf_model_free(a);
    remove_tmpdir();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_dtype_conversion),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_model_round_trip_rms_untied),
        cmocka_unit_test(test_model_round_trip_layernorm_tied),
        cmocka_unit_test(test_model_shape_mismatch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
