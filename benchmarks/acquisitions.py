"""The acquisitions' costs side by side: EPIG against baal's, stochastic batches, and the
README's "Choosing an acquisition" table.

    python benchmarks/acquisitions.py epig-vs-baal   # E1: ours (float64, float32), baal's
    python benchmarks/acquisitions.py e2             # E2: W6's pool, T = 2000, both dtypes
    python benchmarks/acquisitions.py stochastic     # b = 1000 from N = 10^6, each mode
    python benchmarks/acquisitions.py table          # W2, W3, W6: every acquisition

EPIG's pools and targets are docs/workloads.md's: ``make_probs(N, K, C, seed=0)`` and
``make_probs(T, K, C, seed=1)``. ``epig-vs-baal`` and ``e2`` run each call in a fresh
process and report its time and its peak RSS above the inputs (Linux's ``VmHWM``, reset
once the inputs exist and torch is imported, less the resident memory then); ``--repeat``
takes the best
time of that many processes. The other two time calls in this process, best of
``--repeat``.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from batchbald_fast import bald, batchbald, epig, stochastic_batch
from batchbald_fast._memory import format_bytes, resident_bytes
from batchbald_fast._stochastic import MODES
from batchbald_fast._workloads import WORKLOADS, make_probs
from batchbald_fast.demo import _best_seconds

E1 = {"N": 10000, "T": 1000, "K": 20, "C": 10}
E2 = {"N": 59000, "T": 2000, "K": 100, "C": 10}
TABLE_WORKLOADS = ("W2", "W3", "W6")
TABLE_TARGETS = 1000
# Our runners: epig's compute dtype.
RUNNER_DTYPES = {"batchbald_fast": np.float64, "batchbald_fast-float32": np.float32}


def inputs(N, T, K, C):
    return make_probs(N, K, C, seed=0), make_probs(T, K, C, seed=1)


def reset_peak():
    """Forget the peak RSS so far (Linux: the inputs' generation made temporaries)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_resident_bytes():
    """The process's peak RSS since :func:`reset_peak` (``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(runner, N, T, K, C, out):
    """One call in this (fresh) process: print its time and peak RSS above the inputs."""
    pool, targets = inputs(N, T, K, C)
    if runner == "baal":
        import torch  # noqa: F401  (imported before the baseline: its pages are not the call's)
        from baal.active.heuristics import EPIG
        pool, targets = (np.ascontiguousarray(a.transpose(0, 2, 1)) for a in (pool, targets))
        call = lambda: EPIG().compute_score(pool, targets)  # noqa: E731
    else:
        dtype = RUNNER_DTYPES[runner]
        call = lambda: epig(pool, targets, dtype=dtype)  # noqa: E731
    baseline = resident_bytes()
    reset_peak()
    cpu = time.process_time()
    start = time.perf_counter()
    scores = np.asarray(call(), dtype=np.float64)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    peak = peak_resident_bytes()
    np.save(out, scores)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "extra_bytes": peak - baseline,
                      "input_bytes": pool.nbytes + targets.nbytes}))


def fresh(runner, shape, repeat):
    """Best time of ``repeat`` fresh processes, the peak of the first, and its scores."""
    best, first = np.inf, None
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "scores.npy")
        for _ in range(repeat):
            done = subprocess.run(
                [sys.executable, __file__, "--child", runner, "--shape",
                 ",".join(str(shape[k]) for k in "NTKC"), "--out", out],
                capture_output=True, text=True, check=True)
            report = json.loads(done.stdout.strip().splitlines()[-1])
            best = min(best, report["seconds"])
            first = first or report
        return best, first, np.load(out)


def shape_line(shape):
    return ", ".join(f"{k} = {shape[k]}" for k in "NTKC")


def epig_vs_baal(args):
    print(f"E1 ({shape_line(E1)}), each call in a fresh process, best of {args.repeat}:")
    results = {runner: run_fresh(runner, E1, args.repeat) for runner in (*RUNNER_DTYPES, "baal")}
    theirs, theirs_scores = results["baal"]
    for runner in RUNNER_DTYPES:
        ours, ours_scores = results[runner]
        print(f"  baal / {runner}: {theirs / ours:.1f}x; max |difference| of the scores "
              f"{np.abs(ours_scores - theirs_scores).max():.2e} (baal computes in float32)")


def e2(args):
    print(f"E2 ({shape_line(E2)}), each call in a fresh process, best of {args.repeat}:")
    for runner in RUNNER_DTYPES:
        run_fresh(runner, E2, args.repeat)


def run_fresh(runner, shape, repeat):
    """``fresh``, its line printed; returns the best time and the scores."""
    seconds, report, scores = fresh(runner, shape, repeat)
    print(f"  {runner:<22} {seconds:8.2f} s ({report['cpu_seconds']:.1f} s of CPU)   "
          f"peak above the inputs {format_bytes(report['extra_bytes'])} (inputs "
          f"{format_bytes(report['input_bytes'])})", flush=True)
    return seconds, scores


def best_of(repeat, call):
    return _best_seconds(call, repeat)


def stochastic(args):
    scores_N = np.random.default_rng(0).random(10**6)
    print(f"stochastic_batch, b = 1000 from N = 10^6, best of {args.repeat}:")
    for mode in MODES:
        seconds = best_of(args.repeat, lambda: stochastic_batch(scores_N, 1000, mode=mode,
                                                                random_state=0))
        print(f"  {mode:<9} {seconds:.3f} s", flush=True)


def table(args):
    print(f"Per acquisition, seconds (best of {args.repeat}); EPIG with T = "
          f"{TABLE_TARGETS} targets; the stochastic draw on precomputed BALD scores:")
    print(f"{'workload':<8} {'N':>6} {'K':>4} {'C':>3} {'b':>3} {'M':>6}  {'BALD top-b':>10}  "
          f"{'EPIG top-b':>10}  {'power draw':>10}  {'BatchBALD':>9}")
    for name in TABLE_WORKLOADS:
        w = WORKLOADS[name]
        probs = w.probs()
        targets = make_probs(TABLE_TARGETS, w.K, w.C, seed=1)
        scores_N = bald(probs)
        cells = [best_of(args.repeat, lambda: bald(probs)),
                 best_of(args.repeat, lambda: epig(probs, targets)),
                 best_of(args.repeat, lambda: stochastic_batch(scores_N, w.batch_size,
                                                               random_state=0)),
                 best_of(args.repeat, lambda: batchbald(probs, w.batch_size,
                                                        num_samples=w.num_samples,
                                                        random_state=0))]
        print(f"{name:<8} {w.N:>6} {w.K:>4} {w.C:>3} {w.batch_size:>3} {w.num_samples:>6}  "
              + "  ".join(f"{c:>10.3f}" for c in cells[:3]) + f"  {cells[3]:>9.3f}",
              flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=["epig-vs-baal", "e2", "stochastic",
                                                    "table"])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        N, T, K, C = (int(x) for x in args.shape.split(","))
        child(args.child, N, T, K, C, args.out)
        return
    if args.what is None:
        parser.error("say what to measure")
    print(f"load average at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(a machine shared with other jobs)")
    {"epig-vs-baal": epig_vs_baal, "e2": e2, "stochastic": stochastic,
     "table": table}[args.what](args)


if __name__ == "__main__":
    main()
