// What NormKit asks of the operating system that Swift's Glibc module does not
// show: sched_getaffinity and CPU_COUNT need _GNU_SOURCE.
#define _GNU_SOURCE
#include <sched.h>
#include "normkit_support.h"

int normkit_affinity_cpu_count(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    return CPU_COUNT(&set);
}
