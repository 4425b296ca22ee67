/* nghttp2 session glue: frames in, calls out. The library's own protocol checks stay on. */
#include <stdlib.h>
#include <string.h>

#include "server/core/conn.h"
#include "server/base/log.h"

static grpc_call_t *stream_call(conn_t *c, int32_t id)
{
    return nghttp2_session_get_stream_user_data(c->h2, id);
}

/* ---- the client's stream ids: which of the last 512 were opened (RFC 9113 5.1.1) ---- */
#define OPENED_BITS (8 * 64)

static void opened_mark(conn_t *c, int32_t id)
{
    if (id > c->max_stream_id) {
        uint32_t shift = c->max_stream_id ? (uint32_t)(id - c->max_stream_id) / 2 : OPENED_BITS;
        if (shift >= OPENED_BITS) {
            memset(c->opened, 0, sizeof c->opened);
        } else {
            uint32_t w = shift / 64, b = shift % 64;
            for (int i = 7; i >= 0; i--) {
                uint64_t hi = i - (int)w >= 0 ? c->opened[i - w] : 0;
                uint64_t lo = i - (int)w - 1 >= 0 ? c->opened[i - w - 1] : 0;
                c->opened[i] = b ? hi << b | lo >> (64 - b) : hi;
            }
        }
        c->max_stream_id = id;
    }
    uint32_t k = (uint32_t)(c->max_stream_id - id) / 2;
    if (k < OPENED_BITS) c->opened[k / 64] |= 1ull << (k % 64);
}

/* HEADERS on a client stream id below the highest one opened, that was never opened itself:
 * the client went back in its ids, a connection error (5.1.1). nghttp2 ignores such a block
 * (it cannot tell it from trailers on a stream it forgot), so the check is ours, for the ids it
 * still knows. */
static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *ud)
{
    conn_t *c = ud;
    if (hd->type != NGHTTP2_HEADERS || !(hd->stream_id & 1) || hd->stream_id >= c->max_stream_id)
        return 0;
    uint32_t k = (uint32_t)(c->max_stream_id - hd->stream_id) / 2;
    if (k >= OPENED_BITS || (c->opened[k / 64] >> (k % 64) & 1)) return 0;
    log_debug("server", "HEADERS on stream %d after stream %d from %s: PROTOCOL_ERROR",
              hd->stream_id, c->max_stream_id, c->peer);
    static const char dbg[] = "stream id smaller than a previous one";
    nghttp2_submit_goaway(s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s),
                          NGHTTP2_PROTOCOL_ERROR, (const uint8_t *)dbg, sizeof dbg - 1);
    c->closing = 1;
    return 0;
}

/* --max-stream-rate: a bucket of one second's worth of new streams per connection. Returns 1
 * when the stream may open. */
