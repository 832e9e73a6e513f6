"""Time and peak RSS of one run in a fresh process, or of a whole command's process tree.

    python benchmarks/peak_rss.py W2 --runner numpy
    python benchmarks/peak_rss.py W3 --runner baal --N 100000 --max-memory 16
    python benchmarks/peak_rss.py --shape 200,10,2 --batch-size 30 --num-samples 1000000000
    python benchmarks/peak_rss.py --command python -m batchbald_fast bench

A run's peak RSS is the process's high-water mark (``ru_maxrss``), so each run needs its own
process. Runners: numpy, cython (each also -plain), and batchbald_redux / scikit-activeml /
baal / batchbald_fast.baal when installed. ``--N`` runs the workload's shape on another pool
size, ``--shape`` any shape (``make_probs``); ``--memory-budget`` sets
``BATCHBALD_FAST_MEMORY_BUDGET`` for our runners, whose refusal is reported (error, time
and peak) like a result. ``--max-memory`` caps the address space once the runner's library
is imported (``RLIMIT_AS``: it counts the ~4 GiB torch maps), so that a run too big fails
with MemoryError, exit status 3, instead of meeting the machine's OOM killer.
``--command`` runs a command and reports its time and the peak of its process tree's summed
RSS (sampled every 50 ms; at least the largest single process's ``ru_maxrss``).
"""

import argparse
import dataclasses
import os
import resource
import subprocess
import sys
import time

from batchbald_fast._memory import ENV_VAR, MemoryBudgetError, format_bytes
from batchbald_fast._workloads import (WORKLOADS, Workload, available_runners,
                                       import_runner_modules)


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
        w = Workload(f"N={N}, K={K}, C={C}, b={args.batch_size}, M={args.num_samples}",
                     N, K, C, args.batch_size, args.num_samples)
    elif args.workload:
        w = WORKLOADS[args.workload]
    else:
        parser.error("give a workload, --shape or --command")
    if args.N is not None:
        w = dataclasses.replace(w, name=f"{w.name} (N={args.N})", N=args.N)
    import_runner_modules([args.runner])
    if args.max_memory is not None:  # after the imports: torch cannot load under a tight cap
        cap = int(args.max_memory * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        probs_N_K_C = w.probs()
        start = time.perf_counter()
        outcome = "picks " + str(list(map(int, runners[args.runner](
            probs_N_K_C, w.batch_size, w.num_samples, args.threads))))
    except MemoryBudgetError as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    except MemoryError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(f"{w.name} {args.runner}: MemoryError under the {args.max_memory} GiB cap "
              f"(peak RSS {format_bytes(peak)})")
        return 3
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{w.name} {args.runner}: {seconds:.2f} s, peak RSS {format_bytes(peak)} "
          f"(input {format_bytes(probs_N_K_C.nbytes)}), {outcome}")
    return 0


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
    parser.add_argument("--N", type=int, default=None,
                        help="pool size in place of the workload's (same K, C, b, M)")
    parser.add_argument("--shape", metavar="N,K,C",
                        help="a workload of this shape instead of a named one")
    parser.add_argument("--batch-size", type=int, default=10, help="with --shape")
    parser.add_argument("--num-samples", type=int, default=10_000, help="with --shape")
    parser.add_argument("--memory-budget", help="e.g. 4GiB; sets " + ENV_VAR)
    parser.add_argument("--max-memory", type=float, default=None, metavar="GIB",
                        help="address-space cap in GiB")
    parser.add_argument("--command", nargs=argparse.REMAINDER,
                        help="run this command (all remaining arguments) instead")
    args = parser.parse_args()
    if args.command:
        return run_command(args.command)
    return run_one(args, parser)


if __name__ == "__main__":
    sys.exit(main())
