/*
 * tokenizer.h - the engine's tokenizers (internal to the engine, its tools and tests).
 *
 * Two kinds, as llama.cpp names them:
 *   - TOK_SPM ("llama"): SentencePiece-style BPE that merges the best-scoring adjacent pair
 *     first, with byte fallback (<0xXX>) and an optional space prefix. llama2.c's
 *     tokenizer.bin is one of these whose pieces carry ' ' instead of U+2581.
 *   - TOK_BPE ("gpt2"): byte-level BPE: a pre-tokenizer (tokenizer.ggml.pre) splits the text
 *     into words, each byte maps to a printable character (GPT-2's byte-to-unicode table),
 *     and merges apply by rank (tokenizer.ggml.merges).
 * Both merge with a heap of candidate pairs: O(n log n) in the text length.
 *
 * Special tokens. Tokens of type CONTROL or UNKNOWN are matched in text only when the
 * caller passes TOK_PARSE_SPECIAL (chat templates do; raw prompts do not); USER_DEFINED
 * tokens are always matched (as llama.cpp and Hugging Face tokenizers do). Matching follows
 * llama.cpp: longest special token first over the whole text, then the next.
 *
 * Thread safety: a built tokenizer is immutable; encode and decode may run on any number of
 * threads at once.
 */
#ifndef INFERD_ENGINE_TOKENIZER_H
#define INFERD_ENGINE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Tokenizer kinds (tokenizer.ggml.model). */
typedef enum { TOK_SPM = 1, TOK_BPE = 2 } tok_kind_t;

