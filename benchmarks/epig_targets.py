"""How many targets EPIG needs: standard errors and top-k agreement as T grows.

    python benchmarks/epig_targets.py [--N 2000] [--K 20] [--C 10] [--top 50]

The pool is ``make_probs(N, K, C, seed=0)``, the targets the first T of
``make_probs(T_max, K, C, seed=1)`` (nested sets, so that only T changes). For each T it
prints the median standard error relative to the median EPIG, and how many of the top
``--top`` points by EPIG at T are in the top ``--top`` at the largest T.
"""

import argparse

import numpy as np

from batchbald_fast import epig
from batchbald_fast._workloads import make_probs

TARGET_COUNTS = (30, 100, 300, 1000, 4000)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--N", type=int, default=2000)
    parser.add_argument("--K", type=int, default=20)
    parser.add_argument("--C", type=int, default=10)
    parser.add_argument("--top", type=int, default=50)
    args = parser.parse_args()
    pool = make_probs(args.N, args.K, args.C, seed=0)
    targets = make_probs(max(TARGET_COUNTS), args.K, args.C, seed=1)
    results = {T: epig(pool, targets[:T], return_std_error=True) for T in TARGET_COUNTS}
    reference = set(np.argsort(-results[max(TARGET_COUNTS)][0])[:args.top].tolist())
    print(f"pool N = {args.N}, K = {args.K}, C = {args.C}; top {args.top} compared with "
          f"T = {max(TARGET_COUNTS)}'s")
    print(f"{'T':>5}  {'median EPIG':>11}  {'median std error':>16}  {'relative':>8}  "
          f"{'top shared':>10}")
    for T, (scores, errors) in results.items():
        top = set(np.argsort(-scores)[:args.top].tolist())
        print(f"{T:>5}  {np.median(scores):>11.4f}  {np.median(errors):>16.5f}  "
              f"{np.median(errors) / np.median(scores):>8.1%}  {len(top & reference):>10}")


if __name__ == "__main__":
    main()
