/* Threads that look, each time round a busy loop, at what a restore must
 * have finished before any code of the program runs again: the
 * process's executable (/proc/self/exe names this program), the
 * restorer's window (no mapping left at 0x3f0000000000), and their own
 * stacks (8 KiB below the loop, filled and read back: nothing else may
 * write there once they run). They count their looks.
 *
 *   exewatch stop [THREADS [MODE]]
 *   MODE: shared-altstack, seccomp, seccomp-no-wake-op, seccomp-munmap-high,
 *         seccomp-wake-high, seccomp-alt-low, tstp or errno
 *
 * With shared-altstack every thread sets the same sigaltstack (legal
 * while no two take a signal on it at once). With seccomp, once every
 * thread runs, a filter for all of them (SECCOMP_FILTER_FLAG_TSYNC) makes
 * getppid fail with EPERM, and each look checks that it still does (a
 * restore must finish its threads' release with the filter back);
 * seccomp-no-wake-op also makes futex(FUTEX_WAKE_OP) fail, and
 * seccomp-munmap-high kills the process at a munmap of an address from
 * 0x700000000000 up (where mmap puts things; not the restorer's window):
 * calls of the restorer's own finishing chain, which it must not make
 * under such filters; seccomp-wake-high makes futex(FUTEX_WAKE) of a
 * word on a thread's stack fail, which every way of releasing the
 * restored threads without the tracer makes (capture refuses it);
 * seccomp-alt-low gives each thread a sigaltstack of its own below 4 GiB
 * and makes futex fail there (where a restore puts their wait words:
 * capture refuses it). With tstp the
 * main thread blocks SIGTSTP and the capture point is a SIGTSTP to the
 * process, which one of the other threads takes (stopped by SIGTSTP,
 * its main thread unable to take it). With errno the threads only set
 * errno and spin, and check it kept its value.
 *
 * Starts THREADS (default 4) busy threads, prints "READY <pid>" and
 * "LOOKS <address of the count>", and stops
 * itself (SIGSTOP: the capture point). Once continued it lets them look
 * for another 50 ms, stops them and prints "PASS" or one line
 * "FAIL thread N: ..." per thread that saw a restore unfinished, exit 1.
 * A restore under a storm of SIGSTOP/SIGCONT once let a thread whose
 * wait was restarted run before the restorer had named the executable
 * (a review: 9 restores in 60). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WINDOW ((void *)0x3f0000000000UL)
#define MAXT 64

static char exe[PATH_MAX];
static atomic_int stop_all;
static atomic_ulong looks;
static atomic_int started;
static char seen[MAXT][PATH_MAX + 64];

/* 8 KiB of this thread's stack below its loop filled and read back:
 * whatever a restore writes below a thread's frame once the thread runs
 * is seen here. The first byte that changed (its offset + 1), or 0. */
static __attribute__((noinline)) int deep(void) {
    volatile unsigned char buf[8192];
    for (int k = 0; k < (int)sizeof buf; k++) buf[k] = 0xa5;
    for (int k = 0; k < (int)sizeof buf; k++)
        if (buf[k] != 0xa5) return k + 1;
    return 0;
}

static char *shared_alt;
static int alt_low;
static atomic_int filtered;

/* getppid fails with EPERM; with no_wake_op, futex(FUTEX_WAKE_OP) with
 * ENOSYS; with wake_high, futex(FUTEX_WAKE) of a word from
 * 0x700000000000 up (thread stacks) with EPERM; with munmap_high, a
 * munmap at an address from there up kills the process; everything
 * else is allowed. For every thread (TSYNC). */
static int install_filter(int no_wake_op, int munmap_high, int wake_high, int futex_low) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_futex, 0, 11),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]) + 4),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, futex_low ? 0 : 0xffffffff, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, FUTEX_CMD_MASK),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, no_wake_op ? FUTEX_WAKE_OP : 0xffff, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, wake_high ? FUTEX_WAKE : 0xffff, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]) + 4),
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x7000, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_munmap, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]) + 4),
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, munmap_high ? 0x7000 : 0xffffffff, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) == 0 ? 0 : -1;
}

