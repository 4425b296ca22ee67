/* Server reflection: an index over the embedded FileDescriptorSet and the ServerReflectionInfo
 * handler. The set is decoded with protoc-c code generated at build time from Debian's
 * google/protobuf/descriptor.proto (proto/descriptor/), never by hand, except for one bounded
 * pre-scan: protobuf-c's unpacker recurses once per nested message without a limit, so a few KiB
 * of hostile nesting would overflow the stack before it could fail. */
#include "server/services/reflection.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "server/core/server.h"

#define MAX_SET_BYTES (64u << 20)
#define MAX_DEPTH 100
/* Service names listed from the stack before falling back to the heap. */
#define SERVICES_ON_STACK 64

typedef enum { SYM_PACKAGE, SYM_MESSAGE, SYM_ENUM, SYM_SERVICE, SYM_OTHER } sym_kind_t;

typedef struct {
    char *name;
    uint8_t *bytes; /* serialized FileDescriptorProto */
    size_t len;
    size_t *deps; /* indexes of the files it imports, in import order */
    size_t ndeps;
} rfile_t;

typedef struct {
    char *name; /* fully qualified, no leading dot */
    size_t file;
    sym_kind_t kind;
} sym_t;

typedef struct {
    char *extendee; /* fully qualified, no leading dot */
    int32_t number;
    size_t file;
} ext_t;

struct reflection {
    rfile_t *files;
    size_t nfiles;
    size_t *by_name; /* file indexes sorted by name */
    size_t nedges;   /* imports over all files */
    sym_t *syms;     /* sorted by name after reflection_new */
    size_t nsyms, capsyms;
    ext_t *exts; /* sorted by (extendee, number) */
    size_t nexts, capexts;
    grpc_method_t rows[2];
};

/* Building state: the index plus where errors go. */
typedef struct {
    reflection_t *r;
    char *err;
    size_t errlen;
    int rc; /* the first error: -EINVAL (bad input) or -ENOMEM */
} build_t;

static int fail(build_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(build_t *b, const char *fmt, ...)
{
    if (b->err && b->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->err, b->errlen, fmt, ap);
        va_end(ap);
    }
    if (!b->rc) b->rc = -EINVAL;
    return -EINVAL;
}

static int oom(build_t *b)
{
    fail(b, "out of memory");
    b->rc = -ENOMEM;
    return -ENOMEM;
}

/* ---- bounded pre-scan of the wire format ---- */

enum { W_SET, W_FILE, W_MSG, W_NONE };

static int wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p >= end) return -1;
        uint8_t c = *(*p)++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* Walks a message of the given kind, descending only where DescriptorProto nests (set.file,
 * file.message_type, message.nested_type): the one unbounded recursion in descriptor.proto.
 * Returns 0, -1 malformed, -2 too deep. */
static int wire_check(const uint8_t *p, const uint8_t *end, int kind, int depth)
{
    if (depth > MAX_DEPTH) return -2;
    while (p < end) {
        uint64_t key, v;
        if (wire_varint(&p, end, &key) || (key >> 3) == 0) return -1;
        switch (key & 7) {
        case 0:
            if (wire_varint(&p, end, &v)) return -1;
            break;
        case 1:
            if (end - p < 8) return -1;
            p += 8;
            break;
        case 5:
            if (end - p < 4) return -1;
            p += 4;
            break;
        case 2: {
            if (wire_varint(&p, end, &v) || v > (uint64_t)(end - p)) return -1;
            uint64_t field = key >> 3;
            int sub = W_NONE;
            if (kind == W_SET && field == 1)
                sub = W_FILE;
            else if ((kind == W_FILE && field == 4) || (kind == W_MSG && field == 3))
                sub = W_MSG;
            if (sub != W_NONE) {
                int rc = wire_check(p, p + v, sub, depth + 1);
                if (rc) return rc;
            }
            p += v;
            break;
        }
        default: /* groups: not in descriptor.proto, and protobuf-c cannot skip them */
            return -1;
        }
    }
    return 0;
}

/* ---- symbols ---- */

