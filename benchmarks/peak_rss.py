"""Time and peak RSS of one workload on one runner, in a fresh process.

    python benchmarks/peak_rss.py W2 --runner numpy

Peak RSS is the process's high-water mark (``ru_maxrss``), so each run needs its own
process. Runners: numpy, cython, and batchbald_redux / scikit-activeml when installed.
"""

import argparse
import resource
import time

from batchbald_fast._workloads import WORKLOADS, available_runners


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--runner", default="numpy")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    runners = available_runners()
    if args.runner not in runners:
        parser.error(f"runner {args.runner!r} is not available here: {', '.join(runners)}")

    w = WORKLOADS[args.workload]
    probs_N_K_C = w.probs()
    start = time.perf_counter()
    indices = runners[args.runner](probs_N_K_C, w.batch_size, w.num_samples, args.threads)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{w.name} {args.runner}: {seconds:.2f} s, peak RSS {peak_mib:.0f} MiB "
          f"(input {probs_N_K_C.nbytes / 2**20:.0f} MiB), picks {list(map(int, indices))}")


if __name__ == "__main__":
    main()
