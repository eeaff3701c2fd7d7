/* Byte-level BPE tokenizers (see tokenizer.h): tokenizer.json through jansson, the GPT-2
 * pre-tokenizer matched by hand, BPE merges by rank, the GPT-2 byte <-> unicode map. */
#include "engine/tokenizer.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "engine/unicode_ranges.h"

static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---- hash tables ----------------------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;          /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

typedef struct merge_slot {
    uint64_t key;          /* (left id + 1) << 32 | right id; 0: empty */
    int32_t  rank, id;     /* merge priority (lower first) and the merged token */
} merge_slot;

struct pf_tokenizer {
    char    **tokens;      /* (n_ids) each token as the vocabulary writes it; NULL for a hole */
    char    **bytes;       /* (n_ids) what each token decodes to */
    size_t   *n_bytes;     /* (n_ids) */
    int       n_ids;
    int32_t  *vocab;       /* (vocab_cap) open addressing over tokens: ids, -1 empty */
    size_t    vocab_cap;
    merge_slot *merges;    /* (merge_cap) */
    size_t    merge_cap;
    int32_t   byte_id[256];/* the token of each single byte */
    int32_t  *added;       /* (n_added) added token ids, matched in the text before anything else */
    int       n_added;
    int       ignore_merges, add_prefix_space, use_regex;
};

static int32_t vocab_find(const pf_tokenizer *t, const char *s, size_t n)
{
    size_t mask = t->vocab_cap - 1;
    for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t id = t->vocab[i];
        if (id < 0) return -1;
        const char *tok = t->tokens[id];
        if (strlen(tok) == n && memcmp(tok, s, n) == 0) return id;
    }
}

static const merge_slot *merge_find(const pf_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a + 1) << 32 | (uint32_t)b;
    size_t mask = t->merge_cap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        if (t->merges[i].key == 0) return NULL;
        if (t->merges[i].key == key) return &t->merges[i];
    }
}

/* ---- UTF-8 and the GPT-2 byte map ------------------------------------------------------------------ */

/* Decode one code point: its length (> 0), or minus the length of the maximal invalid subpart
 * (Unicode 3.9, "U+FFFD substitution of maximal subparts") with *cp = UINT32_MAX. */
static int utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char b = s[0];
    *cp = UINT32_MAX;
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    int need;
    unsigned char lo = 0x80, hi = 0xBF;          /* the valid range of the second byte */
    if (b >= 0xC2 && b <= 0xDF) need = 1;
    else if (b == 0xE0) need = 2, lo = 0xA0;
    else if (b == 0xED) need = 2, hi = 0x9F;
    else if (b >= 0xE1 && b <= 0xEF) need = 2;
    else if (b == 0xF0) need = 3, lo = 0x90;
    else if (b == 0xF4) need = 3, hi = 0x8F;
    else if (b >= 0xF1 && b <= 0xF3) need = 3;
    else return -1;
    uint32_t v = b & (0x3F >> need);
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n || s[k] < (k == 1 ? lo : 0x80) || s[k] > (k == 1 ? hi : 0xBF)) return -k;
        v = v << 6 | (s[k] & 0x3F);
    }
    *cp = v;
    return need + 1;
}

/* the length of one code point for splitting: an invalid byte is a code point of its own */
static int cp_at(const unsigned char *s, size_t n, uint32_t *cp)
{
    int k = utf8_next(s, n, cp);
    return k > 0 ? k : 1;
}

