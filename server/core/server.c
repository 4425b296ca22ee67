/* The server: listeners, the method table, metrics glue, shutdown stages and their hooks. */
#include <errno.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "metrics/inferd_metrics.h"
#include "metrics/metrics.h"
#include "server/base/log.h"
#include "server/core/conn.h"

/* Cached series of one method row (grpc_method_t.metrics). */
typedef struct method_metrics {
    metrics_series_t *started, *received, *sent, *handling;
    metrics_series_t *handled[GRPC_STATUS_COUNT];
} method_metrics_t;

static const char *grpc_type(grpc_kind_t k)
{
    switch (k) {
    case GRPC_UNARY:
        return INFERD_GRPC_UNARY;
    case GRPC_CLIENT_STREAMING:
        return INFERD_GRPC_CLIENT_STREAM;
    case GRPC_SERVER_STREAMING:
        return INFERD_GRPC_SERVER_STREAM;
    default:
        return INFERD_GRPC_BIDI_STREAM;
    }
}

int server_register(server_t *s, grpc_method_t *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (server_find_method(s, rows[i].path)) return -EEXIST;
        if (s->n_methods == s->cap_methods) {
            size_t cap = s->cap_methods ? s->cap_methods * 2 : 16;
            grpc_method_t **m = realloc(s->methods, cap * sizeof *m);
            if (!m) return -ENOMEM;
            s->methods = m;
            void **mms = realloc(s->method_metrics, cap * sizeof *mms);
            if (!mms) return -ENOMEM;
            s->method_metrics = mms;
            s->cap_methods = cap;
        }
        method_metrics_t *mm = calloc(1, sizeof *mm);
        if (!mm) return -ENOMEM;
        const char *lv[] = {rows[i].service, rows[i].name, grpc_type(rows[i].kind)};
        mm->started = metrics_series(s->m->grpc_started, lv);
        mm->received = metrics_series(s->m->grpc_msg_received, lv);
        mm->sent = metrics_series(s->m->grpc_msg_sent, lv);
        mm->handling = metrics_series(s->m->grpc_handling, lv);
        rows[i].metrics = mm;
        s->method_metrics[s->n_methods] = mm; /* freed from here: rows may be gone by then */
        s->methods[s->n_methods++] = &rows[i];
    }
    return 0;
}

grpc_method_t *server_find_method(server_t *s, const char *path)
{
    for (size_t i = 0; i < s->n_methods; i++)
        if (!strcmp(s->methods[i]->path, path)) return s->methods[i];
    return NULL;
}

size_t server_services(const server_t *s, const char **names, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_methods; i++) {
        const char *svc = s->methods[i]->service;
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = !strcmp(s->methods[j]->service, svc);
        if (seen) continue;
        if (n < cap) names[n] = svc;
        n++;
    }
    return n;
}

struct event_base *server_base(const server_t *s)
{
    return s->base;
}

struct inferd_metrics *server_metrics(const server_t *s)
{
    return s->m;
}

struct metrics_registry *server_registry(const server_t *s)
{
    return s->reg;
}

void server_close_connections(server_t *s)
{
    conn_t *c;
    while ((c = TAILQ_FIRST(&s->conns)))
        conn_close(c);
}

const struct config *server_config(const server_t *s)
{
    return s->cfg;
}

/* ---- metrics glue ---- */
void server_count_started(server_t *s, grpc_method_t *m)
{
    (void)s;
    m->stats.started++;
    metrics_inc(((method_metrics_t *)m->metrics)->started);
}

void server_count_msg(server_t *s, grpc_method_t *m, int sent)
{
    (void)s;
    method_metrics_t *mm = m->metrics;
    if (sent) {
        m->stats.msg_sent++;
        metrics_inc(mm->sent);
    } else {
        m->stats.msg_received++;
        metrics_inc(mm->received);
    }
}

void server_count_handled(server_t *s, grpc_call_t *c)
{
    grpc_method_t *m = c->method;
    method_metrics_t *mm = m->metrics;
    unsigned code =
        (unsigned)c->status < GRPC_STATUS_COUNT ? (unsigned)c->status : GRPC_STATUS_UNKNOWN;
    m->stats.handled[code]++;
    if (!mm->handled[code]) {
        const char *lv[] = {m->service, m->name, grpc_type(m->kind),
                            grpc_status_name((grpc_status_t)code)};
        mm->handled[code] = metrics_series(s->m->grpc_handled, lv);
    }
    metrics_inc(mm->handled[code]);
    double secs = (double)(clock_now_ns() - c->start_ns) / 1e9;
    metrics_observe(mm->handling, secs);
    access_log_call(s, c, secs, code);
}

void server_conn_gauge(server_t *s, int delta_active, int delta_streams, int new_conn)
{
    if (delta_active) metrics_add(s->m->connections_active_s, delta_active);
    if (delta_streams) metrics_add(s->m->http2_streams_active_s, delta_streams);
    if (new_conn) metrics_inc(s->m->connections_total_s);
}

