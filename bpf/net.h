/* Record layout of the network probe (bpf/net.c); mirrored by tuner/probes/net.py. */
#ifndef TUNER_NET_H
#define TUNER_NET_H

#define NET_KIND_SOCK 1       /* one socket of an observed process */
#define NET_KIND_LISTEN 2     /* a TCP port an observed process listens on */
#define NET_KIND_CPU 3        /* one CPU's softirq receive work */

struct net_acc {
    u32 kind;
    u32 tgid;                 /* process that owned the socket when first seen */
    u64 sk;                   /* kernel socket address (identity only); 0 for listen/cpu */
    u16 family;               /* AF_INET / AF_INET6 (0 when unknown) */
    u16 protocol;             /* IPPROTO_TCP / IPPROTO_UDP */
    u16 sport;                /* local port (listen: the port; cpu: 0) */
    u16 dport;                /* remote port */
    u8 saddr[16];             /* IPv4 in the first 4 bytes, or IPv6 */
    u8 daddr[16];
    char comm[16];
    u32 state;                /* last TCP state seen (include/net/tcp_states.h) */
    u32 id;                   /* cpu: its number; sock, listen: the entity's serial since load */
    u32 tid;                  /* sock: thread that last read or wrote it; listen: listen()'s */
    u32 idle;                 /* UDP sock: windows in a row without I/O (bpf/net.c) */
    u64 bytes_in;             /* bytes returned by recvmsg and friends */
    u64 bytes_out;            /* bytes accepted by sendmsg and friends */
    u64 msgs_in;              /* receive calls that returned data */
    u64 msgs_out;             /* send calls that sent data */
    u64 retransmits;          /* TCP segments retransmitted */
    u64 state_changes;        /* TCP state transitions */
    u64 accepts;              /* listen: connections completed into the accept queue */
    u64 rx_packets;           /* cpu: packets processed by NAPI polls in softirq */
};

struct net_record {
    u64 window_start;         /* ns, CLOCK_MONOTONIC */
    u64 window_end;
    struct net_acc acc;
};

#endif
