/* A second thread: cryo capture must refuse it, naming the reason. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
static void *idle(void *a) { (void)a; for (;;) pause(); return NULL; }
int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, idle, NULL);
    printf("READY %d\n", getpid());
    fflush(stdout);
    for (;;) pause();
}
