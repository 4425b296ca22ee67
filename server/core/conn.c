/* Connections: accept, protocol sniffing (TLS, HTTP/2 prior knowledge, HTTP/1.1), TLS with
 * ALPN, output backpressure, handshake and idle timeouts, GOAWAY stages. */
#include <errno.h>
#include <openssl/err.h>
#include <event2/bufferevent_ssl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/core/conn.h"
#include "metrics/inferd_metrics.h"
#include "metrics/metrics.h"
#include "server/base/log.h"

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static void arm_timer(conn_t *c);

/* Still proving itself: sniffing or the TLS handshake (bounded by --handshake-timeout from
 * accept, whatever it sends meanwhile). */
static int in_handshake(const conn_t *c)
{
    return c->proto == PROTO_SNIFF || c->proto == PROTO_TLS_HANDSHAKE;
}

/* Activity for the idle timeout: a request or stream begun or ended, a message received or
 * sent. Bytes alone (a trickle, PINGs, WINDOW_UPDATEs) are not activity. */
void conn_touch(conn_t *c)
{
    c->last_activity_ns = clock_now_ns();
}

void conn_arm_timer(conn_t *c)
{
    if (c->timer && !c->closing) arm_timer(c);
}

/* ---- bounds on what a connection, and the process, may buffer ---- */

static void update_gauges(server_t *s)
{
    metrics_set(s->m->output_queued_s, (double)s->out_queued);
    metrics_set(s->m->input_pending_s, (double)(s->in_pending + s->in_held));
}

void conn_schedule_input(conn_t *c)
{
    if (c->input_ev) event_active(c->input_ev, EV_TIMEOUT, 0);
}

/* Calls whose input was held may go on: their connection's (or the process's) output fell
 * below half its bound, or their own drained. Producers that paused hear on_drain. */
static void input_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_t *c = arg;
    if (!c->h2 || c->closing) return;
    c->in_recv = 1; /* no sending from here: streams cannot close under the loop */
    grpc_call_t *call;
    TAILQ_FOREACH(call, &c->calls, link)
    {
        if (call_input_gated(call)) continue;
        if (call->in_held || call->resume) call_resume_input(call);
        if (c->gated || c->srv->gated) break; /* congested again: the rest waits */
        if (call->method && call->method->on_drain && grpc_call_active(call) && !c->read_paused)
            call->method->on_drain(call);
    }
    c->in_recv = 0;
    conn_flush(c);
}

void conn_out_delta(conn_t *c, long delta)
{
    server_t *s = c->srv;
    c->out_queued = (size_t)((long)c->out_queued + delta);
    s->out_queued = (size_t)((long)s->out_queued + delta);
    const config_t *cfg = s->cfg;
    if (!c->gated && c->out_queued > (size_t)cfg->max_connection_output) {
        c->gated = 1;
        server_count_limit(s, "connection_output");
    } else if (c->gated && c->out_queued <= (size_t)cfg->max_connection_output / 2) {
        c->gated = 0;
        conn_schedule_input(c);
    }
    if (!s->gated && s->out_queued > (size_t)cfg->max_process_output) {
        s->gated = 1;
        server_count_limit(s, "process_output");
        log_warn("server",
                 "responses queued for slow clients passed --max-process-output (%lld "
                 "bytes): request input is held until they drain",
                 (long long)cfg->max_process_output);
    } else if (s->gated && s->out_queued <= (size_t)cfg->max_process_output / 2) {
        s->gated = 0;
        conn_t *k;
        TAILQ_FOREACH(k, &s->conns, link)
        conn_schedule_input(k);
    }
    update_gauges(s);
}

/* The call with the biggest unfinished message fails (RESOURCE_EXHAUSTED), until the
 * connection is back within --max-pending-input. */
