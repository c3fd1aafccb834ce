#ifndef NORMKIT_SUPPORT_H
#define NORMKIT_SUPPORT_H

/// The number of CPUs in this process's affinity mask (sched_getaffinity), or
/// 0 when it cannot be read.
int normkit_affinity_cpu_count(void);

/// The widest vector instruction set this CPU and its operating system support
/// (GCC's __builtin_cpu_supports): 3 for AVX-512 (F, CD, BW, DQ and VL, what
/// OpenBLAS's SkylakeX kernels use), 2 for AVX2 with FMA, 1 for AVX, 0 for
/// anything older (SSE only). 0 on other architectures.
int normkit_cpu_vector_tier(void);

/// Names the calling thread (pthread_setname_np, at most 15 bytes), as
/// profilers, debuggers and /proc/self/task/<tid>/comm show it.
void normkit_name_this_thread(const char *name);

#endif
