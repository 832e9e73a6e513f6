"""Time and peak RSS of one workload on one runner, in a fresh process.

    python benchmarks/peak_rss.py W2 --runner numpy
    python benchmarks/peak_rss.py W3 --runner baal --N 100000 --max-memory 16

Peak RSS is the process's high-water mark (``ru_maxrss``), so each run needs its own
process. Runners: numpy, cython, and batchbald_redux / scikit-activeml / baal /
batchbald_fast.baal when installed. ``--N`` runs the workload's shape on another pool size;
``--max-memory`` caps the address space once the runner's library is imported (``RLIMIT_AS``:
it counts the ~4 GiB torch maps), so that a run too big fails with MemoryError, exit
status 3, instead of meeting the machine's OOM killer.
"""

import argparse
import dataclasses
import resource
import sys
import time

from batchbald_fast._workloads import WORKLOADS, available_runners, import_runner_modules


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--runner", default="numpy")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--N", type=int, default=None,
                        help="pool size in place of the workload's (same K, C, b, M)")
    parser.add_argument("--max-memory", type=float, default=None, metavar="GIB",
                        help="address-space cap in GiB")
    args = parser.parse_args()
    runners = available_runners()
    if args.runner not in runners:
        parser.error(f"runner {args.runner!r} is not available here: {', '.join(runners)}")

    w = WORKLOADS[args.workload]
    if args.N is not None:
        w = dataclasses.replace(w, name=f"{w.name} (N={args.N})", N=args.N)
    import_runner_modules([args.runner])
    if args.max_memory is not None:  # after the imports: torch cannot load under a tight cap
        cap = int(args.max_memory * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        probs_N_K_C = w.probs()
        start = time.perf_counter()
        indices = runners[args.runner](probs_N_K_C, w.batch_size, w.num_samples, args.threads)
        seconds = time.perf_counter() - start
    except MemoryError:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{w.name} {args.runner}: MemoryError under the {args.max_memory} GiB cap "
              f"(peak RSS {peak_mib:.0f} MiB)")
        sys.exit(3)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{w.name} {args.runner}: {seconds:.2f} s, peak RSS {peak_mib:.0f} MiB "
          f"(input {probs_N_K_C.nbytes / 2**20:.0f} MiB), picks {list(map(int, indices))}")


if __name__ == "__main__":
    main()