static int utf8_put(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* GPT-2's bytes_to_unicode: printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves, the
 * other 68 map to U+0100 onwards in byte order */
static uint32_t byte_char(int b)
{
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return (uint32_t)b;
    int k = 0;
    for (int i = 0; i < b; i++)
        if (!((i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF))) k++;
    return 256u + (uint32_t)k;
}

/* the byte a code point of a byte-level token stands for, or -1 */
static int char_byte(uint32_t cp)
{
    if (cp < 256) return byte_char((int)cp) == cp ? (int)cp : -1;
    for (int b = 0; b < 256; b++)
        if (byte_char(b) == cp) return b;
    return -1;
}

/* ---- Unicode classes for the regex ---------------------------------------------------------------- */

enum { CL_OTHER, CL_LETTER, CL_NUMBER, CL_SPACE };

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

static int cp_class(uint32_t cp)
{
    if (cp == UINT32_MAX) return CL_OTHER;
    /* White_Space (PropList.txt): the code points Oniguruma's Unicode \s matches */
    if ((cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
        (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
        cp == 0x3000)
        return CL_SPACE;
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return CL_LETTER;
        if (cp >= '0' && cp <= '9') return CL_NUMBER;
        return CL_OTHER;
    }
    if (in_ranges(pf_unicode_letter, sizeof pf_unicode_letter / sizeof pf_unicode_letter[0], cp)) return CL_LETTER;
    if (in_ranges(pf_unicode_number, sizeof pf_unicode_number / sizeof pf_unicode_number[0], cp)) return CL_NUMBER;
    return CL_OTHER;
}

/* ---- the GPT-2 pre-tokenizer ---------------------------------------------------------------------- */

/* the code point at byte pos: its value and class; returns where the next one starts */
static size_t next_cp(const unsigned char *s, size_t len, size_t pos, uint32_t *cp, int *cl)
{
    size_t next = pos + (size_t)cp_at(s + pos, len - pos, cp);
    *cl = cp_class(*cp);
    return next;
}

/* the end of the run of class `want` starting at byte pos */
static size_t run_end(const unsigned char *s, size_t len, size_t pos, int want)
{
    while (pos < len) {
        uint32_t cp;
        int cl;
        size_t next = next_cp(s, len, pos, &cp, &cl);
        if (cl != want) break;
        pos = next;
    }
    return pos;
}

size_t pf_gpt2_split(const char *text, size_t len, size_t *ends)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t n_pieces = 0, i = 0;
    while (i < len) {
        uint32_t cp, cp2 = 0;
        int cl, cl2 = -1;
        size_t j = next_cp(s, len, i, &cp, &cl), end = 0;
        if (j < len) next_cp(s, len, j, &cp2, &cl2);
        /* 's|'t|'re|'ve|'m|'ll|'d */
        if (cp == '\'' && j < len) {
            if (cp2 == 's' || cp2 == 't' || cp2 == 'm' || cp2 == 'd') end = j + 1;
            else if (j + 1 < len && ((cp2 == 'r' && s[j + 1] == 'e') || (cp2 == 'v' && s[j + 1] == 'e') ||
                                     (cp2 == 'l' && s[j + 1] == 'l')))
                end = j + 2;
        }
        if (!end) {
            /*  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+ : an optional space, then a run of one class */
            if (cp == ' ' && j < len && cl2 != CL_SPACE) end = run_end(s, len, j, cl2);
            else if (cl != CL_SPACE) end = run_end(s, len, i, cl);
        }
        if (!end) {
            /* \s+(?!\S) | \s+ : a whitespace run; when something other than whitespace follows a run
             * longer than one character, its last character is left to the next piece */
            size_t k = i, last = i;
            while (k < len) {
                int kcl;
                size_t next = next_cp(s, len, k, &cp2, &kcl);
                if (kcl != CL_SPACE) break;
                last = k;
                k = next;
            }
            end = (k < len && last > i) ? last : k;
        }
        ends[n_pieces++] = end;
        i = end;
    }
    return n_pieces;
}

/* ---- loading ----------------------------------------------------------------------------------------- */

void pf_tokenizer_free(pf_tokenizer *t)
{
    if (!t) return;
    for (int i = 0; i < t->n_ids; i++) {
        free(t->tokens[i]);
        free(t->bytes[i]);
    }
    free(t->tokens);
    free(t->bytes);
    free(t->n_bytes);
    free(t->vocab);
    free(t->merges);
    free(t->added);
    free(t);
}

int pf_tokenizer_vocab_size(const pf_tokenizer *t) { return t->n_ids; }

static size_t pow2_above(size_t n)
{
    size_t c = 16;
    while (c < 2 * n) c *= 2;
    return c;
}

/* the bytes a byte-level token stands for (a character outside the map stands for itself) */
static int token_to_bytes(const char *tok, char **out, size_t *n)
{
    size_t len = strlen(tok), k = 0;
    char *b = malloc(len + 1);
    if (!b) return -1;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int step = cp_at((const unsigned char *)tok + i, len - i, &cp);
        int byte = cp == UINT32_MAX ? -1 : char_byte(cp);
        if (byte >= 0) b[k++] = (char)byte;
        else {
            memcpy(b + k, tok + i, (size_t)step);
            k += (size_t)step;
        }
        i += (size_t)step;
    }
    *out = b;
    *n = k;
    return 0;
}

