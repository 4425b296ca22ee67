/* The canary payload (DYN_HEALTH_CHECK_PAYLOAD): a GenerateRequest written as proto JSON,
 * decoded into the protobuf-c message field by field from its descriptor, with errors that name
 * the field. */
#include "server/services/canary.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/base/config.h"
#include "server/services/json_kind.h"

/* lowerCamelCase (the proto JSON name) -> snake_case */
static void snake(const char *in, char *out, size_t cap)
{
    size_t j = 0;
    for (; *in && j + 2 < cap; in++) {
        if (*in >= 'A' && *in <= 'Z') {
            out[j++] = '_';
            out[j++] = (char)(*in - 'A' + 'a');
        } else
            out[j++] = *in;
    }
    out[j] = 0;
}

/* An unsigned integer: a JSON integer, or a decimal string (proto JSON writes 64-bit ones so). */
static int json_uint(const json_t *v, uint64_t max, uint64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < 0 || (uint64_t)x > max) return -ERANGE;
        *out = (uint64_t)x;
        return 0;
    }
    if (json_is_real(v)) { /* 3.0 is an integer in proto JSON */
        double d = json_real_value(v);
        if (d != floor(d) || d < 0 || d > (double)max) return -ERANGE;
        *out = (uint64_t)d;
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        if (!*s || *s == '-' || *s == '+' || *s == ' ') return -EINVAL;
        errno = 0;
        unsigned long long x = strtoull(s, &end, 10);
        if (*end) return -EINVAL;
        if (errno || x > max) return -ERANGE;
        *out = x;
        return 0;
    }
    return -EINVAL;
}

static int set_scalar(const ProtobufCFieldDescriptor *f, const json_t *v, void *dst,
                      const char *path, char *err, size_t errlen)
{
    uint64_t u;
    int rc;
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        if (!json_is_string(v)) break;
        {
            char *s = strdup(json_string_value(v));
            if (!s) return -ENOMEM;
            *(char **)dst = s;
        }
        return 0;
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v)) break;
        *(protobuf_c_boolean *)dst = json_is_true(v);
        return 0;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        if (!json_is_number(v)) break;
        if (f->type == PROTOBUF_C_TYPE_FLOAT)
            *(float *)dst = (float)json_number_value(v);
        else
            *(double *)dst = json_number_value(v);
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        rc = json_uint(v, UINT32_MAX, &u);
        if (rc == -ERANGE) {
            snprintf(err, errlen, "field '%s': value out of range for an unsigned 32-bit integer",
                     path);
            return -EINVAL;
        }
        if (rc) break;
        *(uint32_t *)dst = (uint32_t)u;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        rc = json_uint(v, UINT64_MAX, &u);
        if (rc == -ERANGE) {
            snprintf(err, errlen, "field '%s': value out of range for an unsigned 64-bit integer",
                     path);
            return -EINVAL;
        }
        if (rc) break;
        *(uint64_t *)dst = u;
        return 0;
    default:
        snprintf(err, errlen, "field '%s': type not supported in a canary payload", path);
        return -EINVAL;
    }
    static const char *want[] = {
        [PROTOBUF_C_TYPE_STRING] = "a string",
        [PROTOBUF_C_TYPE_BOOL] = "true or false",
        [PROTOBUF_C_TYPE_FLOAT] = "a number",
        [PROTOBUF_C_TYPE_DOUBLE] = "a number",
        [PROTOBUF_C_TYPE_UINT32] = "an unsigned integer",
        [PROTOBUF_C_TYPE_FIXED32] = "an unsigned integer",
        [PROTOBUF_C_TYPE_UINT64] = "an unsigned integer",
        [PROTOBUF_C_TYPE_FIXED64] = "an unsigned integer",
    };
    snprintf(err, errlen, "field '%s': expected %s, got %s", path, want[f->type], json_kind(v));
    return -EINVAL;
}

static size_t scalar_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return sizeof(uint64_t);
    default:
        return sizeof(uint32_t);
    }
}

