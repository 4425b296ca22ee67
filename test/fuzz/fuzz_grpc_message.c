/*
 * fuzz_grpc_message - the gRPC deframer plus the protobuf unpack of each request type, as
 * the call layer runs them on a stream's DATA (server/core/grpc.c: call_data, on_message).
 *
 * Input: two control bytes, then the stream's bytes.
 *   byte 0: the request type (bits 0-2, of the table below), whether the method streams
 *           requests (bit 3: each message is unpacked onto the heap and freed, else into the
 *           call's arena), the largest message allowed (bits 4-5: 4 MiB, 64, 1024, 0 bytes);
 *   byte 1: how the bytes arrive: 0 in one piece, else pieces of 1 to 32 bytes from a small
 *           generator seeded with it (as DATA frames of any size would bring them).
 * Promises checked beyond "no crash": the same bytes deliver the same messages and the same
 * status however they are split; no message exceeds the maximum; a compressed message
 * inflates to at most the maximum; a message that unpacks packs back to exactly its packed
 * size; nothing leaks (the call's arena, or each streamed message, is freed).
 */
#include "fuzz.h"

#include <errno.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "inferd/v1/inference.pb-c.h"
#include "server/core/call.h"

/* Every request type a method of the server takes. */
static const ProtobufCMessageDescriptor *const types[] = {
    &inferd__v1__generate_request__descriptor,
    &inferd__v1__model_info_request__descriptor,
    &grpc__health__v1__health_check_request__descriptor,
    &grpc__health__v1__health_list_request__descriptor,
    &grpc__reflection__v1__server_reflection_request__descriptor,
    &grpc__reflection__v1alpha__server_reflection_request__descriptor,
};
#define N_TYPES (sizeof types / sizeof types[0])

typedef struct {
    const ProtobufCMessageDescriptor *type;
    int streaming;
    size_t max;
    arena_t arena;
    /* what was delivered, to compare the two passes */
    size_t n;
    size_t lens[64];
    uint64_t hash[64];
} run_t;

static uint64_t fnv(const unsigned char *p, size_t n, int flag)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)flag;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Packs m and checks it wrote the size it promised. (Not that the packing unpacks again:
 * protobuf-c 1.4 accepts a field number 0 written as an overlong varint and packs it back in
 * the short form, which it then refuses. The server never re-parses what it packs.) */
static void repack(const ProtobufCMessageDescriptor *type, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *a = malloc(len ? len : 1);
    FUZZ_CHECK(a, "out of memory");
    size_t got = protobuf_c_message_pack(m, a);
    FUZZ_CHECK(got == len, "%s packed to %zu bytes, not the %zu promised", type->name, got, len);
    free(a);
}

/* The call layer's on_message, less the dispatch: a nonzero return ends the stream. */
static int on_message(void *arg, int compressed, const unsigned char *data, size_t len)
{
    run_t *r = arg;
    FUZZ_CHECK(len <= r->max, "a message of %zu bytes passed the maximum %zu", len, r->max);
    if (r->n < 64) {
        r->lens[r->n] = len;
        r->hash[r->n] = fnv(data, len, compressed);
    }
    r->n++;
    unsigned char *plain = NULL;
    if (compressed) {
        size_t pl;
        int rc = gzip_decompress(data, len, r->max, &plain, &pl);
        if (rc) {
            FUZZ_CHECK(rc == -EMSGSIZE || rc == -EINVAL || rc == -ENOMEM,
                       "gzip_decompress returned %d", rc);
            return GRPC_STATUS_INTERNAL;
        }
        FUZZ_CHECK(pl <= r->max, "inflated to %zu bytes past the maximum %zu", pl, r->max);
        data = plain;
        len = pl;
    }
    ProtobufCMessage *m =
        protobuf_c_message_unpack(r->type, r->streaming ? NULL : &r->arena.pb, len, data);
    free(plain);
    if (!m) return GRPC_STATUS_INTERNAL;
    repack(r->type, m);
    if (r->streaming) protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

/* One pass over the stream, cut into pieces by the generator (or whole). */
static int pass(run_t *r, const uint8_t *data, size_t size, unsigned seed)
{
    grpc_deframer_t d;
    memset(&d, 0, sizeof d);
    int st = 0;
    uint32_t x = seed * 2654435761u + 1;
    for (size_t off = 0; off < size && st == 0;) {
        size_t n = size - off;
        if (seed) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            size_t piece = 1 + x % 32;
            if (piece < n) n = piece;
        }
        st = grpc_deframe(&d, data + off, n, r->max, on_message, r);
        off += n;
    }
    (void)grpc_deframer_partial(&d);
    grpc_deframer_dispose(&d);
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t maxes[4] = {4u << 20, 64, 1024, 0};
    if (size < 2) return 0;
    run_t a = {.type = types[(data[0] & 7) % N_TYPES],
               .streaming = (data[0] >> 3) & 1,
               .max = maxes[(data[0] >> 4) & 3]};
    uint8_t *stream = fuzz_copy(data + 2, size - 2);
    arena_init(&a.arena);
    int whole = pass(&a, stream, size - 2, 0);
    arena_dispose(&a.arena);
    if (data[1]) {
        run_t b = {.type = a.type, .streaming = a.streaming, .max = a.max};
        arena_init(&b.arena);
        int split = pass(&b, stream, size - 2, data[1]);
        arena_dispose(&b.arena);
        FUZZ_CHECK(split == whole, "status %d in pieces, %d whole", split, whole);
        FUZZ_CHECK(b.n == a.n, "%zu messages in pieces, %zu whole", b.n, a.n);
        for (size_t i = 0; i < a.n && i < 64; i++)
            FUZZ_CHECK(b.lens[i] == a.lens[i] && b.hash[i] == a.hash[i],
                       "message %zu differs in pieces", i);
    }
    free(stream);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}
