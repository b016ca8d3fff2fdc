/* A program with a slow start: it builds a table (about a second of work),
 * then stops itself so cryo can capture it "right after initialisation".
 * When it is continued (or restored), it answers from the table at once.
 *
 *   cc -O2 -o slowinit examples/slowinit.c
 *   cryo run --capture-on-stop /tmp/img --then kill -- ./slowinit
 *   cryo restore /tmp/img
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N (1u << 22)

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    int no_stop = argc > 1 && strcmp(argv[1], "--no-stop") == 0;
    double t0 = now_ms();
    uint64_t *table = malloc(N * sizeof *table);
    if (!table) return 2;
    uint64_t x = 88172645463325252ull;
    for (uint32_t i = 0; i < N; i++) {
        for (int r = 0; r < 24; r++) { /* xorshift: deliberately slow init */
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        }
        table[i] = x;
    }
    double t1 = now_ms();
    fprintf(stderr, "slowinit: initialised in %.1f ms\n", t1 - t0);
    if (!no_stop)
        raise(SIGSTOP); /* "initialised: snapshot me now" */
    uint64_t sum = 0;
    for (uint32_t i = 0; i < N; i += 4099) sum += table[i];
    printf("answer %016llx\n", (unsigned long long)sum);
    return 0;
}
