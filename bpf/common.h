/* Types and options shared by tuner's probe programs. The maps and helpers that use them are in
 * probe_common.c, which the loader compiles in front of each probe (BCC rewrites map accesses
 * such as `control.lookup()` only in the main source, not in included headers).
 *
 * Compile-time options arrive as -D defines from the Python loader:
 *   WINDOW_NS      window length in nanoseconds
 *   MAX_ENTITIES   entity slots (records per window are bounded by it)
 *   MAX_CPUS       CPU slots
 *   FILTER_PIDS    1: observe tgids listed in the filter_pids map
 *   FILTER_CGROUP  1: observe tasks whose cgroup v2 id is in the filter_cgroups map
 *   FILTER_COMM    "name": observe tasks with this command name
 *   JIFFY_NS       nanoseconds per kernel tick (1e9 / CONFIG_HZ)
 * With no FILTER_* define every process is observed. Filters combine with OR.
 */
#ifndef TUNER_COMMON_H
#define TUNER_COMMON_H

#define TUNER_ABI_VERSION 1

#ifndef WINDOW_NS
#define WINDOW_NS 100000000ULL
#endif
#ifndef MAX_ENTITIES
#define MAX_ENTITIES 256
#endif
#ifndef MAX_CPUS
#define MAX_CPUS 64
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 64
#endif
#ifndef JIFFY_NS
#define JIFFY_NS 10000000ULL  /* a tick; unknown: the longest one (HZ=100), which errs early */
#endif

#define SLOT_EXCLUDED (-1)

/* Shared by user space and the flush: one element, key 0. */
struct tuner_control {
    u64 next_flush;     /* end of the current window (ns, bpf_ktime_get_ns) */
    u64 nslots;         /* entity slots handed out */
    u64 overflow;       /* entities refused because all MAX_ENTITIES slots were taken */
    u64 lost;           /* records dropped because the ring buffer was full */
    u64 records;        /* records submitted */
    u64 flushes;        /* windows closed */
    u64 check_jiffies;  /* from this jiffy on, the window may have ended (tuner_window_due) */
};

/* Take the value of a counter and subtract it atomically, so concurrent adds are kept. */
#define TAKE(field) ({ u64 __v = (field); __sync_fetch_and_add(&(field), -__v); __v; })

#endif
