/* Scheduler probe: per task and per CPU, on-CPU time, run-queue wait, voluntary and involuntary
 * context switches, migrations. Raw tracepoints sched_switch, sched_wakeup, sched_wakeup_new and
 * sched_migrate_task: cheaper than the tracepoints of the same names, which first copy their
 * fields (two command names for a switch) into a perf buffer. Their arguments are the kernel's
 * own (ctx->args[i], checked by the loader against the running kernel's BTF prototypes), and the
 * one struct field read through them, task_struct.pid, is at TASK_PID_OFF, which the loader
 * takes from the running kernel's BTF: no struct layout from the (older) headers is used. One
 * record per active entity per window. */
#include "common.h"
#include "sched.h"
/* maps control, events, filter_*, records and the tuner_* helpers: bpf/probe_common.c */

struct task_state {
    int slot;          /* SLOT_EXCLUDED when the task is not observed */
    u32 reserved;
    u64 wakeup_ts;     /* when it was last woken, 0 once it has run */
};

#define UNDECIDED (-2)

struct cpu_current {   /* what runs on this CPU, since when */
    u64 since;
    u32 tid;
    int slot;          /* slot of the running task; -2 = not decided yet */
};

BPF_TABLE("lru_hash", u32, struct task_state, tasks, MAX_ENTITIES * 16);
BPF_ARRAY(task_acc, struct sched_acc, MAX_ENTITIES);
BPF_ARRAY(cpu_acc, struct sched_acc, MAX_CPUS);
BPF_ARRAY(current_task, struct cpu_current, MAX_CPUS);  /* by CPU: the flush reads all of them */
BPF_ARRAY(layout, struct sched_record, 1);  /* never written: lets the loader check the layout */

#ifndef TASK_PID_OFF
#error "TASK_PID_OFF (task_struct.pid) comes from the loader, tuner/probes/sched.py"
#endif

/* The thread id of a task a raw tracepoint points at. */
static __always_inline u32 task_tid(u64 task)
{
    u32 tid = 0;
    bpf_probe_read_kernel(&tid, sizeof(tid), (void *)(task + TASK_PID_OFF));
    return tid;
}


/* The current task's slot, deciding (filter + slot) the first time it is seen. */
static __always_inline int current_slot(u32 tid)
{
    struct task_state *t = tasks.lookup(&tid);
    if (t)
        return t->slot;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct task_state n = {.slot = SLOT_EXCLUDED};
    if (tuner_wanted(tgid)) {
        n.slot = tuner_alloc_slot();
        if (n.slot >= 0) {
            u32 k = n.slot;
            struct sched_acc *a = task_acc.lookup(&k);
            if (a) {
                a->tgid = tgid;
                a->tid = tid;
                bpf_get_current_comm(a->comm, sizeof(a->comm));
            }
        }
    }
    tasks.update(&tid, &n);
    return n.slot;
}

static __always_inline void emit(u64 start, u64 end, u32 kind, u32 id, struct sched_acc *a,
                                 struct tuner_control *c)
{
    if (!a->oncpu_ns && !a->switches_vol && !a->switches_invol && !a->wakeups &&
        !a->runq_waits && !a->migrations)
        return;  /* idle in this window: no record */
    struct sched_record *r = tuner_reserve(sizeof(*r), c);
    if (!r)
        return;
    r->window_start = start;
    r->window_end = end;
    r->kind = kind;
    r->id = id;
    r->tgid = a->tgid;
    r->reserved = 0;
    __builtin_memcpy(r->comm, a->comm, sizeof(r->comm));
    r->oncpu_ns = TAKE(a->oncpu_ns);
    r->runq_wait_ns = TAKE(a->runq_wait_ns);
    r->runq_waits = TAKE(a->runq_waits);
    r->switches_vol = TAKE(a->switches_vol);
    r->switches_invol = TAKE(a->switches_invol);
    r->migrations = TAKE(a->migrations);
    r->wakeups = TAKE(a->wakeups);
    tuner_submit(r, c);
}

static __always_inline void flush(u64 now)
{
    struct tuner_control *c = 0;
    u64 end = tuner_window_closed(now, &c);
    if (!end || !c)
        return;
    u64 start = end - WINDOW_NS;
    /* Tasks still running at the boundary: charge their time so far to this window, so a task
     * that never switches out still shows its CPU time window by window. */
    for (u32 i = 0; i < MAX_CPUS; i++) {
        u32 k = i;
        struct cpu_current *cur = current_task.lookup(&k);
        if (!cur)
            continue;
        u64 since = cur->since;
        /* a task not yet decided (seen only since load) keeps its time until it switches out */
        if (cur->slot == UNDECIDED || !since || since >= end ||
            !__sync_bool_compare_and_swap(&cur->since, since, end))
            continue;
        u64 ran = end - since;
        struct sched_acc *ca = cpu_acc.lookup(&k);
        if (ca && cur->tid)
            __sync_fetch_and_add(&ca->oncpu_ns, ran);
        if (cur->slot >= 0) {
            u32 s = cur->slot;
            struct sched_acc *a = task_acc.lookup(&s);
            if (a)
                __sync_fetch_and_add(&a->oncpu_ns, ran);
        }
    }
    u64 n = c->nslots;
    for (u32 i = 0; i < MAX_ENTITIES; i++) {
        if (i >= n)
            break;
        u32 k = i;
        struct sched_acc *a = task_acc.lookup(&k);
        if (a)
            emit(start, end, SCHED_KIND_TASK, a->tid, a, c);
    }
    for (u32 i = 0; i < MAX_CPUS; i++) {
        u32 k = i;
        struct sched_acc *a = cpu_acc.lookup(&k);
        if (a)
            emit(start, end, SCHED_KIND_CPU, i, a, c);
    }
}

