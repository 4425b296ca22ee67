/* wmap: a model file mapped at a huge-page-aligned address, and its copy into transparent
 * huge pages in place (see wmap.h). */
#include "wmap.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* len bytes of fresh address space at a WMAP_HUGE boundary (prot, anonymous). */
static uint8_t *reserve_aligned(size_t len, int prot)
{
    uint8_t *r =
        mmap(NULL, len + WMAP_HUGE, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED) return NULL;
    uint8_t *a = (uint8_t *)(((uintptr_t)r + WMAP_HUGE - 1) & ~(uintptr_t)(WMAP_HUGE - 1));
    if (a > r) munmap(r, (size_t)(a - r));
    size_t tail = (size_t)(r + len + WMAP_HUGE - (a + len));
    if (tail) munmap(a + len, tail);
    return a;
}

void wmap_close(wmap_t *w)
{
    if (w->base) munmap(w->base, w->len);
    if (w->base && w->fd >= 0) close(w->fd);
    memset(w, 0, sizeof(*w));
    w->fd = -1;
}

int wmap_open(wmap_t *w, const char *path, const char *what, char *err, size_t errlen)
{
    memset(w, 0, sizeof(*w));
    w->fd = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return errorf(err, errlen, -e, "cannot open %s%s: %s", what, path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return errorf(err, errlen, -EINVAL, "%s%s is not a regular file", what, path);
    }
    size_t size = (size_t)st.st_size;
    if (size < 8) {
        close(fd);
        return errorf(err, errlen, -EINVAL, "%s%s: truncated: %zu bytes", what, path, size);
    }
    if ((uint64_t)st.st_size > SIZE_MAX / 2) {
        close(fd);
        return errorf(err, errlen, -EFBIG, "%s%s: %jd bytes cannot be mapped", what, path,
                      (intmax_t)st.st_size);
    }
    size_t len = (size + WMAP_HUGE - 1) & ~(WMAP_HUGE - 1);
    uint8_t *a = reserve_aligned(len, PROT_NONE);
    if (!a || mmap(a, size, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0) == MAP_FAILED) {
        int e = errno;
        if (a) munmap(a, len);
        close(fd);
        return errorf(err, errlen, -e, "cannot mmap %s%s: %s", what, path, strerror(e));
    }
    *w = (wmap_t){.base = a, .size = size, .len = len, .fd = fd, .huge = 0};
    return 0;
}

int wmap_hugepages(wmap_t *w, char *err, size_t errlen)
{
    if (!w->base || w->huge) return 0;
    if (w->fd < 0) return errorf(err, errlen, -EBADF, "the model file is closed");
    uint8_t *a = reserve_aligned(w->len, PROT_READ | PROT_WRITE);
    if (!a) return errorf(err, errlen, -ENOMEM, "cannot allocate %zu bytes", w->len);
    int rc = 0;
    if (madvise(a, w->len, MADV_HUGEPAGE) < 0)
        rc = errorf(err, errlen, -errno, "madvise(MADV_HUGEPAGE): %s", strerror(errno));
    for (size_t off = 0; rc == 0 && off < w->size;) {
        size_t want = w->size - off < ((size_t)1 << 30) ? w->size - off : (size_t)1 << 30;
        ssize_t n = pread(w->fd, a + off, want, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
            rc = errorf(err, errlen, -errno, "cannot read the model file: %s", strerror(errno));
        else if (n == 0)
            rc = errorf(err, errlen, -EIO, "the model file shrank to %zu bytes while loading", off);
        else
            off += (size_t)n;
    }
    struct stat st;
    if (rc == 0 && (fstat(w->fd, &st) < 0 || (size_t)st.st_size != w->size))
        rc = errorf(err, errlen, -EIO, "the model file changed size while loading");
    if (rc == 0 && mprotect(a, w->len, PROT_READ) < 0)
        rc = errorf(err, errlen, -errno, "mprotect: %s", strerror(errno));
    if (rc == 0 && mremap(a, w->len, w->len, MREMAP_MAYMOVE | MREMAP_FIXED, w->base) == MAP_FAILED)
        rc = errorf(err, errlen, -errno, "mremap: %s", strerror(errno));
    if (rc < 0) {
        munmap(a, w->len);
        return rc;
    }
    close(w->fd);
    w->fd = -1;
    w->huge = 1;
    w->huge_bytes = wmap_huge_bytes(w->base, w->size);
    return 0;
}

size_t wmap_huge_bytes(const void *addr, size_t cap)
{
    FILE *f = fopen("/proc/self/smaps", "re");
    if (!f) return 0;
    char line[512];
    int in = 0;
    size_t kb = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) { /* a mapping's first line */
            if (in) break;
            in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
        } else if (in && !strncmp(line, "AnonHugePages:", 14)) {
            kb = strtoul(line + 14, NULL, 10);
        }
    }
    fclose(f);
    return kb * 1024 < cap ? kb * 1024 : cap;
}

int wmap_thp_enabled(const char *text)
{
    const char *l = text ? strchr(text, '[') : NULL;
    const char *r = l ? strchr(l, ']') : NULL;
    if (!r) return 0;
    size_t n = (size_t)(r - l - 1);
    return (n == 6 && !strncmp(l + 1, "always", 6)) || (n == 7 && !strncmp(l + 1, "madvise", 7));
}

int wmap_thp_available(char *why, size_t whylen)
{
    const char *path = "/sys/kernel/mm/transparent_hugepage/enabled";
    char text[128] = "";
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(why, whylen, "the kernel has no transparent huge pages (%s: %s)", path,
                 strerror(errno));
        return 0;
    }
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    text[strcspn(text, "\n")] = 0;
    if (wmap_thp_enabled(text)) return 1;
    snprintf(why, whylen, "transparent huge pages are off (%s: %s)", path, text);
    return 0;
}