static void pending_over(conn_t *c)
{
    const config_t *cfg = c->srv->cfg;
    while (c->in_pending > (size_t)cfg->max_pending_input) {
        grpc_call_t *big = NULL, *call;
        TAILQ_FOREACH(call, &c->calls, link)
        if (!big || call->in_charged > big->in_charged) big = call;
        if (!big || !big->in_charged) break;
        char msg[200];
        snprintf(msg, sizeof msg,
                 "unfinished request messages on this connection passed --max-pending-input "
                 "(%lld bytes); this call's was the biggest (%zu bytes)",
                 (long long)cfg->max_pending_input, big->in_charged);
        server_count_limit(c->srv, "pending_input");
        log_debug("server", "%s: stream %d: %s", c->peer, big->stream_id, msg);
        call_abort(big, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
    }
}

void conn_in_delta(conn_t *c, long pending, long held)
{
    server_t *s = c->srv;
    c->in_pending = (size_t)((long)c->in_pending + pending);
    s->in_pending = (size_t)((long)s->in_pending + pending);
    c->in_held = (size_t)((long)c->in_held + held);
    s->in_held = (size_t)((long)s->in_held + held);
    update_gauges(s);
    if (pending > 0) pending_over(c);
}

static void maybe_close(conn_t *c)
{
    if (!c->bev) return;
    size_t pending = evbuffer_get_length(bufferevent_get_output(c->bev));
    int done = 0;
    if (c->proto == PROTO_H2 && c->h2) {
        done = (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) ||
               (c->goaway_stage == 2 && c->n_streams == 0) || (c->closing && c->n_streams == 0);
        if (c->closing && !nghttp2_session_want_write(c->h2)) done = 1;
    } else if (c->closing) {
        done = 1;
    }
    /* Closed from its own event, never under a caller that may still use c or its calls. */
    if (done && pending == 0) event_active(c->close_ev, EV_TIMEOUT, 0);
}

static void close_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_close(arg);
}

/* Sends bytes to the socket at once when nothing is queued before them (plain TCP): the
 * common case then costs one send() instead of the bufferevent arming and disarming write
 * interest around it (two epoll_ctl per response). What the kernel does not take is queued. */
static int out_add_sent(conn_t *c, struct evbuffer *out, const uint8_t *data, size_t n,
                        size_t *sent)
{
    *sent = 0;
    if (!c->ssl && evbuffer_get_length(out) == 0) {
        ssize_t w = send(bufferevent_getfd(c->bev), data, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            data += w;
            n -= (size_t)w;
            *sent = (size_t)w;
        }
    }
    return n ? evbuffer_add(out, data, n) : 0;
}

static int out_add(conn_t *c, struct evbuffer *out, const uint8_t *data, size_t n)
{
    size_t sent;
    return out_add_sent(c, out, data, n, &sent);
}

int conn_write(conn_t *c, const void *data, size_t n, size_t *sent)
{
    size_t dummy;
    if (!sent) sent = &dummy;
    *sent = 0;
    if (!c->bev) return -EPIPE;
    return out_add_sent(c, bufferevent_get_output(c->bev), data, n, sent) ? -ENOMEM : 0;
}

void conn_flush(conn_t *c)
{
    if (!c || !c->bev || c->in_recv) return;
    server_t *s = c->srv;
    if (s->flush_batch) { /* one flush per connection when the batch ends */
        if (!c->flush_held) {
            c->flush_held = 1;
            TAILQ_INSERT_TAIL(&s->held, c, held_link);
        }
        return;
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    c->flushes++;
    if (c->proto == PROTO_H2 && c->h2) {
        uint8_t batch[16384]; /* frames gathered so one flush is one send */
        size_t have = 0;
        while (evbuffer_get_length(out) < CONN_OUT_HIGH) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->h2, &data);
            if (n < 0) {
                log_debug("server", "h2 send error to %s: %s", c->peer, nghttp2_strerror((int)n));
                c->closing = 1;
                break;
            }
            if (n == 0) break;
            if (have + (size_t)n <= sizeof batch) {
                memcpy(batch + have, data, (size_t)n);
                have += (size_t)n;
                continue;
            }
            if ((have && out_add(c, out, batch, have)) || out_add(c, out, data, (size_t)n)) {
                c->closing = 1;
                have = 0;
                break;
            }
            have = 0;
        }
        if (have && out_add(c, out, batch, have)) c->closing = 1;
    }
    /* Backpressure: a peer that does not read its responses stops being read from. */
    if (evbuffer_get_length(out) >= CONN_OUT_HIGH) {
        if (!c->read_paused) {
            c->read_paused = 1;
            bufferevent_disable(c->bev, EV_READ);
        }
    }
    maybe_close(c);
}