/* Fills m (already initialised) from obj. On error m stays freeable with free_unpacked. */
static int from_json(const json_t *obj, const ProtobufCMessageDescriptor *d, ProtobufCMessage *m,
                     const char *prefix, char *err, size_t errlen)
{
    if (!json_is_object(obj)) { /* only the top level: fields are checked before recursing */
        snprintf(err, errlen, "expected a JSON object (%s), got %s", d->name, json_kind(obj));
        return -EINVAL;
    }
    unsigned seen = 0; /* fields already given (both names of one field count once) */
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        char path[256];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", key);
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
        if (!f) {
            char sn[128];
            snake(key, sn, sizeof sn);
            f = protobuf_c_message_descriptor_get_field_by_name(d, sn);
        }
        if (!f) {
            snprintf(err, errlen, "unknown field '%s' (%s has:", path, d->name);
            for (unsigned i = 0; i < d->n_fields; i++) {
                size_t l = strlen(err);
                snprintf(err + l, errlen - l, "%s%s", i ? ", " : " ", d->fields[i].name);
            }
            size_t l = strlen(err);
            snprintf(err + l, errlen - l, ")");
            return -EINVAL;
        }
        unsigned idx = (unsigned)(f - d->fields);
        if (idx < 32 && (seen & (1u << idx))) {
            snprintf(err, errlen, "field '%s' given twice", path);
            return -EINVAL;
        }
        if (idx < 32) seen |= 1u << idx;
        if (json_is_null(v)) continue; /* proto JSON: null is the default */
        void *dst = (char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if (!json_is_array(v)) {
                snprintf(err, errlen, "field '%s': expected an array, got %s", path, json_kind(v));
                return -EINVAL;
            }
            if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                snprintf(err, errlen, "field '%s': type not supported in a canary payload", path);
                return -EINVAL;
            }
            size_t n = json_array_size(v);
            if (n == 0) continue;
            size_t es = scalar_size(f->type);
            char *arr = calloc(n, es);
            if (!arr) return -ENOMEM;
            /* owned by m from here on, so an error below frees it with m */
            *(void **)dst = arr;
            size_t *count = (size_t *)((char *)m + f->quantifier_offset);
            *count = 0;
            for (size_t i = 0; i < n; i++) {
                char ipath[280];
                snprintf(ipath, sizeof ipath, "%s[%zu]", path, i);
                int rc = set_scalar(f, json_array_get(v, i), arr + i * es, ipath, err, errlen);
                if (rc) return rc;
                *count = i + 1;
            }
            continue;
        }
        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            const ProtobufCMessageDescriptor *sd = f->descriptor;
            if (!json_is_object(v)) {
                snprintf(err, errlen, "field '%s': expected an object, got %s", path, json_kind(v));
                return -EINVAL;
            }
            if (*(ProtobufCMessage **)dst) {
                snprintf(err, errlen, "field '%s' given twice", path);
                return -EINVAL;
            }
            ProtobufCMessage *sub = calloc(1, sd->sizeof_message);
            if (!sub) return -ENOMEM;
            sd->message_init(sub);
            *(ProtobufCMessage **)dst = sub;
            int rc = from_json(v, sd, sub, path, err, errlen);
            if (rc) return rc;
            continue;
        }
        int rc = set_scalar(f, v, dst, path, err, errlen);
        if (rc) return rc;
    }
    return 0;
}

int canary_payload_parse(const char *spec, Inferd__V1__GenerateRequest **out, char *err,
                         size_t errlen)
{
    json_error_t je;
    json_t *root;
    if (spec[0] == '@') {
        root = json_load_file(spec + 1, JSON_REJECT_DUPLICATES, &je);
        if (!root) {
            if (je.line <= 0)
                snprintf(err, errlen, "%s", je.text); /* could not read the file */
            else
                snprintf(err, errlen, "%s: bad JSON at line %d, column %d: %s", spec + 1, je.line,
                         je.column, je.text);
            return -EINVAL;
        }
    } else {
        root = json_loads(spec, JSON_REJECT_DUPLICATES, &je);
        if (!root) {
            snprintf(err, errlen, "bad JSON at line %d, column %d: %s", je.line, je.column,
                     je.text);
            return -EINVAL;
        }
    }
    Inferd__V1__GenerateRequest *m = malloc(sizeof *m);
    if (!m) {
        json_decref(root);
        return -ENOMEM;
    }
    inferd__v1__generate_request__init(m);
    int rc = from_json(root, &inferd__v1__generate_request__descriptor, &m->base, "", err, errlen);
    json_decref(root);
    if (rc) {
        protobuf_c_message_free_unpacked(&m->base, NULL);
        if (rc == -ENOMEM) snprintf(err, errlen, "out of memory");
        return rc;
    }
    *out = m;
    return 0;
}

int canary_payload_load(const config_t *cfg, Inferd__V1__GenerateRequest **out, char *err,
                        size_t errlen)
{
    *out = NULL;
    if (!cfg->health_check_payload || !*cfg->health_check_payload) return 0;
    char why[400];
    int rc = canary_payload_parse(cfg->health_check_payload, out, why, sizeof why);
    if (rc == -EINVAL)
        snprintf(err, errlen, "invalid value '%.120s' for --health-check-payload: %s",
                 cfg->health_check_payload, why);
    else if (rc)
        snprintf(err, errlen, "out of memory");
    return rc;
}
