/* Self-checking target for cryo's fidelity tests (ZDTM style).
 *
 *   fidelity CASE DIR
 *
 * Sets up the state CASE names (files, pipes, mapping flags, prctl state,
 * credentials, locks, queued signals ...), takes a snapshot of everything
 * the process can observe about itself, prints "READY <pid>", stops itself
 * with raise(SIGSTOP) (the capture point), and after it continues takes the
 * snapshot again: any difference is printed on stderr and fails the run.
 * Then the case checks its own state by behaviour (reads its pipe, sees its
 * lock from a child, ...). Prints "PASS <case>" (exit 0) or "FAIL <why>"
 * (exit 1).
 *
 * The snapshot is the net that catches silent losses nobody thought of:
 * every fd (number, FD_CLOEXEC, status flags, identity, offset, locks),
 * /proc/self/status (ids, groups, capabilities, seccomp, speculation, masks),
 * every prctl the process can read, scheduling, personality, oom score,
 * rlimits, umask, cwd and root, sigaltstack, membarrier registrations and
 * the VmFlags of every mapping.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/membarrier.h>
#include <linux/seccomp.h>
#include <linux/audit.h>
#include <sys/ptrace.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/inotify.h>
#include <sys/fanotify.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/signalfd.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/personality.h>
#include <sys/resource.h>
#include <linux/filter.h>
#include <linux/bpf.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stddef.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <grp.h>
#include <pthread.h>
#include <ucontext.h>
#include <linux/futex.h>
#include <time.h>
#include <sys/fsuid.h>
#include <unistd.h>

#ifndef PR_GET_MDWE
#define PR_SET_MDWE 65
#define PR_GET_MDWE 66
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif
#ifndef PR_GET_MEMORY_MERGE
#define PR_GET_MEMORY_MERGE 68
#endif
#ifndef MEMBARRIER_CMD_GET_REGISTRATIONS
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

static char DIRPATH[2048];

static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    exit(1);
}

#define CHECK(cond, ...) do { if (!(cond)) fail(__VA_ARGS__); } while (0)

/* ---- the snapshot ---- */

static char snap_before[1 << 17], snap_after[1 << 17];
static size_t snap_len;
static char *snap_buf;

static void out(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(snap_buf + snap_len, (1 << 17) - snap_len, fmt, ap);
    va_end(ap);
    if (n > 0) snap_len += (size_t)n;
    if (snap_len >= (1 << 17)) fail("snapshot too large");
}

static ssize_t read_file(const char *path, char *buf, size_t len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, buf + got, len - 1 - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = 0;
    return (ssize_t)got;
}

/* Lines of FILE whose key (before ':') is in KEYS. */
static void status_lines(const char *const *keys) {
    static char buf[1 << 15];
    if (read_file("/proc/self/status", buf, sizeof buf) < 0) fail("read status");
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
        for (const char *const *k = keys; *k; k++) {
            size_t kl = strlen(*k);
            if (!strncmp(line, *k, kl) && line[kl] == ':') out("status %s\n", line);
        }
}

static void fds_lines(int skip) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) fail("opendir fd");
    int nums[1024], n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 1024) {
        if (e->d_name[0] == '.') continue;
        int fd = atoi(e->d_name);
        if (fd == dirfd(d) || fd == skip) continue;
        nums[n++] = fd;
    }
    closedir(d);
    /* sort */
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (nums[j] < nums[i]) { int t = nums[i]; nums[i] = nums[j]; nums[j] = t; }
    for (int i = 0; i < n; i++) {
        int fd = nums[i];
        if (fd <= 2) continue; /* the restorer's own stdio */
        struct stat st;
        fstat(fd, &st);
        off_t pos = lseek(fd, 0, SEEK_CUR);
        /* (A file made with O_TMPFILE keeps __O_TMPFILE | O_DIRECTORY in
         * its flags, which no reopen sets: a documented difference,
         * docs/pitfalls.md, "O_TMPFILE".) */
        int fl = fcntl(fd, F_GETFL);
        if (S_ISREG(st.st_mode)) fl &= ~O_TMPFILE;
        out("fd %d cloexec=%d fl=%o mode=%o rdev=%x size=%lld pos=%lld\n", fd,
            fcntl(fd, F_GETFD), fl, st.st_mode, (unsigned)st.st_rdev,
            S_ISREG(st.st_mode) ? (long long)st.st_size : 0LL, (long long)pos);
        char path[64], link[4096];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t ln = readlink(path, link, sizeof link - 1);
        if (ln > 0) {
            link[ln] = 0;
            /* identity of anon and pipe objects changes; paths must not */
            if (strncmp(link, "pipe:", 5) && strncmp(link, "anon_inode:", 11) && strncmp(link, "/proc/", 6) &&
                strncmp(link, "socket:", 7))
                out("fd %d -> %s\n", fd, link);
            if (!strncmp(link, "anon_inode:", 11)) out("fd %d -> %s\n", fd, link);
        }
        static char info[8192];
        snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
        if (read_file(path, info, sizeof info) > 0) {
            for (char *l = strtok(info, "\n"); l; l = strtok(NULL, "\n")) {
                /* pos, flags, mnt_id and ino are above or vary; keep the rest
                 * (locks, eventfd counts, epoll items, ...), with our own pid
                 * written as "self" */
                /* (a periodic timerfd's ticks move with time, and when
                 * anyone reads it or asks timerfd_gettime, as capture does:
                 * what a read returns is each case's own check) */
                if (!strncmp(l, "pos:", 4) || !strncmp(l, "flags:", 6) || !strncmp(l, "mnt_id:", 7) ||
                    !strncmp(l, "ino:", 4) || !strncmp(l, "it_value:", 9) || !strncmp(l, "eventfd-id:", 11) ||
                    !strncmp(l, "ticks:", 6))
                    continue;
                /* epoll items name the watched file's inode: anonymous
                 * inodes and pipes are new objects after a restore */
                char *pino = strstr(l, " ino:");
                if (!strncmp(l, "tfd:", 4) && pino) *pino = 0;
                char pidstr[32];
                snprintf(pidstr, sizeof pidstr, " %d ", getpid());
                char *p = strstr(l, pidstr);
                if (p) {
                    *p = 0;
                    out("fdinfo %d %s self %s\n", fd, l, p + strlen(pidstr));
                } else
                    out("fdinfo %d %s\n", fd, l);
            }
        }
    }
}

static void maps_lines(void) {
    static char buf[1 << 17];
    if (read_file("/proc/self/smaps", buf, sizeof buf) < 0) fail("read smaps");
    char head[512] = "";
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        unsigned long a, b;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &a, &b, perms) == 3 && strchr(line, ' ')) {
            /* the stack and heap move their ends as the program runs */
            const char *name = strrchr(line, ' ');
            if (strstr(line, "[stack]") || strstr(line, "[heap]"))
                snprintf(head, sizeof head, "map %lx %s %s", strstr(line, "[stack]") ? b : a, perms, name + 1);
            else
                snprintf(head, sizeof head, "map %lx-%lx %s %s", a, b, perms, name + 1);
        } else if (!strncmp(line, "VmFlags:", 8)) {
            /* A lazy restore's mappings are registered with the page
             * server's userfaultfd ('um') until every page is in. */
            char *um = getenv("FIDELITY_LAZY") ? strstr(line, " um") : NULL;
            if (um) memmove(um, um + 3, strlen(um + 3) + 1);
            out("%s |%s\n", head, line + 8);
        } else if (!strncmp(line, "THPeligible:", 12) || !strncmp(line, "Locked:", 7)) {
            /* Locked: pages locked; THPeligible: hugepage policy in effect */
            if (!strncmp(line, "THPeligible:", 12)) out("%s %s\n", head, line);
        }
    }
}

/* One line per thread, by name (ids may change): its mask, pending
 * signals, affinity, capabilities, no_new_privs, seccomp, nice and
 * policy. */
static void task_lines(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) fail("opendir task");
    struct dirent *e;
    static char buf[1 << 15];
    char path[512], comm[64];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        if (read_file(path, comm, sizeof comm) < 0) continue;
        comm[strcspn(comm, "\n")] = 0;
        out("task %s", comm);
        snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
        if (read_file(path, buf, sizeof buf) < 0) continue;
        static const char *const keys[] = {"SigBlk", "SigPnd", "Cpus_allowed_list", "CapEff",
                                           "NoNewPrivs", "Seccomp", NULL};
        for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
            for (const char *const *k = keys; *k; k++) {
                size_t kl = strlen(*k);
                if (!strncmp(line, *k, kl) && line[kl] == ':') out(" %s", line);
            }
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        if (read_file(path, buf, sizeof buf) > 0) {
            char *r = strrchr(buf, ')');
            long f[40] = {0};
            int n = 0;
            for (char *t = strtok(r + 2, " "); t && n < 40; t = strtok(NULL, " ")) f[n++] = atol(t);
            /* after the comm: state is 0, priority 15, nice 16, policy 38 */
            out(" prio=%ld nice=%ld policy=%ld", f[15], f[16], f[38]);
        }
        out("\n");
    }
    closedir(d);
}

static void take_snapshot(char *buf, int skip_fd) {
    snap_buf = buf;
    snap_len = 0;
    static const char *const keys[] = {
        "Umask", "Uid", "Gid", "Groups", "NoNewPrivs", "Seccomp", "Seccomp_filters",
        "Speculation_Store_Bypass", "SpeculationIndirectBranch", "Cpus_allowed_list",
        "Mems_allowed_list", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "THP_enabled",
        "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt", "x86_Thread_features", "untag_mask", NULL};
    status_lines(keys);
    fds_lines(skip_fd);
    int v = -1;
    out("prctl dumpable=%d", prctl(PR_GET_DUMPABLE));
    prctl(PR_GET_PDEATHSIG, &v);
    out(" pdeathsig=%d", v);
    v = -1;
    prctl(PR_GET_CHILD_SUBREAPER, &v);
    out(" subreaper=%d timerslack=%d thp_disable=%d nnp=%d mdwe=%d securebits=%d keepcaps=%d",
        v, prctl(PR_GET_TIMERSLACK), prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0), prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
        prctl(PR_GET_MDWE, 0, 0, 0, 0), prctl(PR_GET_SECUREBITS), prctl(PR_GET_KEEPCAPS));
    v = -1;
    prctl(PR_GET_TSC, &v);
    out(" tsc=%d mce=%d spec=%d,%d,%d merge=%d", v, prctl(PR_MCE_KILL_GET, 0, 0, 0, 0),
        prctl(PR_GET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, 0, 0, 0),
        prctl(PR_GET_SPECULATION_CTRL, PR_SPEC_INDIRECT_BRANCH, 0, 0, 0),
        prctl(PR_GET_SPECULATION_CTRL, PR_SPEC_L1D_FLUSH, 0, 0, 0), prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0));
    char name[17] = {0};
    prctl(PR_GET_NAME, name);
    out(" name=%s\n", name);
    errno = 0;
    int prio = getpriority(PRIO_PROCESS, 0);
    struct sched_param sp = {0};
    sched_getparam(0, &sp);
    cpu_set_t cs;
    CPU_ZERO(&cs);
    sched_getaffinity(0, sizeof cs, &cs);
    unsigned long mask = 0;
    for (int i = 0; i < 64; i++) if (CPU_ISSET(i, &cs)) mask |= 1ul << i;
    out("sched nice=%d policy=%d prio=%d affinity=%lx ioprio=%ld\n", prio, sched_getscheduler(0),
        sp.sched_priority, mask, syscall(SYS_ioprio_get, 1, 0));
    out("personality=%x\n", personality(0xffffffff));
    char small[256];
    if (read_file("/proc/self/oom_score_adj", small, sizeof small) >= 0) out("oom_score_adj=%s", small);
    if (read_file("/proc/self/loginuid", small, sizeof small) >= 0) out("loginuid=%s\n", small);
    uid_t r, e, s;
    getresuid(&r, &e, &s);
    out("resuid %u %u %u fsuid %d\n", r, e, s, setfsuid(-1));
    gid_t gr, ge, gs;
    getresgid(&gr, &ge, &gs);
    out("resgid %u %u %u fsgid %d\n", gr, ge, gs, setfsgid(-1));
    for (int res = 0; res < RLIM_NLIMITS; res++) {
        struct rlimit rl;
        getrlimit(res, &rl);
        out("rlimit %d %llu %llu\n", res, (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
    }
    mode_t um = umask(0);
    umask(um);
    out("umask %o\n", um);
    char link[4096];
    ssize_t ln = readlink("/proc/self/cwd", link, sizeof link - 1);
    if (ln > 0) { link[ln] = 0; out("cwd %s\n", link); }
    ln = readlink("/proc/self/root", link, sizeof link - 1);
    if (ln > 0) { link[ln] = 0; out("root %s\n", link); }
    ln = readlink("/proc/self/exe", link, sizeof link - 1);
    if (ln > 0) { link[ln] = 0; out("exe %s\n", link); }
    stack_t ss;
    sigaltstack(NULL, &ss);
    out("altstack %p %zu %d\n", ss.ss_sp, ss.ss_size, ss.ss_flags);
    out("membarrier %ld\n", syscall(SYS_membarrier, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0));
    task_lines();
    maps_lines();
}

/* Is LINE (up to its newline) one of the lines of TEXT? */
static int has_line(const char *text, const char *line, size_t len) {
    for (const char *p = text; *p;) {
        const char *e = strchrnul(p, '\n');
        if ((size_t)(e - p) == len && !memcmp(p, line, len)) return 1;
        p = *e ? e + 1 : e;
    }
    return 0;
}

/* Compare the two snapshots as sets of lines (the kernel lists some
 * things, such as epoll items, in an order of its own); print the lines
 * only one of them has. */
static void compare_snapshots(void) {
    if (!strcmp(snap_before, snap_after)) return;
    int differ = 0;
    for (int pass = 0; pass < 2; pass++) {
        const char *a = pass ? snap_after : snap_before, *b = pass ? snap_before : snap_after;
        for (const char *p = a; *p;) {
            const char *e = strchrnul(p, '\n');
            if (!has_line(b, p, (size_t)(e - p))) {
                if (!differ++) fprintf(stderr, "snapshot differs (- before capture, + after restore):\n");
                fprintf(stderr, "%c %.*s\n", pass ? '+' : '-', (int)(e - p), p);
            }
            p = *e ? e + 1 : e;
        }
    }
    if (!differ && strlen(snap_before) == strlen(snap_after)) return;
    fflush(stderr);
    fail("snapshot differs after restore");
}

/* ---- helpers ---- */

static void path_in_dir(char *buf, size_t len, const char *name) {
    snprintf(buf, len, "%s/%s.%d", DIRPATH, name, getpid());
}

static int make_file(const char *name, size_t len, int flags) {
    char p[4096];
    path_in_dir(p, sizeof p, name);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | flags, 0640);
    CHECK(fd >= 0, "create %s: %s", p, strerror(errno));
    char buf[4096];
    for (size_t off = 0; off < len; off += sizeof buf) {
        for (size_t i = 0; i < sizeof buf; i++) buf[i] = (char)('A' + (off + i) % 23);
        size_t n = len - off < sizeof buf ? len - off : sizeof buf;
        CHECK(pwrite(fd, buf, n, (off_t)off) == (ssize_t)n, "write %s", p);
    }
    return fd;
}

/* ---- the cases: setup() before the capture, check() after ---- */

/* fds: flags, close-on-exec, offsets, shared descriptions. */
static int f_cloexec, f_dup_a, f_dup_b, f_append, f_dir, f_null, f_zero;
static void fds_setup(void) {
    f_cloexec = make_file("cloexec", 10000, O_CLOEXEC);
    CHECK(lseek(f_cloexec, 1234, SEEK_SET) == 1234, "lseek");
    f_dup_a = make_file("dup", 8192, 0);
    CHECK(lseek(f_dup_a, 77, SEEK_SET) == 77, "lseek");
    f_dup_b = fcntl(f_dup_a, F_DUPFD_CLOEXEC, 40);
    CHECK(f_dup_b >= 40, "dupfd");
    int t = make_file("append", 100, 0);
    close(t);
    char p[4096];
    path_in_dir(p, sizeof p, "append");
    f_append = open(p, O_WRONLY | O_APPEND | O_NONBLOCK | O_CLOEXEC);
    CHECK(f_append >= 0, "open append");
    f_dir = open(DIRPATH, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CHECK(f_dir >= 0, "open dir");
    f_null = open("/dev/null", O_RDWR | O_CLOEXEC);
    f_zero = open("/dev/zero", O_RDONLY);
    CHECK(f_null >= 0 && f_zero >= 0, "open devices");
}
static void fds_check(void) {
    char c;
    CHECK(pread(f_cloexec, &c, 1, 5000) == 1 && c == (char)('A' + 5000 % 23), "cloexec file content");
    CHECK(fcntl(f_cloexec, F_GETFD) == FD_CLOEXEC, "FD_CLOEXEC kept");
    /* one description: the offset moves for both */
    CHECK(lseek(f_dup_b, 0, SEEK_CUR) == 77, "dup offset");
    CHECK(lseek(f_dup_a, 500, SEEK_SET) == 500, "seek a");
    CHECK(lseek(f_dup_b, 0, SEEK_CUR) == 500, "dup'ed fds share their offset");
    CHECK(write(f_append, "xyz", 3) == 3, "append write");
    struct stat st;
    CHECK(fstat(f_append, &st) == 0 && st.st_size == 103, "O_APPEND kept");
    /* the same image is restored again: leave the file as captured */
    CHECK(ftruncate(f_append, 100) == 0, "truncate back");
    CHECK(read(f_zero, &c, 1) == 1 && c == 0, "/dev/zero");
    CHECK(write(f_null, "x", 1) == 1, "/dev/null");
    CHECK(faccessat(f_dir, ".", R_OK, 0) == 0, "dir fd");
}

/* A self-pipe with data in it, and a full one. */
static int p1[2], p2[2], p1_dup;
/* A pipe whose write end has the lower number (far above the others: a
 * restorer that makes its ends at the lowest free numbers must move
 * both), and an eventfd past a gap, close-on-exec. */
enum { P3_R = 41, P3_W = 40, EV_GAP = 45 };
static const char P1DATA[] = "twenty-seven bytes buffered";
static void pipe_setup(void) {
    CHECK(pipe2(p1, O_CLOEXEC) == 0, "pipe");
    CHECK(fcntl(p1[0], F_SETFL, O_NONBLOCK) == 0, "nonblock");
    CHECK(fcntl(p1[1], F_SETPIPE_SZ, 128 * 1024) >= 128 * 1024, "F_SETPIPE_SZ");
    CHECK(write(p1[1], P1DATA, 27) == 27, "write pipe");
    p1_dup = dup(p1[0]);
    CHECK(pipe(p2) == 0, "pipe2");
    CHECK(fcntl(p2[1], F_SETFL, O_NONBLOCK) == 0, "nonblock");
    char buf[4096];
    ssize_t total = 0, n;
    for (int i = 0; ; i++) {
        for (size_t j = 0; j < sizeof buf; j++) buf[j] = (char)(i * 7 + j);
        n = write(p2[1], buf, sizeof buf);
        if (n <= 0) break;
        total += n;
    }
    CHECK(total == 65536, "pipe 2 holds 64 KiB (%zd)", total);
    int p3[2];
    CHECK(pipe(p3) == 0, "pipe 3");
    CHECK(dup2(p3[0], P3_R) == P3_R && dup2(p3[1], P3_W) == P3_W, "pipe 3 at %d/%d", P3_R, P3_W);
    close(p3[0]);
    close(p3[1]);
    CHECK(fcntl(P3_W, F_SETFD, FD_CLOEXEC) == 0, "pipe 3's write end close-on-exec");
    CHECK(write(P3_W, "crossed", 7) == 7, "write pipe 3");
    int ev = eventfd(5, EFD_CLOEXEC);
    CHECK(ev >= 0 && dup3(ev, EV_GAP, O_CLOEXEC) == EV_GAP, "eventfd at %d", EV_GAP);
    close(ev);
}
static void pipe_check(void) {
    CHECK(fcntl(p1[0], F_GETFD) == FD_CLOEXEC && fcntl(p1[1], F_GETFD) == FD_CLOEXEC, "pipe 1's ends close-on-exec");
    CHECK(fcntl(p1_dup, F_GETFD) == 0 && fcntl(p2[0], F_GETFD) == 0 && fcntl(p2[1], F_GETFD) == 0,
          "pipe 2's ends and the dup not close-on-exec");
    CHECK(fcntl(P3_R, F_GETFD) == 0 && fcntl(P3_W, F_GETFD) == FD_CLOEXEC, "pipe 3's close-on-exec flags");
    CHECK(fcntl(EV_GAP, F_GETFD) == FD_CLOEXEC, "the eventfd's close-on-exec flag");
    uint64_t n = 0;
    CHECK(read(EV_GAP, &n, 8) == 8 && n == 5, "the eventfd's count (%llu)", (unsigned long long)n);
    char three[8] = {0};
    CHECK(read(P3_R, three, sizeof three) == 7 && !memcmp(three, "crossed", 7), "pipe 3's bytes");
    CHECK(write(P3_W, "x", 1) == 1 && read(P3_R, three, 1) == 1 && three[0] == 'x', "pipe 3 still its pipe");
    char buf[4096];
    CHECK(fcntl(p1[1], F_GETPIPE_SZ) == 128 * 1024, "pipe size");
    CHECK(read(p1_dup, buf, 10) == 10, "read via the dup'ed read end");
    CHECK(read(p1[0], buf + 10, sizeof buf - 10) == 17, "read the rest of the buffered bytes");
    CHECK(!memcmp(buf, P1DATA, 27), "pipe data");
    CHECK(read(p1[0], buf, 1) == -1 && errno == EAGAIN, "nothing more, O_NONBLOCK kept");
    CHECK(write(p1[1], "!", 1) == 1 && read(p1[0], buf, 1) == 1 && buf[0] == '!', "pipe still a pipe");
    for (int i = 0; i < 16; i++) {
        CHECK(read(p2[0], buf, sizeof buf) == sizeof buf, "read full pipe");
        for (size_t j = 0; j < sizeof buf; j++) CHECK(buf[j] == (char)(i * 7 + j), "full pipe data");
    }
    CHECK(write(p2[1], buf, 1) == 1, "write end after");
}

/* A FIFO with both ends open here, and data in it. */
static int fifo_r, fifo_w, fifo_rw;
static int fifo_lone, fifo_late;
static char fifo_lone_path[4096];
static void fifo_setup(void) {
    char p[4096];
    path_in_dir(p, sizeof p, "fifo");
    CHECK(mkfifo(p, 0600) == 0, "mkfifo");
    fifo_r = open(p, O_RDONLY | O_NONBLOCK);
    fifo_w = open(p, O_WRONLY);
    fifo_rw = open(p, O_RDWR);
    CHECK(fifo_r >= 0 && fifo_w >= 0 && fifo_rw >= 0, "open fifo");
    CHECK(write(fifo_w, "fifo-data-123", 13) == 13, "write fifo");
    /* A reader alone, of a FIFO no writer has opened yet: no hang-up
     * (a sweep of stop 52: refused as "a pipe to outside"). */
    path_in_dir(fifo_lone_path, sizeof fifo_lone_path, "fifo-lone");
    CHECK(mkfifo(fifo_lone_path, 0600) == 0, "mkfifo");
    fifo_lone = open(fifo_lone_path, O_RDONLY | O_NONBLOCK);
    CHECK(fifo_lone >= 0, "open the lone reader");
    /* Bytes a writer left before this reader opened it: no hang-up for
     * it either (a review of stop 52: captured, then refused by the
     * restore). */
    char late[4096];
    path_in_dir(late, sizeof late, "fifo-late");
    CHECK(mkfifo(late, 0600) == 0, "mkfifo");
    int r1 = open(late, O_RDONLY | O_NONBLOCK), w = open(late, O_WRONLY | O_NONBLOCK);
    CHECK(r1 >= 0 && w >= 0 && write(w, "left-behind", 11) == 11, "write the late fifo");
    close(w);
    fifo_late = open(late, O_RDONLY | O_NONBLOCK);
    CHECK(fifo_late >= 0, "open the late reader");
    close(r1);
}
static void fifo_check(void) {
    char buf[64];
    struct pollfd pf = {.fd = fifo_lone, .events = POLLIN};
    CHECK(poll(&pf, 1, 0) == 0, "no writer yet, no hang-up (revents %x)", pf.revents);
    CHECK(read(fifo_lone, buf, sizeof buf) == 0, "no writer: end of file");
    int w = open(fifo_lone_path, O_WRONLY | O_NONBLOCK);
    CHECK(w >= 0 && write(w, "late", 4) == 4 && read(fifo_lone, buf, sizeof buf) == 4, "a writer reaches the reader");
    close(w);
    pf.fd = fifo_late;
    CHECK(poll(&pf, 1, 0) == 1 && pf.revents == POLLIN, "bytes, no hang-up (revents %x)", pf.revents);
    CHECK(read(fifo_late, buf, sizeof buf) == 11 && !memcmp(buf, "left-behind", 11), "the bytes left behind");
    CHECK(read(fifo_r, buf, sizeof buf) == 13 && !memcmp(buf, "fifo-data-123", 13), "fifo data");
    /* the read-write fd reads and writes */
    CHECK(write(fifo_rw, "rw", 2) == 2 && read(fifo_rw, buf, 2) == 2 && !memcmp(buf, "rw", 2), "O_RDWR fifo fd");
}

/* A FIFO whose path was removed, with both ends (and a read-write
 * description) open here, and data in it. */
static int rfifo_r, rfifo_w, rfifo_rw;
static void rfifo_setup(void) {
    char p[4096];
    path_in_dir(p, sizeof p, "rfifo");
    CHECK(mkfifo(p, 0600) == 0, "mkfifo");
    rfifo_r = open(p, O_RDONLY | O_NONBLOCK);
    rfifo_w = open(p, O_WRONLY);
    rfifo_rw = open(p, O_RDWR);
    CHECK(rfifo_r >= 0 && rfifo_w >= 0 && rfifo_rw >= 0, "open fifo");
    CHECK(unlink(p) == 0, "unlink fifo");
    CHECK(write(rfifo_w, "removed-fifo-data", 17) == 17, "write fifo");
}
static void rfifo_check(void) {
    char buf[64];
    struct stat st;
    CHECK(fstat(rfifo_rw, &st) == 0 && S_ISFIFO(st.st_mode) && st.st_nlink == 0, "still a removed FIFO");
    CHECK(read(rfifo_r, buf, sizeof buf) == 17 && !memcmp(buf, "removed-fifo-data", 17), "removed fifo data");
    CHECK(write(rfifo_rw, "rw", 2) == 2 && read(rfifo_r, buf, 2) == 2 && !memcmp(buf, "rw", 2), "O_RDWR removed fifo fd");
    CHECK(write(rfifo_w, "w", 1) == 1 && read(rfifo_rw, buf, 1) == 1 && buf[0] == 'w', "one FIFO");
}

/* Mappings with flags that only madvise/mlock set. */
static uint8_t *m_lock, *m_lockonfault, *m_wipe, *m_dontfork, *m_dontdump, *m_huge, *m_nohuge, *m_seq, *m_rand,
    *m_merge;
static uint8_t *mk(size_t len) {
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED, "mmap");
    for (size_t i = 0; i < len; i += 4096) p[i] = (uint8_t)(i >> 12) + 1;
    /* Mappings are placed top-down next to each other: only their flags
     * keep them apart, which the snapshot's maps lines check too. */
    return p;
}
static void vmflags_setup(void) {
    m_lock = mk(8 * 4096);
    CHECK(mlock(m_lock, 8 * 4096) == 0, "mlock");
    m_lockonfault = mk(8 * 4096);
    CHECK(syscall(SYS_mlock2, m_lockonfault, 8 * 4096, 1 /* MLOCK_ONFAULT */) == 0, "mlock2");
    m_wipe = mk(4 * 4096);
    CHECK(madvise(m_wipe, 4 * 4096, MADV_WIPEONFORK) == 0, "wipeonfork");
    m_dontfork = mk(4 * 4096);
    CHECK(madvise(m_dontfork, 4 * 4096, MADV_DONTFORK) == 0, "dontfork");
    m_dontdump = mk(4 * 4096);
    CHECK(madvise(m_dontdump, 4 * 4096, MADV_DONTDUMP) == 0, "dontdump");
    m_huge = mk(4 * 4096);
    CHECK(madvise(m_huge, 4 * 4096, MADV_HUGEPAGE) == 0, "hugepage");
    m_nohuge = mk(4 * 4096);
    CHECK(madvise(m_nohuge, 4 * 4096, MADV_NOHUGEPAGE) == 0, "nohugepage");
    m_seq = mk(4 * 4096);
    CHECK(madvise(m_seq, 4 * 4096, MADV_SEQUENTIAL) == 0, "sequential");
    m_rand = mk(4 * 4096);
    CHECK(madvise(m_rand, 4 * 4096, MADV_RANDOM) == 0, "random");
    m_merge = mk(4 * 4096);
    if (madvise(m_merge, 4 * 4096, MADV_MERGEABLE) != 0) m_merge = NULL; /* no KSM */
}
static void vmflags_check(void) {
    uint8_t *all[] = {m_lock, m_lockonfault, m_wipe, m_dontfork, m_dontdump, m_huge, m_nohuge, m_seq, m_rand};
    for (int k = 0; k < 9; k++)
        for (int i = 0; i < 4; i++)
            CHECK(all[k][i * 4096] == (uint8_t)(i + 1), "mapping %d page %d holds %d", k, i, all[k][i * 4096]);
    pid_t kid = fork();
    CHECK(kid >= 0, "fork");
    if (kid == 0) {
        /* wipeonfork: zeros in the child; dontfork: not mapped in the child */
        if (m_wipe[0] != 0) _exit(2);
        if (msync(m_dontfork, 4096, MS_ASYNC) == 0 || errno != ENOMEM) _exit(3);
        _exit(0);
    }
    int st;
    CHECK(waitpid(kid, &st, 0) == kid && WIFEXITED(st), "child");
    CHECK(WEXITSTATUS(st) == 0, "fork semantics (wipeonfork/dontfork): child status %d", WEXITSTATUS(st));
}