static void resume_reading(conn_t *c)
{
    if (c->read_paused && evbuffer_get_length(bufferevent_get_output(c->bev)) < CONN_OUT_LOW) {
        c->read_paused = 0;
        bufferevent_enable(c->bev, EV_READ);
    }
}

static void feed_h2(conn_t *c, struct evbuffer *in)
{
    struct evbuffer_iovec v[8];
    c->in_recv = 1;
    int fail = 0;
    while (!fail && evbuffer_get_length(in) > 0) {
        int n = evbuffer_peek(in, -1, NULL, v, 8);
        if (n > 8) n = 8;
        size_t used = 0;
        for (int i = 0; i < n && !fail; i++) {
            if (h2_recv(c, v[i].iov_base, v[i].iov_len)) fail = 1;
            used += v[i].iov_len;
        }
        evbuffer_drain(in, used);
    }
    c->in_recv = 0;
    if (fail) {
        conn_flush(c); /* GOAWAY nghttp2 queued for the protocol error */
        c->closing = 1;
    }
    conn_flush(c);
}

static void start_h2(conn_t *c)
{
    c->proto = PROTO_H2;
    if (h2_session_start(c)) {
        c->closing = 1;
        return;
    }
    conn_touch(c);
    arm_timer(c);
}

static void start_http1(conn_t *c)
{
    c->proto = PROTO_HTTP1;
    if (http1_start(c))
        c->closing = 1;
    else
        c->http1->head_start_ns = c->accept_ns; /* the first request's head began with it */
    conn_touch(c);
    arm_timer(c);
}

/* Plaintext on a listener that requires TLS: one answer that says so in the client's protocol
 * (an HTTP/1.1 400, or SETTINGS and GOAWAY(INADEQUATE_SECURITY) for the HTTP/2 preface), then
 * close. Nothing the client sent is parsed. */
static void refuse_plaintext(conn_t *c, int h2)
{
    static const char why[] = "TLS is required on this port";
    static const char body[] = "TLS is required on this port: connect with TLS (https)\n";
    log_debug("server", "plaintext %s from %s refused: %s", h2 ? "HTTP/2" : "HTTP/1.1", c->peer,
              why);
    if (h2) {
        start_h2(c);
        if (c->h2)
            nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, 0, NGHTTP2_INADEQUATE_SECURITY,
                                  (const uint8_t *)why, sizeof why - 1);
    } else {
        c->proto = PROTO_HTTP1;
        conn_touch(c);
        arm_timer(c);
        evbuffer_add_printf(
            bufferevent_get_output(c->bev),
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: %zu\r\nCache-Control: no-store\r\n"
            "Connection: close\r\n\r\n%s",
            sizeof body - 1, body);
    }
    c->closing = 1;
}

static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

enum { SNIFF_MORE = 0, SNIFF_H2, SNIFF_HTTP1, SNIFF_BAD_PREFACE, SNIFF_GARBAGE };

/* What the first bytes are: the HTTP/2 preface, an HTTP/1.x request line (METHOD SP target SP
 * HTTP/d.d, after optional empty lines), a broken preface (its first line, then something
 * else), or neither. Anything else
 * is not handed to the HTTP/1.1 parser (which would answer it, to an HTTP/2 client a stream of
 * bytes that are no frames: RFC 9113 3.4 wants the connection ended). */
