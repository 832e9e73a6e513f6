"""The Dask client's CPU time against the number of chunks, on a pool whose values do not
depend on its chunking.

    python benchmarks/dask_client_cpu.py [--points 100000] [--chunks 50,200,400]
                                         [--batch-size 4] [--profile]

The pool: N points, K = 20, C = 10, float32, in blocks of 250 rows, block j being
``make_probs(250, 20, 10, seed=900 + j)``; each chunk is a task that makes its blocks (the
client holds none of it). For each chunk count, on one ``LocalCluster`` of 2
single-threaded workers, ``batchbald(pool, b, num_samples=10000, random_state=0)``: the
call's wall time, the client's CPU time (``time.process_time``) and each of its threads'
(``/proc/self/task``: the main thread builds and submits the tasks, distributed's IO loop
sends and receives their messages), the load average, the picks and the scores' sum.
``--profile`` prints the main thread's cProfile. Compare within one run.
"""

import argparse
import cProfile
import os
import pstats
import threading
import time

import numpy as np

BLOCK = 250


def chunk(start, n):
    from batchbald_fast._workloads import make_probs

    return np.concatenate([make_probs(BLOCK, 20, 10, seed=900 + (start + k) // BLOCK)
                           for k in range(0, n, BLOCK)]).astype(np.float32)


def pool(N, chunks):
    import dask
    import dask.array as da

    n = N // chunks
    if n % BLOCK or N % chunks:
        raise SystemExit(f"chunks of {N} / {chunks} points must be multiples of {BLOCK}")
    return da.concatenate([da.from_delayed(dask.delayed(chunk)(i * n, n), (n, 20, 10),
                                           dtype=np.float32) for i in range(chunks)])


def threads_cpu():
    """CPU seconds of each of this process's threads, by name."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    out = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        name = names.get(int(tid), "other")
        out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) / os.sysconf(
            "SC_CLK_TCK")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--chunks", default="50,200,400")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from batchbald_fast import batchbald

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster):
        for chunks in (int(c) for c in args.chunks.split(",")):
            profile = cProfile.Profile() if args.profile else None
            threads_before = threads_cpu()
            wall, cpu = time.perf_counter(), time.process_time()
            if profile:
                profile.enable()
            result = batchbald(pool(args.points, chunks), args.batch_size,
                               num_samples=10000, random_state=0)
            if profile:
                profile.disable()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            threads = {name: round(seconds - threads_before.get(name, 0), 1)
                       for name, seconds in threads_cpu().items()
                       if seconds - threads_before.get(name, 0) >= 0.1}
            print(f"N={args.points} chunks={chunks} b={args.batch_size} wall={wall:.1f}s "
                  f"client CPU={cpu:.1f}s threads={threads} load={os.getloadavg()[0]:.1f} "
                  f"picks={result.indices.tolist()} scores={result.scores.sum():.12f}",
                  flush=True)
            if profile:
                pstats.Stats(profile).sort_stats("cumtime").print_stats(40)


if __name__ == "__main__":
    main()
