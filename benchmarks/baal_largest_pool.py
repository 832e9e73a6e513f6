"""The largest pool baal's BatchBALD survives under a memory cap, and ours on that pool.

    python benchmarks/baal_largest_pool.py --max-memory 16 [--workload W3] [--start 50000]

Runs ``peak_rss.py`` (time and peak RSS, each in a fresh process with the address space
capped) on the workload's shape with growing pool sizes N: doubling from ``--start`` until
baal fails, then ``--bisect`` halvings of the gap. Then ``--ours`` on the largest N baal
survived and on the first it did not. baal builds N × M × C float64 arrays (M = num_samples
rounded down to a multiple of K), two or three at a time, so its memory grows with N·M·C;
ours grows with N·K·C.
"""

import argparse
import os
import subprocess
import sys

from batchbald_fast._workloads import WORKLOADS

PEAK_RSS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peak_rss.py")


def run(workload, runner, N, max_memory):
    """One run in a fresh process: whether it finished, and its report line."""
    done = subprocess.run([sys.executable, PEAK_RSS, workload, "--runner", runner,
                           "--N", str(N), "--max-memory", str(max_memory)],
                          capture_output=True, text=True)
    lines = done.stdout.strip().splitlines() or done.stderr.strip().splitlines()
    line = lines[-1] if lines else "no output"
    print(line if done.returncode in (0, 3) else
          f"{workload} (N={N}) {runner}: exit status {done.returncode}: {line}", flush=True)
    return done.returncode == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-memory", type=float, required=True, metavar="GIB",
                        help="address-space cap of each run (it counts ~4 GiB of torch)")
    parser.add_argument("--workload", default="W3", choices=sorted(WORKLOADS),
                        help="the shape (K, C, b, M) to grow N in (default: W3)")
    parser.add_argument("--start", type=int, default=None,
                        help="first pool size (default: the workload's N)")
    parser.add_argument("--bisect", type=int, default=2,
                        help="halvings of the gap between the last N survived and the first "
                             "failed (default: 2)")
    parser.add_argument("--ours", default="cython",
                        help="our runner to run on the largest pool (default: cython)")
    parser.add_argument("--limit", type=int, default=10**8, help="stop doubling past this N")
    args = parser.parse_args()

    survived, failed = 0, None
    N = args.start or WORKLOADS[args.workload].N
    while N <= args.limit:
        if not run(args.workload, "baal", N, args.max_memory):
            failed = N
            break
        survived, N = N, 2 * N
    for _ in range(args.bisect if failed and survived else 0):
        N = (survived + failed) // 2
        if run(args.workload, "baal", N, args.max_memory):
            survived = N
        else:
            failed = N
    print(f"largest pool baal survived under {args.max_memory} GiB: "
          f"{survived or 'none'}; first it failed on: {failed or 'none tried'}")
    for N in filter(None, [survived, failed]):
        run(args.workload, args.ours, N, args.max_memory)


if __name__ == "__main__":
    main()
