/* Record layout of the syscall probe (bpf/syscalls.c); mirrored by tuner/probes/syscalls.py. */
#ifndef TUNER_SYSCALLS_H
#define TUNER_SYSCALLS_H

#define SYS_CLASSES 5       /* 0 other, 1 network I/O, 2 file I/O, 3 polling/wait, 4 memory */
#define SYS_HIST_BUCKETS 32 /* bucket b counts latencies in [2^b, 2^(b+1)) ns */

struct sys_acc {
    u32 tgid;
    u32 reserved;
    char comm[16];
    u64 calls[SYS_CLASSES];    /* completed syscalls */
    u64 time_ns[SYS_CLASSES];  /* time from sys_enter to sys_exit */
    u64 errors[SYS_CLASSES];   /* returned -4095..-1 */
    u64 hist[SYS_HIST_BUCKETS];
};

/* A record is a window plus the accumulators of one process. */
struct sys_record {
    u64 window_start;   /* ns, CLOCK_MONOTONIC */
    u64 window_end;
    struct sys_acc acc;
};

#endif
