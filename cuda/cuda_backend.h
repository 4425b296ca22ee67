/*
 * cuda_backend.h - the CUDA backend behind the engine's backend table (C API).
 *
 * Weights are uploaded once at load (fp32 as stored, or bf16 matrices), the KV cache of
 * every slot lives in device memory sized from max_slots x context, and the whole
 * budget is checked against the device's free memory before anything is allocated
 * (plain cudaMalloc, never managed memory). The forward runs on a stream pool
 * (stream_pool.h): each lane is a host thread owning a stream, a cuBLAS handle with
 * its own workspace, scratch buffers, the KV cache of its slots, and the CUDA graphs of
 * its pure-decode steps (captured once per batch size, then replayed).
 *
 * Errors: every CUDA and cuBLAS call is checked; a failure makes the forward return a
 * negative errno with the call, file:line and CUDA's message available through
 * backend_t.error. A sticky device error (illegal address, ECC, device lost) marks the
 * lane broken: later forwards fail fast with -EIO, so requests end with an error and
 * the canary turns the endpoint NOT_SERVING while the server keeps answering probes.
 *
 * Nothing here is called from the reactor: cuda_backend_stats reads cached atomics.
 *
 * VERIFICATION STATUS: compiled for sm_80 and sm_90; the device code and every
 * cuda_* entry point that reaches the device have NOT yet run on a GPU (see
 * test/cuda/README.md for the checks that remain).
 */
#ifndef INFERD_CUDA_BACKEND_H
#define INFERD_CUDA_BACKEND_H

#include "engine/internal.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Backend options. */
typedef struct {
    int device;  /* CUDA device ordinal */
    int streams; /* lanes (one stream + host thread each); 0 = 4 */
    int bf16;    /* 1: matrices stored and multiplied in bf16 (fp32 accumulation) */
} cuda_opts_t;

/** Is device `device` usable (present, driver loads, compute capability >= 8.0, a
 *  context can be created)? Returns 0 with a description ("NVIDIA H100 ..., sm_90,
 *  80 GiB") in info, or -ENODEV with the reason in info. */
int cuda_probe(int device, char *info, size_t infolen);

/** Upload `m` and start the lanes: same contract as backend_t.load (max_rows rows per
 *  forward, max_slots sequences). Returns 0, -ENODEV (device unusable), -ENOMEM (the
 *  device memory budget does not fit: err names the sizes and what to lower), -EIO
 *  (a CUDA/cuBLAS call failed), -EINVAL. */
int cuda_backend_load(void **ctx, const model_t *m, const cuda_opts_t *o, int max_rows,
                      int max_slots, char *err, size_t errlen);

/** The table: load uses device 0, 4 streams, fp32 (the engine calls cuda_backend_load). */
extern const backend_t backend_cuda;

/** Bytes the device memory budget needs for these options (weights, KV cache, lane
 *  scratch, cuBLAS workspaces); pure host arithmetic, usable without a GPU. */
uint64_t cuda_budget_bytes(const model_config_t *c, const cuda_opts_t *o, int max_rows,
                           int max_slots, uint64_t *weights, uint64_t *kv, uint64_t *scratch);

/** Device-to-device copy bandwidth of `device` (read + write bytes per second), for the
 *  benchmark's bandwidth bound. 0 or -ENODEV/-EIO with err. Blocks (not for the server). */
int cuda_measure_bandwidth(int device, double *bytes_per_s, char *err, size_t errlen);

/* ---- run-time loading (loader.c, linked into the engine) ------------------------------- *
 * The engine never links libinferd_cuda.so (cuBLAS alone costs ~0.3 s and ~300 MB of
 * mappings per process): it opens it with dlopen only after the CUDA driver
 * (libcuda.so.1, itself dlopen'ed) reports a device, so a machine without a GPU loads
 * nothing CUDA at all. The library stays loaded for the life of the process. */

/** The library's entry points. */
typedef struct {
    int (*probe)(int device, char *info, size_t infolen);
    int (*load)(void **ctx, const model_t *m, const cuda_opts_t *o, int max_rows, int max_slots,
                char *err, size_t errlen);
    const backend_t *backend;
} cuda_api_t;

/** Check the driver (libcuda.so.1, cuInit, a device count > 0), then dlopen the backend
 *  library ($INFERD_CUDA_LIB, else the path it was built at, else libinferd_cuda.so on
 *  the library path). Returns 0 and fills *api, or -ENODEV with the reason in why. */
int cuda_api_open(cuda_api_t *api, char *why, size_t whylen);

#ifdef __cplusplus
}
#endif
#endif