static int stream_rate_ok(conn_t *c)
{
    int64_t rate = c->srv->cfg->max_stream_rate;
    if (rate <= 0) return 1;
    int64_t now = clock_now_ns();
    if (!c->stream_tokens_ns) c->stream_tokens = (double)rate;
    c->stream_tokens += (double)(now - c->stream_tokens_ns) / 1e9 * (double)rate;
    if (c->stream_tokens > (double)rate) c->stream_tokens = (double)rate;
    c->stream_tokens_ns = now;
    if (c->stream_tokens >= 1.0) {
        c->stream_tokens -= 1.0;
        c->refused_streams = 0;
        return 1;
    }
    return 0;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    conn_t *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    opened_mark(c, f->hd.stream_id);
    if (c->goaway_stage == 2 || c->closing) { /* after the final GOAWAY nothing new starts */
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    if (!stream_rate_ok(c)) {
        /* refused before any work (a reset stream costs nothing more); a client that keeps
         * opening at twice the rate is told to calm down, once */
        server_count_limit(c->srv, "stream_rate");
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        if (++c->refused_streams > c->srv->cfg->max_stream_rate) {
            static const char dbg[] = "too_many_streams";
            log_warn("server",
                     "GOAWAY ENHANCE_YOUR_CALM (too_many_streams: more than %lld new "
                     "streams per second, --max-stream-rate) to %s",
                     (long long)c->srv->cfg->max_stream_rate, c->peer);
            nghttp2_submit_goaway(s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s),
                                  NGHTTP2_ENHANCE_YOUR_CALM, (const uint8_t *)dbg, sizeof dbg - 1);
            c->closing = 1;
        }
        return 0;
    }
    grpc_call_t *call = call_new(c, f->hd.stream_id);
    if (!call) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    nghttp2_session_set_stream_user_data(s, f->hd.stream_id, call);
    if (c->n_streams++ == 0) conn_arm_timer(c); /* the calls' checks start */
    conn_touch(c);
    server_conn_gauge(c->srv, 0, 1, 0);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)s;
    (void)flags;
    conn_t *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS) return 0;
    grpc_call_t *call = stream_call(c, f->hd.stream_id);
    if (!call || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers from the client: ignored */
#define IS(lit) (namelen == sizeof(lit) - 1 && !memcmp(name, lit, namelen))
    call->header_bytes += namelen + valuelen + 32;
    if (call->header_bytes > (size_t)c->srv->cfg->max_header_list_size) {
        /* Over the limit: the request gets an answer that says so (431 or RESOURCE_EXHAUSTED,
         * call_headers_done), so only what that answer needs is kept. nghttp2 bounds the block
         * (CONTINUATION frames, HPACK field sizes). */
        call->headers_over = 1;
        if (!(IS(":method") || IS(":path") || IS("content-type")) || valuelen > 2048) return 0;
    }
    char *v = arena_strndup(&call->arena, (const char *)value, valuelen);
    if (!v) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (IS(":path"))
        call->path = v;
    else if (IS(":method"))
        call->http_method = v;
    else if (IS("content-type"))
        call->content_type = v;
    else if (IS("te"))
        call->te = v;
    else if (IS("grpc-encoding"))
        call->encoding = v;
    else if (IS("grpc-accept-encoding"))
        call->accept_encoding = v;
    else if (IS("grpc-timeout"))
        call->timeout = v;
#undef IS
    if (name[0] != ':' && call->nhdr < (int)(sizeof call->hdr_name / sizeof call->hdr_name[0])) {
        call->hdr_name[call->nhdr] = arena_strndup(&call->arena, (const char *)name, namelen);
        call->hdr_value[call->nhdr++] = v;
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    conn_t *c = ud;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA: {
        grpc_call_t *call = stream_call(c, f->hd.stream_id);
        if (!call) break;
        if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
            call_headers_done(call);
        if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) call_remote_closed(call);
        break;
    }
    case NGHTTP2_PING:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK)) {
            /* gRPC keepalive enforcement: pings closer than the minimum (two hours with no
             * call unless permitted) are strikes; too many end the connection. */
            int64_t now = clock_now_ns(), min = c->srv->cfg->keepalive_min_time_ns;
            if (c->n_streams == 0 && !c->srv->cfg->keepalive_permit_without_calls)
                min = 7200LL * 1000000000LL;
            if (c->closing) break; /* told once already: no more lines, no more GOAWAYs */
            if (c->last_ping_ns && now - c->last_ping_ns < min &&
                ++c->ping_strikes > c->srv->cfg->max_ping_strikes) {
                server_count_limit(c->srv, "ping_flood");
                static const char dbg[] = "too_many_pings";
                log_warn("server", "GOAWAY ENHANCE_YOUR_CALM (too_many_pings) to %s", c->peer);
                nghttp2_submit_goaway(
                    c->h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->h2),
                    NGHTTP2_ENHANCE_YOUR_CALM, (const uint8_t *)dbg, sizeof dbg - 1);
                c->closing = 1;
            }
            c->last_ping_ns = now;
        } else if (c->goaway_stage == 1) {
            conn_goaway(
                c, 2); /* the notice's PING came back: every stream the client began is known */
        }
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)s;
    (void)flags;
    conn_t *c = ud;
    grpc_call_t *call = stream_call(c, id);
    if (call)
        call_data(call, data, len); /* gives the bytes back to the windows once processed */
    else
        nghttp2_session_consume(s, id, len); /* a refused or finished stream's: dropped */
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    conn_t *c = ud;
    if (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) {
        c->ping_strikes = 0; /* as gRPC core: sending data resets the ping policy */
        c->last_ping_ns = 0;
        grpc_call_t *call = stream_call(c, f->hd.stream_id);
        if (call && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && call->trailers_submitted)
            call_trailers_sent(call);
        if (call && f->hd.type == NGHTTP2_DATA) call_written(call);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *ud)
{
    conn_t *c = ud;
    grpc_call_t *call = nghttp2_session_get_stream_user_data(s, id);
    if (!call) return 0;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    c->n_streams--;
    server_conn_gauge(c->srv, 0, -1, 0);
    call_stream_closed(call, error_code);
    conn_touch(c);
    return 0;
}

static int on_invalid_frame(nghttp2_session *s, const nghttp2_frame *f, int err, void *ud)
{
    (void)s;
    conn_t *c = ud;
    log_debug("server", "invalid frame type %d from %s: %s", f->hd.type, c->peer,
              nghttp2_strerror(err));
    return 0;
}

int h2_session_start(conn_t *c)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb)) return -1;
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid_frame);
    if (nghttp2_option_new(&opt)) {
        nghttp2_session_callbacks_del(cb);
        return -1;
    }
    const config_t *cfg = c->srv->cfg;
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    nghttp2_option_set_max_send_header_block_length(opt, 16384);
    nghttp2_option_set_max_outbound_ack(opt, 1000); /* flood protection (PING/SETTINGS) */
    /* Windows open as the calls process their input (call_data), not as bytes arrive: a call
     * whose output waits for its client holds its input, and flow control stops the client. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    int rc = nghttp2_session_server_new2(&c->h2, cb, c, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rc) return -1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)cfg->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)cfg->initial_window_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)cfg->max_header_list_size},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0])) return -1;
    /* A connection-level window to match, so one stream can use its whole window. */
    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0,
                                          (int32_t)(cfg->initial_window_size * 4));
    return 0;
}

int h2_recv(conn_t *c, const unsigned char *data, size_t len)
{
    ssize_t n = nghttp2_session_mem_recv(c->h2, data, len);
    if (n < 0) {
        log_debug("server", "h2 error from %s: %s", c->peer, nghttp2_strerror((int)n));
        return -1;
    }
    return 0;
}

void h2_session_free(conn_t *c)
{
    if (!c->h2) return;
    /* nghttp2_session_del frees streams without callbacks: end their calls first. */
    grpc_call_t *call;
    while ((call = TAILQ_FIRST(&c->calls))) {
        nghttp2_session_set_stream_user_data(c->h2, call->stream_id, NULL);
        c->n_streams--;
        server_conn_gauge(c->srv, 0, -1, 0);
        call_stream_closed(call, NGHTTP2_CANCEL);
    }
    nghttp2_session_del(c->h2);
    c->h2 = NULL;
}
