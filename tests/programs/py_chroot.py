#!/usr/bin/python3
"""CPython confining itself with chroot after start-up, as a daemon drops
into an empty directory once it has loaded what it needs: the new root
holds one file; the main thread builds a dict, prints READY and stops
itself (SIGSTOP, the capture point); afterwards it must still be inside
(/ lists only that file, which reads back, and its working directory is
/), and PASS prints a checksum."""
import os
import signal
import sys
import tempfile

root = tempfile.mkdtemp(prefix="cryo-py-chroot-")
with open(os.path.join(root, "inside.txt"), "w") as f:
    f.write("the chroot's own file\n")
os.chroot(root)
os.chdir("/")
table = {i: str(i) * 3 for i in range(100000)}
print("READY", os.getpid(), flush=True)
os.kill(os.getpid(), signal.SIGSTOP)

seen = sorted(os.listdir("/"))
with open("/inside.txt") as f:
    text = f.read()
if seen != ["inside.txt"] or text != "the chroot's own file\n" or os.getcwd() != "/":
    print("FAIL", seen, repr(text), os.getcwd())
    sys.exit(1)
print("PASS", sum(len(v) for v in table.values()), flush=True)
