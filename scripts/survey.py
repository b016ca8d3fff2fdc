#!/usr/bin/env python3
"""Everyday programs through cryo, as a new user would try them.

Each program builds some state (a table, a map, threads waiting on a
queue), prints READY and waits on stdin. It is captured there (`cryo
capture --kill`) and restored in every mode (eager, --lazy, --map, and
packed with `cryo pack` where it can be: a refusal by name is reported,
not failed); the restored program is given the rest of its input and must print exactly
what an uninterrupted run prints, with the same exit status.

Programs whose interpreter or compiler is not installed are reported
`missing`, not failed. Go, GHC (-threaded, -N2) and Java programs are
compiled into a temporary directory first. Each line gives the restore's
time to exit, the program's own work after it included (one run each: a
hint of where a mode is slow, not a benchmark).

Usage: scripts/survey.py [--cryo PATH] [--modes eager,lazy,map,pack] [NAME ...]
Exit status 0 when every program that ran came back exactly.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

GO = r"""package main

import (
	"bufio"
	"fmt"
	"os"
	"sync"
)

func main() {
	m := map[int]int{}
	for i := 0; i < 100000; i++ {
		m[i] = i * 2
	}
	ch := make(chan int)
	var wg sync.WaitGroup
	sums := make([]int, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for x := range ch {
				sums[w] += m[x]
			}
		}(w)
	}
	fmt.Println("READY")
	l, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	for i := 0; i < 100000; i++ {
		ch <- i
	}
	close(ch)
	wg.Wait()
	t := 0
	for _, s := range sums {
		t += s
	}
	fmt.Println(t, l)
}
"""

HASKELL = r"""import qualified Data.Map.Strict as M
import Control.Concurrent
import Control.Monad
import System.IO
main :: IO ()
main = do
  hSetBuffering stdout LineBuffering
  let m = M.fromList [(i, i * 3) | i <- [1 .. 200000 :: Int]]
  M.size m `seq` putStrLn "READY"
  l <- getLine
  vs <- forM [1 .. 4 :: Int] $ \k -> do
    v <- newEmptyMVar
    _ <- forkIO $ putMVar v $! sum [m M.! i | i <- [k, k + 4 .. 200000]]
    return v
  s <- mapM takeMVar vs
  print (sum s, l)
"""

JAVA = r"""import java.util.*;
import java.io.*;
public class J {
  public static void main(String[] a) throws Exception {
    HashMap<Integer,Integer> m = new HashMap<>();
    for (int i = 0; i < 100000; i++) m.put(i, i * 5);
    System.out.println("READY");
    String l = new BufferedReader(new InputStreamReader(System.in)).readLine();
    long s = m.values().parallelStream().mapToLong(x -> x).sum();
    System.out.println(s + " " + l);
  }
}
"""

PY_THREADS = """
import threading, sys, queue
q = queue.Queue(); out = []
def w():
    while True:
        x = q.get()
        if x is None: break
        out.append(x * x)
ts = [threading.Thread(target=w) for _ in range(4)]
[t.start() for t in ts]
print("READY", flush=True)
sys.stdin.readline()
for i in range(1000): q.put(i)
for _ in ts: q.put(None)
[t.join() for t in ts]
print(sum(out), len(out))
"""

NODE = """
const m = new Map(); for (let i = 0; i < 10000; i++) m.set('k' + i, i);
console.log('READY');
process.stdin.once('data', d => { let s = 0; for (const v of m.values()) s += v;
  console.log(s, d.toString().trim()); process.exit(3); });
