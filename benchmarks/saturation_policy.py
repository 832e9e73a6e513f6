"""What ``saturation="restart"`` buys over ``"greedy"`` at large b, side by side.

    PYTHONPATH=. python benchmarks/saturation_policy.py [--repeats 1] [--draws 200000]

Two inputs, each selected with both policies in this one process (alternating, repeated):

- ``W7s``: time, candidates scored per sampled step, saturated/ambiguous steps, restarts,
  and the batch mutual information under the same K = 20 members the picks were made
  with. Any batch's I(y_A; ω) is at most ln K, and both policies make the same picks up
  to the first restart, so once both batches reach ln K this cannot tell them apart: it
  only shows whether the policy lowers the batch's in-sample information.
- ``held-out``: W7's input (K = 100 members of the same generator): picks with members
  0..19 (a W7s-sized call), information measured with members 20..99, which the picks
  never saw (at most ln 80). This asks what saturation is about: do the picks made past
  ln K of the working members still inform about a richer posterior, and which policy's
  picks inform more?

Estimates are plain Monte Carlo (``batch_quality.batch_mutual_information``), with their
standard error; the same draws' seed for every batch.
"""

import argparse
import math
import os
import sys
import time

import numpy as np

from batchbald_fast import batchbald
from batchbald_fast._workloads import WORKLOADS

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from batch_quality import batch_mutual_information  # noqa: E402

POLICIES = ("greedy", "restart")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--draws", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    w = WORKLOADS["W7s"]
    probs_W7s = w.probs()
    probs_W7 = WORKLOADS["W7"].probs()
    inputs = {"W7s": (probs_W7s, probs_W7s),
              "held-out": (probs_W7[:, :20], probs_W7[:, 20:])}
    batchbald(probs_W7s[:200], 2)  # warm-up: thread start-up is not the call's cost

    print(f"N={w.N} K=20 C={w.C} b={w.batch_size} M={w.num_samples}, "
          f"random_state={args.seed}, {args.draws} Monte Carlo draws per estimate")
    for name, (select_N_K_C, judge_N_K_C) in inputs.items():
        results, seconds = {}, {p: [] for p in POLICIES}
        for _ in range(args.repeats):
            for policy in POLICIES:
                start = time.perf_counter()
                results[policy] = batchbald(select_N_K_C, w.batch_size,
                                            num_samples=w.num_samples,
                                            random_state=args.seed, saturation=policy)
                seconds[policy].append(time.perf_counter() - start)
        K = judge_N_K_C.shape[1]
        print(f"\n{name}: information judged with K = {K} members (ln K = {math.log(K):.4f})")
        for policy, r in results.items():
            s = r.mode == "sampled"
            first_restart = np.flatnonzero(np.diff(r.segments))
            print(f"  {policy:<8} seconds {' '.join(f'{x:.2f}' for x in seconds[policy])}; "
                  f"sampled steps {s.sum()}, candidates scored per sampled step "
                  f"{r.num_evaluations[s].mean():.0f}, rows scored {r.rows_scored.sum():.3g}, "
                  f"saturated {r.saturated.sum()}, ambiguous {r.ambiguous.sum()}, "
                  f"segments {r.segments.max() + 1} (first restart after step "
                  f"{first_restart[0] if len(first_restart) else '-'})")
        same = int(np.argmax(results["greedy"].indices != results["restart"].indices))
        print(f"  picks identical for the first {same} steps")
        for size in (25, 50, 75, 100):
            line = []
            for policy, r in results.items():
                mi, se = batch_mutual_information(judge_N_K_C, r.indices[:size], args.draws,
                                                  args.seed + 1)
                line.append(f"{policy} {mi:.4f} ± {se:.4f}")
            print(f"  first {size:>3}: I(y_A; ω) = " + ";  ".join(line))


if __name__ == "__main__":
    main()
