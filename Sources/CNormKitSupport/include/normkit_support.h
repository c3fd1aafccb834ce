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

/// The calling thread's SSE control and status register (MXCSR) on x86-64,
/// 0 elsewhere.
unsigned normkit_floating_point_mode(void);

/// Sets the calling thread's MXCSR to `mode` (as normkit_floating_point_mode
/// returned it); does nothing elsewhere.
void normkit_set_floating_point_mode(unsigned mode);

/// `mode` with flush-to-zero (FTZ, bit 15) and denormals-are-zero (DAZ,
/// bit 6) set: subnormal results and operands become zero.
unsigned normkit_flushing_subnormals(unsigned mode);

/// Makes a DYNAMIC_ARCH OpenBLAS choose its kernels again, as it does when it
/// loads, with OPENBLAS_CORETYPE set to `coretype` for that moment
/// (gotoblas_dynamic_quit, then gotoblas_dynamic_init; the variable is unset
/// again afterwards, so the caller must have found it unset). No BLAS call may
/// run on any thread meanwhile. Returns 0, or -1 when the library has no
/// run-time selection (neither function is exported), -2 when setenv failed.
int normkit_openblas_reselect_core(const char *coretype);

#endif
