/* An established TCP connection (to itself, over loopback), beside the
 * listener it came through: cryo capture must refuse both ends (fds 4 and
 * 5), naming each with its addresses, and leave the process running. */
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
int main(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (s != 3 || bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 1)) return 1;
    if (getsockname(s, (struct sockaddr *)&a, &len)) return 1;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c != 4 || connect(c, (struct sockaddr *)&a, sizeof a)) return 1;
    if (accept(s, NULL, NULL) != 5) return 1;
    printf("READY %d\n", getpid());
    fflush(stdout);
    for (;;) pause();
}
