/* lazy MODE MIB [PCT]: a program for lazy-restore tests and benchmarks.
 *
 * Fills a heap of MIB MiB (its own anonymous mapping, plus a few small
 * mallocs) with a per-word pattern, prints READY and stops itself. When
 * continued (after a restore) it prints RESUMED <CLOCK_MONOTONIC ns> and
 * then, by MODE:
 *   check     read every word; PASS <sum>
 *   touch     read PCT % of the pages, spread evenly; PASS <sum> and
 *             TOUCHED <pages> <ns spent touching>. PCT may be @FILE: the
 *             percentage is read from FILE after the restore (so one
 *             image serves every percentage of a benchmark)
 *   dontneed  MADV_DONTNEED a range nobody touched since the restore and
 *             expect zeros there, the image's data elsewhere
 *   droptop   after 1 ms, MADV_DONTNEED the top quarter of the heap 64 KiB
 *             at a time from its top down (where the page server's second
 *             streamer begins), wait 20 ms, read it back as zeros; then
 *             the rest holds the image's data
 *   fork      fork at once; the child checks every word and exits 0/1;
 *             the parent waits, then checks too
 *   remap     munmap one range, move another with mremap (MAYMOVE|FIXED),
 *             grow a third in place; expect the data to follow, zeros in
 *             the grown part, and the unmapped range gone
 *   slow      touch one page every 2 ms (for killing the page server)
 *   stride    walks with a fixed stride (which the page server follows,
 *             copying ahead): one word every 16 pages up the first half,
 *             dropping (MADV_DONTNEED) a stretch ahead of the walk
 *             midway, which must then read zeros; every 3 pages down the
 *             second half; then every word (zeros where dropped)
 *   dense     a second mapping (a quarter of the heap) of which only every
 *             third page was written before the capture: one page without
 *             data read first in each block of 16 pages (the page server
 *             zeroes such pages around it), then every page checked (data
 *             or zeros) and the empty ones written; then every word of the
 *             heap read up to its middle (the server copies ahead of a
 *             dense walk), dropping a stretch ahead of the walk early on,
 *             which must read zeros; then every word down from the top
 *   threads   eight threads wait at a barrier across the capture; after
 *             it six read every word at once, in the same order (faults
 *             on the same pages at the same time), one drops and moves
 *             parts of a second mapping meanwhile (REMOVE and REMAP
 *             events while the others fault) and one exits at once
 * Exit status 0 on PASS, 1 on FAIL. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096ul
static uint64_t pat(size_t i) { return (i * 0x9e3779b97f4a7c15ull) ^ 0x5555aaaa5555aaaaull ^ (i >> 7); }

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
}

static int fail(const char *what, size_t at) {
    printf("FAIL %s at word %zu\n", what, at);
    return 1;
}

/* Check words [a, b) of h against the pattern; return the sum or fail. */
static int check(const uint64_t *h, size_t a, size_t b, uint64_t *sum) {
    for (size_t i = a; i < b; i++) {
        if (h[i] != pat(i)) return fail("data", i);
        *sum += h[i];
    }
    return 0;
}

/* threads mode */
#define NTH 8
static const uint64_t *TH;
static size_t TWORDS;
static uint64_t *T2;
static size_t T2N;
static pthread_barrier_t tbar;
static uint64_t tsum[NTH];
static int tfail[NTH];

