/* Interleaved timing of commands, for A/B benchmarks: runs each command
 * once per round, in a new random order each round, N rounds, and prints
 * each one's median with p25-p75 (ms, wall clock from posix_spawn to
 * waitpid). stdin and stdout are /dev/null. With --answer: to the
 * program's first answer instead, the "at=<ns>" stamp (CLOCK_MONOTONIC)
 * it prints, as the cryo-bench programs of `cryo compare` do (stdout is
 * then a pipe read to its end).
 *
 *   cc -O2 -o ab scripts/ab.c
 *   ab [--answer] N 'cmd a ...' 'cmd b ...' ...      (words split on spaces) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
extern char **environ;
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
/* The "at=<ns>" stamp in what the program wrote to `fd`, in ms; -1 if none. */
static double answer_at(int fd) {
    char buf[4096];
    size_t got = 0;
    ssize_t r;
    while ((r = read(fd, buf + got, sizeof buf - 1 - got)) > 0) got += (size_t)r;
    buf[got] = 0;
    char *at = strstr(buf, "at=");
    return at ? strtod(at + 3, NULL) / 1e6 : -1;
}
int main(int argc, char **argv) {
    int answer = argc > 1 && !strcmp(argv[1], "--answer");
    argv += answer;
    argc -= answer;
    if (argc < 3) {
        fprintf(stderr, "usage: ab [--answer] N CMD...\n");
        return 2;
    }
    int n = atoi(argv[1]), k = argc - 2;
    double *t = malloc(sizeof(double) * n * k);
    /* Each round runs the commands in a new random order: run in a fixed
     * order, the same command measured 0.1-0.2 ms apart by its place
     * (docs/pitfalls.md, "A/B timing"). */
    int *order = malloc(sizeof(int) * k);
    srand(1);
    for (int i = 0; i < n; i++)
        for (int r = 0; r < k; r++) {
            if (r == 0) {
                for (int a = 0; a < k; a++) order[a] = a;
                for (int a = k - 1; a > 0; a--) {
                    int b = rand() % (a + 1), x = order[a];
                    order[a] = order[b];
                    order[b] = x;
                }
            }
            int j = order[r];
            char *cmd[64], *s = strdup(argv[2 + j]);
            int c = 0;
            for (char *p = strtok(s, " "); p && c < 63; p = strtok(NULL, " ")) cmd[c++] = p;
            cmd[c] = NULL;
            int out[2] = {-1, -1};
            posix_spawn_file_actions_t fa;
            posix_spawn_file_actions_init(&fa);
            posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
            if (answer) {
                if (pipe(out)) return 1;
                posix_spawn_file_actions_adddup2(&fa, out[1], 1);
                posix_spawn_file_actions_addclose(&fa, out[0]);
            } else {
                posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
            }
            double a = now();
            pid_t p;
            int st;
            if (posix_spawn(&p, cmd[0], &fa, NULL, cmd, environ)) return 1;
            double end = -1;
            if (answer) {
                close(out[1]);
                end = answer_at(out[0]);
                close(out[0]);
                if (end < 0) {
                    fprintf(stderr, "no at= stamp from %s\n", argv[2 + j]);
                    return 1;
                }
            }
            if (waitpid(p, &st, 0) < 0) return 1;
            t[j * n + i] = (answer ? end : now()) - a;
            posix_spawn_file_actions_destroy(&fa);
            free(s);
        }
    for (int j = 0; j < k; j++) {
        qsort(t + j * n, n, sizeof(double), cmp);
        printf("%-60s median %.3f p25 %.3f p75 %.3f\n", argv[2 + j], t[j * n + n / 2], t[j * n + n / 4],
               t[j * n + 3 * n / 4]);
    }
    return 0;
}
