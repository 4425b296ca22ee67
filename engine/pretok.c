/*
 * pretok.c - the pre-tokenizers of byte-level BPE vocabularies, split by hand the way
 * llama.cpp's unicode.cpp does (its custom splitters, and its std::regex fallback for the
 * "default" and "smollm" expressions), so that words come out exactly as llama.cpp cuts them.
 * Unicode categories come from utf8proc; \s is the Unicode White_Space property.
 *
 * Every splitter refines a list of fragments (codepoint ranges) into smaller ones: a regex
 * split keeps both its matches and the text between them, as llama.cpp does.
 */
#include "tokenizer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

enum {
    F_IN = 1 << 0, /* inside the current fragment: every real codepoint has it */
    F_LETTER = 1 << 1,
    F_NUMBER = 1 << 2,
    F_PUNCT = 1 << 3,
    F_SPACE = 1 << 4,
};

#define OOR 0xFFFFFFFFu /* codepoint outside the fragment */

/* The Unicode White_Space property (what llama.cpp's unicode_set_whitespace holds). */
static bool is_white_space(uint32_t c)
{
    switch (c) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
        return true;
    default:
        return c >= 0x2000 && c <= 0x200A;
    }
}

static uint8_t cpt_flags(uint32_t c)
{
    uint8_t f = F_IN;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        f |= F_LETTER;
        break;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        f |= F_NUMBER;
        break;
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
        f |= F_PUNCT;
        break;
    default:
        break;
    }
    if (is_white_space(c)) f |= F_SPACE;
    return f;
}

/* llama.cpp's lenient decoder: a bad sequence yields U+FFFD and skips ONE byte; overlong
 * forms and surrogates are accepted as they decode. Returns the codepoint count. */
static size_t decode(const unsigned char *s, size_t n, uint32_t *out)
{
    size_t i = 0, k = 0;
    while (i < n) {
        unsigned char c = s[i];
        uint32_t cp;
        size_t need;
        if (c < 0x80) {
            out[k++] = c;
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            need = 2, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            need = 3, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            need = 4, cp = c & 0x07;
        } else {
            out[k++] = 0xFFFD;
            i++;
            continue;
        }
        bool ok = i + need <= n;
        for (size_t j = 1; ok && j < need; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                ok = false;
            else
                cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        /* codepoints above U+10FFFF cannot be re-encoded: llama.cpp would throw on them */
        if (!ok || cp > 0x10FFFF) {
            out[k++] = 0xFFFD;
            i++;
            continue;
        }
        out[k++] = cp;
        i += need;
    }
    return k;
}

size_t utf8_put(uint32_t c, char *o)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* A list of fragment lengths (in codepoints); each pass reads one list and writes another. */
typedef struct {
    size_t *v;
    size_t n, cap;
} lens_t;

static int lens_push(lens_t *l, size_t x)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        size_t *nv = realloc(l->v, nc * sizeof(*nv));
        if (!nv) return -ENOMEM;
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = x;
    return 0;
}

/* One splitter's view of one fragment [a, b). */
typedef struct {
    const uint32_t *cp;
    const uint8_t *fl;
    size_t a, b, prev;
    lens_t *out;
    int rc;
} frag_t;

static uint32_t cp_at(const frag_t *f, size_t p)
{
    return p >= f->a && p < f->b ? f->cp[p] : OOR;
}

static uint8_t fl_at(const frag_t *f, size_t p)
{
    return p >= f->a && p < f->b ? f->fl[p] : 0;
}

/* Cut a word ending at `end`; returns the new position. */
static size_t cut(frag_t *f, size_t end)
{
    if (end > f->prev && lens_push(f->out, end - f->prev) < 0) f->rc = -ENOMEM;
    f->prev = end;
    return end;
}