/* mlockall(MCL_CURRENT|MCL_FUTURE[|MCL_ONFAULT]) with a mapping without
 * access among the locked (a guard page: mlock of it alone fails with
 * ENOMEM, which mlockall ignores; the restore died there until stop 35).
 * The snapshot checks every mapping's VmFlags; the check, that a mapping
 * made after restore is locked (MADV_DONTNEED refuses it) and faulted in
 * at once, or not with MCL_ONFAULT (mincore). */
static uint8_t *m_guarded;
static int mlockall_onfault;
static void mlockall_common(int onfault) {
    mlockall_onfault = onfault;
    m_guarded = mk(3 * 4096);
    CHECK(mprotect(m_guarded + 4096, 4096, PROT_NONE) == 0, "guard page");
    /* Mappings running past the end of their 4 KiB file, readable and
     * not (mlock of them alone fails: their last pages cannot be faulted
     * in), and a 1 GiB reservation without access (made readable to be
     * locked, it would get page tables for all of it). */
    int f = make_file("mlockall-short", 4096, O_CLOEXEC);
    CHECK(mmap(NULL, 3 * 4096, PROT_READ, MAP_PRIVATE, f, 0) != MAP_FAILED, "mmap past EOF");
    CHECK(mmap(NULL, 3 * 4096, PROT_NONE, MAP_PRIVATE, f, 0) != MAP_FAILED, "mmap past EOF, no access");
    close(f);
    CHECK(mmap(NULL, 1UL << 30, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) != MAP_FAILED,
          "reservation");
    CHECK(mlockall(MCL_CURRENT | MCL_FUTURE | (onfault ? MCL_ONFAULT : 0)) == 0, "mlockall");
}
static void mlockall_setup(void) { mlockall_common(0); }
static void mlockall_onfault_setup(void) { mlockall_common(1); }
static void mlockall_check(void) {
    CHECK(m_guarded[0] == 1 && m_guarded[2 * 4096] == 3, "guarded mapping's pages");
    uint8_t *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED, "mmap after restore");
    CHECK(madvise(p, 4096, MADV_DONTNEED) == -1 && errno == EINVAL, "a new mapping is locked (MCL_FUTURE)");
    unsigned char in = 9;
    CHECK(mincore(p, 4096, &in) == 0, "mincore");
    CHECK((in & 1) == !mlockall_onfault, "a new mapping faulted in at once unless MCL_ONFAULT: %d", in);
    CHECK(munmap(p, 4096) == 0, "munmap");
}

/* prctl state a process sets for itself. */
static void prctl_setup(void) {
    CHECK(prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0, "thp disable");
    CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0, "subreaper");
    CHECK(prctl(PR_SET_PDEATHSIG, SIGUSR2) == 0, "pdeathsig");
    CHECK(prctl(PR_SET_TIMERSLACK, 123456) == 0, "timerslack");
    CHECK(prctl(PR_SET_NAME, "fid-renamed") == 0, "name");
    CHECK(prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY, 0, 0) == 0, "mce kill");
    if (prctl(PR_GET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, 0, 0, 0) & PR_SPEC_PRCTL)
        CHECK(prctl(PR_SET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, PR_SPEC_DISABLE, 0, 0) == 0, "spec");
    CHECK(prctl(PR_SET_DUMPABLE, 0) == 0, "dumpable");
    CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "no_new_privs");
}
static void prctl_check(void) {}

/* Memory-deny-write-execute: set last, checked by behaviour. */
static void mdwe_setup(void) {
    CHECK(prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0, "mdwe");
}
static void mdwe_check(void) {
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p == MAP_FAILED, "MDWE refuses a W+X mapping after restore");
}

/* Scheduling, priority, oom score, personality. */
static void sched_setup(void) {
    CHECK(setpriority(PRIO_PROCESS, 0, 7) == 0, "nice");
    cpu_set_t cs;
    CPU_ZERO(&cs);
    CPU_SET(0, &cs);
    CHECK(sched_setaffinity(0, sizeof cs, &cs) == 0, "affinity");
    struct sched_param sp = {0};
    CHECK(sched_setscheduler(0, SCHED_BATCH, &sp) == 0, "SCHED_BATCH");
    CHECK(syscall(SYS_ioprio_set, 1, 0, (2 << 13) | 5) == 0, "ioprio");
    int fd = open("/proc/self/oom_score_adj", O_WRONLY);
    CHECK(fd >= 0 && write(fd, "345", 3) == 3, "oom_score_adj");
    close(fd);
    CHECK(personality(PER_LINUX | ADDR_NO_RANDOMIZE | ADDR_COMPAT_LAYOUT) != -1, "personality");
}
static void sched_check(void) {}

/* membarrier registrations (per address space). */
static void membarrier_setup(void) {
    CHECK(syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0, "register");
    CHECK(syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0, "register global");
}
static void membarrier_check(void) {
    CHECK(syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0,
          "membarrier private expedited works (registered): %s", strerror(errno));
}

/* Queued signals: several instances of a real-time signal, each with its
 * value, and a standard one with its siginfo. And two of SIGRTMAX, the
 * signal a restorer's lease on the executable raises: pending when it
 * looks, the restorer cannot tell, and names the executable the old way
 * (its fallback, taken right before the end). */
static void sigqueue_setup(void) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGRTMIN + 1);
    sigaddset(&s, SIGRTMAX);
    sigaddset(&s, SIGUSR1);
    CHECK(sigprocmask(SIG_BLOCK, &s, NULL) == 0, "block");
    for (int i = 1; i <= 3; i++) {
        union sigval v = {.sival_int = 11 * i};
        CHECK(sigqueue(getpid(), SIGRTMIN + 1, v) == 0, "sigqueue");
    }
    for (int i = 1; i <= 2; i++) {
        union sigval v = {.sival_int = 50 + i};
        CHECK(sigqueue(getpid(), SIGRTMAX, v) == 0, "sigqueue rtmax");
    }
    union sigval v = {.sival_int = 44};
    CHECK(sigqueue(getpid(), SIGUSR1, v) == 0, "sigqueue usr1");
}
static void sigqueue_check(void) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGRTMIN + 1);
    sigaddset(&s, SIGUSR1);
    siginfo_t si;
    CHECK(sigwaitinfo(&s, &si) == SIGUSR1 && si.si_code == SI_QUEUE && si.si_value.sival_int == 44,
          "SIGUSR1 with its value (got %d code %d value %d)", si.si_signo, si.si_code, si.si_value.sival_int);
    for (int i = 1; i <= 3; i++) {
        CHECK(sigwaitinfo(&s, &si) == SIGRTMIN + 1, "rt signal %d of 3 queued", i);
        CHECK(si.si_code == SI_QUEUE && si.si_value.sival_int == 11 * i, "rt signal %d value %d", i,
              si.si_value.sival_int);
    }
    sigset_t pend;
    sigpending(&pend);
    CHECK(!sigismember(&pend, SIGRTMIN + 1), "no fourth rt signal");
    sigemptyset(&s);
    sigaddset(&s, SIGRTMAX);
    for (int i = 1; i <= 2; i++) {
        CHECK(sigwaitinfo(&s, &si) == SIGRTMAX, "SIGRTMAX %d of 2 queued", i);
        CHECK(si.si_code == SI_QUEUE && si.si_value.sival_int == 50 + i, "SIGRTMAX %d value %d", i,
              si.si_value.sival_int);
    }
    sigpending(&pend);
    CHECK(!sigismember(&pend, SIGRTMAX), "no third SIGRTMAX");
}

/* Credentials: not the restorer's (root's). */
static void creds_setup(void) {
    gid_t groups[] = {5, 6, 7};
    CHECK(setgroups(3, groups) == 0, "setgroups");
    CHECK(setresgid(1234, 1235, 1236) == 0, "setresgid");
    CHECK(setresuid(2345, 2346, 2347) == 0, "setresuid");
}
static void creds_check(void) {
    CHECK(geteuid() == 2346, "euid");
}

/* An unlinked device node: the real thing back, or a refusal. */
static int devnode_fd;
static void devnode_setup(void) {
    char p[4096];
    path_in_dir(p, sizeof p, "node");
    CHECK(mknod(p, S_IFCHR | 0700, makedev(1, 3)) == 0, "mknod");
    devnode_fd = open(p, O_RDWR);
    CHECK(devnode_fd >= 0, "open node");
    CHECK(unlink(p) == 0, "unlink node");
}
static void devnode_check(void) {
    struct stat st;
    CHECK(fstat(devnode_fd, &st) == 0 && st.st_mode == (S_IFCHR | 0700) && st.st_rdev == makedev(1, 3),
          "the node's own mode (%o)", st.st_mode);
    CHECK(write(devnode_fd, "x", 1) == 1, "write node");
}

/* File locks: flock, POSIX record lock, OFD lock. */
static int l_flock, l_posix, l_ofd, l_lease;
static void locks_setup(void) {
    l_flock = make_file("flock", 100, 0);
    CHECK(flock(l_flock, LOCK_EX) == 0, "flock");
    l_posix = make_file("posix", 100, 0);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 20};
    CHECK(fcntl(l_posix, F_SETLK, &fl) == 0, "posix lock");
    l_ofd = make_file("ofd", 100, 0);
    struct flock ofd = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    CHECK(fcntl(l_ofd, F_OFD_SETLK, &ofd) == 0, "ofd lock");
    /* A read lease: on a file open read-only, here only. */
    close(make_file("lease", 100, 0));
    char lp[4096];
    path_in_dir(lp, sizeof lp, "lease");
    l_lease = open(lp, O_RDONLY);
    CHECK(l_lease >= 0 && fcntl(l_lease, F_SETLEASE, F_RDLCK) == 0, "read lease: %s", strerror(errno));
}
static void locks_check(void) {
    pid_t me = getpid();
    pid_t kid = fork();
    CHECK(kid >= 0, "fork");
    if (kid == 0) {
        char p[4096];
        snprintf(p, sizeof p, "%s/flock.%d", DIRPATH, me);
        (void)p;
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 15, .l_len = 1};
        if (fcntl(l_posix, F_GETLK, &fl) != 0 || fl.l_type != F_WRLCK || fl.l_pid != me) _exit(2);
        struct flock ofd = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0, .l_pid = 0};
        char o[64];
        snprintf(o, sizeof o, "/proc/self/fd/%d", l_ofd);
        int fo = open(o, O_RDWR);
        if (fo < 0 || fcntl(fo, F_OFD_GETLK, &ofd) != 0 || ofd.l_type != F_RDLCK) _exit(3);
        char fpath[64];
        snprintf(fpath, sizeof fpath, "/proc/self/fd/%d", l_flock);
        int ff = open(fpath, O_RDONLY);
        if (ff < 0 || flock(ff, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK) _exit(4);
        _exit(0);
    }
    int st;
    CHECK(waitpid(kid, &st, 0) == kid && WIFEXITED(st), "child");
    CHECK(WEXITSTATUS(st) == 0, "locks seen from a child (step %d)", WEXITSTATUS(st));
    CHECK(fcntl(l_lease, F_GETLEASE) == F_RDLCK, "the read lease is held again");
}

/* An unlinked file: open at an offset, mapped shared and private, with a
 * hole; its bytes exist nowhere but in this process. */
static int del_fd, del_tmp;
static uint8_t *del_shared, *del_private;
static void deleted_setup(void) {
    /* A file made unlinked (O_TMPFILE), open write-only: its flags keep
     * O_TMPFILE, which is __O_TMPFILE | O_DIRECTORY (the reopen at
     * restore failed ENOTDIR until stop 36). */
    del_tmp = open(DIRPATH, O_TMPFILE | O_WRONLY, 0600);
    CHECK(del_tmp >= 0 && write(del_tmp, "made unlinked", 13) == 13, "O_TMPFILE");
    char p[4096];
    path_in_dir(p, sizeof p, "deleted");
    del_fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0640);
    CHECK(del_fd >= 0, "create");
    CHECK(ftruncate(del_fd, 5 * 4096) == 0, "truncate");
    char page[4096];
    memset(page, 'D', sizeof page);
    CHECK(pwrite(del_fd, page, 4096, 0) == 4096 && pwrite(del_fd, page, 100, 3 * 4096) == 100, "write");
    CHECK(lseek(del_fd, 777, SEEK_SET) == 777, "seek");
    del_shared = mmap(NULL, 5 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, del_fd, 0);
    del_private = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, del_fd, 3 * 4096);
    CHECK(del_shared != MAP_FAILED && del_private != MAP_FAILED, "mmap");
    del_private[5] = 'p'; /* an anonymous copy of the page */
    /* another owner, and set-id bits (a chown at restore would clear
     * them if it came after the chmod) */
    CHECK(fchown(del_fd, 1000, 1000) == 0 && fchmod(del_fd, 06640) == 0, "owner and mode");
    CHECK(unlink(p) == 0, "unlink");
}
/* A file removed together with its directories (`rm -rf` of a temporary
 * directory while the file is open): refused until stop 47 ("removed
 * together with its directory"); made again with its directories for
 * the moment, so its /proc name reads as it did, and they are gone
 * again. */
static int deld_fd;
static char deld_top[4000];
static void deleted_dir_setup(void) {
    char sub[4200], f[4300];
    path_in_dir(deld_top, sizeof deld_top, "gone");
    snprintf(sub, sizeof sub, "%s/sub", deld_top);
    snprintf(f, sizeof f, "%s/file", sub);
    CHECK(mkdir(deld_top, 0755) == 0 && mkdir(sub, 0755) == 0, "mkdir");
    deld_fd = open(f, O_RDWR | O_CREAT | O_EXCL, 0644);
    CHECK(deld_fd >= 0 && write(deld_fd, "in a removed directory", 22) == 22, "write");
    CHECK(unlink(f) == 0 && rmdir(sub) == 0 && rmdir(deld_top) == 0, "rm -rf");
}
static void deleted_dir_check(void) {
    char b[64] = {0};
    CHECK(pread(deld_fd, b, sizeof b - 1, 0) == 22 && !strcmp(b, "in a removed directory"), "its bytes (%s)", b);
    CHECK(lseek(deld_fd, 0, SEEK_CUR) == 22, "its offset");
    struct stat st;
    CHECK(fstat(deld_fd, &st) == 0 && st.st_nlink == 0 && (st.st_mode & 0777) == 0644, "unlinked, its mode");
    CHECK(access(deld_top, F_OK) != 0, "its directories are gone again");
}
static void deleted_check(void) {
    struct stat st;
    CHECK(fstat(del_fd, &st) == 0 && st.st_size == 5 * 4096 && st.st_nlink == 0 && (st.st_mode & 07777) == 06640 &&
              st.st_uid == 1000,
          "size, links and mode (%lld, %lu, %o)", (long long)st.st_size, (unsigned long)st.st_nlink, st.st_mode);
    CHECK(lseek(del_fd, 0, SEEK_CUR) == 777, "offset");
    CHECK(lseek(del_fd, 0, SEEK_HOLE) == 4096, "the hole is kept");
    CHECK(del_shared[0] == 'D' && del_shared[3 * 4096 + 99] == 'D' && del_shared[3 * 4096 + 100] == 0, "contents");
    CHECK(del_private[5] == 'p' && del_private[6] == 'D', "private copy");
    /* one inode for the fd and the shared mapping */
    del_shared[4096] = 'S';
    char c;
    CHECK(pread(del_fd, &c, 1, 4096) == 1 && c == 'S', "a write through the mapping is seen through the fd");
    CHECK((fcntl(del_tmp, F_GETFL) & O_ACCMODE) == O_WRONLY && write(del_tmp, ", still", 7) == 7,
          "the O_TMPFILE file, write-only");
    char tp[64], tb[32] = {0};
    snprintf(tp, sizeof tp, "/proc/self/fd/%d", del_tmp);
    int r = open(tp, O_RDONLY);
    CHECK(r >= 0 && read(r, tb, sizeof tb - 1) == 20 && !strcmp(tb, "made unlinked, still"),
          "the O_TMPFILE file's bytes (%s)", tb);
    close(r);
}

/* A file open by a name that was removed, with its other link in another
 * directory: the same inode after restore (reopened by its file handle),
 * its offset and flags, writes seen through the other name. */
static int lnk_fd, lnk_fd2;
static char lnk_other[8192], lnk_beside[8192], lnk_mapped_other[8192];
static char *lnk_shared, *lnk_private;
static void linked_setup(void) {
    char d1[4096], d2[4096], p[8192];
    path_in_dir(d1, sizeof d1, "one");
    path_in_dir(d2, sizeof d2, "two");
    CHECK(mkdir(d1, 0700) == 0 && mkdir(d2, 0700) == 0, "mkdir");
    snprintf(p, sizeof p, "%s/f", d1);
    snprintf(lnk_other, sizeof lnk_other, "%s/g", d2);
    lnk_fd = open(p, O_RDWR | O_CREAT | O_APPEND, 0640);
    CHECK(lnk_fd >= 0 && write(lnk_fd, "0123456789", 10) == 10, "create");
    CHECK(link(p, lnk_other) == 0 && unlink(p) == 0, "link elsewhere, unlink");
    CHECK(lseek(lnk_fd, 4, SEEK_SET) == 4, "seek");
    /* And one whose other link is beside it, in the same directory: the
     * snapshot checks /proc still names the removed one. */
    snprintf(p, sizeof p, "%s/h", d1);
    snprintf(lnk_beside, sizeof lnk_beside, "%s/h2", d1);
    lnk_fd2 = open(p, O_RDWR | O_CREAT, 0600);
    CHECK(lnk_fd2 >= 0 && write(lnk_fd2, "xyz", 3) == 3, "create beside");
    CHECK(link(p, lnk_beside) == 0 && unlink(p) == 0, "link beside, unlink");
    /* And one mapped (shared and private), its fd closed, its name removed,
     * its other link in the other directory. */
    snprintf(p, sizeof p, "%s/m", d1);
    snprintf(lnk_mapped_other, sizeof lnk_mapped_other, "%s/n", d2);
    int m = open(p, O_RDWR | O_CREAT, 0600);
    char page[4096];
    memset(page, 'M', sizeof page);
    CHECK(m >= 0 && write(m, page, sizeof page) == 4096, "create mapped");
    lnk_shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
    lnk_private = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, m, 0);
    CHECK(lnk_shared != MAP_FAILED && lnk_private != MAP_FAILED, "mmap");
    lnk_private[0] = 'p';
    close(m);
    CHECK(link(p, lnk_mapped_other) == 0 && unlink(p) == 0, "mapped: link elsewhere, unlink");
}
static void linked_check(void) {
    struct stat a, b;
    CHECK(fstat(lnk_fd, &a) == 0 && stat(lnk_other, &b) == 0, "stat");
    CHECK(a.st_ino == b.st_ino && a.st_dev == b.st_dev && a.st_nlink == 1, "the same inode as the other link (%lu %lu)",
          (unsigned long)a.st_ino, (unsigned long)b.st_ino);
    CHECK(lseek(lnk_fd, 0, SEEK_CUR) == 4, "offset");
    CHECK((fcntl(lnk_fd, F_GETFL) & (O_ACCMODE | O_APPEND)) == (O_RDWR | O_APPEND), "flags");
    CHECK(write(lnk_fd, "AB", 2) == 2, "write");
    char buf[16] = {0};
    int g = open(lnk_other, O_RDONLY);
    CHECK(g >= 0 && read(g, buf, sizeof buf) == 12 && !memcmp(buf, "0123456789AB", 12), "written through the other name");
    close(g);
    /* As it was, for the next restore of the same image (the file is not
     * in the image: every restore shares it). */
    CHECK(ftruncate(lnk_fd, 10) == 0, "truncate back");
    CHECK(fstat(lnk_fd2, &a) == 0 && stat(lnk_beside, &b) == 0 && a.st_ino == b.st_ino && a.st_nlink == 1,
          "the same inode as the link beside it");
    CHECK(lseek(lnk_fd2, 0, SEEK_CUR) == 3, "offset beside");
    /* The mappings: the same file (a write through the shared one is read
     * through the other name), the private copy as it was. */
    CHECK(lnk_shared[0] == 'M' && lnk_private[0] == 'p' && lnk_private[1] == 'M', "mapped contents");
    lnk_shared[1] = 'Z';
    CHECK(msync(lnk_shared, 4096, MS_SYNC) == 0, "msync");
    int g2 = open(lnk_mapped_other, O_RDONLY);
    CHECK(g2 >= 0 && pread(g2, buf, 2, 0) == 2 && !memcmp(buf, "MZ", 2), "written through the mapping, read by the other name");
    close(g2);
    lnk_shared[1] = 'M'; /* as it was, for the next restore */
}

