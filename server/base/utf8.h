/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past U+10FFFF. One
 * decoder for everything that must tell valid text from bytes: the logger's escaping, the
 * wire check of request strings, the JSON the OpenAI API and /health write. */
#ifndef INFERD_BASE_UTF8_H
#define INFERD_BASE_UTF8_H

#include <stddef.h>
#include <stdint.h>

/** Length of the valid UTF-8 sequence at p (n >= 1 bytes left): 1 for ASCII (NUL included),
 * 2-4 for a multi-byte character, 0 when the bytes there are not valid UTF-8. */
static inline size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    if (c < 0x80) return 1;
    size_t k;
    uint32_t min;
    if (c >= 0xC2 && c <= 0xDF)
        k = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        k = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        k = 4, min = 0x10000;
    else
        return 0;
    if (n < k) return 0;
    uint32_t cp = c & (0x7Fu >> k);
    for (size_t i = 1; i < k; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return k;
}

#endif
