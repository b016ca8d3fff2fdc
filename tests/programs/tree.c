/* A process tree that checks itself across a capture and restore.
 *
 * `tree family`: the root forks
 *   - two children that end at once: one exits 7, one is killed by
 *     SIGTERM (zombies at capture: the root waits for them after);
 *   - a child A that makes its own process group, holds the read end of
 *     a pipe the root filled before the capture (bytes in flight), and
 *     forks a grandchild B, which stores A's PID (getppid) and, once told
 *     to go, signals it;
 *   - a child S that makes its own session;
 *   - a child T, stopped (SIGSTOP) before the capture.
 * READY is printed once all of that is in place; the root then reads one
 * byte of stdin (the capture is taken while it waits), and tells everyone
 * to go: A must get B's signal, read the root's bytes and send them back,
 * both A and B must get a signal sent to A's process group, S must still
 * lead its session, T must still be stopped until continued; every exit
 * status must be the one expected. PASS on
 * stdout, exit 0; any mismatch: FAIL and exit 1.
 *
 * `tree prefork`: a pre-fork server. The root listens on a unix socket
 * (path from argv[2]) and on TCP 127.0.0.1 (port printed), forks two
 * workers that accept on both and answer each line with
 * "worker N pid P: LINE", then waits for a line on stdin ("quit") and ends
 * the workers. PASS served once they exit cleanly.
 *
 * `tree pty`: a program running another under a pseudo-terminal, like
 * script(1). The root holds the master (window 33x101); a child C makes
 * its own session with the slave as its controlling terminal, sets
 * termios of its own (no echo, a custom erase character), forks a
 * grandchild G in a process group of its own and gives G the
 * foreground. Before the capture, C writes a line that the root does not
 * read yet, and the root types a line and a half that C does not read
 * yet. After it, the root must read C's line exactly (CR LF, as output
 * processing made it), then types the rest of the line.
 * The foreground group G must read both lines exactly and find the
 * termios and window as they were; C must still lead the terminal's
 * session, with G's group in the foreground. PASS pty.
 *
 * `tree seccomp`: the root forks a child that enters seccomp strict mode
 * (only read, write, exit and sigreturn allowed: any other system call
 * kills it) and waits for a byte on a pipe. After a capture (or a
 * restore) the root checks /proc says the child is still in strict mode
 * and sends the byte; the child answers, then makes one system call
 * strict mode forbids (getpid), which must kill it (SIGKILL): it was
 * strict to the end. PASS seccomp.
 *
 * `tree diverge`: a root with a 16 MiB heap (its own mapping) and a few
 * pages on the brk heap forks children that share both copy-on-write,
 * and then each changes its own copy differently before the capture:
 *   - child 0 writes its own bytes over the heap's second MiB, unmaps the
 *     heap's last MiB, makes one page read-only, maps 1 MiB of its own;
 *   - child 1 drops the heap's third MiB (MADV_DONTNEED: zeros), grows
 *     the brk heap by 256 KiB of its own bytes, enters /tmp, opens a file
 *     at fd 40 and closes its copy of the go pipe's write end;
 *   - child 2 changes nothing but forks a grandchild that writes one page.
 * READY once all of that is in place; the root then reads a line of
 * stdin (the capture is taken while it waits). After it, the root at once
 * sends each child SIGUSR1 (a child forked late by a restore must not
 * miss it), and lets them go: each checks every byte of its own memory,
 * the mappings' bounds and protection, its fds and working directory and
 * that it got the signal, and says so. The root then prints which pages
 * it still shares with the children (/proc/PID/pagemap: the same
 * physical page; needs CAP_SYS_ADMIN) as `SHARED a b c of n`, reads one more
 * line, ends them and prints PASS diverge.
 *
 * `tree fdshare`: the root maps a file it made with O_TMPFILE (unlinked)
 * shared, then clones a child A that shares its fd table (CLONE_FILES)
 * and forks a child B that does not. A opens /dev/null at fd 60 before
 * B is forked (so B has its own copy of it). READY once that is in
 * place; the root then reads a line of stdin (the capture is taken while
 * it waits). After it the root checks with kcmp that A shares its fd
 * table and B does not, puts a pipe at fds 70 and 71 and tells A to go:
 * A must find 70 and 71 (the root's, in the table they share), write
 * through 71, close 60, and find the unlinked file's mapping as it was
 * and write its own bytes there. The root must then read A's bytes on
 * 70, find 60 closed and A's bytes in the mapping; B must still have its
 * own 60 and no 70. The root also finds no fd in the table it shares
 * that it did not have before the capture. PASS fdshare.
 *
 * `tree fdshare deep`: the same, and A has children of its own: A1,
 * cloned with CLONE_FILES (the root's table too), which clones A1a so
 * too, and A2, forked (a table of its own, with A's 60). Each keeps its
 * own bytes in private memory and its parent's PID from before the
 * capture. After it the root checks with kcmp that A1 and A1a share its
 * table and A2 does not; once A is done, each finds its parent and its
 * bytes as they were, A1 and A1a write through the root's fd 71 (which
 * the root put there after the restore), A2 still has 60 (closed by A in
 * the shared table) and no 70; every parent reaps its children.
 *
 * `tree vfork`: see vforked().
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static void fail(const char *what) {
  printf("FAIL %s (errno %d)\n", what, errno);
  fflush(stdout);
  _exit(1);
}

static volatile sig_atomic_t got_usr1, got_usr2;
static void on_usr1(int s) { (void)s; got_usr1++; }
static void on_usr2(int s) { (void)s; got_usr2++; }

static const char MSG[] = "bytes the root wrote before the capture";

/* Wait (without reaping) until `pid` has exited. */
static void wait_dead(pid_t pid) {
  siginfo_t si;
  if (waitid(P_PID, pid, &si, WEXITED | WNOWAIT) < 0) fail("waitid");
}

