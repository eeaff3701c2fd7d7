/* Byte-level BPE tokenizers from a Hugging Face tokenizer.json (GPT-2, GPT-NeoX and their
 * descendants): encode text to ids and decode ids to text.
 *
 * What is read: model {type "BPE", vocab, merges (as "a b" strings or [a, b] pairs), ignore_merges};
 * added_tokens (split out of the text first, longest match, and encoded as their id); pre_tokenizer
 * ByteLevel {add_prefix_space, use_regex} alone or after a Split whose pattern is the GPT-2 regex.
 * Anything else that would change the ids is refused with a message (another model type,
 * byte_fallback, a subword prefix or suffix, another Split regex); a normalizer of type NFC is
 * accepted but not applied (text is taken to be in NFC already, as typed text nearly always is);
 * post_processor templates (BOS/EOS) are not applied: encode gives the ids of the text alone.
 *
 * The pre-tokenizer regex is GPT-2's,
 *     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * matched by hand (engine/tokenizer.c, split_gpt2) with leftmost-first alternation as Oniguruma
 * (the tokenizers library's regex engine) does. \p{L} and \p{N} are exact general-category tables
 * generated from Python's unicodedata (engine/unicode_ranges.h, Unicode 14.0), \s is the Unicode
 * White_Space property (25 code points, listed in the code); a difference can only come from a code
 * point whose category changed between Unicode 14.0 and the library's version. Bytes that are not
 * valid UTF-8 each count as one code point outside L, N and \s. */
#ifndef PF_TOKENIZER_H
#define PF_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct pf_tokenizer pf_tokenizer;

/* Load tokenizer.json; NULL with pf_error naming the file and the problem. */
pf_tokenizer *pf_tokenizer_load(const char *path);
void          pf_tokenizer_free(pf_tokenizer *t);
int           pf_tokenizer_vocab_size(const pf_tokenizer *t);    /* largest id + 1 */

/* text (len bytes) -> *ids (malloc'd, *n of them; free() it); -1 with pf_error. */
int pf_tokenizer_encode(const pf_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n);
/* ids -> *text (malloc'd, NUL-terminated, *len bytes): the tokens' bytes, invalid UTF-8 replaced by
 * U+FFFD per maximal subpart as the library's decoder (Rust's from_utf8_lossy) does; -1 with
 * pf_error on an id outside the vocabulary. */
int pf_tokenizer_decode(const pf_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len);
/* The raw bytes of one token (no UTF-8 repair: a token may hold part of a character) into buf;
 * returns the length (may exceed cap, then truncated) or -1 for an unknown id. */
int pf_tokenizer_token_bytes(const pf_tokenizer *t, int32_t id, char *buf, size_t cap);
/* The id of an exact token string as the vocabulary writes it (byte-level form), or -1. */
int32_t pf_tokenizer_token_id(const pf_tokenizer *t, const char *token);

/* The GPT-2 pre-tokenizer alone: ends[i] (byte offsets) of the pieces of text; returns the count
 * (at most len). */
size_t pf_gpt2_split(const char *text, size_t len, size_t *ends);

#endif