/** Token types, values as in GGUF's tokenizer.ggml.token_type. */
enum {
    TOK_TYPE_UNDEFINED = 0,
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

/** Pre-tokenizers (tokenizer.ggml.pre) for TOK_BPE. */
typedef enum {
    TOK_PRE_DEFAULT = 0, /* "default" */
    TOK_PRE_LLAMA3,      /* "llama-bpe", "llama3", "llama-v3" */
    TOK_PRE_QWEN2,       /* "qwen2" */
    TOK_PRE_SMOLLM,      /* "smollm" */
    TOK_PRE_GPT2,        /* "gpt2" */
} tok_pre_t;

/** Bounds that a vocabulary must respect (hostile files get a clear error, never a huge
 *  allocation). */
#define TOK_MAX_VOCAB (1u << 22)  /* tokens */
#define TOK_MAX_MERGES (1u << 23) /* merges */
#define TOK_MAX_TOKEN_BYTES 1024  /* bytes in one token's text (an event holds 3x + stop) */
#define TOK_MAX_BIN_PIECE 128     /* tokenizer.bin's own limit (llama2.c) */
#define TOK_NONE (-1)             /* "no such token" in ids */

/** A byte string (not NUL-terminated). */
typedef struct {
    const char *s;
    size_t n;
} tok_str_t;

/** A vocabulary as a file describes it (borrowed pointers; tokenizer_build copies what it
 *  keeps). Ids are TOK_NONE when absent; flags are -1 for "use the kind's default". */
typedef struct {
    tok_kind_t kind;
    const char *pre; /* tokenizer.ggml.pre; NULL = "default" (TOK_BPE only) */
    size_t n_tokens; /* tokenizer.ggml.tokens */
    const tok_str_t *tokens;
    const float *scores;  /* (n_tokens) or NULL: all 0 */
    const int32_t *types; /* (n_tokens) or NULL: all NORMAL */
    size_t n_merges;      /* tokenizer.ggml.merges ("left right") */
    const tok_str_t *merges;
    int64_t bos, eos, eot, eom, unk, pad; /* tokenizer.ggml.*_token_id */
    int add_bos, add_eos, add_space_prefix;
    const char *model_name; /* general.name, or NULL: llama.cpp strips the whitespace after
                               special tokens of models named Phi-3 (its per-name attributes) */
    bool escape_spaces;     /* SPM: text spaces become U+2581 before matching (GGUF); false for
                               tokenizer.bin, whose pieces hold plain spaces */
} tok_vocab_t;

typedef struct tok_merge_slot tok_merge_slot_t;

/** A built tokenizer. */
typedef struct {
    tok_kind_t kind;
    tok_pre_t pre;
    int n_vocab;
    int max_token_len; /* longest token text in bytes (the early prompt bound) */
    char *text;        /* (sum of token lengths) token texts, back to back */
    uint32_t *off;     /* (n_vocab) offset of each token's text */
    uint32_t *len;     /* (n_vocab) its length */
    float *score;      /* (n_vocab) */
    uint8_t *type;     /* (n_vocab) TOK_TYPE_* (after llama.cpp's name-based fix-ups) */
    int32_t *hnext;    /* (n_vocab) hash chain */
    int32_t *hhead;    /* (hsize) */
    uint32_t hsize;    /* power of two */
    char *piece;       /* decoded bytes of every token, back to back */
    uint32_t *poff;    /* (n_vocab + 1) offsets into piece */
    int32_t *special;  /* (n_special) CONTROL/UNKNOWN/USER_DEFINED ids, longest text first */
    int n_special;
    int32_t byte_tok[256];   /* SPM: <0xXX> token of each byte; BPE: token of each byte's char */
    tok_merge_slot_t *merge; /* BPE: (mcap) open-addressed (left, right) -> rank, result */
    uint32_t mcap;
    int32_t bos, eos, eot, eom, unk, pad;
    int32_t *eog; /* (n_eog) ids that end generation, ascending */
    int n_eog;
    uint8_t *rstrip; /* (n_vocab) 1: whitespace after this special token is dropped */
    bool add_bos, add_eos, add_space_prefix, escape_spaces, ignore_merges;
} tokenizer_t;

/** Encode flags. */
enum {
    TOK_ADD_SPECIAL = 1 << 0,   /* BOS/EOS as the vocabulary's add_bos/add_eos say */
    TOK_PARSE_SPECIAL = 1 << 1, /* match CONTROL/UNKNOWN token texts in the text */
};

/** Build from a vocabulary description. Returns 0; -EINVAL with a message naming the key
 *  (bad id, duplicate token, oversized array, unknown pre-tokenizer); -ENOMEM. */
int tokenizer_build(tokenizer_t *t, const tok_vocab_t *v, char *err, size_t errlen);
/** Parse a llama2.c tokenizer.bin held in memory for a model of vocab_size tokens.
 *  Returns 0, -EINVAL (message says what is wrong) or -ENOMEM. */
int tokenizer_parse(tokenizer_t *t, const void *buf, size_t size, int vocab_size, char *err,
                    size_t errlen);
/** Read and parse a tokenizer.bin file. Returns 0 or a negative errno with a message. */
int tokenizer_load(tokenizer_t *t, const char *path, int vocab_size, char *err, size_t errlen);
/** Release everything; the struct is zeroed (disposing twice is safe). */
void tokenizer_dispose(tokenizer_t *t);

struct gguf;
/** Build from a GGUF file's tokenizer.ggml.* keys (model, tokens, scores, token_type, merges,
 *  pre, the special ids, add_bos/add_eos/add_space_prefix); *chat_template (may be NULL)
 *  gets a malloc'd copy of tokenizer.chat_template or NULL. Returns 0; -ENOENT (a required key
 *  is missing) or -EINVAL (wrong type, an array shorter than the token list, a bad id, an
 *  unknown tokenizer or pre-tokenizer) with a message naming the file and the key; -ENOMEM. */
int tokenizer_from_gguf(tokenizer_t *t, const struct gguf *g, char **chat_template, char *err,
                        size_t errlen);

/** Id of the token whose text is exactly s[0..len), or TOK_NONE. */
int tokenizer_lookup(const tokenizer_t *t, const char *s, size_t len);
/** Name of a pre-tokenizer ("llama-bpe", ...) or of the kind ("llama"/"gpt2"). */
const char *tokenizer_pre_name(tok_pre_t p);

/** Encode len bytes of text (any bytes; invalid UTF-8 is handled as llama.cpp does). Writes
 *  min(count, max) ids and returns count; -ENOMEM. */
int tokenizer_encode(const tokenizer_t *t, const char *text, size_t len, unsigned flags,
                     int32_t *out, size_t max);
/** Whether a token ends generation (EOS, EOT, EOM, <|eot_id|>, <|im_end|>, ...). */
bool tokenizer_is_eog(const tokenizer_t *t, int token);
/** The bytes a token decodes to (control tokens: none); sets *len. Valid while t lives. */
const char *tokenizer_piece(const tokenizer_t *t, int token, size_t *len);

/** Incremental UTF-8 safe detokenizer state (per request). */
typedef struct {
    unsigned char pend[4]; /* bytes of an incomplete character */
    int npend;
    int need; /* total length of the pending character */
    int prev; /* previous token (a space prefix after BOS is dropped) */
} detok_t;

/** Start decoding after token `prev` (the last prompt token). */
void detok_init(detok_t *d, int prev);
/** Append a token; writes only complete, valid UTF-8 into out and returns the bytes written
 *  (invalid sequences become U+FFFD). cap must be >= 3 * (longest piece + 4). */
size_t detok_push(detok_t *d, const tokenizer_t *t, int token, char *out, size_t cap);
/** Flush an incomplete character as U+FFFD; returns bytes written (cap >= 4). */
size_t detok_flush(detok_t *d, char *out, size_t cap);

/** Fuzz entry point (LLVMFuzzerTestOneInput calls it with tokenizers built once): encodes
 *  size arbitrary bytes with every flag combination and stream-decodes the ids. Returns 0;
 *  -1 when an invariant breaks (an id outside the vocabulary, more ids than 3 per byte + 8,
 *  a count that depends on the room given, decoded text that is not valid UTF-8); -ENOMEM. */
int tokenizer_fuzz_one(const tokenizer_t *t, const uint8_t *data, size_t size);

/* ---- pre-tokenizer (pretok.c) ------------------------------------------------------ */

/** Write code point c (at most U+10FFFF) as UTF-8 into o (room for 4); returns its length. */
size_t utf8_put(uint32_t c, char *o);

/** Split text (len bytes) into words the way llama.cpp's unicode_regex_split does for `pre`.
 *  Invalid UTF-8 bytes become U+FFFD (as in llama.cpp). On success *words is a malloc'd
 *  buffer holding the words' UTF-8 back to back, *ends (malloc'd, *n entries) the end
 *  offset of each word. Returns 0 or -ENOMEM. */
int pretok_split(tok_pre_t pre, const char *text, size_t len, char **words, size_t **ends,
                 size_t *n);

/* ---- chat templates (chat.c) ------------------------------------------------------- */

/** One chat message. */
typedef struct {
    const char *role; /* "system", "user", "assistant" (others are passed through) */
    const char *content;
} chat_msg_t;

/** The name of the template a tokenizer.chat_template text is, as llama.cpp's
 *  llm_chat_detect_template recognizes it ("llama3", "chatml", ...), or NULL when it is not
 *  recognized. A known name given as the text returns that name. */
const char *chat_detect(const char *tmpl);
/** Whether inferd renders the named template. */
bool chat_supported(const char *name);
/** Names inferd renders, comma separated (for messages). */
const char *chat_supported_list(void);
/** Render messages with template `name`, the generation prompt appended when add_assistant.
 *  Returns a malloc'd NUL-terminated string in *out; -EINVAL (unsupported template, a NULL
 *  role or content: message in err), -ENOMEM. */
int chat_render(const char *name, const chat_msg_t *msgs, size_t n, bool add_assistant, char **out,
                char *err, size_t errlen);

/* ---- stop strings (stop.c) --------------------------------------------------------- */

#define STOP_MAX_STRINGS 16 /* stop strings per request */
#define STOP_MAX_BYTES 256  /* bytes in one stop string */

/** Streaming stop-string matcher (per request). Text goes in as it is decoded; what comes
 *  out is safe to send: it holds back only a suffix that is still a prefix of some stop
 *  string (at most longest - 1 bytes). */
typedef struct {
    char *strs; /* the stop strings back to back */
    uint16_t len[STOP_MAX_STRINGS];
    uint32_t off[STOP_MAX_STRINGS];
    int n;
    int longest;
    char held[STOP_MAX_BYTES]; /* text withheld because it may start a stop string */
    int nheld;
    bool hit;
} stop_t;

/** Check a request's stop strings: at most STOP_MAX_STRINGS, each 1..STOP_MAX_BYTES bytes.
 *  Returns 0 or -EINVAL with a message. */
int stop_validate(const char *const *strs, size_t n, char *err, size_t errlen);
/** Copy validated stop strings. Returns 0, -EINVAL (see stop_validate) or -ENOMEM. */
int stop_init(stop_t *s, const char *const *strs, size_t n, char *err, size_t errlen);
void stop_dispose(stop_t *s);
/** Feed text; writes the bytes that may be emitted to out (cap >= len + STOP_MAX_BYTES) and
 *  returns their count. After a match s->hit is set, the output ends just before the stop
 *  string and nothing more may be fed. */
size_t stop_feed(stop_t *s, const char *text, size_t len, char *out, size_t cap);
/** End of generation without a match: release what is held (out cap >= STOP_MAX_BYTES). */
size_t stop_flush(stop_t *s, char *out, size_t cap);

#endif
