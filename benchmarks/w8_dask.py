"""W8 on a Dask LocalCluster against the in-memory call on the same array, in one run.

    python benchmarks/w8_dask.py [--store W8.zarr] [--sizes 500000,1000000,1500000,2000000]
                                 [--no-persist]

Writes the W8 zarr store once (WORKLOADS.md: float32, chunks of 125000, chunk i from
``make_probs(125000, 20, 10, seed=900 + i)``), starts a LocalCluster of 2 single-threaded
worker processes, and for each pool size N (the first N points of the store) runs, each
in a fresh process so that every peak RSS (``VmHWM``) is that call's own:

- in memory: the store read into one float32 array, then ``batchbald`` on it with
  ``num_threads=2``: the call's time, the process's peak RSS during the call (the input
  included) and the input's size;
- on Dask: a client process connected to the cluster (whose scheduler runs in this
  process, not in the client) calls ``batchbald(da.from_zarr(store)[:N])``: time (the
  first pass over the store included, and shown apart), the client's peak RSS, each
  worker's peak RSS (workers are restarted before each call), and per step the chunks
  whose state its search starts on, its rounds of scoring tasks, those tasks and the
  distinct chunks they read.

Both use ``random_state=0`` and the default compute dtype (float64 products and logs on the
float32 pool). Targets (issues 10 and 21): Dask time ≤ 1.35× in memory with identical
picks, client peak RSS ≤ 500 MiB, in-memory peak RSS ≤ input + 512 MiB, time per step
linear in N. W9 (``w9_dask.py``) runs the Dask call alone up to N = 10^7.
``--no-persist`` leaves the pool in the store (each task reads its chunk again): the
measurement behind persisting it on the workers by default. Run on a quiet machine
(``uptime``); compare within one run.
"""

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from batchbald_fast._workloads import W8


