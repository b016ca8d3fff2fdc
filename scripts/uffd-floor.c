// The floor of a userfaultfd fault's service time on this machine, for
// scripts/bench-lazy.py: a thread answers a program's faults one page at
// a time with UFFDIO_COPY and nothing else, and times each answer from
// the moment it has read the fault to the end of the copy (the same span
// cryo's page server reports as fault_service_ns).
//
//   hot:       the source page is an already mapped buffer
//   populated: the source is the page of a file mapping (page cache),
//              mapped first with MADV_POPULATE_READ, as cryo's server does
//
//   uffd-floor WORKDIR   -> {"hot_us": M, "populated_us": M, "faults": N}
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

#define PG 4096UL
#define N 2000

static int uffd;
static int populated;
static char *area, *file_map, *hot;
static uint64_t took[N];

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void *server(void *unused) {
    (void)unused;
    for (int i = 0; i < N; i++) {
        struct pollfd p = {uffd, POLLIN, 0};
        if (poll(&p, 1, 10000) != 1)
            die("poll");
        struct uffd_msg m;
        if (read(uffd, &m, sizeof m) != sizeof m || m.event != UFFD_EVENT_PAGEFAULT)
            die("read");
        uint64_t t0 = now_ns();
        uint64_t dst = m.arg.pagefault.address & ~(PG - 1);
        char *src = hot;
        if (populated) {
            src = file_map + (dst - (uint64_t)area);
            madvise(src, PG, MADV_POPULATE_READ);
        }
        struct uffdio_copy c = {.dst = dst, .src = (uint64_t)src, .len = PG, .mode = 0};
        if (ioctl(uffd, UFFDIO_COPY, &c) != 0)
            die("UFFDIO_COPY");
        took[i] = now_ns() - t0;
    }
    return NULL;
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double run(int use_file) {
    populated = use_file;
    area = mmap(NULL, N * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED)
        die("mmap");
    struct uffdio_register r = {
        .range = {(uint64_t)area, N * PG}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(uffd, UFFDIO_REGISTER, &r) != 0)
        die("UFFDIO_REGISTER");
    pthread_t th;
    pthread_create(&th, NULL, server, NULL);
    volatile char sink = 0;
    for (int i = 0; i < N; i++)
        sink += area[i * PG];
    pthread_join(th, NULL);
    munmap(area, N * PG);
    qsort(took, N, sizeof took[0], cmp);
    return took[N / 2] / 1e3;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: uffd-floor WORKDIR\n");
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/uffd-floor.data", argv[1]);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        die(path);
    hot = aligned_alloc(PG, PG);
    memset(hot, 0x5a, PG);
    for (int i = 0; i < N; i++)
        if (write(fd, hot, PG) != (ssize_t)PG)
            die("write");
    file_map = mmap(NULL, N * PG, PROT_READ, MAP_PRIVATE, fd, 0);
    if (file_map == MAP_FAILED)
        die("mmap file");
    uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
    if (uffd < 0)
        die("userfaultfd");
    struct uffdio_api api = {.api = UFFD_API};
    if (ioctl(uffd, UFFDIO_API, &api) != 0)
        die("UFFDIO_API");
    double h = run(0);
    double p = run(1);
    unlink(path);
    printf("{\"hot_us\": %.3f, \"populated_us\": %.3f, \"faults\": %d}\n", h, p, N);
    return 0;
}
