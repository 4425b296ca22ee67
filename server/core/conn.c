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
#include "server/base/log.h"

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static void arm_timer(conn_t *c);

/* Still proving itself: sniffing, TLS handshake, or an HTTP/1.1 request head in progress
 * (bounded by --handshake-timeout rather than --idle-timeout). */
static int in_handshake(const conn_t *c)
{
    return c->proto == PROTO_SNIFF || c->proto == PROTO_TLS_HANDSHAKE ||
           (c->proto == PROTO_HTTP1 && c->http1 && c->http1->in_message);
}

void conn_touch(conn_t *c)
{
    c->last_activity_ns = clock_now_ns();
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
static int out_add(conn_t *c, struct evbuffer *out, const uint8_t *data, size_t n)
{
    if (!c->ssl && evbuffer_get_length(out) == 0) {
        ssize_t w = send(bufferevent_getfd(c->bev), data, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            data += w;
            n -= (size_t)w;
        }
    }
    return n ? evbuffer_add(out, data, n) : 0;
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
    if (http1_start(c)) c->closing = 1;
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

/* Decides the protocol from the first bytes: the HTTP/2 preface or anything else (HTTP/1.1). */
static int sniff(conn_t *c, struct evbuffer *in)
{
    size_t len = evbuffer_get_length(in), n = len < 24 ? len : 24;
    unsigned char head[24];
    evbuffer_copyout(in, head, n);
    int plain_refused = !c->ssl && c->lst && c->lst->require_tls;
    if (memcmp(head, preface, n)) {
        if (plain_refused)
            refuse_plaintext(c, 0);
        else
            start_http1(c);
        return 1;
    }
    if (n < 24) return 0;
    if (plain_refused)
        refuse_plaintext(c, 1);
    else
        start_h2(c);
    return 1;
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
        conn_flush(c);
        return;
    }
    conn_touch(c);
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

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_t *c = arg;
    const config_t *cfg = c->srv->cfg;
    int64_t now = clock_now_ns();
    int handshaking = in_handshake(c);
    if (handshaking && now - c->last_activity_ns >= cfg->handshake_timeout_ns) {
        log_debug("server", "closing %s: handshake/request timeout", c->peer);
        conn_close(c);
        return;
    }
    if (!handshaking && cfg->idle_timeout_ns > 0 && c->n_streams == 0 &&
        now - c->last_activity_ns >= cfg->idle_timeout_ns) {
        log_debug("server", "closing idle connection %s", c->peer);
        if (c->h2) {
            nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(c->h2), NGHTTP2_NO_ERROR,
                                  (const uint8_t *)"idle", 4);
            c->closing = 1;
            conn_flush(c);
            if (c->bev) arm_timer(c); /* in case the peer never reads the GOAWAY */
        } else {
            conn_close(c);
        }
        return;
    }
    arm_timer(c);
}

static void arm_timer(conn_t *c)
{
    const config_t *cfg = c->srv->cfg;
    int handshaking = in_handshake(c);
    int64_t period = handshaking ? cfg->handshake_timeout_ns : cfg->idle_timeout_ns;
    if (!handshaking &&
        c->proto == PROTO_HTTP1) /* a request may start any time: check its head too */
        period =
            cfg->handshake_timeout_ns < period || period == 0 ? cfg->handshake_timeout_ns : period;
    if (period <= 0) period = 1000000000LL;
    if (c->closing && period > 2000000000LL) period = 2000000000LL;
    int64_t due = c->last_activity_ns + period - clock_now_ns();
    if (due < 1000000) due = 1000000;
    struct timeval tv = {(time_t)(due / 1000000000LL), (suseconds_t)(due % 1000000000LL / 1000)};
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
    if (!c->sniff_ev || !c->timer || !c->close_ev) {
        if (c->sniff_ev) event_free(c->sniff_ev);
        if (c->timer) event_free(c->timer);
        if (c->close_ev) event_free(c->close_ev);
        free(c);
        close(fd);
        return;
    }
    c->proto = PROTO_SNIFF;
    event_add(c->sniff_ev, NULL);
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
        if (c->proto == PROTO_HTTP1 && c->http1 && c->http1->in_message)
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
    if (c->bev)
        bufferevent_free(c->bev); /* closes the socket, and SSL_free for TLS */
    else if (c->fd >= 0)
        close(c->fd);
    free(c);
    server_conn_gauge(s, -1, 0, 0);
    server_conn_gone(s);
}
