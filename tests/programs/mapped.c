/* mapped MODE: memory for `cryo restore --map` to get right.
 *
 * Fills three kinds of private anonymous memory with a pattern (generation
 * 1): 2 MiB of small malloc'd blocks (the brk heap), a 24 MiB malloc'd block
 * (glibc mmaps it) and a 4 MiB anonymous mapping with holes: a run of
 * pages never touched and a run of pages written with zeros. Prints READY
 * PID and stops itself; captured there. When continued (restored), prints
 * MAPS N (how many /proc/self/maps lines name a pages.img) and, by MODE:
 *
 *  check  the pattern everywhere, zeros in the holes; MADV_DONTNEED of a
 *         part of the mapping with holes, then DONTNEED captured|zero|mixed
 *         (what it reads back); the big block grown to 256 MiB by realloc
 *         (glibc moves it with mremap), its bytes kept and the new part
 *         written whole, then REALLOC kept; every page rewritten
 *         (generation 2) and read back; a forked child sees generation 2,
 *         writes generation 3 and exits; the parent still sees 2. PASS.
 *  again  rewrites the first half of every region (generation 2) and stops
 *         itself again (to be captured again); when continued: the first
 *         halves hold 2, the second halves (never touched since the restore)
 *         still 1, the holes zeros. PASS.
 *  clone  reads a number V from stdin, writes V into every page, prints
 *         WROTE V, reads one more line, checks every page still holds V
 *         (other clones of the same image wrote their own). PASS.
 *
 * Exits 1 with FAIL <what> on the first difference. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG 4096ul
#define SMALL 512        /* blocks of 4 KiB on the brk heap */
#define BIG (24ul << 20) /* one malloc'd block (mmap'd by glibc) */
#define HOLEY (4ul << 20)
#define HOLE_AT (1ul << 20) /* 256 KiB never touched */
#define HOLE_LEN (256ul << 10)
#define ZERO_AT (2ul << 20) /* 256 KiB written with zeros */

static uint64_t *small[SMALL];
static uint64_t *big;
static uint64_t *holey;

static uint64_t pat(int region, size_t word, uint64_t gen) {
    return (((word + 1) * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)region << 56) ^ (gen << 48)) | 1;
}

static int in_hole(size_t byte) {
    return (byte >= HOLE_AT && byte < HOLE_AT + HOLE_LEN) ||
           (byte >= ZERO_AT && byte < ZERO_AT + HOLE_LEN);
}

/* Apply f to every word of every region, region by region; a region's
 * words [from, to) as a fraction of it (in halves: 0..2). */
typedef int (*word_fn)(uint64_t *w, int region, size_t i, uint64_t gen);

static int each(word_fn f, uint64_t gen, int from_half, int to_half) {
    for (int b = 0; b < SMALL; b++) {
        size_t n = 4096 / 8;
        for (size_t i = from_half * n / 2; i < to_half * n / 2; i++)
            if (f(&small[b][i], 1000 + b, i, gen)) return 1;
    }
    size_t n = BIG / 8;
    for (size_t i = from_half * n / 2; i < to_half * n / 2; i++)
        if (f(&big[i], 2, i, gen)) return 1;
    n = HOLEY / 8;
    for (size_t i = from_half * n / 2; i < to_half * n / 2; i++)
        if (!in_hole(i * 8) && f(&holey[i], 3, i, gen)) return 1;
    return 0;
}

static int put(uint64_t *w, int r, size_t i, uint64_t g) { *w = pat(r, i, g); return 0; }

static int is(uint64_t *w, int r, size_t i, uint64_t g) {
    if (*w == pat(r, i, g)) return 0;
    printf("FAIL region %d word %zu: %016llx, want generation %llu\n", r, i,
           (unsigned long long)*w, (unsigned long long)g);
    return 1;
}

static uint64_t clone_value;
static int put_v(uint64_t *w, int r, size_t i, uint64_t g) {
    (void)r; (void)g;
    *w = clone_value ^ i;
    return 0;
}
static int is_v(uint64_t *w, int r, size_t i, uint64_t g) {
    (void)g;
    if (*w == (clone_value ^ i)) return 0;
    printf("FAIL region %d word %zu: %016llx, not this clone's\n", r, i, (unsigned long long)*w);
    return 1;
}

