/*
 * fuzz_http1 - the HTTP/1.1 request path: bytes into the core's connection code, which sniffs
 * them (anything but the HTTP/2 preface is HTTP/1.1), parses with http-parser (http1.c) and
 * answers from the route table (/live, /health, /metrics, 404, 405, 413, 414, 431, 400).
 *
 * Input: the listener byte (fuzz_conn.h), then the connection's bytes (the seeds: requests
 * from the HTTP/1.1 tests, pipelining, bodies, chunked encoding, smuggling shapes).
 * Promises checked beyond "no crash" (and fuzz_conn.h's): when the connection was HTTP/1.1,
 * whatever the server answered is a sequence of complete responses, each a status line
 * "HTTP/1.1 NNN ", header lines without a stray CR, LF or NUL, one Content-Length, and that
 * many bytes of body: no request byte can split a response or inject a header.
 */
#include "fuzz_conn.h"

#include <ctype.h>
#include <strings.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fc_init();
    return 0;
}

/* The server's answer must be complete responses back to back. A HEAD answer carries a
 * Content-Length but no body, and which request a response answers is not known here: when the
 * input holds "HEAD" anywhere, only the first response is checked. */
static void check_responses(const uint8_t *in, size_t in_len)
{
    int any_head = memmem(in, in_len, "HEAD", 4) != NULL;
    size_t off = 0;
    for (int r = 0; off < fc_out_len && fc_out_len < sizeof fc_out; r++) {
        const char *p = (const char *)fc_out + off, *end = (const char *)fc_out + fc_out_len;
        FUZZ_CHECK(end - p >= 13 && !memcmp(p, "HTTP/1.1 ", 9) && isdigit((unsigned char)p[9]) &&
                       isdigit((unsigned char)p[10]) && isdigit((unsigned char)p[11]) &&
                       p[12] == ' ',
                   "response %d does not start with a status line", r);
        const char *hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        FUZZ_CHECK(hend, "response %d: the header block does not end", r);
        long clen = -1;
        for (const char *line = p; line < hend + 2;) {
            const char *eol = memmem(line, (size_t)(hend + 2 - line), "\r\n", 2);
            for (const char *c = line; c < eol; c++)
                FUZZ_CHECK(*c != '\r' && *c != '\n' && *c != 0,
                           "response %d: a control byte inside a header line", r);
            if (line != p) {
                FUZZ_CHECK(memchr(line, ':', (size_t)(eol - line)),
                           "response %d: a header line without a colon", r);
                if (!strncasecmp(line, "Content-Length:", 15)) {
                    FUZZ_CHECK(clen < 0, "response %d: two Content-Length", r);
                    clen = strtol(line + 15, NULL, 10);
                }
            }
            line = eol + 2;
        }
        FUZZ_CHECK(clen >= 0, "response %d has no Content-Length", r);
        if (any_head) break;
        off = (size_t)(hend + 4 - (const char *)fc_out);
        FUZZ_CHECK(fc_out_len - off >= (size_t)clen, "response %d: body shorter than %ld", r, clen);
        off += (size_t)clen;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fc_run(NULL, 0, data, size);
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    int h2 = size > 1 && !memcmp(data + 1, preface, size - 1 < 24 ? size - 1 : 24);
    if (!h2 && size > 1) check_responses(data + 1, size - 1);
    return 0;
}
