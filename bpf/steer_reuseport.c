/* sk_reuseport steering: pick the socket of a SO_REUSEPORT group for each new connection
 * (TCP) or datagram (UDP) from an indirection table, unless the lease has expired or no table
 * was written, in which case it selects nothing and the kernel hashes as usual.
 *
 * With -DCOUNT_FLOWS (UDP groups, where every datagram is selected and a flow's hash is stable)
 * it also counts datagrams per flow hash, lease or not, so that the tuner can find hot flows
 * and pin them away from hotspots with an override.
 *
 * Clients learned to be heavy (the `clients` map: IPv4 source address -> target index) are
 * placed at their first packet (a TCP SYN, a UDP datagram), before the table: a client's cost
 * is known from its past connections, which a table of hash slots cannot see. The source
 * address is read from the packet's IP header (bpf_skb_load_bytes_relative, network header).
 *
 * The SOCKMAP that holds the group's sockets is created by the loader, which passes its fd as
 * -DSOCKMAP_FD (BCC does not turn `&map` into a map pointer for bpf_sk_select_reuseport). */
#include "steer.h"

BPF_ARRAY(lease, struct steer_lease, 1);
BPF_ARRAY(ctl, struct steer_ctl, 1);
BPF_ARRAY(tables, struct steer_table, 2);
BPF_HASH(overrides, u32, u32, 4096);             /* flow hash -> target index */
BPF_HASH(clients, u32, u32, MAX_CLIENTS);        /* IPv4 source address (as in the header) -> target */
BPF_PERCPU_ARRAY(client_hits, u64, 1);           /* selections made by the clients map */
BPF_PERCPU_ARRAY(selected, u64, MAX_TARGETS);    /* selections per socket */
BPF_PERCPU_ARRAY(fallbacks, u64, 2);             /* 0: lease/no table, 1: select failed */
#ifdef COUNT_FLOWS
BPF_TABLE("lru_hash", u32, u64, flow_hits, 4096); /* flow hash -> datagrams (read and cleared) */
#endif

static __always_inline void count(u64 *c)
{
    if (c)
        (*c)++;
}

int steer_reuseport(struct sk_reuseport_md *ctx)
{
    u32 zero = 0, one = 1;
#ifdef COUNT_FLOWS
    u32 h = ctx->hash;
    u64 *hits = flow_hits.lookup(&h);
    if (hits) {
        __sync_fetch_and_add(hits, 1);
    } else {
        u64 first = 1;
        flow_hits.update(&h, &first);
    }
#endif
    struct steer_lease *l = lease.lookup(&zero);
    struct steer_ctl *c = ctl.lookup(&zero);
    if (!l || !c || !c->generation || bpf_jiffies64() > l->deadline_jiffies) {
        count(fallbacks.lookup(&zero));
        return SK_PASS;                          /* kernel default */
    }
    u32 hash = ctx->hash;
    u32 idx;
    u32 *pinned = overrides.lookup(&hash);
    u32 saddr = 0;
    if (!pinned && ctx->eth_protocol == bpf_htons(ETH_P_IP_) &&
        bpf_skb_load_bytes_relative(ctx, IP_SADDR_OFF, &saddr, 4, BPF_HDR_START_NET) == 0) {
        pinned = clients.lookup(&saddr);
        if (pinned)
            count(client_hits.lookup(&zero));
    }
    if (pinned) {
        idx = *pinned;
    } else {
        u32 t = c->active & 1;
        struct steer_table *tb = tables.lookup(&t);
        if (!tb)
            return SK_PASS;
        idx = tb->target[hash & (STEER_SLOTS - 1)];
    }
    if (bpf_sk_select_reuseport(ctx, (void *)bpf_pseudo_fd(1, SOCKMAP_FD), &idx, 0)) {
        count(fallbacks.lookup(&one));           /* socket gone: kernel default */
        return SK_PASS;
    }
    if (idx < MAX_TARGETS)
        count(selected.lookup(&idx));
    return SK_PASS;
}
