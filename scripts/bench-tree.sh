#!/usr/bin/env bash
# Process-tree benchmark (issue 13): a root with a 64 MiB heap forks
# N-1 children (N = 1, 4, 16, 64) that share it copy-on-write. Measured:
# capture time and freeze (cryo capture --json), image size, restore to
# exit (every child restored, reads its whole heap back, checks it and
# exits; the root waits for them), and memory: the processes' summed PSS
# before the capture and after the restore (once every process has read
# its heap again, while they wait; RESTORE_OPTS=--map: mapped). Restores
# are repeated (RUNS, default 5): medians with min-max. Markdown on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
for fd in $(ls /proc/$$/fd); do
    if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
done
cargo build --release -q
out=target/bench-tree
rm -rf "$out" && mkdir -p "$out" && chmod 700 "$out"
cryo=$PWD/target/x86_64-unknown-linux-gnu/release/cryo
runs=${RUNS:-5}
counts=${COUNTS:-1 4 16 64}
mib=${MIB:-64}
# Options for every restore, e.g. RESTORE_OPTS=--map.
restore_opts=${RESTORE_OPTS:-}

cat >"$out/treeheap.c" <<'EOF'
/* treeheap N MIB: a MIB heap filled with a pattern, N-1 children forked
 * after it (sharing it copy-on-write), each blocked reading a pipe. READY
 * once all are forked; then the root reads a line of stdin and tells the
 * children to go: every process sums its heap; the root prints CHECKED
 * once all have (right or not), reads one more line, lets the children
 * exit (0 if their sum was right) and waits for them; PASS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static unsigned long sum(const unsigned long *h, size_t n) {
  unsigned long s = 0;
  for (size_t i = 0; i < n; i++) s += h[i] * (i | 1);
  return s;
}
int main(int argc, char **argv) {
  int n = atoi(argv[1]);
  size_t words = (size_t)atoi(argv[2]) << 17;
  unsigned long *h = malloc(words * sizeof *h);
  for (size_t i = 0; i < words; i++) h[i] = i * 2654435761u;
  unsigned long want = sum(h, words);
  /* go and end on pipes of their own: a child fast enough to read again
   * on one pipe would take another child's go byte as its end. */
  int go[2], done[2], end[2];
  if (pipe(go) || pipe(done) || pipe(end)) return 1;
  pid_t *kids = calloc(n, sizeof *kids);
  for (int i = 1; i < n; i++) {
    kids[i] = fork();
    if (kids[i] == 0) {
      char c;
      close(go[1]);
      close(done[0]);
      close(end[1]);
      if (read(go[0], &c, 1) != 1) _exit(2);
      int ok = sum(h, words) == want;
      if (write(done[1], "d", 1) != 1) _exit(4);
      if (read(end[0], &c, 1) != 1) _exit(2);
      _exit(ok ? 0 : 3);
    }
  }
  close(go[0]);
  close(done[1]);
  close(end[0]);
  printf("READY %d\n", getpid());
  fflush(stdout);
  char line[16];
  if (!fgets(line, sizeof line, stdin)) return 1;
  for (int i = 1; i < n; i++) write(go[1], "g", 1);
  int bad = sum(h, words) != want;
  for (int i = 1; i < n; i++) {
    char c;
    bad |= read(done[0], &c, 1) != 1;
  }
  printf("CHECKED\n");
  fflush(stdout);
  if (!fgets(line, sizeof line, stdin)) return 1;
  for (int i = 1; i < n; i++) write(end[1], "e", 1);
  for (int i = 1; i < n; i++) {
    int st;
    waitpid(kids[i], &st, 0);
    bad |= !WIFEXITED(st) || WEXITSTATUS(st);
  }
  printf(bad ? "FAIL\n" : "PASS\n");
  return bad;
}
EOF
cc -O2 -o "$out/treeheap" "$out/treeheap.c"

tree_of() { # ROOT: ROOT and its descendants
    local pids=$1 all=$1
    while [ -n "$pids" ]; do
        local next=""
        for p in $pids; do
            next="$next $(cat /proc/$p/task/*/children 2>/dev/null)"
        done
        pids=$(echo $next)
        all="$all $pids"
    done
    echo $all
}

pss() { # ROOT: summed PSS (KiB) of ROOT and its descendants
    local all
    all=$(tree_of $1)
    local t=0
    for p in $all; do
        t=$((t + $(awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup 2>/dev/null || echo 0)))
    done
    echo $t
}

wait_gone() { # PIDS...
    for p in "$@"; do
        while [ -e /proc/$p ]; do sleep 0.01; done
    done
}

median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f (%.1f-%.1f)", m, a[1], a[NR]}'; }

echo "restore: cryo restore ${restore_opts:-(eager)}"
echo
echo "| processes | capture ms | frozen ms | image MiB | unique MiB | restore to exit ms | PSS before MiB | PSS after restore MiB |"
echo "|---|---|---|---|---|---|---|---|"
for n in $counts; do
    fifo=$out/in.$n
    rm -f "$fifo"; mkfifo "$fifo"
    "$out/treeheap" "$n" "$mib" <"$fifo" >"$out/out.$n" 2>&1 &
    root=$!
    exec 7>"$fifo"
    until grep -q READY "$out/out.$n" 2>/dev/null; do sleep 0.05; done
    before=$(pss $root)
    img=$out/img.$n
    # Left running (the freeze ends once everything is read), then killed.
    cap=$("$cryo" capture --json "$root" "$img")
    pids=$("$cryo" inspect --json --no-verify "$img" | python3 -c 'import json,sys; print(" ".join(str(p["pid"]) for p in json.load(sys.stdin)["tree"]["processes"]) or "")')
    [ -n "$pids" ] || pids=$root
    kill -9 $pids 2>/dev/null || true
    exec 7>&-
    wait $root 2>/dev/null || true
    capms=$(echo "$cap" | python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["total_ms"])')
    frz=$(echo "$cap" | python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["frozen_ms"])')
    size=$(du -sm "$img" | cut -f1)
    wait_gone $pids
    times=()
    after=0
    for r in $(seq 0 "$runs"); do
        rm -f "$fifo"; mkfifo "$fifo"
        t0=$(date +%s%N)
        "$cryo" restore $restore_opts "$img" <"$fifo" >"$out/rout.$n" 2>&1 &
        rpid=$!
        exec 7>"$fifo"
        echo go >&7
        if [ "$r" = 0 ]; then
            # Not timed: memory once every process has read its whole
            # heap again (CHECKED), while they wait.
            until grep -q CHECKED "$out/rout.$n" 2>/dev/null; do sleep 0.02; done
            after=$(pss $rpid)
        fi
        echo end >&7
        exec 7>&-
        wait $rpid
        t2=$(date +%s%N)
        grep -q PASS "$out/rout.$n" || { echo "restore of $n processes: $(cat "$out/rout.$n")" >&2; exit 1; }
        [ "$r" = 0 ] || times+=($(( (t2 - t0) / 1000 )))
        wait_gone $pids
    done
    rt=$(printf '%s\n' "${times[@]}" | awk '{print $1/1000}' | median)
    echo "| $n | $capms | $frz | $size | $mib | $rt | $((before / 1024)) | $((after / 1024)) |"
done
