/*
 * fuzz_openai - the OpenAI API's request parser (openai_request_parse): a POST body of
 * /v1/completions or /v1/chat/completions into the GenerateRequest every API shares.
 *
 * Input: one byte choosing the endpoint (bit 0: chat), then the body.
 * Promises checked beyond "no crash": an accepted body is a structurally valid GenerateRequest
 * (protobuf_c_message_check) that packs to the size it promises, with exactly one of prompt,
 * token ids and messages for its endpoint; a refusal is -EINVAL or -ENOMEM with an HTTP status
 * of 400 or 500 and a message, and its OpenAI error JSON parses back with the four fields; both
 * free completely (LeakSanitizer).
 */
#include "fuzz.h"

#include <errno.h>
#include <jansson.h>

#include "server/services/openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int chat = data[0] & 1;
    uint8_t *body = fuzz_copy(data + 1, size - 1);
    openai_request_t r;
    openai_error_t e;
    int rc = openai_request_parse((const char *)body, size - 1, chat, &r, &e);
    if (rc == 0) {
        FUZZ_CHECK(protobuf_c_message_check(&r.g.base), "the body built an invalid message");
        size_t len = protobuf_c_message_get_packed_size(&r.g.base);
        uint8_t *buf = malloc(len ? len : 1);
        FUZZ_CHECK(buf, "out of memory");
        FUZZ_CHECK(protobuf_c_message_pack(&r.g.base, buf) == len, "packed size differs");
        free(buf);
        int inputs = (r.g.prompt && *r.g.prompt) + (r.g.n_token_ids > 0) + (r.g.n_messages > 0);
        FUZZ_CHECK(inputs == 1, "%d inputs in an accepted %s request", inputs,
                   chat ? "chat" : "completions");
        FUZZ_CHECK(chat == (r.g.n_messages > 0), "messages on the wrong endpoint");
        FUZZ_CHECK(r.stop.n_stop <= OPENAI_MAX_STOP, "%zu stop strings", r.stop.n_stop);
        openai_request_dispose(&r);
    } else {
        FUZZ_CHECK(rc == -EINVAL || rc == -ENOMEM, "openai_request_parse returned %d", rc);
        FUZZ_CHECK(e.status == 400 || e.status == 500, "status %d", e.status);
        FUZZ_CHECK(e.message[0] && e.type, "a refusal without a message");
        size_t n;
        char *js = openai_error_json(&e, &n);
        FUZZ_CHECK(js != NULL, "out of memory");
        json_error_t je;
        json_t *root = json_loadb(js, n, 0, &je);
        FUZZ_CHECK(root, "the error JSON does not parse (%s): %s", je.text, js);
        json_t *err = json_object_get(root, "error");
        FUZZ_CHECK(json_is_object(err) && json_object_size(err) == 4 &&
                       json_is_string(json_object_get(err, "message")),
                   "the error JSON has the wrong shape: %s", js);
        json_decref(root);
        free(js);
    }
    free(body);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}
