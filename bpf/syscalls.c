/* Syscall probe: per process, completed syscalls by class, time spent in them, errors, and a
 * log2 latency histogram. Raw tracepoints raw_syscalls:sys_enter / sys_exit (cheaper than the
 * classic tracepoints: no argument copy); only their id and return-value arguments are read.
 * The class of each syscall number is looked up in `classes`, filled by the loader; a number
 * outside the interest set (class >= SYS_CLASSES) is dropped by sys_enter's first lines.
 *
 * Every helper call costs 20 to 60 ns on the reference VM (its CPU mitigations make calls and
 * returns dear), against about 70 ns for the two empty programs, so the per-call path avoids
 * them: the per-thread state lives in task-local storage (one call; a hash keyed by tid costs
 * two and a hash walk), and the sampling below draws from a per-thread xorshift generator.
 *
 * Calls and errors are counted on every syscall. Reading the clock is the dearest remaining
 * part, so with LATENCY_SAMPLE = S > 1 only a random one in S calls is timed, and it counts S
 * times in time_ns and the histogram: an unbiased estimate at a fraction of the clock reads. */
#include "common.h"
#include "syscalls.h"
/* maps control, events, filter_*, records, closing, free_slots, recycled and the tuner_*
 * helpers: bpf/probe_common.c */

#ifndef LATENCY_SAMPLE
#define LATENCY_SAMPLE 1    /* time one in LATENCY_SAMPLE calls (a power of two) */
#endif
#define CLS_NONE 0xffffffffu /* no counted syscall in flight */

struct sys_task {
    int slot;       /* SLOT_EXCLUDED when not observed */
    u32 cls;        /* class of the syscall in flight; CLS_NONE when none is counted */
    u64 ts;         /* when it entered; 0 when it is not timed */
    u32 rng;        /* xorshift32 state of the latency sampling; never 0 */
    u32 gen;        /* the filter generation it was decided under */
};

BPF_TASK_STORAGE(tasks, struct sys_task);       /* freed with the task */
BPF_HASH(procs, u32, int, MAX_ENTITIES);        /* tgid -> slot, shared by its threads */
BPF_ARRAY(acc, struct sys_acc, MAX_ENTITIES);
BPF_ARRAY(classes, u8, 512);
BPF_ARRAY(armed, u32, 1);   /* set by the loader once the filters are filled: decide after */
BPF_ARRAY(layout, struct sys_record, 1);      /* never written: lets the loader check the layout */

/* The current thread's state; on its first syscall, decide whether it is observed (and
 * again after the filter gained processes, if it was left out). */
static __always_inline struct sys_task *task_state(void)
{
    struct task_struct *cur = (struct task_struct *)bpf_get_current_task_btf();
    struct sys_task *t = tasks.task_storage_get(cur, 0, 0);
    u32 gen = tuner_filter_gen();
    if (t && (t->slot >= 0 || t->gen == gen))
        return t;
    int zero = 0;
    u32 *on = armed.lookup(&zero);
    if (!on || !*on)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    struct sys_task n = {
        .slot = SLOT_EXCLUDED, .cls = CLS_NONE, .rng = (u32)id * 2654435761u | 1, .gen = gen};
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
    if (t) {
        *t = n;  /* left out under an older filter: decided again */
        return t;
    }
    return tasks.task_storage_get(cur, &n, BPF_LOCAL_STORAGE_GET_F_CREATE);
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
    u32 nr = ctx->args[1];
    u8 *cls = classes.lookup(&nr);  /* an array lookup: inlined, no helper call */
    if (!cls || *cls >= SYS_CLASSES)
        return 0;   /* outside the interest set: dropped first, before the task is looked at */
    u32 c = *cls;
    struct sys_task *t = task_state();
    if (!t || t->slot < 0)
        return 0;
    t->cls = c;
#if LATENCY_SAMPLE > 1
    u32 x = t->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    t->rng = x;
    if (x & (LATENCY_SAMPLE - 1)) {
        t->ts = 0;
        return 0;
    }
#endif
    u64 now = bpf_ktime_get_ns();
    flush(now);
    t->ts = now;
    return 0;
}

RAW_TRACEPOINT_PROBE(sys_exit)
{
    tuner_count_event();
    struct task_struct *cur = (struct task_struct *)bpf_get_current_task_btf();
    struct sys_task *t = tasks.task_storage_get(cur, 0, 0);
    if (!t || t->slot < 0 || t->cls == CLS_NONE)
        return 0;   /* not observed, or it entered before the probe was attached */
    u32 c = t->cls;
    u64 ts = t->ts;
    t->cls = CLS_NONE;
    long ret = ctx->args[1];
    u32 k = t->slot;
    struct sys_acc *a = acc.lookup(&k);
    if (!a || c >= SYS_CLASSES)
        return 0;
    __sync_fetch_and_add(&a->calls[c], 1);
    if (ret < 0 && ret >= -4095)
        __sync_fetch_and_add(&a->errors[c], 1);
    if (!ts)
        return 0;
    u64 lat = bpf_ktime_get_ns() - ts;
    __sync_fetch_and_add(&a->time_ns[c], lat * LATENCY_SAMPLE);
    u32 b = bpf_log2l(lat);
    if (b >= SYS_HIST_BUCKETS)
        b = SYS_HIST_BUCKETS - 1;
    __sync_fetch_and_add(&a->hist[b], LATENCY_SAMPLE);
    return 0;
}