static int holes_zero(void) {
    for (size_t b = 0; b < HOLEY; b += 8)
        if (in_hole(b) && holey[b / 8]) {
            printf("FAIL hole byte %zu is not zero\n", b);
            return 1;
        }
    return 0;
}

static int maps_naming_pages(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "/pages.img")) n++;
    if (f) fclose(f);
    return n;
}

#define CHECK(x) do { if (x) return 1; } while (0)

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "check";
    for (int b = 0; b < SMALL; b++) small[b] = malloc(4096);
    big = malloc(BIG);
    /* A second block glibc mmaps, right below the first: one VMA, the big
     * block's start inside it (where a mapped restore maps pages.img). */
    char *low = malloc(1ul << 20);
    if (low) memset(low, 0x33, 1ul << 20);
    holey = mmap(NULL, HOLEY, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!big || holey == MAP_FAILED) return 2;
    each(put, 1, 0, 2);
    memset((char *)holey + ZERO_AT, 0, HOLE_LEN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("READY %d\n", getpid());
    raise(SIGSTOP);
    printf("MAPS %d\n", maps_naming_pages());
    CHECK(holes_zero());
    if (!strcmp(mode, "check")) {
        CHECK(each(is, 1, 0, 2));
        /* What MADV_DONTNEED gives back: zeros from anonymous memory, the
         * captured bytes from a mapping of pages.img (past the mapping's
         * first page, which a mapped restore always copies). */
        size_t len = 512ul << 10, zero = 0, captured = 0, at = 64ul << 10;
        if (madvise((char *)holey + at, len, MADV_DONTNEED)) return 3;
        for (size_t i = at / 8; i < (at + len) / 8; i++) {
            if (holey[i] == 0) zero++;
            else if (holey[i] == pat(3, i, 1)) captured++;
        }
        printf("DONTNEED %s\n", zero == len / 8 ? "zero" : captured == len / 8 ? "captured" : "mixed");
        for (size_t i = at / 8; i < (at + len) / 8; i++) holey[i] = pat(3, i, 1);
        /* glibc grows a block it mmapped with mremap: on a mapping of
         * pages.img the new part would be pages.img's next bytes, and past
         * its end SIGBUS. */
        size_t grown = 256ul << 20;
        uint64_t *g = realloc(big, grown);
        if (!g) return 3;
        big = g;
        CHECK(each(is, 1, 0, 2));
        memset((char *)big + BIG, 0x5a, grown - BIG);
        big = realloc(big, BIG);
        printf("REALLOC kept\n");
        each(put, 2, 0, 2);
        CHECK(each(is, 2, 0, 2));
        pid_t c = fork();
        if (c == 0) {
            if (each(is, 2, 0, 2)) _exit(1);
            each(put, 3, 0, 2);
            _exit(each(is, 3, 0, 2));
        }
        int st;
        if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st)) {
            printf("FAIL child %x\n", st);
            return 1;
        }
        CHECK(each(is, 2, 0, 2));
        CHECK(holes_zero());
    } else if (!strcmp(mode, "again")) {
        /* The second halves are not touched until the second restore. */
        CHECK(each(is, 1, 0, 1));
        each(put, 2, 0, 1);
        raise(SIGSTOP);
        printf("MAPS %d\n", maps_naming_pages());
        CHECK(each(is, 2, 0, 1));
        CHECK(each(is, 1, 1, 2));
        CHECK(holes_zero());
    } else if (!strcmp(mode, "clone")) {
        char line[64];
        if (!fgets(line, sizeof line, stdin)) return 4;
        clone_value = strtoull(line, NULL, 10) * 0x100000001b3ull;
        each(put_v, 0, 0, 2);
        printf("WROTE %s", line);
        if (!fgets(line, sizeof line, stdin)) return 4;
        CHECK(each(is_v, 0, 0, 2));
        CHECK(holes_zero());
    } else {
        return 2;
    }
    printf("PASS %s\n", mode);
    return 0;
}
