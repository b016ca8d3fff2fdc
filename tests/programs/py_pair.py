"""A socket pair between a parent and its child, with bytes queued in the
child's end at the capture. After the restore the child reads them and
sends them back; the parent checks the reply and the child's status."""
import os, socket, sys
a, b = socket.socketpair()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    a.close(); os.close(w)
    os.read(r, 1)                      # wait for the go
    got = b.recv(100)                  # queued by the parent before the capture
    b.sendall(b"child got: " + got)
    b.close(); os._exit(0)
b.close(); os.close(r)
a.sendall(b"queued before capture")
print(f"READY {os.getpid()}", flush=True)
sys.stdin.readline()
os.write(w, b"g")
reply = a.recv(100)
_, st = os.waitpid(pid, 0)
print("PASS" if reply == b"child got: queued before capture" and st == 0 else f"FAIL {reply!r} {st}", flush=True)
