/*
 * fake_libcuda - a stand-in for the CUDA driver (libcuda.so.1) that reports one device and
 * nothing else. The host-side tests point INFERD_CUDA_DRIVER at it so the engine opens the
 * real libinferd_cuda.so and reaches the backend's own checks (cuda_check) on machines
 * without a GPU; the CUDA runtime inside that library still finds no real driver, so
 * nothing ever runs on a device.
 */
int cuInit(unsigned flags);
int cuDeviceGetCount(int *count);

int cuInit(unsigned flags)
{
    (void)flags;
    return 0;
}

int cuDeviceGetCount(int *count)
{
    *count = 1;
    return 0;
}
