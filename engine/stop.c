/*
 * stop.c - stop strings over streamed text. Generated text arrives a token's piece at a
 * time; a stop string can straddle any number of pieces. The matcher keeps a window of the
 * text not yet released: it releases everything except the longest suffix that is still a
 * prefix of some stop string (so at most longest - 1 bytes are ever held), and on a full
 * match it releases the text before the match and reports the hit.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int stop_validate(const char *const *strs, size_t n, char *err, size_t errlen)
{
    if (n > STOP_MAX_STRINGS)
        return errorf(err, errlen, -EINVAL, "%zu stop strings given, at most %d allowed", n,
                      STOP_MAX_STRINGS);
    for (size_t i = 0; i < n; i++) {
        size_t len = strs[i] ? strlen(strs[i]) : 0;
        if (len == 0) return errorf(err, errlen, -EINVAL, "stop string %zu is empty", i);
        if ((unsigned char)strs[i][0] >= 0x80 && (unsigned char)strs[i][0] < 0xC0)
            return errorf(err, errlen, -EINVAL, "stop string %zu starts inside a UTF-8 character",
                          i);
        if (len > STOP_MAX_BYTES)
            return errorf(err, errlen, -EINVAL, "stop string %zu is %zu bytes, at most %d allowed",
                          i, len, STOP_MAX_BYTES);
    }
    return 0;
}

int stop_init(stop_t *s, const char *const *strs, size_t n, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    int rc = stop_validate(strs, n, err, errlen);
    if (rc < 0) return rc;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += strlen(strs[i]);
    s->strs = malloc(total ? total : 1);
    if (!s->strs) return errorf(err, errlen, -ENOMEM, "out of memory");
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(strs[i]);
        memcpy(s->strs + at, strs[i], len);
        s->off[i] = (uint32_t)at;
        s->len[i] = (uint16_t)len;
        if ((int)len > s->longest) s->longest = (int)len;
        at += len;
    }
    s->n = (int)n;
    return 0;
}

void stop_dispose(stop_t *s)
{
    free(s->strs);
    memset(s, 0, sizeof(*s));
}

/* Length of the longest suffix of w[0..n) that is a proper prefix of some stop string. */
static size_t partial_suffix(const stop_t *s, const char *w, size_t n)
{
    size_t best = 0;
    for (int i = 0; i < s->n; i++) {
        size_t L = s->len[i];
        size_t k = n < L - 1 ? n : L - 1;
        for (; k > best; k--) {
            if (!memcmp(w + n - k, s->strs + s->off[i], k)) {
                best = k;
                break;
            }
        }
    }
    return best;
}

size_t stop_feed(stop_t *s, const char *text, size_t len, char *out, size_t cap)
{
    if (s->hit || s->n == 0) {
        if (s->hit) return 0;
        size_t k = len < cap ? len : cap;
        memcpy(out, text, k);
        return k;
    }
    size_t w = 0;
    /* The window is held + text; text is taken a chunk at a time so the window stays within
     * held[] + one chunk. */
    while (len > 0) {
        char win[2 * STOP_MAX_BYTES];
        size_t take = len < STOP_MAX_BYTES ? len : STOP_MAX_BYTES;
        size_t wn = (size_t)s->nheld + take;
        memcpy(win, s->held, (size_t)s->nheld);
        memcpy(win + s->nheld, text, take);
        text += take;
        len -= take;
        /* the match that completes first wins (then the one starting first): the result does
         * not depend on how the text was cut into pieces */
        size_t first = wn, end = (size_t)-1;
        for (int i = 0; i < s->n; i++) {
            const char *hit = memmem(win, wn, s->strs + s->off[i], s->len[i]);
            if (!hit) continue;
            size_t at = (size_t)(hit - win), e = at + s->len[i];
            if (e < end || (e == end && at < first)) first = at, end = e;
        }
        if (first < wn) {
            if (w + first <= cap) memcpy(out + w, win, first);
            w += first;
            s->nheld = 0;
            s->hit = true;
            return w;
        }
        size_t keep = partial_suffix(s, win, wn);
        size_t emit = wn - keep;
        if (w + emit <= cap) memcpy(out + w, win, emit);
        w += emit;
        memmove(s->held, win + emit, keep);
        s->nheld = (int)keep;
    }
    return w;
}

size_t stop_flush(stop_t *s, char *out, size_t cap)
{
    size_t k = (size_t)s->nheld <= cap ? (size_t)s->nheld : cap;
    memcpy(out, s->held, k);
    s->nheld = 0;
    return k;
}