static void *tworker(void *a) {
    int i = (int)(intptr_t)a;
    pthread_barrier_wait(&tbar);
    if (i == NTH - 2) return NULL; /* exits at once */
    if (i == NTH - 1) {
        /* Drop the first half of T2 (never touched since the restore),
         * move its third quarter, while the others fault on TH. */
        size_t w2 = T2N / 8, half = T2N / 2;
        if (madvise(T2, half, MADV_DONTNEED)) { tfail[i] = 1; return NULL; }
        for (size_t k = 0; k < half / 8; k++)
            if (T2[k] != 0) { tfail[i] = 2; return NULL; }
        char *dst = mmap(NULL, T2N / 4, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (dst == MAP_FAILED) { tfail[i] = 3; return NULL; }
        uint64_t *m = mremap((char *)T2 + half, T2N / 4, T2N / 4, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
        if (m != (uint64_t *)dst) { tfail[i] = 4; return NULL; }
        for (size_t k = 0; k < w2 / 4; k++)
            if (m[k] != ~pat(w2 / 2 + k)) { tfail[i] = 5; return NULL; }
        for (size_t k = w2 * 3 / 4; k < w2; k++)
            if (T2[k] != ~pat(k)) { tfail[i] = 6; return NULL; }
        return NULL;
    }
    uint64_t s = 0;
    for (size_t k = 0; k < TWORDS; k++) {
        if (TH[k] != pat(k)) { tfail[i] = 7; return NULL; }
        s += TH[k];
    }
    tsum[i] = s;
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "check";
    size_t mib = argc > 2 ? strtoull(argv[2], NULL, 10) : 16;
    double pct = argc > 3 ? atof(argv[3]) : 100;
    size_t n = mib << 20, words = n / 8, pages = n / PAGE;
    uint64_t *h = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (h == MAP_FAILED) return 2;
    for (size_t i = 0; i < words; i++) h[i] = pat(i);
    char *small[64];
    for (int i = 0; i < 64; i++) {
        small[i] = malloc(100 + i * 37);
        memset(small[i], 'a' + i % 26, 100 + i * 37);
    }
    /* dense mode: every third page of G written, the rest never. */
    size_t gn = n / 4, gpages = gn / PAGE, gpw = PAGE / 8;
    uint64_t *g = mmap(NULL, gn, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g == MAP_FAILED) return 2;
    if (!strcmp(mode, "dense"))
        for (size_t pg = 0; pg < gpages; pg += 3)
            for (size_t k = 0; k < gpw; k++) g[pg * gpw + k] = ~pat(pg * gpw + k);
    pthread_t th[NTH];
    if (!strcmp(mode, "threads")) {
        TH = h;
        TWORDS = words;
        T2N = 4 << 20;
        T2 = mmap(NULL, T2N, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (T2 == MAP_FAILED) return 2;
        for (size_t k = 0; k < T2N / 8; k++) T2[k] = ~pat(k);
        pthread_barrier_init(&tbar, NULL, NTH + 1);
        for (int i = 0; i < NTH; i++)
            if (pthread_create(&th[i], NULL, tworker, (void *)(intptr_t)i)) return 2;
        usleep(50000);
    }
    printf("READY %d\n", getpid());
    fflush(stdout);
    raise(SIGSTOP);
    printf("RESUMED %llu\n", (unsigned long long)now_ns());
    fflush(stdout);
    for (int i = 0; i < 64; i++)
        for (int k = 0; k < 100 + i * 37; k++)
            if (small[i][k] != 'a' + i % 26) return fail("malloc data", i);
    uint64_t sum = 0;
    if (!strcmp(mode, "check")) {
        if (check(h, 0, words, &sum)) return 1;
    } else if (!strcmp(mode, "touch")) {
        if (argc > 3 && argv[3][0] == '@') {
            FILE *f = fopen(argv[3] + 1, "r");
            if (!f || fscanf(f, "%lf", &pct) != 1) return fail("reading PCT file", 0);
            fclose(f);
        }
        size_t want = (size_t)(pages * pct / 100.0);
        if (want < 1) want = 1;
        double step = (double)pages / want;
        uint64_t t0 = now_ns();
        for (size_t k = 0; k < want; k++) {
            size_t pg = (size_t)(k * step);
            size_t w = pg * (PAGE / 8);
            if (h[w] != pat(w)) return fail("data", w);
            sum += h[w];
        }
        printf("TOUCHED %zu %llu\n", want, (unsigned long long)(now_ns() - t0));
    } else if (!strcmp(mode, "dontneed")) {
        /* Drop the middle half without touching it first, and one page
         * that was touched. */
        size_t a = words / 4, b = words / 4 * 3;
        if (h[b + 5] != pat(b + 5)) return fail("data before drop", b + 5);
        if (madvise((char *)h + a * 8, (b - a) * 8, MADV_DONTNEED)) return fail("madvise", 0);
        if (madvise((char *)h + (b + 5) * 8 / PAGE * PAGE, PAGE, MADV_DONTNEED)) return fail("madvise", 1);
        for (size_t i = a; i < b; i++)
            if (h[i] != 0) return fail("dropped page not zero", i);
        size_t z0 = (b + 5) * 8 / PAGE * PAGE / 8;
        for (size_t i = z0; i < z0 + PAGE / 8; i++)
            if (h[i] != 0) return fail("dropped touched page not zero", i);
        if (check(h, 0, a, &sum) || check(h, z0 + PAGE / 8, words, &sum)) return 1;
        /* Writing to the dropped range works and reads back. */
        h[a] = 42;
        if (h[a] != 42) return fail("write after drop", a);
    } else if (!strcmp(mode, "droptop")) {
        size_t q = words / 4 * 3, step = 65536 / 8;
        usleep(1000); /* the streamer is in the quarter: some drops behind it, some ahead */
        for (size_t e = words; e > q; e -= step)
            if (madvise((char *)h + (e - step) * 8, step * 8, MADV_DONTNEED)) return fail("madvise", e);
        usleep(20000);
        for (size_t i = q; i < words; i++)
            if (h[i] != 0) return fail("dropped page not zero", i);
        if (check(h, 0, q, &sum)) return 1;
    } else if (!strcmp(mode, "fork")) {
        pid_t c = fork();
        if (c < 0) return fail("fork", 0);
        if (c == 0) {
            uint64_t s = 0;
            _exit(check(h, 0, words, &s) ? 1 : 0);
        }
        int st;
        if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return fail("child", 0);
        if (check(h, 0, words, &sum)) return 1;
    } else if (!strcmp(mode, "remap")) {
        /* Quarters: [0] unmap, [1] move elsewhere, [2] shrink by a page
         * then grow back in place (the page comes back as zeros), [3] keep. */
        size_t q = n / 4, qw = words / 4;
        char *base = (char *)h;
        if (munmap(base, q)) return fail("munmap", 0);
        char *dst = mmap(NULL, q + PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (dst == MAP_FAILED) return fail("mmap", 0);
        void *moved = mremap(base + q, q, q, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
        if (moved != dst) return fail("mremap move", 0);
        const uint64_t *m = (const uint64_t *)moved;
        for (size_t i = 0; i < qw; i++) {
            if (m[i] != pat(qw + i)) return fail("moved data", i);
            sum += m[i];
        }
        char *third = base + 2 * q;
        if (mremap(third, q, q - PAGE, 0) != third) return fail("mremap shrink", 0);
        if (mremap(third, q - PAGE, q, 0) != third) return fail("mremap grow", 0);
        const uint64_t *t = (const uint64_t *)third;
        if (check(t - 2 * qw, 2 * qw, 3 * qw - PAGE / 8, &sum)) return 1;
        for (size_t i = qw - PAGE / 8; i < qw; i++)
            if (t[i] != 0) return fail("regrown page not zero", i);
        if (check(h, 3 * qw, words, &sum)) return 1;
    } else if (!strcmp(mode, "threads")) {
        pthread_barrier_wait(&tbar);
        for (int i = 0; i < NTH; i++) pthread_join(th[i], NULL);
        for (int i = 0; i < NTH; i++)
            if (tfail[i]) return fail("thread", (size_t)(i * 100 + tfail[i]));
        for (int i = 1; i < NTH - 2; i++)
            if (tsum[i] != tsum[0]) return fail("thread sums differ", (size_t)i);
        sum = tsum[0];
    } else if (!strcmp(mode, "stride")) {
        size_t pw = PAGE / 8, half = pages / 2;
        size_t d0 = 70 * 16, d1 = 100 * 16; /* dropped pages [d0, d1) */
        for (size_t pg = 0; pg < half; pg += 16) {
            if (pg == 60 * 16 && madvise((char *)h + d0 * PAGE, (d1 - d0) * PAGE, MADV_DONTNEED))
                return fail("madvise", 0);
            size_t w = pg * pw + 5;
            uint64_t want = pg >= d0 && pg < d1 ? 0 : pat(w);
            if (h[w] != want) return fail("walk up", w);
            sum += h[w];
        }
        for (size_t pg = pages - 1; pg >= half; pg -= 3) {
            size_t w = pg * pw + 7;
            if (h[w] != pat(w)) return fail("walk down", w);
            sum += h[w];
        }
        for (size_t i = 0; i < words; i++) {
            uint64_t want = i >= d0 * pw && i < d1 * pw ? 0 : pat(i);
            if (h[i] != want) return fail("data after the walks", i);
            sum += h[i];
        }
    } else if (!strcmp(mode, "dense")) {
        for (size_t pg = 1; pg < gpages; pg += 16) {
            size_t e = pg % 3 == 0 ? pg + 1 : pg; /* a page without data */
            if (g[e * gpw + 3] != 0) return fail("empty page not zero", e * gpw + 3);
        }
        for (size_t pg = 0; pg < gpages; pg++)
            for (size_t k = 0; k < gpw; k++) {
                size_t w = pg * gpw + k;
                if (g[w] != (pg % 3 == 0 ? ~pat(w) : 0)) return fail("sparse mapping", w);
            }
        for (size_t pg = 1; pg < gpages; pg += 3) {
            g[pg * gpw] = pg;
            if (g[pg * gpw] != pg) return fail("write to an empty page", pg * gpw);
        }
        size_t d0 = words * 3 / 16, d1 = words / 4; /* dropped words [d0, d1) */
        for (size_t i = 0; i < words / 2; i++) {
            if (i == words / 8 && madvise((char *)h + d0 * 8, (d1 - d0) * 8, MADV_DONTNEED))
                return fail("madvise", 0);
            uint64_t want = i >= d0 && i < d1 ? 0 : pat(i);
            if (h[i] != want) return fail("dense walk up", i);
            sum += h[i];
        }
        for (size_t i = words; i-- > words / 2;) {
            if (h[i] != pat(i)) return fail("dense walk down", i);
            sum += h[i];
        }
    } else if (!strcmp(mode, "slow")) {
        for (size_t pg = 0; pg < pages; pg++) {
            size_t w = pg * (PAGE / 8);
            if (h[w] != pat(w)) return fail("data", w);
            sum += h[w];
            usleep(2000);
        }
    } else {
        printf("FAIL unknown mode %s\n", mode);
        return 1;
    }
    printf("PASS %016llx\n", (unsigned long long)sum);
    return 0;
}
