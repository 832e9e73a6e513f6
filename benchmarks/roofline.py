"""Roofline of this machine for BatchBALD, and how close the compiled backend gets.

A greedy step scoring n candidates against M configurations costs n·M·K·C multiply-adds
(a GEMM) and n·M·C logs, so a run cannot beat

    Σ_steps 2·n·M·K·C / (GEMM flop rate) + n·M·C / (log rate)

with M = C^t while C^t ≤ num_samples, else (num_samples // K)·K, and n = N − t. The rates
are measured here on ``--threads`` threads: float64 GEMM through NumPy's BLAS; logs at the
faster of NumPy's (single-threaded, times the threads) and the compiled kernels' own
vectorised log (``entropy_rows``). Bounds that rule candidates out, pruning and merged
duplicate configurations skip work the formula counts, and the fused kernel overlaps
multiplies with logs (the sum is then not a strict bound), so a fraction above 1 is
possible; the last columns recount the bound with the rows each step of the run really
scored, ``result.rows_scored`` (fraction = bound / measured: 1 is the
roofline, 0.67 is 1.5x slower).

    python benchmarks/roofline.py [--measure [--plain]] [--threads 2] [W1 W2 ...]

It also reports the scoring kernel's own rate on each workload's sampled step, float64
and float32, as GFLOP/s of its product beside the square GEMM's of the same dtype.

Quote ratios from one quiet run: check ``uptime`` first. The machine may set
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which pick a slower GEMM kernel; unset them in the
command (``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python ...``) for the real peak.
"""

import argparse
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

from batchbald_fast._workloads import PLAIN, WORKLOADS


def best_time(fn, repeat=5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_rate(threads, dtype=np.float64):
    """flop/s of NumPy's matmul in ``dtype``: a square product (peak) and the kernel's
    shape."""
    rates = {}
    for name, (m, k, n) in {"square 3000": (3000, 3000, 3000),
                            "K=20 (10000x20)@(20x2000)": (10000, 20, 2000)}.items():
        a, b = np.random.rand(m, k).astype(dtype), np.random.rand(k, n).astype(dtype)
        with threadpool_limits(threads, user_api="blas"):
            a @ b
            rates[name] = 2 * m * k * n / best_time(lambda: a @ b)
    return rates


def kernel_rate(w, threads, dtype):
    """flop/s of the compiled scoring kernel (its product counted as a GEMM's, the logs
    free) on a sampled step of workload ``w``: (num_samples // K)·K joint rows against
    500 candidates."""
    from batchbald_fast import _kernels

    rng = np.random.default_rng(0)
    M, n = (w.num_samples // w.K) * w.K, 500
    joint_M_K = (rng.dirichlet(np.ones(w.K), size=M) / w.K).astype(dtype)
    probs_N_K_C = rng.dirichlet(np.full(w.C, 0.5), size=(n, w.K)).astype(dtype)
    weights_M, out = np.full(M, 1.0 / M), np.empty(n)
    candidates = np.arange(n, dtype=np.intp)
    seconds = best_time(lambda: _kernels.score_candidates(
        joint_M_K, weights_M, probs_N_K_C, candidates, out, threads), 3)
    return 2 * n * M * w.K * w.C / seconds


def log_rates(threads):
    """Logs/s: NumPy's (one thread) and the compiled kernels' (``threads`` threads)."""
    x = np.random.default_rng(0).random((2**18, 8))
    out = np.empty_like(x)
    rates = {"numpy log (1 thread)": x.size / best_time(lambda: np.log(x, out=out), 20)}
    try:
        from batchbald_fast import _kernels
    except ImportError:
        return rates
    rows = np.empty(len(x))
    rates[f"kernel x·log x ({threads} threads)"] = x.size / best_time(
        lambda: _kernels.entropy_rows(x, rows, threads), 20)
    return rates


def bound(w, flops, logs, result=None):
    """Lower bound on the time of one run of workload ``w``, in seconds: every candidate
    against M = C^t or the sampled budget per step, or — given a run's ``result`` — the
    configurations and candidates that run really scored."""
    total = 0.0
    for t in range(w.batch_size):
        M = w.C ** t if w.C ** t <= w.num_samples else (w.num_samples // w.K) * w.K
        rows = (w.N - t) * M
        if result is not None:
            rows = result.rows_scored[t]
        total += 2 * rows * w.K * w.C / flops + rows * w.C / logs
    return total


def measure(w, threads, plain):
    import batchbald_fast

    os.environ["BATCHBALD_FAST_BACKEND"] = "cython"
    probs = w.probs()
    start = time.perf_counter()
    result = batchbald_fast.batchbald(probs, w.batch_size, num_samples=w.num_samples,
                                      random_state=0, num_threads=threads,
                                      **(PLAIN if plain else {}))
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", default=list(WORKLOADS))
    parser.add_argument("--measure", action="store_true", help="time the compiled backend")
    parser.add_argument("--plain", action="store_true",
                        help="measure without bounds, pruning and incremental sampling "
                             "(the work the bound counts)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    print(f"load average {os.getloadavg()[0]:.2f}; OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    # The kernels first: OpenBLAS's threads spin ~0.1 s after a GEMM, and a kernel call
    # started then runs on the one core they leave free (batchbald_fast._threads).
    logs = log_rates(args.threads)
    kernel = {}
    for name in args.workloads:
        for dtype in (np.float64, np.float32):
            try:
                kernel[name, dtype] = kernel_rate(WORKLOADS[name], args.threads, dtype)
            except ImportError:
                break
    gemm = gemm_rate(args.threads)
    for name, rate in gemm.items():
        print(f"GEMM {name}: {rate / 1e9:.1f} GFLOP/s on {args.threads} threads")
    for name, rate in logs.items():
        print(f"{name}: {rate / 1e9:.2f}e9 logs/s")
    flops = gemm["square 3000"]
    peaks = {np.float64: flops, np.float32: gemm_rate(args.threads, np.float32)["square 3000"]}
    for (name, dtype), rate in kernel.items():
        print(f"{name} sampled step, kernel {np.dtype(dtype).name}: {rate / 1e9:.1f} "
              f"GFLOP/s, {rate / peaks[dtype]:.0%} of GEMM's {peaks[dtype] / 1e9:.1f}")
    log_rate = max(logs["numpy log (1 thread)"] * args.threads,
                   *[r for k, r in logs.items() if k.startswith("kernel")])
    print(f"bound uses {flops / 1e9:.1f} GFLOP/s and {log_rate / 1e9:.2f}e9 logs/s\n")
    # Bounds, pruning and merging skip work the formula counts: "bound of run" recounts
    # with the rows each step really scored.
    print(f"{'workload':8} {'bound s':>9}" + (
        f" {'measured s':>11} {'fraction':>9} {'bound of run':>13} {'fraction':>9}"
        if args.measure else ""))
    for name in args.workloads:
        w = WORKLOADS[name]
        b = bound(w, flops, log_rate)
        line = f"{name:8} {b:9.3f}"
        if args.measure:
            seconds, result = measure(w, args.threads, args.plain)
            b_run = bound(w, flops, log_rate, result)
            line += f" {seconds:11.3f} {b / seconds:9.2f} {b_run:13.3f} {b_run / seconds:9.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