/* A memfd with seals, mapped shared, and shared anonymous memory. */
static int mfd, mexe, fw_fd;
static char *fw_map;
static uint8_t *mfd_map, *shm;
static void memfd_setup(void) {
    mfd = memfd_create("fid-mem", MFD_ALLOW_SEALING | MFD_CLOEXEC);
    CHECK(mfd >= 0, "memfd_create");
    char buf[10000];
    for (int i = 0; i < 10000; i++) buf[i] = (char)(i % 251);
    CHECK(write(mfd, buf, sizeof buf) == sizeof buf, "write memfd");
    CHECK(fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0, "seal");
    mfd_map = mmap(NULL, 12288, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    CHECK(mfd_map != MAP_FAILED, "mmap memfd");
    /* Mapped shared and writable, then sealed against writes to come
     * (F_SEAL_FUTURE_WRITE and F_SEAL_SEAL): the mapping writes on, no
     * new one may (a sweep of stop 52: the shim's mapping failed EPERM,
     * the seal made first). */
    fw_fd = memfd_create("fid-future", MFD_ALLOW_SEALING | MFD_CLOEXEC);
    CHECK(fw_fd >= 0 && ftruncate(fw_fd, 4096) == 0, "memfd future-write");
    fw_map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fw_fd, 0);
    CHECK(fw_map != MAP_FAILED, "mmap future-write");
    strcpy(fw_map, "before");
    CHECK(fcntl(fw_fd, F_ADD_SEALS, 0x10 /* F_SEAL_FUTURE_WRITE */ | F_SEAL_SEAL) == 0, "seal future writes");
    shm = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(shm != MAP_FAILED, "mmap shared anon");
    memset(shm, 0x5c, 8192);
    /* Dropped from this process's page tables, still in the object. */
    CHECK(madvise(shm + 4096, 4096, MADV_DONTNEED) == 0, "dontneed");
    /* An executable in a memfd, to run after the restore. */
    mexe = memfd_create("fid-exe", MFD_CLOEXEC);
    int t = open("/bin/true", O_RDONLY);
    char b[65536];
    ssize_t n;
    while ((n = read(t, b, sizeof b)) > 0) CHECK(write(mexe, b, (size_t)n) == n, "copy /bin/true");
    close(t);
}
static void memfd_check(void) {
    char name[64];
    char link[64];
    snprintf(name, sizeof name, "/proc/self/fd/%d", mfd);
    ssize_t n = readlink(name, link, sizeof link - 1);
    CHECK(n > 0, "readlink");
    link[n] = 0;
    CHECK(!strcmp(link, "/memfd:fid-mem (deleted)"), "memfd name (%s)", link);
    CHECK(fcntl(mfd, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW), "seals");
    CHECK(!strcmp(fw_map, "before"), "future-write memfd contents");
    strcpy(fw_map, "after");
    CHECK(fcntl(fw_fd, F_GET_SEALS) == (0x10 | F_SEAL_SEAL), "future-write seals (%x)", fcntl(fw_fd, F_GET_SEALS));
    CHECK(write(fw_fd, "x", 1) == -1 && errno == EPERM, "sealed against writes");
    CHECK(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fw_fd, 0) == MAP_FAILED && errno == EPERM,
          "sealed against new writable mappings");
    char fw[8] = {0};
    CHECK(pread(fw_fd, fw, 5, 0) == 5 && !strcmp(fw, "after"), "the old mapping writes the memfd");
    CHECK(ftruncate(mfd, 100) == -1 && errno == EPERM, "sealed against shrinking");
    for (int i = 0; i < 10000; i++) CHECK(mfd_map[i] == (uint8_t)(i % 251), "memfd contents");
    mfd_map[1] = 77;
    char c;
    CHECK(pread(mfd, &c, 1, 1) == 1 && c == 77, "the mapping is of the memfd");
    CHECK(shm[0] == 0x5c && shm[8191] == 0x5c, "shared anonymous memory");
    pid_t kid = fork();
    if (kid == 0) { shm[0] = 1; _exit(0); }
    waitpid(kid, NULL, 0);
    CHECK(shm[0] == 1, "shared anonymous memory is shared with a child");
    CHECK(shm[4096] == 0x5c, "a page of the object this process had dropped from its page tables");
    kid = fork();
    if (kid == 0) {
        char *argv[] = {"true", NULL}, *envp[] = {NULL};
        syscall(SYS_execveat, mexe, "", argv, envp, AT_EMPTY_PATH);
        _exit(99);
    }
    int st;
    CHECK(waitpid(kid, &st, 0) == kid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "the memfd executes after restore (status %x)", st);
}

/* O_PATH fds on a directory and on a symbolic link itself; an fd on one
 * of the process's own /proc files. */
static int op_dir, op_link, proc_fd, sys_fd, op_fifo, op_sock;
static void opath_setup(void) {
    op_dir = open(DIRPATH, O_PATH | O_DIRECTORY);
    char p[4096];
    /* O_PATH on a FIFO and on a socket's file: files, not a pipe or a
     * socket (a sweep of stop 52: the capture failed EBADF). */
    path_in_dir(p, sizeof p, "opath-fifo");
    CHECK(mkfifo(p, 0600) == 0, "mkfifo");
    op_fifo = open(p, O_PATH);
    struct sockaddr_un su = {.sun_family = AF_UNIX};
    path_in_dir(p, sizeof p, "opath-sock");
    CHECK(strlen(p) < sizeof su.sun_path, "socket path too long: %s", p);
    memcpy(su.sun_path, p, strlen(p) + 1);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(s >= 0 && bind(s, (struct sockaddr *)&su, sizeof su) == 0, "bind");
    close(s);
    op_sock = open(su.sun_path, O_PATH);
    CHECK(op_fifo >= 0 && op_sock >= 0, "O_PATH on a FIFO and a socket file");
    path_in_dir(p, sizeof p, "link");
    CHECK(symlink("/nonexistent-target", p) == 0, "symlink");
    op_link = open(p, O_PATH | O_NOFOLLOW);
    CHECK(op_dir >= 0 && op_link >= 0, "O_PATH");
    proc_fd = open("/proc/self/status", O_RDONLY);
    CHECK(proc_fd >= 0, "open /proc/self/status");
    sys_fd = open("/proc/sys/kernel/pid_max", O_RDONLY);
    CHECK(sys_fd >= 0, "open /proc/sys/kernel/pid_max");
}
static void opath_check(void) {
    struct stat st;
    CHECK(fstatat(op_link, "", &st, AT_EMPTY_PATH) == 0 && S_ISLNK(st.st_mode), "O_PATH on the link itself");
    CHECK(fstatat(op_dir, "", &st, AT_EMPTY_PATH) == 0 && S_ISDIR(st.st_mode), "O_PATH on the directory");
    CHECK(fstatat(op_fifo, "", &st, AT_EMPTY_PATH) == 0 && S_ISFIFO(st.st_mode), "O_PATH on the FIFO");
    CHECK(fstatat(op_sock, "", &st, AT_EMPTY_PATH) == 0 && S_ISSOCK(st.st_mode), "O_PATH on the socket file");
    CHECK((fcntl(op_fifo, F_GETFL) & O_PATH) && (fcntl(op_sock, F_GETFL) & O_PATH), "still O_PATH");
    char buf[4096];
    ssize_t n = pread(proc_fd, buf, sizeof buf - 1, 0);
    CHECK(n > 0, "read /proc fd");
    buf[n] = 0;
    char want[64];
    snprintf(want, sizeof want, "\nPid:\t%d\n", getpid());
    CHECK(strstr(buf, want), "the /proc fd is this process's (%s)", want + 1);
    CHECK(pread(sys_fd, buf, 16, 0) > 0 && atoi(buf) > 0, "a /proc/sys fd");
}

/* The process's own /proc files bound to its memory as they are opened
 * (maps, mem, environ, auxv, smaps_rollup; one shared by a dup, one read
 * part-way): after a restore each reads this process's memory (opened by
 * the restore before the exec of its shim they read nothing, and auxv the
 * restorer's: a sweep of stop 52). */
static int pm_maps, pm_maps2, pm_mem, pm_env, pm_auxv, pm_roll;
static char *pm_region;
static char pm_word[] = "memory-of-the-program";
static char pm_env_before[8192], pm_auxv_before[1024];
static ssize_t pm_env_len, pm_auxv_len;
static void pm_setup(void) {
    pm_region = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(pm_region != MAP_FAILED, "mmap");
    memset(pm_region, 7, 4 * 4096);
    pm_maps = open("/proc/self/maps", O_RDONLY);
    pm_maps2 = dup(pm_maps);
    pm_mem = open("/proc/self/mem", O_RDWR);
    pm_env = open("/proc/self/environ", O_RDONLY);
    pm_auxv = open("/proc/self/auxv", O_RDONLY);
    pm_roll = open("/proc/self/smaps_rollup", O_RDONLY);
    CHECK(pm_maps >= 0 && pm_maps2 >= 0 && pm_mem >= 0 && pm_env >= 0 && pm_auxv >= 0 && pm_roll >= 0,
          "open /proc/self files");
    char b[100];
    CHECK(read(pm_maps, b, sizeof b) == sizeof b, "read maps part-way");
    pm_env_len = pread(pm_env, pm_env_before, sizeof pm_env_before, 0);
    pm_auxv_len = pread(pm_auxv, pm_auxv_before, sizeof pm_auxv_before, 0);
    CHECK(pm_env_len > 0 && pm_auxv_len > 0, "read environ and auxv");
}
static void pm_check(void) {
    static char buf[1 << 16];
    CHECK(lseek(pm_maps2, 0, SEEK_CUR) == 100, "the dup shares the offset (%ld)", (long)lseek(pm_maps2, 0, SEEK_CUR));
    ssize_t n = pread(pm_maps, buf, sizeof buf - 1, 0);
    CHECK(n > 0, "read maps: %zd", n);
    buf[n] = 0;
    char want[32];
    snprintf(want, sizeof want, "%lx-", (unsigned long)pm_region);
    CHECK(strstr(buf, want), "maps shows the region at %s", want);
    char w[sizeof pm_word];
    CHECK(pread(pm_mem, w, sizeof w, (off_t)(uintptr_t)pm_word) == (ssize_t)sizeof w && !memcmp(w, pm_word, sizeof w),
          "mem reads this memory");
    CHECK(pwrite(pm_mem, "M", 1, (off_t)(uintptr_t)pm_word) == 1 && pm_word[0] == 'M', "mem writes this memory");
    pm_word[0] = 'm';
    static char e[8192], a[1024];
    CHECK(pread(pm_env, e, sizeof e, 0) == pm_env_len && !memcmp(e, pm_env_before, pm_env_len), "environ as before");
    CHECK(pread(pm_auxv, a, sizeof a, 0) == pm_auxv_len && !memcmp(a, pm_auxv_before, pm_auxv_len), "auxv as before");
    n = pread(pm_roll, buf, sizeof buf - 1, 0);
    CHECK(n > 0, "read smaps_rollup: %zd", n);
    buf[n] = 0;
    CHECK(strstr(buf, "Rss:"), "smaps_rollup");
}

/* A working directory that was removed. */
static int cwd_fd;
static void cwd_setup(void) {
    char p[4096];
    path_in_dir(p, sizeof p, "gone");
    CHECK(mkdir(p, 0750) == 0 && chdir(p) == 0, "cwd");
    cwd_fd = open(".", O_RDONLY | O_DIRECTORY);
    CHECK(cwd_fd >= 0 && rmdir(p) == 0, "removed cwd");
}
static void cwd_check(void) {
    char buf[4096];
    CHECK(getcwd(buf, sizeof buf) == NULL && errno == ENOENT, "cwd is still a removed directory");
    struct stat a, b;
    CHECK(stat(".", &a) == 0 && fstat(cwd_fd, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev,
          "the fd and the working directory are one directory");
    CHECK((a.st_mode & 07777) == 0750, "its mode");
}

/* A working directory that is the /proc directory of a process that ended
 * (zdtm unhashed_proc): getcwd fails, and /proc/self/cwd names that
 * process's directory, its PID the same. */
static char pc_link[64];
static void proc_cwd_setup(void) {
    pid_t p = fork();
    CHECK(p >= 0, "fork");
    if (p == 0) {
        pause();
        _exit(0);
    }
    char d[32];
    snprintf(d, sizeof d, "/proc/%d", p);
    CHECK(chdir(d) == 0, "chdir %s", d);
    CHECK(kill(p, SIGKILL) == 0 && waitpid(p, NULL, 0) == p, "its end");
    ssize_t n = readlink("/proc/self/cwd", pc_link, sizeof pc_link - 1);
    CHECK(n > 0, "readlink");
    pc_link[n] = 0;
    char want[64];
    snprintf(want, sizeof want, "/proc/%d (deleted)", p);
    CHECK(!strcmp(pc_link, want), "a dead process's directory: %s", pc_link);
}
static void proc_cwd_check(void) {
    char buf[4096];
    CHECK(getcwd(buf, sizeof buf) == NULL && errno == ENOENT, "getcwd fails as it did");
    ssize_t n = readlink("/proc/self/cwd", buf, sizeof buf - 1);
    CHECK(n > 0, "readlink");
    buf[n] = 0;
    CHECK(!strcmp(buf, pc_link), "the same dead process's directory: %s, was %s", buf, pc_link);
    CHECK(chdir("/") == 0 && chdir("..") == 0, "and it can leave it");
}

/* Unix sockets bound to relative names (the kernel keeps the name as
 * given): a stream listener at "l.sock" and a datagram socket at
 * "sub/d.sock", bound from the working directory, which stays. After the
 * restore each reads the same relative name, and connects and sends by
 * that name reach them. */
static int rel_l, rel_d;
static struct sockaddr_un rel_addr(const char *name) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", name);
    return a;
}
static int rel_w;
static void relsock_setup(void) {
    char p[4096];
    path_in_dir(p, sizeof p, "rel");
    CHECK(mkdir(p, 0700) == 0 && chdir(p) == 0 && mkdir("sub", 0700) == 0, "cwd");
    struct sockaddr_un l = rel_addr("l.sock"), d = rel_addr("sub/d.sock");
    rel_l = socket(AF_UNIX, SOCK_STREAM, 0);
    rel_d = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(rel_l >= 0 && bind(rel_l, (struct sockaddr *)&l, sizeof l) == 0 && listen(rel_l, 4) == 0, "listener");
    CHECK(rel_d >= 0 && bind(rel_d, (struct sockaddr *)&d, sizeof d) == 0, "datagram socket");
    CHECK(chmod("l.sock", 0640) == 0, "chmod");
    /* A connection waiting in the listener's queue, not accepted yet: its
     * peer's name is the listener's relative one. */
    rel_w = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(rel_w >= 0 && connect(rel_w, (struct sockaddr *)&l, sizeof l) == 0, "a connection waiting");
}
static void relsock_check(void) {
    struct sockaddr_un a;
    socklen_t n = sizeof a;
    CHECK(getsockname(rel_l, (struct sockaddr *)&a, &n) == 0 && !strcmp(a.sun_path, "l.sock"), "listener's name: %s",
          a.sun_path);
    n = sizeof a;
    CHECK(getsockname(rel_d, (struct sockaddr *)&a, &n) == 0 && !strcmp(a.sun_path, "sub/d.sock"),
          "datagram socket's name: %s", a.sun_path);
    struct stat st;
    CHECK(stat("l.sock", &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 07777) == 0640, "socket file and mode");
    n = sizeof a;
    CHECK(getpeername(rel_w, (struct sockaddr *)&a, &n) == 0 && !strcmp(a.sun_path, "l.sock"),
          "the waiting connection's peer name: %s", a.sun_path);
    char wb[8] = {0};
    int w = accept(rel_l, NULL, NULL);
    CHECK(w >= 0 && write(rel_w, "wait", 4) == 4 && read(w, wb, sizeof wb) == 4 && !memcmp(wb, "wait", 4),
          "the waiting connection is accepted first");
    close(w);
    struct sockaddr_un l = rel_addr("l.sock"), d = rel_addr("sub/d.sock");
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(c >= 0 && connect(c, (struct sockaddr *)&l, sizeof l) == 0, "connect by the relative name");
    int s = accept(rel_l, NULL, NULL);
    char buf[16] = {0};
    CHECK(s >= 0 && write(c, "rel", 3) == 3 && read(s, buf, sizeof buf) == 3 && !memcmp(buf, "rel", 3), "through it");
    close(c);
    close(s);
    int u = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(u >= 0 && sendto(u, "dg", 2, 0, (struct sockaddr *)&d, sizeof d) == 2, "send by the relative name");
    CHECK(recv(rel_d, buf, sizeof buf, 0) == 2 && !memcmp(buf, "dg", 2), "datagram received");
    close(u);
}

/* Two AIO contexts (io_setup): in the first, 40 writes to a file submitted
 * and 37 reaped, so that its ring has gone round (head and tail past 32),
 * the last three completed and not reaped; the second empty. After a
 * restore each context has its id (its ring's address), its ring its
 * head and tail, io_getevents gives the three events with their data and
 * results, and new requests complete in both. */