static int classify(const unsigned char *b, size_t n)
{
    size_t m = n < 24 ? n : 24;
    if (!memcmp(b, preface, m)) return n >= 24 ? SNIFF_H2 : SNIFF_MORE;
    if (n >= 16 && !memcmp(b, preface, 16)) return SNIFF_BAD_PREFACE; /* "PRI * HTTP/2.0\r\n" */
    size_t i = 0;
    while (i < n && (b[i] == '\r' || b[i] == '\n'))
        i++;
    if (i > 64) return SNIFF_GARBAGE;
    size_t start = i;
    while (i < n && is_tchar(b[i]))
        i++;
    if (i - start > 32) return SNIFF_GARBAGE;
    if (i == n) return SNIFF_MORE;
    if (i == start || b[i] != ' ') return SNIFF_GARBAGE;
    size_t t = ++i;
    while (i < n && b[i] > ' ' && b[i] != 0x7f)
        i++;
    if (i == n) return i - t > 8192 ? SNIFF_HTTP1 : SNIFF_MORE; /* HTTP/1.1 answers 414 */
    if (i == t || b[i] != ' ') return SNIFF_GARBAGE;
    i++;
    static const char v[] = "HTTP/#.#";
    for (size_t k = 0; k < 8; k++, i++) {
        if (i == n) return SNIFF_MORE;
        if (v[k] == '#' ? !(b[i] >= '0' && b[i] <= '9') : b[i] != (unsigned char)v[k])
            return SNIFF_GARBAGE;
    }
    if (i == n) return SNIFF_MORE;
    return b[i] == '\r' || b[i] == '\n' ? SNIFF_HTTP1 : SNIFF_GARBAGE;
}

/* A client that started the HTTP/2 preface and got it wrong: GOAWAY(PROTOCOL_ERROR), then
 * close (nothing it sent is parsed). */
static void bad_preface(conn_t *c)
{
    static const unsigned char goaway[] = {0, 0, 8, 7, 0, 0, 0, 0, 0, /* GOAWAY on stream 0 */
                                           0, 0, 0, 0, 0, 0, 0, 1};   /* last 0, PROTOCOL_ERROR */
    log_debug("server", "invalid HTTP/2 connection preface from %s", c->peer);
    evbuffer_add(bufferevent_get_output(c->bev), goaway, sizeof goaway);
    c->proto = PROTO_HTTP1; /* no session: closed as soon as the GOAWAY is out */
    c->closing = 1;
}