static void read_full(int fd, void *buf, size_t n, const char *what) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char *)buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) fail(what);
    got += r;
  }
}

static int family(void) {
  int go[2], back[2], data[2], ready[2];
  if (pipe(go) || pipe(back) || pipe(data) || pipe(ready)) fail("pipe");
  struct sigaction sa = {0};
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  sa.sa_handler = on_usr2;
  sigaction(SIGUSR2, &sa, NULL);
  /* Blocked but in sigsuspend: no signal is missed between a check and
   * the wait. */
  sigset_t usr, none;
  sigemptyset(&usr);
  sigaddset(&usr, SIGUSR1);
  sigaddset(&usr, SIGUSR2);
  sigprocmask(SIG_BLOCK, &usr, NULL);
  sigemptyset(&none);

  pid_t z1 = fork();
  if (z1 == 0) _exit(7);
  pid_t z2 = fork();
  if (z2 == 0) {
    raise(SIGTERM);
    _exit(99);
  }

  pid_t a = fork();
  if (a == 0) {
    /* A: its own process group, the read end of `data`. */
    if (setpgid(0, 0)) fail("setpgid");
    close(data[1]);
    close(back[0]);
    close(go[1]);
    pid_t b = fork();
    if (b == 0) {
      /* B: remembers its parent, signals it on the word. */
      pid_t parent = getppid();
      close(ready[0]);
      char c;
      write(ready[1], "b", 1);
      read_full(go[0], &c, 1, "B reading go");
      if (getppid() != parent) fail("B's parent changed");
      if (getpgid(0) != parent) fail("B left A's process group");
      if (kill(parent, SIGUSR1)) fail("B signalling A");
      /* Wait for the group signal too. */
      while (!got_usr2) sigsuspend(&none);
      _exit(0);
    }
    close(ready[0]);
    close(ready[1]);
    char c;
    read_full(go[0], &c, 1, "A reading go");
    while (!got_usr1 || !got_usr2) sigsuspend(&none);
    char buf[sizeof MSG];
    read_full(data[0], buf, sizeof MSG, "A reading the root's bytes");
    if (memcmp(buf, MSG, sizeof MSG)) fail("A read other bytes");
    write(back[1], buf, sizeof MSG);
    int st;
    if (waitpid(b, &st, 0) != b || !WIFEXITED(st) || WEXITSTATUS(st)) fail("B's status");
    _exit(0);
  }

  pid_t s = fork();
  if (s == 0) {
    if (setsid() < 0) fail("setsid");
    close(ready[0]);
    char c;
    write(ready[1], "s", 1);
    read_full(go[0], &c, 1, "S reading go");
    if (getsid(0) != getpid()) fail("S no longer leads its session");
    _exit(3);
  }

  /* T: stopped by job control before the capture; it must still be
   * stopped after the restore, until the root continues it. */
  pid_t t = fork();
  if (t == 0) {
    raise(SIGSTOP);
    _exit(5);
  }
  int tst;
  if (waitpid(t, &tst, WUNTRACED) != t || !WIFSTOPPED(tst)) fail("T did not stop");

  close(data[0]);
  close(back[1]);
  close(go[0]);
  close(ready[1]);
  if (write(data[1], MSG, sizeof MSG) != sizeof MSG) fail("writing data");
  char c2[2];
  read_full(ready[0], c2, 2, "waiting for B and S");
  wait_dead(z1);
  wait_dead(z2);
  /* A's group exists (A made it before B was forked). */
  printf("READY %d\n", getpid());
  fflush(stdout);

  char c;
  if (read(0, &c, 1) != 1) fail("reading stdin");
  if (write(go[1], "ggg", 3) != 3) fail("writing go");
  if (kill(-a, SIGUSR2)) fail("signalling A's group");

  int st;
  if (waitpid(z1, &st, 0) != z1 || !WIFEXITED(st) || WEXITSTATUS(st) != 7) fail("z1 status");
  if (waitpid(z2, &st, 0) != z2 || !WIFSIGNALED(st) || WTERMSIG(st) != SIGTERM) fail("z2 status");
  char buf[sizeof MSG];
  read_full(back[0], buf, sizeof MSG, "reading A's reply");
  if (memcmp(buf, MSG, sizeof MSG)) fail("A sent other bytes");
  if (waitpid(a, &st, 0) != a || !WIFEXITED(st) || WEXITSTATUS(st)) fail("A's status");
  if (waitpid(s, &st, 0) != s || !WIFEXITED(st) || WEXITSTATUS(st) != 3) fail("S's status");
  /* A restored T is stopped again by its restore, which may still be
   * under way when the others run (docs/pitfalls.md): it must be stopped
   * within a few seconds, and never exit before it is continued. */
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", t);
  int stopped = 0;
  for (int i = 0; i < 1000 && !stopped; i++) {
    char statbuf[256] = {0};
    FILE *f = fopen(path, "r");
    if (!f || !fgets(statbuf, sizeof statbuf, f)) fail("reading T's state");
    fclose(f);
    char *rp = strrchr(statbuf, ')');
    if (rp && rp[2] == 'Z') fail("T ended before it was continued");
    stopped = rp && rp[2] == 'T';
    if (!stopped) usleep(10000);
  }
  if (!stopped) fail("T is no longer stopped");
  if (kill(t, SIGCONT)) fail("continuing T");
  if (waitpid(t, &st, 0) != t || !WIFEXITED(st) || WEXITSTATUS(st) != 5) fail("T's status");
  printf("PASS tree\n");
  return 0;
}

