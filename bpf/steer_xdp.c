/* XDP steering: an L4 load balancer's fast path. Parses Ethernet (up to two VLAN tags), IPv4
 * (with options; fragments pass) or IPv6 (up to IPV6_EXT_MAX hop-by-hop, routing and
 * destination-options headers; a fragment header passes), and TCP or UDP, with a bounds check
 * before every read and every length field checked against the frame and its enclosing header
 * (IPv4 total length, IPv6 payload length, TCP data offset, UDP length): a packet that lies
 * about its lengths passes to the kernel, unsteered and unremembered. A flow already in the LRU flow table keeps its target, so a TCP
 * connection is never moved, and a TCP connection that was already open when steering began
 * (its first packet seen is not a SYN) stays with the kernel; a new flow goes through the
 * indirection table to a target, an interface (devmap) or a CPU (cpumap, with
 * -DTARGET_CPUMAP). Whatever it cannot parse, and everything while the lease is expired or no
 * table was written, gets XDP_PASS: it never drops.
 *
 * Backends (-DBACKENDS): the targets are other hosts, reached through a devmap. The program
 * then writes each target's Ethernet addresses into the frame (the backend's MAC as
 * destination, the leaving interface's as source: direct server return, the backend holds the
 * service address on its loopback and answers the client itself), and a flow already placed
 * keeps its backend while the lease is lapsed: moving an open TCP connection to another host
 * would break it, so only new flows fall back to the kernel (its own routing, e.g. ECMP).
 *
 * Cost: on this kind of kernel every call into a kernel function pays for the return-stack
 * mitigation (spec_rstack_overflow "Safe RET"), about 10 to 30 ns. Array lookups and
 * bpf_jiffies64 are inlined by the verifier; a hash-table lookup, a clock helper and the
 * redirect are calls. So the lease is kept in jiffies, and established flows are served from
 * a per-CPU cache of the flow table (an array), which leaves the redirect as the one call on
 * the fast path. -DNO_FLOW_CACHE builds the program without the cache, for the benchmark. */
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/in6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include "steer.h"

/* A flow. An IPv4 flow fills the first two u64 words; the IPv6 rest is zero for it. Aligned
 * so that it can be hashed and compared a u64 at a time. */
struct flow_key {
    u32 saddr;        /* IPv4 address, or the first word of the IPv6 one */
    u32 daddr;
    u16 sport;
    u16 dport;
    u8 proto;
    u8 v6;            /* 1: saddr6/daddr6 hold the other 12 bytes of IPv6 addresses */
    u8 pad[2];
    u32 saddr6[3];
    u32 daddr6[3];
} __attribute__((aligned(8)));

