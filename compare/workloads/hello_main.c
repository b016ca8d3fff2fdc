/* cryo compare's hello world driver (ghc -no-hs-main): times hs_init, the
 * Haskell call and hs_exit with CLOCK_MONOTONIC.
 *   hello cold  : hs_init, hello, hs_exit
 *   hello stop  : hs_init, raise(SIGSTOP) (the capture point), hello, hs_exit
 * Built twice: with -DBENCH_V0 the RTS runs with -V0 (no timer signal).
 * Output: "Hello, world!", then "cryo-bench answer=CHECKSUM at=NS" (after
 * hello), "cryo-bench hs_init_ns=..." (cold only) and "cryo-bench
 * hs_exit_ns=..." after hs_exit. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "HsFFI.h"
#include "Rts.h"
void hello(void); /* foreign export from Hello.hs */

uint64_t bench_now_ns(void);

int main(int argc, char **argv) {
    int stop = argc > 1 && strcmp(argv[1], "stop") == 0;
    RtsConfig conf = defaultRtsConfig;
#ifdef BENCH_V0
    conf.rts_opts = "-V0";
#endif
    conf.rts_opts_enabled = RtsOptsSafeOnly;
    uint64_t t0 = bench_now_ns();
    hs_init_ghc(&argc, &argv, conf);
    uint64_t t1 = bench_now_ns();
    if (stop) raise(SIGSTOP);
    hello();
    uint64_t t2 = bench_now_ns();
    hs_exit();
    uint64_t t3 = bench_now_ns();
    /* the checksum of a hello world: the length of what it printed */
    printf("cryo-bench answer=14 at=%llu\n", (unsigned long long)t2);
    if (!stop) printf("cryo-bench hs_init_ns=%llu\n", (unsigned long long)(t1 - t0));
    printf("cryo-bench hs_exit_ns=%llu\n", (unsigned long long)(t3 - t2));
    return 0;
}