/* ---- shutdown stages and their hooks ---- */
static int hook_add(server_hook_t **hooks, size_t *n, server_hook_fn fn, void *arg)
{
    server_hook_t *a = realloc(*hooks, (*n + 1) * sizeof *a);
    if (!a) return -ENOMEM;
    a[*n] = (server_hook_t){fn, arg};
    *hooks = a;
    (*n)++;
    return 0;
}

int server_on_drain(server_t *s, server_hook_fn fn, void *arg)
{
    return hook_add(&s->on_drain, &s->n_on_drain, fn, arg);
}

int server_on_stop(server_t *s, server_hook_fn fn, void *arg)
{
    return hook_add(&s->on_stop, &s->n_on_stop, fn, arg);
}

void server_flush_begin(server_t *s)
{
    s->flush_batch++;
}

void server_flush_end(server_t *s)
{
    if (--s->flush_batch > 0) return;
    conn_t *c;
    while ((c = TAILQ_FIRST(&s->held))) {
        TAILQ_REMOVE(&s->held, c, held_link);
        c->flush_held = 0;
        conn_flush(c);
    }
}

int server_draining(const server_t *s)
{
    return s->draining;
}

static void run_hooks(const server_hook_t *hooks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        hooks[i].fn(hooks[i].arg);
}

static void finish_shutdown(server_t *s)
{
    log_info("server", "shutdown complete");
    event_base_loopexit(s->base, NULL);
}

void server_conn_gone(server_t *s)
{
    if (s->stopping && s->n_conns == 0) finish_shutdown(s);
}

static void close_listeners(server_t *s)
{
    for (int i = 0; i < s->n_listeners; i++)
        if (s->listeners[i].ev) evconnlistener_disable(s->listeners[i].ev);
}

static void drain_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server_t *s = arg;
    log_warn("server", "drain timeout: closing %d connection(s) with streams still open",
             s->n_conns);
    conn_t *c;
    while ((c = TAILQ_FIRST(&s->conns)))
        conn_close(c);
    finish_shutdown(s);
}

/* Stage 2: final GOAWAY everywhere (connections whose PING came back have it already); Watch
 * streams end; what is in flight gets --drain-timeout. */
static void stage2(server_t *s)
{
    s->stopping = 1;
    run_hooks(s->on_stop, s->n_on_stop); /* long-lived streams (Watch) end before the GOAWAY */
    for (conn_t *c = TAILQ_FIRST(&s->conns), *n; c; c = n) {
        n = TAILQ_NEXT(c, link);
        conn_goaway(c, 2);
    }
    struct timeval tv = {(time_t)(s->cfg->drain_timeout_ns / 1000000000LL),
                         (suseconds_t)(s->cfg->drain_timeout_ns % 1000000000LL / 1000)};
    evtimer_add(s->drain_timer, &tv);
    server_conn_gone(s);
}

static void stage_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server_t *s = arg;
    if (s->stage == 1) {
        log_info("server", "draining: GOAWAY to %d connection(s)", s->n_conns);
        close_listeners(s);
        for (conn_t *c = TAILQ_FIRST(&s->conns), *n; c; c = n) {
            n = TAILQ_NEXT(c, link);
            conn_goaway(c, 1);
        }
        s->stage = 2;
        /* Clients get one round trip (the PING) to show their last streams; bounded. */
        struct timeval tv = {1, 0};
        evtimer_add(s->stage_timer, &tv);
    } else if (s->stage == 2) {
        s->stage = 3;
        stage2(s);
    }
}

