"""The standard workloads on every runner installed, side by side in one run.

    python -m pytest benchmarks/bench_workloads.py --benchmark-enable \\
        [--workloads W1,W2|all] [--runners numpy,cython|all] [--memory]

Each round is one full batch; ``extra_info`` carries the picks and, with ``--memory``, the
peak memory NumPy allocated during a second, untimed run under tracemalloc (tracing slows
allocations, so it never runs inside the timed one). Compare ratios within one run: the
machine is shared and noisy. Anchors are skipped as by ``batchbald-fast bench`` (their
predicted peak over ``BATCHBALD_FAST_MEMORY_BUDGET``, else 4 GiB, or a time limit).
"""

import tracemalloc

import numpy as np
import pytest

from batchbald_fast._memory import resident_bytes
from batchbald_fast._workloads import (available_runners, bench_budget, import_runner_modules,
                                       skip_reason)


def test_workload(benchmark, request, workload, runner_name):
    runners = available_runners()
    if runner_name not in runners:
        pytest.skip(f"{runner_name} is not installed")
    reason = skip_reason(runner_name, workload, bench_budget() - resident_bytes())
    if reason:
        pytest.skip(f"{runner_name} on {workload.name}: {reason}")
    run = runners[runner_name]
    import_runner_modules([runner_name])
    probs_N_K_C = workload.probs()

    args = (probs_N_K_C, workload.batch_size, workload.num_samples)
    indices = benchmark.pedantic(run, args=args, rounds=1, iterations=1)
    benchmark.extra_info["picks"] = list(map(int, np.asarray(indices)))
    if benchmark.enabled and request.config.getoption("--memory"):
        tracemalloc.start()
        run(*args)
        benchmark.extra_info["peak_traced_mib"] = round(
            tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
