// What NormKit asks of the operating system and the CPU that Swift's Glibc
// module does not show: sched_getaffinity, CPU_COUNT and pthread_setname_np
// need _GNU_SOURCE, and
// the CPU's features come from GCC/Clang's __builtin_cpu_supports; OpenBLAS's
// run-time kernel selection is looked up with dlsym (RTLD_DEFAULT).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include "normkit_support.h"

int normkit_affinity_cpu_count(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    return CPU_COUNT(&set);
}

int normkit_cpu_vector_tier(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd")
        && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512vl"))
        return 3;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 2;
    if (__builtin_cpu_supports("avx")) return 1;
#endif
    return 0;
}

void normkit_name_this_thread(const char *name) {
    pthread_setname_np(pthread_self(), name);
}

#if defined(__x86_64__)
#include <xmmintrin.h>
unsigned normkit_floating_point_mode(void) { return _mm_getcsr(); }
void normkit_set_floating_point_mode(unsigned mode) { _mm_setcsr(mode); }
unsigned normkit_flushing_subnormals(unsigned mode) { return mode | 0x8040u; }
#else
unsigned normkit_floating_point_mode(void) { return 0; }
void normkit_set_floating_point_mode(unsigned mode) { (void)mode; }
unsigned normkit_flushing_subnormals(unsigned mode) { return mode; }
#endif

int normkit_openblas_reselect_core(const char *coretype) {
    // A DYNAMIC_ARCH OpenBLAS picks its kernel table (`gotoblas`) once, in
    // gotoblas_dynamic_init, from OPENBLAS_CORETYPE or the CPU's model;
    // gotoblas_dynamic_quit forgets it. Both are exported functions of its
    // shared library; a build for one CPU has neither.
    void (*quit)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit");
    void (*init)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init");
    if (quit == NULL || init == NULL) return -1;
    if (setenv("OPENBLAS_CORETYPE", coretype, 1) != 0) return -2;
    quit();
    init();
    unsetenv("OPENBLAS_CORETYPE");
    return 0;
}