static int set_token(pf_tokenizer *t, const char *path, int64_t id, const char *tok, int raw)
{
    if (id < 0 || id >= t->n_ids) return pf_error("%s: token id %lld is out of range", path, (long long)id);
    if (t->tokens[id]) {
        if (strcmp(t->tokens[id], tok) == 0) return 0;          /* an added token that is also in vocab */
        return pf_error("%s: id %lld is given to both '%s' and '%s'", path, (long long)id, t->tokens[id], tok);
    }
    if (!(t->tokens[id] = strdup(tok))) return pf_error("%s: out of memory", path);
    if (raw) {
        t->n_bytes[id] = strlen(tok);
        t->bytes[id] = strdup(tok);
        if (!t->bytes[id]) return pf_error("%s: out of memory", path);
    } else if (token_to_bytes(tok, &t->bytes[id], &t->n_bytes[id]) < 0) {
        return pf_error("%s: out of memory", path);
    }
    return 0;
}

static int check_pre_tokenizer(pf_tokenizer *t, const char *path, const json_t *pre)
{
    const char *type = json_string_value(json_object_get(pre, "type"));
    if (type && strcmp(type, "ByteLevel") == 0) {
        const json_t *aps = json_object_get(pre, "add_prefix_space"), *ur = json_object_get(pre, "use_regex");
        t->add_prefix_space = aps ? json_is_true(aps) : 1;
        if (ur && !json_is_true(ur)) t->use_regex = 0;
        return 0;
    }
    if (type && strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(pre, "pretokenizers");
        size_t n = json_array_size(list);
        for (size_t i = 0; i < n; i++) {
            const json_t *p = json_array_get(list, i);
            const char *ty = json_string_value(json_object_get(p, "type"));
            if (ty && strcmp(ty, "Split") == 0 && i + 1 < n) {
                const char *re = json_string_value(json_object_get(json_object_get(p, "pattern"), "Regex"));
                const char *beh = json_string_value(json_object_get(p, "behavior"));
                if (!re || strcmp(re, GPT2_REGEX) != 0 || !beh || strcmp(beh, "Isolated") != 0 ||
                    json_is_true(json_object_get(p, "invert")))
                    return pf_error("%s: pre-tokenizer Split with pattern %s is not supported (only the GPT-2 regex, "
                                    "Isolated)", path, re ? re : "(not a regex)");
                continue;
            }
            if (ty && strcmp(ty, "ByteLevel") == 0 && i + 1 == n) {
                PF_TRY(check_pre_tokenizer(t, path, p));
                t->use_regex = 1;        /* the Split did the GPT-2 regex */
                return 0;
            }
            return pf_error("%s: pre-tokenizer %s inside a Sequence is not supported", path, ty ? ty : "?");
        }
    }
    return pf_error("%s: pre-tokenizer %s is not supported (byte-level BPE needs ByteLevel)", path,
                    type ? type : "null");
}

