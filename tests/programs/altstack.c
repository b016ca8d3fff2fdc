/* Stopped on a small stack that is not the main one, near its bottom: a
 * restore's signal frames (and whatever the shim's finishing chain puts
 * below them) must never reach the memory below that stack.
 *
 *   altstack [sigaltstack | autodisarm | coroutine | main-coroutine]
 *
 * An 8 KiB stack with a page of 0xAA right below it: a sigaltstack a
 * SIGUSR1 handler runs on (its flags 0, or SS_AUTODISARM, which the
 * kernel reports as disabled while the handler runs), or a makecontext
 * coroutine's stack, in a mapping of its own or (main-coroutine) carved
 * out of main's frame on the main stack. There the code moves its stack
 * pointer down until
 * the room left above the stack's bottom is 128 bytes (the red zone)
 * plus the CPU's xsave size plus 1 KiB (what the kernel's own signal
 * frame needs, with some to spare), then stops itself with a raw
 * kill(SIGSTOP) (the capture point; "READY <pid>" first). After it
 * continues and returns to main: "PASS <room>" and exit 0 when the page
 * below is intact, else "FAIL <n> bytes below the stack changed" and
 * exit 1. */
#define _GNU_SOURCE
#include <alloca.h>
#include <assert.h>
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef SS_AUTODISARM
#define SS_AUTODISARM (1U << 31) /* linux/signal.h; glibc 2.36 lacks it */
#endif

#define PAGE 4096
#define SMALL (2 * PAGE)

static unsigned char *region;
static long room;
static ucontext_t main_ctx, co_ctx;

/* Down to `room` bytes above the small stack's bottom, then stop. */
static void stop_low(void) {
    char *sp;
    __asm__ volatile("mov %%rsp, %0" : "=r"(sp));
    char *bottom = (char *)region + PAGE;
    long drop = (sp - bottom) - room;
    volatile char *pad = alloca(drop > 16 ? drop : 16);
    pad[0] = 1;
    printf("READY %d\n", getpid());
    fflush(stdout);
    long r, pid = getpid();
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(SYS_kill), "D"(pid), "S"(SIGSTOP)
                     : "rcx", "r11", "memory");
    (void)r;
}

static void on_usr1(int sig) {
    (void)sig;
    stop_low();
}

int main(int argc, char **argv) {
    const char *how = argc > 1 ? argv[1] : "sigaltstack";
    unsigned a, b, c, d;
    if (!__get_cpuid_count(0xd, 0, &a, &b, &c, &d)) b = 1024;
    room = 128 + (long)b + 1024;
    static_assert(PAGE + SMALL <= 3 * PAGE, "room on main's stack");
    unsigned char on_main[4 * PAGE];
    if (!strcmp(how, "main-coroutine")) {
        region = (unsigned char *)(((unsigned long)on_main + PAGE - 1) & ~(unsigned long)(PAGE - 1));
    } else {
        region = mmap(NULL, PAGE + SMALL, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED) { printf("FAIL mmap\n"); return 1; }
    }
    memset(region, 0xAA, PAGE);
    if (!strcmp(how, "coroutine") || !strcmp(how, "main-coroutine")) {
        getcontext(&co_ctx);
        co_ctx.uc_stack.ss_sp = region + PAGE;
        co_ctx.uc_stack.ss_size = SMALL;
        co_ctx.uc_link = &main_ctx;
        makecontext(&co_ctx, stop_low, 0);
        swapcontext(&main_ctx, &co_ctx);
    } else {
        int flags = !strcmp(how, "autodisarm") ? SS_AUTODISARM : 0;
        stack_t ss = {.ss_sp = region + PAGE, .ss_size = SMALL, .ss_flags = flags};
        if (sigaltstack(&ss, NULL)) { printf("FAIL sigaltstack\n"); return 1; }
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr1;
        sa.sa_flags = SA_ONSTACK;
        sigaction(SIGUSR1, &sa, NULL);
        raise(SIGUSR1);
    }
    int changed = 0;
    for (int i = 0; i < PAGE; i++) changed += region[i] != 0xAA;
    if (changed) {
        printf("FAIL %d bytes below the stack changed\n", changed);
        return 1;
    }
    printf("PASS %s %ld\n", how, room);
    return 0;
}
