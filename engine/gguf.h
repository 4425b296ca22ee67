/*
 * gguf.h - reading GGUF files (llama.cpp's format), versions 2 and 3, little-endian.
 *
 * A file is: magic "GGUF", version, tensor count, metadata count, the metadata (key,
 * type, value), the tensor infos (name, dims, type, offset), padding to
 * general.alignment (default 32), then the tensor data. gguf_open() maps the file
 * read-only and validates ALL of it before returning: every length and count against the
 * bytes that remain (a count of 2^60 is an error, never an allocation or a read past the
 * end), every type known, keys and tensor names unique, alignment a power of two, every
 * tensor's offset aligned and its [offset, offset + size) inside the data section, sizes
 * free of overflow. After that every accessor is a bounds-free lookup. Errors name the
 * file, the key or tensor, and what is wrong; they are start-up errors for the caller.
 *
 * Split models (gguf-split's `name-00001-of-00003.gguf`): opening the first shard opens
 * every shard of the set (same folder, same naming), checks split.no / split.count, and
 * presents one tensor list; opening another shard is refused with a message saying which
 * one to open. Metadata comes from the first shard.
 *
 * Strings in a file are not NUL-terminated: values come as gguf_str_t (pointer into the
 * mapping, length). Key and tensor names are also available NUL-terminated (copies made
 * at open; a name holding a NUL byte is refused). Numeric arrays come as raw
 * little-endian element bytes, possibly unaligned: read them with the gguf_arr_*()
 * helpers.
 *
 * gguf_parse() does the same on a buffer in memory (the fuzz harness's entry point): the
 * buffer must outlive the handle, and split sets are not followed.
 *
 * Thread safety: a gguf_t is immutable after open; any number of threads may read it.
 */
#ifndef INFERD_ENGINE_GGUF_H
#define INFERD_ENGINE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gguf gguf_t;

/** Metadata value types (the numbers GGUF stores). */
typedef enum {
    GGUF_UINT8 = 0,
    GGUF_INT8 = 1,
    GGUF_UINT16 = 2,
    GGUF_INT16 = 3,
    GGUF_UINT32 = 4,
    GGUF_INT32 = 5,
    GGUF_FLOAT32 = 6,
    GGUF_BOOL = 7,
    GGUF_STRING = 8,
    GGUF_ARRAY = 9,
    GGUF_UINT64 = 10,
    GGUF_INT64 = 11,
    GGUF_FLOAT64 = 12,
    GGUF_TYPE_COUNT = 13
} gguf_type_t;

/** A string in the file: bytes [ptr, ptr + len), not NUL-terminated, UTF-8 not checked. */
typedef struct {
    const char *ptr;
    uint64_t len;
} gguf_str_t;

/** An array value. Numeric elements are packed little-endian at `data` (possibly
 *  unaligned); string elements are read with gguf_arr_str(). */
typedef struct {
    gguf_type_t type;        /* element type (never GGUF_ARRAY: nested arrays are refused) */
    uint64_t n;              /* elements */
    const void *data;        /* first element */
    const uint64_t *str_off; /* strings only: (n + 1) offsets from data of each string's
                                length field, the last one past the end */
} gguf_arr_t;

/** One metadata entry. */
typedef struct {
    const char *key; /* NUL-terminated */
    gguf_type_t type;
    union {
        uint64_t u;     /* UINT8..UINT64 */
        int64_t i;      /* INT8..INT64 */
        double f;       /* FLOAT32, FLOAT64 */
        bool b;         /* BOOL */
        gguf_str_t s;   /* STRING */
        gguf_arr_t arr; /* ARRAY */
    } v;
} gguf_kv_t;

/** One tensor, validated: data lies inside its file, nbytes = ne[1..] x row bytes. */
typedef struct {
    const char *name; /* NUL-terminated */
    uint32_t type;    /* ggml type (engine/dtype.h) */
    uint32_t n_dims;  /* 1..4 */
    int64_t ne[4];    /* elements per dimension, ne[0] contiguous; unused dims are 1 */
    uint64_t offset;  /* from the start of its file's data section */
    const void *data; /* into the mapping */
    uint64_t nbytes;
    uint32_t shard; /* 0 for the first (or only) file */
} gguf_tensor_t;