"""


def programs(build):
    """name -> (argv, input before READY, input after the restore)."""
    return {
        "bash": (["bash", "-c", 'x=0; for i in $(seq 1 100); do x=$((x+i)); done; echo READY; '
                  'read l; for i in 1 2 3; do echo "$i $x $l"; done'], "", "go\n"),
        "sqlite3": (["sqlite3", "-batch"],
                    "create table t(a); insert into t values (1),(2),(3);\n.print READY\n",
                    "select sum(a), count(*) from t;\n"),
        "python3-threads": (["python3", "-c", PY_THREADS], "", "go\n"),
        "node": (["node", "-e", NODE], "", "go\n"),
        "perl": (["perl", "-e", '$|=1; my %h = map { $_ => $_*2 } 1..5000; print "READY\\n"; '
                  'my $l = <STDIN>; my $s = 0; $s += $_ for values %h; print "$s $l";'], "", "go\n"),
        "ruby-threads": (["ruby", "-e", 'h = {}; 20000.times { |i| h[i] = i * 3 }; q = Queue.new; '
                          'ts = 4.times.map { Thread.new { s = 0; while (x = q.pop) != :done; s += h[x]; end; s } }; '
                          'puts "READY"; $stdout.flush; l = $stdin.gets; 20000.times { |i| q << i }; '
                          '4.times { q << :done }; puts "#{ts.map(&:value).sum} #{l}"'], "", "go\n"),
        # An interpreter with a module imported and a binding made (GHC's
        # threaded RTS under GHCi).
        "ghci": (["ghci", "-v0", "-ignore-dot-ghci"],
                 "import qualified Data.Map as M\nlet m = M.fromList [(i, i * 2) | i <- [1 .. 20000 :: Int]]\n"
                 "M.size m `seq` putStrLn \"READY\"\n", "print (M.foldr (+) 0 m)\n:q\n"),
        "go-goroutines": ([build.get("go", "/nonexistent/go-survey")], "", "go\n"),
        "ghc-threaded": ([build.get("ghc", "/nonexistent/ghc-survey")], "", "go\n"),
        "java-parallel": (["java", "-cp", build.get("java", "/nonexistent"), "J"], "", "go\n"),
        "tclsh": (["tclsh"], "for {set i 0} {$i < 10000} {incr i} {dict set d $i [expr {$i*2}]}; "
                  "puts READY; flush stdout\n", "set s 0; foreach {k v} $d {incr s $v}; puts $s; exit 4\n"),
        "gawk": (["gawk", 'BEGIN { for (i = 0; i < 10000; i++) a[i] = i * 7; print "READY"; fflush() } '
                  '{ s = 0; for (k in a) s += a[k]; print s, $0 }'], "", "go\n"),
        "bc": (["bc", "-q"], 'define f(n) { if (n < 2) return n; return f(n-1) + f(n-2) }\n'
               'x = f(18)\nprint "READY\\n"\n', "x * 2\nquit\n"),
        "php": (["php", "-r", '$a = []; for ($i = 0; $i < 10000; $i++) $a[$i] = $i * 9; echo "READY\\n"; '
                 '$l = fgets(STDIN); echo array_sum($a), " ", $l;'], "", "go\n"),
        "lua": (["lua5.4", "-e", 't = {} for i = 1, 10000 do t[i] = i * 4 end print("READY") '
                 'io.stdout:flush() local l = io.read("l") local s = 0 '
                 'for _, v in ipairs(t) do s = s + v end print(s, l)'], "", "go\n"),
        # OpenBLAS's threads and its buffers bound to a NUMA policy (mbind).
        "numpy-openblas": (["/usr/bin/python3", "-c", "import numpy as np, sys; "
                            "a = (np.arange(90000, dtype=float).reshape(300, 300) % 7) / 3; b = a @ a; "
                            "print('READY', flush=True); l = sys.stdin.readline(); c = b @ a; "
                            "print(round(float(c.sum()), 3), l.strip())"], "", "go\n"),
        # Reads to end of file before it writes: captured blocked in read.
        "pandoc": (["pandoc", "-f", "markdown", "-t", "html"], "", "# Title\n\nSome *text* here.\n"),
    }


def build_all(d):
    """Compile the Go, Haskell and Java programs where the toolchain is there."""
    out = {}
    steps = [
        ("go", "g.go", GO, ["go", "build", "-o", "g", "g.go"], os.path.join(d, "g")),
        ("ghc", "h.hs", HASKELL, ["ghc", "-O", "-threaded", "-rtsopts", "-with-rtsopts=-N2", "h.hs", "-o", "h"],
         os.path.join(d, "h")),
        ("java", "J.java", JAVA, ["javac", "J.java"], d),
    ]
    env = dict(os.environ, GOCACHE=os.path.join(d, "gocache"), HOME=d)
    for key, name, src, cmd, result in steps:
        if not shutil.which(cmd[0]):
            continue
        with open(os.path.join(d, name), "w") as f:
            f.write(src)
        r = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
        if r.returncode == 0:
            out[key] = result
        else:
            print(f"# {name}: {cmd[0]} failed: {r.stderr.strip()[:200]}", file=sys.stderr)
    return out


def state(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1][0]
    except OSError:
        return None


def main():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cryo", default=os.path.join(here, "target/x86_64-unknown-linux-gnu/release/cryo"))
    ap.add_argument("--modes", default="eager,lazy,map,pack")
    ap.add_argument("names", nargs="*")
    a = ap.parse_args()
    modes = [[] if m == "eager" else [m] if m == "pack" else [f"--{m}"] for m in a.modes.split(",")]
    work = tempfile.mkdtemp(prefix="cryo-survey-")
    os.chmod(work, 0o700)
    failed = ran = refused = 0
    try:
        built = build_all(work)
        progs = programs(built)
        for name, (cmd, pre, post) in progs.items():
            if a.names and name not in a.names:
                continue
            if not shutil.which(cmd[0]) or (name == "java-parallel" and "java" not in built):
                print(f"{name:16} missing")
                continue
            want = subprocess.run(cmd, input=pre + post, capture_output=True, text=True, timeout=60)
            want = (want.returncode, want.stdout)
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            if pre:
                p.stdin.write(pre)
                p.stdin.flush()
            first = ""
            while name != "pandoc" and "READY" not in first:
                line = p.stdout.readline()
                if not line:
                    break
                first += line
            if name == "pandoc":
                time.sleep(1.5)
            for _ in range(500):
                if state(p.pid) == "S":
                    break
                time.sleep(0.01)
            time.sleep(0.2)
            img = os.path.join(work, f"img-{name}")
            c = subprocess.run([a.cryo, "capture", "--kill", str(p.pid), img], capture_output=True, text=True)
            if c.returncode != 0:
                # (Refused: the program is left running; it waited for
                # ever on its input.)
                p.kill()
            p.wait()
            ran += 1
            if c.returncode != 0:
                failed += 1
                print(f"{name:16} {'capture':8} REFUSED {c.stderr.strip()[:300]}")
                continue
            for mode in modes:
                argv = [a.cryo, "restore", *mode, img]
                if mode == ["pack"]:
                    # A packed restorer (cryo pack), run directly; an image
                    # it cannot restore is refused by name, which is no
                    # failure.
                    exe = os.path.join(work, f"{name}.restored")
                    k = subprocess.run([a.cryo, "pack", img, "-o", exe], capture_output=True, text=True)
                    if k.returncode != 0:
                        refused += 1
                        print(f"{name:16} {'pack':8} REFUSED {k.stderr.strip()[:300]}", flush=True)
                        continue
                    argv = [exe]
                t0 = time.monotonic()
                r = subprocess.run(argv, input=post, capture_output=True, text=True, timeout=120)
                took = (time.monotonic() - t0) * 1000
                got = (r.returncode, first + r.stdout)
                ok = got == want
                failed += not ok
                shown = " ".join(mode) or "eager"
                # Restore to exit, the program's own work after the
                # restore included (one run: a hint, not a benchmark).
                print(f"{name:16} {shown:8} {'OK' if ok else 'DIFF':4} {took:8.1f} ms",
                      "" if ok else f"want {want!r} got {got!r} stderr {r.stderr[:300]!r}", flush=True)
        print(f"survey: {ran} programs, {failed} failures, {refused} refused by pack ({a.modes})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