/* Decides the protocol from the first bytes (classify). */
static int sniff(conn_t *c, struct evbuffer *in)
{
    size_t len = evbuffer_get_length(in), n = len < 8300 ? len : 8300;
    const unsigned char *head = evbuffer_pullup(in, (ev_ssize_t)n);
    if (!head) return 0;
    int plain_refused = !c->ssl && c->lst && c->lst->require_tls;
    switch (classify(head, n)) {
    case SNIFF_MORE:
        return 0;
    case SNIFF_H2:
        if (plain_refused)
            refuse_plaintext(c, 1);
        else
            start_h2(c);
        return 1;
    case SNIFF_HTTP1:
        if (plain_refused)
            refuse_plaintext(c, 0);
        else
            start_http1(c);
        return 1;
    case SNIFF_BAD_PREFACE:
        bad_preface(c);
        return 1;
    default:
        log_debug("server", "closing %s: its first bytes are neither HTTP/2 nor HTTP/1.x", c->peer);
        c->proto = PROTO_HTTP1;
        c->closing = 1;
        return 1;
    }
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    conn_t *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->closing) {
        evbuffer_drain(in, evbuffer_get_length(in));
        maybe_close(c);
        return;
    }
    if (c->proto == PROTO_SNIFF && !sniff(c, in)) return;
    if (c->closing) {
        evbuffer_drain(in, evbuffer_get_length(in));
        conn_flush(c);
        return;
    }
    if (c->proto == PROTO_H2) {
        feed_h2(c, in);
    } else if (c->proto == PROTO_HTTP1) {
        if (http1_recv(c, in)) c->closing = 1;
        conn_flush(c);
    }
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn_t *c = arg;
    resume_reading(c);
    conn_flush(c);
    if (c->proto == PROTO_HTTP1 && c->bev && !c->read_paused &&
        evbuffer_get_length(bufferevent_get_input(c->bev)))
        read_cb(c->bev, c); /* requests that waited while output was over the mark */
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    conn_t *c = arg;
    if (what & BEV_EVENT_CONNECTED) { /* TLS handshake done */
        const unsigned char *alpn = NULL;
        unsigned alpn_len = 0;
        SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
        if (alpn_len == 2 && !memcmp(alpn, "h2", 2))
            start_h2(c);
        else if (alpn_len == 8 && !memcmp(alpn, "http/1.1", 8))
            start_http1(c);
        else
            c->proto = PROTO_SNIFF; /* no ALPN: the first bytes decide */
        if (evbuffer_get_length(bufferevent_get_input(bev)))
            read_cb(bev, c);
        else
            conn_flush(c);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        if (what & BEV_EVENT_ERROR && c->ssl) {
            unsigned long e = bufferevent_get_openssl_error(bev);
            if (e) {
                char buf[256];
                ERR_error_string_n(e, buf, sizeof buf);
                log_debug("server", "TLS error from %s: %s", c->peer, buf);
            }
        }
        conn_close(c);
    }
}

#define SEC 1000000000LL

/* How long from accept a connection may take to show its protocol: --handshake-timeout for
 * TLS; while its first bytes are sniffed (they are the start of a request head) no longer than
 * --request-header-timeout either. */
static int64_t handshake_deadline(const conn_t *c)
{
    const config_t *cfg = c->srv->cfg;
    int64_t t = cfg->handshake_timeout_ns;
    if (c->proto == PROTO_SNIFF && cfg->request_header_timeout_ns < t)
        t = cfg->request_header_timeout_ns;
    return t;
}
/* A stream whose queued response none of has been taken for this long waits on its client. */
#define BLOCKED_NS SEC

static int cmp_newest(const void *a, const void *b)
{
    const grpc_call_t *x = *(grpc_call_t *const *)a, *y = *(grpc_call_t *const *)b;
    return (y->stream_id > x->stream_id) - (y->stream_id < x->stream_id);
}

/* 1 when bytes that should have come by now did not: more than the grace since since_ns, and
 * fewer than --min-body-rate per second after it. */
static int too_slow(const config_t *cfg, int64_t now, int64_t since_ns, uint64_t bytes)
{
    if (cfg->min_body_rate <= 0 || !since_ns) return 0;
    int64_t late = now - since_ns - cfg->request_header_timeout_ns;
    return late > 0 && (double)bytes < (double)cfg->min_body_rate * (double)late / 1e9;
}

/* The streams of an HTTP/2 connection, about once a second: a stream whose client takes none
 * of its response for --stream-stall-timeout is cancelled; beyond --max-paused-streams
 * streams waiting on their client, the newest are; a request message that trickles in slower
 * than --min-body-rate fails. */