static aio_context_t aio_ctx[2];
static unsigned aio_head, aio_tail;
static int aio_fd;
static long aio_submit(aio_context_t ctx, uint64_t data, const char *bytes, size_t len, off_t at) {
    struct iocb cb = {.aio_data = data, .aio_lio_opcode = IOCB_CMD_PWRITE, .aio_fildes = (uint32_t)aio_fd,
                      .aio_buf = (uint64_t)(uintptr_t)bytes, .aio_nbytes = len, .aio_offset = at};
    struct iocb *p = &cb;
    return syscall(SYS_io_submit, ctx, 1, &p);
}
static void aio_setup(void) {
    static char name[4096];
    path_in_dir(name, sizeof name, "aio");
    aio_fd = open(name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(aio_fd >= 0 && syscall(SYS_io_setup, 16, &aio_ctx[0]) == 0 && syscall(SYS_io_setup, 1, &aio_ctx[1]) == 0,
          "two contexts");
    struct io_event ev[8];
    for (int i = 0; i < 40; i++) {
        CHECK(aio_submit(aio_ctx[0], 1000 + i, "abcdefghijklmnopqrstuvwxyz0123456789ABCD" + i, 1, i) == 1, "submit %d", i);
        if (i < 37) CHECK(syscall(SYS_io_getevents, aio_ctx[0], 1, 1, ev, NULL) == 1 && ev[0].data == 1000u + i, "reap %d", i);
    }
    unsigned *ring = (unsigned *)aio_ctx[0];
    aio_head = ring[2];
    aio_tail = ring[3];
    CHECK(aio_tail - aio_head == 3 && aio_head > 32, "three unreaped past the ring's start: %u %u", aio_head, aio_tail);
}
static void aio_check(void) {
    unsigned *ring = (unsigned *)aio_ctx[0];
    CHECK(ring[2] == aio_head && ring[3] == aio_tail && ring[4] == 0xa10a10a1, "head %u tail %u magic %#x", ring[2],
          ring[3], ring[4]);
    struct io_event ev[8];
    long n = syscall(SYS_io_getevents, aio_ctx[0], 0, 8, ev, &(struct timespec){0, 0});
    CHECK(n == 3, "the three completed events: %ld (%s)", n, n < 0 ? strerror(errno) : "");
    for (int i = 0; i < 3; i++)
        CHECK(ev[i].data == 1000u + 37 + i && ev[i].res == 1, "event %d: data %llu res %lld", i,
              (unsigned long long)ev[i].data, (long long)ev[i].res);
    for (int c = 0; c < 2; c++) {
        /* (The same bytes again: the file is the original's too.) */
        CHECK(aio_submit(aio_ctx[c], 77 + c, "ab" + c, 1, c) == 1, "a new request in context %d: %s", c, strerror(errno));
        n = syscall(SYS_io_getevents, aio_ctx[c], 1, 1, ev, NULL);
        CHECK(n == 1 && ev[0].data == 77u + c, "its event: %ld", n);
    }
    char back[41] = {0};
    CHECK(pread(aio_fd, back, 41, 0) == 40 && !strcmp(back, "abcdefghijklmnopqrstuvwxyz0123456789ABCD"),
          "the file: %s", back);
}

/* Unix sockets bound by relative names in a directory the process then
 * left: a listener whose file is still there (the kernel says where:
 * SIOCUNIXFILE; refused until stop 40, "cannot tell which directory"), and
 * a datagram socket whose file was removed, a client connected to it by
 * that relative name (zdtm fifo_upon_unix_socket01), and a datagram
 * server whose file is still there with a client connected to it by its
 * relative name, and a listener bound by `./dot.sock` (both refused until
 * stop 41). */
static int left_l, left_g, left_c, left_s, left_d, left_dc, left_dot;
static char left_dir[4096];
static void relleft_setup(void) {
    path_in_dir(left_dir, sizeof left_dir, "left");
    struct sockaddr_un l = rel_addr("r.sock"), g = rel_addr("gone.sock");
    left_l = socket(AF_UNIX, SOCK_STREAM, 0);
    left_g = socket(AF_UNIX, SOCK_DGRAM, 0);
    left_c = socket(AF_UNIX, SOCK_DGRAM, 0);
    left_s = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(mkdir(left_dir, 0700) == 0 && chdir(left_dir) == 0, "into the directory");
    CHECK(bind(left_l, (struct sockaddr *)&l, sizeof l) == 0 && listen(left_l, 4) == 0, "listener");
    CHECK(bind(left_g, (struct sockaddr *)&g, sizeof g) == 0 && connect(left_c, (struct sockaddr *)&g, sizeof g) == 0,
          "datagram socket and its client");
    /* A second client, shut down for writing: its sends fail (EPIPE). */
    CHECK(connect(left_s, (struct sockaddr *)&g, sizeof g) == 0 && shutdown(left_s, SHUT_WR) == 0, "a client shut down");
    struct sockaddr_un d = rel_addr("d.sock");
    left_d = socket(AF_UNIX, SOCK_DGRAM, 0);
    left_dc = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(bind(left_d, (struct sockaddr *)&d, sizeof d) == 0 && connect(left_dc, (struct sockaddr *)&d, sizeof d) == 0,
          "a datagram server and its client by its relative name");
    struct sockaddr_un dot = rel_addr("./dot.sock");
    left_dot = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(bind(left_dot, (struct sockaddr *)&dot, sizeof dot) == 0 && listen(left_dot, 1) == 0,
          "a listener bound by ./dot.sock");
    CHECK(unlink("gone.sock") == 0 && chdir(DIRPATH) == 0, "its file removed, the directory left");
}
static void relleft_check(void) {
    struct sockaddr_un a;
    socklen_t n = sizeof a;
    CHECK(getsockname(left_l, (struct sockaddr *)&a, &n) == 0 && !strcmp(a.sun_path, "r.sock"), "listener's name: %s",
          a.sun_path);
    n = sizeof a;
    CHECK(getsockname(left_g, (struct sockaddr *)&a, &n) == 0 && !strcmp(a.sun_path, "gone.sock"),
          "the removed one's name: %s", a.sun_path);
    n = sizeof a;
    CHECK(getpeername(left_c, (struct sockaddr *)&a, &n) == 0 && !strcmp(a.sun_path, "gone.sock"),
          "its client's peer: %s", a.sun_path);
    char p[4200], buf[8] = {0};
    snprintf(p, sizeof p, "%s/gone.sock", left_dir);
    CHECK(access(p, F_OK) != 0 && errno == ENOENT, "no file for the removed one");
    CHECK(access("gone.sock", F_OK) != 0 && access("r.sock", F_OK) != 0, "nothing in the working directory");
    CHECK(send(left_c, "g", 1, 0) == 1 && recv(left_g, buf, sizeof buf, MSG_DONTWAIT) == 1 && buf[0] == 'g',
          "the client reaches it");
    CHECK(send(left_s, "s", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE, "the client shut down stays so");
    n = sizeof a;
    CHECK(getpeername(left_dc, (struct sockaddr *)&a, &n) == 0 && !strcmp(a.sun_path, "d.sock"),
          "the live server's client's peer: %s", a.sun_path);
    CHECK(access("d.sock", F_OK) != 0, "nothing in the working directory");
    CHECK(send(left_dc, "d", 1, 0) == 1 && recv(left_d, buf, sizeof buf, MSG_DONTWAIT) == 1 && buf[0] == 'd',
          "the client reaches the live server");
    snprintf(p, sizeof p, "%s/d.sock", left_dir);
    struct stat st;
    CHECK(stat(p, &st) == 0 && S_ISSOCK(st.st_mode), "the live server's file where it was bound");
    struct sockaddr_un l = {.sun_family = AF_UNIX};
    snprintf(p, sizeof p, "%s/r.sock", left_dir);
    CHECK(strlen(p) < sizeof l.sun_path, "a short enough name: %s", p);
    memcpy(l.sun_path, p, strlen(p) + 1);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(c >= 0 && connect(c, (struct sockaddr *)&l, sizeof l) == 0, "connect to the listener where it was bound");
    int s = accept(left_l, NULL, NULL);
    CHECK(s >= 0 && write(c, "rel", 3) == 3 && read(s, buf, sizeof buf) == 3 && !memcmp(buf, "rel", 3), "through it");
    close(c);
    close(s);
    n = sizeof a;
    CHECK(getsockname(left_dot, (struct sockaddr *)&a, &n) == 0 && !strcmp(a.sun_path, "./dot.sock"),
          "the ./ listener's name: %s", a.sun_path);
    snprintf(p, sizeof p, "%s/dot.sock", left_dir);
    CHECK(strlen(p) < sizeof l.sun_path, "a short enough name: %s", p);
    memcpy(l.sun_path, p, strlen(p) + 1);
    c = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(c >= 0 && connect(c, (struct sockaddr *)&l, sizeof l) == 0, "connect to the ./ listener where it was bound");
    s = accept(left_dot, NULL, NULL);
    CHECK(s >= 0, "accepted by the ./ listener");
    close(c);
    close(s);
}

/* Pair ends whose other end was closed: a datagram end with two messages
 * the other end sent first, an empty one, and a seqpacket end with two
 * messages. A datagram end still names its dead peer (getpeername answers;
 * the first send fails with ECONNREFUSED, the next with ENOTCONN); the
 * seqpacket end reads its messages, then end of file, and a send fails
 * with EPIPE. */
static int wd_dg, wd_dg0, wd_sp, wd_st, wd_dgf;
/* Send `len` bytes with fd `fd` (SCM_RIGHTS). */
static void wd_send_fd(int via, const char *bytes, size_t len, int fd) {
    char ctrl[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec iov = {.iov_base = (void *)bytes, .iov_len = len};
    struct msghdr h = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl, .msg_controllen = sizeof ctrl};
    struct cmsghdr *c = CMSG_FIRSTHDR(&h);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    CHECK(sendmsg(via, &h, 0) == (ssize_t)len, "sendmsg with an fd");
}
/* Receive up to `len` bytes and any fd (-1 if none). */
static ssize_t wd_recv_fd(int via, char *buf, size_t len, int *fd) {
    char ctrl[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr h = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl, .msg_controllen = sizeof ctrl};
    ssize_t n = recvmsg(via, &h, MSG_DONTWAIT);
    struct cmsghdr *c = CMSG_FIRSTHDR(&h);
    *fd = -1;
    if (n >= 0 && c && c->cmsg_type == SCM_RIGHTS) memcpy(fd, CMSG_DATA(c), sizeof *fd);
    return n;
}
/* A pipe holding `text`; its read end (the write end closed). */
static int wd_pipe(const char *text) {
    int q[2];
    CHECK(pipe(q) == 0 && write(q[1], text, strlen(text)) == (ssize_t)strlen(text), "pipe");
    close(q[1]);
    return q[0];
}
/* Accepted ends whose client closed (a server's connections; redis's
 * BGSAVE child holds those): a stream end at a path with bytes left, a
 * seqpacket end at an abstract name with two messages. Each keeps the
 * name it was accepted under (getsockname), names an unnamed peer, reads
 * what was left, then end of file, and a send fails with EPIPE; the
 * listener at the path still accepts, and its directory holds only its
 * socket file. */
static int unix_addr(struct sockaddr_un *u, const char *name, int abstract);
static int aw_l, aw_st, aw_sp;
static struct sockaddr_un aw_path, aw_abs;
static socklen_t aw_path_len, aw_abs_len;
static void accepted_widow_setup(void) {
    aw_path_len = (socklen_t)unix_addr(&aw_path, "aw.sock", 0);
    char abs_name[64];
    snprintf(abs_name, sizeof abs_name, "cryo-fidelity-aw.%d", getpid());
    aw_abs_len = (socklen_t)unix_addr(&aw_abs, abs_name, 1);
    aw_l = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(aw_l >= 0 && bind(aw_l, (struct sockaddr *)&aw_path, aw_path_len) == 0 && listen(aw_l, 4) == 0,
          "listener at a path");
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(c >= 0 && connect(c, (struct sockaddr *)&aw_path, aw_path_len) == 0, "client");
    aw_st = accept(aw_l, NULL, NULL);
    CHECK(aw_st >= 0 && send(c, "bye", 3, 0) == 3, "accepted, bytes sent");
    close(c);
    int l = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    CHECK(l >= 0 && bind(l, (struct sockaddr *)&aw_abs, aw_abs_len) == 0 && listen(l, 1) == 0, "abstract listener");
    c = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    CHECK(c >= 0 && connect(c, (struct sockaddr *)&aw_abs, aw_abs_len) == 0, "seqpacket client");
    aw_sp = accept(l, NULL, NULL);
    CHECK(aw_sp >= 0 && send(c, "m1", 2, 0) == 2 && send(c, "m22", 3, 0) == 3, "messages sent");
    close(c);
    close(l);
}
static void accepted_widow_check(void) {
    struct sockaddr_un a;
    socklen_t n = sizeof a;
    CHECK(getsockname(aw_st, (struct sockaddr *)&a, &n) == 0 &&
              n == offsetof(struct sockaddr_un, sun_path) + strlen(aw_path.sun_path) + 1 &&
              !strcmp(a.sun_path, aw_path.sun_path),
          "stream end's name: %s (%u)", a.sun_path, n);
    n = sizeof a;
    CHECK(getsockname(aw_sp, (struct sockaddr *)&a, &n) == 0 && n == aw_abs_len &&
              !memcmp(a.sun_path, aw_abs.sun_path, n - offsetof(struct sockaddr_un, sun_path)),
          "seqpacket end's abstract name (%u bytes)", n);
    n = sizeof a;
    CHECK(getpeername(aw_st, (struct sockaddr *)&a, &n) == 0 && n == sizeof(sa_family_t), "an unnamed peer");
    char buf[8];
    CHECK(recv(aw_st, buf, sizeof buf, 0) == 3 && !memcmp(buf, "bye", 3), "the bytes left");
    CHECK(recv(aw_st, buf, sizeof buf, 0) == 0, "then end of file");
    CHECK(send(aw_st, "x", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE, "send: EPIPE (%s)", strerror(errno));
    CHECK(recv(aw_sp, buf, sizeof buf, 0) == 2 && !memcmp(buf, "m1", 2), "first message");
    CHECK(recv(aw_sp, buf, sizeof buf, 0) == 3 && !memcmp(buf, "m22", 3), "second message");
    CHECK(recv(aw_sp, buf, sizeof buf, 0) == 0, "then end of file");
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(c >= 0 && connect(c, (struct sockaddr *)&aw_path, aw_path_len) == 0, "the listener answers at its path");
    int w = accept(aw_l, NULL, NULL);
    CHECK(w >= 0 && send(c, "hi", 2, 0) == 2 && recv(w, buf, sizeof buf, 0) == 2, "a new connection");
    close(c);
    close(w);
    struct stat st;
    CHECK(stat(aw_path.sun_path, &st) == 0 && S_ISSOCK(st.st_mode), "the listener's socket file");
    DIR *d = opendir(DIRPATH);
    CHECK(d != NULL, "opendir");
    struct dirent *e;
    while ((e = readdir(d)))
        CHECK(!strstr(e->d_name, "cryo-aside"), "nothing left aside: %s", e->d_name);
    closedir(d);
}
static void widowed_setup(void) {
    int p[2];
    /* A stream end with bytes, bytes with a pipe in flight, and bytes; and
     * a datagram end with a message carrying a pipe. */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, p) == 0 && send(p[1], "ab", 2, 0) == 2, "stream pair");
    int q = wd_pipe("piped");
    wd_send_fd(p[1], "cd", 2, q);
    close(q);
    CHECK(send(p[1], "ef", 2, 0) == 2, "more bytes");
    close(p[1]);
    wd_st = p[0];
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, p) == 0 && send(p[1], "m0", 2, 0) == 2, "datagram pair with files");
    q = wd_pipe("dg-piped");
    wd_send_fd(p[1], "m1", 2, q);
    close(q);
    close(p[1]);
    wd_dgf = p[0];
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, p) == 0 && send(p[1], "one", 3, 0) == 3 && send(p[1], "four", 4, 0) == 4,
          "datagram pair");
    close(p[1]);
    wd_dg = p[0];
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, p) == 0, "empty datagram pair");
    close(p[1]);
    wd_dg0 = p[0];
    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, p) == 0 && send(p[1], "sp1", 3, 0) == 3 && send(p[1], "sp22", 4, 0) == 4,
          "seqpacket pair");
    close(p[1]);
    wd_sp = p[0];
}
static void widowed_check(void) {
    char buf[16];
    struct sockaddr_un a;
    socklen_t n = sizeof a;
    CHECK(getpeername(wd_dg, (struct sockaddr *)&a, &n) == 0 && n == sizeof(sa_family_t), "it still names its peer");
    n = sizeof a;
    CHECK(getpeername(wd_dg0, (struct sockaddr *)&a, &n) == 0, "the empty one too");
    CHECK(recv(wd_dg, buf, sizeof buf, MSG_DONTWAIT) == 3 && !memcmp(buf, "one", 3), "first message");
    CHECK(recv(wd_dg, buf, sizeof buf, MSG_DONTWAIT) == 4 && !memcmp(buf, "four", 4), "second message");
    CHECK(recv(wd_dg, buf, sizeof buf, MSG_DONTWAIT) == -1 && errno == EAGAIN, "no more");
    CHECK(recv(wd_dg0, buf, sizeof buf, MSG_DONTWAIT) == -1 && errno == EAGAIN, "none in the empty one");
    CHECK(send(wd_dg, "x", 1, 0) == -1 && errno == ECONNREFUSED, "first send: ECONNREFUSED (%s)", strerror(errno));
    CHECK(send(wd_dg, "x", 1, 0) == -1 && errno == ENOTCONN, "second send: ENOTCONN (%s)", strerror(errno));
    CHECK(send(wd_dg0, "x", 1, 0) == -1 && errno == ECONNREFUSED, "the empty one's send: ECONNREFUSED");
    CHECK(recv(wd_sp, buf, sizeof buf, 0) == 3 && !memcmp(buf, "sp1", 3), "first seqpacket message");
    CHECK(recv(wd_sp, buf, sizeof buf, 0) == 4 && !memcmp(buf, "sp22", 4), "second seqpacket message");
    CHECK(recv(wd_sp, buf, sizeof buf, 0) == 0, "then end of file");
    CHECK(send(wd_sp, "z", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE, "seqpacket send: EPIPE");
    /* The stream: every byte in order, one pipe among them, then EOF. */
    char all[16] = {0};
    size_t got = 0;
    int fds = 0, pfd = -1, f;
    ssize_t r;
    while ((r = wd_recv_fd(wd_st, all + got, sizeof all - 1 - got, &f)) > 0) {
        got += r;
        if (f >= 0) {
            fds++;
            pfd = f;
        }
    }
    CHECK(r == 0 && got == 6 && !memcmp(all, "abcdef", 6) && fds == 1, "stream: %zu bytes '%s', %d fds, then EOF",
          got, all, fds);
    CHECK(read(pfd, buf, sizeof buf) == 5 && !memcmp(buf, "piped", 5), "the pipe in flight, with its bytes");
    close(pfd);
    /* The datagram end: its message, then the one with the pipe. */
    CHECK(wd_recv_fd(wd_dgf, buf, sizeof buf, &f) == 2 && !memcmp(buf, "m0", 2) && f == -1, "first datagram");
    CHECK(wd_recv_fd(wd_dgf, buf, sizeof buf, &f) == 2 && !memcmp(buf, "m1", 2) && f >= 0, "datagram with a pipe");
    CHECK(read(f, buf, sizeof buf) == 8 && !memcmp(buf, "dg-piped", 8), "its pipe, with its bytes");
    close(f);
}

/* Unix sockets whose files are gone: a listener whose file was removed,
 * a listener whose file was replaced by a regular file, and a datagram
 * socket whose file was removed. After the restore each has its name, the
 * removed names lead to nothing, and the regular file is still there with
 * its bytes. */
static int gh_l, gh_r, gh_d, gh_c, gh_a;
static char gh_lp[108], gh_rp[108], gh_dp[108];
static int gh_bind(int type, const char *path, int backlog) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    int s = socket(AF_UNIX, type, 0);
    CHECK(s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 && (backlog < 0 || listen(s, backlog) == 0),
          "bind %s: %s", path, strerror(errno));
    return s;
}
static void ghost_setup(void) {
    char d[4096];
    path_in_dir(d, sizeof d, "gh");
    CHECK(mkdir(d, 0700) == 0 && chdir(d) == 0, "dir");
    /* (Absolute names, short enough for sun_path: from the directory.) */
    CHECK(getcwd(d, sizeof d) != NULL && strlen(d) < 80, "a short enough directory: %s", d);
    snprintf(gh_lp, sizeof gh_lp, "%s/l", d);
    snprintf(gh_rp, sizeof gh_rp, "%s/r", d);
    snprintf(gh_dp, sizeof gh_dp, "%s/d", d);
    gh_l = gh_bind(SOCK_STREAM, gh_lp, 3);
    gh_r = gh_bind(SOCK_STREAM, gh_rp, 5);
    gh_d = gh_bind(SOCK_DGRAM, gh_dp, -1);
    /* A connection through the listener, accepted, before its file goes. */
    struct sockaddr_un la = {.sun_family = AF_UNIX};
    memcpy(la.sun_path, gh_lp, strlen(gh_lp) + 1);
    gh_c = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(gh_c >= 0 && connect(gh_c, (struct sockaddr *)&la, sizeof la) == 0, "connect");
    gh_a = accept(gh_l, NULL, NULL);
    CHECK(gh_a >= 0 && write(gh_c, "queued", 6) == 6, "accept");
    CHECK(unlink(gh_lp) == 0 && unlink(gh_rp) == 0 && unlink(gh_dp) == 0, "unlink");
    int f = open(gh_rp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    CHECK(f >= 0 && write(f, "mine", 4) == 4 && close(f) == 0, "a file where the socket was");
}
static void ghost_check(void) {
    const char *paths[] = {gh_lp, gh_rp, gh_dp};
    int socks[] = {gh_l, gh_r, gh_d};
    for (int i = 0; i < 3; i++) {
        struct sockaddr_un a;
        socklen_t n = sizeof a;
        CHECK(getsockname(socks[i], (struct sockaddr *)&a, &n) == 0 && !strcmp(a.sun_path, paths[i]), "name of %s",
              paths[i]);
    }
    int acc = 0;
    socklen_t n = sizeof acc;
    CHECK(getsockopt(gh_l, SOL_SOCKET, SO_ACCEPTCONN, &acc, &n) == 0 && acc == 1, "still listening");
    struct stat st;
    CHECK(lstat(gh_lp, &st) == -1 && errno == ENOENT, "no file at the removed listener's name");
    CHECK(lstat(gh_dp, &st) == -1 && errno == ENOENT, "no file at the removed datagram socket's name");
    char buf[8] = {0};
    int f = open(gh_rp, O_RDONLY);
    CHECK(f >= 0 && read(f, buf, sizeof buf) == 4 && !memcmp(buf, "mine", 4) && fstat(f, &st) == 0 &&
              S_ISREG(st.st_mode),
          "the regular file is still there, as it was");
    close(f);
    /* Nothing reaches them by name; the datagram socket still receives
     * from an fd that holds it. */
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", gh_lp);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(connect(c, (struct sockaddr *)&a, sizeof a) == -1 && errno == ENOENT, "the removed name leads nowhere");
    close(c);
    /* The connection made through it: its names, its queued bytes, both
     * ways. */
    n = sizeof a;
    CHECK(getpeername(gh_c, (struct sockaddr *)&a, &n) == 0 && !strcmp(a.sun_path, gh_lp), "the client's peer name");
    n = sizeof a;
    CHECK(getsockname(gh_a, (struct sockaddr *)&a, &n) == 0 && !strcmp(a.sun_path, gh_lp), "the accepted end's name");
    CHECK(read(gh_a, buf, sizeof buf) == 6 && !memcmp(buf, "queued", 6), "queued bytes");
    CHECK(write(gh_a, "back", 4) == 4 && read(gh_c, buf, sizeof buf) == 4 && !memcmp(buf, "back", 4), "and back");
}

/* Datagram sockets connected to ghosts (zdtm sk-unix01): two servers
 * bound one after the other to one name in a directory, each with clients
 * connected to it, and a datagram pair whose ends were both bound to one
 * name, a message queued in it; every name removed, then the directory.
 * After the restore each client still reaches its own server (not the
 * other one bound to the same name), each socket has its name, the pair
 * its message, and the directory is gone. */
static int gd_s1, gd_s2, gd_c1, gd_c2, gd_c3, gd_p[2];
static char gd_dir[96], gd_sp[108], gd_pp[108];
static int gd_connect(const char *path) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0, "connect %s", path);
    return s;
}
static void ghost_dgram_setup(void) {
    char d[4096];
    path_in_dir(d, sizeof d, "gd");
    CHECK(mkdir(d, 0700) == 0 && chdir(d) == 0 && mkdir("sub", 0755) == 0, "dirs");
    CHECK(getcwd(d, sizeof d) != NULL && strlen(d) < 80, "a short enough directory: %s", d);
    snprintf(gd_dir, sizeof gd_dir, "%s/sub", d);
    snprintf(gd_sp, sizeof gd_sp, "%s/s", gd_dir);
    snprintf(gd_pp, sizeof gd_pp, "%s/p", gd_dir);
    gd_s1 = gh_bind(SOCK_DGRAM, gd_sp, -1);
    gd_c1 = gd_connect(gd_sp);
    gd_c2 = gd_connect(gd_sp);
    CHECK(unlink(gd_sp) == 0, "unlink");
    gd_s2 = gh_bind(SOCK_DGRAM, gd_sp, -1);
    gd_c3 = gd_connect(gd_sp);
    CHECK(unlink(gd_sp) == 0, "unlink");
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, gd_p) == 0, "socketpair");
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", gd_pp);
    CHECK(bind(gd_p[0], (struct sockaddr *)&a, sizeof a) == 0 && unlink(gd_pp) == 0, "bind pair 0");
    CHECK(bind(gd_p[1], (struct sockaddr *)&a, sizeof a) == 0 && unlink(gd_pp) == 0, "bind pair 1");
    CHECK(send(gd_p[1], "queued", 6, 0) == 6, "queue");
    CHECK(rmdir(gd_dir) == 0, "rmdir");
}
static void gd_name(int s, int peer, const char *want) {
    struct sockaddr_un a;
    socklen_t n = sizeof a;
    int r = peer ? getpeername(s, (struct sockaddr *)&a, &n) : getsockname(s, (struct sockaddr *)&a, &n);
    CHECK(r == 0 && !strcmp(a.sun_path, want), "%s of fd %d: %s", peer ? "peer" : "name", s, r == 0 ? a.sun_path : "?");
}
static void gd_hop(int from, int to, const char *msg) {
    char buf[16] = {0};
    CHECK(send(from, msg, strlen(msg), 0) == (ssize_t)strlen(msg), "send %s", msg);
    CHECK(recv(to, buf, sizeof buf, MSG_DONTWAIT) == (ssize_t)strlen(msg) && !memcmp(buf, msg, strlen(msg)),
          "%s reaches its own socket", msg);
}
static void ghost_dgram_check(void) {
    int named[] = {gd_s1, gd_s2, gd_p[0], gd_p[1]};
    const char *names[] = {gd_sp, gd_sp, gd_pp, gd_pp};
    for (int i = 0; i < 4; i++) gd_name(named[i], 0, names[i]);
    gd_name(gd_c1, 1, gd_sp);
    gd_name(gd_c3, 1, gd_sp);
    gd_name(gd_p[0], 1, gd_pp);
    char buf[16];
    CHECK(recv(gd_p[0], buf, sizeof buf, MSG_DONTWAIT) == 6 && !memcmp(buf, "queued", 6), "the pair's queued message");
    gd_hop(gd_c1, gd_s1, "one");
    gd_hop(gd_c2, gd_s1, "two");
    gd_hop(gd_c3, gd_s2, "three");
    CHECK(recv(gd_s1, buf, sizeof buf, MSG_DONTWAIT) == -1 && errno == EAGAIN, "nothing more at the first server");
    gd_hop(gd_p[1], gd_p[0], "x");
    gd_hop(gd_p[0], gd_p[1], "y");
    struct stat st;
    CHECK(lstat(gd_dir, &st) == -1 && errno == ENOENT, "the removed directory is still gone");
    int c = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", gd_sp);
    CHECK(connect(c, (struct sockaddr *)&a, sizeof a) == -1 && errno == ENOENT, "the removed name leads nowhere");
    close(c);
}

/* A droppable mapping (MAP_DROPPABLE) and a sealed one (mseal). */
#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif
static uint8_t *m_drop, *m_sealed;
static void special_maps_setup(void) {
    m_drop = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_DROPPABLE | MAP_ANONYMOUS, -1, 0);
    CHECK(m_drop != MAP_FAILED, "MAP_DROPPABLE");
    m_drop[0] = 9;
    m_sealed = mmap(NULL, 8192, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(m_sealed != MAP_FAILED, "mmap");
    CHECK(syscall(462 /* mseal */, m_sealed, 8192, 0) == 0, "mseal");
}
static void special_maps_check(void) {
    CHECK(mprotect(m_sealed, 8192, PROT_READ | PROT_WRITE) == -1 && errno == EPERM, "still sealed");
}

/* An inotify instance with watches whose descriptors have a gap. */
static int ino_fd, ino_wd_dir, ino_wd_file;
static void inotify_setup(void) {
    ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    CHECK(ino_fd >= 0, "inotify_init1");
    int f = make_file("watched", 10, 0);
    close(f);
    char p[4096];
    path_in_dir(p, sizeof p, "watched");
    int gone = inotify_add_watch(ino_fd, "/", IN_ACCESS);
    ino_wd_dir = inotify_add_watch(ino_fd, DIRPATH, IN_CREATE | IN_DELETE);
    ino_wd_file = inotify_add_watch(ino_fd, p, IN_MODIFY | IN_ONESHOT);
    CHECK(gone > 0 && ino_wd_dir > 0 && ino_wd_file > 0, "inotify_add_watch");
    CHECK(inotify_rm_watch(ino_fd, gone) == 0, "rm watch");
    /* drain the IN_IGNORED event of the removed watch */
    char buf[4096];
    while (read(ino_fd, buf, sizeof buf) > 0) {}
}
static void inotify_check(void) {
    char p[4096];
    snprintf(p, sizeof p, "%s/new.%d", DIRPATH, getpid());
    int f = open(p, O_CREAT | O_WRONLY, 0600);
    CHECK(f >= 0, "create");
    close(f);
    unlink(p);
    char buf[4096] __attribute__((aligned(8)));
    ssize_t n = read(ino_fd, buf, sizeof buf);
    CHECK(n > 0, "an event arrives after restore");
    struct inotify_event *e = (struct inotify_event *)buf;
    CHECK(e->wd == ino_wd_dir && (e->mask & IN_CREATE), "the event is the directory watch's (wd %d, mask %x)", e->wd, e->mask);
}

/* A SIGTRAP handler, with SIGTRAP blocked: capture must not disturb it
 * (single-stepping the process would force a SIGTRAP on it, which resets
 * a blocked signal's handler to SIG_DFL). */
static volatile sig_atomic_t trapped;
static void on_trap(int sig) { (void)sig; trapped++; }
static void sigtrap_setup(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_trap;
    CHECK(sigaction(SIGTRAP, &sa, NULL) == 0, "sigaction SIGTRAP");
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGTRAP);
    CHECK(sigprocmask(SIG_BLOCK, &s, NULL) == 0, "block SIGTRAP");
}
static void sigtrap_check(void) {
    struct sigaction sa;
    CHECK(sigaction(SIGTRAP, NULL, &sa) == 0 && sa.sa_handler == on_trap, "the SIGTRAP handler is still there");
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGTRAP);
    raise(SIGTRAP);
    CHECK(sigprocmask(SIG_UNBLOCK, &s, NULL) == 0, "unblock");
    CHECK(trapped == 1, "the handler ran");
}

