#!/usr/bin/python3
"""CPython sandboxing itself with libseccomp (python3-seccomp), as a
service does once it has started: the filter allows everything but mkdir
(EPERM) and kill with SIGWINCH (EACCES, an argument rule); a worker thread
started before the filter was loaded gets it too (TSYNC). The main thread
builds a dict, prints READY and stops itself (SIGSTOP, the capture point);
afterwards both threads check that the filter still decides, and PASS
prints a checksum."""
import errno
import os
import queue
import signal
import sys
import tempfile
import threading

import seccomp

where = tempfile.mkdtemp(prefix="cryo-py-seccomp-")
jobs = queue.Queue()
results = queue.Queue()


def attempt(path):
    try:
        os.mkdir(path)
        return "created"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def worker():
    results.put(attempt(jobs.get()))


t = threading.Thread(target=worker)
t.start()
f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
f.add_rule(seccomp.ERRNO(errno.EPERM), "mkdir")
f.add_rule(seccomp.ERRNO(errno.EACCES), "kill", seccomp.Arg(1, seccomp.EQ, signal.SIGWINCH))
f.set_attr(seccomp.Attr.CTL_TSYNC, 1)
f.load()
table = {i: str(i) * 3 for i in range(100000)}
print("READY", os.getpid(), flush=True)
os.kill(os.getpid(), signal.SIGSTOP)

# Both threads (the worker waits for its job): mode 2, one filter.
modes = set()
for tid in os.listdir("/proc/self/task"):
    with open(f"/proc/self/task/{tid}/status") as s:
        modes |= {line.split()[1] for line in s if line.startswith(("Seccomp:", "Seccomp_filters:"))}
seen = [attempt(os.path.join(where, "main"))]
try:
    os.kill(os.getpid(), signal.SIGWINCH)
    seen.append("sent")
except OSError as e:
    seen.append(errno.errorcode.get(e.errno, str(e.errno)))
os.kill(os.getpid(), 0)
jobs.put(os.path.join(where, "worker"))
t.join()
seen.append(results.get(timeout=60))
# (Every restore of one image runs this: the first removes it.)
if os.path.isdir(where):
    os.rmdir(where)
if seen != ["EPERM", "EACCES", "EPERM"] or modes != {"2", "1"}:
    print("FAIL", seen, sorted(modes))
    sys.exit(1)
print("PASS", sum(len(v) for v in table.values()), flush=True)
