/* Record layout of the scheduler probe (bpf/sched.c); mirrored by tuner/probes/sched.py. */
#ifndef TUNER_SCHED_H
#define TUNER_SCHED_H

#define SCHED_KIND_TASK 1
#define SCHED_KIND_CPU 2

struct sched_record {
    u64 window_start;     /* ns, CLOCK_MONOTONIC */
    u64 window_end;
    u32 kind;             /* SCHED_KIND_TASK or SCHED_KIND_CPU */
    u32 id;               /* tid, or CPU number */
    u32 tgid;             /* process of the task; 0 for a CPU */
    u32 reserved;
    char comm[16];
    u64 oncpu_ns;         /* task: time on a CPU; CPU: time any non-idle task ran on it */
    u64 runq_wait_ns;     /* wakeup or preemption -> switch-in of observed tasks */
    u64 runq_waits;       /* number of waits summed in runq_wait_ns */
    u64 switches_vol;     /* switched out while blocking */
    u64 switches_invol;   /* switched out while runnable (preempted) */
    u64 migrations;       /* task: moved between CPUs; CPU: observed tasks moved onto it */
    u64 wakeups;          /* task woken up */
};

/* Per-entity accumulators in the kernel (same counters as the record). */
struct sched_acc {
    u32 tgid;
    u32 tid;
    char comm[16];
    u64 oncpu_ns;
    u64 runq_wait_ns;
    u64 runq_waits;
    u64 switches_vol;
    u64 switches_invol;
    u64 migrations;
    u64 wakeups;
};

#endif
