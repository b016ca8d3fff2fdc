/* ZDTM-style target for cryo's end-to-end tests.
 *
 *   zdtm MODE [DIR]     MODE = stop | read | sleep | busy
 *
 * Builds state (heap pattern with zero pages, brk growth, anonymous and
 * PROT_NONE mappings, a file at an offset, /dev/null, signal handlers, a
 * blocked mask, a sigaltstack, vector registers), prints INFO lines on
 * stderr describing it, prints "READY <pid>" on stdout, then waits to be
 * captured according to MODE. After it continues, it checks everything and
 * prints "PASS <checksum>" (exit 0) or "FAIL <why>" (exit 1). The checksum
 * depends only on the program's deterministic state.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define HEAP_BYTES (4u << 20)
#define FILE_OFFSET 1234
#define ZERO_PAGE(p) ((((uintptr_t)(p)) >> 12) % 8 == 3)

static volatile sig_atomic_t usr1_hits;
static jmp_buf jb;

static void on_usr1(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)si; (void)uc;
    usr1_hits++;
}

static void fail(const char *why);

/* setjmp/longjmp: glibc mangles the saved pc/sp with the pointer guard. */
static __attribute__((noinline)) int jump_test(void) {
    volatile int hops = 0;
    if (setjmp(jb) == 0) { hops++; longjmp(jb, 1); }
    return hops;
}

static void fail(const char *why) {
    printf("FAIL %s\n", why);
    fflush(stdout);
    exit(1);
}

static int atexit_ran;
static void at_exit_handler(void) {
    /* Runs through glibc's exit-handler list, whose function pointers are
     * mangled with the pointer guard. */
    fprintf(stderr, "ATEXIT ok\n");
}

static int have_avx512(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(b & (1u << 16))) return 0; /* AVX512F */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0xe6) == 0xe6;
}

