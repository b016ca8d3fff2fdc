#!/usr/bin/env python3
"""What the network lock of `--tcp-established` costs (docs/benchmarks.md).

A Python server with one client connection is captured (`cryo capture
--kill --tcp-established`) and restored to exit, RUNS times (default 7)
with nftables' `nft` on PATH (the connection is locked) and without it
(PATH without /usr/sbin: not locked), alternately; the medians and ranges
of both, in ms. Needs root and nftables; run after `cargo build --release`.
"""
import os, socket, subprocess, sys, tempfile, time, statistics
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C = os.path.join(HERE, "target/x86_64-unknown-linux-gnu/release/cryo")
SRV = r'''
import os, socket, sys
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen()
print(l.getsockname()[1], flush=True)
c, _ = l.accept()
sys.stdin.readline()
c.sendall(b"ok"); c.close()
'''
def once(lock):
    env = dict(os.environ)
    if not lock:
        env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    p = subprocess.Popen([sys.executable, "-c", SRV], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    port = int(p.stdout.readline())
    c = socket.create_connection(("127.0.0.1", port))
    time.sleep(0.2)
    img = os.path.join(WORK, "img"); subprocess.run(["rm", "-rf", img])
    t0 = time.monotonic()
    r = subprocess.run([C, "capture", "-q", "--kill", "--tcp-established", str(p.pid), img], env=env, capture_output=True)
    t1 = time.monotonic()
    assert r.returncode == 0, r.stderr
    p.wait()
    t2 = time.monotonic()
    r = subprocess.run([C, "restore", img], input=b"go\n", env=env, capture_output=True)
    t3 = time.monotonic()
    assert r.returncode == 0, r.stderr
    assert c.recv(10) == b"ok"
    return (t1 - t0) * 1e3, (t3 - t2) * 1e3
WORK = tempfile.mkdtemp(prefix="cryo-bench-netlock-")
res = {True: [], False: []}
RUNS = int(os.environ.get("RUNS", "7"))
for i in range(RUNS):
    for lock in (True, False):
        res[lock].append(once(lock))
for lock in (True, False):
    caps = [a for a, _ in res[lock]]; rests = [b for _, b in res[lock]]
    print(f"{'lock' if lock else 'no lock'}: capture {statistics.median(caps):.1f} ms ({min(caps):.1f}-{max(caps):.1f}), restore to exit {statistics.median(rests):.1f} ms ({min(rests):.1f}-{max(rests):.1f})")
subprocess.run(["rm", "-rf", WORK])
