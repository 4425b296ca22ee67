/*
 * tok_bench - prompt tokenization speed (tools/bench/tokenize.sh builds and runs it).
 *   tok_bench bin TOKENIZER.bin VOCAB_SIZE TEXT REPEAT   llama2.c tokenizer.bin
 *   tok_bench dir HF_DIR TEXT REPEAT                      tokenizer.json (new tokenizer only)
 * Prints the text size, the token count, the median time of REPEAT encodes and bytes/s.
 * Built with -DOLD_TOKENIZER against the pre-heap tokenizer.c (the script takes it from git)
 * it measures the old quadratic merge on the same input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#ifndef OLD_TOKENIZER
#include "tools/mkmodel/vocab_import.h"
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: tok_bench bin TOK VOCAB TEXT REPEAT | dir HF_DIR TEXT REPEAT\n");
        return 2;
    }
    bool bin = !strcmp(argv[1], "bin");
    const char *text_path = bin ? argv[4] : argv[3];
    int repeat = atoi(bin ? argv[5] : argv[4]);
    tokenizer_t t;
    char err[512];
    if (bin) {
        if (tokenizer_load(&t, argv[2], atoi(argv[3]), err, sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    } else {
#ifdef OLD_TOKENIZER
        return 2;
#else
        vocab_import_t vi;
        if (vocab_import(&vi, argv[2], 0, err, sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        tok_vocab_t v;
        vocab_import_view(&vi, &v);
        if (tokenizer_build(&t, &v, err, sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        vocab_import_free(&vi);
#endif
    }
    FILE *f = fopen(text_path, "rb");
    if (!f) return 1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    if (fread(text, 1, (size_t)n, f) != (size_t)n) return 1;
    fclose(f);
    text[n] = 0;
    size_t cap = 3 * (size_t)n + 8;
    int *ids = malloc(cap * sizeof(int));
    double *ts = malloc((size_t)repeat * sizeof(double));
    int count = 0;
    for (int r = 0; r < repeat; r++) {
        double t0 = now();
#ifdef OLD_TOKENIZER
        count = tokenizer_encode(&t, text, true, false, ids, cap);
#else
        count = tokenizer_encode(&t, text, (size_t)n, TOK_ADD_SPECIAL, ids, cap);
#endif
        ts[r] = now() - t0;
    }
    qsort(ts, (size_t)repeat, sizeof(double), cmp);
    double med = ts[repeat / 2];
    printf("%8ld bytes %8d tokens %10.3f ms %10.2f MB/s\n", n, count, med * 1e3,
           (double)n / med / 1e6);
    free(ts);
    free(ids);
    free(text);
    tokenizer_dispose(&t);
    return 0;
}
