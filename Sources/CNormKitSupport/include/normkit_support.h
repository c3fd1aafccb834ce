#ifndef NORMKIT_SUPPORT_H
#define NORMKIT_SUPPORT_H

/// The number of CPUs in this process's affinity mask (sched_getaffinity), or
/// 0 when it cannot be read.
int normkit_affinity_cpu_count(void);

#endif
