/*
 * backend_lib.c - find the CUDA driver and a device, then dlopen the CUDA backend library
 * (libinferd_cuda.so) and take its entry point (backend.h: backend_lib_t).
 *
 * The engine never links that library: cuBLAS alone costs ~0.3 s and ~300 MB of mappings
 * per process, so it is opened only after the driver (libcuda.so.1, itself dlopen'ed)
 * reports a device, and a machine without a GPU loads nothing CUDA at all. The driver
 * API is called through dlsym'ed pointers (no cuda.h needed): CUresult is an int and 0
 * is CUDA_SUCCESS. The library stays loaded for the life of the process (a CUDA runtime
 * does not unload cleanly).
 */
#include "internal.h"

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
    /* INFERD_CUDA_DRIVER names another driver library: the host-side tests use a stand-in
     * that reports one device, to reach the backend's own checks without a GPU */
    const char *env = getenv("INFERD_CUDA_DRIVER");
    const char *path = env && *env ? env : "libcuda.so.1";
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(why, whylen, "no CUDA driver (%s)", e ? e : "libcuda.so.1 not found");
        return -ENODEV;
    }
    cu_init_fn init = (cu_init_fn)(uintptr_t)dlsym(h, "cuInit");
    cu_count_fn count = (cu_count_fn)(uintptr_t)dlsym(h, "cuDeviceGetCount");
    int n = 0, rc = -ENODEV;
    if (!init || !count) {
        snprintf(why, whylen, "%s lacks cuInit/cuDeviceGetCount", path);
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

int backend_lib_open(const backend_lib_t **out, char *why, size_t whylen)
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
    const backend_lib_t *lib = (const backend_lib_t *)dlsym(h, "inferd_backend_entry");
    if (!lib || !lib->probe || !lib->check || !lib->backend) {
        snprintf(why, whylen, "the CUDA backend library lacks its entry point");
        return -ENODEV;
    }
    if (lib->abi != BACKEND_ABI_VERSION) {
        snprintf(why, whylen,
                 "the CUDA backend library was built for backend ABI %u, this inferd needs %u "
                 "(rebuild both from one tree)",
                 lib->abi, BACKEND_ABI_VERSION);
        return -ENODEV;
    }
    *out = lib;
    return 0;
}