/* Adds scope.name (or name at the root) and returns the stored name, or NULL on error. */
static const char *add_sym(build_t *b, const char *scope, const char *name, size_t file,
                           sym_kind_t kind)
{
    reflection_t *r = b->r;
    if (!name || !*name) {
        fail(b, "%s: unnamed definition in scope '%s'", r->files[file].name, scope);
        return NULL;
    }
    if (r->nsyms == r->capsyms) {
        size_t cap = r->capsyms ? r->capsyms * 2 : 64;
        sym_t *s = realloc(r->syms, cap * sizeof *s);
        if (!s) {
            oom(b);
            return NULL;
        }
        r->syms = s;
        r->capsyms = cap;
    }
    size_t ls = strlen(scope), ln = strlen(name);
    char *full = malloc(ls + ln + 2);
    if (!full) {
        oom(b);
        return NULL;
    }
    if (ls) {
        memcpy(full, scope, ls);
        full[ls++] = '.';
    }
    memcpy(full + ls, name, ln + 1);
    r->syms[r->nsyms++] = (sym_t){.name = full, .file = file, .kind = kind};
    return full;
}

static int add_ext(build_t *b, const char *scope, const Google__Protobuf__FieldDescriptorProto *f,
                   size_t file)
{
    reflection_t *r = b->r;
    if (!add_sym(b, scope, f->name, file, SYM_OTHER)) return -EINVAL;
    if (!f->extendee || !*f->extendee || !f->has_number)
        return fail(b, "%s: extension %s lacks its extendee or number", r->files[file].name,
                    f->name);
    if (r->nexts == r->capexts) {
        size_t cap = r->capexts ? r->capexts * 2 : 16;
        ext_t *e = realloc(r->exts, cap * sizeof *e);
        if (!e) return oom(b);
        r->exts = e;
        r->capexts = cap;
    }
    const char *extendee = f->extendee[0] == '.' ? f->extendee + 1 : f->extendee;
    char *copy = strdup(extendee);
    if (!copy) return oom(b);
    r->exts[r->nexts++] = (ext_t){.extendee = copy, .number = f->number, .file = file};
    return 0;
}

static int index_enum(build_t *b, const char *scope, const Google__Protobuf__EnumDescriptorProto *e,
                      size_t file)
{
    if (!add_sym(b, scope, e->name, file, SYM_ENUM)) return -EINVAL;
    /* Enum values live beside their enum, not inside it (C++ scoping, as protoc resolves). */
    for (size_t i = 0; i < e->n_value; i++)
        if (!add_sym(b, scope, e->value[i]->name, file, SYM_OTHER)) return -EINVAL;
    return 0;
}

/* Depth is bounded by the pre-scan. */
static int index_message(build_t *b, const char *scope, const Google__Protobuf__DescriptorProto *m,
                         size_t file)
{
    const char *full = add_sym(b, scope, m->name, file, SYM_MESSAGE);
    if (!full) return -EINVAL;
    for (size_t i = 0; i < m->n_field; i++)
        if (!add_sym(b, full, m->field[i]->name, file, SYM_OTHER)) return -EINVAL;
    for (size_t i = 0; i < m->n_oneof_decl; i++)
        if (!add_sym(b, full, m->oneof_decl[i]->name, file, SYM_OTHER)) return -EINVAL;
    for (size_t i = 0; i < m->n_extension; i++)
        if (add_ext(b, full, m->extension[i], file)) return -EINVAL;
    for (size_t i = 0; i < m->n_enum_type; i++)
        if (index_enum(b, full, m->enum_type[i], file)) return -EINVAL;
    for (size_t i = 0; i < m->n_nested_type; i++)
        if (index_message(b, full, m->nested_type[i], file)) return -EINVAL;
    return 0;
}

