"""A multiprocessing.Pool (start method from argv[1]) that computes before
and after a capture: its workers, its handler threads, the pipes of its
queues and the POSIX semaphores (shared memory in /dev/shm) they all map.
READY once the pool has worked; a line on stdin, then the pool works again,
is closed and joined (which checks the pool's own PID). PASS at the end."""
import multiprocessing as mp
import os
import sys


def sq(x):
    return x * x


if __name__ == "__main__":
    mp.set_start_method(sys.argv[1] if len(sys.argv) > 1 else "fork")
    with mp.Pool(2) as pool:
        assert sum(pool.map(sq, range(100))) == sum(x * x for x in range(100))
        print(f"READY {os.getpid()}", flush=True)
        sys.stdin.readline()
        got = sum(pool.map(sq, range(1000)))
        want = sum(x * x for x in range(1000))
        pool.close()
        pool.join()
    print(f"PASS pool {got == want}", flush=True)
