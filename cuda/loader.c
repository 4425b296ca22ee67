/*
 * loader.c - find the CUDA driver and a device, then dlopen the CUDA backend library.
 * See cuda_backend.h. The driver API is called through dlsym'ed pointers (no cuda.h
 * needed): CUresult is an int and 0 is CUDA_SUCCESS.
 */
#include "cuda_backend.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef INFERD_CUDA_LIB
#define INFERD_CUDA_LIB "libinferd_cuda.so"
#endif

typedef int (*cu_init_fn)(unsigned flags);
typedef int (*cu_count_fn)(int *count);

static int driver_check(char *why, size_t whylen)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(why, whylen, "no CUDA driver (%s)", e ? e : "libcuda.so.1 not found");
        return -ENODEV;
    }
    cu_init_fn init = (cu_init_fn)(uintptr_t)dlsym(h, "cuInit");
    cu_count_fn count = (cu_count_fn)(uintptr_t)dlsym(h, "cuDeviceGetCount");
    int n = 0, rc = -ENODEV;
    if (!init || !count) {
        snprintf(why, whylen, "libcuda.so.1 lacks cuInit/cuDeviceGetCount");
    } else if ((rc = init(0)) != 0) {
        snprintf(why, whylen, "cuInit failed (CUresult %d%s)", rc,
                 rc == 100 ? ": no CUDA-capable device" : "");
        rc = -ENODEV;
    } else if ((rc = count(&n)) != 0 || n <= 0) {
        snprintf(why, whylen, "no CUDA device (cuDeviceGetCount: CUresult %d, %d devices)", rc, n);
        rc = -ENODEV;
    } else {
        rc = 0;
    }
    /* the handle stays open: cudart would load the driver again anyway */
    return rc;
}

int cuda_api_open(cuda_api_t *api, char *why, size_t whylen)
{
    int rc = driver_check(why, whylen);
    if (rc < 0) return rc;
    const char *env = getenv("INFERD_CUDA_LIB");
    const char *paths[] = {env && *env ? env : NULL, INFERD_CUDA_LIB, "libinferd_cuda.so"};
    void *h = NULL;
    const char *last = "";
    for (size_t i = 0; i < sizeof paths / sizeof paths[0] && !h; i++) {
        if (!paths[i]) continue;
        h = dlopen(paths[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) last = dlerror();
    }
    if (!h) {
        snprintf(why, whylen, "cannot load the CUDA backend library (%s)", last ? last : "?");
        return -ENODEV;
    }
    api->probe = (int (*)(int, char *, size_t))(uintptr_t)dlsym(h, "cuda_probe");
    api->load = (int (*)(void **, const model_t *, const cuda_opts_t *, int, int, char *, size_t))(
        uintptr_t)dlsym(h, "cuda_backend_load");
    api->backend = (const backend_t *)dlsym(h, "backend_cuda");
    if (!api->probe || !api->load || !api->backend) {
        snprintf(why, whylen, "the CUDA backend library lacks its entry points");
        return -ENODEV; /* never dlclose'd: a CUDA runtime does not unload cleanly */
    }
    return 0;
}
