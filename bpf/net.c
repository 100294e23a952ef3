/* Network probe: per socket of the observed processes, bytes and messages in and out, TCP
 * retransmits and state changes; per listening port, connections completed into the accept
 * queue; per CPU, packets processed in softirq (NAPI). The hot paths are raw tracepoints,
 * which skip the plain tracepoints' copy of their fields into a perf buffer: sock_send_length
 * and sock_recv_length (every send and receive, in process context, so the process filter
 * applies) and napi_poll. The rare events are plain tracepoints, whose fields carry the flow's
 * addresses: sock:inet_sock_set_state and tcp:tcp_retransmit_skb. The raw tracepoints' argument
 * types are checked by the loader against the running kernel's BTF; the only struct sock fields
 * read, once per new socket, are its family and protocol (SK_FAMILY_OFF, SK_PROTOCOL_OFF) and,
 * for TCP, its state, addresses and ports (SK_STATE_OFF, SK_*ADDR_OFF, SK_DPORT_OFF,
 * SK_NUM_OFF), at offsets the loader takes from that BTF too (tuner/probes/net.py, FIELDS). So
 * a connection made before the probe was loaded has them from its first I/O, and no map keeps
 * every TCP socket's addresses from its state changes (an LRU hash did, before 2026-12-03: a
 * busy host's other sockets could push an observed one's out before its first I/O).
 *
 * Slots are recycled: a TCP socket that reached TCP_CLOSE has its last counts emitted at the
 * next window's flush, then (up to FREE_PER_FLUSH a flush) its slot goes onto a free list (a
 * BPF queue) that new sockets take from first, so connection churn does not use up
 * MAX_ENTITIES. A UDP socket has no close that a tracepoint shows: once it has had no I/O for
 * UDP_IDLE_NS its slot goes the same way, and should it send or receive again it is decided
 * afresh (the same entity, a new slot), so a resolver's socket per query does not use the
 * slots up either. */
#include "common.h"
#include "net.h"
/* maps control, events, filter_*, records, closing, free_slots, recycled and the tuner_*
 * helpers: bpf/probe_common.c */

#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define UDP_IDLE_NS 1000000000ULL  /* a UDP socket this long without I/O gives its slot back */
#define UDP_IDLE_WINDOWS (UDP_IDLE_NS / WINDOW_NS > 0 ? UDP_IDLE_NS / WINDOW_NS : 1)
#define IDLE_QUEUED 0xffffffffU    /* its slot is on the closing queue */
#define AF_INET_ 2
#define AF_INET6_ 10
#define TCP_ESTABLISHED 1
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define TCP_LISTEN 10
#define MAX_PORTS 256

#if !defined(SK_FAMILY_OFF) || !defined(SK_PROTOCOL_OFF) || !defined(SK_NUM_OFF)
#error "the SK_*_OFF offsets come from the loader, tuner/probes/net.py (FIELDS)"
#endif

struct flow {
    u16 family, protocol, sport, dport;
    u8 saddr[16];
    u8 daddr[16];
};

/* sk -> slot, of the sockets observed: a plain hash, each entry deleted when its slot is
 * freed, so that no other socket pushes one out. (Evicted from an LRU hash by other
 * processes' sockets, an observed socket took a new slot at its next I/O and stranded the old
 * one, until the slots ran out.) */
BPF_HASH(socks, u64, int, MAX_ENTITIES * 2);
/* sockets left out (not the filter's, or no slot free); the least recent are forgotten, and
 * decided again at their next I/O */
BPF_TABLE("lru_hash", u64, u8, skipped, MAX_ENTITIES * 16);
BPF_HASH(listeners, u16, int, MAX_PORTS);                   /* port -> slot */
BPF_ARRAY(acc, struct net_acc, MAX_ENTITIES);
BPF_ARRAY(cpu_acc, struct net_acc, MAX_CPUS);
BPF_ARRAY(layout, struct net_record, 1);      /* never written: lets the loader check the layout */
/* entities made since load: each socket entity's id, so that two connections with the same
 * ports whose struct sock is the same memory (freed and reused) are two entities */
