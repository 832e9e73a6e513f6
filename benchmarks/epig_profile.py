"""Where an ``epig`` call's time goes: the scoring kernel against everything else.

    python benchmarks/epig_profile.py [--N 10000] [--T 1000] [--K 20] [--C 10]
                                      [--threads 2] [--std-error]

E1's pool and targets (``make_probs(N, K, C, seed=0)``, ``make_probs(T, K, C, seed=1)``),
both compute dtypes, the compiled backend. Each kernel the call makes is timed (wall and
process CPU time) by wrapping it in this process; the rest of the call (validation,
entropies of the pool points and targets, the targets' joint, planning, the sums) is the
call's time less the kernels'. It also prints the kernel's CPU time per joint entry
(``N·T·C²`` of them, each K multiply-adds and one logarithm). Quote shares and ratios on
a shared machine: check ``uptime`` first.
"""

import argparse
import time

import numpy as np

from batchbald_fast import _kernels, epig
from batchbald_fast._workloads import make_probs

TIMED = ("score_candidates", "score_candidates_grouped", "entropy_rows")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("N", 10000), ("T", 1000), ("K", 20), ("C", 10), ("threads", 2)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--std-error", action="store_true",
                        help="also the standard errors (the per-target path)")
    args = parser.parse_args()
    pool = make_probs(args.N, args.K, args.C, seed=0)
    targets = make_probs(args.T, args.K, args.C, seed=1)
    spent = {name: [0.0, 0.0] for name in TIMED}

    def timed(name, kernel):
        def call(*a, **k):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return kernel(*a, **k)
            finally:
                spent[name][0] += time.perf_counter() - wall
                spent[name][1] += time.process_time() - cpu
        return call

    for name in TIMED:
        setattr(_kernels, name, timed(name, getattr(_kernels, name)))
    entries = args.N * args.T * args.C ** 2
    print(f"epig, N = {args.N}, T = {args.T}, K = {args.K}, C = {args.C}, "
          f"{args.threads} threads, std errors {args.std_error}")
    for dtype in (np.float64, np.float32):
        epig(pool[:10], targets[:2], dtype=dtype)  # first-call costs out of the way
        for times in spent.values():
            times[:] = [0.0, 0.0]
        wall, cpu = time.perf_counter(), time.process_time()
        epig(pool, targets, dtype=dtype, num_threads=args.threads,
             return_std_error=args.std_error)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        scoring = [sum(spent[n][i] for n in TIMED[:2]) for i in (0, 1)]
        entropies = spent["entropy_rows"]
        rest = [total - scoring[i] - entropies[i] for i, total in enumerate((wall, cpu))]
        print(f"  {np.dtype(dtype).name}: call {wall:.3f} s wall, {cpu:.3f} s CPU; scoring "
              f"kernel {scoring[0]:.3f} s / {scoring[1]:.3f} s ({scoring[1] / cpu:.1%} of "
              f"the CPU time, {scoring[1] / entries * 1e9:.2f} ns an entry); entropies "
              f"{entropies[0]:.3f} / {entropies[1]:.3f} s; the rest {rest[0]:.3f} / "
              f"{rest[1]:.3f} s", flush=True)


if __name__ == "__main__":
    main()
