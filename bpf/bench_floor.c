/* The floor under `tuner bench overhead`: empty programs on every attach point the probes use
 * (bpf/sched.c, bpf/syscalls.c, bpf/net.c), with the same attach types. Whatever a workload
 * loses with these attached is the price of the attach points themselves (the tracepoint slow
 * path of each syscall, the program calls), which no probe on them can undercut; the bench
 * reports the probes' ratio beside this one. With -DONLY_RAW_SYSCALLS, only raw_syscalls
 * sys_enter and sys_exit, the attach points the syscall probe cannot do without. */

RAW_TRACEPOINT_PROBE(sys_enter) { return 0; }
RAW_TRACEPOINT_PROBE(sys_exit) { return 0; }
#ifndef ONLY_RAW_SYSCALLS  /* the `sysfloor` arm: the syscall probe's attach points alone */
RAW_TRACEPOINT_PROBE(sched_switch) { return 0; }
RAW_TRACEPOINT_PROBE(sock_send_length) { return 0; }
RAW_TRACEPOINT_PROBE(sock_recv_length) { return 0; }
TRACEPOINT_PROBE(sock, inet_sock_set_state) { return 0; }
TRACEPOINT_PROBE(tcp, tcp_retransmit_skb) { return 0; }
RAW_TRACEPOINT_PROBE(napi_poll) { return 0; }
#endif