static int index_file(build_t *b, const Google__Protobuf__FileDescriptorProto *fd, size_t file)
{
    const char *pkg = fd->package ? fd->package : "";
    /* The package and each enclosing package ("a", "a.b", "a.b.c") resolve to a file that
     * declares it, as DescriptorPool::FindFileContainingSymbol does. */
    if (*pkg) {
        size_t n = strlen(pkg);
        char *prefix = strdup(pkg);
        if (!prefix) return oom(b);
        for (size_t i = 0; i <= n; i++) {
            if (i < n && pkg[i] != '.') continue;
            prefix[i] = '\0';
            const char *ok = add_sym(b, "", prefix, file, SYM_PACKAGE);
            prefix[i] = pkg[i];
            if (!ok) {
                free(prefix);
                return -EINVAL;
            }
        }
        free(prefix);
    }
    for (size_t i = 0; i < fd->n_message_type; i++)
        if (index_message(b, pkg, fd->message_type[i], file)) return -EINVAL;
    for (size_t i = 0; i < fd->n_enum_type; i++)
        if (index_enum(b, pkg, fd->enum_type[i], file)) return -EINVAL;
    for (size_t i = 0; i < fd->n_extension; i++)
        if (add_ext(b, pkg, fd->extension[i], file)) return -EINVAL;
    for (size_t i = 0; i < fd->n_service; i++) {
        const Google__Protobuf__ServiceDescriptorProto *s = fd->service[i];
        const char *full = add_sym(b, pkg, s->name, file, SYM_SERVICE);
        if (!full) return -EINVAL;
        for (size_t j = 0; j < s->n_method; j++)
            if (!add_sym(b, full, s->method[j]->name, file, SYM_OTHER)) return -EINVAL;
    }
    return 0;
}

static int cmp_sym(const void *a, const void *b)
{
    const sym_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c) return c;
    return (x->file > y->file) - (x->file < y->file);
}

static int cmp_ext(const void *a, const void *b)
{
    const ext_t *x = a, *y = b;
    int c = strcmp(x->extendee, y->extendee);
    if (c) return c;
    return (x->number > y->number) - (x->number < y->number);
}

/* qsort has no context argument; the file table rides in the keys instead. */
typedef struct {
    const char *name;
    size_t index;
} name_key_t;

static int cmp_name_key(const void *a, const void *b)
{
    return strcmp(((const name_key_t *)a)->name, ((const name_key_t *)b)->name);
}

static int sort_symbols(build_t *b)
{
    reflection_t *r = b->r;
    if (r->nsyms) qsort(r->syms, r->nsyms, sizeof *r->syms, cmp_sym);
    for (size_t i = 1; i < r->nsyms; i++) {
        const sym_t *p = &r->syms[i - 1], *s = &r->syms[i];
        if (strcmp(p->name, s->name) == 0 && (p->kind != SYM_PACKAGE || s->kind != SYM_PACKAGE))
            return fail(b, "symbol %s defined in both %s and %s", s->name, r->files[p->file].name,
                        r->files[s->file].name);
    }
    /* Several files share a package: the first one (lowest index, sorted first) answers. */
    size_t out = 0;
    for (size_t i = 0; i < r->nsyms; i++) {
        if (out && strcmp(r->syms[out - 1].name, r->syms[i].name) == 0) {
            free(r->syms[i].name);
            continue;
        }
        r->syms[out++] = r->syms[i];
    }
    r->nsyms = out;
    if (r->nexts) qsort(r->exts, r->nexts, sizeof *r->exts, cmp_ext);
    for (size_t i = 1; i < r->nexts; i++)
        if (cmp_ext(&r->exts[i - 1], &r->exts[i]) == 0)
            return fail(b, "extension %d of %s defined in both %s and %s", r->exts[i].number,
                        r->exts[i].extendee, r->files[r->exts[i - 1].file].name,
                        r->files[r->exts[i].file].name);
    return 0;
}

