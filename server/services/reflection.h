/* Server reflection (grpc.reflection.v1 and v1alpha): answers from a FileDescriptorSet embedded
 * at build time, so clients such as grpcurl need no .proto files.
 *
 * The core (reflection_new/_answer) is pure: it parses and indexes the set once at start-up and
 * answers one ServerReflectionRequest at a time, without a server. reflection_methods() gives the
 * method-table rows of the bidi ServerReflectionInfo RPC for both API versions. v1 and v1alpha
 * messages are wire-identical, so both rows decode and encode with the v1 descriptors and one
 * implementation serves both. Everything but reflection_new/_free runs on the reactor thread; the
 * index is read-only after reflection_new, so reflection_answer is safe from any thread. */
#ifndef INFERD_SERVER_SERVICES_REFLECTION_H
#define INFERD_SERVER_SERVICES_REFLECTION_H

#include <stddef.h>

#include "server/core/grpc.h"
#include "grpc/reflection/v1/reflection.pb-c.h"

/** The descriptor set of every .proto the server exposes, dependencies included (proto/). */
extern const unsigned char inferd_descriptor_set[];
/** Its length in bytes. */
extern const size_t inferd_descriptor_set_len;

typedef struct reflection reflection_t;

/** Parses and indexes a serialized google.protobuf.FileDescriptorSet (copied; fdset need not
 * outlive the result). Returns 0 (*out set); -EINVAL with the reason in err for malformed or
 * truncated input, input over 64 MiB, message nesting deeper than 100, a file without a name,
 * duplicate file names, an import missing from the set, a symbol defined twice; -ENOMEM. */
int reflection_new(reflection_t **out, const unsigned char *fdset, size_t len, char *err,
                   size_t errlen);
/** Frees the index (NULL is a no-op). The rows from reflection_methods() die with it, so free it
 * only after the server that registered them. */
void reflection_free(reflection_t *r);

/** Number of files in the set. */
size_t reflection_file_count(const reflection_t *r);

/** Answers one request into *resp (initialised here): valid_host and original_request echo req;
 * file_by_filename / file_containing_symbol / file_containing_extension give the file and its
 * transitive imports, each once, the file first; all_extension_numbers_of_type gives the
 * extension numbers of a known message (possibly none); list_services lists services[0..n)
 * (the services the server registered); anything unknown is an error_response NOT_FOUND, a
 * request with no (or an unknown) oneof set UNIMPLEMENTED, as grpc++ answers. Memory comes from
 * alloc (NULL: malloc) and is released by reflection_answer_dispose(); file bytes and service names
 * are borrowed from r and services, and original_request from req, so those must outlive resp.
 * Returns 0 or -ENOMEM (resp then holds nothing to dispose). */
int reflection_answer(const reflection_t *r,
                      const Grpc__Reflection__V1__ServerReflectionRequest *req,
                      const char *const *services, size_t n_services, ProtobufCAllocator *alloc,
                      Grpc__Reflection__V1__ServerReflectionResponse *resp);
/** Frees what reflection_answer() allocated in resp (with the same allocator). */
void reflection_answer_dispose(Grpc__Reflection__V1__ServerReflectionResponse *resp,
                               ProtobufCAllocator *alloc);

/** The two method rows (grpc.reflection.v1 and v1alpha ServerReflectionInfo, bidi, arg = r) to
 * pass to server_register(); sets *n to 2. Storage belongs to r. */
grpc_method_t *reflection_methods(reflection_t *r, size_t *n);

#endif