static int load_json(pf_tokenizer *t, const char *path, json_t *root)
{
    const json_t *model = json_object_get(root, "model");
    const char *type = json_string_value(json_object_get(model, "type"));
    if (!type || strcmp(type, "BPE") != 0)
        return pf_error("%s: model type %s is not supported (only BPE)", path, type ? type : "(none)");
    if (json_is_true(json_object_get(model, "byte_fallback")))
        return pf_error("%s: BPE with byte_fallback (SentencePiece style) is not supported: byte-level BPE only", path);
    const char *fix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *v = json_string_value(json_object_get(model, fix[i]));
        if (v && *v) return pf_error("%s: BPE with %s '%s' is not supported", path, fix[i], v);
    }
    t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    const json_t *norm = json_object_get(root, "normalizer");
    if (norm && !json_is_null(norm)) {
        const char *nt = json_string_value(json_object_get(norm, "type"));
        if (!nt || strcmp(nt, "NFC") != 0)
            return pf_error("%s: normalizer %s is not supported (none or NFC)", path, nt ? nt : "?");
    }
    t->use_regex = 1;
    PF_TRY(check_pre_tokenizer(t, path, json_object_get(root, "pre_tokenizer")));

    const json_t *vocab = json_object_get(model, "vocab"), *added = json_object_get(root, "added_tokens");
    if (!json_is_object(vocab)) return pf_error("%s: model.vocab is not an object", path);
    int64_t max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= (1 << 24))
            return pf_error("%s: vocab entry '%s' has no valid id", path, key);
        if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
    }
    size_t n_added = json_array_size(added);
    for (size_t i = 0; i < n_added; i++) {
        json_int_t id = json_integer_value(json_object_get(json_array_get(added, i), "id"));
        if (id < 0 || id >= (1 << 24)) return pf_error("%s: added token %zu has no valid id", path, i);
        if (id > max_id) max_id = id;
    }
    t->n_ids = (int)(max_id + 1);
    t->tokens = calloc((size_t)t->n_ids + 1, sizeof *t->tokens);
    t->bytes = calloc((size_t)t->n_ids + 1, sizeof *t->bytes);
    t->n_bytes = calloc((size_t)t->n_ids + 1, sizeof *t->n_bytes);
    t->added = calloc(n_added + 1, sizeof *t->added);
    t->vocab_cap = pow2_above((size_t)t->n_ids);
    t->vocab = malloc(t->vocab_cap * sizeof *t->vocab);
    if (!t->tokens || !t->bytes || !t->n_bytes || !t->added || !t->vocab) return pf_error("%s: out of memory", path);
    memset(t->vocab, 0xff, t->vocab_cap * sizeof *t->vocab);
    json_object_foreach((json_t *)vocab, key, val) PF_TRY(set_token(t, path, json_integer_value(val), key, 0));
    for (size_t i = 0; i < n_added; i++) {
        const json_t *a = json_array_get(added, i);
        const char *content = json_string_value(json_object_get(a, "content"));
        if (!content || !*content) return pf_error("%s: added token %zu has no content", path, i);
        int64_t id = json_integer_value(json_object_get(a, "id"));
        if (!t->tokens[id]) PF_TRY(set_token(t, path, id, content, 1));
        else if (strcmp(t->tokens[id], content) != 0)
            return pf_error("%s: added token '%s' reuses id %lld of '%s'", path, content, (long long)id, t->tokens[id]);
        else {                     /* in vocab too: it decodes to its content as written */
            free(t->bytes[id]);
            t->bytes[id] = strdup(content);
            t->n_bytes[id] = strlen(content);
            if (!t->bytes[id]) return pf_error("%s: out of memory", path);
        }
        t->added[t->n_added++] = (int32_t)id;
    }
    size_t mask = t->vocab_cap - 1;
    for (int id = 0; id < t->n_ids; id++) {
        if (!t->tokens[id]) continue;
        size_t i = hash_bytes(t->tokens[id], strlen(t->tokens[id])) & mask;
        while (t->vocab[i] >= 0) {
            if (strcmp(t->tokens[t->vocab[i]], t->tokens[id]) == 0)
                return pf_error("%s: token '%s' has two ids", path, t->tokens[id]);
            i = (i + 1) & mask;
        }
        t->vocab[i] = id;
    }
    for (int b = 0; b < 256; b++) {
        char s[4];
        int n = utf8_put(s, byte_char(b));
        t->byte_id[b] = vocab_find(t, s, (size_t)n);     /* -1: this byte cannot be encoded */
    }

    const json_t *merges = json_object_get(model, "merges");
    size_t n_merges = json_array_size(merges);
    t->merge_cap = pow2_above(n_merges);
    t->merges = calloc(t->merge_cap, sizeof *t->merges);
    if (!t->merges) return pf_error("%s: out of memory", path);
    for (size_t r = 0; r < n_merges; r++) {
        const json_t *m = json_array_get(merges, r);
        const char *a, *b;
        size_t la, lb;
        char buf[512];
        if (json_is_string(m)) {                            /* "a b" */
            const char *s = json_string_value(m), *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) return pf_error("%s: merge %zu '%s' is not two tokens", path, r, s);
            a = s, la = (size_t)(sp - s), b = sp + 1, lb = strlen(b);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {   /* ["a", "b"] */
            a = json_string_value(json_array_get(m, 0)), la = strlen(a);
            b = json_string_value(json_array_get(m, 1)), lb = strlen(b);
        } else {
            return pf_error("%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", path, r);
        }
        if (la + lb >= sizeof buf) return pf_error("%s: merge %zu is too long", path, r);
        memcpy(buf, a, la);
        memcpy(buf + la, b, lb);
        int32_t ia = vocab_find(t, a, la), ib = vocab_find(t, b, lb), im = vocab_find(t, buf, la + lb);
        if (ia < 0 || ib < 0 || im < 0)
            return pf_error("%s: merge %zu (%.*s + %.*s) uses a token not in the vocabulary", path, r, (int)la, a,
                            (int)lb, b);
        uint64_t k = ((uint64_t)(uint32_t)ia + 1) << 32 | (uint32_t)ib;
        size_t i = hash_u64(k) & (t->merge_cap - 1);
        while (t->merges[i].key && t->merges[i].key != k) i = (i + 1) & (t->merge_cap - 1);
        if (t->merges[i].key == 0) t->merges[i] = (merge_slot){k, (int32_t)r, im};   /* first rank wins */
    }
    return 0;
}