/* One entry of the per-CPU flow cache: a copy of a flow's entry in the flow table. */
struct flow_slot {
    struct flow_key key;
    u32 target;
    u32 valid;
    u64 touched;      /* jiffies when the flow table last heard of this flow through the cache */
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
#define IPV6_EXT_MAX 4       /* extension headers parsed before the transport header */

BPF_ARRAY(lease, struct steer_lease, 1);
BPF_ARRAY(ctl, struct steer_ctl, 1);
BPF_ARRAY(tables, struct steer_table, 2);
BPF_TABLE("lru_hash", struct flow_key, u32, flows, 65536);
/* The flow table is the truth; this direct-mapped per-CPU cache of it spares established flows
 * the hash-table lookup. A flow's target never changes, so a cached copy is either missing or
 * right. A flow served from the cache is looked up in the flow table again every
 * FLOW_TOUCH_JIFFIES (and put back if it was evicted), so that the LRU still sees it in use. */
#define FLOW_CACHE_BITS 12
#define FLOW_TOUCH_JIFFIES 256
BPF_PERCPU_ARRAY(flow_cache, struct flow_slot, 1 << FLOW_CACHE_BITS);
#ifdef TARGET_CPUMAP
BPF_CPUMAP(targets, MAX_TARGETS);
#else
BPF_DEVMAP(targets, MAX_TARGETS);
#endif
BPF_PERCPU_ARRAY(redirected, u64, MAX_TARGETS);
#ifdef BACKENDS
struct target_mac {
    u8 dst[ETH_ALEN];  /* the backend's */
    u8 src[ETH_ALEN];  /* the interface the frame leaves through */
};
BPF_ARRAY(target_macs, struct target_mac, MAX_TARGETS);
#endif
BPF_PERCPU_ARRAY(passed, u64, 4);

static __always_inline int pass(u32 why)
{
    u64 *c = passed.lookup(&why);
    if (c)
        (*c)++;
    return XDP_PASS;
}

static __always_inline int same_flow(const struct flow_key *a, const struct flow_key *b)
{
    const u64 *x = (const u64 *)a, *y = (const u64 *)b;
    if (x[0] != y[0] || x[1] != y[1])
        return 0;
    return !a->v6 || (x[2] == y[2] && x[3] == y[3] && x[4] == y[4]);
}

/* A 64-bit hash of the flow: one multiply per word, then a finalizer that spreads every input
 * bit over the high bits (the indirection slot is the top byte). */
static __always_inline u64 flow_hash(const struct flow_key *k)
{
    const u64 *w = (const u64 *)k;
    u64 h = w[0] * 0x9e3779b97f4a7c15ULL ^ w[1] * 0xc2b2ae3d27d4eb4fULL;
    if (k->v6)
        h ^= w[2] * 0x165667b19e3779f9ULL ^ w[3] * 0xd6e8feb86659fd93ULL
           ^ w[4] * 0xff51afd7ed558ccdULL;
    h ^= h >> 31;
    h *= 0x94d049bb133111ebULL;
    return h ^ (h >> 29);
}

_Static_assert(STEER_SLOTS <= 256, "the slot is taken from the top byte of the flow hash");

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
    u32 l4_len;     /* bytes of the transport segment the IP header says follow it */
    int opens = 1;  /* may this packet start a flow? (not a TCP segment past the handshake) */
    if (proto == htons(ETH_P_IP)) {
        struct iphdr *ip = p;
        if ((void *)(ip + 1) > end || ip->ihl < 5 || ip->version != 4)
            return pass(PASS_UNPARSED);
        if (ip->frag_off & htons(0x3fff))          /* MF or an offset: no ports here */
            return pass(PASS_UNPARSED);
        u32 hlen = ip->ihl * 4, tot = ntohs(ip->tot_len);
        /* the datagram the header describes must fit its header and the frame */
        if (tot < hlen || p + tot > end)
            return pass(PASS_UNPARSED);
        l4 = p + hlen;                              /* skips IP options */
        l4_len = tot - hlen;
        k.saddr = ip->saddr;
        k.daddr = ip->daddr;
        k.proto = ip->protocol;
    } else if (proto == htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = p;
        if ((void *)(ip6 + 1) > end || ip6->version != 6)
            return pass(PASS_UNPARSED);
        l4_len = ntohs(ip6->payload_len);           /* 0: a jumbogram, not steered */
        if ((void *)(ip6 + 1) + l4_len > end)
            return pass(PASS_UNPARSED);
        k.saddr = ip6->saddr.in6_u.u6_addr32[0];
        k.daddr = ip6->daddr.in6_u.u6_addr32[0];
        __builtin_memcpy(k.saddr6, &ip6->saddr.in6_u.u6_addr32[1], 12);
        __builtin_memcpy(k.daddr6, &ip6->daddr.in6_u.u6_addr32[1], 12);
        k.v6 = 1;
        u8 next = ip6->nexthdr;
        l4 = ip6 + 1;
        /* a bounded chain of extension headers: hop-by-hop, routing, destination options
         * (a fragment header, or anything else, ends the parse: passed to the kernel) */
#pragma unroll
        for (int i = 0; i < IPV6_EXT_MAX; i++) {
            if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS)
                break;
            struct ipv6_opt_hdr *ext = l4;
            if ((void *)(ext + 1) > end)
                return pass(PASS_UNPARSED);
            u32 elen = (ext->hdrlen + 1) * 8;
            if (elen > l4_len || l4 + elen > end)
                return pass(PASS_UNPARSED);
            next = ext->nexthdr;
            l4 += elen;
            l4_len -= elen;
        }
        k.proto = next;
    } else {
        return pass(PASS_UNPARSED);
    }
    if (k.proto == IPPROTO_TCP) {
        struct tcphdr *t = l4;
        if ((void *)(t + 1) > end || l4_len < sizeof(*t))
            return pass(PASS_UNPARSED);
        u32 doff = t->doff * 4;
        if (doff < sizeof(*t) || doff > l4_len || l4 + doff > end)
            return pass(PASS_UNPARSED);
        k.sport = t->source;
        k.dport = t->dest;
        opens = t->syn && !t->ack;
    } else if (k.proto == IPPROTO_UDP) {
        struct udphdr *u = l4;
        if ((void *)(u + 1) > end || l4_len < sizeof(*u))
            return pass(PASS_UNPARSED);
        u32 ulen = ntohs(u->len);
        if (ulen < sizeof(*u) || ulen > l4_len)
            return pass(PASS_UNPARSED);
        k.sport = u->source;
        k.dport = u->dest;
    } else {
        return pass(PASS_UNPARSED);
    }

    u32 zero = 0;
    struct steer_lease *l = lease.lookup(&zero);
    struct steer_ctl *c = ctl.lookup(&zero);
    u64 now = bpf_jiffies64();
    int live = l && c && c->generation && now <= l->deadline_jiffies;
