/* Maps and helpers shared by tuner's probes: the process filter, slot allocation and the
 * window flush that emits one summary record per active entity per window. The loader
 * (tuner/probes/base.py) compiles this text in front of each probe's own source. */
#include "common.h"

BPF_ARRAY(control, struct tuner_control, 1);
BPF_PERCPU_ARRAY(events, u64, 1);           /* raw events seen, per CPU */
BPF_HASH(filter_pids, u32, u8, 1024);
BPF_HASH(filter_cgroups, u64, u8, 64);
BPF_ARRAY(filter_gen, u32, 1);  /* bumped by the loader when the filter gains processes */
BPF_RINGBUF_OUTPUT(records, RINGBUF_PAGES);

static __always_inline void tuner_count_event(void)
{
    int zero = 0;
    u64 *n = events.lookup(&zero);
    if (n)
        (*n)++;
}

/* Does the current task belong to an observed process? Called once per new task. */
static __always_inline int tuner_wanted(u32 tgid)
{
#if defined(FILTER_PIDS) || defined(FILTER_CGROUP) || defined(FILTER_COMM)
#ifdef FILTER_PIDS
    if (filter_pids.lookup(&tgid))
        return 1;
#endif
#ifdef FILTER_CGROUP
    u64 cg = bpf_get_current_cgroup_id();
    if (filter_cgroups.lookup(&cg))
        return 1;
#endif
#ifdef FILTER_COMM
    char want[16] = FILTER_COMM;
    char comm[16] = {};
    bpf_get_current_comm(comm, sizeof(comm));
    int same = 1;
#pragma unroll
    for (int i = 0; i < 16; i++) {
        if (comm[i] != want[i]) { same = 0; break; }
        if (!want[i]) break;
    }
    if (same)
        return 1;
#endif
    return 0;
#else
    return 1;
#endif
}

/* The filter's generation: a task decided out under an older one is decided again (a
 * server's new worker may have run before the loader added its pid). */
static __always_inline u32 tuner_filter_gen(void)
{
    int zero = 0;
    u32 *g = filter_gen.lookup(&zero);
    return g ? *g : 0;
}

/* Slots of entities that ended (a task exited, a socket closed): the probe pushes a slot
 * onto closing when its entity ends, after the entity's last counts. Its flush pops each
 * queued slot, emits its last counts, clears it and moves it to free_slots, where
 * tuner_alloc_slot takes slots first; all of that before the flush emits the other slots, so
 * a slot queued meanwhile waits for the next flush. (Freed after emitting all slots, a slot
 * queued during that emit would be cleared with counts added after it, and those lost.) */
BPF_QUEUE(free_slots, u32, MAX_ENTITIES);
BPF_QUEUE(closing, u32, MAX_ENTITIES);
BPF_ARRAY(recycled, u64, 1);  /* slots handed out again from free_slots */
#define FREE_PER_FLUSH 128    /* ended slots freed per flush, at most */

/* Hand out a freed slot, else the next one, or SLOT_EXCLUDED when all are taken. */
static __always_inline int tuner_alloc_slot(void)
{
    int zero = 0;
    u32 freed;
    if (free_slots.pop(&freed) == 0 && freed < MAX_ENTITIES) {
        u64 *n = recycled.lookup(&zero);
        if (n)
            __sync_fetch_and_add(n, 1);
        return (int)freed;
    }
    struct tuner_control *c = control.lookup(&zero);
    if (!c)
        return SLOT_EXCLUDED;
    u64 slot = __sync_fetch_and_add(&c->nslots, 1);
    if (slot >= MAX_ENTITIES) {
        __sync_fetch_and_add(&c->overflow, 1);
        return SLOT_EXCLUDED;
    }
    return (int)slot;
}

/* When the current window has ended, claim the flush (one CPU wins) and return the window's
 * end; otherwise return 0. The caller then emits its records for [end - WINDOW_NS, end). */
static __always_inline u64 tuner_window_closed(u64 now, struct tuner_control **cp)
{
    int zero = 0;
    struct tuner_control *c = control.lookup(&zero);
    if (!c)
        return 0;
    u64 due = c->next_flush;
    if (now < due)
        return 0;
    u64 next = (now / WINDOW_NS + 1) * WINDOW_NS;
    if (!__sync_bool_compare_and_swap(&c->next_flush, due, next))
        return 0;  /* another CPU flushes */
    /* jiffy J + k comes at most k ticks after now, so before `next` with k rounded down */
    c->check_jiffies = bpf_jiffies64() + (next - now) / JIFFY_NS;
    if (!due)
        return 0;  /* the first event: just start the clock */
    __sync_fetch_and_add(&c->flushes, 1);
    *cp = c;
    return due;
}

/* May the current window have ended? A test that costs no helper call (bpf_jiffies64 is
 * inlined by the verifier; bpf_ktime_get_ns is a call, about 45 ns on the reference VM): for
 * a probe that needs the time only to close windows, so that it reads the clock in the last
 * tick or two of a window instead of on every event. */
static __always_inline int tuner_window_due(void)
{
    int zero = 0;
    struct tuner_control *c = control.lookup(&zero);
    return c && bpf_jiffies64() >= c->check_jiffies;
}

/* Reserve a record in the ring buffer; a full ring buffer is counted as a lost record. */
static __always_inline void *tuner_reserve(u32 size, struct tuner_control *c)
{
    void *r = records.ringbuf_reserve(size);
    if (!r)
        __sync_fetch_and_add(&c->lost, 1);
    return r;
}

/* Hand a filled record to user space and count it. */
static __always_inline void tuner_submit(void *r, struct tuner_control *c)
{
    records.ringbuf_submit(r, 0);
    __sync_fetch_and_add(&c->records, 1);
}
