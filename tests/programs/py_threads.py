#!/usr/bin/python3
"""CPython target for cryo's tests: worker threads (threading) wait on a
queue, one on an Event, one in time.sleep; the main thread builds a dict,
prints READY, stops itself (SIGSTOP, the capture point); afterwards the
workers square numbers through the queue and PASS prints the checksum."""
import os
import queue
import signal
import sys
import threading
import time

jobs = queue.Queue()
results = queue.Queue()
local = threading.local()
gate = threading.Event()


def worker():
    local.done = 0
    while True:
        k = jobs.get()
        if k is None:
            results.put(("done", local.done))
            return
        local.done += 1
        results.put(("r", k * k))


def waiter():
    gate.wait()
    results.put(("gate", 1))


def sleeper():
    time.sleep(0.3)
    results.put(("slept", 1))


table = {i: str(i) * 3 for i in range(200000)}
threads = [threading.Thread(target=worker) for _ in range(4)]
threads += [threading.Thread(target=waiter), threading.Thread(target=sleeper)]
for t in threads:
    t.start()
time.sleep(0.05)
print("READY", os.getpid(), flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
for k in range(0, 200000, 7):
    jobs.put(k)
for _ in range(4):
    jobs.put(None)
gate.set()
total, done, other = 0, 0, 0
for _ in range(len(range(0, 200000, 7)) + 6):
    kind, v = results.get(timeout=60)
    if kind == "r":
        total += v
    elif kind == "done":
        done += v
    else:
        other += v
for t in threads:
    t.join()
ok = done == len(range(0, 200000, 7)) and other == 2 and table[12345] == "123451234512345"
print("PASS %d" % total if ok else "FAIL done=%d other=%d" % (done, other), flush=True)
sys.exit(0 if ok else 1)