/* eventfd, timerfd, signalfd, epoll: what threaded runtimes hold. */
static int a_efd, a_tfd, a_tick, a_sfd, a_ep, a_per;
static void anonfds_setup(void) {
    /* A periodic timer that expired and was not read: the kernel re-arms
     * it only on the read, and shows it_value 0 meanwhile (a restore that
     * takes that literally disarms it: GHC's ticker hung so). */
    a_per = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec per = {{10, 0}, {0, 5000000}};
    CHECK(a_per >= 0 && timerfd_settime(a_per, 0, &per, NULL) == 0, "periodic timerfd");
    a_efd = eventfd(5, EFD_NONBLOCK | EFD_SEMAPHORE);
    a_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct itimerspec its = {{10, 0}, {10, 0}};
    a_tick = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec once = {{0, 0}, {0, 1000000}};
    CHECK(a_efd >= 0 && a_tfd >= 0 && a_tick >= 0, "eventfd, timerfd");
    CHECK(timerfd_settime(a_tfd, 0, &its, NULL) == 0 && timerfd_settime(a_tick, 0, &once, NULL) == 0, "settime");
    usleep(20000); /* the one-shot timer expires: one tick not read */
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    sigaddset(&m, SIGWINCH);
    CHECK(sigprocmask(SIG_BLOCK, &m, NULL) == 0, "block");
    a_sfd = signalfd(-1, &m, SFD_NONBLOCK);
    a_ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data = {.u64 = 0x1234}};
    struct epoll_event ev2 = {.events = EPOLLIN, .data = {.u64 = 0x55}};
    CHECK(a_sfd >= 0 && a_ep >= 0, "signalfd, epoll");
    CHECK(epoll_ctl(a_ep, EPOLL_CTL_ADD, a_efd, &ev) == 0 && epoll_ctl(a_ep, EPOLL_CTL_ADD, a_tick, &ev2) == 0, "epoll_ctl");
}
static void anonfds_check(void) {
    uint64_t v = 0;
    CHECK(read(a_per, &v, 8) == 8 && v == 1, "the periodic timer's expiration");
    struct itimerspec pcur;
    CHECK(timerfd_gettime(a_per, &pcur) == 0 && pcur.it_interval.tv_sec == 10 &&
              (pcur.it_value.tv_sec > 0 || pcur.it_value.tv_nsec > 0),
          "the periodic timer is still armed after its expiration is read");
    CHECK(read(a_efd, &v, 8) == 8 && v == 1, "semaphore eventfd reads 1");
    for (int i = 0; i < 4; i++) CHECK(read(a_efd, &v, 8) == 8, "four more");
    CHECK(read(a_efd, &v, 8) == -1 && errno == EAGAIN, "the counter was 5");
    struct epoll_event evs[4];
    int n = epoll_wait(a_ep, evs, 4, 0);
    CHECK(n == 1 && evs[0].data.u64 == 0x55, "epoll: the timerfd's tick is ready (%d)", n);
    CHECK(read(a_tick, &v, 8) == 8 && v == 1, "the tick not read at capture (%llu)", (unsigned long long)v);
    struct itimerspec cur;
    CHECK(timerfd_gettime(a_tfd, &cur) == 0 && cur.it_interval.tv_sec == 10 && cur.it_value.tv_sec > 0 &&
              cur.it_value.tv_sec <= 10, "the timer is armed with its interval");
    v = 3;
    CHECK(write(a_efd, &v, 8) == 8, "eventfd write");
    n = epoll_wait(a_ep, evs, 4, 0);
    CHECK(n == 1 && evs[0].data.u64 == 0x1234, "epoll: the eventfd, with its data");
    raise(SIGWINCH);
    struct signalfd_siginfo si;
    CHECK(read(a_sfd, &si, sizeof si) == sizeof si && si.ssi_signo == SIGWINCH, "signalfd");
}

/* epoll items an EPOLLONESHOT disabled (they fired and were reported):
 * one on a pipe holding a byte, one on a pipe whose write end is closed
 * (hung up), one edge-triggered, beside a level-triggered item still
 * ready. Added again with their own events only, the disabled ones came
 * back armed for EPOLLERR and EPOLLHUP (fdinfo 40000000 became 40000018,
 * a sweep of stop 46), and a hang-up after the restore reported them. */
static int eo_ep, eo_a[2], eo_b[2], eo_c[2], eo_d[2];
static void epoll_oneshot_setup(void) {
    CHECK(pipe(eo_a) == 0 && pipe(eo_b) == 0 && pipe(eo_c) == 0 && pipe(eo_d) == 0, "pipes");
    eo_ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN | EPOLLONESHOT, .data = {.u64 = 1}};
    CHECK(epoll_ctl(eo_ep, EPOLL_CTL_ADD, eo_a[0], &e) == 0, "add a");
    e.data.u64 = 2;
    CHECK(epoll_ctl(eo_ep, EPOLL_CTL_ADD, eo_b[0], &e) == 0, "add b");
    e.events = EPOLLIN | EPOLLONESHOT | EPOLLET;
    e.data.u64 = 3;
    CHECK(epoll_ctl(eo_ep, EPOLL_CTL_ADD, eo_c[0], &e) == 0, "add c");
    e.events = EPOLLIN;
    e.data.u64 = 4;
    CHECK(epoll_ctl(eo_ep, EPOLL_CTL_ADD, eo_d[0], &e) == 0, "add d");
    CHECK(write(eo_a[1], "a", 1) == 1 && write(eo_c[1], "c", 1) == 1 && write(eo_d[1], "d", 1) == 1, "writes");
    close(eo_b[1]);
    struct epoll_event o[8];
    CHECK(epoll_wait(eo_ep, o, 8, 0) == 4, "all four fire");
}
static void epoll_oneshot_check(void) {
    struct epoll_event o[8];
    int n = epoll_wait(eo_ep, o, 8, 0);
    CHECK(n == 1 && o[0].data.u64 == 4, "only the level-triggered item is ready (%d)", n);
    close(eo_a[1]);
    close(eo_c[1]);
    n = epoll_wait(eo_ep, o, 8, 0);
    CHECK(n == 1 && o[0].data.u64 == 4, "a hang-up reports no disabled item (%d: %llu)", n,
          n > 0 ? (unsigned long long)o[0].data.u64 : 0ULL);
    /* Re-armed, each reports again. */
    struct epoll_event e = {.events = EPOLLIN | EPOLLONESHOT, .data = {.u64 = 1}};
    CHECK(epoll_ctl(eo_ep, EPOLL_CTL_MOD, eo_a[0], &e) == 0, "re-arm a");
    n = epoll_wait(eo_ep, o, 8, 0);
    CHECK(n == 2, "the re-armed item reports (%d)", n);
}

/* Threads: one blocked on a condition variable (futex), one in
 * nanosleep, one in read() on an internal pipe, one spinning, one in a
 * timed wait (a restart block: -EINTR after restore, which glibc
 * retries), and one with state of its own (name, sigaltstack, a queued
 * thread-directed signal, nice, affinity, timer slack, a robust mutex
 * and an error-checking mutex it holds). After the restore each is
 * reached by pthread_kill (the handler checks which thread it runs in
 * and that thread's __thread value), each finishes its own checks and
 * is joined (pthread_join waits for the kernel to clear its tid: the
 * clear-child-tid address came back). */
#define NT 7
#define SPECIAL 5
static pthread_t th[NT];
static pid_t tid0[NT];
static __thread int tls_val;
static pthread_mutex_t t_mx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t t_cv = PTHREAD_COND_INITIALIZER, t_cv2 = PTHREAD_COND_INITIALIZER;
static int t_go, t_started;
static int t_pipe[2];
static volatile int t_stop;
static volatile unsigned long t_spins;
static volatile sig_atomic_t t_hits[NT], t_tls[NT], t_wrong;
static pthread_mutex_t t_robust, t_errchk;
static char t_alt[1 << 16];

static void t_on_usr1(int sig) {
    (void)sig;
    for (int i = 0; i < NT; i++)
        if (pthread_equal(pthread_self(), th[i])) {
            t_hits[i]++;
            t_tls[i] = tls_val;
            return;
        }
    t_wrong++;
}

static void t_started_one(int i) {
    tls_val = 1000 + i;
    tid0[i] = (pid_t)syscall(SYS_gettid);
    pthread_mutex_lock(&t_mx);
    t_started++;
    pthread_cond_broadcast(&t_cv2);
    pthread_mutex_unlock(&t_mx);
}

static void *t_waiter(void *a) {
    t_started_one((int)(intptr_t)a);
    pthread_mutex_lock(&t_mx);
    while (!t_go) pthread_cond_wait(&t_cv, &t_mx);
    pthread_mutex_unlock(&t_mx);
    return tls_val == 1000 ? NULL : "waiter: tls";
}
static void *t_sleeper(void *a) {
    t_started_one((int)(intptr_t)a);
    struct timespec hour = {3600, 0};
    while (!t_stop) nanosleep(&hour, NULL);
    return tls_val == 1001 ? NULL : "sleeper: tls";
}
static void *t_reader(void *a) {
    t_started_one((int)(intptr_t)a);
    char c = 0;
    ssize_t n = read(t_pipe[0], &c, 1);
    if (n != 1 || c != 'x') return "reader: read";
    return tls_val == 1002 ? NULL : "reader: tls";
}
static void *t_spinner(void *a) {
    t_started_one((int)(intptr_t)a);
    while (!t_stop) t_spins++;
    return tls_val == 1003 ? NULL : "spinner: tls";
}
static void *t_timed(void *a) {
    t_started_one((int)(intptr_t)a);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 3600;
    pthread_mutex_lock(&t_mx);
    while (!t_go) pthread_cond_timedwait(&t_cv, &t_mx, &until);
    pthread_mutex_unlock(&t_mx);
    return tls_val == 1004 ? NULL : "timed: tls";
}
static void *t_special(void *a) {
    pthread_setname_np(pthread_self(), "cryo-special");
    stack_t ss = {.ss_sp = t_alt, .ss_size = sizeof t_alt, .ss_flags = 0};
    if (sigaltstack(&ss, NULL)) return "special: sigaltstack";
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &m, NULL);
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 3)) return "special: nice";
    cpu_set_t cs;
    CPU_ZERO(&cs);
    CPU_SET(0, &cs);
    if (sched_setaffinity(0, sizeof cs, &cs)) return "special: affinity";
    prctl(PR_SET_TIMERSLACK, 123456);
    if (pthread_mutex_lock(&t_robust) || pthread_mutex_lock(&t_errchk)) return "special: lock";
    t_started_one((int)(intptr_t)a);
    pthread_mutex_lock(&t_mx);
    while (!t_go) pthread_cond_wait(&t_cv, &t_mx);
    pthread_mutex_unlock(&t_mx);
    stack_t now;
    sigaltstack(NULL, &now);
    if (now.ss_sp != t_alt || now.ss_size != sizeof t_alt) return "special: sigaltstack after";
    siginfo_t si;
    struct timespec zero = {0, 0};
    if (sigtimedwait(&m, &si, &zero) != SIGUSR2 || si.si_value.sival_int != 77)
        return "special: its queued SIGUSR2 with its value";
    if (getpriority(PRIO_PROCESS, 0) != 3) return "special: nice after";
    if (prctl(PR_GET_TIMERSLACK) != 123456) return "special: timer slack after";
    CPU_ZERO(&cs);
    if (sched_getaffinity(0, sizeof cs, &cs) || CPU_COUNT(&cs) != 1 || !CPU_ISSET(0, &cs))
        return "special: affinity after";
    if (pthread_mutex_unlock(&t_robust)) return "special: unlock robust mutex";
    /* glibc checks an error-checking mutex's owner against the cached
     * tid: it holds only if the thread kept its id (cryo asks for it;
     * it gets it where the id is free). */
    if ((pid_t)syscall(SYS_gettid) == tid0[SPECIAL] && pthread_mutex_unlock(&t_errchk))
        return "special: unlock error-checking mutex";
    return tls_val == 1005 ? NULL : "special: tls";
}

/* A thread that runs on a 3 KiB stack of its own (as Go's goroutines
 * do, on 2 KiB stacks in its heap) with a sigaltstack, blocked in a futex
 * wait there; the bytes right below that stack must survive the restore
 * (the shim builds the thread's signal frame where the kernel would for a
 * handler on the alternate stack, not below the stack pointer). */
static uint8_t t_small[8192] __attribute__((aligned(4096)));
static char t_small_alt[1 << 16];
static ucontext_t t_small_back, t_small_ctx;
static volatile int t_small_word;
static void t_small_fn(void) {
    while (!__atomic_load_n(&t_go, __ATOMIC_ACQUIRE))
        syscall(SYS_futex, &t_small_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
}
static void *t_smallstack(void *a) {
    stack_t ss = {.ss_sp = t_small_alt, .ss_size = sizeof t_small_alt, .ss_flags = 0};
    if (sigaltstack(&ss, NULL)) return "small: sigaltstack";
    memset(t_small, 0xa5, 5120);
    getcontext(&t_small_ctx);
    t_small_ctx.uc_stack.ss_sp = t_small + 5120;
    t_small_ctx.uc_stack.ss_size = sizeof t_small - 5120;
    t_small_ctx.uc_link = &t_small_back;
    makecontext(&t_small_ctx, t_small_fn, 0);
    t_started_one((int)(intptr_t)a);
    swapcontext(&t_small_back, &t_small_ctx);
    for (int i = 0; i < 5120; i++)
        if (t_small[i] != 0xa5) return "small: the bytes below its stack were overwritten";
    return tls_val == 1006 ? NULL : "small: tls";
}

static void threads_setup(void) {
    struct sigaction sa = {.sa_handler = t_on_usr1, .sa_flags = SA_RESTART | SA_ONSTACK};
    sigaction(SIGUSR1, &sa, NULL);
    CHECK(pipe(t_pipe) == 0, "pipe");
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&t_robust, &ma);
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&t_errchk, &ma);
    void *(*fns[NT])(void *) = {t_waiter, t_sleeper, t_reader, t_spinner, t_timed, t_special, t_smallstack};
    for (int i = 0; i < NT; i++) CHECK(pthread_create(&th[i], NULL, fns[i], (void *)(intptr_t)i) == 0, "create");
    pthread_mutex_lock(&t_mx);
    while (t_started < NT) pthread_cond_wait(&t_cv2, &t_mx);
    pthread_mutex_unlock(&t_mx);
    union sigval v = {.sival_int = 77};
    CHECK(pthread_sigqueue(th[SPECIAL], SIGUSR2, v) == 0, "sigqueue to a thread");
    /* Every thread but the spinner asleep in its call. */
    for (int tries = 0; tries < 2000; tries++) {
        int asleep = 0;
        for (int i = 0; i < NT; i++) {
            char path[128], st[512];
            snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid0[i]);
            if (read_file(path, st, sizeof st) > 0 && strrchr(st, ')')[2] == 'S') asleep++;
        }
        if (asleep == NT - 1) break;
        usleep(1000);
    }
}
/* Before the second snapshot: each thread, still in its call, is
 * reached by pthread_kill (the handler runs, the call goes on). The
 * threads are released together but each loads its registers when it is
 * scheduled: a thread that has not run yet still shows the restore's
 * all-blocked mask in /proc for those microseconds (docs/pitfalls.md). */
static void threads_settle(void) {
    for (int i = 0; i < NT; i++) CHECK(pthread_kill(th[i], SIGUSR1) == 0, "pthread_kill thread %d", i);
    for (int tries = 0; tries < 5000; tries++) {
        int all = 1;
        for (int i = 0; i < NT; i++) all &= t_hits[i] == 1;
        if (all) break;
        usleep(1000);
    }
}
static void threads_check(void) {
    pthread_mutex_lock(&t_mx);
    t_go = 1;
    pthread_cond_broadcast(&t_cv);
    pthread_mutex_unlock(&t_mx);
    t_stop = 1;
    pthread_kill(th[1], SIGUSR1); /* the sleeper sees t_stop */
    t_small_word = 1;
    syscall(SYS_futex, &t_small_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    CHECK(write(t_pipe[1], "x", 1) == 1, "pipe write");
    CHECK(!t_wrong, "a signal reached a thread it was not sent to");
    for (int i = 0; i < NT; i++) {
        CHECK(t_hits[i] >= 1, "thread %d: its SIGUSR1 (%d)", i, (int)t_hits[i]);
        CHECK(t_tls[i] == 1000 + i, "thread %d: __thread value %d in its handler", i, (int)t_tls[i]);
    }
    for (int i = 0; i < NT; i++) {
        void *r = NULL;
        CHECK(pthread_join(th[i], &r) == 0, "join %d", i);
        CHECK(r == NULL, "thread %d: %s", i, (const char *)r);
    }
    CHECK(t_spins > 0, "the spinner spun");
}

/* fanotify (root): a group with an inode mark on a file (modify, close
 * for writing) and one on a second file with an ignore mask that
 * survives modification; after the restore a write to the first file
 * arrives as an event whose fd is that file. */
static int fa_fd, fa_file;
static void fanotify_setup(void) {
    fa_fd = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK | FAN_CLOEXEC, O_RDONLY | O_LARGEFILE);
    CHECK(fa_fd >= 0, "fanotify_init: %s", strerror(errno));
    fa_file = make_file("fan-watched", 100, 0);
    int other = make_file("fan-ignored", 100, 0);
    char a[4096], b[4096];
    path_in_dir(a, sizeof a, "fan-watched");
    path_in_dir(b, sizeof b, "fan-ignored");
    CHECK(fanotify_mark(fa_fd, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, a) == 0, "mark");
    CHECK(fanotify_mark(fa_fd, FAN_MARK_ADD, FAN_OPEN, AT_FDCWD, b) == 0, "mark 2");
    CHECK(fanotify_mark(fa_fd, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_MODIFY,
                        AT_FDCWD, b) == 0, "ignore mark");
    close(other);
    /* The writes above queued events: read them all. */
    char buf[4096];
    ssize_t n;
    while ((n = read(fa_fd, buf, sizeof buf)) > 0)
        for (struct fanotify_event_metadata *m = (void *)buf; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n))
            if (m->fd >= 0) close(m->fd);
}
static void fanotify_check(void) {
    CHECK(pwrite(fa_file, "x", 1, 0) == 1, "write");
    char buf[4096];
    ssize_t n = read(fa_fd, buf, sizeof buf);
    CHECK(n > 0, "an event after the restore (%s)", strerror(errno));
    struct fanotify_event_metadata *m = (void *)buf;
    CHECK(FAN_EVENT_OK(m, n) && (m->mask & FAN_MODIFY), "FAN_MODIFY (mask %llx)", (unsigned long long)m->mask);
    struct stat e, w;
    CHECK(fstat(m->fd, &e) == 0 && fstat(fa_file, &w) == 0 && e.st_ino == w.st_ino, "the event's file");
    close(m->fd);
}

/* Refused, all at once: a netlink socket with the kernel's answers
 * waiting, a UDP socket with a datagram waiting, a userfaultfd, an inotify
 * instance with an event queued, an AIO ring and a child. */
static void refuse_setup(void) {
    CHECK(socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE) == 3, "netlink socket");
    struct {
        struct nlmsghdr h;
        struct rtgenmsg g;
    } dump = {.h = {.nlmsg_len = sizeof dump, .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 1},
              .g = {.rtgen_family = AF_UNSPEC}};
    CHECK(send(3, &dump, sizeof dump, 0) == (ssize_t)sizeof dump, "a link dump asked, its answer left unread");
    /* A UDP socket with a datagram (sent to itself) waiting in it. */
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in ua = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t ul = sizeof ua;
    CHECK(u == 4 && bind(u, (struct sockaddr *)&ua, sizeof ua) == 0 &&
              getsockname(u, (struct sockaddr *)&ua, &ul) == 0 &&
              sendto(u, "ping", 4, 0, (struct sockaddr *)&ua, sizeof ua) == 4,
          "udp datagram to itself");
    CHECK(syscall(SYS_userfaultfd, 0) >= 0, "userfaultfd");
    int in = inotify_init1(0);
    CHECK(in >= 0 && inotify_add_watch(in, DIRPATH, IN_CREATE) > 0, "inotify");
    char p[4096];
    path_in_dir(p, sizeof p, "event");
    close(open(p, O_CREAT | O_WRONLY, 0600));
    unsigned long aio = 0;
    CHECK(syscall(SYS_io_setup, 4, &aio) == 0, "io_setup");
    pid_t kid = fork();
    if (kid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* gone with the test */
        if (getppid() == 1) _exit(0);
        pause();
        _exit(0);
    }
}
static void refuse_check(void) {}

/* Socket filters (classic BPF, SO_ATTACH_FILTER): a UDP socket that takes
 * only datagrams whose first byte is 'A' (locked: SO_LOCK_FILTER), and a
 * unix datagram pair's end that takes only messages of 4 bytes or more.
 * After the restore each filter is there, as long, and filters. */
static int sf_udp, sf_pair[2];
static struct sockaddr_in sf_addr;
/* sockopts: options a program sets on a TCP listener, a UDP socket and a
 * UDP6 socket that a new socket does not have (a sweep of real servers,
 * stop 45: each of these came back as the kernel's default). */
enum { SO_TCP, SO_UDP, SO_UDP6, SO_N };
static int so_sk[SO_N];
struct so_want {
    int sk, level, name, val;
};
#ifndef IP_RECVERR_RFC4884
#define IP_RECVERR_RFC4884 26
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef UDP_CORK
#define UDP_CORK 1
#endif
static const struct so_want so_wants[] = {
    {SO_TCP, SOL_SOCKET, SO_DONTROUTE, 1},
    {SO_TCP, SOL_SOCKET, SO_TIMESTAMPNS, 1},
    {SO_TCP, SOL_SOCKET, SO_BUSY_POLL, 50},
    {SO_TCP, SOL_SOCKET, SO_ZEROCOPY, 1},
    {SO_TCP, SOL_SOCKET, SO_SELECT_ERR_QUEUE, 1},
    {SO_TCP, IPPROTO_IP, IP_TRANSPARENT, 1},
    {SO_TCP, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1},
    {SO_TCP, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT},
    {SO_TCP, IPPROTO_IP, IP_RECVTOS, 1},
    {SO_TCP, IPPROTO_TCP, TCP_MAXSEG, 1200},
    {SO_TCP, IPPROTO_TCP, TCP_SYNCNT, 3},
    {SO_TCP, IPPROTO_TCP, TCP_LINGER2, 7},
    {SO_TCP, IPPROTO_TCP, TCP_WINDOW_CLAMP, 40000},
    {SO_TCP, IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, 1},
    {SO_TCP, IPPROTO_TCP, TCP_INQ, 1},
    {SO_TCP, IPPROTO_TCP, TCP_SAVE_SYN, 1},
    {SO_UDP, SOL_SOCKET, SO_TIMESTAMP, 1},
    {SO_UDP, SOL_SOCKET, SO_RXQ_OVFL, 1},
    {SO_UDP, IPPROTO_IP, IP_RECVTTL, 1},
    {SO_UDP, IPPROTO_IP, IP_RECVORIGDSTADDR, 1},
    {SO_UDP, IPPROTO_IP, IP_MULTICAST_ALL, 0},
    {SO_UDP, IPPROTO_IP, IP_MINTTL, 9},
    {SO_UDP, IPPROTO_IP, IP_RECVERR_RFC4884, 1},
    {SO_UDP, IPPROTO_UDP, UDP_CORK, 1},
    {SO_UDP, IPPROTO_UDP, UDP_SEGMENT, 1000},
    {SO_UDP, IPPROTO_UDP, UDP_GRO, 1},
    {SO_UDP6, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 7},
    {SO_UDP6, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, 0},
    {SO_UDP6, IPPROTO_IPV6, IPV6_MULTICAST_IF, 1},
    {SO_UDP6, IPPROTO_IPV6, IPV6_RECVTCLASS, 1},
    {SO_UDP6, IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DONT},
    {SO_UDP6, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1},
    {SO_UDP6, IPPROTO_IPV6, IPV6_DONTFRAG, 1},
    {SO_UDP6, IPPROTO_IPV6, IPV6_TRANSPARENT, 1},
};
static void sockopts_setup(void) {
    so_sk[SO_TCP] = socket(AF_INET, SOCK_STREAM, 0);
    so_sk[SO_UDP] = socket(AF_INET, SOCK_DGRAM, 0);
    so_sk[SO_UDP6] = socket(AF_INET6, SOCK_DGRAM, 0);
    CHECK(so_sk[SO_TCP] >= 0 && so_sk[SO_UDP] >= 0 && so_sk[SO_UDP6] >= 0, "sockets");
    for (size_t i = 0; i < sizeof so_wants / sizeof *so_wants; i++) {
        const struct so_want *w = &so_wants[i];
        CHECK(setsockopt(so_sk[w->sk], w->level, w->name, &w->val, sizeof w->val) == 0, "setsockopt %d/%d = %d: %s",
              w->level, w->name, w->val, strerror(errno));
    }
    CHECK(setsockopt(so_sk[SO_TCP], IPPROTO_TCP, TCP_CONGESTION, "reno", 4) == 0, "TCP_CONGESTION reno");
    uint64_t rate = 1000000;
    CHECK(setsockopt(so_sk[SO_TCP], SOL_SOCKET, SO_MAX_PACING_RATE, &rate, sizeof rate) == 0, "SO_MAX_PACING_RATE");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(bind(so_sk[SO_TCP], (struct sockaddr *)&a, sizeof a) == 0 && listen(so_sk[SO_TCP], 4) == 0, "listen");
    CHECK(bind(so_sk[SO_UDP], (struct sockaddr *)&a, sizeof a) == 0, "bind udp");
}
static void sockopts_check(void) {
    for (size_t i = 0; i < sizeof so_wants / sizeof *so_wants; i++) {
        const struct so_want *w = &so_wants[i];
        int v = -1;
        socklen_t l = sizeof v;
        CHECK(getsockopt(so_sk[w->sk], w->level, w->name, &v, &l) == 0 && v == w->val,
              "option %d/%d of socket %d: %d, set %d", w->level, w->name, w->sk, v, w->val);
    }
    char cc[16] = {0};
    socklen_t l = sizeof cc;
    CHECK(getsockopt(so_sk[SO_TCP], IPPROTO_TCP, TCP_CONGESTION, cc, &l) == 0 && !strcmp(cc, "reno"),
          "TCP_CONGESTION %s", cc);
    uint64_t rate = 0;
    l = sizeof rate;
    CHECK(getsockopt(so_sk[SO_TCP], SOL_SOCKET, SO_MAX_PACING_RATE, &rate, &l) == 0 && rate == 1000000,
          "SO_MAX_PACING_RATE %llu", (unsigned long long)rate);
    /* Still a listener that takes a connection. */
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    CHECK(getsockname(so_sk[SO_TCP], (struct sockaddr *)&a, &al) == 0, "getsockname");
    int c = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connect(c, (struct sockaddr *)&a, sizeof a) == 0, "connect");
    int s = accept(so_sk[SO_TCP], NULL, NULL);
    CHECK(s >= 0, "accept");
    /* (The client closes first: TIME_WAIT on its port, not the
     * listener's, which the next restore of the image binds again.) */
    close(c);
    usleep(1000);
    close(s);
}