/* Not attached: the loader runs it with BPF_PROG_TEST_RUN just after each window boundary,
 * so that windows close on time even when no event arrives. */
int tuner_kick(struct bpf_raw_tracepoint_args *ctx)
{
    flush(bpf_ktime_get_ns());
    return 0;
}

/* (bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state);
 * prev is still the current task here */
RAW_TRACEPOINT_PROBE(sched_switch)
{
    tuner_count_event();
    u64 now = bpf_ktime_get_ns();
    flush(now);
    u32 cpu = bpf_get_smp_processor_id();
    struct cpu_current *cur = current_task.lookup(&cpu);
    if (!cur)
        return 0;
    u32 prev = (u32)bpf_get_current_pid_tgid(), next = task_tid(ctx->args[2]);
    /* preempted, or switched out while still runnable (TASK_RUNNING is 0) */
    int involuntary = (ctx->args[0] & 1) || (u32)ctx->args[3] == 0;
    /* claim [since, now) against a concurrent flush that may charge part of it first */
    u64 since = cur->since;
    if (since && !__sync_bool_compare_and_swap(&cur->since, since, now))
        since = cur->since;
    u64 ran = (since && since < now && cur->tid == prev) ? now - since : 0;

    struct sched_acc *ca = cpu_acc.lookup(&cpu);
    if (ca && prev)
        __sync_fetch_and_add(&ca->oncpu_ns, ran);

    /* prev is the current task: account its time on the CPU */
    if (prev) {
        int slot = (cur->tid == prev && cur->slot != UNDECIDED) ? cur->slot : current_slot(prev);
        if (slot >= 0) {
            u32 k = slot;
            struct sched_acc *a = task_acc.lookup(&k);
            if (a) {
                __sync_fetch_and_add(&a->oncpu_ns, ran);
                if (involuntary)
                    __sync_fetch_and_add(&a->switches_invol, 1);
                else
                    __sync_fetch_and_add(&a->switches_vol, 1);
            }
            if (ca) {
                if (involuntary)
                    __sync_fetch_and_add(&ca->switches_invol, 1);
                else
                    __sync_fetch_and_add(&ca->switches_vol, 1);
            }
        }
    }

    /* prev preempted: still runnable, so it waits on the run queue from now on (as BCC's
     * runqlat counts it); without this, CPU-bound tasks that share a CPU show no wait */
    if (prev && involuntary) {
        struct task_state *pt = tasks.lookup(&prev);
        if (pt && pt->slot >= 0)
            pt->wakeup_ts = now;
    }

    /* next: its wait since wakeup or preemption ends now */
    int nslot = UNDECIDED;
    if (next) {
        struct task_state *t = tasks.lookup(&next);
        if (t) {
            nslot = t->slot;
            if (t->slot >= 0 && t->wakeup_ts && now > t->wakeup_ts) {
                u64 wait = now - t->wakeup_ts;
                u32 k = t->slot;
                struct sched_acc *a = task_acc.lookup(&k);
                if (a) {
                    __sync_fetch_and_add(&a->runq_wait_ns, wait);
                    __sync_fetch_and_add(&a->runq_waits, 1);
                }
                if (ca) {
                    __sync_fetch_and_add(&ca->runq_wait_ns, wait);
                    __sync_fetch_and_add(&ca->runq_waits, 1);
                }
            }
            t->wakeup_ts = 0;
        }
    }
    cur->since = now;
    cur->tid = next;
    cur->slot = nslot;
    return 0;
}

static __always_inline void woken(u32 tid)
{
    tuner_count_event();
    struct task_state *t = tasks.lookup(&tid);
    if (!t || t->slot < 0)
        return;
    t->wakeup_ts = bpf_ktime_get_ns();
    u32 k = t->slot;
    struct sched_acc *a = task_acc.lookup(&k);
    if (a)
        __sync_fetch_and_add(&a->wakeups, 1);
}

/* (struct task_struct *p) */
RAW_TRACEPOINT_PROBE(sched_wakeup)
{
    woken(task_tid(ctx->args[0]));
    return 0;
}

/* (struct task_struct *p) */
RAW_TRACEPOINT_PROBE(sched_wakeup_new)
{
    woken(task_tid(ctx->args[0]));
    return 0;
}

/* (struct task_struct *p, int dest_cpu) */
RAW_TRACEPOINT_PROBE(sched_migrate_task)
{
    tuner_count_event();
    u32 tid = task_tid(ctx->args[0]);
    struct task_state *t = tasks.lookup(&tid);
    if (!t || t->slot < 0)
        return 0;
    u32 k = t->slot;
    struct sched_acc *a = task_acc.lookup(&k);
    if (a)
        __sync_fetch_and_add(&a->migrations, 1);
    u32 cpu = (u32)ctx->args[1];
    struct sched_acc *ca = cpu_acc.lookup(&cpu);
    if (ca)
        __sync_fetch_and_add(&ca->migrations, 1);
    return 0;
}
