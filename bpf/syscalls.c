/* Syscall probe: per process, completed syscalls by class, time spent in them, errors, and a
 * log2 latency histogram. Raw tracepoints raw_syscalls:sys_enter / sys_exit (cheaper than the
 * classic tracepoints: no argument copy); only their id and return-value arguments are read.
 * The class of each syscall number is looked up in `classes`, filled by the loader. */
#include "common.h"
#include "syscalls.h"
/* maps control, events, filter_*, records and the tuner_* helpers: bpf/probe_common.c */

struct sys_task {
    int slot;       /* SLOT_EXCLUDED when not observed */
    u32 nr;         /* syscall in flight */
    u64 ts;         /* when it entered; 0 when none is in flight */
};

BPF_TABLE("lru_hash", u32, struct sys_task, tasks, MAX_ENTITIES * 16);
BPF_HASH(procs, u32, int, MAX_ENTITIES);        /* tgid -> slot, shared by its threads */
BPF_ARRAY(acc, struct sys_acc, MAX_ENTITIES);
BPF_ARRAY(classes, u8, 512);
BPF_ARRAY(layout, struct sys_record, 1);      /* never written: lets the loader check the layout */

static __always_inline struct sys_task *decide(u32 tid, u32 tgid)
{
    struct sys_task n = {.slot = SLOT_EXCLUDED};
    int *known = procs.lookup(&tgid);
    if (known) {
        n.slot = *known;
    } else if (tuner_wanted(tgid)) {
        n.slot = tuner_alloc_slot();
        if (n.slot >= 0) {
            u32 k = n.slot;
            struct sys_acc *a = acc.lookup(&k);
            if (a) {
                a->tgid = tgid;
                bpf_get_current_comm(a->comm, sizeof(a->comm));
            }
            procs.update(&tgid, &n.slot);
        }
    }
    tasks.update(&tid, &n);
    return tasks.lookup(&tid);
}

static __always_inline void flush(u64 now)
{
    struct tuner_control *c = 0;
    u64 end = tuner_window_closed(now, &c);
    if (!end || !c)
        return;
    u64 n = c->nslots;
    for (u32 i = 0; i < MAX_ENTITIES; i++) {
        if (i >= n)
            break;
        u32 k = i;
        struct sys_acc *a = acc.lookup(&k);
        if (!a)
            continue;
        u64 total = a->calls[0] + a->calls[1] + a->calls[2] + a->calls[3] + a->calls[4];
        if (!total)
            continue;
        struct sys_record *r = tuner_reserve(sizeof(*r), c);
        if (!r)
            continue;
        r->window_start = end - WINDOW_NS;
        r->window_end = end;
        r->acc.tgid = a->tgid;
        r->acc.reserved = 0;
        __builtin_memcpy(r->acc.comm, a->comm, sizeof(r->acc.comm));
#pragma unroll
        for (int j = 0; j < SYS_CLASSES; j++) {
            r->acc.calls[j] = TAKE(a->calls[j]);
            r->acc.time_ns[j] = TAKE(a->time_ns[j]);
            r->acc.errors[j] = TAKE(a->errors[j]);
        }
#pragma unroll
        for (int j = 0; j < SYS_HIST_BUCKETS; j++)
            r->acc.hist[j] = TAKE(a->hist[j]);
        tuner_submit(r, c);
    }
}

/* Not attached: the loader runs it with BPF_PROG_TEST_RUN just after each window boundary,
 * so that windows close on time even when no event arrives. */
int tuner_kick(struct bpf_raw_tracepoint_args *ctx)
{
    flush(bpf_ktime_get_ns());
    return 0;
}

RAW_TRACEPOINT_PROBE(sys_enter)
{
    tuner_count_event();
    u64 now = bpf_ktime_get_ns();
    flush(now);
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    struct sys_task *t = tasks.lookup(&tid);
    if (!t) {
        t = decide(tid, id >> 32);
        if (!t)
            return 0;
    }
    if (t->slot < 0)
        return 0;
    t->nr = ctx->args[1];
    t->ts = now;
    return 0;
}

RAW_TRACEPOINT_PROBE(sys_exit)
{
    tuner_count_event();
    u32 tid = bpf_get_current_pid_tgid();
    struct sys_task *t = tasks.lookup(&tid);
    if (!t || t->slot < 0 || !t->ts)
        return 0;
    u64 lat = bpf_ktime_get_ns() - t->ts;
    t->ts = 0;
    long ret = ctx->args[1];
    u32 nr = t->nr;
    u8 *cls = classes.lookup(&nr);
    u32 c = cls ? *cls : 0;
    u32 k = t->slot;
    struct sys_acc *a = acc.lookup(&k);
    if (!a || c >= SYS_CLASSES)
        return 0;
    __sync_fetch_and_add(&a->calls[c], 1);
    __sync_fetch_and_add(&a->time_ns[c], lat);
    if (ret < 0 && ret >= -4095)
        __sync_fetch_and_add(&a->errors[c], 1);
    u32 b = bpf_log2l(lat);
    if (b >= SYS_HIST_BUCKETS)
        b = SYS_HIST_BUCKETS - 1;
    __sync_fetch_and_add(&a->hist[b], 1);
    return 0;
}