/* rie: personality READ_IMPLIES_EXEC, set after start (an exec clears
 * it): still set after the restore, a new PROT_READ mapping executable,
 * and the mapping made before it still not. */
static char *rie_before;
static int maps_perm_x(void *at) {
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f != NULL, "maps");
    char line[512];
    int x = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        char perm[5];
        if (sscanf(line, "%lx-%lx %4s", &a, &b, perm) == 3 && (unsigned long)at >= a && (unsigned long)at < b)
            x = perm[2] == 'x';
    }
    fclose(f);
    return x;
}
static void rie_setup(void) {
    rie_before = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(rie_before != MAP_FAILED && maps_perm_x(rie_before) == 0, "a PROT_READ mapping");
    CHECK(personality(personality(0xffffffff) | READ_IMPLIES_EXEC) != -1, "personality");
}
static void rie_check(void) {
    CHECK(personality(0xffffffff) & READ_IMPLIES_EXEC, "READ_IMPLIES_EXEC kept: %#x", personality(0xffffffff));
    CHECK(maps_perm_x(rie_before) == 0, "the mapping made before it not executable");
    void *after = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(after != MAP_FAILED && maps_perm_x(after) == 1, "a new PROT_READ mapping executable");
}

/* coredump: the process's coredump_filter (0x7f: every kind of mapping
 * but huge pages' DAX), which an exec keeps: after a restore, still 0x7f,
 * not the restorer's. */
static unsigned long read_coredump_filter(void) {
    FILE *f = fopen("/proc/self/coredump_filter", "r");
    CHECK(f != NULL, "coredump_filter");
    unsigned long v = 0;
    CHECK(fscanf(f, "%lx", &v) == 1, "read coredump_filter");
    fclose(f);
    return v;
}
static void coredump_setup(void) {
    FILE *f = fopen("/proc/self/coredump_filter", "w");
    CHECK(f != NULL && fprintf(f, "0x7f") > 0 && fclose(f) == 0, "write coredump_filter");
    CHECK(read_coredump_filter() == 0x7f, "coredump_filter set");
}
static void coredump_check(void) {
    CHECK(read_coredump_filter() == 0x7f, "coredump_filter %#lx", read_coredump_filter());
}

/* thread-ioprio: I/O priorities per thread (ionice -p gives the main
 * thread one, not the others): the main thread best-effort 2, one
 * thread best-effort 6, one made before the main thread's was set and
 * left with none. Each as it was after the restore. */
static pthread_barrier_t tio_bar;
static pid_t tio_tid[2];
static int tio_ioprio(pid_t tid) { return (int)syscall(SYS_ioprio_get, 1, tid); }
static void *tio_thread(void *arg) {
    long i = (long)arg;
    tio_tid[i] = (pid_t)syscall(SYS_gettid);
    if (i == 0) CHECK(syscall(SYS_ioprio_set, 1, tio_tid[i], (2 << 13) | 6) == 0, "thread ioprio");
    pthread_barrier_wait(&tio_bar);
    for (;;) pause();
    return NULL;
}
/* Before the second snapshot: each thread has loaded its own registers
 * (the restore's all-blocked mask gone; as threads_settle). Without it,
 * 5 runs of 8 failed on a 2-CPU VM with "snapshot differs". */
static void wait_released(pid_t tid);
static void thread_ioprio_settle(void) {
    wait_released(tio_tid[0]);
    wait_released(tio_tid[1]);
}
static void thread_ioprio_setup(void) {
    pthread_barrier_init(&tio_bar, NULL, 3);
    pthread_t a, b;
    CHECK(pthread_create(&a, NULL, tio_thread, (void *)0L) == 0 && pthread_create(&b, NULL, tio_thread, (void *)1L) == 0,
          "threads");
    pthread_barrier_wait(&tio_bar);
    CHECK(syscall(SYS_ioprio_set, 1, (int)syscall(SYS_gettid), (2 << 13) | 2) == 0, "main ioprio");
    CHECK(tio_ioprio(tio_tid[0]) == 0x4006 && tio_ioprio(tio_tid[1]) == 0, "set: %#x %#x", tio_ioprio(tio_tid[0]),
          tio_ioprio(tio_tid[1]));
}
static void thread_ioprio_check(void) {
    pid_t me = (pid_t)syscall(SYS_gettid);
    CHECK(tio_ioprio(me) == 0x4002 && tio_ioprio(tio_tid[0]) == 0x4006 && tio_ioprio(tio_tid[1]) == 0,
          "ioprio main %#x, threads %#x %#x", tio_ioprio(me), tio_ioprio(tio_tid[0]), tio_ioprio(tio_tid[1]));
}

/* The case's directory's `have`, where a case says what this machine let
 * it set up (each a line), for the test to expect. */
static FILE *have_file(void) {
    char p[4096];
    snprintf(p, sizeof p, "%s/have", DIRPATH);
    FILE *have = fopen(p, "w");
    CHECK(have != NULL, "have");
    return have;
}

/* unrestored: task state cryo does not restore yet, each refused by name
 * where this machine has it (listed in the directory's `have`): syscall
 * user dispatch, CPUID faulting, a process and a thread keyring. */
static char sud_selector = 0; /* SYSCALL_DISPATCH_FILTER_ALLOW */
/* And state cryo restores per process only, in a thread of its own: a
 * umask and working directory (unshare(CLONE_FS)), a parent-death
 * signal. */
static pthread_barrier_t un_bar;
static int un_own_keyring;
static int un_thread_policy;
static void *unrestored_thread(void *arg) {
    (void)arg;
    CHECK(unshare(CLONE_FS) == 0, "unshare(CLONE_FS): %s", strerror(errno));
    umask(027);
    CHECK(chdir("/") == 0, "chdir");
    /* (SIGWINCH: ignored if it ever comes.) */
    CHECK(prctl(PR_SET_PDEATHSIG, SIGWINCH) == 0, "PR_SET_PDEATHSIG");
    un_own_keyring = syscall(SYS_add_key, "user", "cryo-test-o", "x", 1, -1 /* thread keyring */) >= 0;
    /* A NUMA policy of its own, not the main thread's (a NUMA kernel,
     * node 0). */
    unsigned long node0 = 1;
    un_thread_policy = syscall(SYS_set_mempolicy, 3 /* MPOL_INTERLEAVE */, &node0, 2) == 0;
    pthread_barrier_wait(&un_bar);
    for (;;) pause();
    return NULL;
}
static void unrestored_setup(void) {
    FILE *have = have_file();
    if (prctl(59 /* PR_SET_SYSCALL_USER_DISPATCH */, 1 /* ON */, 0UL, 0UL, &sud_selector) == 0) fputs("sud\n", have);
    if (syscall(SYS_arch_prctl, 0x1012 /* ARCH_SET_CPUID */, 0) == 0) fputs("cpuid\n", have);
    if (syscall(SYS_add_key, "user", "cryo-test-p", "x", 1, -2 /* process keyring */) >= 0) fputs("process-keyring\n", have);
    if (syscall(SYS_add_key, "user", "cryo-test-t", "x", 1, -1 /* thread keyring */) >= 0) fputs("thread-keyring\n", have);
    /* A session keyring of its own (keyctl session), holding a key. */
    if (syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, "cryo-test-s") >= 0 &&
        syscall(SYS_add_key, "user", "cryo-test-sk", "x", 1, -3 /* session keyring */) >= 0)
        fputs("session-keyring\n", have);
    pthread_barrier_init(&un_bar, NULL, 2);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, unrestored_thread, NULL) == 0, "thread");
    pthread_barrier_wait(&un_bar);
    fputs("thread-umask\n", have);
    fputs("thread-pdeathsig\n", have);
    if (un_own_keyring) fputs("own-thread-keyring\n", have);
    if (un_thread_policy) fputs("thread-mempolicy\n", have);
    fclose(have);
}

/* mempolicy: mappings with NUMA policies of their own (mbind), as
 * OpenBLAS binds its buffers MPOL_LOCAL (stop 52: every `import numpy`
 * with it was refused): each the same after a restore (get_mempolicy
 * MPOL_F_ADDR). A NUMA kernel, node 0. */
#define MP_N 5
static char *mp_map[MP_N];
static const int mp_mode[MP_N] = {4 /* LOCAL */, 2 /* BIND */, 1 /* PREFERRED */, 3 /* INTERLEAVE */,
                                  3 | (1 << 15) /* INTERLEAVE, MPOL_F_STATIC_NODES */};
static void mempolicy_setup(void) {
    for (int i = 0; i < MP_N; i++) {
        /* (Between guards of no access: each its own mapping.) */
        char *g = mmap(NULL, 3 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(g != MAP_FAILED, "mmap");
        mp_map[i] = mmap(g + 4096, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        CHECK(mp_map[i] != MAP_FAILED, "mmap");
        unsigned long node0 = 1;
        CHECK(syscall(SYS_mbind, mp_map[i], 4096, mp_mode[i], mp_mode[i] == 4 ? NULL : &node0, mp_mode[i] == 4 ? 0 : 2, 0) == 0,
              "mbind %x: %s", mp_mode[i], strerror(errno));
        mp_map[i][0] = (char)i;
    }
}
static void mempolicy_check(void) {
    for (int i = 0; i < MP_N; i++) {
        int mode = -1;
        unsigned long nodes = 0;
        CHECK(syscall(SYS_get_mempolicy, &mode, &nodes, 64, mp_map[i], 2 /* MPOL_F_ADDR */) == 0, "get_mempolicy");
        unsigned long want = mp_mode[i] == 4 ? 0 : 1;
        CHECK(mode == mp_mode[i] && nodes == want, "mapping %d: policy %x nodes %lx, not %x %lx", i, mode, nodes,
              mp_mode[i], want);
        CHECK(mp_map[i][0] == (char)i, "contents");
    }
}

/* devfds: a TUN interface's fd (TUNSETIFF) and /dev/kmsg open for
 * reading, each refused by name where the machine has it (`have`): a
 * sweep found the interface gone and the kernel log read again from its
 * start after a restore, nothing said. */
static void devfds_setup(void) {
    FILE *have = have_file();
    int t = open("/dev/net/tun", O_RDWR);
    struct {
        char name[16];
        short flags;
        char pad[22];
    } req = {.flags = 0x0001 | 0x1000 /* IFF_TUN | IFF_NO_PI */};
    snprintf(req.name, sizeof req.name, "cryot%d", getpid() % 100000);
    if (t >= 0 && ioctl(t, 0x400454ca /* TUNSETIFF */, &req) == 0) fputs("tun\n", have);
    int k = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
    char b[8192];
    if (k >= 0 && read(k, b, sizeof b) > 0) fputs("kmsg\n", have);
    fclose(have);
}

/* login-keyring: a session keyring of its own that holds only the link
 * to its user's keyring, as pam_keyinit makes for every `su -`, `login`
 * and `runuser -l`: nothing a restore loses (the user keyring comes back
 * with the user), so captured and restored (a review found every such
 * process refused). */
static void login_keyring_setup(void) {
    CHECK(syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, "cryo-test-login") >= 0, "join: %s",
          strerror(errno));
    CHECK(syscall(SYS_keyctl, 8 /* KEYCTL_LINK */, -4 /* user keyring */, -3 /* session */) == 0, "link: %s",
          strerror(errno));
}
static void login_keyring_check(void) {}

/* landlock: the main thread in a Landlock domain, a thread in one of its
 * own, and a thread in none (made before either): the two named, the
 * third not. The directory's `have` says whether the kernel runs
 * Landlock ("landlock") or not ("none"). A sweep found a domain lost
 * after a restore, without a word. */
static pthread_barrier_t ll_bar;
static int ll_restrict(void) {
    /* (Handles making FIFOs only: the case makes none.) */
    struct { uint64_t fs, net, scoped; } attr = {1ULL << 9 /* LANDLOCK_ACCESS_FS_MAKE_FIFO */, 0, 0};
    int fd = (int)syscall(444 /* landlock_create_ruleset */, &attr, sizeof attr.fs, 0);
    CHECK(fd >= 0, "landlock_create_ruleset: %s", strerror(errno));
    CHECK(syscall(446 /* landlock_restrict_self */, fd, 0) == 0, "landlock_restrict_self: %s", strerror(errno));
    close(fd);
    return 0;
}
static void *ll_thread(void *own) {
    prctl(PR_SET_NAME, own ? "ll-own" : "ll-free");
    if (own) ll_restrict();
    pthread_barrier_wait(&ll_bar);
    for (;;) pause();
    return NULL;
}
static void landlock_setup(void) {
    FILE *have = have_file();
    long abi = syscall(444, NULL, 0, 1 /* LANDLOCK_CREATE_RULESET_VERSION */);
    fputs(abi >= 1 ? "landlock\n" : "none\n", have);
    fclose(have);
    if (abi < 1) return;
    CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "no_new_privs");
    pthread_barrier_init(&ll_bar, NULL, 3);
    pthread_t a, b;
    CHECK(pthread_create(&a, NULL, ll_thread, NULL) == 0 && pthread_create(&b, NULL, ll_thread, (void *)1) == 0,
          "threads");
    pthread_barrier_wait(&ll_bar);
    ll_restrict();
}

/* longopts: options with values longer than a word, each on a socket of
 * its own: kTLS's upper-layer protocol on a loopback connection (where the
 * kernel has the tls module), IPv4 header options, an IPv6 hop-by-hop
 * header, a listener's TCP MD5 signature key. Refused by name (the directory's `have` says which were set);
 * a sweep found them not read. */
static void longopts_setup(void) {
    FILE *have = have_file();
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    CHECK(l >= 0 && setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
              bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 1) == 0 &&
              getsockname(l, (struct sockaddr *)&a, &al) == 0,
          "listener");
    int c = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(c >= 0 && connect(c, (struct sockaddr *)&a, sizeof a) == 0, "connect");
    int s = accept(l, NULL, NULL);
    CHECK(s >= 0, "accept");
    close(l);
    if (setsockopt(c, IPPROTO_TCP, 31 /* TCP_ULP */, "tls", 3) == 0) fputs("tls\n", have);
    /* Record route: type 7, length 7, pointer 4, room for one address;
     * an end-of-list byte pads it to 8. */
    unsigned char rr[8] = {7, 7, 4, 0, 0, 0, 0, 0};
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(u >= 0 && setsockopt(u, IPPROTO_IP, IP_OPTIONS, rr, sizeof rr) == 0, "IP_OPTIONS: %s", strerror(errno));
    fputs("ip-options\n", have);
    /* A hop-by-hop header holding only padding (PadN of 4). */
    unsigned char hbh[8] = {0, 0, 1, 4, 0, 0, 0, 0};
    int u6 = socket(AF_INET6, SOCK_DGRAM, 0);
    CHECK(u6 >= 0 && setsockopt(u6, IPPROTO_IPV6, IPV6_HOPOPTS, hbh, sizeof hbh) == 0, "IPV6_HOPOPTS: %s",
          strerror(errno));
    fputs("hopopts\n", have);
    /* A listener with a TCP MD5 signature key for one peer (BGP's). */
    int md = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in ma = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(md >= 0 && bind(md, (struct sockaddr *)&ma, sizeof ma) == 0 && listen(md, 1) == 0, "md5 listener");
    struct tcp_md5sig key = {.tcpm_keylen = 6};
    struct sockaddr_in *peer = (struct sockaddr_in *)&key.tcpm_addr;
    peer->sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.2", &peer->sin_addr);
    memcpy(key.tcpm_key, "secret", 6);
    CHECK(setsockopt(md, IPPROTO_TCP, TCP_MD5SIG, &key, sizeof key) == 0, "TCP_MD5SIG: %s", strerror(errno));
    fputs("md5\n", have);
    fclose(have);
}

/* mcast: a UDP socket bound to a port that joined a multicast group on
 * lo, and an IPv6 one that joined ff15::1234 on lo. After the restore
 * each is still a member (MCAST_MSFILTER answers only for one), and a
 * datagram sent to the group's port arrives. A sweep found the groups
 * gone after a restore, and the program deaf, without a word. */
static int mc_u, mc_u6;
static struct sockaddr_in mc_addr;
static int mc_member(int fd, int level, int family, const char *group) {
    struct group_filter f;
    unsigned char buf[sizeof f + 128];
    memset(buf, 0, sizeof buf);
    struct group_filter *g = (struct group_filter *)buf;
    g->gf_interface = 1;
    g->gf_group.ss_family = family;
    if (family == AF_INET)
        inet_pton(AF_INET, group, &((struct sockaddr_in *)&g->gf_group)->sin_addr);
    else
        inet_pton(AF_INET6, group, &((struct sockaddr_in6 *)&g->gf_group)->sin6_addr);
    socklen_t l = sizeof buf;
    return getsockopt(fd, level, MCAST_MSFILTER, buf, &l) == 0 && g->gf_fmode == MCAST_EXCLUDE && g->gf_numsrc == 0;
}
static void mcast_setup(void) {
    mc_u = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    mc_addr = (struct sockaddr_in){.sin_family = AF_INET};
    socklen_t al = sizeof mc_addr;
    CHECK(mc_u >= 0 && bind(mc_u, (struct sockaddr *)&mc_addr, sizeof mc_addr) == 0 &&
              getsockname(mc_u, (struct sockaddr *)&mc_addr, &al) == 0,
          "bind");
    struct ip_mreqn m = {.imr_ifindex = 1};
    inet_pton(AF_INET, "239.1.2.3", &m.imr_multiaddr);
    CHECK(setsockopt(mc_u, IPPROTO_IP, IP_ADD_MEMBERSHIP, &m, sizeof m) == 0, "IP_ADD_MEMBERSHIP: %s",
          strerror(errno));
    mc_u6 = socket(AF_INET6, SOCK_DGRAM, 0);
    struct ipv6_mreq m6 = {.ipv6mr_interface = 1};
    inet_pton(AF_INET6, "ff15::1234", &m6.ipv6mr_multiaddr);
    CHECK(mc_u6 >= 0 && setsockopt(mc_u6, IPPROTO_IPV6, IPV6_JOIN_GROUP, &m6, sizeof m6) == 0,
          "IPV6_JOIN_GROUP: %s", strerror(errno));
}
static void mcast_check(void) {
    CHECK(mc_member(mc_u, IPPROTO_IP, AF_INET, "239.1.2.3"), "not a member of 239.1.2.3 on lo");
    CHECK(mc_member(mc_u6, IPPROTO_IPV6, AF_INET6, "ff15::1234"), "not a member of ff15::1234 on lo");
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct ip_mreqn ifm = {.imr_ifindex = 1};
    CHECK(s >= 0 && setsockopt(s, IPPROTO_IP, IP_MULTICAST_IF, &ifm, sizeof ifm) == 0, "IP_MULTICAST_IF");
    struct sockaddr_in to = mc_addr;
    inet_pton(AF_INET, "239.1.2.3", &to.sin_addr);
    CHECK(sendto(s, "mc", 2, 0, (struct sockaddr *)&to, sizeof to) == 2, "send: %s", strerror(errno));
    struct pollfd p = {mc_u, POLLIN, 0};
    char got[8] = {0};
    CHECK(poll(&p, 1, 5000) == 1 && recv(mc_u, got, sizeof got, 0) == 2 && memcmp(got, "mc", 2) == 0,
          "the group's datagram did not arrive");
    close(s);
}
/* mcast-filtered: a group joined with a source filter (SSM), which cryo
 * does not restore yet: refused by name. */
static void mcast_filtered_setup(void) {
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct ip_mreq_source m = {0};
    inet_pton(AF_INET, "232.1.2.3", &m.imr_multiaddr);
    inet_pton(AF_INET, "127.0.0.1", &m.imr_interface);
    inet_pton(AF_INET, "127.0.0.2", &m.imr_sourceaddr);
    CHECK(u >= 0 && setsockopt(u, IPPROTO_IP, IP_ADD_SOURCE_MEMBERSHIP, &m, sizeof m) == 0,
          "IP_ADD_SOURCE_MEMBERSHIP: %s", strerror(errno));
}

static void sockfilter_setup(void) {
    struct sock_filter first_a[] = {
        {BPF_LD | BPF_B | BPF_ABS, 0, 0, 8}, /* the first byte after the UDP header */
        {BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 'A'},
        {BPF_RET | BPF_K, 0, 0, 0xffffffff},
        {BPF_RET | BPF_K, 0, 0, 0},
    };
    struct sock_filter long_enough[] = {
        {BPF_LD | BPF_W | BPF_LEN, 0, 0, 0},
        {BPF_JMP | BPF_JGE | BPF_K, 0, 1, 4},
        {BPF_RET | BPF_K, 0, 0, 0xffffffff},
        {BPF_RET | BPF_K, 0, 0, 0},
    };
    struct sock_fprog a = {4, first_a}, l = {4, long_enough};
    int one = 1;
    sf_udp = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    sf_addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof sf_addr;
    CHECK(sf_udp >= 0 && bind(sf_udp, (struct sockaddr *)&sf_addr, sizeof sf_addr) == 0 &&
              getsockname(sf_udp, (struct sockaddr *)&sf_addr, &al) == 0,
          "udp bind");
    CHECK(setsockopt(sf_udp, SOL_SOCKET, SO_ATTACH_FILTER, &a, sizeof a) == 0 &&
              setsockopt(sf_udp, SOL_SOCKET, SO_LOCK_FILTER, &one, sizeof one) == 0,
          "udp filter, locked");
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, sf_pair) == 0 &&
              setsockopt(sf_pair[0], SOL_SOCKET, SO_ATTACH_FILTER, &l, sizeof l) == 0,
          "unix pair filter");
}
static int sf_len(int fd) {
    socklen_t n = 0;
    return getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, NULL, &n) == 0 ? (int)n : -1;
}
static void sockfilter_check(void) {
    int locked = 0;
    socklen_t ll = sizeof locked;
    CHECK(sf_len(sf_udp) == 4 && sf_len(sf_pair[0]) == 4 && sf_len(sf_pair[1]) == 0, "filter lengths %d %d %d",
          sf_len(sf_udp), sf_len(sf_pair[0]), sf_len(sf_pair[1]));
    CHECK(getsockopt(sf_udp, SOL_SOCKET, SO_LOCK_FILTER, &locked, &ll) == 0 && locked == 1, "still locked");
    int zero = 0;
    CHECK(setsockopt(sf_udp, SOL_SOCKET, SO_DETACH_FILTER, &zero, sizeof zero) == -1 && errno == EPERM,
          "a locked filter stays (%s)", strerror(errno));
    CHECK(sendto(sf_udp, "B1", 2, 0, (struct sockaddr *)&sf_addr, sizeof sf_addr) == 2 &&
              sendto(sf_udp, "A2", 2, 0, (struct sockaddr *)&sf_addr, sizeof sf_addr) == 2,
          "udp sends");
    struct pollfd p = {sf_udp, POLLIN, 0};
    CHECK(poll(&p, 1, 5000) == 1, "a datagram passes");
    char buf[16] = {0};
    CHECK(recv(sf_udp, buf, sizeof buf, 0) == 2 && memcmp(buf, "A2", 2) == 0, "only A2 passes (got %.2s)", buf);
    CHECK(recv(sf_udp, buf, sizeof buf, 0) == -1 && errno == EAGAIN, "B1 was dropped");
    CHECK(send(sf_pair[1], "xy", 2, 0) == 2 && send(sf_pair[1], "long", 4, 0) == 4, "unix sends");
    CHECK(recv(sf_pair[0], buf, sizeof buf, 0) == 4 && memcmp(buf, "long", 4) == 0, "only the long one passes");
    CHECK(recv(sf_pair[0], buf, sizeof buf, 0) == -1 && errno == EAGAIN, "the short one was dropped");
}

