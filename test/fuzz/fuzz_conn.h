/*
 * fuzz_conn.h - the driver the connection harnesses share (fuzz_h2, fuzz_http1): the server as
 * app.c composes it (the core, health, reflection, inferd.v1.Inference on the tiny test model,
 * the prober), and one connection per input through the core's own accept path, sniffing,
 * bufferevent and protocol code, with the harness's loop turning the reactor.
 *
 * Each input arrives on a fresh socketpair, as a client would send it: written while the
 * server reads, every byte the server answers read and kept. Then the client half-closes and
 * the connection must go away within a bounded number of loop turns, its calls cancelled (a
 * hung or leaked connection is a finding), with the connection and stream gauges back at zero.
 * The engine runs on its own thread as in the server; a call a handler still holds after the
 * input (a Generate in the engine, a Watch) gets a few milliseconds to answer before the
 * half-close.
 *
 * The first input byte chooses the listener: bit 0 clear the main port, set the system port
 * (whose scope serves health only). The rest is the connection's bytes.
 *
 * INFERD_FUZZ_DUMP=1 writes what the server answered to stderr (to look at one input).
 */
#ifndef INFERD_TEST_FUZZ_CONN_H
#define INFERD_TEST_FUZZ_CONN_H

#include "fuzz.h"

#include <errno.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics/inferd_metrics.h"
#include "metrics/metrics.h"
#include "server/app.h"
#include "server/base/config.h"
#include "server/base/log.h"
#include "server/core/conn.h"

static config_t fc_cfg;
static app_t *fc_app;
static server_t *fc_srv;
static uint8_t fc_out[1 << 20]; /* what the server answered to the current input */
static size_t fc_out_len;

/* Builds the server once, as main() does. */
static void fc_init(void)
{
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    char *argv[] = {"inferd",
                    "--listen",
                    "127.0.0.1:0",
                    "--system-host",
                    "127.0.0.1",
                    "--system-port",
                    "0",
                    "--log",
                    "off",
                    "--model",
                    INFERD_FUZZ_MODEL,
                    "--tokenizer",
                    INFERD_FUZZ_TOKENIZER,
                    "--threads",
                    "1",
                    "--max-batch",
                    "4",
                    "--max-queued",
                    "8",
                    NULL};
    char *envp[] = {NULL};
    char err[512];
    int argc = (int)(sizeof argv / sizeof argv[0]) - 1;
    FUZZ_CHECK(config_load(&fc_cfg, argc, argv, envp, err, sizeof err) == 0, "%s", err);
    FUZZ_CHECK(log_configure("off", 0, err, sizeof err) == 0, "%s", err);
    FUZZ_CHECK(app_new(&fc_app, &fc_cfg, err, sizeof err) == 0, "%s", err);
    fc_srv = app_server(fc_app);
    FUZZ_CHECK(fc_srv->n_listeners == 2, "%d listeners", fc_srv->n_listeners);
    /* let the first canary run, so inputs meet a SERVING endpoint like a running server */
    for (int i = 0; i < 200; i++) {
        event_base_loop(fc_srv->base, EVLOOP_NONBLOCK);
        poll(NULL, 0, 1);
    }
}

/* Reads what the server sent; returns the bytes read (0: none now; the socket may be closed). */
static size_t fc_read(int fd)
{
    size_t got = 0;
    for (;;) {
        uint8_t scratch[16384];
        uint8_t *dst = fc_out_len < sizeof fc_out ? fc_out + fc_out_len : scratch;
        size_t room = fc_out_len < sizeof fc_out ? sizeof fc_out - fc_out_len : sizeof scratch;
        ssize_t n = read(fd, dst, room);
        if (n <= 0) break;
        if (dst != scratch) fc_out_len += (size_t)n;
        got += (size_t)n;
    }
    return got;
}

static conn_t *fc_conn(void)
{
    return TAILQ_FIRST(&fc_srv->conns);
}

/* Whether the connection waits on work off the loop: a handler that took a call and has not
 * finished it (a Generate in the engine, a Watch), or a response being gzipped. */
static int fc_busy(void)
{
    conn_t *c = fc_conn();
    if (!c) return 0;
    if (c->http1 && c->http1->job) return 1;
    grpc_call_t *call;
    TAILQ_FOREACH(call, &c->calls, link)
    {
        if ((call->dispatched && !call->finished && !call->cancelled) || call->job) return 1;
    }
    return 0;
}

/* One connection: head (the HTTP/2 preface, or nothing) then data. */
static void fc_run(const uint8_t *head, size_t head_len, const uint8_t *data, size_t size)
{
    if (size < 1) return;
    listener_t *l = &fc_srv->listeners[data[0] & 1];
    data++, size--;
    int sv[2];
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
               "socketpair: %s", strerror(errno));
    struct sockaddr_in peer = {
        .sin_family = AF_INET, .sin_port = htons(40000), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    conn_accept(fc_srv, l, sv[0], (struct sockaddr *)&peer, sizeof peer);
    FUZZ_CHECK(fc_srv->n_conns == 1, "%d connections after accept", fc_srv->n_conns);
    fc_out_len = 0;

    /* send everything, turning the loop while the socket is full */
    size_t off = 0, total = head_len + size;
    int idle = 0;
    while (off < total || idle < 2) {
        if (off < total) {
            const uint8_t *p = off < head_len ? head + off : data + (off - head_len);
            size_t n = off < head_len ? head_len - off : total - off;
            ssize_t w = write(sv[1], p, n);
            if (w > 0)
                off += (size_t)w;
            else if (w < 0 && errno != EAGAIN)
                off = total; /* the server closed: nothing more to say */
        }
        event_base_loop(fc_srv->base, EVLOOP_NONBLOCK);
        size_t got = fc_read(sv[1]);
        if (off >= total) idle = got ? 0 : idle + 1;
    }
    /* work off the loop: give the engine (a Watch, a gzip job) a few milliseconds to answer */
    for (int i = 0; i < 8 && fc_busy(); i++) {
        struct pollfd pfd = {.fd = sv[1], .events = POLLIN};
        poll(&pfd, 1, 1);
        event_base_loop(fc_srv->base, EVLOOP_NONBLOCK);
        fc_read(sv[1]);
    }
    /* the client is done: the connection must go */
    shutdown(sv[1], SHUT_WR);
    int turns = 0;
    while (fc_srv->n_conns && turns < 1000) {
        event_base_loop(fc_srv->base, EVLOOP_NONBLOCK);
        fc_read(sv[1]);
        if (++turns % 100 == 0) poll(NULL, 0, 1);
    }
    FUZZ_CHECK(fc_srv->n_conns == 0, "the connection is still open %d loop turns after EOF", turns);
    close(sv[1]);
    if (getenv("INFERD_FUZZ_DUMP")) {
        fprintf(stderr, "--- %zu bytes answered:\n", fc_out_len);
        fwrite(fc_out, 1, fc_out_len, stderr);
        fprintf(stderr, "\n---\n");
    }
    inferd_metrics_t *m = fc_srv->m;
    FUZZ_CHECK(metrics_value(m->connections_active_s) == 0.0 &&
                   metrics_value(m->http2_streams_active_s) == 0.0,
               "gauges after close: %g connections, %g streams",
               metrics_value(m->connections_active_s), metrics_value(m->http2_streams_active_s));
}

#endif
