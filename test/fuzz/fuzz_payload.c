/*
 * fuzz_payload - the DYN_HEALTH_CHECK_PAYLOAD parser: JSON text (proto field names, or their
 * lowerCamelCase JSON names) into the GenerateRequest the canary submits.
 *
 * Input: the variable's value. ("@PATH" names a file instead; such inputs are skipped: the
 * file's bytes reach the same parser.)
 * Promises checked beyond "no crash": a refusal is -EINVAL or -ENOMEM with a message; an
 * accepted payload is a structurally valid message (protobuf_c_message_check: every string
 * set, every repeated field's array present), packs to the size it promises, and frees
 * completely (LeakSanitizer), as does a refused one.
 */
#include "fuzz.h"

#include <errno.h>

#include "inferd/v1/inference.pb-c.h"
#include "server/services/canary.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size && data[0] == '@') return 0;
    char *spec = fuzz_cstr(data, size);
    Inferd__V1__GenerateRequest *m = NULL;
    char err[512] = "";
    int rc = canary_payload_parse(spec, &m, err, sizeof err);
    if (rc == 0) {
        FUZZ_CHECK(m != NULL, "accepted without a message");
        FUZZ_CHECK(protobuf_c_message_check(&m->base), "the payload built an invalid message");
        size_t len = protobuf_c_message_get_packed_size(&m->base);
        uint8_t *buf = malloc(len ? len : 1);
        FUZZ_CHECK(buf, "out of memory");
        FUZZ_CHECK(protobuf_c_message_pack(&m->base, buf) == len, "packed size differs");
        free(buf);
        protobuf_c_message_free_unpacked(&m->base, NULL);
    } else {
        FUZZ_CHECK(rc == -EINVAL || rc == -ENOMEM, "canary_payload_parse returned %d", rc);
        FUZZ_CHECK(err[0], "canary_payload_parse returned %d without a message", rc);
    }
    free(spec);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}