static uint32_t lower(uint32_t c)
{
    return c == OOR ? c : (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
}

/* 's|'t|'re|'ve|'m|'ll|'d, case-insensitive when ci; returns the match length or 0. */
static size_t contraction(const frag_t *f, size_t pos, bool ci)
{
    if (cp_at(f, pos) != '\'' || pos + 1 >= f->b) return 0;
    uint32_t n1 = cp_at(f, pos + 1);
    if (ci) n1 = lower(n1);
    if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') return 2;
    if (pos + 2 < f->b) {
        uint32_t n2 = cp_at(f, pos + 2);
        if (ci) n2 = lower(n2);
        if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l'))
            return 3;
    }
    return 0;
}

/* Whitespace tail shared by all three splitters: \s+(?!\S) then \s+. */
static size_t spaces(frag_t *f, size_t pos)
{
    size_t nws = 0;
    while (fl_at(f, pos + nws) & F_SPACE)
        nws++;
    if (nws > 1 && cp_at(f, pos + nws) != OOR) return cut(f, pos + nws - 1);
    if (nws > 0) return cut(f, pos + nws);
    return cut(f, pos + 1); /* no match: one codepoint alone */
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S) */
static void split_gpt2(frag_t *f)
{
    size_t pos = f->a;
    while (pos < f->b) {
        uint32_t c = cp_at(f, pos);
        size_t k = contraction(f, pos, false);
        if (k) {
            pos = cut(f, pos + k);
            continue;
        }
        uint8_t f2 = c == ' ' ? fl_at(f, pos + 1) : fl_at(f, pos);
        if (f2 & (F_LETTER | F_NUMBER)) {
            uint8_t cls = f2 & F_LETTER ? F_LETTER : F_NUMBER;
            pos += c == ' ';
            while (fl_at(f, pos) & cls)
                pos++;
            pos = cut(f, pos);
            continue;
        }
        if (!(f2 & (F_SPACE | F_LETTER | F_NUMBER)) && f2) {
            pos += c == ' ';
            for (uint8_t g = fl_at(f, pos); !(g & (F_SPACE | F_LETTER | F_NUMBER)) && g;
                 g = fl_at(f, pos))
                pos++;
            pos = cut(f, pos);
            continue;
        }
        pos = spaces(f, pos);
    }
}

/* Llama 3 (max_digits 3) and Qwen 2 (max_digits 1):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 * \s*[\r\n]+|\s+(?!\S)|\s+ */
static void split_llama3(frag_t *f, size_t max_digits)
{
    size_t pos = f->a;
    while (pos < f->b) {
        uint32_t c = cp_at(f, pos);
        uint8_t fl = fl_at(f, pos);
        size_t k = contraction(f, pos, true);
        if (k) {
            pos = cut(f, pos + k);
            continue;
        }
        if (!(c == '\r' || c == '\n' || (fl & F_NUMBER)) &&
            ((fl & F_LETTER) || (fl_at(f, pos + 1) & F_LETTER))) {
            pos++;
            while (fl_at(f, pos) & F_LETTER)
                pos++;
            pos = cut(f, pos);
            continue;
        }
        if (fl & F_NUMBER) {
            size_t ini = pos;
            while (fl_at(f, pos) & F_NUMBER) {
                if (++pos - ini >= max_digits) {
                    cut(f, pos);
                    ini = pos;
                }
            }
            pos = cut(f, pos);
            continue;
        }
        uint8_t f2 = c == ' ' ? fl_at(f, pos + 1) : fl;
        if (!(f2 & (F_SPACE | F_LETTER | F_NUMBER)) && fl) {
            pos += c == ' ';
            for (uint8_t g = fl_at(f, pos); !(g & (F_SPACE | F_LETTER | F_NUMBER)) && g;
                 g = fl_at(f, pos))
                pos++;
            for (uint32_t c2 = cp_at(f, pos); c2 == '\r' || c2 == '\n'; c2 = cp_at(f, pos))
                pos++;
            pos = cut(f, pos);
            continue;
        }
        size_t nws = 0, last_rn = 0;
        while (fl_at(f, pos + nws) & F_SPACE) {
            uint32_t c2 = cp_at(f, pos + nws);
            if (c2 == '\r' || c2 == '\n') last_rn = pos + nws + 1;
            nws++;
        }
        if (last_rn > 0) {
            pos = cut(f, last_rn);
            continue;
        }
        pos = spaces(f, pos);
    }
}

/* Regex-style splitters used through llama.cpp's std::regex path: a run (or one codepoint)
 * of a class is a match; text between matches stays a fragment of its own. */
typedef enum {
    RX_PUNCT_RUN,  /* [\p{P}\$\+<=>\^~\|]+ */
    RX_NUMBER_RUN, /* \p{N}+ */
    RX_NUMBER_ONE, /* \p{N} */
    RX_DIGIT3,     /* [0-9][0-9][0-9] */
} rx_t;

static bool rx_class(rx_t rx, uint32_t c, uint8_t fl)
{
    switch (rx) {
    case RX_PUNCT_RUN:
        /* llama.cpp matches this on a "collapsed" text where every non-ASCII punctuation
         * codepoint is one class byte and ASCII keeps its own; the same set results */
        return (fl & F_PUNCT) || c == '$' || c == '+' || c == '<' || c == '=' || c == '>' ||
               c == '^' || c == '~' || c == '|';
    case RX_NUMBER_RUN:
    case RX_NUMBER_ONE:
        return fl & F_NUMBER;
    case RX_DIGIT3:
        return c >= '0' && c <= '9';
    }
    return false;
}

static void split_rx(frag_t *f, rx_t rx)
{
    size_t pos = f->a;
    while (pos < f->b) {
        if (!rx_class(rx, f->cp[pos], f->fl[pos])) {
            pos++;
            continue;
        }
        size_t end = pos + 1;
        if (rx == RX_PUNCT_RUN || rx == RX_NUMBER_RUN) {
            while (end < f->b && rx_class(rx, f->cp[end], f->fl[end]))
                end++;
        } else if (rx == RX_DIGIT3) {
            if (end + 2 > f->b || !rx_class(rx, f->cp[end], 0) ||
                !rx_class(rx, f->cp[end + 1], 0)) {
                pos++;
                continue;
            }
            end += 2;
        }
        cut(f, pos); /* the text before the match */
        pos = cut(f, end);
    }
    cut(f, f->b);
}

typedef enum { SP_GPT2, SP_LLAMA3, SP_QWEN2, SP_RX } sp_kind_t;

static int run_pass(const uint32_t *cp, const uint8_t *fl, const lens_t *in, lens_t *out,
                    sp_kind_t kind, rx_t rx)
{
    size_t start = 0;
    out->n = 0;
    for (size_t i = 0; i < in->n; i++) {
        frag_t f = {cp, fl, start, start + in->v[i], start, out, 0};
        switch (kind) {
        case SP_GPT2:
            split_gpt2(&f);
            break;
        case SP_LLAMA3:
            split_llama3(&f, 3);
            break;
        case SP_QWEN2:
            split_llama3(&f, 1);
            break;
        case SP_RX:
            split_rx(&f, rx);
            break;
        }
        if (f.rc < 0) return f.rc;
        start += in->v[i];
    }
    return 0;
}

int pretok_split(tok_pre_t pre, const char *text, size_t len, char **words, size_t **ends,
                 size_t *n)
{
    int rc = -ENOMEM;
    uint32_t *cp = malloc((len ? len : 1) * sizeof(*cp)); /* (codepoints <= bytes) */
    uint8_t *fl = NULL;
    lens_t a = {0}, b = {0};
    char *w = NULL;
    size_t *e = NULL;
    *words = NULL;
    *ends = NULL;
    *n = 0;
    if (!cp) goto out;
    size_t ncp = decode((const unsigned char *)text, len, cp);
    fl = malloc(ncp ? ncp : 1);
    if (!fl) goto out;
    for (size_t i = 0; i < ncp; i++)
        fl[i] = cpt_flags(cp[i]);
    if (ncp && lens_push(&a, ncp) < 0) goto out;

    /* the passes llama.cpp runs for each pre-tokenizer, in order */
    struct {
        sp_kind_t k;
        rx_t rx;
    } passes[4];
    int np = 0;
    switch (pre) {
    case TOK_PRE_LLAMA3:
        passes[np++].k = SP_LLAMA3;
        break;
    case TOK_PRE_QWEN2:
        passes[np++].k = SP_QWEN2;
        break;
    case TOK_PRE_SMOLLM:
        passes[np].k = SP_RX, passes[np++].rx = RX_NUMBER_ONE;
        passes[np++].k = SP_GPT2;
        break;
    case TOK_PRE_GPT2:
        passes[np++].k = SP_GPT2;
        break;
    case TOK_PRE_DEFAULT:
    default:
        passes[np].k = SP_RX, passes[np++].rx = RX_PUNCT_RUN;
        passes[np++].k = SP_GPT2;
        passes[np].k = SP_RX, passes[np++].rx = RX_NUMBER_RUN;
        passes[np].k = SP_RX, passes[np++].rx = RX_DIGIT3;
        break;
    }
    for (int i = 0; i < np && a.n; i++) {
        if ((rc = run_pass(cp, fl, &a, &b, passes[i].k, passes[i].rx)) < 0) goto out;
        lens_t t = a;
        a = b;
        b = t;
    }
    rc = -ENOMEM;
    w = malloc(ncp * 4 + 1);
    e = malloc((a.n ? a.n : 1) * sizeof(*e));
    if (!w || !e) goto out;
    size_t at = 0, k = 0;
    for (size_t i = 0; i < a.n; i++) {
        for (size_t j = 0; j < a.v[i]; j++)
            at += utf8_put(cp[k + j], w + at);
        k += a.v[i];
        e[i] = at;
    }
    *words = w;
    *ends = e;
    *n = a.n;
    w = NULL;
    e = NULL;
    rc = 0;
out:
    free(cp);
    free(fl);
    free(a.v);
    free(b.v);
    free(w);
    free(e);
    return rc;
}
