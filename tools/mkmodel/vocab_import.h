/*
 * vocab_import.h - read a Hugging Face tokenizer.json + tokenizer_config.json and produce the
 * tokenizer.ggml.* values llama.cpp's convert_hf_to_gguf.py writes for that model:
 *   - byte-level BPE (Llama 3, Qwen, SmolLM, GPT-2): model "gpt2", tokens with NORMAL /
 *     CONTROL / USER_DEFINED / UNUSED types, merges as "left right" strings, the pre-tokenizer
 *     name recognized from tokenizer.json's pre_tokenizer (convert hashes a tokenization; the
 *     regexes it keys on are what we compare), special ids and add_bos/add_eos from
 *     tokenizer_config.json, the chat template.
 *   - SentencePiece BPE with byte fallback (Llama 2's tokenizer.json, gguf-py's
 *     LlamaHfVocab): model "llama", pre "default", BYTE / CONTROL / USER_DEFINED / NORMAL
 *     types. Scores: LlamaHfVocab writes a -1000 placeholder for every token, under which
 *     merging by score degenerates to leftmost-first; we write what a SentencePiece model
 *     carries instead, minus the rank of the merge that forms the token, so the file
 *     tokenizes as tokenizer.json's own rules do.
 */
#ifndef INFERD_VOCAB_IMPORT_H
#define INFERD_VOCAB_IMPORT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/tokenizer.h"

/** The imported values (owned). */
typedef struct {
    const char *model; /* "llama" or "gpt2" (static) */
    char *pre;         /* tokenizer.ggml.pre */
    size_t n_tokens;
    tok_str_t *tokens; /* (n_tokens) texts, owned */
    float *scores;     /* (n_tokens) or NULL */
    int32_t *types;    /* (n_tokens) */
    size_t n_merges;
    tok_str_t *merges;          /* (n_merges) "left right", owned; NULL for "llama" */
    int64_t bos, eos, unk, pad; /* TOK_NONE when tokenizer_config.json names none */
    int add_bos, add_eos;       /* -1 when tokenizer_config.json says nothing */
    char *chat_template;        /* NULL when absent */
} vocab_import_t;

/** Import dir/tokenizer.json and dir/tokenizer_config.json. n_vocab > 0 pads the vocabulary
 *  with [PADn] tokens (UNUSED) as convert does for config.json's vocab_size. Returns 0,
 *  -ENOENT (a file is missing), -EINVAL (a format it does not understand: the message says
 *  what) or -ENOMEM. */
int vocab_import(vocab_import_t *v, const char *dir, uint32_t n_vocab, char *err, size_t errlen);
/** Release everything (NULL fields are fine). */
void vocab_import_free(vocab_import_t *v);
/** A tok_vocab_t view of the import (pointers into v), to build a tokenizer directly. */
void vocab_import_view(const vocab_import_t *v, tok_vocab_t *out);

struct gguf_writer;
/** Set the tokenizer.ggml.* keys (and tokenizer.chat_template) on a GGUF writer, with the
 *  types llama.cpp's gguf-py writes (ids UINT32, flags BOOL, types INT32, scores FLOAT32).
 *  Returns 0 or -ENOMEM. */
int vocab_import_write(const vocab_import_t *v, struct gguf_writer *w);

#endif