/* Refused too: a socket with an eBPF filter (SO_ATTACH_BPF), which the
 * kernel does not give back. (A classic filter was refused until stop 23;
 * shared anonymous memory split in two by mprotect, and a file whose name
 * was removed but which has another link, until stop 20, a namespace fd
 * until stop 21; all are captured now, and the dry run must not name
 * them.) */
static void *caller_clock_worker(void *a);
/* flock-mapped: a flock lock held only through a mapping of its file,
 * every fd of it closed (the mapping keeps the description, and its
 * lock), as a JVM holds its hsperfdata file's (a sweep of stop 52: a
 * restore mapped the file anew, and another process took the lock). */
static char fm_path[4096];
static char *fm_map;
static void flock_mapped_setup(void) {
    path_in_dir(fm_path, sizeof fm_path, "flock-mapped");
    int f = open(fm_path, O_RDWR | O_CREAT, 0600);
    CHECK(f >= 0 && ftruncate(f, 4096) == 0 && flock(f, LOCK_EX) == 0, "flock");
    fm_map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    CHECK(fm_map != MAP_FAILED, "mmap");
    close(f);
}
static void flock_mapped_check(void) {
    /* Another description of the file cannot take it: the mapping's
     * holds it. */
    int g = open(fm_path, O_RDONLY);
    CHECK(g >= 0, "open");
    CHECK(flock(g, LOCK_EX | LOCK_NB) == -1 && errno == EWOULDBLOCK, "the lock is held through the mapping");
    close(g);
    /* Let go with the mapping, it is free. */
    CHECK(munmap(fm_map, 4096) == 0, "munmap");
    g = open(fm_path, O_RDONLY);
    CHECK(g >= 0 && flock(g, LOCK_EX | LOCK_NB) == 0, "free once the mapping is gone");
    close(g);
}

static void refuse2_setup(void) {
    CHECK(open("/proc/self/ns/net", O_RDONLY) >= 0, "ns fd");
    pthread_t cw;
    CHECK(pthread_create(&cw, NULL, caller_clock_worker, NULL) == 0, "a thread with a timer on its own clock");
    for (int tries = 0; tries < 2000; tries++) {
        char t[4096];
        if (read_file("/proc/self/timers", t, sizeof t) > 0 && strstr(t, "ClockID: -2")) break;
        usleep(1000);
    }
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct bpf_insn accept_all[] = {
        {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = -1}, /* r0 = -1 */
        {.code = BPF_JMP | BPF_EXIT},
    };
    union bpf_attr attr = {.prog_type = BPF_PROG_TYPE_SOCKET_FILTER,
                           .insn_cnt = 2,
                           .insns = (uint64_t)(uintptr_t)accept_all,
                           .license = (uint64_t)(uintptr_t) "GPL"};
    int prog = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    CHECK(prog >= 0, "bpf prog load: %s", strerror(errno));
    CHECK(u >= 0 && setsockopt(u, SOL_SOCKET, SO_ATTACH_BPF, &prog, sizeof prog) == 0, "eBPF socket filter");
    close(prog);
    uint8_t *m = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED, "mmap");
    CHECK(mprotect(m + 2 * 4096, 2 * 4096, PROT_READ) == 0, "split");
    char a[4096], b[4096];
    path_in_dir(a, sizeof a, "linked");
    path_in_dir(b, sizeof b, "other-name");
    int f = make_file("linked", 100, 0);
    CHECK(link(a, b) == 0 && unlink(a) == 0, "link, unlink");
    (void)f;
    /* A unix listener bound to a relative name in a directory the process
     * has left, then removed, with a connection waiting: what would reach
     * it by its name? */
    char d[4096];
    path_in_dir(d, sizeof d, "left");
    struct sockaddr_un r = {.sun_family = AF_UNIX, .sun_path = "r.sock"};
    int rs = socket(AF_UNIX, SOCK_STREAM, 0), rw = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(mkdir(d, 0700) == 0 && chdir(d) == 0 && rs >= 0 && bind(rs, (struct sockaddr *)&r, sizeof r) == 0 &&
              listen(rs, 2) == 0 && connect(rw, (struct sockaddr *)&r, sizeof r) == 0 && unlink("r.sock") == 0 &&
              chdir(DIRPATH) == 0,
          "bound relative, a connection waiting, removed, then left");
    /* A datagram socket whose name was removed after a link to its file
     * was made in another directory: bound again, it would be another
     * file than the one its clients reach by the other name. (A link in
     * the same directory is as a rename: RENAMED.) */
    char h1[4096], hd[4096], h2[4200];
    path_in_dir(h1, sizeof h1, "h1");
    path_in_dir(hd, sizeof hd, "hl");
    snprintf(h2, sizeof h2, "%s/h2", hd);
    CHECK(mkdir(hd, 0700) == 0, "another directory");
    struct sockaddr_un ha = {.sun_family = AF_UNIX};
    CHECK(strlen(h1) < sizeof ha.sun_path, "a short enough name: %s", h1);
    memcpy(ha.sun_path, h1, strlen(h1) + 1);
    int hs = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(bind(hs, (struct sockaddr *)&ha, sizeof ha) == 0 && link(h1, h2) == 0 && unlink(h1) == 0,
          "bound, linked, its name removed");
    /* A datagram socket whose file was replaced by another socket's, with
     * a datagram waiting in it: sent again by the name, it would reach the
     * other. (Its client, connected before, is restored: connected while
     * it is bound there again.) */
    struct sockaddr_un g = {.sun_family = AF_UNIX};
    char gp[4096];
    snprintf(gp, sizeof gp, "%s/g.%d", DIRPATH, getpid());
    CHECK(strlen(gp) < sizeof g.sun_path, "a short enough name: %s", gp);
    memcpy(g.sun_path, gp, strlen(gp) + 1);
    int srv = socket(AF_UNIX, SOCK_DGRAM, 0), cli = socket(AF_UNIX, SOCK_DGRAM, 0), other = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(bind(srv, (struct sockaddr *)&g, sizeof g) == 0 &&
              connect(cli, (struct sockaddr *)&g, sizeof g) == 0 && send(cli, "x", 1, 0) == 1 &&
              unlink(g.sun_path) == 0 && bind(other, (struct sockaddr *)&g, sizeof g) == 0,
          "a datagram waiting in a socket whose name now leads to another");
    /* A listener bound by a name with `..` parts from a directory the
     * process has left: its file is known, the directory it was resolved
     * in is not. */
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/sub", hd);
    struct sockaddr_un up = {.sun_family = AF_UNIX, .sun_path = "../up.sock"};
    int us = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(mkdir(sub, 0700) == 0 && chdir(sub) == 0 && bind(us, (struct sockaddr *)&up, sizeof up) == 0 &&
              listen(us, 1) == 0 && chdir(DIRPATH) == 0,
          "bound by ../up.sock, then left");
}

/* Sockets: TCP listeners (v4 with options, v6 only-v6), an unbound and a
 * bound TCP socket, UDP bound and connected, unix listeners on a path and
 * an abstract name, a unix datagram socket bound to a path and another
 * connected to it, and socket pairs (stream with bytes queued each way and
 * a dup, seqpacket, datagram). After the restore each has its address and
 * options and works: connections accepted, datagrams delivered, queued
 * bytes read in order. */
enum { S_TCP, S_TCP6, S_UNB, S_BND, S_UDP, S_UDPC, S_UL, S_UA, S_UD, S_UDC, S_PA, S_PB, S_QA, S_QB, S_DA, S_DB, S_N };
static int sk[S_N];
static struct sockaddr_storage sk_addr[S_N];
static socklen_t sk_len[S_N];
static int have_v6;

static int sock_opt(int fd, int level, int name) {
    int v = -1;
    socklen_t l = sizeof v;
    CHECK(getsockopt(fd, level, name, &v, &l) == 0, "getsockopt");
    return v;
}
static void sock_name(int i) {
    sk_len[i] = sizeof sk_addr[i];
    CHECK(getsockname(sk[i], (struct sockaddr *)&sk_addr[i], &sk_len[i]) == 0, "getsockname");
}
static int unix_addr(struct sockaddr_un *u, const char *name, int abstract) {
    memset(u, 0, sizeof *u);
    u->sun_family = AF_UNIX;
    if (abstract) {
        snprintf(u->sun_path + 1, sizeof u->sun_path - 1, "%s", name);
        return (int)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
    }
    static char full[4096];
    path_in_dir(full, sizeof full, name);
    if (strlen(full) >= sizeof u->sun_path) fail("socket path too long: %s", full);
    memcpy(u->sun_path, full, strlen(full) + 1);
    unlink(u->sun_path);
    return (int)sizeof *u;
}
static void sockets_setup(void) {
    int one = 1;
    struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    sk[S_TCP] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rcv = 100000;
    CHECK(setsockopt(sk[S_TCP], SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
              setsockopt(sk[S_TCP], SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) == 0 &&
              setsockopt(sk[S_TCP], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0 &&
              setsockopt(sk[S_TCP], SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv) == 0,
          "tcp options");
    CHECK(bind(sk[S_TCP], (struct sockaddr *)&lo, sizeof lo) == 0 && listen(sk[S_TCP], 7) == 0, "tcp listen");
    struct sockaddr_in6 lo6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    sk[S_TCP6] = socket(AF_INET6, SOCK_STREAM, 0);
    have_v6 = sk[S_TCP6] >= 0 && setsockopt(sk[S_TCP6], IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) == 0 &&
              bind(sk[S_TCP6], (struct sockaddr *)&lo6, sizeof lo6) == 0 && listen(sk[S_TCP6], 3) == 0;
    if (!have_v6) { /* no IPv6 loopback here: a second v4 listener instead */
        if (sk[S_TCP6] >= 0) close(sk[S_TCP6]);
        sk[S_TCP6] = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(bind(sk[S_TCP6], (struct sockaddr *)&lo, sizeof lo) == 0 && listen(sk[S_TCP6], 3) == 0, "tcp2");
    }
    sk[S_UNB] = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(setsockopt(sk[S_UNB], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0, "nodelay");
    sk[S_BND] = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(bind(sk[S_BND], (struct sockaddr *)&lo, sizeof lo) == 0, "bind");
    sk[S_UDP] = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(bind(sk[S_UDP], (struct sockaddr *)&lo, sizeof lo) == 0, "udp bind");
    sk[S_UDPC] = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in discard = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(connect(sk[S_UDPC], (struct sockaddr *)&discard, sizeof discard) == 0, "udp connect");
    struct sockaddr_un u;
    int ul = unix_addr(&u, "listener.sock", 0);
    sk[S_UL] = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(bind(sk[S_UL], (struct sockaddr *)&u, ul) == 0 && listen(sk[S_UL], 5) == 0, "unix listen");
    char abs_name[64];
    snprintf(abs_name, sizeof abs_name, "cryo-fidelity-%d", getpid());
    ul = unix_addr(&u, abs_name, 1);
    sk[S_UA] = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    CHECK(bind(sk[S_UA], (struct sockaddr *)&u, ul) == 0 && listen(sk[S_UA], 2) == 0, "abstract listen");
    ul = unix_addr(&u, "dgram.sock", 0);
    sk[S_UD] = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(bind(sk[S_UD], (struct sockaddr *)&u, ul) == 0, "unix dgram bind");
    sk[S_UDC] = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    CHECK(connect(sk[S_UDC], (struct sockaddr *)&u, ul) == 0, "unix dgram connect");
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "pair");
    sk[S_PA] = sv[0], sk[S_PB] = sv[1];
    CHECK(write(sv[0], "hello", 5) == 5 && write(sv[1], "world!", 6) == 6 && write(sv[0], " again", 6) == 6,
          "queue");
    CHECK(dup2(sv[0], 60) == 60, "dup");
    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0, "seqpacket pair");
    sk[S_QA] = sv[0], sk[S_QB] = sv[1];
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) == 0, "dgram pair");
    sk[S_DA] = sv[0], sk[S_DB] = sv[1];
    for (int i = 0; i < S_N; i++) sock_name(i);
}
static void same_name(int i) {
    struct sockaddr_storage a;
    socklen_t l = sizeof a;
    CHECK(getsockname(sk[i], (struct sockaddr *)&a, &l) == 0, "getsockname after");
    if (l != sk_len[i] || memcmp(&a, &sk_addr[i], l)) fail("socket %d: address changed", i);
}
static void connect_accept(int i, int type) {
    int c = socket(sk_addr[i].ss_family, type, 0);
    CHECK(c >= 0 && connect(c, (struct sockaddr *)&sk_addr[i], sk_len[i]) == 0, "connect to listener");
    struct pollfd p = {.fd = sk[i], .events = POLLIN};
    CHECK(poll(&p, 1, 5000) == 1, "listener readable");
    int a = accept(sk[i], NULL, NULL);
    CHECK(a >= 0 && write(c, "x", 1) == 1, "accept");
    char b;
    CHECK(read(a, &b, 1) == 1 && b == 'x', "byte through accepted connection");
    /* The client closes first: TIME_WAIT stays on its port, not on the
     * listener's (which a restore binds again). */
    close(c);
    CHECK(read(a, &b, 1) == 0, "EOF after the client closed");
    close(a);
}
static void sockets_check(void) {
    for (int i = 0; i < S_N; i++) same_name(i);
    CHECK(sock_opt(sk[S_TCP], SOL_SOCKET, SO_REUSEADDR) == 1 && sock_opt(sk[S_TCP], SOL_SOCKET, SO_KEEPALIVE) == 1 &&
              sock_opt(sk[S_TCP], IPPROTO_TCP, TCP_NODELAY) == 1 &&
              sock_opt(sk[S_TCP], SOL_SOCKET, SO_RCVBUF) == 200000 && sock_opt(sk[S_TCP], SOL_SOCKET, SO_ACCEPTCONN) == 1,
          "tcp listener options");
    CHECK((fcntl(sk[S_TCP], F_GETFL) & O_NONBLOCK) && !(fcntl(sk[S_TCP6], F_GETFL) & O_NONBLOCK), "nonblock");
    if (have_v6) CHECK(sock_opt(sk[S_TCP6], IPPROTO_IPV6, IPV6_V6ONLY) == 1, "v6only");
    CHECK(sock_opt(sk[S_UNB], IPPROTO_TCP, TCP_NODELAY) == 1 && sock_opt(sk[S_UNB], SOL_SOCKET, SO_ACCEPTCONN) == 0,
          "unbound");
    CHECK(sock_opt(sk[S_BND], SOL_SOCKET, SO_ACCEPTCONN) == 0 && sock_opt(sk[S_UL], SOL_SOCKET, SO_ACCEPTCONN) == 1,
          "listening or not");
    connect_accept(S_TCP, SOCK_STREAM);
    connect_accept(S_TCP6, SOCK_STREAM);
    connect_accept(S_UL, SOCK_STREAM);
    connect_accept(S_UA, SOCK_SEQPACKET);
    CHECK(listen(sk[S_BND], 1) == 0, "the bound socket can listen");
    connect_accept(S_BND, SOCK_STREAM);
    /* UDP: to itself; the connected one has its peer. */
    CHECK(sendto(sk[S_UDP], "dg", 2, 0, (struct sockaddr *)&sk_addr[S_UDP], sk_len[S_UDP]) == 2, "udp send");
    char buf[64];
    CHECK(recv(sk[S_UDP], buf, sizeof buf, 0) == 2 && !memcmp(buf, "dg", 2), "udp recv");
    struct sockaddr_in peer;
    socklen_t pl = sizeof peer;
    CHECK(getpeername(sk[S_UDPC], (struct sockaddr *)&peer, &pl) == 0 && ntohs(peer.sin_port) == 9, "udp peer");
    CHECK(send(sk[S_UDC], "to-bound", 8, 0) == 8, "unix dgram send");
    CHECK(recv(sk[S_UD], buf, sizeof buf, 0) == 8 && !memcmp(buf, "to-bound", 8), "unix dgram recv");
    /* The stream pair: what was queued each way, in order, then more. */
    memset(buf, 0, sizeof buf);
    CHECK(recv(sk[S_PB], buf, sizeof buf, MSG_DONTWAIT) == 11 && !memcmp(buf, "hello again", 11), "queued a->b");
    CHECK(recv(sk[S_PA], buf, sizeof buf, MSG_DONTWAIT) == 6 && !memcmp(buf, "world!", 6), "queued b->a");
    struct stat s1, s2;
    CHECK(fstat(sk[S_PA], &s1) == 0 && fstat(60, &s2) == 0 && s1.st_ino == s2.st_ino, "dup of a pair end");
    CHECK(write(60, "via-dup", 7) == 7 && recv(sk[S_PB], buf, sizeof buf, 0) == 7, "through the dup");
    CHECK(send(sk[S_QA], "m1", 2, 0) == 2 && send(sk[S_QA], "m22", 3, 0) == 3 &&
              recv(sk[S_QB], buf, sizeof buf, 0) == 2 && recv(sk[S_QB], buf, sizeof buf, 0) == 3,
          "seqpacket boundaries");
    CHECK(send(sk[S_DB], "d", 1, 0) == 1 && recv(sk[S_DA], buf, sizeof buf, 0) == 1, "dgram pair");
    CHECK(fcntl(sk[S_DA], F_GETFD) == FD_CLOEXEC && fcntl(sk[S_QA], F_GETFD) == 0, "cloexec");
}

static void none(void) {}

/* Wait until thread *tid (set by the thread itself) sleeps in its call:
 * past glibc's start, where every signal is blocked. */
static void wait_asleep(volatile pid_t *tid) {
    for (int tries = 0; tries < 5000; tries++) {
        char p[128], st[512];
        snprintf(p, sizeof p, "/proc/self/task/%d/stat", (int)*tid);
        if (*tid > 0 && read_file(p, st, sizeof st) > 0 && strrchr(st, ')')[2] == 'S') break;
        usleep(1000);
    }
}
/* Before the second snapshot: a restored thread may not have run yet since
 * its release, and still show the restore's all-blocked mask
 * (docs/pitfalls.md; as threads_settle). */
static void wait_released(pid_t tid) {
    for (int tries = 0; tries < 5000; tries++) {
        char p[128], st[4096];
        snprintf(p, sizeof p, "/proc/self/task/%d/status", (int)tid);
        if (read_file(p, st, sizeof st) > 0 && !strstr(st, "SigBlk:\tfffffffffffbfeff")) break;
        usleep(1000);
    }
}

/* seccomp: two filters (the second logged, deciding on an argument) and a
 * thread made after them, so sharing them. After the restore each filter
 * still decides, in both threads; a child tracing this process reads the
 * same two programs with their flags; and a third filter can be
 * synchronised to every thread (TSYNC: each thread's filter must be an
 * ancestor of ours, so the threads still share the chain). */
static int sc_pipe[2], sc_result, sc_ask[2], sc_answer[2];
static volatile pid_t sc_tid;
static pid_t sc_helper;
static pthread_t sc_th;
static struct sock_filter sc_no_mkdir[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mkdir, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};
static struct sock_filter sc_no_winch[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_kill, 0, 3),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SIGWINCH, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};
static long sc_install(struct sock_filter *f, size_t n, unsigned flags) {
    struct sock_fprog p = {(unsigned short)n, f};
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &p);
}
static int sc_traced_filters(pid_t parent);
static void *sc_thread(void *arg) {
    (void)arg;
    char c, path[2100];
    sc_tid = (pid_t)syscall(SYS_gettid);
    if (read(sc_pipe[0], &c, 1) != 1) return NULL;
    snprintf(path, sizeof path, "%s/sc-thread", DIRPATH);
    sc_result = mkdir(path, 0700) == -1 && errno == EPERM ? 1 : -errno;
    return NULL;
}
static void seccomp_setup(void) {
    /* A tracer must not be under seccomp itself to read filters: a child
     * made before them, which reads ours when asked. */
    CHECK(pipe(sc_ask) == 0 && pipe(sc_answer) == 0, "pipes");
    sc_helper = fork();
    CHECK(sc_helper >= 0, "fork");
    if (sc_helper == 0) {
        char c;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (read(sc_ask[0], &c, 1) != 1) _exit(1);
        c = (char)sc_traced_filters(getppid());
        _exit(write(sc_answer[1], &c, 1) == 1 ? 0 : 1);
    }
    CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "no_new_privs");
    CHECK(sc_install(sc_no_mkdir, sizeof sc_no_mkdir / sizeof sc_no_mkdir[0], 0) == 0, "filter 1: %s",
          strerror(errno));
    CHECK(sc_install(sc_no_winch, sizeof sc_no_winch / sizeof sc_no_winch[0], SECCOMP_FILTER_FLAG_LOG) == 0,
          "filter 2: %s", strerror(errno));
    CHECK(pipe(sc_pipe) == 0 && pthread_create(&sc_th, NULL, sc_thread, NULL) == 0, "thread");
    wait_asleep(&sc_tid);
}
static void seccomp_settle(void) { wait_released(sc_tid); }
/* In a child: trace this process and compare its filters (the kernel
 * numbers them from the oldest) with what it installed: 0 if equal, else
 * which check failed. */
static int sc_traced_filters(pid_t parent) {
    struct sock_filter got[16];
    struct sock_filter *want[] = {sc_no_mkdir, sc_no_winch};
    long nwant[] = {sizeof sc_no_mkdir / sizeof sc_no_mkdir[0], sizeof sc_no_winch / sizeof sc_no_winch[0]};
    unsigned long long wflags[] = {0, SECCOMP_FILTER_FLAG_LOG};
    int st;
    if (ptrace(PTRACE_SEIZE, parent, 0, 0) || ptrace(PTRACE_INTERRUPT, parent, 0, 0) ||
        waitpid(parent, &st, __WALL) != parent)
        return 10;
    int r = 0;
    for (long i = 0; i < 3 && !r; i++) {
        long n = ptrace(PTRACE_SECCOMP_GET_FILTER, parent, (void *)i, NULL);
        if (i == 2) {
            r = n == -1 && errno == ENOENT ? 0 : 11;
            break;
        }
        struct {
            unsigned long long off, flags;
        } md = {(unsigned long long)i, 0};
        if (n != nwant[i] || ptrace(PTRACE_SECCOMP_GET_FILTER, parent, (void *)i, got) != n)
            r = 20 + (int)i + (n < 0 ? 100 : 0);
        else if (memcmp(got, want[i], n * sizeof got[0]))
            r = 30 + (int)i;
        else if (ptrace(PTRACE_SECCOMP_GET_METADATA, parent, (void *)sizeof md, &md) < 0 || md.flags != wflags[i])
            r = 40 + (int)i;
    }
    ptrace(PTRACE_DETACH, parent, 0, 0);
    return r;
}
static void seccomp_check(void) {
    char path[2100];
    snprintf(path, sizeof path, "%s/sc-main", DIRPATH);
    CHECK(mkdir(path, 0700) == -1 && errno == EPERM, "mkdir still refused (%s)", strerror(errno));
    CHECK(kill(getpid(), SIGWINCH) == -1 && errno == EACCES, "kill SIGWINCH still refused (%s)", strerror(errno));
    CHECK(kill(getpid(), 0) == 0, "kill 0 allowed");
    char r = 99;
    int st;
    CHECK(write(sc_ask[1], "?", 1) == 1 && read(sc_answer[0], &r, 1) == 1 && r == 0,
          "the filters read by a tracer (check %d)", r);
    CHECK(waitpid(sc_helper, &st, 0) == sc_helper && WIFEXITED(st) && WEXITSTATUS(st) == 0, "helper");
    struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    long t = sc_install(allow, 1, SECCOMP_FILTER_FLAG_TSYNC);
    CHECK(t == 0, "a filter synchronised to every thread: %ld (%s)", t, strerror(errno));
    CHECK(write(sc_pipe[1], "x", 1) == 1 && pthread_join(sc_th, NULL) == 0, "thread");
    CHECK(sc_result == 1, "the thread's mkdir refused too (%d)", sc_result);
}

/* seccomp-refused: filters cryo cannot restore faithfully, each named:
 * one that refuses munmap (which the restore's last act is), one that
 * hands a call to a supervisor (SECCOMP_RET_USER_NOTIF); and a thread
 * with a filter of its own, so a chain of its own, named apart. */