static void scan_calls(conn_t *c, int64_t now)
{
    server_t *s = c->srv;
    const config_t *cfg = s->cfg;
    grpc_call_t *call, *stack[64], **blocked = stack;
    size_t nb = 0, cap = 64;
    c->in_recv = 1; /* no stream closes under the loop: answers go out at the flush below */
    TAILQ_FOREACH(call, &c->calls, link)
    {
        if (!grpc_call_active(call) || (!call->method && !call->hs)) continue;
        int64_t waited = evbuffer_get_length(call->out) ? now - call->out_since_ns : 0;
        if (cfg->stream_stall_timeout_ns > 0 && waited >= cfg->stream_stall_timeout_ns) {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "stream stalled: the client took none of its response for %.1fs "
                     "(--stream-stall-timeout)",
                     (double)waited / 1e9);
            log_debug("server", "%s: stream %d: %s", c->peer, call->stream_id, msg);
            server_count_limit(s, "stream_stall");
            call_abort(call, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
            continue;
        }
        if (waited >= BLOCKED_NS) {
            if (nb == cap) {
                grpc_call_t **b = malloc(2 * cap * sizeof *b);
                if (!b) continue;
                memcpy(b, blocked, nb * sizeof *b);
                if (blocked != stack) free(blocked);
                blocked = b;
                cap *= 2;
            }
            blocked[nb++] = call;
        }
        if (!call->method || call->in_held) continue; /* a whole body, or held by us */
        int unary_in =
            call->method->kind == GRPC_UNARY || call->method->kind == GRPC_SERVER_STREAMING;
        int slow = call->msg_start_ns
                       ? too_slow(cfg, now, call->msg_start_ns, grpc_deframer_held(&call->deframer))
                       : unary_in && !call->remote_closed &&
                             too_slow(cfg, now, call->start_ns, call->bytes_wire_in);
        if (slow) {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "the request message arrived slower than --min-body-rate (%lld bytes/s)",
                     (long long)cfg->min_body_rate);
            server_count_limit(s, "min_body_rate");
            call_abort(call, GRPC_STATUS_DEADLINE_EXCEEDED, msg);
        }
    }
    if (nb > (size_t)cfg->max_paused_streams) {
        qsort(blocked, nb, sizeof *blocked, cmp_newest);
        for (size_t i = 0; i + (size_t)cfg->max_paused_streams < nb; i++) {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "too many streams of this connection wait on their client "
                     "(--max-paused-streams %lld)",
                     (long long)cfg->max_paused_streams);
            server_count_limit(s, "paused_streams");
            call_abort(blocked[i], GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
        }
    }
    if (blocked != stack) free(blocked);
    c->in_recv = 0;
    conn_flush(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_t *c = arg;
    const config_t *cfg = c->srv->cfg;
    int64_t now = clock_now_ns();
    if (c->closing) {
        /* What we said last goes out as long as the peer reads it; one that reads nothing for
         * 2 s is closed (a peer that never reads must not keep a closing connection). */
        size_t pending = c->bev ? evbuffer_get_length(bufferevent_get_output(c->bev)) : 0;
        if (!c->close_by_ns || pending < c->close_pending) c->close_by_ns = now + 2 * SEC;
        c->close_pending = pending;
        if (now >= c->close_by_ns) {
            conn_close(c);
            return;
        }
        arm_timer(c);
        return;
    }
    if (in_handshake(c)) {
        if (now - c->accept_ns >= handshake_deadline(c)) {
            log_debug("server", "closing %s: handshake timeout", c->peer);
            conn_close(c);
            return;
        }
    } else if (c->proto == PROTO_HTTP1 && c->http1) {
        http1_t *h = c->http1;
        if (h->head_start_ns && now - h->head_start_ns >= cfg->request_header_timeout_ns) {
            server_count_limit(c->srv, "request_header_timeout");
            http1_timeout(c, "the request head took longer than --request-header-timeout");
        } else if (h->body_start_ns && too_slow(cfg, now, h->body_start_ns, h->body_bytes)) {
            server_count_limit(c->srv, "min_body_rate");
            http1_timeout(c, "the request body arrived slower than --min-body-rate");
        } else if (h->stream && cfg->stream_stall_timeout_ns > 0 &&
                   h->stream->queued > h->stream->taken &&
                   now - h->stream->moved_ns >= cfg->stream_stall_timeout_ns) {
            /* its status went out with the head: the close is what tells the client */
            log_debug("server",
                      "closing %s: the client took none of its answer for %.1fs "
                      "(--stream-stall-timeout)",
                      c->peer, (double)(now - h->stream->moved_ns) / 1e9);
            server_count_limit(c->srv, "stream_stall");
            conn_close(c);
            return;
        } else if (!h->head_start_ns && !h->body_start_ns && !h->job && cfg->idle_timeout_ns > 0 &&
                   now - c->last_activity_ns >= cfg->idle_timeout_ns) {
            log_debug("server", "closing idle connection %s", c->peer);
            conn_close(c);
            return;
        }
        if (c->closing) conn_flush(c);
    } else if (c->proto == PROTO_H2 && c->h2) {
        if (c->n_streams > 0) {
            scan_calls(c, now);
        } else if (cfg->idle_timeout_ns > 0 && now - c->last_activity_ns >= cfg->idle_timeout_ns) {
            log_debug("server", "closing idle connection %s", c->peer);
            nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(c->h2), NGHTTP2_NO_ERROR,
                                  (const uint8_t *)"idle", 4);
            c->closing = 1;
            conn_flush(c);
        }
    }
    if (c->bev || c->timer) arm_timer(c);
}

