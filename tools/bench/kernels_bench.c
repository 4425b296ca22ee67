/*
 * kernels_bench - speed of the matrix products per weight type, apart from any model: a
 * random matrix of valid blocks (rows x cols, Llama-3.2-1B's FFN shape by default) times
 * 1, 4 and 16 activation rows, split over the engine's worker pool as the CPU backend
 * splits it. Prints, per type and row count, the time per product, the weight bytes it
 * streams per second (a decode step is a sequence of such products, so at one row this is
 * the figure to hold against the machine's memory bandwidth) and the multiply-adds per
 * second.
 *   kernels_bench [-t threads] [-r rows] [-c cols] [-i iterations] [-a generic|avx2|avx512]
 *                 [-m ROWS] [TYPE...]
 * -m adds a fourth activation row count (a prompt chunk is 64 rows).
 */
#include "internal.h"
#include "kernels.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static float unit(void)
{
    return (float)(next() >> 40) / (float)(1 << 24) * 2.0f - 1.0f;
}

/* With one thread, the caller's CPU time (a shared machine's other processes do not count);
 * with more, wall time. */
static clockid_t clk = CLOCK_MONOTONIC;
static double now(void)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* random bytes with every fp16 scale of every block set to a small finite value */
static void fill(uint32_t type, uint8_t *p, size_t nbytes)
{
    if (type == DTYPE_F32) {
        for (size_t i = 0; i < nbytes / 4; i++)
            ((float *)p)[i] = unit() * 0.05f;
        return;
    }
    if (type == DTYPE_F16 || type == DTYPE_BF16) {
        for (size_t i = 0; i < nbytes / 2; i++)
            ((uint16_t *)p)[i] =
                type == DTYPE_F16 ? fp32_to_fp16(unit() * 0.05f) : fp32_to_bf16(unit() * 0.05f);
        return;
    }
    for (size_t i = 0; i < nbytes; i++)
        p[i] = (uint8_t)next();
    const dtype_info_t *in = dtype_info(type);
    size_t bs = in->bytes;
    int offs[2] = {0, -1};
    if (type == DTYPE_Q4_1 || type == DTYPE_Q5_1 || type == DTYPE_Q4_K || type == DTYPE_Q5_K)
        offs[1] = 2;
    if (type == DTYPE_Q6_K) offs[0] = 208;
    for (size_t b = 0; b + bs <= nbytes; b += bs)
        for (int k = 0; k < 2; k++) {
            if (offs[k] < 0) continue;
            uint16_t h = fp32_to_fp16(0.001f + 0.01f * (unit() + 1.0f));
            memcpy(p + b + offs[k], &h, 2);
        }
}

typedef struct {
    float *out;
    int ostride, nrows, rows_per_chunk;
    const void *x;
    size_t xstride;
    const tensor_t *w;
} job_t;

static void chunk(void *arg, int c, int n)
{
    (void)n;
    job_t *j = arg;
    int a = c * j->rows_per_chunk, b = a + j->rows_per_chunk;
    if (b > (int)j->w->ne[1]) b = (int)j->w->ne[1];
    kernels_matmul(j->out, j->ostride, j->x, j->xstride, j->nrows, j->w, a, b);
}

int main(int argc, char **argv)
{
    int threads = 1, rows = 8192, cols = 2048, iters = 0, more = 0, o;
    while ((o = getopt(argc, argv, "t:r:c:i:ga:m:")) != -1) {
        if (o == 't')
            threads = atoi(optarg);
        else if (o == 'r')
            rows = atoi(optarg);
        else if (o == 'c')
            cols = atoi(optarg);
        else if (o == 'i')
            iters = atoi(optarg);
        else if (o == 'm')
            more = atoi(optarg);
        else if (o == 'g')
            kernels_force(KERNEL_GENERIC);
        else if (o == 'a') {
            int ok = -1;
            for (int k = 0; k < KERNEL_COUNT; k++)
                if (!strcmp(optarg, kernels_isa_name((kernel_isa_t)k)))
                    ok = kernels_force((kernel_isa_t)k);
            if (ok < 0) {
                fprintf(stderr, "kernels_bench: ISA %s not available here\n", optarg);
                return 2;
            }
        } else
            return 2;
    }
    const char *deflt[] = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q5_K", "Q6_K"};
    const char **names = argc > optind ? (const char **)argv + optind : deflt;
    int ntypes = argc > optind ? argc - optind : (int)(sizeof deflt / sizeof deflt[0]);
    pool_t *pool;
    if (pool_new(&pool, threads) < 0) return 1;
    if (threads == 1) clk = CLOCK_THREAD_CPUTIME_ID;
    printf("kernels_bench: isa %s, threads %d, matrix %d x %d, %s time\n",
           kernels_isa_name(kernels_isa()), threads, rows, cols,
           threads == 1 ? "thread CPU" : "wall");
    if (more < 0 || more > 1024) {
        fprintf(stderr, "kernels_bench: -m takes 0 to 1024 rows\n");
        return 2;
    }
    int nr[] = {1, 4, 16, more}, ncounts = more ? 4 : 3, maxr = more > 16 ? more : 16;
    float *xf = malloc((size_t)maxr * cols * sizeof(float));
    float *out = malloc((size_t)maxr * rows * sizeof(float));
    for (size_t i = 0; i < (size_t)maxr * cols; i++)
        xf[i] = unit();
    for (int ti = 0; ti < ntypes; ti++) {
        uint32_t type = DTYPE_COUNT;
        for (uint32_t t = 0; t < DTYPE_COUNT; t++)
            if (dtype_info(t) && dtype_info(t)->name && !strcmp(dtype_info(t)->name, names[ti]))
                type = t;
        const kernel_type_t *kt = type < DTYPE_COUNT ? kernels_for(type) : NULL;
        if (!kt) {
            fprintf(stderr, "kernels_bench: no kernels for %s\n", names[ti]);
            continue;
        }
        tensor_t w = {0};
        w.type = type;
        w.ne[0] = cols;
        w.ne[1] = rows;
        w.row_bytes = dtype_row_bytes(type, (uint64_t)cols);
        w.nbytes = w.row_bytes * (size_t)rows;
        uint8_t *data = aligned_alloc(64, (w.nbytes + 63) & ~(size_t)63);
        fill(type, data, w.nbytes);
        w.data = data;
        size_t xs = kernels_act_row_bytes(kt->vec_type, cols);
        uint8_t *xq = malloc((size_t)maxr * xs);
        for (int r = 0; r < maxr; r++)
            kernels_quantize_row(kt->vec_type, xq + (size_t)r * xs, xf + (size_t)r * cols, cols);
        for (int k = 0; k < ncounts; k++) {
            job_t j = {out, rows, nr[k], 64, xq, xs, &w};
            int nchunks = (rows + 63) / 64;
            int it = iters ? iters : (int)(4e9 / (double)w.nbytes) + 2;
            pool_run_chunks(pool, chunk, &j, nchunks); /* warm */
            double best = 1e30;
            for (int rep = 0; rep < 3; rep++) {
                double t0 = now();
                for (int i = 0; i < it; i++)
                    pool_run_chunks(pool, chunk, &j, nchunks);
                double dt = (now() - t0) / it;
                if (dt < best) best = dt;
            }
            printf("%-5s rows %2d  %8.3f ms/product  weights %6.1f GB/s  %7.1f GMAC/s\n", names[ti],
                   nr[k], best * 1e3, (double)w.nbytes / best / 1e9,
                   (double)rows * cols * nr[k] / best / 1e9);
        }
        free(xq);
        free(data);
    }
    free(xf);
    free(out);
    pool_free(pool);
    return 0;
}
