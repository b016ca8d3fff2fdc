// What a copy-on-write write fault costs on a private mapping of a file
// already in the page cache, against MADV_POPULATE_WRITE of the same
// pages (issue 14: would populating a restored program's "write set"
// ahead of time pay?).
//
//   cc -O2 -o /tmp/cow-fault-cost scripts/cow-fault-cost.c
//   head -c 8M /dev/urandom > /tmp/cow.bin && cat /tmp/cow.bin > /dev/null
//   /tmp/cow-fault-cost /tmp/cow.bin 100 1   # 100 pages, adjacent
//   /tmp/cow-fault-cost /tmp/cow.bin 100 4   # 100 pages, every 4th
//
// Each of 5 rounds maps the file afresh three times: writes one byte per
// page (a fault each), populates page by page then writes (no faults),
// and populates the whole range in one call.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s FILE PAGES STRIDE\n", argv[0]);
		return 2;
	}
	int fd = open(argv[1], O_RDONLY);
	int n = atoi(argv[2]), stride = atoi(argv[3]);
	size_t len = (size_t)n * stride * 4096;
	if (fd < 0 || n <= 0 || stride <= 0 || lseek(fd, 0, SEEK_END) < (off_t)len) {
		fprintf(stderr, "need a readable FILE of at least PAGES*STRIDE pages\n");
		return 2;
	}
	for (int round = 0; round < 5; round++) {
		char *p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		double t0 = now_us();
		for (int i = 0; i < n; i++)
			p[(size_t)i * stride * 4096] = 1;
		double t1 = now_us();
		munmap(p, len);
		p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		double t2 = now_us();
		for (int i = 0; i < n; i++)
			madvise(p + (size_t)i * stride * 4096, 4096, MADV_POPULATE_WRITE);
		double t3 = now_us();
		for (int i = 0; i < n; i++)
			p[(size_t)i * stride * 4096] = 1;
		double t4 = now_us();
		munmap(p, len);
		p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		double t5 = now_us();
		madvise(p, len, MADV_POPULATE_WRITE);
		double t6 = now_us();
		munmap(p, len);
		printf("faults %.1f us (%.2f/page)  populate each %.1f us (%.2f/page) + writes %.1f  populate the range %.1f us\n",
		       t1 - t0, (t1 - t0) / n, t3 - t2, (t3 - t2) / n, t4 - t3, t6 - t5);
	}
	return 0;
}