pf_tokenizer *pf_tokenizer_load(const char *path)
{
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root) {
        pf_error("%s: cannot read tokenizer JSON: %s (line %d, column %d)", path, err.text, err.line, err.column);
        return NULL;
    }
    pf_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        json_decref(root);
        pf_error("%s: out of memory", path);
        return NULL;
    }
    int rc = load_json(t, path, root);
    json_decref(root);
    if (rc < 0) {
        pf_tokenizer_free(t);
        return NULL;
    }
    return t;
}

/* ---- encoding -------------------------------------------------------------------------------------- */

typedef struct ids_buf {
    int32_t *v;
    size_t   n, cap;
} ids_buf;

static int push_id(ids_buf *b, int32_t id)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        int32_t *v = realloc(b->v, cap * sizeof *v);
        if (!v) return pf_error("tokenizer: out of memory");
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = id;
    return 0;
}

/* BPE over one pre-token of raw bytes: its bytes' tokens, then the lowest-ranked adjacent pair merged
 * (leftmost first among equal ranks), again and again, as the library's Word::merge_all does */
static int bpe_word(const pf_tokenizer *t, const unsigned char *w, size_t n, ids_buf *out, int32_t *sym)
{
    if (t->ignore_merges) {
        char whole[1024];
        size_t k = 0;
        for (size_t i = 0; i < n && k + 4 < sizeof whole; i++) k += (size_t)utf8_put(whole + k, byte_char(w[i]));
        int32_t id = k + 4 < sizeof whole ? vocab_find(t, whole, k) : -1;
        if (id >= 0) return push_id(out, id);
    }
    for (size_t i = 0; i < n; i++) {
        sym[i] = t->byte_id[w[i]];
        if (sym[i] < 0) return pf_error("tokenizer: byte 0x%02x has no token in the vocabulary", w[i]);
    }
    size_t m = n;
    for (;;) {
        int32_t best = INT32_MAX, merged = -1;
        size_t at = 0;
        for (size_t i = 0; i + 1 < m; i++) {
            const merge_slot *s = merge_find(t, sym[i], sym[i + 1]);
            if (s && s->rank < best) best = s->rank, merged = s->id, at = i;
        }
        if (merged < 0) break;
        sym[at] = merged;
        memmove(sym + at + 1, sym + at + 2, (m - at - 2) * sizeof *sym);
        m--;
    }
    for (size_t i = 0; i < m; i++) PF_TRY(push_id(out, sym[i]));
    return 0;
}

