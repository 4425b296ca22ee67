/* What a JSON value is, in words for error messages ("field 'stop' is an integer, not a
 * string"): shared by the services that parse client JSON (the OpenAI API, the canary payload). */
#ifndef INFERD_SERVICES_JSON_KIND_H
#define INFERD_SERVICES_JSON_KIND_H

#include <jansson.h>

/** "an object", "an array", "a string", "an integer", "a number", "a boolean" or "null". */
static inline const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

#endif
