/* Scheduler probe: per task and per CPU, on-CPU time, run-queue wait, voluntary and involuntary
 * context switches, migrations, wakeups. One attach point, the raw tracepoint sched_switch
 * (cheaper than the tracepoint of that name, which first copies two command names into a perf
 * buffer), and no clock read per event: the times are the scheduler's own accounting, read
 * from the task_struct of the task switched out, which is the current task here:
 *   se.sum_exec_runtime   time on a CPU, brought up to date just before the switch;
 *   sched_info.run_delay  time runnable on a run queue (CONFIG_SCHED_INFO), and
 *   sched_info.pcount     times it was switched in, each ending such a wait;
 *   se.nr_migrations      moves between CPUs.
 * The current task comes BTF-typed (bpf_get_current_task_btf), so these are plain loads, and
 * its per-task state lives in task-local storage (freed with the task); the next task comes
 * as a raw pointer, read once with bpf_probe_read_kernel (its sum_exec_runtime, where the
 * CPU's account starts). The offsets come from the loader, from the running kernel's BTF
 * (tuner/probes/sched.py); the verifier checks each load against that BTF too.
 *
 * Windows close on the clock only near their end (tuner_window_due); a task still running at
 * a boundary is charged what the scheduler accounted for it so far (its sum_exec_runtime is
 * brought up to date at every tick). One record per active entity per window. */
#include "common.h"
#include "sched.h"
/* maps control, events, filter_*, records, closing, free_slots, recycled and the tuner_*
 * helpers: bpf/probe_common.c */

#if !defined(TASK_PID_OFF) || !defined(TASK_SUM_EXEC_OFF) || !defined(TASK_RUN_DELAY_OFF) || \
    !defined(TASK_PCOUNT_OFF) || !defined(TASK_MIGRATIONS_OFF)
#error "the task_struct offsets come from the loader, tuner/probes/sched.py"
#endif

#define SLOT_ENDED (-2)        /* the task exited: its slot is on its way to free_slots */
#define TASK_DEAD_STATE 0x80   /* TASK_DEAD in the switched-out task's state: its last switch */

struct task_state {     /* of a task switched out at least once since load */
    int slot;           /* SLOT_EXCLUDED when the task is not observed, or SLOT_ENDED */
    u32 gen;            /* the filter generation it was decided under */
    u64 run_delay;      /* sched_info.run_delay at its last switch-out */
    u64 pcount;         /* sched_info.pcount at its last switch-out */
    u64 migrations;     /* se.nr_migrations at its last switch-out */
    u32 slept;          /* its last switch-out was voluntary: it was woken since */
    u32 reserved;
};

struct cpu_current {    /* what runs on this CPU */
    u64 task;           /* its task_struct; 0 while a switch rewrites this entry */
    u64 base;           /* its sum_exec_runtime already charged (at switch-in, or a flush) */
};

BPF_TASK_STORAGE(tasks, struct task_state);
struct task_slot {      /* an observed task's slot */
    u64 task;           /* its task_struct: a thread id reused by a new task is not it */
    int slot;
    u32 reserved;
    u64 charged;        /* its sum_exec_runtime already charged to the slot */
};

/* by thread id, of observed tasks only, each deleted at its task's last switch-out. A plain
 * hash, not an LRU one: an LRU hash evicts recent entries long before it is full when the
 * CPUs' caches of free entries (up to 128 each) hold most of it (kernel commit d4adf1c), and
 * a task whose entry went is charged nothing at a flush */
BPF_HASH(slots, u32, struct task_slot, MAX_ENTITIES * 4);
BPF_ARRAY(task_acc, struct sched_acc, MAX_ENTITIES);
BPF_ARRAY(cpu_acc, struct sched_acc, MAX_CPUS);
BPF_ARRAY(current_task, struct cpu_current, MAX_CPUS);  /* by CPU: the flush reads all of them */
BPF_ARRAY(layout, struct sched_record, 1);  /* never written: lets the loader check the layout */

/* A field of the current task (BTF-typed): a load the verifier checks, no helper call. */
#define CURRENT_U64(t, off) (*(volatile u64 *)((char *)(t) + (off)))
#define CURRENT_U32(t, off) (*(volatile u32 *)((char *)(t) + (off)))

