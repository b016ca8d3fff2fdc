/* Threads created and exiting all the time, for capture under churn.
 *
 *   threads ROUNDS [socket]
 *   threads main-exits   (its main thread calls pthread_exit; another
 *                         thread pauses for ever)
 *
 * Each round starts four threads: two that sum a range and are joined,
 * one detached that adds into a shared total and exits, one that hands a
 * value through a mutex and condition variable and is joined. The
 * result does not depend on timing: after ROUNDS rounds (and every
 * detached thread done) it prints "DONE <checksum> <total>" and exits 0.
 * "READY <pid>" first. With "socket" it also holds a datagram socket
 * pair with a message queued with credentials (SO_PASSCRED, which cryo
 * refuses: they would come back as the restorer's; a refused capture
 * must leave every thread running). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static atomic_ulong total;
static atomic_ulong detached_done;
static pthread_mutex_t mx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static uint64_t handed;
static int handed_full;

static void *summer(void *a) {
    uint64_t n = (uint64_t)(uintptr_t)a, s = 0;
    for (uint64_t i = 0; i < 2000; i++) s += (i * n) ^ (s >> 3);
    return (void *)(uintptr_t)s;
}

static void *detached(void *a) {
    atomic_fetch_add(&total, (uint64_t)(uintptr_t)a);
    atomic_fetch_add(&detached_done, 1);
    return NULL;
}

static void *handoff(void *a) {
    pthread_mutex_lock(&mx);
    while (handed_full) pthread_cond_wait(&cv, &mx);
    handed = (uint64_t)(uintptr_t)a * 7;
    handed_full = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mx);
    return NULL;
}

static void *forever(void *a) {
    (void)a;
    for (;;) pause();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: threads ROUNDS [socket] | threads main-exits\n");
        return 2;
    }
    if (!strcmp(argv[1], "main-exits")) {
        /* The main thread ends (pthread_exit) while another runs on. */
        pthread_t t;
        printf("READY %d\n", getpid());
        fflush(stdout);
        if (pthread_create(&t, NULL, forever, NULL)) return 1;
        pthread_exit(NULL);
    }
    long rounds = atol(argv[1]);
    int sv[2];
    int on = 1;
    if (argc > 2 && !strcmp(argv[2], "socket") &&
        (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) || setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof on) ||
         send(sv[0], "c", 1, 0) != 1))
        return 3;
    printf("READY %d\n", getpid());
    fflush(stdout);
    uint64_t sum = 0;
    pthread_attr_t det;
    pthread_attr_init(&det);
    pthread_attr_setdetachstate(&det, PTHREAD_CREATE_DETACHED);
    for (long r = 0; r < rounds; r++) {
        pthread_t a, b, h, d;
        if (pthread_create(&a, NULL, summer, (void *)(uintptr_t)(r + 1)) ||
            pthread_create(&b, NULL, summer, (void *)(uintptr_t)(r + 2)) ||
            pthread_create(&h, NULL, handoff, (void *)(uintptr_t)r) ||
            pthread_create(&d, &det, detached, (void *)(uintptr_t)r)) {
            fprintf(stderr, "FAIL pthread_create in round %ld\n", r);
            return 1;
        }
        void *ra, *rb;
        pthread_join(a, &ra);
        pthread_join(b, &rb);
        pthread_mutex_lock(&mx);
        while (!handed_full) pthread_cond_wait(&cv, &mx);
        sum = sum * 31 + (uint64_t)(uintptr_t)ra + (uint64_t)(uintptr_t)rb + handed;
        handed_full = 0;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mx);
        pthread_join(h, NULL);
    }
    while (atomic_load(&detached_done) < (unsigned long)rounds) usleep(100);
    printf("DONE %llu %llu\n", (unsigned long long)sum, (unsigned long long)atomic_load(&total));
    return 0;
}