static const rfile_t *find_file_index(const reflection_t *r, const char *name, size_t *index)
{
    size_t lo = 0, hi = r->nfiles;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, r->files[r->by_name[mid]].name);
        if (c == 0) {
            *index = r->by_name[mid];
            return &r->files[*index];
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static const sym_t *find_sym(const reflection_t *r, const char *name)
{
    size_t lo = 0, hi = r->nsyms;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, r->syms[mid].name);
        if (c == 0) return &r->syms[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static int load_files(build_t *b, const Google__Protobuf__FileDescriptorSet *set)
{
    reflection_t *r = b->r;
    if (set->n_file == 0) return fail(b, "descriptor set holds no files");
    r->files = calloc(set->n_file, sizeof *r->files);
    r->by_name = calloc(set->n_file, sizeof *r->by_name);
    name_key_t *keys = calloc(set->n_file, sizeof *keys);
    if (!r->files || !r->by_name || !keys) {
        free(keys);
        return oom(b);
    }
    int rc = 0;
    for (size_t i = 0; i < set->n_file; i++) {
        const Google__Protobuf__FileDescriptorProto *fd = set->file[i];
        rfile_t *f = &r->files[i];
        if (!fd->name || !*fd->name) {
            rc = fail(b, "file %zu of the descriptor set has no name", i);
            goto out;
        }
        r->nfiles = i + 1;
        f->name = strdup(fd->name);
        /* Re-packing keeps every field, unknown ones included (protobuf-c stores them). */
        f->len = google__protobuf__file_descriptor_proto__get_packed_size(fd);
        f->bytes = malloc(f->len ? f->len : 1);
        if (!f->name || !f->bytes) {
            rc = oom(b);
            goto out;
        }
        google__protobuf__file_descriptor_proto__pack(fd, f->bytes);
        keys[i] = (name_key_t){.name = f->name, .index = i};
    }
    qsort(keys, r->nfiles, sizeof *keys, cmp_name_key);
    for (size_t i = 0; i < r->nfiles; i++) {
        if (i && strcmp(keys[i - 1].name, keys[i].name) == 0) {
            rc = fail(b, "file %s appears twice in the descriptor set", keys[i].name);
            goto out;
        }
        r->by_name[i] = keys[i].index;
    }
    for (size_t i = 0; i < r->nfiles; i++) {
        const Google__Protobuf__FileDescriptorProto *fd = set->file[i];
        rfile_t *f = &r->files[i];
        if (fd->n_dependency) {
            f->deps = calloc(fd->n_dependency, sizeof *f->deps);
            if (!f->deps) {
                rc = oom(b);
                goto out;
            }
        }
        for (size_t j = 0; j < fd->n_dependency; j++) {
            size_t dep;
            if (!fd->dependency[j] || !find_file_index(r, fd->dependency[j], &dep)) {
                rc = fail(b, "%s imports %s, which is not in the descriptor set", f->name,
                          fd->dependency[j] ? fd->dependency[j] : "(null)");
                goto out;
            }
            f->deps[f->ndeps++] = dep;
        }
        r->nedges += f->ndeps;
    }
    for (size_t i = 0; i < r->nfiles; i++)
        if ((rc = index_file(b, set->file[i], i))) goto out;
    rc = sort_symbols(b);
out:
    free(keys);
    return rc;
}

static void on_message(grpc_call_t *call, ProtobufCMessage *msg);
static void on_half_close(grpc_call_t *call);

int reflection_new(reflection_t **out, const unsigned char *fdset, size_t len, char *err,
                   size_t errlen)
{
    *out = NULL;
    build_t b = {.err = err, .errlen = errlen};
    Google__Protobuf__FileDescriptorSet *set = NULL;
    if (err && errlen) err[0] = '\0';
    if (!fdset || len == 0) {
        return fail(&b, "empty descriptor set");
    }
    if (len > MAX_SET_BYTES) {
        return fail(&b, "descriptor set of %zu bytes exceeds %u", len, MAX_SET_BYTES);
    }
    int rc = wire_check(fdset, fdset + len, W_SET, 0);
    if (rc) {
        return fail(&b,
                    rc == -2 ? "descriptor set nests messages deeper than %d"
                             : "descriptor set is malformed or truncated",
                    MAX_DEPTH);
    }
    b.r = calloc(1, sizeof *b.r);
    if (!b.r) return oom(&b);
    set = google__protobuf__file_descriptor_set__unpack(NULL, len, fdset);
    if (!set) {
        fail(&b, "descriptor set does not decode as google.protobuf.FileDescriptorSet");
        goto fail;
    }
    if (load_files(&b, set)) goto fail;
    google__protobuf__file_descriptor_set__free_unpacked(set, NULL);

    static const struct {
        const char *path, *service;
    } versions[2] = {
        {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
         "grpc.reflection.v1.ServerReflection"},
        {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
         "grpc.reflection.v1alpha.ServerReflection"},
    };
    for (size_t i = 0; i < 2; i++)
        b.r->rows[i] = (grpc_method_t){
            .path = versions[i].path,
            .service = versions[i].service,
            .name = "ServerReflectionInfo",
            .kind = GRPC_BIDI_STREAMING,
            /* v1alpha is wire-identical to v1 (the tests check the descriptors match). */
            .request = &grpc__reflection__v1__server_reflection_request__descriptor,
            .response = &grpc__reflection__v1__server_reflection_response__descriptor,
            .on_message = on_message,
            .on_half_close = on_half_close,
            .arg = b.r,
        };
    *out = b.r;
    return 0;

fail:
    if (set) google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
    reflection_free(b.r);
    return b.rc ? b.rc : -EINVAL;
}

void reflection_free(reflection_t *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->nfiles; i++) {
        free(r->files[i].name);
        free(r->files[i].bytes);
        free(r->files[i].deps);
    }
    free(r->files);
    free(r->by_name);
    for (size_t i = 0; i < r->nsyms; i++)
        free(r->syms[i].name);
    free(r->syms);
    for (size_t i = 0; i < r->nexts; i++)
        free(r->exts[i].extendee);
    free(r->exts);
    free(r);
}

size_t reflection_file_count(const reflection_t *r)
{
    return r->nfiles;
}

grpc_method_t *reflection_methods(reflection_t *r, size_t *n)
{
    *n = 2;
    return r->rows;
}

/* ---- answers ---- */

static void *sys_alloc(void *data, size_t n)
{
    (void)data;
    return malloc(n);
}

static void sys_free(void *data, void *p)
{
    (void)data;
    free(p);
}

static void *pa_alloc(ProtobufCAllocator *a, size_t n)
{
    return a->alloc(a->allocator_data, n ? n : 1);
}

static void pa_free(ProtobufCAllocator *a, void *p)
{
    if (p) a->free(a->allocator_data, p);
}

typedef Grpc__Reflection__V1__ServerReflectionResponse response_t;

static int answer_error(response_t *resp, ProtobufCAllocator *a, grpc_status_t code,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int answer_error(response_t *resp, ProtobufCAllocator *a, grpc_status_t code,
                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    Grpc__Reflection__V1__ErrorResponse *e = pa_alloc(a, sizeof *e);
    char *msg = pa_alloc(a, (size_t)n + 1);
    if (!e || !msg) {
        pa_free(a, e);
        pa_free(a, msg);
        return -ENOMEM;
    }
    va_start(ap, fmt);
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    va_end(ap);
    grpc__reflection__v1__error_response__init(e);
    e->error_code = (int32_t)code;
    e->error_message = msg;
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    resp->error_response = e;
    return 0;
}

/* The file and its transitive imports, each once, depth-first in import order, file first. */
static int answer_files(const reflection_t *r, size_t start, response_t *resp,
                        ProtobufCAllocator *a)
{
    Grpc__Reflection__V1__FileDescriptorResponse *fr = pa_alloc(a, sizeof *fr);
    ProtobufCBinaryData *out = pa_alloc(a, r->nfiles * sizeof *out);
    size_t *stack = malloc((r->nedges + 1) * sizeof *stack);
    unsigned char *seen = calloc(r->nfiles, 1);
    if (!fr || !out || !stack || !seen) {
        pa_free(a, fr);
        pa_free(a, out);
        free(stack);
        free(seen);
        return -ENOMEM;
    }
    size_t n = 0, top = 0;
    stack[top++] = start;
    while (top) {
        size_t f = stack[--top];
        if (seen[f]) continue;
        seen[f] = 1;
        out[n++] = (ProtobufCBinaryData){.len = r->files[f].len, .data = r->files[f].bytes};
        for (size_t i = r->files[f].ndeps; i-- > 0;)
            if (!seen[r->files[f].deps[i]]) stack[top++] = r->files[f].deps[i];
    }
    free(stack);
    free(seen);
    grpc__reflection__v1__file_descriptor_response__init(fr);
    fr->n_file_descriptor_proto = n;
    fr->file_descriptor_proto = out;
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    resp->file_descriptor_response = fr;
    return 0;
}

static const ext_t *find_ext(const reflection_t *r, const char *extendee, int32_t number,
                             size_t *first_of_type, size_t *count_of_type)
{
    /* Lower bound of extendee, then the run of its extensions. */
    size_t lo = 0, hi = r->nexts;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(r->exts[mid].extendee, extendee) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t end = lo;
    while (end < r->nexts && strcmp(r->exts[end].extendee, extendee) == 0)
        end++;
    if (first_of_type) *first_of_type = lo;
    if (count_of_type) *count_of_type = end - lo;
    for (size_t i = lo; i < end; i++)
        if (r->exts[i].number == number) return &r->exts[i];
    return NULL;
}

static int answer_ext_numbers(const reflection_t *r, const char *type, response_t *resp,
                              ProtobufCAllocator *a)
{
    const sym_t *s = find_sym(r, type);
    if (!s || s->kind != SYM_MESSAGE)
        return answer_error(resp, a, GRPC_STATUS_NOT_FOUND, "message type not found: %s", type);
    size_t first, count;
    find_ext(r, type, 0, &first, &count);
    Grpc__Reflection__V1__ExtensionNumberResponse *er = pa_alloc(a, sizeof *er);
    int32_t *nums = pa_alloc(a, count * sizeof *nums);
    if (!er || !nums) {
        pa_free(a, er);
        pa_free(a, nums);
        return -ENOMEM;
    }
    for (size_t i = 0; i < count; i++)
        nums[i] = r->exts[first + i].number;
    grpc__reflection__v1__extension_number_response__init(er);
    er->base_type_name = s->name;
    er->n_extension_number = count;
    er->extension_number = nums;
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
    resp->all_extension_numbers_response = er;
    return 0;
}

static int answer_services(const char *const *services, size_t n, response_t *resp,
                           ProtobufCAllocator *a)
{
    /* The pointer array and the items in one block, so dispose frees one pointer. */
    Grpc__Reflection__V1__ListServiceResponse *lr = pa_alloc(a, sizeof *lr);
    Grpc__Reflection__V1__ServiceResponse **ptrs =
        pa_alloc(a, n * (sizeof *ptrs + sizeof(Grpc__Reflection__V1__ServiceResponse)));
    if (!lr || !ptrs) {
        pa_free(a, lr);
        pa_free(a, ptrs);
        return -ENOMEM;
    }
    Grpc__Reflection__V1__ServiceResponse *items = (void *)(ptrs + n);
    for (size_t i = 0; i < n; i++) {
        grpc__reflection__v1__service_response__init(&items[i]);
        items[i].name = (char *)services[i];
        ptrs[i] = &items[i];
    }
    grpc__reflection__v1__list_service_response__init(lr);
    lr->n_service = n;
    lr->service = ptrs;
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    resp->list_services_response = lr;
    return 0;
}

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

int reflection_answer(const reflection_t *r,
                      const Grpc__Reflection__V1__ServerReflectionRequest *req,
                      const char *const *services, size_t n_services, ProtobufCAllocator *alloc,
                      Grpc__Reflection__V1__ServerReflectionResponse *resp)
{
    ProtobufCAllocator sys = {.alloc = sys_alloc, .free = sys_free};
    ProtobufCAllocator *a = alloc ? alloc : &sys;
    grpc__reflection__v1__server_reflection_response__init(resp);
    /* Borrowed from the request: nothing of it is freed or changed here. */
    resp->valid_host = (char *)str_or_empty(req->host);
    resp->original_request = (Grpc__Reflection__V1__ServerReflectionRequest *)req;
    size_t f;
    int rc;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME: {
        const char *name = str_or_empty(req->file_by_filename);
        if (!find_file_index(r, name, &f))
            rc = answer_error(resp, a, GRPC_STATUS_NOT_FOUND, "file not found: %s", name);
        else
            rc = answer_files(r, f, resp, a);
        break;
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL: {
        const char *name = str_or_empty(req->file_containing_symbol);
        const sym_t *s = find_sym(r, name);
        if (!s)
            rc = answer_error(resp, a, GRPC_STATUS_NOT_FOUND, "symbol not found: %s", name);
        else
            rc = answer_files(r, s->file, resp, a);
        break;
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION: {
        const Grpc__Reflection__V1__ExtensionRequest *er = req->file_containing_extension;
        const char *type = er ? str_or_empty(er->containing_type) : "";
        int32_t number = er ? er->extension_number : 0;
        const ext_t *e = find_ext(r, type, number, NULL, NULL);
        if (!e)
            rc = answer_error(resp, a, GRPC_STATUS_NOT_FOUND, "extension %d of %s not found",
                              (int)number, type);
        else
            rc = answer_files(r, e->file, resp, a);
        break;
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        rc = answer_ext_numbers(r, str_or_empty(req->all_extension_numbers_of_type), resp, a);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        rc = answer_services(services, n_services, resp, a);
        break;
    default:
        /* As grpc++ answers a request it does not know. */
        rc = answer_error(resp, a, GRPC_STATUS_UNIMPLEMENTED, "request type not supported");
        break;
    }
    if (rc) grpc__reflection__v1__server_reflection_response__init(resp);
    return rc;
}

void reflection_answer_dispose(Grpc__Reflection__V1__ServerReflectionResponse *resp,
                               ProtobufCAllocator *alloc)
{
    ProtobufCAllocator sys = {.alloc = sys_alloc, .free = sys_free};
    ProtobufCAllocator *a = alloc ? alloc : &sys;
    switch (resp->message_response_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE:
        pa_free(a, resp->file_descriptor_response->file_descriptor_proto);
        pa_free(a, resp->file_descriptor_response);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE:
        pa_free(a, resp->all_extension_numbers_response->extension_number);
        pa_free(a, resp->all_extension_numbers_response);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE:
        pa_free(a, resp->list_services_response->service);
        pa_free(a, resp->list_services_response);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE:
        pa_free(a, resp->error_response->error_message);
        pa_free(a, resp->error_response);
        break;
    default:
        break;
    }
    grpc__reflection__v1__server_reflection_response__init(resp);
}

/* ---- the ServerReflectionInfo handler ---- */

/* One response per request, in order; sent (serialized) before the next request is read. The
 * response is built on the heap rather than in the call arena, which lives as long as the stream:
 * a client may ask many questions on one stream. */
static void on_message(grpc_call_t *call, ProtobufCMessage *msg)
{
    const reflection_t *r = grpc_call_arg(call);
    if (msg->descriptor != &grpc__reflection__v1__server_reflection_request__descriptor) {
        grpc_call_finish(call, GRPC_STATUS_INTERNAL, "reflection: unexpected request type");
        return;
    }
    const char *on_stack[SERVICES_ON_STACK];
    const char **names = on_stack;
    struct server *s = grpc_call_server(call);
    size_t n = server_services(s, on_stack, SERVICES_ON_STACK);
    if (n > SERVICES_ON_STACK) {
        names = malloc(n * sizeof *names);
        if (!names) {
            grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "reflection: out of memory");
            return;
        }
        size_t again = server_services(s, names, n);
        n = again < n ? again : n;
    }
    Grpc__Reflection__V1__ServerReflectionResponse resp;
    int rc = reflection_answer(r, (const Grpc__Reflection__V1__ServerReflectionRequest *)msg, names,
                               n, NULL, &resp);
    if (rc == 0) {
        rc = grpc_call_send(call, &resp.base);
        reflection_answer_dispose(&resp, NULL);
    }
    if (names != on_stack) free(names);
    if (rc == -ENOMEM)
        grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "reflection: out of memory");
    else if (rc && rc != -EPIPE)
        grpc_call_finish(call, GRPC_STATUS_INTERNAL, "reflection: cannot send the response");
}

static void on_half_close(grpc_call_t *call)
{
    grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}