/* A u64 field of a task behind a raw pointer. */
static __always_inline u64 task_u64(u64 task, u32 off)
{
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (void *)(task + off));
    return v;
}

static __always_inline void add(u64 *field, u64 v)
{
    if (v)
        __sync_fetch_and_add(field, v);
}

/* Claims a task's time up to `sum` (its sum_exec_runtime) for its slot: what was not yet
 * charged, against a flush on another CPU charging the same task meanwhile. The task's own
 * account, not its CPU's: a switch the kernel did not trace (it happens, see docs/probes/sched.md)
 * leaves a CPU's entry naming another task, and would lose the time of the task it missed. */
static __always_inline u64 claim(struct task_slot *ts, u64 sum)
{
    for (int i = 0; i < 3; i++) {
        u64 old = ts->charged;
        if (sum <= old)
            return 0;
        if (__sync_bool_compare_and_swap(&ts->charged, old, sum))
            return sum - old;
    }
    return 0;
}

/* The current task's state; decided (filter + slot) the first time it is switched out, and
 * again after the filter gained processes if it was left out. `charged`: its time on the CPU
 * before the run that ends now, which is not this probe's. */
static __always_inline struct task_state *current_state(struct task_struct *task, u32 tid,
                                                        u64 charged)
{
    u32 gen = tuner_filter_gen();
    struct task_state *t = tasks.task_storage_get(task, 0, 0);
    if (t && (t->slot != SLOT_EXCLUDED || t->gen == gen))
        return t;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    int slot = SLOT_EXCLUDED;
    if (tuner_wanted(tgid)) {
        slot = tuner_alloc_slot();
        if (slot >= 0) {
            u32 k = slot;
            struct sched_acc *a = task_acc.lookup(&k);
            if (a) {
                a->tgid = tgid;
                a->tid = tid;
                bpf_get_current_comm(a->comm, sizeof(a->comm));
            }
            struct task_slot ts = {.task = (u64)task, .slot = slot, .charged = charged};
            slots.update(&tid, &ts);
        }
    }
    /* counting starts here: what the scheduler accounted before is not this probe's */
    struct task_state n = {
        .slot = slot,
        .gen = gen,
        .run_delay = CURRENT_U64(task, TASK_RUN_DELAY_OFF),
        .pcount = CURRENT_U64(task, TASK_PCOUNT_OFF),
        .migrations = CURRENT_U64(task, TASK_MIGRATIONS_OFF),
    };
    if (t) {
        *t = n;
        return t;
    }
    return tasks.task_storage_get(task, &n, BPF_LOCAL_STORAGE_GET_F_CREATE);
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

/* The time a CPU's running task has had since its account's base, claimed against the switch
 * that may end its run meanwhile. */
static __always_inline void charge_running(u32 cpu)
{
    u32 k = cpu;
    struct cpu_current *cur = current_task.lookup(&k);
    if (!cur)
        return;
    u64 task = cur->task, base = cur->base;
    if (!task)
        return;
    u64 sum = task_u64(task, TASK_SUM_EXEC_OFF);
    if (sum <= base || cur->task != task || !__sync_bool_compare_and_swap(&cur->base, base, sum))
        return;
    u64 ran = sum - base;
    struct sched_acc *ca = cpu_acc.lookup(&k);
    if (ca)
        add(&ca->oncpu_ns, ran);
    u32 tid = 0;
    bpf_probe_read_kernel(&tid, sizeof(tid), (void *)(task + TASK_PID_OFF));
    struct task_slot *ts = slots.lookup(&tid);
    if (ts && ts->task == task && ts->slot >= 0) {  /* not a new task under a dead one's id */
        u32 s = ts->slot;
        struct sched_acc *a = task_acc.lookup(&s);
        if (a)
            add(&a->oncpu_ns, claim(ts, sum));
    }
}

static __always_inline void flush(u64 now)
{
    struct tuner_control *c = 0;
    u64 end = tuner_window_closed(now, &c);
    if (!end || !c)
        return;
    u64 start = end - WINDOW_NS;
    /* tasks still running at the boundary: charge their time so far to this window, so that
     * a task that never switches out still shows its CPU time window by window */
    for (u32 i = 0; i < MAX_CPUS; i++)
        charge_running(i);
    /* tasks that exited: their last counts out, then their slots freed (probe_common.c) */
    for (int i = 0; i < FREE_PER_FLUSH; i++) {
        u32 k;
        if (closing.pop(&k) != 0)
            break;
        struct sched_acc *a = task_acc.lookup(&k);
        if (!a)
            continue;
        emit(start, end, SCHED_KIND_TASK, a->tid, a, c);
        __builtin_memset(a, 0, sizeof(*a));
        free_slots.push(&k, 0);
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
    if (tuner_window_due())
        flush(bpf_ktime_get_ns());
    u32 cpu = bpf_get_smp_processor_id();
    struct cpu_current *cur = current_task.lookup(&cpu);
    if (!cur)
        return 0;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    u64 prev = ctx->args[1], next = ctx->args[2];
    u64 sum = CURRENT_U64(task, TASK_SUM_EXEC_OFF);
    /* claim what prev ran since switch-in or the last flush, against a concurrent flush */
    u64 base = cur->base;
    if (!__sync_bool_compare_and_swap(&cur->base, base, sum))
        base = cur->base;
    /* (a base of 0: a new task's first run, all of it since its fork) */
    u64 ran = (cur->task == prev && sum > base) ? sum - base : 0;
    struct sched_acc *ca = cpu_acc.lookup(&cpu);
    if (ca)
        add(&ca->oncpu_ns, ran);

    u32 tid = CURRENT_U32(task, TASK_PID_OFF);
    /* tid 0: the idle task */
    struct task_state *t = tid ? current_state(task, tid, sum - ran) : 0;
    if (t && t->slot >= 0) {
        /* preempted, or switched out while still runnable (TASK_RUNNING is 0) */
        int involuntary = (ctx->args[0] & 1) || (u32)ctx->args[3] == 0;
        u64 delay = CURRENT_U64(task, TASK_RUN_DELAY_OFF);
        u64 pcount = CURRENT_U64(task, TASK_PCOUNT_OFF);
        u64 migrations = CURRENT_U64(task, TASK_MIGRATIONS_OFF);
        u64 wait = delay > t->run_delay ? delay - t->run_delay : 0;
        u64 waits = pcount > t->pcount ? pcount - t->pcount : 0;
        u64 moved = migrations > t->migrations ? migrations - t->migrations : 0;
        u32 woken = t->slept;
        t->run_delay = delay;
        t->pcount = pcount;
        t->migrations = migrations;
        t->slept = !involuntary;
        u32 k = t->slot;
        struct sched_acc *a = task_acc.lookup(&k);
        struct task_slot *ts = slots.lookup(&tid);
        if (a) {
            /* from the task's own account; from its CPU's only if it has none */
            add(&a->oncpu_ns, ts && ts->task == (u64)task ? claim(ts, sum) : ran);
            add(&a->runq_wait_ns, wait);
            add(&a->runq_waits, waits);
            add(&a->migrations, moved);
            add(&a->wakeups, woken);
            add(involuntary ? &a->switches_invol : &a->switches_vol, 1);
        }
        if ((u32)ctx->args[3] & TASK_DEAD_STATE) {
            /* its last switch-out: the task exited. Its slot's counts go out at the next
             * flush, then the slot is freed for a new task, so a server that replaces its
             * workers (a reload, a respawn) does not use the slots up */
            t->slot = SLOT_ENDED;
            slots.delete(&tid);
            closing.push(&k, 0);
        }
        if (ca) {
            add(&ca->runq_wait_ns, wait);
            add(&ca->runq_waits, waits);
            add(&ca->migrations, moved);
            add(involuntary ? &ca->switches_invol : &ca->switches_vol, 1);
        }
    }

    /* next's account starts at what the scheduler has charged it so far; the entry reads as
     * empty to a flush while it is rewritten */
    u64 next_base = task_u64(next, TASK_SUM_EXEC_OFF);
    *(volatile u64 *)&cur->task = 0;
    *(volatile u64 *)&cur->base = next_base;
    *(volatile u64 *)&cur->task = next;
    return 0;
}