static pthread_t scr_th;
static volatile int scr_ready;
static void *scr_thread(void *arg) {
    (void)arg;
    struct sock_filter own[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    scr_ready = sc_install(own, 1, 0) == 0 ? 1 : -1;
    for (;;) pause();
    return NULL;
}
static void seccomp_refused_setup(void) {
    struct sock_filter no_munmap[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_munmap, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_filter notify[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "no_new_privs");
    CHECK(sc_install(no_munmap, 4, 0) == 0 && sc_install(notify, 4, 0) == 0, "filters: %s", strerror(errno));
    CHECK(pthread_create(&scr_th, NULL, scr_thread, NULL) == 0, "thread");
    while (!scr_ready) usleep(1000);
    CHECK(scr_ready == 1, "the thread's filter");
}

/* thread-creds: a thread that switched its own credentials (raw
 * setresgid/setresuid, as Samba's per-thread credentials do; glibc's
 * wrappers would switch every thread) to uid/gid 1000, keeping only
 * CAP_NET_BIND_SERVICE. After the restore it still runs as 1000 with that
 * capability while the main thread is root: /proc shows both, and a file
 * only root may read opens in the main thread and not in the other. */
static pthread_t tc_th;
static volatile pid_t tc_tid;
static int tc_go[2], tc_done[2];
static char tc_path[2100];
static void *tc_thread(void *arg) {
    (void)arg;
    long r = prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0);
    r |= syscall(SYS_setresgid, 1000, 1000, 1000);
    r |= syscall(SYS_setresuid, 1000, 1000, 1000);
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2] = {{1u << 10, 1u << 10, 0}, {0, 0, 0}}; /* CAP_NET_BIND_SERVICE */
    r |= syscall(SYS_capset, &h, d);
    tc_tid = r == 0 ? (pid_t)syscall(SYS_gettid) : -1;
    char c;
    if (read(tc_go[0], &c, 1) != 1) return NULL;
    int fd = open(tc_path, O_RDONLY);
    c = fd < 0 && errno == EACCES ? 'y' : 'n';
    if (fd >= 0) close(fd);
    if (write(tc_done[1], &c, 1) != 1) return NULL;
    return NULL;
}
static void thread_creds_setup(void) {
    path_in_dir(tc_path, sizeof tc_path, "root-only");
    int f = open(tc_path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    CHECK(f >= 0 && fchown(f, 0, 0) == 0 && close(f) == 0, "root-only file");
    CHECK(pipe(tc_go) == 0 && pipe(tc_done) == 0, "pipes");
    CHECK(pthread_create(&tc_th, NULL, tc_thread, NULL) == 0, "thread");
    for (int tries = 0; tries < 5000 && !tc_tid; tries++) usleep(1000);
    CHECK(tc_tid > 0, "the thread switched its credentials");
    wait_asleep(&tc_tid);
}
static void thread_creds_settle(void) { wait_released(tc_tid); }
static void thread_creds_check(void) {
    char p[128], st[4096];
    snprintf(p, sizeof p, "/proc/self/task/%d/status", (int)tc_tid);
    CHECK(read_file(p, st, sizeof st) > 0 && strstr(st, "Uid:\t1000\t1000\t1000\t1000") &&
              strstr(st, "Gid:\t1000\t1000\t1000\t1000") && strstr(st, "CapEff:\t0000000000000400") &&
              strstr(st, "CapPrm:\t0000000000000400"),
          "the thread's credentials: %s", st);
    CHECK(getuid() == 0 && geteuid() == 0, "the main thread is still root");
    int fd = open(tc_path, O_RDONLY);
    CHECK(fd >= 0 && close(fd) == 0, "the main thread opens the root-only file");
    char c = 0;
    CHECK(write(tc_go[1], "x", 1) == 1 && read(tc_done[0], &c, 1) == 1 && c == 'y',
          "the thread may not open it (%c)", c);
    CHECK(pthread_join(tc_th, NULL) == 0, "join");
}

/* no-vdso: the process unmaps its vDSO and vvar pages (as a program run
 * with vdso=0 has none; zdtm vdso02). After the restore it still has
 * none: /proc/self/maps names no [vdso] or [vvar], and the clock answers
 * through the system call. (glibc keeps pointers into the vDSO: nothing
 * here may call its clock functions.) */
static void no_vdso_setup(void) {
    char maps[1 << 16];
    CHECK(read_file("/proc/self/maps", maps, sizeof maps) > 0, "maps");
    unsigned long ranges[8][2];
    int n = 0;
    for (char *l = strtok(maps, "\n"); l && n < 8; l = strtok(NULL, "\n"))
        if (strstr(l, "[vdso]") || strstr(l, "[vvar]") || strstr(l, "[vvar_vclock]")) {
            CHECK(sscanf(l, "%lx-%lx", &ranges[n][0], &ranges[n][1]) == 2, "parse");
            n++;
        }
    CHECK(n >= 2, "vdso and vvar found (%d)", n);
    for (int i = 0; i < n; i++)
        CHECK(syscall(SYS_munmap, ranges[i][0], ranges[i][1] - ranges[i][0]) == 0, "munmap");
}
static void no_vdso_check(void) {
    char maps[1 << 16];
    CHECK(read_file("/proc/self/maps", maps, sizeof maps) > 0, "maps");
    CHECK(!strstr(maps, "[vdso]") && !strstr(maps, "[vvar"), "no vDSO after the restore:\n%s", maps);
    struct timespec ts = {0, 0};
    CHECK(syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts) == 0 && ts.tv_sec + ts.tv_nsec > 0, "the clock");
}

/* seccomp-threads: the main thread's filter (mkdir refused), and a thread
 * made after it that adds one of its own (kill with SIGWINCH refused),
 * without TSYNC: after the restore each thread has its own chain again
 * (2 filters in the thread, 1 in the main thread) and each decides. */
static pthread_t st_th;
static volatile pid_t st_tid;
static int st_go[2], st_done[2];
static void *st_thread(void *arg) {
    (void)arg;
    long r = sc_install(sc_no_winch, sizeof sc_no_winch / sizeof sc_no_winch[0], 0);
    st_tid = r == 0 ? (pid_t)syscall(SYS_gettid) : -1;
    char c, path[2100];
    if (read(st_go[0], &c, 1) != 1) return NULL;
    snprintf(path, sizeof path, "%s/st-thread", DIRPATH);
    int mk = mkdir(path, 0700) == -1 && errno == EPERM;
    int k = kill(getpid(), SIGWINCH) == -1 && errno == EACCES;
    c = mk && k ? 'y' : 'n';
    if (write(st_done[1], &c, 1) != 1) return NULL;
    return NULL;
}
static void seccomp_threads_setup(void) {
    CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "no_new_privs");
    CHECK(sc_install(sc_no_mkdir, sizeof sc_no_mkdir / sizeof sc_no_mkdir[0], 0) == 0, "filter: %s",
          strerror(errno));
    CHECK(pipe(st_go) == 0 && pipe(st_done) == 0, "pipes");
    CHECK(pthread_create(&st_th, NULL, st_thread, NULL) == 0, "thread");
    for (int tries = 0; tries < 5000 && !st_tid; tries++) usleep(1000);
    CHECK(st_tid > 0, "the thread's own filter");
    wait_asleep(&st_tid);
}
static void seccomp_threads_settle(void) { wait_released(st_tid); }
static void seccomp_threads_check(void) {
    char p[128], st[4096], path[2100];
    snprintf(p, sizeof p, "/proc/self/task/%d/status", (int)st_tid);
    CHECK(read_file(p, st, sizeof st) > 0 && strstr(st, "Seccomp_filters:\t2\n"), "the thread's 2 filters: %s", st);
    CHECK(read_file("/proc/self/status", st, sizeof st) > 0 && strstr(st, "Seccomp_filters:\t1\n"),
          "the main thread's 1 filter: %s", st);
    snprintf(path, sizeof path, "%s/st-main", DIRPATH);
    CHECK(mkdir(path, 0700) == -1 && errno == EPERM, "mkdir refused in the main thread (%s)", strerror(errno));
    CHECK(kill(getpid(), 0) == 0, "kill allowed in the main thread");
    char c = 0;
    CHECK(write(st_go[1], "x", 1) == 1 && read(st_done[0], &c, 1) == 1 && c == 'y',
          "the thread's own filter and the main thread's decide in it (%c)", c);
    CHECK(pthread_join(st_th, NULL) == 0, "join");
}

/* amx: ask for AMX tile state and load two tiles, and a second thread one
 * of its own (where the CPU or kernel has none the request fails and the
 * case is "basic"); after: the permission is still there, the tile
 * configuration and every tile hold what was loaded, and a tile can be
 * loaded and stored again. */
static int amx_on;
static unsigned char amx_cfg[64], amx_a[16 * 64], amx_b[16 * 64];
static void amx_load(void) {
    __asm__ volatile("ldtilecfg (%0)" ::"r"(amx_cfg) : "memory");
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm0" ::"r"(amx_a), "r"(64L) : "memory");
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm1" ::"r"(amx_b), "r"(64L) : "memory");
}
/* A second thread with tiles of its own, loaded before the capture and
 * checked after it. */
static pthread_barrier_t amx_bar;
static pthread_t amx_th;
static int amx_th_ok;
static volatile pid_t amx_tid;
static void *amx_thread(void *arg) {
    (void)arg;
    amx_tid = (pid_t)syscall(SYS_gettid);
    unsigned char c[16 * 64], got[16 * 64];
    for (int i = 0; i < 16 * 64; i++) c[i] = (unsigned char)(i * 13 + 5);
    __asm__ volatile("ldtilecfg (%0)" ::"r"(amx_cfg) : "memory");
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm1" ::"r"(c), "r"(64L) : "memory");
    pthread_barrier_wait(&amx_bar); /* loaded */
    pthread_barrier_wait(&amx_bar); /* after the capture */
    __asm__ volatile("tilestored %%tmm1, (%0,%1,1)" ::"r"(got), "r"(64L) : "memory");
    amx_th_ok = memcmp(got, c, sizeof c) == 0;
    return NULL;
}
static void amx_setup(void) {
    long r = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */);
    fprintf(stderr, "INFO amx %s\n", r == 0 ? "granted" : "unavailable");
    if (r != 0) return;
    amx_on = 1;
    amx_cfg[0] = 1; /* palette 1 */
    for (int t = 0; t < 2; t++) {
        amx_cfg[16 + 2 * t] = 64; /* colsb[t]: bytes per row */
        amx_cfg[48 + t] = 16;     /* rows[t] */
    }
    for (int i = 0; i < 16 * 64; i++) {
        amx_a[i] = (unsigned char)(i * 7 + 1);
        amx_b[i] = (unsigned char)(255 - i * 3);
    }
    amx_load();
    pthread_barrier_init(&amx_bar, NULL, 2);
    CHECK(pthread_create(&amx_th, NULL, amx_thread, NULL) == 0, "amx thread");
    pthread_barrier_wait(&amx_bar);
    wait_asleep(&amx_tid);
}
static void amx_settle(void) {
    if (amx_on) wait_released(amx_tid);
}
static void amx_check(void) {
    if (!amx_on) return;
    unsigned long perm = 0;
    CHECK(syscall(SYS_arch_prctl, 0x1022 /* ARCH_GET_XCOMP_PERM */, &perm) == 0 && (perm & (1ul << 18)),
          "AMX permission kept (%#lx)", perm);
    unsigned char cfg[64], a[16 * 64], b[16 * 64];
    memset(cfg, 0xee, sizeof cfg);
    __asm__ volatile("sttilecfg (%0)" ::"r"(cfg) : "memory");
    CHECK(memcmp(cfg, amx_cfg, 64) == 0, "tile configuration kept (palette %d, colsb %d, rows %d)", cfg[0], cfg[16], cfg[48]);
    __asm__ volatile("tilestored %%tmm0, (%0,%1,1)" ::"r"(a), "r"(64L) : "memory");
    __asm__ volatile("tilestored %%tmm1, (%0,%1,1)" ::"r"(b), "r"(64L) : "memory");
    CHECK(memcmp(a, amx_a, sizeof a) == 0, "tile 0 kept");
    CHECK(memcmp(b, amx_b, sizeof b) == 0, "tile 1 kept");
    amx_load();
    __asm__ volatile("tilestored %%tmm1, (%0,%1,1)" ::"r"(a), "r"(64L) : "memory");
    CHECK(memcmp(a, amx_b, sizeof a) == 0, "tiles usable after");
    __asm__ volatile("tilerelease" ::: "memory");
    pthread_barrier_wait(&amx_bar);
    CHECK(pthread_join(amx_th, NULL) == 0, "join the amx thread");
    CHECK(amx_th_ok, "the second thread's tile kept");
}

/* Timers on CPU-time clocks named by id (pthread_getcpuclockid,
 * clock_getcpuclockid), as haproxy's watchdog arms one per thread: the
 * restore made them on the captured ids, which name nothing after it
 * (timer_create EINVAL past the point of no return, stop 37's survey) or
 * another thread. After the restore the worker's timer counts the
 * worker's CPU time again, the process's the process's. */
static pthread_t ct_th;
static volatile sig_atomic_t ct_thread_ticks, ct_proc_ticks;
static int ct_go[2], ct_done[2];
/* Each signal counts its expirations: the kernel checks CPU-clock timers
 * only at a tick that finds the thread running, so on a loaded CPU several
 * expirations come as one signal and its overruns. */
static void ct_on_thread(int s, siginfo_t *si, void *u) { (void)s; (void)u; ct_thread_ticks += 1 + si->si_overrun; }
static void ct_on_proc(int s, siginfo_t *si, void *u) { (void)s; (void)u; ct_proc_ticks += 1 + si->si_overrun; }
static void ct_burn(double secs) {
    struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    do clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    while ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9 < secs);
}
/* Armed far ahead (none fires before the check: a signal pending at a
 * snapshot would differ), set going by ct_go_timer in the check. */
static timer_t ct_arm(clockid_t c, int sig) {
    timer_t t;
    struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = sig};
    struct itimerspec its = {{0, 20000000}, {1000, 0}};
    CHECK(timer_create(c, &ev, &t) == 0 && timer_settime(t, 0, &its, NULL) == 0, "a timer on clock %d", (int)c);
    return t;
}
static void ct_go_timer(timer_t t) {
    struct itimerspec cur, its = {{0, 20000000}, {0, 20000000}};
    CHECK(timer_gettime(t, &cur) == 0 && cur.it_value.tv_sec >= 990, "still armed far ahead (%ld s)", (long)cur.it_value.tv_sec);
    CHECK(timer_settime(t, 0, &its, NULL) == 0, "set going");
}
static timer_t ct_thread_timer, ct_proc_timer;
static volatile pid_t ct_tid;
static void *ct_worker(void *a) {
    (void)a;
    clockid_t c;
    ct_tid = (pid_t)syscall(SYS_gettid);
    CHECK(pthread_getcpuclockid(pthread_self(), &c) == 0, "the thread's clock");
    ct_thread_timer = ct_arm(c, SIGRTMIN + 2);
    char b;
    while (read(ct_go[0], &b, 1) != 1) {}
    ct_thread_ticks = 0;
    ct_go_timer(ct_thread_timer);
    ct_burn(0.3);
    CHECK(write(ct_done[1], "d", 1) == 1, "done");
    return NULL;
}
static void cputimers_setup(void) {
    struct sigaction sa = {.sa_sigaction = ct_on_thread, .sa_flags = SA_RESTART | SA_SIGINFO};
    sigaction(SIGRTMIN + 2, &sa, NULL);
    sa.sa_sigaction = ct_on_proc;
    sigaction(SIGRTMIN + 3, &sa, NULL);
    CHECK(pipe(ct_go) == 0 && pipe(ct_done) == 0, "pipes");
    clockid_t pc;
    CHECK(clock_getcpuclockid(getpid(), &pc) == 0 && pc != CLOCK_PROCESS_CPUTIME_ID, "the process's clock by its PID");
    ct_proc_timer = ct_arm(pc, SIGRTMIN + 3);
    CHECK(pthread_create(&ct_th, NULL, ct_worker, NULL) == 0, "the worker");
    /* The worker's timer armed: its clock shows in /proc/self/timers. */
    for (int tries = 0; tries < 2000; tries++) {
        char t[4096];
        int n = read_file("/proc/self/timers", t, sizeof t);
        int count = 0;
        for (char *q = t; n > 0 && (q = strstr(q, "ClockID")); q++) count++;
        if (count == 2) break;
        usleep(1000);
    }
}
/* Before the second snapshot: the worker, released from the restore,
 * has its own mask back (until it runs, /proc shows the restore's
 * all-blocked one; as threads_settle). */
static void cputimers_settle(void) {
    char path[128], st[4096];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)ct_tid);
    for (int tries = 0; tries < 5000; tries++) {
        if (read_file(path, st, sizeof st) > 0 && strstr(st, "SigBlk:\t0000000000000000")) break;
        usleep(1000);
    }
}
static void cputimers_check(void) {
    CHECK(write(ct_go[1], "g", 1) == 1, "go");
    char b;
    while (read(ct_done[0], &b, 1) != 1) {}
    CHECK(pthread_join(ct_th, NULL) == 0, "join");
    CHECK(ct_thread_ticks >= 5, "the worker's CPU-clock timer fired %d times in 0.3 s of its CPU", (int)ct_thread_ticks);
    ct_proc_ticks = 0;
    ct_go_timer(ct_proc_timer);
    ct_burn(0.3);
    CHECK(ct_proc_ticks >= 5, "the process's CPU-clock timer fired %d times in 0.3 s", (int)ct_proc_ticks);
}

/* A thread's timer on "the calling thread's" CPU clock
 * (CLOCK_THREAD_CPUTIME_ID) in a process of two threads: /proc shows -2
 * for whichever thread made it, so the restore could not tell it from
 * the main thread's (it counted the main thread's, silently: stop 37's
 * survey). Refused by name. */
static void *caller_clock_worker(void *a) {
    (void)a;
    (void)ct_arm(CLOCK_THREAD_CPUTIME_ID, SIGRTMIN + 2);
    for (;;) pause();
    return NULL;
}

/* A timer a thread armed to signal itself (SIGEV_THREAD_ID), the thread
 * ended since: the kernel keeps the timer, and it never fires again. The
 * restore died at its timer_create, after its point of no return (stop
 * 51's sweep: errno 22, status 125); it is made again notifying no one
 * (SIGEV_NONE), as it was. */
static volatile sig_atomic_t dt_fired;
static timer_t dt_timer;
static void dt_on(int s) {
    (void)s;
    dt_fired++;
}
static void *dt_worker(void *a) {
    (void)a;
    struct sigevent ev = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGRTMIN + 4};
    ev._sigev_un._tid = gettid();
    CHECK(timer_create(CLOCK_MONOTONIC, &ev, &dt_timer) == 0, "timer_create");
    struct itimerspec its = {.it_interval = {0, 10000000}, .it_value = {0, 10000000}};
    CHECK(timer_settime(dt_timer, 0, &its, NULL) == 0, "timer_settime");
    return NULL;
}
static void deadtimer_setup(void) {
    struct sigaction sa = {.sa_handler = dt_on};
    sigaction(SIGRTMIN + 4, &sa, NULL);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, dt_worker, NULL) == 0 && pthread_join(th, NULL) == 0,
          "the worker");
    usleep(30000);
    dt_fired = 0;
}
static void deadtimer_check(void) {
    usleep(50000);
    CHECK(dt_fired == 0, "the ended thread's timer fired %d times", (int)dt_fired);
    struct itimerspec its;
    CHECK(timer_gettime(dt_timer, &its) == 0 && its.it_interval.tv_nsec == 10000000,
          "the timer kept, its interval %ld", its.it_interval.tv_nsec);
    CHECK(timer_delete(dt_timer) == 0, "timer_delete");
}

/* A periodic timerfd not read for a while: its expirations since the
 * first are counted in fdinfo only once a read or timerfd_gettime
 * forwards it; capture read "1 unread", and the restore lost the rest
 * (stop 51's sweep: 31 of 60). */
static int tt_fd = -1;
static void tfdticks_setup(void) {
    tt_fd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec its = {.it_interval = {0, 1000000}, .it_value = {0, 1000000}};
    CHECK(tt_fd >= 0 && timerfd_settime(tt_fd, 0, &its, NULL) == 0, "timerfd");
    usleep(300000);
}
/* (1 ms: without the capture's fold the restored count is 1 plus one a
 * millisecond from the restore to this read, which would take 280 ms to
 * pass for the 300 lost.) */
static void tfdticks_check(void) {
    uint64_t n = 0;
    CHECK(read(tt_fd, &n, 8) == 8, "read");
    CHECK(n >= 290, "%llu expirations of a 1 ms timerfd not read for 300 ms",
          (unsigned long long)n);
}

struct fcase {
    const char *name;
    void (*setup)(void);
    void (*check)(void);
    void (*settle)(void); /* before the second snapshot, if any */
};
static const struct fcase cases[] = {
    {"basic", none, none, NULL},
    {"fds", fds_setup, fds_check, NULL},
    {"pipe", pipe_setup, pipe_check, NULL},
    {"fifo", fifo_setup, fifo_check, NULL},
    {"fifo-removed", rfifo_setup, rfifo_check, NULL},
    {"vmflags", vmflags_setup, vmflags_check, NULL},
    {"mlockall", mlockall_setup, mlockall_check, NULL},
    {"mlockall-onfault", mlockall_onfault_setup, mlockall_check, NULL},
    {"prctl", prctl_setup, prctl_check, NULL},
    {"mdwe", mdwe_setup, mdwe_check, NULL},
    {"sched", sched_setup, sched_check, NULL},
    {"membarrier", membarrier_setup, membarrier_check, NULL},
    {"sigqueue", sigqueue_setup, sigqueue_check, NULL},
    {"creds", creds_setup, creds_check, NULL},
    {"devnode", devnode_setup, devnode_check, NULL},
    {"locks", locks_setup, locks_check, NULL},
    {"deleted", deleted_setup, deleted_check, NULL},
    {"deleted-dir", deleted_dir_setup, deleted_dir_check, NULL},
    {"linked-elsewhere", linked_setup, linked_check, NULL},
    {"memfd", memfd_setup, memfd_check, NULL},
    {"opath", opath_setup, opath_check, NULL},
    {"proc-memory", pm_setup, pm_check, NULL},
    {"cwd", cwd_setup, cwd_check, NULL},
    {"relsock", relsock_setup, relsock_check, NULL},
    {"relsock-left", relleft_setup, relleft_check, NULL},
    {"aio", aio_setup, aio_check, NULL},
    {"widowed", widowed_setup, widowed_check, NULL},
    {"accepted-widow", accepted_widow_setup, accepted_widow_check, NULL},
    {"ghost", ghost_setup, ghost_check, NULL},
    {"ghost-dgram", ghost_dgram_setup, ghost_dgram_check, NULL},
    {"proc-cwd", proc_cwd_setup, proc_cwd_check, NULL},
    {"special-maps", special_maps_setup, special_maps_check, NULL},
    {"inotify", inotify_setup, inotify_check, NULL},
    {"sigtrap", sigtrap_setup, sigtrap_check, NULL},
    {"anonfds", anonfds_setup, anonfds_check, NULL},
    {"epoll-oneshot", epoll_oneshot_setup, epoll_oneshot_check, NULL},
    {"threads", threads_setup, threads_check, threads_settle},
    {"fanotify", fanotify_setup, fanotify_check, NULL},
    {"sockets", sockets_setup, sockets_check, NULL},
    {"sockfilter", sockfilter_setup, sockfilter_check, NULL},
    {"sockopts", sockopts_setup, sockopts_check, NULL},
    {"mcast", mcast_setup, mcast_check, NULL},
    {"mcast-filtered", mcast_filtered_setup, refuse_check, NULL},
    {"rie", rie_setup, rie_check, NULL},
    {"coredump", coredump_setup, coredump_check, NULL},
    {"thread-ioprio", thread_ioprio_setup, thread_ioprio_check, thread_ioprio_settle},
    {"unrestored", unrestored_setup, refuse_check, NULL},
    {"landlock", landlock_setup, refuse_check, NULL},
    {"login-keyring", login_keyring_setup, login_keyring_check, NULL},
    {"devfds", devfds_setup, refuse_check, NULL},
    {"longopts", longopts_setup, refuse_check, NULL},
    {"seccomp", seccomp_setup, seccomp_check, seccomp_settle},
    {"seccomp-refused", seccomp_refused_setup, refuse_check, NULL},
    {"thread-creds", thread_creds_setup, thread_creds_check, thread_creds_settle},
    {"no-vdso", no_vdso_setup, no_vdso_check, NULL},
    {"seccomp-threads", seccomp_threads_setup, seccomp_threads_check, seccomp_threads_settle},
    {"amx", amx_setup, amx_check, amx_settle},
    {"refuse", refuse_setup, refuse_check, NULL},
    {"refuse2", refuse2_setup, refuse_check, NULL},
    {"cpu-timers", cputimers_setup, cputimers_check, cputimers_settle},
    {"dead-thread-timer", deadtimer_setup, deadtimer_check, NULL},
    {"mempolicy", mempolicy_setup, mempolicy_check, NULL},
    {"flock-mapped", flock_mapped_setup, flock_mapped_check, NULL},
    {"timerfd-ticks", tfdticks_setup, tfdticks_check, NULL},
};

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: fidelity CASE DIR\n");
        return 2;
    }
    snprintf(DIRPATH, sizeof DIRPATH, "%s", argv[2]);
    const struct fcase *c = NULL;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (!strcmp(cases[i].name, argv[1])) c = &cases[i];
    if (!c) fail("unknown case %s", argv[1]);
    c->setup();
    take_snapshot(snap_before, -1);
    printf("READY %d\n", getpid());
    fflush(stdout);
    raise(SIGSTOP);
    if (c->settle) c->settle();
    take_snapshot(snap_after, -1);
    compare_snapshots();
    c->check();
    printf("PASS %s\n", c->name);
    return 0;
}