static void serve(int idx, int ux, int tcp) {
  struct pollfd p[2] = {{ux, POLLIN, 0}, {tcp, POLLIN, 0}};
  for (;;) {
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      fail("poll");
    }
    for (int i = 0; i < 2; i++) {
      if (!(p[i].revents & POLLIN)) continue;
      int c = accept(p[i].fd, NULL, NULL);
      if (c < 0) continue; /* the other worker took it */
      char line[256];
      ssize_t n = read(c, line, sizeof line - 1);
      if (n > 0) {
        line[n] = 0;
        line[strcspn(line, "\r\n")] = 0;
        char out[400];
        int m = snprintf(out, sizeof out, "worker %d pid %d: %s\n", idx, getpid(), line);
        write(c, out, m);
      }
      close(c);
    }
  }
}

static int prefork(const char *path) {
  int ux = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
  struct sockaddr_un su = {.sun_family = AF_UNIX};
  snprintf(su.sun_path, sizeof su.sun_path, "%s", path);
  unlink(path);
  if (bind(ux, (struct sockaddr *)&su, sizeof su) || listen(ux, 16)) fail("unix listen");
  int tcp = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in si = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(tcp, (struct sockaddr *)&si, sizeof si) || listen(tcp, 16)) fail("tcp listen");
  socklen_t len = sizeof si;
  getsockname(tcp, (struct sockaddr *)&si, &len);
  pid_t w[2];
  for (int i = 0; i < 2; i++) {
    w[i] = fork();
    if (w[i] == 0) serve(i, ux, tcp);
  }
  close(ux);
  close(tcp);
  printf("READY %d\nPORT %d\n", getpid(), ntohs(si.sin_port));
  fflush(stdout);
  char line[64];
  if (!fgets(line, sizeof line, stdin)) fail("reading stdin");
  for (int i = 0; i < 2; i++) kill(w[i], SIGTERM);
  for (int i = 0; i < 2; i++) {
    int st;
    if (waitpid(w[i], &st, 0) != w[i] || !WIFSIGNALED(st) || WTERMSIG(st) != SIGTERM)
      fail("worker status");
  }
  printf("PASS served\n");
  return 0;
}

/* `tree cow MIB [KIDS]`: a heap filled before KIDS (default 3) children
 * are forked, all blocked until a line on stdin; then every process checks its whole heap, the
 * root prints CHECKED once all have, and after one more line on stdin the
 * children exit and the root prints PASS. */
