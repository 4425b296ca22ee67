/*
 * dtype.h - tensor element types, numbered as ggml numbers them (the values GGUF files
 * store), with their block geometry. Header-only so every reader of a model view (the
 * engine, the GGUF reader, the separately loaded CUDA library) shares one table.
 *
 * A type packs `block` elements into `block_bytes` bytes; a row of n elements (n a
 * multiple of `block`) takes n / block * block_bytes bytes. Types ggml removed or never
 * gave a fixed layout (4, 5, 31..33, 36..38) are unknown here.
 */
#ifndef INFERD_ENGINE_DTYPE_H
#define INFERD_ENGINE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Tensor element types (ggml's enum ggml_type values). */
typedef enum {
    DTYPE_F32 = 0,
    DTYPE_F16 = 1,
    DTYPE_Q4_0 = 2,
    DTYPE_Q4_1 = 3,
    DTYPE_Q5_0 = 6,
    DTYPE_Q5_1 = 7,
    DTYPE_Q8_0 = 8,
    DTYPE_Q8_1 = 9,
    DTYPE_Q2_K = 10,
    DTYPE_Q3_K = 11,
    DTYPE_Q4_K = 12,
    DTYPE_Q5_K = 13,
    DTYPE_Q6_K = 14,
    DTYPE_Q8_K = 15,
    DTYPE_IQ2_XXS = 16,
    DTYPE_IQ2_XS = 17,
    DTYPE_IQ3_XXS = 18,
    DTYPE_IQ1_S = 19,
    DTYPE_IQ4_NL = 20,
    DTYPE_IQ3_S = 21,
    DTYPE_IQ2_S = 22,
    DTYPE_IQ4_XS = 23,
    DTYPE_I8 = 24,
    DTYPE_I16 = 25,
    DTYPE_I32 = 26,
    DTYPE_I64 = 27,
    DTYPE_F64 = 28,
    DTYPE_IQ1_M = 29,
    DTYPE_BF16 = 30,
    DTYPE_TQ1_0 = 34,
    DTYPE_TQ2_0 = 35,
    DTYPE_MXFP4 = 39,
    DTYPE_NVFP4 = 40,
    DTYPE_Q1_0 = 41,
    DTYPE_Q2_0 = 42,
    DTYPE_COUNT = 43
} dtype_t;

/** Elements per block of the k-quants (QK_K). */
#define DTYPE_QK_K 256

typedef struct {
    const char *name; /* as ggml spells it ("Q4_K"); NULL: unknown type */
    uint16_t block;   /* elements per block */
    uint16_t bytes;   /* bytes per block */
} dtype_info_t;

/* The block geometry of every type GGUF files may hold (gguf-py's GGML_QUANT_SIZES), in
 * enum order (positional: the header is also compiled as C++). */
static const dtype_info_t dtype_table[DTYPE_COUNT] = {
    {"F32", 1, 4},        /* 0 */
    {"F16", 1, 2},        /* 1 */
    {"Q4_0", 32, 18},     /* 2 */
    {"Q4_1", 32, 20},     /* 3 */
    {0, 0, 0},            /* 4: removed */
    {0, 0, 0},            /* 5: removed */
    {"Q5_0", 32, 22},     /* 6 */
    {"Q5_1", 32, 24},     /* 7 */
    {"Q8_0", 32, 34},     /* 8 */
    {"Q8_1", 32, 36},     /* 9: ggml's block_q8_1 (gguf-py says 40, a stale size) */
    {"Q2_K", 256, 84},    /* 10 */
    {"Q3_K", 256, 110},   /* 11 */
    {"Q4_K", 256, 144},   /* 12 */
    {"Q5_K", 256, 176},   /* 13 */
    {"Q6_K", 256, 210},   /* 14 */
    {"Q8_K", 256, 292},   /* 15 */
    {"IQ2_XXS", 256, 66}, /* 16 */
    {"IQ2_XS", 256, 74},  /* 17 */
    {"IQ3_XXS", 256, 98}, /* 18 */
    {"IQ1_S", 256, 50},   /* 19 */
    {"IQ4_NL", 32, 18},   /* 20 */
    {"IQ3_S", 256, 110},  /* 21 */
    {"IQ2_S", 256, 82},   /* 22 */
    {"IQ4_XS", 256, 136}, /* 23 */
    {"I8", 1, 1},         /* 24 */
    {"I16", 1, 2},        /* 25 */
    {"I32", 1, 4},        /* 26 */
    {"I64", 1, 8},        /* 27 */
    {"F64", 1, 8},        /* 28 */
    {"IQ1_M", 256, 56},   /* 29 */
    {"BF16", 1, 2},       /* 30 */
    {0, 0, 0},            /* 31: removed */
    {0, 0, 0},            /* 32: removed */
    {0, 0, 0},            /* 33: removed */
    {"TQ1_0", 256, 54},   /* 34 */
    {"TQ2_0", 256, 66},   /* 35 */
    {0, 0, 0},            /* 36: removed */
    {0, 0, 0},            /* 37: removed */
    {0, 0, 0},            /* 38: removed */
    {"MXFP4", 32, 17},    /* 39 */
    {"NVFP4", 64, 36},    /* 40 */
    {"Q1_0", 128, 18},    /* 41 */
    {"Q2_0", 64, 18},     /* 42 */
};

/** The type's geometry, or NULL when `t` is not a type GGUF files can hold. */
static inline const dtype_info_t *dtype_info(uint32_t t)
{
    return t < DTYPE_COUNT && dtype_table[t].name ? &dtype_table[t] : (const dtype_info_t *)0;
}

/** ggml's name of a type ("Q4_K"), or "unknown". */
static inline const char *dtype_name(uint32_t t)
{
    const dtype_info_t *i = dtype_info(t);
    return i ? i->name : "unknown";
}

/** Bytes of a row of n elements; 0 when the type is unknown or n is not a whole number of
 *  blocks. */
static inline size_t dtype_row_bytes(uint32_t t, uint64_t n)
{
    const dtype_info_t *i = dtype_info(t);
    if (!i || n % i->block) return 0;
    return (size_t)(n / i->block * i->bytes);
}

#ifdef __cplusplus
}
#endif
#endif
