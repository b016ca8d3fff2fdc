#!/usr/bin/python3
"""An asyncio TCP server for cryo's tests: the event loop (epoll, and a
socket pair as its self-pipe) serves line-echo clients on 127.0.0.1 (port
chosen by the kernel). Prints READY <pid>, then PORT <n>. "quit" answers
"bye", stops the loop, and PASS prints how many lines were served."""
import asyncio
import os

served = 0


async def main():
    stop = asyncio.Event()

    async def handle(reader, writer):
        global served
        while True:
            line = await reader.readline()
            if not line:
                break
            served += 1
            if line.strip() == b"quit":
                writer.write(b"bye\n")
                await writer.drain()
                stop.set()
                break
            writer.write(b"echo: " + line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {os.getpid()}", flush=True)
    print(f"PORT {port}", flush=True)
    async with server:
        await stop.wait()


asyncio.run(main())
print(f"PASS served {served}", flush=True)
