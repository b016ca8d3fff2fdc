/* The smallest interesting restore target: "tiny stop" stops itself after
 * start-up (the capture point), then prints one line and exits; "tiny run"
 * does the same without stopping (the cold-start baseline). */
#include <signal.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    static char table[4096];
    for (int i = 0; i < 4096; i++) table[i] = (char)(i * 7);
    if (argc > 1 && !strcmp(argv[1], "stop")) raise(SIGSTOP);
    unsigned s = 0;
    for (int i = 0; i < 4096; i++) s += (unsigned char)table[i];
    printf("tiny %u\n", s);
    return 0;
}
