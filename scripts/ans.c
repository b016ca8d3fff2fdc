/* Interleaved timing of commands to their first answer, for A/B
 * benchmarks: runs each command once per round, N rounds, and prints each
 * one's median with p25-p75 (ms from posix_spawn to the "at=<ns>" stamp
 * the program prints, CLOCK_MONOTONIC: the cryo-bench programs of `cryo
 * compare` print it). stdin is /dev/null.
 *
 *   cc -O2 -o ans scripts/ans.c; ./ans N 'cmd a ...' 'cmd b ...'   (words split on spaces) */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/wait.h>
extern char **environ;
static int cmp(const void *a, const void *b) { double x = *(double *)a, y = *(double *)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
    int n = atoi(argv[1]), m = argc - 2;
    double *t = calloc((size_t)n * m, sizeof *t);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) {
            int p[2]; pipe(p);
            posix_spawn_file_actions_t fa; posix_spawn_file_actions_init(&fa);
            posix_spawn_file_actions_adddup2(&fa, p[1], 1);
            posix_spawn_file_actions_addclose(&fa, p[0]);
            posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
            char cmdl[4096]; snprintf(cmdl, sizeof cmdl, "%s", argv[2 + j]); char *av[32]; int k = 0; for (char *tok = strtok(cmdl, " "); tok && k < 31; tok = strtok(NULL, " ")) av[k++] = tok; av[k] = NULL;
            struct timespec s; clock_gettime(CLOCK_MONOTONIC, &s);
            pid_t pid; if (posix_spawn(&pid, av[0], &fa, NULL, av, environ)) { perror("spawn"); return 1; }
            close(p[1]);
            char buf[4096]; size_t got = 0; ssize_t r;
            while ((r = read(p[0], buf + got, sizeof buf - 1 - got)) > 0) got += r;
            buf[got] = 0; close(p[0]);
            int st; waitpid(pid, &st, 0);
            char *a = strstr(buf, "at=");
            if (!a) { fprintf(stderr, "no stamp from %s: %s\n", argv[2 + j], buf); return 1; }
            double at = strtod(a + 3, NULL);
            t[j * n + i] = (at - (s.tv_sec * 1e9 + s.tv_nsec)) / 1e6;
        }
    for (int j = 0; j < m; j++) {
        qsort(t + j * n, n, sizeof *t, cmp);
        printf("%-40s median %.3f p25 %.3f p75 %.3f ms\n", argv[2 + j], t[j * n + n / 2], t[j * n + n / 4], t[j * n + 3 * n / 4]);
    }
}
