/* Compression off the loop: a large /metrics body is gzipped on a helper thread and the
 * response completes on the loop (event_active), so a scrape of many series does not hold
 * every other connection for the tens of milliseconds deflate takes. One job per server at a
 * time (scrapes are seconds apart); a second one meanwhile is compressed inline. */
#include <pthread.h>
#include <stdlib.h>

#include "server/core/conn.h"

struct offload {
    server_t *srv;
    struct event *ev;
    pthread_t thread;
    http_response_t r;
    unsigned char *z;
    size_t zl;
    int rc;
    offload_done_fn done;
    void *owner; /* NULL once abandoned */
};

static void *work(void *arg)
{
    offload_t *o = arg;
    o->rc =
        gzip_compress_level(o->r.body, o->r.len, 1, &o->z, &o->zl); /* as fast as deflate goes */
    event_active(o->ev, EV_READ, 0);
    return NULL;
}

static void apply(http_response_t *r, unsigned char *z, size_t zl)
{
    free(r->body);
    r->body = (char *)z;
    r->len = zl;
    r->content_encoding = "gzip";
}

static void finished(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    offload_t *o = arg;
    server_t *s = o->srv;
    pthread_join(o->thread, NULL);
    s->offload = NULL;
    if (o->rc == 0) apply(&o->r, o->z, o->zl);
    if (o->owner) o->done(o->owner, &o->r); /* sent uncompressed if deflate failed */
    http_response_dispose(&o->r);
    event_free(o->ev);
    free(o);
}

offload_t *offload_gzip(server_t *s, http_response_t *r, offload_done_fn done, void *owner)
{
    if (!s->offload) {
        offload_t *o = calloc(1, sizeof *o);
        if (o) {
            o->srv = s;
            o->r = *r;
            o->done = done;
            o->owner = owner;
            o->ev = event_new(s->base, -1, 0, finished, o);
            if (o->ev && pthread_create(&o->thread, NULL, work, o) == 0) {
                s->offload = o;
                r->body = NULL;
                return o;
            }
            if (o->ev) event_free(o->ev);
            free(o);
        }
    }
    unsigned char *z;
    size_t zl;
    if (gzip_compress_level(r->body, r->len, 1, &z, &zl) == 0) apply(r, z, zl);
    return NULL;
}

void offload_abandon(offload_t *o)
{
    o->owner = NULL;
}

void offload_wait(server_t *s)
{
    offload_t *o = s->offload;
    if (!o) return;
    pthread_join(o->thread, NULL);
    s->offload = NULL;
    free(o->z);
    http_response_dispose(&o->r);
    event_free(o->ev);
    free(o);
}