/* a stretch of text between added tokens: ByteLevel (prefix space, GPT-2 split), then BPE per piece */
static int encode_segment(const pf_tokenizer *t, const char *text, size_t len, ids_buf *out)
{
    if (len == 0) return 0;
    int prefix = t->add_prefix_space && text[0] != ' ';
    size_t n = len + (size_t)prefix;
    char *s = malloc(n + 1);
    size_t *ends = malloc((n + 1) * sizeof *ends);
    int32_t *sym = malloc((n + 1) * sizeof *sym);
    if (!s || !ends || !sym) {
        free(s);
        free(ends);
        free(sym);
        return pf_error("tokenizer: out of memory");
    }
    if (prefix) s[0] = ' ';
    memcpy(s + prefix, text, len);
    size_t pieces = 1;
    if (t->use_regex) pieces = pf_gpt2_split(s, n, ends);
    else ends[0] = n;
    int rc = 0;
    for (size_t p = 0, start = 0; p < pieces && rc == 0; start = ends[p], p++)
        rc = bpe_word(t, (const unsigned char *)s + start, ends[p] - start, out, sym);
    free(s);
    free(ends);
    free(sym);
    return rc;
}

int pf_tokenizer_encode(const pf_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n)
{
    ids_buf out = {NULL, 0, 0};
    size_t start = 0, i = 0;
    int rc = 0;
    while (i < len && rc == 0) {
        int32_t hit = -1;
        size_t hit_len = 0;
        for (int a = 0; a < t->n_added; a++) {
            const char *c = t->bytes[t->added[a]];
            size_t cl = t->n_bytes[t->added[a]];
            if (cl > hit_len && cl <= len - i && memcmp(text + i, c, cl) == 0) hit = t->added[a], hit_len = cl;
        }
        if (hit < 0) {
            i++;
            continue;
        }
        rc = encode_segment(t, text + start, i - start, &out);
        if (rc == 0) rc = push_id(&out, hit);
        i += hit_len;
        start = i;
    }
    if (rc == 0) rc = encode_segment(t, text + start, len - start, &out);
    if (rc < 0) {
        free(out.v);
        return -1;
    }
    *ids = out.v ? out.v : malloc(sizeof(int32_t));
    *n = out.n;
    return *ids ? 0 : pf_error("tokenizer: out of memory");
}

/* ---- decoding -------------------------------------------------------------------------------------- */

int pf_tokenizer_token_bytes(const pf_tokenizer *t, int32_t id, char *buf, size_t cap)
{
    if (id < 0 || id >= t->n_ids || !t->bytes[id]) return -1;
    size_t n = t->n_bytes[id];
    if (cap) memcpy(buf, t->bytes[id], n < cap ? n : cap);
    return (int)n;
}

int32_t pf_tokenizer_token_id(const pf_tokenizer *t, const char *token) { return vocab_find(t, token, strlen(token)); }

int pf_tokenizer_decode(const pf_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len)
{
    size_t raw_len = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids || !t->bytes[ids[i]])
            return pf_error("decode: id %d at position %zu is not in the vocabulary (%d ids)", (int)ids[i], i + 1,
                            t->n_ids);
        raw_len += t->n_bytes[ids[i]];
    }
    char *raw = malloc(raw_len + 1), *out = malloc(3 * raw_len + 1);    /* U+FFFD is 3 bytes per bad byte */
    if (!raw || !out) {
        free(raw);
        free(out);
        return pf_error("decode: out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(raw + k, t->bytes[ids[i]], t->n_bytes[ids[i]]);
        k += t->n_bytes[ids[i]];
    }
    /* from_utf8_lossy: one U+FFFD per maximal invalid subpart */
    size_t o = 0;
    for (size_t i = 0; i < raw_len;) {
        uint32_t cp;
        int step = utf8_next((const unsigned char *)raw + i, raw_len - i, &cp);
        if (step > 0) {
            memcpy(out + o, raw + i, (size_t)step);
            o += (size_t)step;
            i += (size_t)step;
        } else {
            o += (size_t)utf8_put(out + o, 0xFFFD);
            i += (size_t)-step;
        }
    }
    out[o] = '\0';
    free(raw);
    *text = out;
    *len = o;
    return 0;
}
