"""W9: W8's pool grown to N = 10,000,000 on a Dask LocalCluster; the client's memory
against N.

    python benchmarks/w9_dask.py [--store W9.zarr] [--sizes 1000000,2000000,4000000,10000000]

W9 is W8 (K = 20, C = 10, b = 10, M = 10000, float32, chunks of 125000, chunk i from
``make_probs(125000, 20, 10, seed=900 + i)``) with N = 10^7: a 7.5 GiB zarr store, written
once chunk by chunk (never whole in memory), whose first 2M points are W8's. For each N (the
store's first N points), on a fresh LocalCluster of 2 single-threaded worker processes, a
client process calls ``batchbald(da.from_zarr(store)[:N], 10, num_samples=10000,
random_state=0)`` (``w8_dask.child_dask``) and this prints the call's time, its first pass
and time per step after it, the client's peak RSS (``VmHWM``) and its growth from the
smallest N, each worker's peak RSS, and for the largest N the chunk tasks of each step.
Targets (issue 21): the client's peak RSS grows by ≤ 64 MiB from 1M to 10M and is ≤ 400 MiB
at 10M; time per step linear in N. Run on a quiet machine (``uptime``).
"""

import argparse
import dataclasses

from w8_dask import print_steps, run_child, sizes_and_store

from batchbald_fast._workloads import W8

W9 = dataclasses.replace(W8, name="W9", N=10_000_000)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="W9.zarr")
    parser.add_argument("--sizes", default="1000000,2000000,4000000,10000000",
                        help="pool sizes N, multiples of 125000")
    args = parser.parse_args()

    from distributed import LocalCluster

    sizes, store = sizes_and_store(args, W9)
    print(f"W9 pool: K={W9.K} C={W9.C} b={W9.batch_size} M={W9.num_samples}, float32 zarr "
          f"chunks of {W9.chunk}; LocalCluster of 2 single-threaded workers", flush=True)
    print(f"{'N':>9} {'dask':>8} {'first pass':>10} {'s/step':>7} {'RSS client':>10} "
          f"{'growth':>7} {'RSS workers':>12}", flush=True)
    smallest = None
    for N in sizes:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster:
            run = run_child("--child", "dask", "--store", store, "--points", str(N),
                            "--scheduler", cluster.scheduler_address)
        smallest = run["rss"] if smallest is None else smallest
        b = len(run["picks"])
        print(f"{N:>9} {run['time']:>7.1f}s {run['first_pass']:>9.1f}s "
              f"{(run['time'] - run['first_pass']) / b:>7.2f} {run['rss']:>6.0f} MiB "
              f"{run['rss'] - smallest:>3.0f} MiB "
              f"{'/'.join(f'{w:.0f}' for w in run['workers']):>8} MiB", flush=True)
    print_steps(N, W9.chunk, run["steps"])


if __name__ == "__main__":
    main()
