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
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
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

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "stop";
    const char *dir = argc > 2 ? argv[2] : "/tmp";
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
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, NULL);
    static char altstack[1 << 16];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    if (sigaltstack(&ss, NULL)) fail("sigaltstack");

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

    if (!strcmp(mode, "stop")) {
        __asm__ volatile(
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
    stack_t cur_ss;
    sigaltstack(NULL, &cur_ss);
    if (cur_ss.ss_sp != altstack || cur_ss.ss_size != sizeof altstack) fail("sigaltstack");
    if (jump_test() != 1) fail("setjmp/longjmp");
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now)) fail("clock_gettime");
    if (sbrk(4096) == (void *)-1) fail("brk growth after");
    unlink(path);
    sum = mix(sum, usr1_hits);
    printf("PASS %016llx\n", (unsigned long long)sum);
    return 0;
}
