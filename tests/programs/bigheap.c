/* bigheap MODE MIB: fill a heap of MIB MiB with a non-zero pattern, then
 * MODE=stop: print READY and stop itself; when continued, check and print PASS.
 * MODE=exit-soon: print READY and exit 50 ms later (exits mid-capture). */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "stop";
    size_t mib = argc > 2 ? strtoull(argv[2], NULL, 10) : 16;
    size_t n = mib << 20;
    uint64_t *h = malloc(n);
    if (!h) return 2;
    for (size_t i = 0; i < n / 8; i++) h[i] = i * 0x9e3779b97f4a7c15ull | 1;
    printf("READY %d\n", getpid());
    fflush(stdout);
    if (!strcmp(mode, "exit-soon")) { usleep(50000); return 0; }
    raise(SIGSTOP);
    uint64_t s = 0;
    for (size_t i = 0; i < n / 8; i += 4099) {
        if (h[i] != (i * 0x9e3779b97f4a7c15ull | 1)) { printf("FAIL heap\n"); return 1; }
        s += h[i];
    }
    printf("PASS %016llx\n", (unsigned long long)s);
    return 0;
}
