"""Seconds and rows of ``_greedy.select`` settings on a standard workload, side by side.

    PYTHONPATH=. python benchmarks/sequential_speed.py W2 [--variants default,sequential] [--repeats 2]

Runs each variant of ``pick_fidelity.VARIANTS`` on the workload's input (``random_state=0``)
in turn, ``--repeats`` times, and prints per run the seconds, the candidate × configuration
rows scored, candidates scored per sampled step, ambiguous steps, the mean rows behind a
sampled pick, and the picks.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pick_fidelity import VARIANTS, run_variant  # noqa: E402

from batchbald_fast._workloads import WORKLOADS  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--variants", default="default,sequential",
                        help=f"comma-separated, of {sorted(VARIANTS)}")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    w = WORKLOADS[args.workload]
    probs_N_K_C = w.probs()
    run_variant("default", probs_N_K_C[:500], 2)  # warm-up: thread start-up
    for _ in range(args.repeats):
        for variant in args.variants.split(","):
            start = time.perf_counter()
            r = run_variant(variant, probs_N_K_C, w.batch_size, num_samples=w.num_samples,
                            random_state=0)
            seconds = time.perf_counter() - start
            s = r.mode == "sampled"
            print(f"{variant:>14} {seconds:8.2f} s, rows {r.rows_scored.sum():.3g}, "
                  f"candidates per sampled step {r.num_evaluations[s].mean():.0f}, "
                  f"ambiguous {r.ambiguous.sum()}, decision rows "
                  f"{r.decision_rows[s].mean():.0f}; picks {r.indices.tolist()}", flush=True)


if __name__ == "__main__":
    main()