#ifndef BACKENDS
    if (!live)
        return pass(PASS_DEFAULT);
#endif
    u64 h = flow_hash(&k);
    u32 target;
    int placed = 0;  /* the flow's target came from the flow table or its cache */
#ifdef NO_FLOW_CACHE
    struct flow_slot *cached = 0;
#else
    u32 ci = (u32)(h >> 8) & ((1 << FLOW_CACHE_BITS) - 1);
    struct flow_slot *cached = flow_cache.lookup(&ci);
#endif
    if (cached && cached->valid && same_flow(&cached->key, &k)) {
        target = cached->target;
        placed = 1;
        if (now - cached->touched > FLOW_TOUCH_JIFFIES) {
            cached->touched = now;
            if (!flows.lookup(&k))
                flows.update(&k, &target);
        }
    } else {
        u32 *known = flows.lookup(&k);
        if (known) {
            target = *known;
            placed = 1;
        } else if (!opens) {
            /* a connection the kernel has been serving since before the table: never move it */
            target = TARGET_KERNEL;
            flows.update(&k, &target);
            return pass(PASS_KERNEL_FLOW);
        } else {
            /* a new flow while the lease is lapsed: the kernel's (c is checked again for the
             * verifier, which does not carry it through `live`) */
            if (!live || !c)
                return pass(PASS_DEFAULT);
            u32 t = c->active & 1;
            struct steer_table *tb = tables.lookup(&t);
            if (!tb)
                return pass(PASS_DEFAULT);
            target = tb->target[(h >> 56) & (STEER_SLOTS - 1)];
        }
    }
    if (target == TARGET_KERNEL)
        return pass(PASS_KERNEL_FLOW);
#ifdef BACKENDS
    struct target_mac *mac = target_macs.lookup(&target);
    if (!mac)
        return pass(PASS_NO_TARGET);
#endif
    /* the target must exist before the frame is touched or the flow remembered: a devmap
     * entry goes when its interface does, and a frame rewritten for a backend it cannot reach
     * would be dropped by the local stack (and so would every later packet of the flow) */
    int verdict = targets.redirect_map(target, XDP_PASS);
    if (verdict != XDP_REDIRECT) {
        if (placed) {  /* its target is gone: the next packet is decided afresh */
            flows.delete(&k);
            if (cached)
                cached->valid = 0;
        }
        return pass(PASS_NO_TARGET);
    }
#ifdef BACKENDS
    __builtin_memcpy(eth->h_dest, mac->dst, ETH_ALEN);
    __builtin_memcpy(eth->h_source, mac->src, ETH_ALEN);
#endif
    if (!placed) {
        flows.update(&k, &target);
    }
    if (cached && !(placed && cached->valid && same_flow(&cached->key, &k))) {
        cached->key = k;
        cached->target = target;
        cached->valid = 1;
        cached->touched = now;
    }
    if (target < MAX_TARGETS) {
        u64 *n = redirected.lookup(&target);
        if (n)
            (*n)++;
    }
    return verdict;
}