__attribute__((target("avx512f"), noinline))
static void stop_avx512(uint64_t *zmm_in, uint64_t *zmm_out, uint64_t *ymm_in, uint64_t *ymm_out,
                        uint64_t *xmm_in, uint64_t *xmm_out, double *x87_in, double *x87_out) {
    __asm__ volatile(
                "vmovdqu64 (%[zi]), %%zmm31\n\t"
                "vmovdqu (%[yi]), %%ymm8\n\t"
                "movdqu (%[xi]), %%xmm7\n\t"
                "fldl (%[fi])\n\t"
                "mov $62, %%eax\n\t"
                "mov %[pid], %%edi\n\t"
                "mov $19, %%esi\n\t"
                "syscall\n\t"
                "vmovdqu64 %%zmm31, (%[zo])\n\t"
                "vmovdqu %%ymm8, (%[yo])\n\t"
                "movdqu %%xmm7, (%[xo])\n\t"
                "fstpl (%[fo])\n\t"
                :
                : [zi] "r"(zmm_in), [zo] "r"(zmm_out), [yi] "r"(ymm_in), [yo] "r"(ymm_out),
                  [xi] "r"(xmm_in), [xo] "r"(xmm_out), [fi] "r"(x87_in), [fo] "r"(x87_out), [pid] "r"(getpid())
                : "rax", "rdi", "rsi", "rcx", "r11", "xmm31", "xmm8", "xmm7", "memory", "st");
}

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "stop";
    const char *tmp = getenv("TMPDIR");
    const char *dir = argc > 2 ? argv[2] : tmp && *tmp ? tmp : "/tmp";
    uint64_t sum = 0;

    /* Heap: a pattern, with every 8th (real, address-aligned) page left
     * zero but touched, so capture sees present all-zero pages. */
    uint8_t *heap = malloc(HEAP_BYTES);
    if (!heap) fail("malloc");
    memset(heap, 0, HEAP_BYTES);
    for (size_t i = 0; i < HEAP_BYTES; i++)
        if (ZERO_PAGE(heap + i)) heap[i] = 0; else heap[i] = (uint8_t)(i * 131 + 7);
    /* brk growth */
    uint8_t *b = sbrk(64 * 1024);
    if (b == (void *)-1) fail("sbrk");
    memset(b, 0x5a, 64 * 1024);
    /* anonymous mapping and a PROT_NONE guard */
    uint8_t *anon = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *guard = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (anon == MAP_FAILED || guard == MAP_FAILED) fail("mmap");
    /* ZDTM_MAP_AT=ADDR: one more page at a fixed address (tests use it to
     * occupy the restore shim's window). */
    if (getenv("ZDTM_MAP_AT")) {
        void *want = (void *)strtoul(getenv("ZDTM_MAP_AT"), NULL, 0);
        if (mmap(want, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != want)
            fail("mmap at ZDTM_MAP_AT");
    }
    for (int i = 0; i < (1 << 20); i += 4096) anon[i] = (uint8_t)(i >> 12);

    /* A file at a known offset. */
    char path[4096];
    snprintf(path, sizeof path, "%s/zdtm-file.%d", dir, getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) fail("open file");
    char text[4096];
    for (int i = 0; i < 4096; i++) text[i] = (char)('a' + i % 26);
    if (write(fd, text, sizeof text) != sizeof text) fail("write file");
    if (lseek(fd, FILE_OFFSET, SEEK_SET) != FILE_OFFSET) fail("lseek");
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull < 0) fail("open /dev/null");

    /* Signals. */
    struct sigaction sa = {0};
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaddset(&sa.sa_mask, SIGUSR2);
    if (sigaction(SIGUSR1, &sa, NULL)) fail("sigaction");
    signal(SIGUSR2, SIG_IGN);
    /* Default action, but with a flag that changes what the kernel does:
     * children are reaped at once, never zombies. */
    struct sigaction chld = {0};
    chld.sa_handler = SIG_DFL;
    chld.sa_flags = SA_NOCLDWAIT;
    if (sigaction(SIGCHLD, &chld, NULL)) fail("sigaction SIGCHLD");
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, NULL);
    raise(SIGHUP); /* blocked: pending across the capture and restore */
    static char altstack[1 << 16];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    if (sigaltstack(&ss, NULL)) fail("sigaltstack");

    /* A robust error-checking mutex, locked now, unlocked after the
     * restore: glibc compares its owner with the TID cached in the TCB, and
     * the kernel finds it through the robust list. */
    static pthread_mutex_t mu;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&mu, &ma);
    if (pthread_mutex_lock(&mu)) fail("mutex lock");
    if (atexit(at_exit_handler)) fail("atexit");
    (void)atexit_ran;
    /* Small allocations live on, some freed after the restore. */
    char *small[64];
    for (int i = 0; i < 64; i++) { small[i] = malloc(32 + i); memset(small[i], i, 32 + i); }

    fprintf(stderr, "INFO heap %p %u\n", (void *)heap, HEAP_BYTES);
    fprintf(stderr, "INFO anon %p %u\n", (void *)anon, 1u << 20);
    fprintf(stderr, "INFO guard %p\n", (void *)guard);
    fprintf(stderr, "INFO handler 10 %p\n", (void *)on_usr1);
    fprintf(stderr, "INFO ignored 12\n");
    fprintf(stderr, "INFO fd %d %s %d\n", fd, path, FILE_OFFSET);
    fprintf(stderr, "INFO fd %d /dev/null 0\n", devnull);
    fprintf(stderr, "INFO altstack %p %zu\n", (void *)altstack, sizeof altstack);
    fflush(stderr);
    printf("READY %d\n", getpid());
    fflush(stdout);

    /* Vector registers held across the capture point. */
    double x87_in = 3.25, x87_out = 0;
    uint64_t xmm_in[2] = {0x0123456789abcdefull, 0xfedcba9876543210ull}, xmm_out[2] = {0, 0};

    int avx512 = have_avx512();
    uint64_t zmm_in[8] = {1, 2, 3, 4, 5, 6, 7, 0x8000000000000008ull}, zmm_out[8] = {0};
    uint64_t ymm_in[4] = {11, 12, 13, 14}, ymm_out[4] = {0};
    if (!strcmp(mode, "stop")) {
        if (avx512) {
            /* zmm31 (AVX-512 only), ymm8, xmm7 and x87 across the stop. */
            stop_avx512(zmm_in, zmm_out, ymm_in, ymm_out, xmm_in, xmm_out, &x87_in, &x87_out);
            if (memcmp(zmm_in, zmm_out, sizeof zmm_in)) fail("zmm31 changed across the stop");
            if (memcmp(ymm_in, ymm_out, sizeof ymm_in)) fail("ymm8 changed across the stop");
            fprintf(stderr, "INFO avx512 checked\n");
        } else __asm__ volatile(
            "movdqu (%[xi]), %%xmm7\n\t"
            "fldl (%[fi])\n\t"
            "mov $62, %%eax\n\t"          /* kill(getpid(), SIGSTOP) */
            "mov %[pid], %%edi\n\t"
            "mov $19, %%esi\n\t"
            "syscall\n\t"
            "movdqu %%xmm7, (%[xo])\n\t"
            "fstpl (%[fo])\n\t"
            :
            : [xi] "r"(xmm_in), [xo] "r"(xmm_out), [fi] "r"(&x87_in), [fo] "r"(&x87_out), [pid] "r"(getpid())
            : "rax", "rdi", "rsi", "rcx", "r11", "xmm7", "memory", "st");
        if (memcmp(xmm_in, xmm_out, sizeof xmm_in)) fail("xmm7 changed across the stop");
        if (x87_out != 3.25) fail("x87 st0 changed across the stop");
    } else if (!strcmp(mode, "read")) {
        char c;
        ssize_t n;
        do n = read(0, &c, 1); while (n < 0 && errno == EINTR);
        if (n != 1) fail("read stdin");
    } else if (!strcmp(mode, "sleep")) {
        struct timespec ts = {2, 0};
        while (nanosleep(&ts, &ts) && errno == EINTR) {}
    } else if (!strcmp(mode, "busy")) {
        uint64_t x = 1;
        for (uint64_t i = 0; i < 300000000ull; i++) x = x * 6364136223846793005ull + 1442695040888963407ull;
        sum = mix(sum, x);
    } else {
        fail("unknown mode");
    }

    /* Verify. */
    for (size_t i = 0; i < HEAP_BYTES; i++) {
        uint8_t want = ZERO_PAGE(heap + i) ? 0 : (uint8_t)(i * 131 + 7);
        if (heap[i] != want) fail("heap pattern");
        /* the layout (which pages are zero) depends on ASLR: not in the sum */
        if (i % 4099 == 0) sum = mix(sum, (uint8_t)(i * 131 + 7));
    }
    for (int i = 0; i < 64 * 1024; i++) if (b[i] != 0x5a) fail("brk area");
    for (int i = 0; i < (1 << 20); i += 4096) if (anon[i] != (uint8_t)(i >> 12)) fail("anon mapping");
    if (lseek(fd, 0, SEEK_CUR) != FILE_OFFSET) fail("file offset");
    char buf[16];
    if (read(fd, buf, 16) != 16 || memcmp(buf, text + FILE_OFFSET, 16)) fail("file read at offset");
    raise(SIGUSR1);
    if (usr1_hits != 1) fail("SIGUSR1 handler");
    raise(SIGUSR2); /* ignored */
    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    if (!sigismember(&cur, SIGHUP)) fail("blocked mask");
    sigset_t pend;
    sigpending(&pend);
    if (!sigismember(&pend, SIGHUP)) fail("pending SIGHUP");
    /* No trace of cryo: its window (0x3f0000000000, 4 GiB) is gone and
     * /proc/self/exe names this program again. (The image's pages.img is
     * mapped after `cryo restore --map`: the memory itself, asked for.
     * A page of ZDTM_MAP_AT may be there: ours, and never restored.) */
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) fail("open maps");
    char line[512];
    while (fgets(line, sizeof line, maps)) {
        /* (By address: a static program's heap may start at 0x3f00xxxx,
         * which a test of the line's first 4 characters took for the
         * window once.) */
        unsigned long long start = 0;
        sscanf(line, "%llx", &start);
        int in_window = start >= 0x3f0000000000ULL && start < 0x3f0100000000ULL;
        if ((strstr(line, "cryo") && !strstr(line, "/pages.img\n")) || (in_window && !getenv("ZDTM_MAP_AT"))) { fputs(line, stderr); fail("trace of cryo in maps"); }
    }
    fclose(maps);
    char exe[4096];
    ssize_t en = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (en <= 0) fail("readlink exe");
    exe[en] = 0;
    const char *slash = strrchr(exe, '/');
    if (!slash || strncmp(slash + 1, "c-zdtm", 6)) { fprintf(stderr, "exe %s\n", exe); fail("exe is not this program"); }
    /* Default where the program left it so (cryo itself ignores SIGPIPE). */
    struct sigaction pipe_act;
    sigaction(SIGPIPE, NULL, &pipe_act);
    if (pipe_act.sa_handler != SIG_DFL) fail("SIGPIPE not default");
    struct sigaction chld_act;
    sigaction(SIGCHLD, NULL, &chld_act);
    if (chld_act.sa_handler != SIG_DFL || !(chld_act.sa_flags & SA_NOCLDWAIT)) fail("SIGCHLD flags");
    pid_t kid = fork();
    if (kid < 0) fail("fork");
    if (kid == 0) _exit(0);
    /* SA_NOCLDWAIT: waitpid waits for the child, then finds none to reap. */
    if (waitpid(kid, NULL, 0) != -1 || errno != ECHILD) fail("SA_NOCLDWAIT child became a zombie");
    stack_t cur_ss;
    sigaltstack(NULL, &cur_ss);
    if (cur_ss.ss_sp != altstack || cur_ss.ss_size != sizeof altstack) fail("sigaltstack");
    if (jump_test() != 1) fail("setjmp/longjmp");
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now)) fail("clock_gettime");
    if (sbrk(4096) == (void *)-1) fail("brk growth after");
    void *more = malloc(1 << 20);
    if (!more) fail("malloc after");
    memset(more, 1, 1 << 20);
    free(more);
    for (int i = 0; i < 64; i++) {
        for (int j = 0; j < 32 + i; j++) if (small[i][j] != (char)i) fail("small allocation");
        free(small[i]);
    }
    int err = pthread_mutex_unlock(&mu);
    if (err) { fprintf(stderr, "mutex unlock: %s\n", strerror(err)); fail("error-checking mutex unlock"); }
    if (pthread_mutex_unlock(&mu) != EPERM) fail("mutex unlocked twice");
    int cpu = sched_getcpu();
    if (cpu < 0) fail("sched_getcpu");
    sum = mix(sum, usr1_hits);
    printf("PASS %016llx\n", (unsigned long long)sum);
    return 0;
}
