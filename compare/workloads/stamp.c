/* CLOCK_MONOTONIC in nanoseconds: the clock cryo compare reads around each run. */
#include <stdint.h>
#include <time.h>
uint64_t bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