/** Map and validate `path` (and, for the first shard of a split set, every shard).
 *  0 and *out, or -ENOENT/-EACCES/... (open failed), -EINVAL (not a valid GGUF: err
 *  says why), -ENOMEM. */
int gguf_open(gguf_t **out, const char *path, char *err, size_t errlen);

/** Validate a GGUF image of `size` bytes at `buf` (kept, not copied); `name` labels the
 *  messages. Same returns as gguf_open. */
int gguf_parse(gguf_t **out, const void *buf, size_t size, const char *name, char *err,
               size_t errlen);

/** Replace every mapped shard by a private copy in transparent huge pages, at the same
 *  addresses (wmap.h; pointers into the files stay valid); *bytes = the bytes copied,
 *  *huge_bytes = those the kernel put in huge pages (wmap_t.huge_bytes). A
 *  handle from gguf_parse has nothing to copy. On error (err names the file) the shards not
 *  yet copied stay mapped: the handle stays valid either way. */
int gguf_hugepages(gguf_t *g, size_t *bytes, size_t *huge_bytes, char *err, size_t errlen);

/** Release the handle and its mappings. NULL is a no-op. */
void gguf_free(gguf_t *g);

/** Whether the first 4 bytes are GGUF's magic (for a caller choosing a reader). */
bool gguf_is_gguf(const void *buf, size_t size);

/** Format version (2 or 3), data alignment, number of shards. */
uint32_t gguf_version(const gguf_t *g);
uint32_t gguf_alignment(const gguf_t *g);
uint32_t gguf_shards(const gguf_t *g);
/** The path or name given at open. */
const char *gguf_name(const gguf_t *g);

/** Metadata entries, in file order. */
size_t gguf_n_kv(const gguf_t *g);
/** Entry i (< gguf_n_kv) into *out. */
void gguf_kv_at(const gguf_t *g, size_t i, gguf_kv_t *out);
/** Index of `key`, or -1. */
int64_t gguf_find_key(const gguf_t *g, const char *key);
/** The entry for `key`: 0, or -ENOENT (absent). */
int gguf_get(const gguf_t *g, const char *key, gguf_kv_t *out);

/* Typed getters: 0; -ENOENT when the key is absent (err says so, naming file and key);
 * -EINVAL when the value has another type or does not fit (err names file, key, the
 * expected and the found type). Integers of any width convert when the value fits. */

/** Any integer type, value in [min, max]. */
int gguf_get_int(const gguf_t *g, const char *key, int64_t min, int64_t max, int64_t *out,
                 char *err, size_t errlen);
/** FLOAT32 or FLOAT64 (as float; finite). */
int gguf_get_f32(const gguf_t *g, const char *key, float *out, char *err, size_t errlen);
int gguf_get_bool(const gguf_t *g, const char *key, bool *out, char *err, size_t errlen);
int gguf_get_str(const gguf_t *g, const char *key, gguf_str_t *out, char *err, size_t errlen);
/** An array whose elements have type `elem` (GGUF_TYPE_COUNT: any). */
int gguf_get_arr(const gguf_t *g, const char *key, gguf_type_t elem, gguf_arr_t *out, char *err,
                 size_t errlen);

/** Element i (< a->n) of an array of strings. */
gguf_str_t gguf_arr_str(const gguf_arr_t *a, uint64_t i);
/** Element i of an array of FLOAT32. */
float gguf_arr_f32(const gguf_arr_t *a, uint64_t i);
/** Element i of an array of any integer type (BOOL too), widened. */
int64_t gguf_arr_int(const gguf_arr_t *a, uint64_t i);

/** Bytes of one element of a scalar type (0 for STRING and ARRAY). */
size_t gguf_type_size(gguf_type_t t);
/** The type's name as GGUF's spec spells it ("UINT32", "STRING"), or "unknown". */
const char *gguf_type_name(uint32_t t);

/** Tensors, in file order (shards in order). */
size_t gguf_n_tensors(const gguf_t *g);
const gguf_tensor_t *gguf_tensor_at(const gguf_t *g, size_t i);
/** The tensor called `name`, or NULL. */
const gguf_tensor_t *gguf_find_tensor(const gguf_t *g, const char *name);

/** Whether `s` equals the NUL-terminated `lit`. */
bool gguf_str_eq(gguf_str_t s, const char *lit);

#ifdef __cplusplus
}
#endif
#endif
