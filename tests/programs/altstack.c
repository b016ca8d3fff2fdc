/* Stopped on a small sigaltstack, near its bottom: a restore's signal
 * frames (and whatever the shim's finishing chain puts below them) must
 * stay on the alternate stack, never on the memory below it.
 *
 *   altstack
 *
 * An 8 KiB alternate stack with a page of 0xAA right below it. A SIGUSR1
 * handler running there moves its stack pointer down until the room left
 * above the stack's bottom is 128 bytes (the red zone) plus the CPU's
 * xsave size plus 1 KiB (what the kernel's own signal frame needs, with
 * some to spare), then stops itself with a raw kill(SIGSTOP) (the capture
 * point; "READY <pid>" first). After it continues and the handler
 * returns: "PASS <room>" and exit 0 when the page below is intact, else
 * "FAIL <n> bytes below the alternate stack changed" and exit 1. */
#define _GNU_SOURCE
#include <alloca.h>
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE 4096
#define ALT (2 * PAGE)

static unsigned char *region;
static long room;

static void on_usr1(int sig) {
    (void)sig;
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

int main(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(0xd, 0, &a, &b, &c, &d)) b = 1024;
    room = 128 + (long)b + 1024;
    region = mmap(NULL, PAGE + ALT, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) { printf("FAIL mmap\n"); return 1; }
    memset(region, 0xAA, PAGE);
    stack_t ss = {.ss_sp = region + PAGE, .ss_size = ALT, .ss_flags = 0};
    if (sigaltstack(&ss, NULL)) { printf("FAIL sigaltstack\n"); return 1; }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    int changed = 0;
    for (int i = 0; i < PAGE; i++) changed += region[i] != 0xAA;
    if (changed) {
        printf("FAIL %d bytes below the alternate stack changed\n", changed);
        return 1;
    }
    printf("PASS %ld\n", room);
    return 0;
}
