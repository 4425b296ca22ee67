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
 * Nothing here is called from the reactor: the stats hook reads cached atomics.
 *
 * VERIFICATION STATUS: compiled for sm_80 and sm_90; the device code and every
 * cuda_* entry point that reaches the device have NOT yet run on a GPU (see
 * test/cuda/README.md for the checks that remain).
 */
#ifndef INFERD_CUDA_BACKEND_H
#define INFERD_CUDA_BACKEND_H

#include "engine/backend.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Is device `device` usable (present, driver loads, compute capability >= 8.0, a
 *  context can be created)? Returns 0 with a description ("NVIDIA H100 ..., sm_90,
 *  80 GiB") in info, or -ENODEV with the reason in info. */
int cuda_probe(int device, char *info, size_t infolen);

/** Can the CUDA backend run m? Its kernels implement the llama block with F32 weights
 *  (uploaded as fp32, or bf16 with o->bf16), RoPE over the whole head in adjacent pairs,
 *  q width equal to the model width and RMS epsilon 1e-5. 0, or BACKEND_ENOTSUP with the
 *  first tensor, type or feature it lacks named in why. Host arithmetic only. */
int cuda_check(const model_view_t *m, const backend_opts_t *o, char *why, size_t whylen);

/** Bytes the device memory budget needs for m with these options (weights, KV cache of
 *  max_slots x m->c.seq_len, lane scratch, cuBLAS workspaces); host arithmetic only. */
uint64_t cuda_budget_bytes(const model_view_t *m, const backend_opts_t *o, int max_rows,
                           int max_slots, uint64_t *weights, uint64_t *kv, uint64_t *scratch);

/** Device-to-device copy bandwidth of `device` (read + write bytes per second), for the
 *  benchmark's bandwidth bound. 0 or -ENODEV/-EIO with err. Blocks (not for the server). */
int cuda_measure_bandwidth(int device, double *bytes_per_s, char *err, size_t errlen);

/** The table (its load: check, probe, budget against free memory, upload, start the
 *  lanes; returns 0, BACKEND_ENOTSUP, -ENODEV, -ENOMEM naming the sizes and what to
 *  lower, -EIO, -EINVAL). */
extern const backend_t backend_cuda;

/** The library's entry point, dlopen'ed by the engine (engine/backend_lib.c). */
extern const backend_lib_t inferd_backend_entry;

#ifdef __cplusplus
}
#endif
#endif