BPF_ARRAY(serials, u64, 1);
/* closing, free_slots: sockets that reached TCP_CLOSE, and their slots once emitted */

static __always_inline struct net_acc *new_entity(u32 kind, u64 sk, int *slot)
{
    u64 id = bpf_get_current_pid_tgid();
    *slot = tuner_alloc_slot();
    if (*slot < 0)
        return 0;
    u32 k = *slot;
    struct net_acc *a = acc.lookup(&k);
    if (!a)
        return 0;
    a->kind = kind;
    a->tgid = id >> 32;
    a->tid = (u32)id;
    a->sk = sk;
    int zero = 0;
    u64 *serial = serials.lookup(&zero);
    if (serial)
        a->id = (u32)__sync_fetch_and_add(serial, 1) + 1;
    bpf_get_current_comm(a->comm, sizeof(a->comm));
    return a;
}

static __always_inline void copy_flow(struct net_acc *a, struct flow *f)
{
    a->family = f->family;
    a->protocol = f->protocol;
    a->sport = f->sport;
    a->dport = f->dport;
    __builtin_memcpy(a->saddr, f->saddr, 16);
    __builtin_memcpy(a->daddr, f->daddr, 16);
}

/* A 16-bit field of a struct sock a raw tracepoint points at. */
static __always_inline u16 sk_u16(u64 sk, u32 off)
{
    u16 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (void *)(sk + off));
    return v;
}

/* A TCP socket's state, addresses and ports, as inet_sock_set_state gives them (ports in host
 * order, addresses in network order), read from the socket itself. */
static __always_inline void sock_flow(u64 sk, struct net_acc *a)
{
    u8 state = 0;
    bpf_probe_read_kernel(&state, sizeof(state), (void *)(sk + SK_STATE_OFF));
    a->state = state;
    a->sport = sk_u16(sk, SK_NUM_OFF);  /* skc_num: the local port, in host order */
    a->dport = ntohs(sk_u16(sk, SK_DPORT_OFF));
    if (a->family == AF_INET_) {
        bpf_probe_read_kernel(a->saddr, 4, (void *)(sk + SK_RCV_SADDR_OFF));
        bpf_probe_read_kernel(a->daddr, 4, (void *)(sk + SK_DADDR_OFF));
    }
#ifdef SK_V6_DADDR_OFF
    else if (a->family == AF_INET6_) {
        bpf_probe_read_kernel(a->saddr, 16, (void *)(sk + SK_V6_RCV_SADDR_OFF));
        bpf_probe_read_kernel(a->daddr, 16, (void *)(sk + SK_V6_DADDR_OFF));
    }
#endif
}

/* The socket's accumulator; called in process context, deciding on first sight. */
static __always_inline struct net_acc *sock_acc(u64 sk)
{
    int *known = socks.lookup(&sk);
    if (known) {
        u32 k = *known;
        return acc.lookup(&k);
    }
    if (skipped.lookup(&sk))
        return 0;
    int slot = SLOT_EXCLUDED;
    struct net_acc *a = 0;
    if (tuner_wanted(bpf_get_current_pid_tgid() >> 32))
        a = new_entity(NET_KIND_SOCK, sk, &slot);
    if (a && socks.insert(&sk, &slot) != 0) {
        /* no room (or decided meanwhile on another CPU): the slot goes back */
        u32 k = slot;
        __builtin_memset(a, 0, sizeof(*a));
        free_slots.push(&k, 0);
        a = 0;
    }
    if (!a) {
        u8 left_out = 1;
        skipped.update(&sk, &left_out);
        return 0;
    }
    a->family = sk_u16(sk, SK_FAMILY_OFF);
    a->protocol = sk_u16(sk, SK_PROTOCOL_OFF);
    if (a->protocol == IPPROTO_TCP_)
        sock_flow(sk, a);
    return a;
}