static int cow(int mib, int nk) {
  size_t n = (size_t)mib << 20;
  unsigned char *h = malloc(n);
  for (size_t i = 0; i < n; i++) h[i] = (unsigned char)(i * 7);
  /* go and end on pipes of their own: a child fast enough to read again
   * on one pipe would take another child's go byte as its end. */
  int go[2], done[2], end[2];
  if (pipe(go) || pipe(done) || pipe(end)) fail("pipe");
  pid_t *kids = calloc(nk, sizeof *kids);
  char *bytes = malloc(nk);
  if (!kids || !bytes) fail("calloc");
  for (int k = 0; k < nk; k++) {
    kids[k] = fork();
    if (kids[k] < 0) fail("fork");
    if (kids[k] == 0) {
      char c;
      close(go[1]);
      close(done[0]);
      close(end[1]);
      read_full(go[0], &c, 1, "child reading go");
      for (size_t i = 0; i < n; i++)
        if (h[i] != (unsigned char)(i * 7)) _exit(3);
      if (write(done[1], "k", 1) != 1) _exit(4);
      read_full(end[0], &c, 1, "child reading end");
      _exit(0);
    }
  }
  close(go[0]);
  close(done[1]);
  close(end[0]);
  printf("READY %d\n", getpid());
  char line[16];
  if (!fgets(line, sizeof line, stdin)) fail("reading stdin");
  memset(bytes, 'g', nk);
  if (write(go[1], bytes, nk) != nk) fail("go");
  for (size_t i = 0; i < n; i++)
    if (h[i] != (unsigned char)(i * 7)) fail("heap");
  read_full(done[0], bytes, nk, "children checked");
  printf("CHECKED\n");
  if (!fgets(line, sizeof line, stdin)) fail("reading stdin");
  memset(bytes, 'e', nk);
  if (write(end[1], bytes, nk) != nk) fail("end");
  for (int k = 0; k < nk; k++) {
    int st;
    if (waitpid(kids[k], &st, 0) != kids[k] || !WIFEXITED(st) || WEXITSTATUS(st)) fail("child");
  }
  printf("PASS cow\n");
  return 0;
}

#define DV_MIB 16
static unsigned char dv_pat(size_t i) { return (unsigned char)(i * 13 + 5); }

/* 1 if [p, p+n) is mapped (and its protection in /proc/self/maps is
 * `perm`, if given), 0 if not mapped at all. */
static int dv_mapped(void *p, size_t n, const char *perm) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) fail("maps");
  unsigned long a = (unsigned long)p, e = a + n, s, t;
  char pr[8], line[512];
  int hit = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "%lx-%lx %7s", &s, &t, pr) == 3 && s < e && t > a) {
      if (s <= a && t >= e && (!perm || !strncmp(pr, perm, 4))) hit = 1;
      else hit = -1;
    }
  fclose(f);
  return hit;
}

/* The physical page of `pid`'s page at `p` (0 if not present). */
static unsigned long long dv_pfn(pid_t pid, void *p) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/pagemap", pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0) fail("pagemap");
  unsigned long long e = 0;
  if (pread(fd, &e, 8, ((unsigned long)p / 4096) * 8) != 8) fail("pagemap read");
  close(fd);
  return (e >> 63) ? (e & ((1ULL << 55) - 1)) : 0;
}

