/* Workloads for `tuner bench overhead`, built on first use with the system C compiler.
 *
 *   tuner_wl sys SECONDS   tight loop of getppid(2): the most syscall-heavy load there is
 *   tuner_wl ctx SECONDS   two processes on one CPU passing a byte through two pipes:
 *                          every round trip is two context switches and two wakeups
 *   tuner_wl tcp SECONDS   the same over a TCP connection on loopback (64-byte messages):
 *                          socket sends and receives, which the network probe follows
 *   tuner_wl churn SECONDS a new TCP connection on loopback for each 64-byte exchange
 *                          (connect, send, receive, close): every operation is a socket
 *                          the network probe meets for the first time, then sees close
 *
 * Prints "<operations> <elapsed seconds>". The binary is named tuner_wl so that the probes
 * can select it by command name. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  /* vDSO: no syscall */
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: tuner_wl sys|ctx|tcp|churn SECONDS\n");
        return 2;
    }
    double secs = atof(argv[2]), start = now(), end = start + secs;
    unsigned long long ops = 0;
    if (!strcmp(argv[1], "sys")) {
        while (now() < end) {
            for (int i = 0; i < 1000; i++)
                syscall(SYS_getppid);
            ops += 1000;
        }
    } else if (!strcmp(argv[1], "ctx")) {
        int ping[2], pong[2];
        char b = 0;
        if (pipe(ping) || pipe(pong))
            return 1;
        pin(0);
        pid_t child = fork();
        if (child == 0) {
            while (read(ping[0], &b, 1) == 1 && write(pong[1], &b, 1) == 1)
                ;
            _exit(0);
        }
        while (now() < end) {
            for (int i = 0; i < 100; i++) {
                if (write(ping[1], &b, 1) != 1 || read(pong[0], &b, 1) != 1)
                    return 1;
            }
            ops += 100;
        }
        close(ping[1]);
        kill(child, SIGKILL);
        waitpid(child, 0, 0);
    } else if (!strcmp(argv[1], "tcp")) {
        char msg[64] = {0};
        struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(addr);
        int one = 1, lst = socket(AF_INET, SOCK_STREAM, 0);
        if (lst < 0 || bind(lst, (struct sockaddr *)&addr, len) || listen(lst, 1) ||
            getsockname(lst, (struct sockaddr *)&addr, &len))
            return 1;
        pin(0);
        pid_t child = fork();
        if (child == 0) {
            int s = accept(lst, 0, 0);
            setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            while (recv(s, msg, sizeof(msg), MSG_WAITALL) == sizeof(msg) &&
                   send(s, msg, sizeof(msg), 0) == sizeof(msg))
                ;
            _exit(0);
        }
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0 || connect(s, (struct sockaddr *)&addr, len))
            return 1;
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        start = now();
        end = start + secs;
        while (now() < end) {
            for (int i = 0; i < 100; i++) {
                if (send(s, msg, sizeof(msg), 0) != sizeof(msg) ||
                    recv(s, msg, sizeof(msg), MSG_WAITALL) != sizeof(msg))
                    return 1;
            }
            ops += 100;
        }
        close(s);
        kill(child, SIGKILL);
        waitpid(child, 0, 0);
    } else if (!strcmp(argv[1], "churn")) {
        /* The client closes first with SO_LINGER 0 (a reset): no TIME_WAIT, so the ephemeral
         * ports last however fast connections come. The server echoes, waits for the reset,
         * and closes its side. */
        char msg[64] = {0};
        struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        struct linger rst = {.l_onoff = 1, .l_linger = 0};
        socklen_t len = sizeof(addr);
        int lst = socket(AF_INET, SOCK_STREAM, 0);
        if (lst < 0 || bind(lst, (struct sockaddr *)&addr, len) || listen(lst, 128) ||
            getsockname(lst, (struct sockaddr *)&addr, &len))
            return 1;
        pin(0);
        pid_t child = fork();
        if (child == 0) {
            for (;;) {
                int s = accept(lst, 0, 0);
                if (s < 0)
                    _exit(1);
                if (recv(s, msg, sizeof(msg), MSG_WAITALL) == sizeof(msg) &&
                    send(s, msg, sizeof(msg), 0) == sizeof(msg))
                    recv(s, msg, sizeof(msg), 0);  /* 0 or the reset */
                close(s);
            }
        }
        start = now();
        end = start + secs;
        while (now() < end) {
            for (int i = 0; i < 10; i++) {
                int s = socket(AF_INET, SOCK_STREAM, 0);
                if (s < 0 || connect(s, (struct sockaddr *)&addr, len) ||
                    send(s, msg, sizeof(msg), 0) != sizeof(msg) ||
                    recv(s, msg, sizeof(msg), MSG_WAITALL) != sizeof(msg))
                    return 1;
                setsockopt(s, SOL_SOCKET, SO_LINGER, &rst, sizeof(rst));
                close(s);
            }
            ops += 10;
        }
        kill(child, SIGKILL);
        waitpid(child, 0, 0);
    } else {
        fprintf(stderr, "unknown workload %s\n", argv[1]);
        return 2;
    }
    printf("%llu %.6f\n", ops, now() - start);
    return 0;
}
