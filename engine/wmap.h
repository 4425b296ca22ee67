/*
 * wmap: a model file's bytes as the engine holds them.
 *
 * wmap_open() maps the file read-only at an address aligned to WMAP_HUGE (2 MiB) and
 * reserves (PROT_NONE) the rest of its last 2 MiB. wmap_hugepages() can then replace the
 * mapping, at the same address, by a private copy in transparent huge pages: every pointer
 * into the bytes (tensors, metadata strings) stays valid. Decode reads every weight once per
 * token; with 4 KiB pages that is a TLB miss (a page walk, two-level in a VM) every 4 KiB,
 * with huge pages one every 2 MiB (tools/bench/RESULTS.md measures what it gives). A regular
 * file's page cache has 4 KiB pages, hence the copy: anonymous memory advised
 * MADV_HUGEPAGE, filled by pread (never through the mapping, so the resident set never
 * holds both), made read-only and moved over the mapping by mremap, which keeps aligned huge
 * pages whole. Without transparent huge pages in the kernel the copy is pointless:
 * wmap_thp_available() says whether it would get them.
 */
#ifndef INFERD_ENGINE_WMAP_H
#define INFERD_ENGINE_WMAP_H

#include <stddef.h>
#include <stdint.h>

#define WMAP_HUGE ((size_t)2 << 20)

typedef struct {
    uint8_t *base;     /* the file's bytes; NULL when not open */
    size_t size;       /* file size */
    size_t len;        /* bytes reserved at base: size rounded up to WMAP_HUGE */
    int fd;            /* the file, kept open for wmap_hugepages(); -1 once copied */
    int huge;          /* 1: the bytes are a private copy advised MADV_HUGEPAGE */
    size_t huge_bytes; /* of them, what the kernel put in huge pages when copied
                          (/proc/self/smaps' AnonHugePages; 0 when unreadable) */
} wmap_t;

/** Maps path (a regular file of at least 8 bytes). Errors name the file; `what` prefixes
 *  it ("model " or ""). On error *w is closed (base NULL). */
int wmap_open(wmap_t *w, const char *path, const char *what, char *err, size_t errlen);

/** Replaces the mapping by a private copy in huge pages (same address, same bytes). On
 *  error the mapping is unchanged and still valid. Idempotent. */
int wmap_hugepages(wmap_t *w, char *err, size_t errlen);

/** AnonHugePages, in bytes, that /proc/self/smaps reports for the mapping holding addr, at
 *  most `cap`; 0 when it cannot be read. */
size_t wmap_huge_bytes(const void *addr, size_t cap);

/** Unmaps (and closes) w; safe on a closed or zeroed-then-closed wmap_t. */
void wmap_close(wmap_t *w);

/** The text of /sys/kernel/mm/transparent_hugepage/enabled ("always [madvise] never"): 1
 *  when the selected mode gives madvise(MADV_HUGEPAGE) memory huge pages ([always] or
 *  [madvise]), 0 otherwise (never, or text without a selected mode). */
int wmap_thp_enabled(const char *text);

/** Reads that file: 1 when huge pages are available, else 0 with why set (the mode, or
 *  that the kernel has no transparent huge pages). */
int wmap_thp_available(char *why, size_t whylen);

#endif