static int diverge(void) {
  size_t n = (size_t)DV_MIB << 20, mib = 1 << 20;
  unsigned char *h = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (h == MAP_FAILED) fail("mmap heap");
  for (size_t i = 0; i < n; i++) h[i] = dv_pat(i);
  unsigned char *small = sbrk(0);
  if (sbrk(3 * 4096) == (void *)-1) fail("sbrk");
  memset(small, 0x5a, 3 * 4096);
  signal(SIGUSR1, on_usr1);
  int go[2], done[2], end[2], ready[2];
  if (pipe(go) || pipe(done) || pipe(end) || pipe(ready)) fail("pipe");
  pid_t kids[3];
  for (int k = 0; k < 3; k++) {
    kids[k] = fork();
    if (kids[k]) continue;
    char c;
    unsigned char *own = NULL, *grown = NULL;
    pid_t grand = 0;
    close(done[0]);
    close(end[1]);
    close(ready[0]);
    if (k == 0) {
      memset(h + mib, 0xc0, mib);
      if (munmap(h + n - mib, mib)) _exit(10);
      if (mprotect(h + 5 * mib, 4096, PROT_READ)) _exit(11);
      /* Away from the heap (a hint): next to it, the kernel would give it
       * the unmapped last MiB, or merge it with the heap. */
      own = mmap((void *)0x200000000000UL, mib, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (own == MAP_FAILED) _exit(12);
      for (size_t i = 0; i < mib; i++) own[i] = (unsigned char)(i ^ 0x3c);
    } else if (k == 1) {
      if (madvise(h + 2 * mib, mib, MADV_DONTNEED)) _exit(13);
      grown = sbrk(0);
      if (sbrk(256 << 10) == (void *)-1) _exit(14);
      for (size_t i = 0; i < (256 << 10); i++) grown[i] = (unsigned char)(i * 3 + 1);
      if (chdir("/tmp")) _exit(15);
      int f = open("/proc/self/exe", O_RDONLY);
      if (f < 0 || dup2(f, 40) != 40) _exit(16);
      close(f);
      close(go[1]);
    } else {
      grand = fork();
      if (grand == 0) {
        memset(h + 7 * mib, 0x77, 4096);
        if (write(ready[1], "r", 1) != 1) _exit(20);
        read_full(go[0], &c, 1, "grandchild reading go");
        for (size_t i = 0; i < n; i++) {
          unsigned char want = (i >= 7 * mib && i < 7 * mib + 4096) ? 0x77 : dv_pat(i);
          if (h[i] != want) _exit(21);
        }
        if (write(done[1], "g", 1) != 1) _exit(22);
        read_full(end[0], &c, 1, "grandchild reading end");
        _exit(0);
      }
    }
    if (write(ready[1], "r", 1) != 1) _exit(17);
    read_full(go[0], &c, 1, "child reading go");
    /* Every byte of the heap as this child left it. */
    for (size_t i = 0; i < n; i++) {
      if (k == 0 && i >= n - mib) break;
      unsigned char want = dv_pat(i);
      if (k == 0 && i >= mib && i < 2 * mib) want = 0xc0;
      if (k == 1 && i >= 2 * mib && i < 3 * mib) want = 0;
      if (h[i] != want) _exit(30);
    }
    for (size_t i = 0; i < 3 * 4096; i++)
      if (small[i] != 0x5a) _exit(31);
    if (k == 0) {
      if (dv_mapped(h + n - mib, mib, NULL) != 0) _exit(32);
      if (dv_mapped(h + 5 * mib, 4096, "r--p") != 1) _exit(33);
      if (dv_mapped(h + 4 * mib, mib, "rw-p") != 1) _exit(34);
      for (size_t i = 0; i < mib; i++)
        if (own[i] != (unsigned char)(i ^ 0x3c)) _exit(35);
    }
    if (k == 1) {
      for (size_t i = 0; i < (256 << 10); i++)
        if (grown[i] != (unsigned char)(i * 3 + 1)) _exit(36);
      char cwd[64];
      if (!getcwd(cwd, sizeof cwd) || strcmp(cwd, "/tmp")) _exit(37);
      char a[4], b[4] = {0x7f, 'E', 'L', 'F'};
      if (pread(40, a, 4, 0) != 4 || memcmp(a, b, 4)) _exit(38);
      if (fcntl(go[1], F_GETFD) != -1 || errno != EBADF) _exit(39);
    }
    if (!got_usr1) _exit(40);
    if (write(done[1], "k", 1) != 1) _exit(41);
    read_full(end[0], &c, 1, "child reading end");
    if (grand) {
      int st;
      if (waitpid(grand, &st, 0) != grand || !WIFEXITED(st) || WEXITSTATUS(st)) _exit(42);
    }
    _exit(0);
  }
  close(go[0]);
  close(done[1]);
  close(end[0]);
  close(ready[1]);
  char rs[4];
  read_full(ready[0], rs, 4, "children ready");
  printf("READY %d\n", getpid());
  char line[16];
  if (!fgets(line, sizeof line, stdin)) fail("reading stdin");
  for (int k = 0; k < 3; k++)
    if (kill(kids[k], SIGUSR1)) fail("kill");
  if (write(go[1], "gggg", 4) != 4) fail("go");
  for (size_t i = 0; i < n; i++)
    if (h[i] != dv_pat(i)) fail("heap");
  char ks[4];
  read_full(done[0], ks, 4, "children checked");
  /* Pages of the heap's untouched part this root shares with children
   * 0 and 2 (child 1's first MiB, too). */
  int shared[3] = {0, 0, 0}, pages = 0;
  for (size_t off = 8 * mib; off < 12 * mib; off += 4096, pages++)
    for (int k = 0; k < 3; k++) {
      unsigned long long mine = dv_pfn(getpid(), h + off);
      if (mine && mine == dv_pfn(kids[k], h + off)) shared[k]++;
    }
  printf("SHARED %d %d %d of %d\n", shared[0], shared[1], shared[2], pages);
  printf("CHECKED\n");
  if (!fgets(line, sizeof line, stdin)) fail("reading stdin");
  if (write(end[1], "eeee", 4) != 4) fail("end");
  for (int k = 0; k < 3; k++) {
    int st;
    if (waitpid(kids[k], &st, 0) != kids[k]) fail("waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st)) {
      printf("FAIL child %d status %#x\n", k, st);
      return 1;
    }
  }
  printf("PASS diverge\n");
  return 0;
}

static const char EARLY_OUT[] = "C wrote this before the capture\n";
static const char EARLY_IN[] = "line one\nhalf";

static void expect_read(int fd, const char *want, const char *what) {
  size_t n = strlen(want);
  char buf[256];
  read_full(fd, buf, n, what);
  if (memcmp(buf, want, n)) {
    buf[n] = 0;
    printf("FAIL %s: read [%s]\n", what, buf);
    fflush(stdout);
    _exit(1);
  }
}

static int pty(void) {
  int m = posix_openpt(O_RDWR | O_NOCTTY);
  if (m < 0 || grantpt(m) || unlockpt(m)) fail("posix_openpt");
  struct winsize ws = {.ws_row = 33, .ws_col = 101};
  if (ioctl(m, TIOCSWINSZ, &ws)) fail("TIOCSWINSZ");
  const char *name = ptsname(m);
  int go[2], ready[2];
  if (pipe(go) || pipe(ready)) fail("pipe");
  pid_t c = fork();
  if (c == 0) {
    close(m);
    close(go[1]);
    close(ready[0]);
    if (setsid() < 0) fail("setsid");
    /* A session leader without a terminal that opens one takes it. */
    int s = open(name, O_RDWR);
    if (s < 0) fail("opening the slave");
    struct termios t;
    if (tcgetattr(s, &t)) fail("tcgetattr");
    t.c_lflag &= ~(ECHO | ECHOE | ECHOK);
    t.c_cc[VERASE] = 0x08;
    if (tcsetattr(s, TCSANOW, &t)) fail("tcsetattr");
    int gp[2];
    if (pipe(gp)) fail("pipe");
    pid_t g = fork();
    if (g == 0) {
      /* G reads: the foreground group does (C's own group, whose parent
       * is in another session, is orphaned: its reads fail). */
      char x;
      setpgid(0, 0);
      close(gp[1]);
      read_full(gp[0], &x, 1, "G waiting for the foreground");
      read_full(go[0], &x, 1, "G reading go");
      if (tcgetpgrp(s) != getpgrp()) fail("G is not in the foreground");
      if (tcgetsid(s) != getsid(0)) fail("G's terminal is not its session's");
      /* Canonical mode: one line per read. */
      char line[128];
      ssize_t n = read(s, line, sizeof line);
      if (n != 9 || memcmp(line, "line one\n", 9)) fail("G's first line");
      n = read(s, line, sizeof line);
      if (n != 10 || memcmp(line, "half more\n", 10)) fail("G's second line");
      struct termios now;
      if (tcgetattr(s, &now)) fail("tcgetattr after");
      if ((now.c_lflag & (ECHO | ICANON)) != ICANON || now.c_cc[VERASE] != 0x08 ||
          !(now.c_oflag & ONLCR))
        fail("the termios changed");
      struct winsize w2;
      if (ioctl(s, TIOCGWINSZ, &w2) || w2.ws_row != 33 || w2.ws_col != 101) fail("window size");
      if (write(s, "G ok\n", 5) != 5) fail("writing G ok");
      _exit(0);
    }
    setpgid(g, g);
    if (tcsetpgrp(s, g)) fail("tcsetpgrp");
    if (write(gp[1], "f", 1) != 1) fail("telling G");
    if (write(s, EARLY_OUT, sizeof EARLY_OUT - 1) != sizeof EARLY_OUT - 1) fail("writing early");
    if (write(ready[1], "c", 1) != 1) fail("ready");
    char x;
    read_full(go[0], &x, 1, "C reading go");
    if (tcgetsid(s) != getpid()) fail("C no longer leads its terminal's session");
    if (tcgetpgrp(s) != g) fail("the foreground is no longer G's group");
    int st;
    if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st)) fail("G's status");
    if (write(s, "C ok\n", 5) != 5) fail("writing C ok");
    _exit(0);
  }
  close(go[0]);
  close(ready[1]);
  char x;
  read_full(ready[0], &x, 1, "waiting for C");
  if (write(m, EARLY_IN, sizeof EARLY_IN - 1) != sizeof EARLY_IN - 1) fail("typing early");
  printf("READY %d\n", getpid());
  fflush(stdout);
  if (read(0, &x, 1) != 1) fail("reading stdin");
  expect_read(m, "C wrote this before the capture\r\n", "the root reading C's early line");
  if (write(m, " more\n", 6) != 6) fail("typing the rest");
  if (write(go[1], "gg", 2) != 2) fail("go");
  expect_read(m, "G ok\r\nC ok\r\n", "the root reading G's and C's ok");
  int st;
  if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st)) fail("C's status");
  printf("PASS pty\n");
  return 0;
}

