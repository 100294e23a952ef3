/* XDP steering: an L4 load balancer's fast path. Parses Ethernet (up to two VLAN tags), IPv4
 * (with options; fragments pass) or IPv6 (no extension headers), and TCP or UDP, with a bounds
 * check before every read. A flow already in the LRU flow table keeps its target, so a TCP
 * connection is never moved, and a TCP connection that was already open when steering began
 * (its first packet seen is not a SYN) stays with the kernel; a new flow goes through the indirection table to a target, an
 * interface (devmap) or a CPU (cpumap, with -DTARGET_CPUMAP). Whatever it cannot parse, and
 * everything while the lease is expired or no table was written, gets XDP_PASS: it never
 * drops. */
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include "steer.h"

struct flow_key {
    u32 saddr[4];
    u32 daddr[4];
    u16 sport;
    u16 dport;
    u8 proto;
    u8 pad[3];
};

struct vlan_hdr {
    __be16 tci;
    __be16 proto;
};

#define PASS_UNPARSED 0      /* not Ethernet/IP/TCP/UDP, truncated, or a fragment */
#define PASS_DEFAULT 1       /* lease expired or no table: kernel default */
#define PASS_NO_TARGET 2     /* the table named a target with no map entry */
#define PASS_KERNEL_FLOW 3   /* a TCP connection that began before steering: left where it is */
#define TARGET_KERNEL 0xffffffff

BPF_ARRAY(lease, u64, 1);
BPF_ARRAY(ctl, struct steer_ctl, 1);
BPF_ARRAY(tables, struct steer_table, 2);
BPF_TABLE("lru_hash", struct flow_key, u32, flows, 65536);
#ifdef TARGET_CPUMAP
BPF_CPUMAP(targets, MAX_TARGETS);
#else
BPF_DEVMAP(targets, MAX_TARGETS);
#endif
BPF_PERCPU_ARRAY(redirected, u64, MAX_TARGETS);
BPF_PERCPU_ARRAY(passed, u64, 4);

static __always_inline int pass(u32 why)
{
    u64 *c = passed.lookup(&why);
    if (c)
        (*c)++;
    return XDP_PASS;
}

static __always_inline u32 mix(u32 h, u32 v)
{
    h ^= v;
    h *= 0x85ebca6b;
    h ^= h >> 13;
    h *= 0xc2b2ae35;
    return h ^ (h >> 16);
}

static __always_inline u32 flow_hash(struct flow_key *k)
{
    u32 h = 0x9e3779b9;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        h = mix(h, k->saddr[i]);
        h = mix(h, k->daddr[i]);
    }
    return mix(h, ((u32)k->sport << 16 | k->dport) ^ k->proto);
}

int steer_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return pass(PASS_UNPARSED);
    u16 proto = eth->h_proto;
    void *p = eth + 1;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (proto == htons(ETH_P_8021Q) || proto == htons(ETH_P_8021AD)) {
            struct vlan_hdr *v = p;
            if ((void *)(v + 1) > end)
                return pass(PASS_UNPARSED);
            proto = v->proto;
            p = v + 1;
        }
    }
    struct flow_key k = {};
    void *l4;
    int opens = 1;  /* may this packet start a flow? (not a TCP segment past the handshake) */
    if (proto == htons(ETH_P_IP)) {
        struct iphdr *ip = p;
        if ((void *)(ip + 1) > end || ip->ihl < 5 || ip->version != 4)
            return pass(PASS_UNPARSED);
        if (ip->frag_off & htons(0x3fff))          /* MF or an offset: no ports here */
            return pass(PASS_UNPARSED);
        l4 = p + ip->ihl * 4;                       /* skips IP options */
        k.saddr[0] = ip->saddr;
        k.daddr[0] = ip->daddr;
        k.proto = ip->protocol;
    } else if (proto == htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = p;
        if ((void *)(ip6 + 1) > end)
            return pass(PASS_UNPARSED);
        __builtin_memcpy(k.saddr, &ip6->saddr, 16);
        __builtin_memcpy(k.daddr, &ip6->daddr, 16);
        k.proto = ip6->nexthdr;
        l4 = ip6 + 1;
    } else {
        return pass(PASS_UNPARSED);
    }
    if (k.proto == IPPROTO_TCP) {
        struct tcphdr *t = l4;
        if ((void *)(t + 1) > end)
            return pass(PASS_UNPARSED);
        k.sport = t->source;
        k.dport = t->dest;
        opens = t->syn && !t->ack;
    } else if (k.proto == IPPROTO_UDP) {
        struct udphdr *u = l4;
        if ((void *)(u + 1) > end)
            return pass(PASS_UNPARSED);
        k.sport = u->source;
        k.dport = u->dest;
    } else {
        return pass(PASS_UNPARSED);
    }

    u32 zero = 0;
    u64 *deadline = lease.lookup(&zero);
    struct steer_ctl *c = ctl.lookup(&zero);
    /* the coarse clock (jiffies resolution) is ample for a lease of a second and costs a
     * fraction of bpf_ktime_get_ns in a VM */
    if (!deadline || !c || !c->generation || bpf_ktime_get_coarse_ns() > *deadline)
        return pass(PASS_DEFAULT);
    u32 target;
    u32 *known = flows.lookup(&k);
    if (known) {
        target = *known;
        if (target == TARGET_KERNEL)
            return pass(PASS_KERNEL_FLOW);
    } else if (!opens) {
        /* a connection the kernel has been serving since before the table: never move it */
        target = TARGET_KERNEL;
        flows.update(&k, &target);
        return pass(PASS_KERNEL_FLOW);
    } else {
        u32 t = c->active & 1;
        struct steer_table *tb = tables.lookup(&t);
        if (!tb)
            return pass(PASS_DEFAULT);
        target = tb->target[flow_hash(&k) & (STEER_SLOTS - 1)];
        flows.update(&k, &target);
    }
    int verdict = targets.redirect_map(target, XDP_PASS);
    if (verdict != XDP_REDIRECT)
        return pass(PASS_NO_TARGET);
    if (target < MAX_TARGETS) {
        u64 *n = redirected.lookup(&target);
        if (n)
            (*n)++;
    }
    return verdict;
}