/* The next moment something may be due: a deadline, or about once a second while requests or
 * streams are in progress (their checks are rate checks). */
static void arm_timer(conn_t *c)
{
    const config_t *cfg = c->srv->cfg;
    int64_t now = clock_now_ns(), due = now + 3600 * SEC;
#define SOONER(t)                                                                                  \
    do {                                                                                           \
        int64_t t_ = (t);                                                                          \
        if (t_ < due) due = t_;                                                                    \
    } while (0)
    if (c->closing) {
        SOONER(c->close_by_ns ? c->close_by_ns : now + 2 * SEC);
    } else if (in_handshake(c)) {
        SOONER(c->accept_ns + handshake_deadline(c));
    } else if (c->proto == PROTO_HTTP1 && c->http1) {
        const http1_t *h = c->http1;
        if (h->head_start_ns) SOONER(h->head_start_ns + cfg->request_header_timeout_ns);
        if (h->body_start_ns) SOONER(now + SEC);
        if (h->stream && cfg->stream_stall_timeout_ns > 0)
            SOONER(now + (cfg->stream_stall_timeout_ns < SEC ? cfg->stream_stall_timeout_ns : SEC));
        if (cfg->idle_timeout_ns > 0) SOONER(c->last_activity_ns + cfg->idle_timeout_ns);
    } else if (c->proto == PROTO_H2) {
        if (c->n_streams > 0) {
            int64_t period = SEC;
            if (cfg->stream_stall_timeout_ns > 0 && cfg->stream_stall_timeout_ns < period)
                period = cfg->stream_stall_timeout_ns;
            SOONER(now + period);
        } else if (cfg->idle_timeout_ns > 0) {
            SOONER(c->last_activity_ns + cfg->idle_timeout_ns);
        }
    }
#undef SOONER
    int64_t wait = due - now;
    if (wait < 1000000) wait = 1000000;
    struct timeval tv = {(time_t)(wait / SEC), (suseconds_t)(wait % SEC / 1000)};
    evtimer_add(c->timer, &tv);
}

static void setup_bev(conn_t *c)
{
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, CONN_OUT_LOW, 0);
    /* Bounds one read: a client cannot make us buffer more than this before we parse. */
    bufferevent_set_max_single_read(c->bev, 64 * 1024);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void sniff_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    conn_t *c = arg;
    unsigned char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    event_free(c->sniff_ev);
    c->sniff_ev = NULL;
    if (n <= 0) {
        conn_close(c);
        return;
    }
    server_t *s = c->srv;
    if (b == 0x16) { /* a TLS ClientHello */
        if (!s->ssl_ctx) {
            log_debug("server", "TLS from %s but TLS is not configured", c->peer);
            conn_close(c);
            return;
        }
        c->ssl = SSL_new(s->ssl_ctx);
        if (!c->ssl) {
            conn_close(c);
            return;
        }
        c->proto = PROTO_TLS_HANDSHAKE;
        c->bev = bufferevent_openssl_socket_new(s->base, fd, c->ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
    } else {
        c->proto = PROTO_SNIFF;
        c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!c->bev) {
        if (c->ssl) SSL_free(c->ssl);
        c->ssl = NULL;
        conn_close(c);
        return;
    }
    c->fd = -1; /* the bufferevent owns it now */
    setup_bev(c);
}

