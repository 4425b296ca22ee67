/*
 * fuzz_h2 - HTTP/2 connection input: bytes into a real nghttp2 server session through the
 * core's connection code, with the server's callbacks (h2.c), its gRPC call layer and every
 * service app.c registers (health, reflection, inferd.v1.Inference on the tiny test model),
 * and the HTTP routes over HTTP/2.
 *
 * Input: the listener byte (fuzz_conn.h), then what a client sends after the connection
 * preface, which the harness sends first (the seeds: SETTINGS, HEADERS with HPACK, DATA with
 * gRPC frames for each method, CONTINUATION, RST_STREAM, PING, WINDOW_UPDATE, as an nghttp2
 * client writes them).
 * Promises checked beyond "no crash": see fuzz_conn.h (the connection closes after the
 * client's EOF, gauges back at zero, no leak).
 */
#include "fuzz_conn.h"

static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fc_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fc_run(preface, sizeof preface - 1, data, size);
    return 0;
}
