# A TCP server with one client connection (tests/servers.rs): it greets,
# sends as much of 16 MiB as the connection takes without blocking, and
# waits on stdin (captured then, with TCP repair, what the client sent
# unread in its queue and the rest of its sends in its own); then it sends
# the rest, echoes what the client had sent, answers one more line, and
# ends with PASS. With the argument 6: over IPv6 (::1); with "dual": on
# a dual-stack IPv6 listener (::, IPV6_V6ONLY off), which sees an IPv4
# client as ::ffff:127.0.0.1.
import os
import socket
import sys

BIG = bytes(range(256)) * (16 << 12)
v6 = sys.argv[1:] == ["6"]
dual = sys.argv[1:] == ["dual"]
lst = socket.socket(socket.AF_INET6 if v6 or dual else socket.AF_INET)
if dual:
    lst.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
lst.bind(("::1" if v6 else "::" if dual else "127.0.0.1", 0))
lst.listen(1)
print("READY", os.getpid(), flush=True)
print("PORT", lst.getsockname()[1], flush=True)
c, _ = lst.accept()
c.sendall(b"greeting\n")
c.setblocking(False)
sent = 0
try:
    while sent < len(BIG):
        sent += c.send(BIG[sent:])
except BlockingIOError:
    pass
print("SENT", sent, flush=True)
sys.stdin.readline()
c.setblocking(True)
c.sendall(BIG[sent:])
line = c.recv(100)
c.sendall(b"echo:" + line)
assert c.recv(100) == b"after\n"
c.sendall(b"bye\n")
c.close()
print("PASS", flush=True)