void conn_accept(server_t *s, listener_t *l, int fd, const struct sockaddr *sa, int salen)
{
    (void)salen;
    if (s->n_conns >= s->cfg->max_connections || s->stopping) {
        close(fd);
        return;
    }
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->srv = s;
    c->lst = l;
    c->fd = fd;
    TAILQ_INIT(&c->calls);
    char host[48] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        evutil_inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in = (const struct sockaddr_in6 *)sa;
        evutil_inet_ntop(AF_INET6, &in->sin6_addr, host, sizeof host);
        port = ntohs(in->sin6_port);
    }
    snprintf(c->peer, sizeof c->peer, "%s:%d", host, port);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    evutil_make_socket_nonblocking(fd);
    c->sniff_ev = event_new(s->base, fd, EV_READ | EV_PERSIST, sniff_cb, c);
    c->timer = evtimer_new(s->base, timer_cb, c);
    c->close_ev = evtimer_new(s->base, close_cb, c);
    c->input_ev = evtimer_new(s->base, input_cb, c);
    if (!c->sniff_ev || !c->timer || !c->close_ev || !c->input_ev) {
        if (c->sniff_ev) event_free(c->sniff_ev);
        if (c->timer) event_free(c->timer);
        if (c->close_ev) event_free(c->close_ev);
        if (c->input_ev) event_free(c->input_ev);
        free(c);
        close(fd);
        return;
    }
    c->proto = PROTO_SNIFF;
    event_add(c->sniff_ev, NULL);
    c->accept_ns = clock_now_ns();
    conn_touch(c);
    arm_timer(c);
    TAILQ_INSERT_TAIL(&s->conns, c, link);
    s->n_conns++;
    server_conn_gauge(s, 1, 0, 1);
    if (s->draining && s->stopping) conn_goaway(c, 2);
}

void conn_goaway(conn_t *c, int stage)
{
    if (c->goaway_stage >= stage) return;
    if (c->proto == PROTO_H2 && c->h2) {
        if (stage == 1) {
            nghttp2_submit_shutdown_notice(c->h2); /* GOAWAY(2^31-1) */
            nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, (const uint8_t *)"draining");
        } else {
            nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(c->h2), NGHTTP2_NO_ERROR,
                                  NULL, 0);
        }
        c->goaway_stage = stage;
        conn_flush(c);
        return;
    }
    c->goaway_stage = stage;
    if (stage == 2) {
        /* a request being read, or an answer streaming, finishes first (--drain-timeout) */
        if (c->proto == PROTO_HTTP1 && c->http1 && (c->http1->in_message || c->http1->stream))
            c->http1->close_after = 1;
        else
            c->closing = 1;
        if (c->bev)
            conn_flush(c);
        else
            conn_close(c);
    }
}

void conn_close(conn_t *c)
{
    server_t *s = c->srv;
    TAILQ_REMOVE(&s->conns, c, link);
    if (c->flush_held) TAILQ_REMOVE(&s->held, c, held_link);
    s->n_conns--;
    h2_session_free(c);
    http1_free(c);
    if (c->sniff_ev) event_free(c->sniff_ev);
    if (c->timer) event_free(c->timer);
    event_free(c->close_ev);
    event_free(c->input_ev);
    if (c->bev)
        bufferevent_free(c->bev); /* closes the socket, and SSL_free for TLS */
    else if (c->fd >= 0)
        close(c->fd);
    free(c);
    server_conn_gauge(s, -1, 0, 0);
    server_conn_gone(s);
}