static int strict(void) {
  int go[2], back[2];
  if (pipe(go) || pipe(back)) fail("pipe");
  pid_t c = fork();
  if (c < 0) fail("fork");
  if (c == 0) {
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0) fail("PR_SET_SECCOMP");
    char x;
    if (write(back[1], "s", 1) != 1 || read(go[0], &x, 1) != 1 || write(back[1], &x, 1) != 1)
      syscall(SYS_exit, 3);
    syscall(SYS_getpid);
    syscall(SYS_exit, 0);
  }
  char x;
  read_full(back[0], &x, 1, "waiting for the child to enter strict mode");
  printf("READY %d\n", getpid());
  if (read(0, &x, 1) != 1) fail("reading stdin");
  /* (After a restore the child enters strict mode as its shim's last
   * act, which may come a moment after this process resumes.) */
  char path[64], status[4096];
  snprintf(path, sizeof path, "/proc/%d/status", (int)c);
  for (int tries = 0;; tries++) {
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(status, 1, sizeof status - 1, f) : 0;
    if (f) fclose(f);
    status[n] = 0;
    if (strstr(status, "\nSeccomp:\t1\n")) break;
    if (tries == 5000) fail("the child is not in strict mode");
    usleep(1000);
  }
  if (write(go[1], "g", 1) != 1) fail("writing to the child (it is gone)");
  read_full(back[0], &x, 1, "the child's answer");
  int st;
  if (waitpid(c, &st, 0) != c) fail("waitpid");
  if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL || x != 'g') {
    printf("FAIL the child's status %#x\n", st);
    return 1;
  }
  printf("PASS seccomp\n");
  return 0;
}

