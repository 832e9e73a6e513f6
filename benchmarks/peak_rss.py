"""Time and peak RSS of one run in a fresh process, or of a whole command's process tree.

    python benchmarks/peak_rss.py W2 --runner numpy
    python benchmarks/peak_rss.py --shape 200,10,2 --batch-size 30 --num-samples 1000000000
    python benchmarks/peak_rss.py --command python -m batchbald_fast bench

A run's peak RSS is the process's high-water mark (``ru_maxrss``), so each run needs its own
process; a run that raises (a memory budget's refusal) reports its error, time and peak all
the same. ``--memory-budget`` sets ``BATCHBALD_FAST_MEMORY_BUDGET`` for our runners.
``--command`` runs a command and reports the peak of the sum of its process tree's RSS
(sampled every 50 ms; at least the largest single process's ``ru_maxrss``) and its time.
Runners: numpy, cython (each also -plain), and batchbald_redux / scikit-activeml when
installed.
"""

import argparse
import os
import resource
import subprocess
import sys
import time

from batchbald_fast._memory import ENV_VAR, format_bytes
from batchbald_fast._workloads import WORKLOADS, Workload, available_runners


def run_one(args, parser):
    if args.memory_budget is not None:
        os.environ[ENV_VAR] = args.memory_budget
    os.environ.setdefault("TQDM_DISABLE", "1")  # batchbald_redux's progress bars
    runners = available_runners()
    if args.runner not in runners:
        parser.error(f"runner {args.runner!r} is not available here: {', '.join(runners)}")
    if args.shape:
        try:
            N, K, C = (int(x) for x in args.shape.split(","))
        except ValueError:
            parser.error(f"--shape takes N,K,C, got {args.shape!r}")
        w = Workload("custom", N, K, C, args.batch_size, args.num_samples)
    elif args.workload:
        w = WORKLOADS[args.workload]
    else:
        parser.error("give a workload, --shape or --command")
    probs_N_K_C = w.probs()
    start = time.perf_counter()
    try:
        outcome = "picks " + str(list(map(int, runners[args.runner](
            probs_N_K_C, w.batch_size, w.num_samples, args.threads))))
    except (Exception, MemoryError) as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{w.name} (N={w.N}, K={w.K}, C={w.C}, b={w.batch_size}, M={w.num_samples}) "
          f"{args.runner}: {seconds:.2f} s, peak RSS {format_bytes(peak)} "
          f"(input {format_bytes(probs_N_K_C.nbytes)}), {outcome}")


def _tree_rss(root):
    """Summed RSS of ``root`` and its descendants, from /proc (Linux)."""
    children, rss = {}, {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as statm:
                rss[int(entry)] = int(statm.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def run_command(command):
    start = time.perf_counter()
    process = subprocess.Popen(command)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss(process.pid))
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(f"{' '.join(command)}: exit status {process.returncode}, {seconds:.1f} s, peak RSS "
          f"of the process tree {format_bytes(max(peak, largest))} (largest single "
          f"process {format_bytes(largest)})", file=sys.stderr)
    return process.returncode


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", nargs="?", choices=sorted(WORKLOADS))
    parser.add_argument("--runner", default="numpy")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--shape", metavar="N,K,C", help="a workload of this shape "
                        "(make_probs) instead of a named one")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--memory-budget", help="e.g. 4GiB; sets " + ENV_VAR)
    parser.add_argument("--command", nargs=argparse.REMAINDER,
                        help="run this command (all remaining arguments) instead")
    args = parser.parse_args()
    if args.command:
        return run_command(args.command)
    run_one(args, parser)
    return 0


if __name__ == "__main__":
    sys.exit(main())
