/* A listening TCP socket: cryo capture must refuse it, naming the fd. */
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
int main(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 1)) return 1;
    printf("READY %d\n", getpid());
    fflush(stdout);
    for (;;) pause();
}
