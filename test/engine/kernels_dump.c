/*
 * kernels_dump - the engine's kernels on raw bytes, for test/engine/quants_ref.py.
 * Binary in on stdin, binary out on stdout:
 *   kernels_dump ISA dequant TYPE           blocks of TYPE          -> f32 values
 *   kernels_dump ISA quant VECTYPE          f32 values              -> VECTYPE blocks
 *   kernels_dump ISA dot TYPE ROWS N NX     ROWS weight rows of N values of TYPE, then NX
 *                                           f32 activation rows of N -> NX x ROWS f32
 *                                           products (through kernels_matmul)
 * ISA: generic | avx2 | auto. TYPE: a ggml type name (F16, Q4_K, ...). Exit 77 when the
 * ISA is not available on this CPU.
 */
#include "engine/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char *read_all(size_t *n)
{
    size_t cap = 1 << 16, len = 0;
    unsigned char *b = malloc(cap);
    for (;;) {
        if (len == cap) b = realloc(b, cap *= 2);
        size_t r = fread(b + len, 1, cap - len, stdin);
        if (!r) break;
        len += r;
    }
    *n = len;
    return b;
}

static int type_of(const char *name)
{
    for (uint32_t t = 0; t < DTYPE_COUNT; t++)
        if (dtype_info(t) && !strcmp(dtype_name(t), name)) return (int)t;
    return -1;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: kernels_dump ISA dequant|quant|dot TYPE [ROWS N NX]\n");
        return 2;
    }
    if (!strcmp(argv[1], "generic") && kernels_force(KERNEL_GENERIC) < 0) return 77;
    if (!strcmp(argv[1], "avx2") && kernels_force(KERNEL_AVX2) < 0) return 77;
    int t = type_of(argv[3]);
    if (t < 0) {
        fprintf(stderr, "unknown type %s\n", argv[3]);
        return 2;
    }
    size_t n;
    unsigned char *in = read_all(&n);
    if (!strcmp(argv[2], "dequant")) {
        const kernel_type_t *kt = kernels_for((uint32_t)t);
        const dtype_info_t *di = dtype_info((uint32_t)t);
        if (!kt) return 2;
        size_t nb = n / di->bytes;
        float *out = malloc(nb * di->block * sizeof(float) + 1);
        kt->dequant(out, in, (int64_t)(nb * di->block));
        fwrite(out, sizeof(float), nb * di->block, stdout);
        free(out);
    } else if (!strcmp(argv[2], "quant")) {
        size_t count = n / 4;
        size_t bytes = kernels_act_row_bytes((uint32_t)t, (int64_t)count);
        unsigned char *out = malloc(bytes + 1);
        float *x = malloc(count * sizeof(float) + 1);
        memcpy(x, in, count * 4);
        kernels_quantize_row((uint32_t)t, out, x, (int64_t)count);
        fwrite(out, 1, bytes, stdout);
        free(out);
        free(x);
    } else if (!strcmp(argv[2], "dot") && argc == 7) {
        int rows = atoi(argv[4]), len = atoi(argv[5]), nx = atoi(argv[6]);
        const kernel_type_t *kt = kernels_for((uint32_t)t);
        tensor_t w = {0};
        w.type = (uint32_t)t;
        w.ne[0] = len;
        w.ne[1] = rows;
        w.row_bytes = dtype_row_bytes((uint32_t)t, (uint64_t)len);
        w.nbytes = w.row_bytes * (size_t)rows;
        if (!kt || n != w.nbytes + (size_t)nx * len * 4) {
            fprintf(stderr, "dot: %zu input bytes, expected %zu\n", n,
                    w.nbytes + (size_t)nx * len * 4);
            return 2;
        }
        w.data = in;
        float *x = malloc((size_t)nx * len * sizeof(float));
        memcpy(x, in + w.nbytes, (size_t)nx * len * 4);
        size_t stride = kernels_act_row_bytes(kt->vec_type, len);
        unsigned char *xq = malloc(stride * (size_t)nx + 1);
        for (int r = 0; r < nx; r++)
            kernels_quantize_row(kt->vec_type, xq + (size_t)r * stride, x + (size_t)r * len, len);
        float *out = malloc((size_t)nx * rows * sizeof(float));
        kernels_matmul(out, rows, xq, stride, nx, &w, 0, rows);
        fwrite(out, sizeof(float), (size_t)nx * rows, stdout);
        free(out);
        free(xq);
        free(x);
    } else {
        fprintf(stderr, "bad mode %s\n", argv[2]);
        return 2;
    }
    free(in);
    return 0;
}
