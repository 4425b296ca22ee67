/*
 * fuzz.h - what every libFuzzer harness of test/fuzz shares: the entry points libFuzzer
 * calls, and the check that turns a broken invariant into a crash libFuzzer records.
 *
 * A harness feeds its input to one parser of outside input exactly as the server or the
 * engine would, then checks what the parser promises beyond "no crash" (an error has a
 * message, a result stays inside its input, nothing leaks: LeakSanitizer runs after each
 * input). Errors the parser reports are the expected outcome of most inputs, not findings.
 */
#ifndef INFERD_TEST_FUZZ_H
#define INFERD_TEST_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/** libFuzzer: one input. Returns 0 (-1 would keep the input out of the corpus). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/** libFuzzer: once, before the first input. */
int LLVMFuzzerInitialize(int *argc, char ***argv);

/** A broken promise is a crash: libFuzzer saves the input that caused it. */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant '%s' broken: ", __FILE__, __LINE__, #cond);          \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/** A copy of size bytes in a buffer of exactly that size (at least 1 byte allocated), so
 *  AddressSanitizer sees any read past the input's end and the parser gets aligned memory. */
static inline uint8_t *fuzz_copy(const uint8_t *data, size_t size)
{
    uint8_t *p = malloc(size ? size : 1);
    FUZZ_CHECK(p != NULL, "out of memory copying %zu bytes", size);
    if (size) memcpy(p, data, size);
    return p;
}

/** A NUL-terminated copy (the parser takes a C string; bytes after an embedded NUL are then
 *  ignored, as they would be for an environment variable or a flag). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *p = malloc(size + 1);
    FUZZ_CHECK(p != NULL, "out of memory copying %zu bytes", size);
    if (size) memcpy(p, data, size);
    p[size] = 0;
    return p;
}

#endif
