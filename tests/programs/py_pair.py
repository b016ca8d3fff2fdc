"""A parent and its child sharing what a fork shares: a socket pair (bytes
queued in the child's end at the capture) and shared anonymous memory
(a counter each side writes). After the restore the child reads the
queued bytes and the parent's new value in the shared memory, and answers
through both; the parent checks the replies and the child's status."""
import mmap
import os
import socket
import struct
import sys

a, b = socket.socketpair()
m = mmap.mmap(-1, 8192)  # MAP_SHARED | MAP_ANONYMOUS
m[0:8] = struct.pack("q", 41)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    a.close()
    os.close(w)
    os.read(r, 1)  # wait for the go
    got = b.recv(100)  # queued by the parent before the capture
    b.sendall(b"child got: " + got)
    v = struct.unpack("q", m[0:8])[0]
    m[4096:4104] = struct.pack("q", v + 1)
    b.close()
    os._exit(0 if v == 42 else 3)
b.close()
os.close(r)
a.sendall(b"queued before capture")
print(f"READY {os.getpid()}", flush=True)
sys.stdin.readline()
m[0:8] = struct.pack("q", 42)  # the child must see this
os.write(w, b"g")
reply = a.recv(100)
_, st = os.waitpid(pid, 0)
shared = struct.unpack("q", m[4096:4104])[0]
ok = reply == b"child got: queued before capture" and st == 0 and shared == 43
print("PASS" if ok else f"FAIL {reply!r} status {st} shared {shared}", flush=True)