def peak_rss_mib():
    """This process's peak RSS. Not ``ru_maxrss``: a process started by fork (or spawn)
    and exec, as subprocess and multiprocessing start them, inherits its parent's."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_memory(args):
    import zarr

    from batchbald_fast import batchbald

    start = time.perf_counter()
    probs_N_K_C = zarr.open(args.store, mode="r")[:args.points]
    load = time.perf_counter() - start
    # The call's peak, not zarr's while reading (it holds ~3 copies of a chunk at a time).
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    start = time.perf_counter()
    result = batchbald(probs_N_K_C, W8.batch_size, num_samples=W8.num_samples,
                       random_state=0, num_threads=2)
    return {"time": time.perf_counter() - start, "load": load, "rss": peak_rss_mib(),
            "input": probs_N_K_C.nbytes / 2**20, "picks": result.indices.tolist(),
            "scores": result.scores.tolist()}


def child_dask(args):
    import dask.array as da
    from distributed import Client

    from batchbald_fast import batchbald
    from batchbald_fast import dask as bf_dask

    client = Client(args.scheduler)
    if args.no_persist:
        bf_dask.DaskPool.__init__.__kwdefaults__["persist"] = False
    # Steps, as the rounds of chunk tasks between one search's start and the next's.
    first_pass, searches, steps_rss = [], [], []
    init, search = bf_dask.DaskPool.__init__, bf_dask._Points.search

    def recording_init(pool, *a, **kw):
        start = time.perf_counter()
        init(pool, *a, **kw)
        first_pass.append(time.perf_counter() - start)
        steps_rss.append(peak_rss_mib())

    def recording_search(points, *a, **kw):
        searches.append((points._pool, len(points._pool.calls), len(points._active())))
        return search(points, *a, **kw)

    bf_dask.DaskPool.__init__ = recording_init
    bf_dask._Points.search = recording_search
    before = peak_rss_mib()
    start = time.perf_counter()
    result = batchbald(da.from_zarr(args.store)[:args.points], W8.batch_size,
                       num_samples=W8.num_samples, random_state=0,
                       progress=lambda *_: steps_rss.append(peak_rss_mib()))
    elapsed = time.perf_counter() - start
    workers = client.run(peak_rss_mib)
    client.close()
    calls = searches[0][0].calls
    ends = [at for _, at, _ in searches[1:]] + [len(calls)]
    steps = [calls[at:end] for (_, at, _), end in zip(searches, ends)]
    return {"time": elapsed, "first_pass": first_pass[0], "rss": peak_rss_mib(),
            "rss_before": before, "rss_steps": steps_rss,
            "workers": sorted(workers.values()), "picks": result.indices.tolist(),
            "scores": result.scores.tolist(),
            "steps": [[active, len(rounds), int(sum(map(len, rounds))),
                       len(np.unique(np.concatenate(rounds))) if rounds else 0]
                      for (_, _, active), rounds in zip(searches, steps)]}


def sizes_and_store(args, workload):
    """The pool sizes asked for, and the store's path, written first if it holds fewer
    points than the largest."""
    import zarr

    sizes = sorted(int(n) for n in args.sizes.split(","))
    workload = dataclasses.replace(workload, N=sizes[-1])
    try:
        ready = zarr.open(args.store, mode="r").shape[0] >= workload.N
    except (OSError, ValueError):  # no store there yet
        ready = False
    if not ready:
        print(f"writing {args.store} ({workload.N} points)...", flush=True)
        workload.write_zarr(args.store)
    return sizes, os.path.abspath(args.store)


def run_child(*argv):
    # The child imports the batchbald_fast this process imported, installed or not.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True,
                          check=False, env=env)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv[:2])} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="W8.zarr")
    parser.add_argument("--sizes", default="500000,1000000,1500000,2000000",
                        help="pool sizes N, multiples of 125000 (the largest is W8's)")
    parser.add_argument("--no-persist", action="store_true")
    parser.add_argument("--child", choices=["memory", "dask"], help=argparse.SUPPRESS)
    parser.add_argument("--points", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scheduler", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"memory": child_memory, "dask": child_dask}[args.child](args)))
        return

    from distributed import LocalCluster

    sizes, store = sizes_and_store(args, W8)
    print(f"W8 pool: K={W8.K} C={W8.C} b={W8.batch_size} M={W8.num_samples}, float32 "
          f"zarr chunks of {W8.chunk}; Dask: LocalCluster of 2 single-threaded workers"
          f"{', pool left in the store' if args.no_persist else ''}", flush=True)
    print(f"{'N':>9} {'in-memory':>10} {'dask':>8} {'ratio':>6} {'first pass':>10} "
          f"{'s/step mem':>10} {'s/step dask':>11} {'RSS mem (input)':>16} "
          f"{'RSS client':>10} {'RSS workers':>12}  picks", flush=True)
    # Every in-memory call first: a cluster's workers still exiting when the next child
    # starts take its cores (at 1M and 2M that doubled the in-memory times).
    memory_runs = {N: run_child("--child", "memory", "--store", store, "--points", str(N))
                   for N in sizes}
    for N in sizes:
        memory = memory_runs[N]
        # A cluster per call: fresh workers, whose peak RSS is this call's.
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster:
            dask_run = run_child("--child", "dask", "--store", store, "--points", str(N),
                                 "--scheduler", cluster.scheduler_address,
                                 *(["--no-persist"] if args.no_persist else []))
        same = memory["picks"] == dask_run["picks"]
        worst = np.abs(np.subtract(memory["scores"], dask_run["scores"])).max()
        b = len(memory["picks"])
        print(f"{N:>9} {memory['time']:>9.1f}s {dask_run['time']:>7.1f}s "
              f"{dask_run['time'] / memory['time']:>6.2f} {dask_run['first_pass']:>9.1f}s "
              f"{memory['time'] / b:>10.2f} "
              f"{(dask_run['time'] - dask_run['first_pass']) / b:>11.2f} "
              f"{memory['rss']:>6.0f} ({memory['input']:>4.0f}) MiB "
              f"{dask_run['rss']:>6.0f} MiB "
              f"{'/'.join(f'{w:.0f}' for w in dask_run['workers']):>8} MiB  "
              f"{'identical' if same else 'DIFFERENT'} (scores within {worst:.1e})",
              flush=True)
    print_steps(N, W8.chunk, dask_run["steps"])


def print_steps(N, chunk, steps):
    """Per step: the chunks whose state the search starts on (no pool read), its rounds of
    scoring tasks, those tasks and the distinct chunks they read."""
    print(f"chunk tasks per step at N={N} ({-(-N // chunk)} chunks): state tasks / scoring "
          "rounds / scoring tasks / distinct chunks read")
    for t, (active, rounds, tasks, chunks) in enumerate(steps):
        print(f"  step {t}: {active} / {rounds} / {tasks} / {chunks}")


if __name__ == "__main__":
    main()