static __always_inline void emit(u64 end, struct net_acc *a, struct tuner_control *c)
{
    if (!a->bytes_in && !a->bytes_out && !a->retransmits && !a->state_changes && !a->accepts &&
        !a->rx_packets)
        return;
    struct net_record *r = tuner_reserve(sizeof(*r), c);
    if (!r)
        return;
    r->window_start = end - WINDOW_NS;
    r->window_end = end;
    __builtin_memcpy(&r->acc, a, sizeof(*a));
    r->acc.bytes_in = TAKE(a->bytes_in);
    r->acc.bytes_out = TAKE(a->bytes_out);
    r->acc.msgs_in = TAKE(a->msgs_in);
    r->acc.msgs_out = TAKE(a->msgs_out);
    r->acc.retransmits = TAKE(a->retransmits);
    r->acc.state_changes = TAKE(a->state_changes);
    r->acc.accepts = TAKE(a->accepts);
    r->acc.rx_packets = TAKE(a->rx_packets);
    tuner_submit(r, c);
}

/* Called for each UDP socket's slot before its window's counts go out: count a window
 * without I/O, and queue the slot once the socket has been idle for UDP_IDLE_NS (once: a
 * queued slot is marked until the closing queue frees it). */
static __always_inline void udp_idle(struct net_acc *a, u32 k)
{
    if (a->idle == IDLE_QUEUED)
        return;
    if (a->msgs_in || a->msgs_out) {
        a->idle = 0;
        return;
    }
    a->idle += 1;
    if (a->idle >= UDP_IDLE_WINDOWS && closing.push(&k, 0) == 0)
        a->idle = IDLE_QUEUED;
}

static __always_inline void flush(u64 now)
{
    struct tuner_control *c = 0;
    u64 end = tuner_window_closed(now, &c);
    if (!end || !c)
        return;
    /* sockets that closed: their last counts out, then forgotten (the address may come back
     * as another socket's) and their slots freed (probe_common.c) */
    for (int i = 0; i < FREE_PER_FLUSH; i++) {
        u32 k;
        if (closing.pop(&k) != 0)
            break;
        struct net_acc *a = acc.lookup(&k);
        if (!a)
            continue;
        emit(end, a, c);
        u64 sk = a->sk;
        int *cur = socks.lookup(&sk);
        if (cur && *cur == (int)k)
            socks.delete(&sk);
        __builtin_memset(a, 0, sizeof(*a));
        free_slots.push(&k, 0);
    }
    u64 n = c->nslots;
    for (u32 i = 0; i < MAX_ENTITIES; i++) {
        if (i >= n)
            break;
        u32 k = i;
        struct net_acc *a = acc.lookup(&k);
        if (!a)
            continue;
        if (a->kind == NET_KIND_SOCK && a->protocol == IPPROTO_UDP_)
            udp_idle(a, k);
        emit(end, a, c);
    }
    for (u32 i = 0; i < MAX_CPUS; i++) {
        u32 k = i;
        struct net_acc *a = cpu_acc.lookup(&k);
        if (a) {
            a->kind = NET_KIND_CPU;
            a->id = i;
            emit(end, a, c);
        }
    }
}

/* Not attached: the loader runs it with BPF_PROG_TEST_RUN just after each window boundary,
 * so that windows close on time even when no event arrives. */
int tuner_kick(struct bpf_raw_tracepoint_args *ctx)
{
    flush(bpf_ktime_get_ns());
    return 0;
}

static __always_inline void count_io(u64 sk, int ret, int out)
{
    tuner_count_event();
    if (tuner_window_due())  /* the clock only near the window's end */
        flush(bpf_ktime_get_ns());
    if (ret <= 0)
        return;
    struct net_acc *a = sock_acc(sk);
    if (!a)
        return;
    /* the thread that serves the connection now (a thread-per-core server's worker) */
    a->tid = (u32)bpf_get_current_pid_tgid();
    __sync_fetch_and_add(out ? &a->bytes_out : &a->bytes_in, ret);
    __sync_fetch_and_add(out ? &a->msgs_out : &a->msgs_in, 1);
}

