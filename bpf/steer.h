/* Layouts shared by the steering programs (bpf/steer_reuseport.c, bpf/steer_xdp.c) and their
 * loaders in tuner/actuate/. */
#ifndef TUNER_STEER_H
#define TUNER_STEER_H

#define STEER_SLOTS 256            /* indirection table size (a power of two) */
#ifndef MAX_TARGETS
#define MAX_TARGETS 64             /* sockets of a reuseport group / XDP targets */
#endif
#define MAX_CLIENTS 4096           /* heavy clients placed by source address */
#define ETH_P_IP_ 0x0800
#define IP_SADDR_OFF 12            /* offsetof(struct iphdr, saddr) */

/* One indirection table: slot (hash & (STEER_SLOTS - 1)) -> target index. */
struct steer_table {
    u32 target[STEER_SLOTS];
};

/* Which of the two tables is live. The writer fills the other one, then flips `active` and
 * bumps `generation` in one 8-byte write, so the datapath never sees a half-written table.
 * generation 0 means "no table written yet": the programs then do what the kernel does. */
struct steer_ctl {
    u32 active;
    u32 generation;
};

/* The lease: past its deadline the programs do what the kernel does. The datapath reads
 * jiffies (bpf_jiffies64, inlined); the nanosecond deadline (CLOCK_MONOTONIC) is for readers. */
struct steer_lease {
    u64 deadline_ns;
    u64 deadline_jiffies;
};

#endif
