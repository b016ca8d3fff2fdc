/* launch CMD [ARGS]: run CMD (no shell) and print on stderr, after it
 * exits: "LAUNCH <start ns> <end ns> <minflt> <majflt> <status>", times
 * on CLOCK_MONOTONIC (comparable with stamps the program prints). Used by
 * scripts/bench-lazy.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static unsigned long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (unsigned long long)t.tv_sec * 1000000000ull + t.tv_nsec;
}
int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: launch CMD [ARGS]\n"); return 2; }
    unsigned long long t0 = now();
    pid_t p = fork();
    if (p == 0) { execvp(argv[1], argv + 1); perror("exec"); _exit(127); }
    int st; struct rusage ru;
    if (wait4(p, &st, 0, &ru) != p) { perror("wait4"); return 2; }
    unsigned long long t1 = now();
    fprintf(stderr, "LAUNCH %llu %llu %ld %ld %d\n", t0, t1, ru.ru_minflt, ru.ru_majflt,
            WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    return 0;
}
