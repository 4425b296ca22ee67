/*
 * gguf_write.h - writing GGUF files (version 3, or 2 on request): metadata of every
 * type including arrays of strings, tensor infos, alignment padding, tensor data. Used
 * by tools/mkmodel to write test models and by tests to build files (hostile ones too:
 * the writer checks nothing a reader must check).
 *
 * Build the file in memory with the setters, then gguf_writer_write(). Keys keep the
 * order of their first set; setting a key again replaces its value. Tensor data is
 * copied at gguf_writer_add_tensor(), so callers may free theirs at once.
 */
#ifndef INFERD_TOOLS_GGUF_WRITE_H
#define INFERD_TOOLS_GGUF_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gguf_writer gguf_writer_t;

/** A writer for GGUF `version` (2 or 3) with data aligned to `alignment` bytes (a power of
 *  two; 32 is GGUF's default and is then not written as general.alignment). 0 or
 *  -EINVAL / -ENOMEM. */
int gguf_writer_new(gguf_writer_t **out, uint32_t version, uint32_t alignment);
/** NULL is a no-op. */
void gguf_writer_free(gguf_writer_t *w);

/* Scalar setters: 0 or -ENOMEM. */
int gguf_writer_set_str(gguf_writer_t *w, const char *key, const char *v);
int gguf_writer_set_u8(gguf_writer_t *w, const char *key, uint8_t v);
int gguf_writer_set_i8(gguf_writer_t *w, const char *key, int8_t v);
int gguf_writer_set_u16(gguf_writer_t *w, const char *key, uint16_t v);
int gguf_writer_set_i16(gguf_writer_t *w, const char *key, int16_t v);
int gguf_writer_set_u32(gguf_writer_t *w, const char *key, uint32_t v);
int gguf_writer_set_i32(gguf_writer_t *w, const char *key, int32_t v);
int gguf_writer_set_u64(gguf_writer_t *w, const char *key, uint64_t v);
int gguf_writer_set_i64(gguf_writer_t *w, const char *key, int64_t v);
int gguf_writer_set_f32(gguf_writer_t *w, const char *key, float v);
int gguf_writer_set_f64(gguf_writer_t *w, const char *key, double v);
int gguf_writer_set_bool(gguf_writer_t *w, const char *key, bool v);

/* Array setters: 0 or -ENOMEM. */
/** NUL-terminated strings. */
int gguf_writer_set_arr_str(gguf_writer_t *w, const char *key, const char *const *v, size_t n);
/** Strings of given lengths (may hold any bytes, NUL included). */
int gguf_writer_set_arr_strn(gguf_writer_t *w, const char *key, const char *const *v,
                             const size_t *lens, size_t n);
int gguf_writer_set_arr_f32(gguf_writer_t *w, const char *key, const float *v, size_t n);
int gguf_writer_set_arr_i32(gguf_writer_t *w, const char *key, const int32_t *v, size_t n);
int gguf_writer_set_arr_u32(gguf_writer_t *w, const char *key, const uint32_t *v, size_t n);
/** Any numeric element type (GGUF value type `type`, little-endian packed `data`). */
int gguf_writer_set_arr(gguf_writer_t *w, const char *key, uint32_t type, const void *data,
                        size_t n);

/** A tensor of ggml type `type` (engine/dtype.h) with n_dims dims ne (ne[0] contiguous) and
 *  `nbytes` bytes of data, copied. 0, -EINVAL (nbytes does not match the shape), -ENOMEM. */
int gguf_writer_add_tensor(gguf_writer_t *w, const char *name, uint32_t type, uint32_t n_dims,
                           const int64_t *ne, const void *data, size_t nbytes);

/** Drop the key or tensor called `name` (tests build broken files this way). 0 or -ENOENT. */
int gguf_writer_remove(gguf_writer_t *w, const char *name);

/** Write the file. 0, or a negative errno with the reason in err. */
int gguf_writer_write(const gguf_writer_t *w, const char *path, char *err, size_t errlen);

/** The file's bytes in a malloc'ed buffer (*out, *size): for tests that parse in memory. */
int gguf_writer_bytes(const gguf_writer_t *w, uint8_t **out, size_t *size);

#endif
