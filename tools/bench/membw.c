/*
 * membw - the memory read bandwidth this machine gives one process, the figure decode speed
 * is judged against (a decode step reads every weight once). Each thread sums its own
 * buffer (256 MiB by default, far past any cache) with 32-byte loads; the best of several
 * passes is reported, for 1 thread and for N threads together, with the buffers in 4 KiB
 * pages and then in 2 MiB transparent huge pages (where the kernel offers them), as the CPU
 * engine holds its weights (engine/wmap.h, --hugepages): a 4 KiB page costs the reader a TLB
 * miss every 4 KiB.
 *   membw [threads (default: online CPUs)] [MiB per thread (256)] [passes (5)]
 * Prints lines "membw threads T: G GB/s" (4 KiB pages) and "membw threads T huge pages: G
 * GB/s".
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

typedef struct {
    const uint8_t *buf; /* (bytes) */
    size_t bytes;
    pthread_barrier_t *start;
    double sum; /* keeps the loads alive */
} job_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static double sum_avx2(const uint8_t *p, size_t n)
{
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    int64_t v[4];
    _mm256_storeu_si256((__m256i *)v, a0);
    return (double)(v[0] + v[1] + v[2] + v[3]);
}
#endif

static double sum_plain(const uint8_t *p, size_t n)
{
    const uint64_t *q = (const uint64_t *)p;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= n / 8; i += 4) {
        s0 += q[i];
        s1 += q[i + 1];
        s2 += q[i + 2];
        s3 += q[i + 3];
    }
    return (double)(s0 + s1 + s2 + s3);
}

static void *reader(void *a)
{
    job_t *j = a;
    pthread_barrier_wait(j->start);
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) {
        j->sum += sum_avx2(j->buf, j->bytes);
        return NULL;
    }
#endif
    j->sum += sum_plain(j->buf, j->bytes);
    return NULL;
}

/* best GB/s over `passes` passes of nth threads reading their buffers at once */
static double measure(job_t *jobs, int nth, int passes)
{
    double best = 0;
    for (int p = 0; p < passes; p++) {
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, (unsigned)nth + 1);
        pthread_t t[256];
        for (int i = 0; i < nth; i++) {
            jobs[i].start = &start;
            pthread_create(&t[i], NULL, reader, &jobs[i]);
        }
        pthread_barrier_wait(&start);
        double t0 = now_s();
        for (int i = 0; i < nth; i++)
            pthread_join(t[i], NULL);
        double dt = now_s() - t0;
        pthread_barrier_destroy(&start);
        double gbs = (double)jobs[0].bytes * nth / dt / 1e9;
        if (gbs > best) best = gbs;
    }
    return best;
}

int main(int argc, char **argv)
{
    int nth = argc > 1 ? atoi(argv[1]) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    size_t mib = argc > 2 ? (size_t)atol(argv[2]) : 256;
    int passes = argc > 3 ? atoi(argv[3]) : 5;
    if (nth < 1 || nth > 256 || mib < 1 || passes < 1) {
        fprintf(stderr, "usage: membw [threads 1..256] [MiB per thread] [passes]\n");
        return 2;
    }
    job_t jobs[256];
    uint8_t *raw[256];
    double sum = 0;
    size_t bytes = mib << 20, huge = (size_t)2 << 20;
    for (int pass = 0; pass < 2; pass++) { /* 4 KiB pages, then huge pages */
        memset(jobs, 0, sizeof jobs);
        for (int i = 0; i < nth; i++) {
            uint8_t *r = mmap(NULL, bytes + huge, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (r == MAP_FAILED) {
                fprintf(stderr, "membw: out of memory\n");
                return 1;
            }
            raw[i] = r;
            uint8_t *b = (uint8_t *)(((uintptr_t)r + huge - 1) & ~(uintptr_t)(huge - 1));
            madvise(b, bytes, pass ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
            memset(b, i + 1, bytes); /* touch every page before timing */
            jobs[i].buf = b;
            jobs[i].bytes = bytes;
        }
        const char *tag = pass ? " huge pages" : "";
        printf("membw threads 1%s: %.1f GB/s\n", tag, measure(jobs, 1, passes));
        if (nth > 1)
            printf("membw threads %d%s: %.1f GB/s\n", nth, tag, measure(jobs, nth, passes));
        for (int i = 0; i < nth; i++) {
            sum += jobs[i].sum;
            munmap(raw[i], bytes + huge);
        }
    }
    return sum == 0.5 ? 3 : 0; /* never true: the sums only have to be used */
}