static void begin_shutdown(server_t *s, const char *why)
{
    if (s->draining) {
        log_info("server", "%s again during shutdown; still draining", why);
        return;
    }
    s->draining = 1;
    log_info("server", "%s: health NOT_SERVING, GOAWAY in %.3fs", why,
             (double)s->cfg->shutdown_delay_ns / 1e9);
    run_hooks(s->on_drain, s->n_on_drain);
    s->stage = 1;
    struct timeval tv = {(time_t)(s->cfg->shutdown_delay_ns / 1000000000LL),
                         (suseconds_t)(s->cfg->shutdown_delay_ns % 1000000000LL / 1000)};
    evtimer_add(s->stage_timer, &tv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    begin_shutdown(arg, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- listeners ---- */
static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    listener_t *lst = arg;
    (void)l;
    conn_accept(lst->srv, lst, fd, sa, salen);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    (void)l;
    (void)arg;
    int e = EVUTIL_SOCKET_ERROR();
    log_warn("server", "accept failed: %s", evutil_socket_error_to_string(e));
}

static int listen_on(server_t *s, const char *host, int port, int role, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    int sl;
    char spec[128];
    const char *ip = !strcmp(host, "localhost") ? "127.0.0.1" : host;
    snprintf(spec, sizeof spec, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (evutil_inet_pton(AF_INET, ip, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        sl = sizeof *in4;
    } else if (evutil_inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        sl = sizeof *in6;
    } else {
        snprintf(err, errlen, "invalid address %s for --%s", spec, role ? "system-host" : "listen");
        return -EINVAL;
    }
    listener_t *l = &s->listeners[s->n_listeners];
    l->srv = s;
    l->role = role;
    /* The main listener with TLS is TLS only unless the operator opted in to plaintext; the
     * system listener answers plaintext (kubelet probes and Prometheus do not present client
     * certificates) and serves only its scope. */
    l->require_tls = !role && s->ssl_ctx && !s->cfg->tls_allow_plaintext;
    l->scope = role ? s->system_scope : s->main_scope;
    l->ev =
        evconnlistener_new_bind(s->base, accept_cb, l, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                1024, (struct sockaddr *)&ss, sl);
    if (!l->ev) {
        int e = errno;
        snprintf(err, errlen, "cannot listen on %s (--%s): %s", spec,
                 role ? "system-port" : "listen", strerror(e));
        return -e;
    }
    evconnlistener_set_error_cb(l->ev, accept_error_cb);
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    getsockname(evconnlistener_get_fd(l->ev), (struct sockaddr *)&bound, &bl);
    l->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    snprintf(l->addr, sizeof l->addr, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, l->port);
    s->n_listeners++;
    const char *fields[] = {"address", l->addr, "role", role ? "system" : "grpc", NULL};
    if (log_enabled(LOG_INFO, "server"))
        log_write(LOG_INFO, "server", fields, "listening on %s (%s)", l->addr,
                  role ? "system" : "grpc");
    return 0;
}

/* ---- life cycle ---- */
int server_new(server_t **out, const server_options_t *opt, char *err, size_t errlen)
{
    *out = NULL;
    const config_t *cfg = opt->cfg;
    int rc = -ENOMEM;
    server_t *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->cfg = opt->cfg;
    s->reg = opt->reg;
    s->m = opt->m;
    s->main_scope = opt->main_scope;
    s->system_scope = opt->system_scope;
    s->start_ns = clock_now_ns();
    trace_rng_init(&s->rng);
    TAILQ_INIT(&s->conns);
    TAILQ_INIT(&s->held);
    s->base = opt->base;
    if (http_metrics_route_add(s)) goto oom;
    if (cfg->tls_cert && (rc = tls_context_new(&s->ssl_ctx, cfg, err, errlen))) goto fail;
    if (s->ssl_ctx && cfg->tls_allow_plaintext)
        log_warn("server",
                 "--tls-allow-plaintext: plaintext clients on %s are served without TLS "
                 "or client certificates",
                 cfg->listen);
    char host[128];
    int port;
    config_split_hostport(cfg->listen, host, sizeof host, &port);
    if ((rc = listen_on(s, host, port, 0, err, errlen))) goto fail;
    if (cfg->system_port >= 0 &&
        (rc = listen_on(s, cfg->system_host, cfg->system_port, 1, err, errlen)))
        goto fail;
    rc = -ENOMEM;
    s->sig_term = evsignal_new(s->base, SIGTERM, signal_cb, s);
    s->sig_int = evsignal_new(s->base, SIGINT, signal_cb, s);
    s->stage_timer = evtimer_new(s->base, stage_cb, s);
    s->drain_timer = evtimer_new(s->base, drain_timeout_cb, s);
    if (!s->sig_term || !s->sig_int || !s->stage_timer || !s->drain_timer) goto oom;
    event_add(s->sig_term, NULL);
    event_add(s->sig_int, NULL);
    *out = s;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    server_free(s);
    return rc;
}

int server_run(server_t *s)
{
    event_base_dispatch(s->base);
    return s->exit_code;
}

int server_port(const server_t *s, int listener)
{
    for (int i = 0; i < s->n_listeners; i++)
        if (s->listeners[i].role == listener) return s->listeners[i].port;
    return -1;
}

void server_free(server_t *s)
{
    if (!s) return;
    server_close_connections(s);
    offload_wait(s);
    for (int i = 0; i < s->n_listeners; i++)
        evconnlistener_free(s->listeners[i].ev);
    if (s->sig_term) event_free(s->sig_term);
    if (s->sig_int) event_free(s->sig_int);
    if (s->stage_timer) event_free(s->stage_timer);
    if (s->drain_timer) event_free(s->drain_timer);
    for (size_t i = 0; i < s->n_methods; i++)
        free(s->method_metrics[i]);
    free(s->method_metrics);
    free(s->methods);
    free(s->routes);
    free(s->on_drain);
    free(s->on_stop);
    if (s->ssl_ctx) SSL_CTX_free(s->ssl_ctx);
    free(s);
}
