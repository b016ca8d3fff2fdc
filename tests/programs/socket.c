/* TCP over loopback.
 *
 *   socket self   a connection to itself, beside the listener it came
 *                 through (fds 3, 4, 5; the listener with SO_REUSEADDR),
 *                 bytes waiting each way; after a
 *                 line on stdin both ends must have their addresses and
 *                 bytes, the listener must take a new connection: PASS.
 *   socket PORT   connected to 127.0.0.1:PORT (another process): cryo
 *                 capture must refuse it, naming it, and leave it running.
 */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(const char *what) {
    printf("FAIL %s\n", what);
    return 1;
}

static int expect(int fd, const char *want) {
    char buf[64];
    size_t n = strlen(want);
    ssize_t got = recv(fd, buf, sizeof buf, 0);
    return got == (ssize_t)n && !memcmp(buf, want, n);
}

static int same(struct sockaddr_in *a, struct sockaddr_in *b) {
    return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
}

int main(int argc, char **argv) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (argc > 1 && strcmp(argv[1], "self")) {
        a.sin_port = htons(atoi(argv[1]));
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c != 3 || connect(c, (struct sockaddr *)&a, sizeof a)) return 1;
        printf("READY %d\n", getpid());
        fflush(stdout);
        for (;;) pause();
    }
    int s = socket(AF_INET, SOCK_STREAM, 0), on = 1;
    /* As servers do: a restarted (or restored) one binds its port at once
     * beside the connections of the last run, closed and in TIME_WAIT. */
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (s != 3 || bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 1)) return 1;
    if (getsockname(s, (struct sockaddr *)&a, &len)) return 1;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c != 4 || connect(c, (struct sockaddr *)&a, sizeof a)) return 1;
    if (accept(s, NULL, NULL) != 5) return 1;
    struct sockaddr_in mine, peer;
    len = sizeof mine;
    getsockname(4, (struct sockaddr *)&mine, &len);
    if (send(4, "to 5", 4, 0) != 4 || send(5, "to 4", 4, 0) != 4) return 1;
    printf("READY %d\n", getpid());
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return fail("stdin");
    struct sockaddr_in x;
    len = sizeof x;
    if (getsockname(4, (struct sockaddr *)&x, &len) || !same(&x, &mine)) return fail("4's address");
    if (getpeername(4, (struct sockaddr *)&x, &len) || !same(&x, &a)) return fail("4's peer");
    if (getsockname(5, (struct sockaddr *)&x, &len) || !same(&x, &a)) return fail("5's address");
    if (getpeername(5, (struct sockaddr *)&peer, &len) || !same(&peer, &mine)) return fail("5's peer");
    if (!expect(5, "to 5") || !expect(4, "to 4")) return fail("the bytes");
    if (send(4, "more", 4, 0) != 4 || !expect(5, "more")) return fail("after");
    int n = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(n, (struct sockaddr *)&a, sizeof a) || accept(3, NULL, NULL) < 0) return fail("a new connection");
    printf("PASS\n");
    return 0;
}