static int is_open(int fd) { return fcntl(fd, F_GETFD) >= 0; }

/* Each process's own bytes (private memory, `tree fdshare deep`). */
static char mine[32];

/* A child of A in `tree fdshare deep` (see above): says its name on
 * `done` before the capture; after it, once `go` has a byte for it, checks its
 * parent and bytes, writes `msg` (8 bytes) through fd 71 if it shares
 * the root's table or checks its own 60 and no 70 if not, and reaps
 * `child` (if any). Exits 0 when all is as it should be. */
static void deep_child(const char *name, int done, int go, const char *msg, pid_t child) {
  pid_t up = getppid();
  snprintf(mine, sizeof mine, "%s's own", name);
  if (write(done, name, 1) != 1) _exit(30);
  char c;
  read_full(go, &c, 1, "a child of A reading go");
  if (getppid() != up) _exit(31);
  char want[32];
  snprintf(want, sizeof want, "%s's own", name);
  if (strcmp(mine, want)) _exit(32);
  if (msg) {
    if (!is_open(71) || write(71, msg, 8) != 8) _exit(33);
  } else if (!is_open(60) || is_open(70)) {
    _exit(34);
  }
  int st;
  if (child > 0 && (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st)))
    _exit(35);
  _exit(0);
}

static int fdshare(int deep) {
  static const char DATA[] = "bytes of an unlinked file, mapped shared";
  int tf = open("/tmp", O_TMPFILE | O_RDWR, 0600);
  if (tf < 0) fail("O_TMPFILE");
  if (ftruncate(tf, 4096) || pwrite(tf, DATA, sizeof DATA, 0) != (ssize_t)sizeof DATA)
    fail("filling the unlinked file");
  char *map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, tf, 0);
  if (map == MAP_FAILED) fail("mmap");
  int go_a[2], go_b[2], done[2], go_deep[2], kids_ready[2];
  if (pipe(go_a) || pipe(go_b) || pipe(done) || pipe(go_deep) || pipe(kids_ready)) fail("pipe");
  /* (A's children's PIDs, for the root: in the shared mapping.) */
  pid_t *kids = (pid_t *)(map + 2048);
  /* (A raw clone without a stack: a fork that shares the fd table.) */
  pid_t a = syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, 0, 0, 0);
  if (a < 0) fail("clone");
  if (a == 0) {
    char c;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (dup2(open("/dev/null", O_RDONLY), 60) != 60) _exit(10);
    if (deep) {
      pid_t a1 = syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, 0, 0, 0);
      if (a1 < 0) _exit(18);
      if (a1 == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        pid_t a1a = syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, 0, 0, 0);
        if (a1a < 0) _exit(36);
        if (a1a == 0) {
          prctl(PR_SET_PDEATHSIG, SIGKILL);
          deep_child("Z", kids_ready[1], go_deep[0], "from A1a", 0);
        }
        kids[1] = a1a;
        deep_child("Y", kids_ready[1], go_deep[0], "from A1 ", a1a);
      }
      pid_t a2 = fork();
      if (a2 < 0) _exit(19);
      if (a2 == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        deep_child("X", kids_ready[1], go_deep[0], NULL, 0);
      }
      kids[0] = a1;
      kids[2] = a2;
      snprintf(mine, sizeof mine, "A's own");
      char r[3];
      read_full(kids_ready[0], r, 3, "A's children ready");
    }
    if (write(done[1], "o", 1) != 1) _exit(11);
    read_full(go_a[0], &c, 1, "A reading go");
    if (!is_open(70) || !is_open(71)) _exit(12);
    if (write(71, "from A", 6) != 6) _exit(13);
    if (close(60)) _exit(14);
    if (memcmp(map, DATA, sizeof DATA)) _exit(15);
    memcpy(map + 1000, "A wrote this", 12);
    if (write(done[1], "a", 1) != 1) _exit(16);
    if (deep) {
      if (strcmp(mine, "A's own")) _exit(17);
      for (int i = 0; i < 3; i += 2) {
        int st;
        if (waitpid(kids[i], &st, 0) != kids[i] || !WIFEXITED(st) || WEXITSTATUS(st))
          _exit(40 + i);
      }
    }
    _exit(0);
  }
  char c;
  read_full(done[0], &c, 1, "A opening fd 60");
  if (!is_open(60)) fail("A's fd 60 in the root");
  pid_t b = fork();
  if (b < 0) fail("fork");
  if (b == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* (ends with a root ended early) */
    read_full(go_b[0], &c, 1, "B reading go");
    if (!is_open(60)) _exit(20);
    if (is_open(70)) _exit(21);
    _exit(0);
  }
  /* The table's fds now: after the restore, none may be added (a shim's
   * left in the table the root shares with A and its children). */
  static char before[1024];
  for (int fd = 0; fd < 1024; fd++) before[fd] = is_open(fd);
  printf("READY %d\n", getpid());
  char line[16];
  if (!fgets(line, sizeof line, stdin)) fail("reading stdin");
  /* (A child that lost its end of `done` would leave the root waiting:
   * ended by SIGALRM instead.) */
  alarm(60);
  for (int fd = 0; fd < 1024; fd++)
    if (is_open(fd) && !before[fd]) {
      printf("FAIL fd %d is open after the restore, and was not before\n", fd);
      return 1;
    }
  if (syscall(SYS_kcmp, getpid(), a, 2 /* KCMP_FILES */, 0, 0) != 0)
    fail("A shares the root's fd table no more");
  if (syscall(SYS_kcmp, getpid(), b, 2 /* KCMP_FILES */, 0, 0) == 0)
    fail("B shares the root's fd table");
  if (deep) {
    if (syscall(SYS_kcmp, getpid(), kids[0], 2, 0, 0) != 0)
      fail("A1 shares the root's fd table no more");
    if (syscall(SYS_kcmp, getpid(), kids[1], 2, 0, 0) != 0)
      fail("A1a shares the root's fd table no more");
    if (syscall(SYS_kcmp, getpid(), kids[2], 2, 0, 0) == 0)
      fail("A2 shares the root's fd table");
  }
  int p[2];
  if (pipe(p) || dup2(p[0], 70) != 70 || dup2(p[1], 71) != 71) fail("pipe at 70, 71");
  close(p[0]);
  close(p[1]);
  if (write(go_a[1], "g", 1) != 1) fail("go A");
  read_full(done[0], &c, 1, "A done");
  if (c != 'a') fail("A's answer");
  char got[6];
  read_full(70, got, 6, "A's bytes on fd 70");
  if (memcmp(got, "from A", 6)) fail("A's bytes");
  if (is_open(60)) fail("fd 60, closed by A, in the root");
  if (memcmp(map + 1000, "A wrote this", 12)) fail("A's bytes in the mapping");
  if (deep) {
    /* (A closed 60 in the shared table: A2 keeps its own.) */
    if (write(go_deep[1], "ggg", 3) != 3) fail("go A's children");
    char two[17] = {0};
    read_full(70, two, 16, "A1's and A1a's bytes on fd 70");
    if (strcmp(two, "from A1 from A1a") && strcmp(two, "from A1afrom A1 "))
      fail("A1's and A1a's bytes");
  }
  if (write(go_b[1], "g", 1) != 1) fail("go B");
  int st;
  if (waitpid(a, &st, 0) != a || !WIFEXITED(st) || WEXITSTATUS(st)) {
    printf("FAIL A status %#x\n", st);
    return 1;
  }
  if (waitpid(b, &st, 0) != b || !WIFEXITED(st) || WEXITSTATUS(st)) {
    printf("FAIL B status %#x\n", st);
    return 1;
  }
  printf("PASS fdshare\n");
  return 0;
}