/* (struct sock *sk, int ret, int flags) */
RAW_TRACEPOINT_PROBE(sock_send_length)
{
    count_io(ctx->args[0], (int)ctx->args[1], 1);
    return 0;
}

/* (struct sock *sk, int ret, int flags) */
RAW_TRACEPOINT_PROBE(sock_recv_length)
{
    count_io(ctx->args[0], (int)ctx->args[1], 0);
    return 0;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    tuner_count_event();
    if (args->protocol != IPPROTO_TCP_)
        return 0;
    u64 sk = (u64)args->skaddr;
    struct flow f = {.family = args->family, .protocol = args->protocol,
                     .sport = args->sport, .dport = args->dport};
    if (args->family == AF_INET_) {
        __builtin_memcpy(f.saddr, args->saddr, 4);
        __builtin_memcpy(f.daddr, args->daddr, 4);
    } else {
        __builtin_memcpy(f.saddr, args->saddr_v6, 16);
        __builtin_memcpy(f.daddr, args->daddr_v6, 16);
    }

    int *slot = socks.lookup(&sk);
    if (args->oldstate == TCP_CLOSE || args->newstate == TCP_SYN_RECV) {
        /* a new socket (connect or listen from CLOSE, or an accepted child) at the address
         * of an old one: it is decided afresh on its first I/O, and the old entity keeps its
         * counts until its slot is freed */
        skipped.delete(&sk);
        if (slot) {
            socks.delete(&sk);
            slot = 0;
        }
    }
    if (slot && *slot >= 0) {
        u32 k = *slot;
        struct net_acc *a = acc.lookup(&k);
        if (a) {
            copy_flow(a, &f);
            a->state = args->newstate;
            __sync_fetch_and_add(&a->state_changes, 1);
            if (args->newstate == TCP_CLOSE && a->kind == NET_KIND_SOCK)
                closing.push(&k, 0);
        }
    }
    u16 port = args->sport;
    if (args->newstate == TCP_LISTEN && !listeners.lookup(&port) &&
        tuner_wanted(bpf_get_current_pid_tgid() >> 32)) {
        /* listen() runs in the owning process: a port it listens on becomes an entity */
        int ls = SLOT_EXCLUDED;
        struct net_acc *a = new_entity(NET_KIND_LISTEN, 0, &ls);
        if (a) {
            copy_flow(a, &f);
            a->state = TCP_LISTEN;
            listeners.update(&port, &ls);
        }
    }
    if (args->oldstate == TCP_SYN_RECV && args->newstate == TCP_ESTABLISHED) {
        int *ls = listeners.lookup(&port);
        if (ls && *ls >= 0) {
            u32 k = *ls;
            struct net_acc *a = acc.lookup(&k);
            if (a)
                __sync_fetch_and_add(&a->accepts, 1);
        }
    }
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
    tuner_count_event();
    u64 sk = (u64)args->skaddr;
    int *slot = socks.lookup(&sk);
    if (slot && *slot >= 0) {
        u32 k = *slot;
        struct net_acc *a = acc.lookup(&k);
        if (a)
            __sync_fetch_and_add(&a->retransmits, 1);
    }
    return 0;
}

/* (struct napi_struct *napi, int work, int budget) */
RAW_TRACEPOINT_PROBE(napi_poll)
{
    tuner_count_event();
    u32 cpu = bpf_get_smp_processor_id();
    struct net_acc *a = cpu_acc.lookup(&cpu);
    int work = (int)ctx->args[1];
    if (a && work > 0)
        __sync_fetch_and_add(&a->rx_packets, work);
    return 0;
}