static void *watch(void *arg) {
    long i = (long)arg;
    char now[PATH_MAX];
    int seen_once = 0;
    if (shared_alt) {
        stack_t ss = {.ss_sp = shared_alt, .ss_size = 65536};
        sigaltstack(&ss, NULL);
    }
    if (alt_low) {
        /* A sigaltstack of its own below 4 GiB (where a restore puts the
         * thread's frame and wait word). */
        void *p = mmap((void *)(0x20000000UL + (unsigned long)i * 0x100000UL), 65536,
                       PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        stack_t ss = {.ss_sp = p, .ss_size = 65536};
        if (p == MAP_FAILED || sigaltstack(&ss, NULL) != 0) {
            perror("low sigaltstack");
            exit(2);
        }
    }
    while (!atomic_load(&stop_all)) {
        int off = deep();
        if (off && !seen[i][0])
            snprintf(seen[i], sizeof seen[i], "its stack changed under it, %d bytes into 8 KiB", off - 1);
        ssize_t n = readlink("/proc/self/exe", now, sizeof now - 1);
        now[n < 0 ? 0 : n] = 0;
        /* msync fails (ENOMEM) where nothing is mapped. */
        int window = msync(WINDOW, 4096, MS_ASYNC) == 0;
        if (!seen[i][0] && (strcmp(now, exe) != 0 || window))
            snprintf(seen[i], sizeof seen[i], "exe %s%s", now,
                     window ? ", the restorer's window mapped" : "");
        if (atomic_load(&filtered) && !seen[i][0] && !(syscall(SYS_getppid) == -1 && errno == EPERM))
            snprintf(seen[i], sizeof seen[i], "it ran without its seccomp filter");
        atomic_fetch_add(&looks, 1);
        if (!seen_once) {
            seen_once = 1;
            atomic_fetch_add(&started, 1);
        }
    }
    return NULL;
}

/* With errno: set errno once, then spin without a system call until
 * told to stop, and check errno is still what it set (a restore's
 * release must not write it). */
static void *keep_errno(void *arg) {
    long i = (long)arg;
    errno = 1234 + (int)i;
    atomic_fetch_add(&looks, 1);
    atomic_fetch_add(&started, 1);
    while (!atomic_load(&stop_all))
        ;
    if (errno != 1234 + (int)i)
        snprintf(seen[i], sizeof seen[i], "its errno changed to %d", errno);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "stop") != 0) {
        fprintf(stderr, "usage: exewatch stop [THREADS]\n");
        return 2;
    }
    int nt = argc > 2 ? atoi(argv[2]) : 4;
    if (nt < 1 || nt > MAXT) return 2;
    const char *mode = argc > 3 ? argv[3] : "";
    if (strcmp(mode, "shared-altstack") == 0) shared_alt = malloc(65536);
    alt_low = strcmp(mode, "seccomp-alt-low") == 0;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) return 2;
    exe[n] = 0;
    pthread_t th[MAXT];
    for (long i = 0; i < nt; i++)
        pthread_create(&th[i], NULL, strcmp(mode, "errno") == 0 ? keep_errno : watch, (void *)i);
    /* Every thread has looked once before the capture point (under load
     * some had not run yet, and the count was 0 at the stop). */
    while (atomic_load(&started) < nt) sched_yield();
    if (strncmp(mode, "seccomp", 7) == 0) {
        if (install_filter(strcmp(mode, "seccomp-no-wake-op") == 0,
                           strcmp(mode, "seccomp-munmap-high") == 0,
                           strcmp(mode, "seccomp-wake-high") == 0,
                           strcmp(mode, "seccomp-alt-low") == 0) != 0) {
            perror("seccomp");
            return 2;
        }
        atomic_store(&filtered, 1);
    }
    printf("READY %d\nLOOKS %p\n", getpid(), (void *)&looks);
    fflush(stdout);
    if (strcmp(mode, "tstp") == 0) {
        sigset_t tstp;
        sigemptyset(&tstp);
        sigaddset(&tstp, SIGTSTP);
        pthread_sigmask(SIG_BLOCK, &tstp, NULL);
        kill(getpid(), SIGTSTP);
    } else {
        raise(SIGSTOP);
    }
    struct timespec d = {0, 50 * 1000 * 1000};
    nanosleep(&d, NULL);
    atomic_store(&stop_all, 1);
    int bad = 0;
    for (long i = 0; i < nt; i++) {
        pthread_join(th[i], NULL);
        if (seen[i][0]) {
            printf("FAIL thread %ld: %s\n", i, seen[i]);
            bad = 1;
        }
    }
    if (atomic_load(&looks) == 0) {
        printf("FAIL no thread looked\n");
        bad = 1;
    }
    if (!bad) printf("PASS\n");
    return bad;
}