/* `tree vfork`: the root vfork()s a child that says READY (with the
 * root's PID) and sleeps 30 s in the root's memory before it exits:
 * capture must refuse both, at once. */
static int vforked(void) {
  pid_t c = vfork();
  if (c == 0) {
    char line[64];
    int n = snprintf(line, sizeof line, "READY %d\n", (int)getppid());
    if (write(1, line, n) != n) _exit(2);
    struct timespec ts = {30, 0};
    nanosleep(&ts, NULL);
    _exit(0);
  }
  printf("PASS vfork\n");
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc > 1 && !strcmp(argv[1], "vfork")) return vforked();
  if (argc > 2 && !strcmp(argv[1], "cow"))
    return cow(atoi(argv[2]), argc > 3 ? atoi(argv[3]) : 3);
  if (argc > 1 && !strcmp(argv[1], "family")) return family();
  if (argc > 1 && !strcmp(argv[1], "diverge")) return diverge();
  if (argc > 2 && !strcmp(argv[1], "prefork")) return prefork(argv[2]);
  if (argc > 1 && !strcmp(argv[1], "pty")) return pty();
  if (argc > 1 && !strcmp(argv[1], "seccomp")) return strict();
  if (argc > 1 && !strcmp(argv[1], "fdshare"))
    return fdshare(argc > 2 && !strcmp(argv[2], "deep"));
  fprintf(stderr, "usage: tree family | tree prefork SOCKET_PATH | tree pty | tree seccomp | tree fdshare [deep]\n");
  return 2;
}
