"""The standard benchmark workloads: shapes, the input generator, and the runners.

Shared by ``benchmarks/`` and the ``batchbald-fast bench`` command, so that every speed
figure of the project is quoted on the same inputs and the same calls.
"""

import contextlib
import importlib
import importlib.util
import os
from dataclasses import dataclass

import numpy as np

from . import _sizes


@dataclass(frozen=True)
class Workload:
    name: str
    N: int
    K: int
    C: int
    batch_size: int
    num_samples: int
    scale: float = 3.0
    noise: float = 1.0

    def probs(self, seed=0):
        return make_probs(self.N, self.K, self.C, seed=seed, scale=self.scale,
                          noise=self.noise)


WORKLOADS = {w.name: w for w in [
    Workload("W1", 2000, 20, 2, 8, 1000),
    Workload("W2", 10000, 20, 10, 10, 10000),
    Workload("W2c", 10000, 20, 10, 10, 10000, scale=8.0, noise=0.5),
    Workload("W3", 50000, 20, 10, 5, 1000),
    Workload("W4", 5000, 10, 100, 5, 10000),
    Workload("W5", 200, 10, 2, 4, 10),
    Workload("W6", 59000, 100, 10, 10, 40000),
    # Large batches, 95 steps past the exact ones; W7s (W2's input) nears ln K in ~20 picks.
    Workload("W7", 10000, 100, 10, 100, 10000),
    Workload("W7s", 10000, 20, 10, 100, 10000),
]}


@dataclass(frozen=True)
class ChunkedWorkload(Workload):
    """A pool generated chunk by chunk and kept in float32: chunk i from seed
    ``first_seed + i``, so that no process ever holds it in float64."""
    chunk: int = 125_000
    first_seed: int = 0

    def chunk_probs(self, i, seed=0):
        n = min(self.chunk, self.N - i * self.chunk)
        return make_probs(n, self.K, self.C, seed=self.first_seed + seed + i,
                          scale=self.scale, noise=self.noise).astype(np.float32)

    def probs(self, seed=0):
        return np.concatenate([self.chunk_probs(i, seed)
                               for i in range(-(-self.N // self.chunk))])

    def write_zarr(self, path):
        """Write the pool to a zarr store at ``path``, one zarr chunk per chunk."""
        import zarr

        store = zarr.open(str(path), mode="w", shape=(self.N, self.K, self.C),
                          chunks=(self.chunk, self.K, self.C), dtype=np.float32)
        for i in range(-(-self.N // self.chunk)):
            store[i * self.chunk:(i + 1) * self.chunk] = self.chunk_probs(i)
        return store


# Out of core and on Dask (benchmarks/w8_dask.py): 1.5 GiB of float32 in a zarr store.
W8 = ChunkedWorkload("W8", 2_000_000, 20, 10, 10, 10000, chunk=125_000, first_seed=900)

# Run by default: seconds each on the NumPy backend.
DEFAULT = ("W1", "W3", "W5")

# The memory ``bench`` may take unless told otherwise: the plain command then fits an 8 GB
# laptop, and skips the same anchors on every machine with that much free.
BENCH_MEMORY_BUDGET = 4 * 2**30

# Where the reference implementations are not run for their time (docs/workloads.md);
# their memory is predicted from their array shapes (``ANCHOR_PEAK_BYTES``).
ANCHOR_SKIPS = {
    "batchbald_redux": {"W4": "~6 min", "W6": "hours", "W7": "hours",
                        "W7s": "~30 min (~18 s per step at W2's size)"},
}


def _largest_joint(w):
    """Rows of the reference implementations' largest joint on workload w: C^t while that
    is at most M, then M // K draws per member."""
    t = _sizes.last_exact_step(w.C, w.num_samples, w.batch_size)
    sampled = w.K * (w.num_samples // w.K) if w.C ** (w.batch_size - 1) > w.num_samples else 0
    return max(w.C ** t, sampled)


# Peak bytes each reference implementation allocates beyond its imports, from its array
# shapes, checked against benchmarks/peak_rss.py (process peak less the imports'):
# - scikit-activeml 1.0.1 scores every candidate at once: P (N × M × C float64), its log
#   and their product (1.4 GiB at N=5000, M=1000, C=10 where P is 0.37 GiB; W3 12.3 GB);
# - batchbald_redux 2.0.5 does the same in chunks of 1024 candidates (3.0 GiB at N=1024
#   and at N=3000, M=10^4, C=10; P is 0.76 GiB); both also hold a few N × K × C arrays;
# - baal 2.1.0 samples every step (M = K·(num_samples // K)), holds N × M × C twice while
#   dividing it by K, then once beside two chunks of 10000 candidates (2.2 GiB at
#   N=2000, M=5000, C=10; 1.5 GiB at N=20000, M=500).
ANCHOR_PEAK_BYTES = {
    "scikit-activeml": lambda w: 8 * (3 * w.N * _largest_joint(w) * w.C + 3 * w.N * w.K * w.C),
    "batchbald_redux": lambda w: 8 * (3 * min(w.N, 1024) * _largest_joint(w) * w.C
                                      + 3 * w.N * w.K * w.C),
    "baal": lambda w: 8 * w.K * max(1, w.num_samples // w.K) * w.C * max(
        2 * w.N, w.N + 2 * min(w.N, 10_000)),
}


def bench_budget(memory_budget=None):
    """Bytes a benchmark's process may reach: ``memory_budget``, else
    ``BATCHBALD_FAST_MEMORY_BUDGET``, else the least of 4 GiB and the available memory."""
    from . import _memory

    if memory_budget is not None or os.environ.get(_memory.ENV_VAR, "").strip():
        return _memory.resolve_budget(memory_budget)[0]
    return min(BENCH_MEMORY_BUDGET, _memory.available_memory() or BENCH_MEMORY_BUDGET)


def skip_reason(runner_name, w, room):
    """Why a reference implementation is not run on workload w, or None: its predicted
    peak over ``room`` (the bytes the budget leaves), or a hand-kept time limit."""
    from ._memory import format_bytes

    predict = ANCHOR_PEAK_BYTES.get(runner_name)
    if predict is not None and predict(w) > room:
        return (f"predicted peak {format_bytes(predict(w))} over the {format_bytes(room)} "
                "the memory budget leaves (--memory-budget)")
    return ANCHOR_SKIPS.get(runner_name, {}).get(w.name)


# The libraries the runners import at their first call: imported before any timing.
RUNNER_MODULES = {"batchbald_redux": "batchbald_redux.batchbald",
                  "scikit-activeml": "skactiveml.pool",
                  "baal": "baal.active.heuristics",
                  "batchbald_fast.baal": "batchbald_fast.baal"}


# Runners whose picks may differ from the others' on exact steps, and why.
DIFFERS_BY_DESIGN = {
    "baal": "baal 2.1.0 samples the joint on every step (num_draw configurations per "
            "posterior sample), also where the joint is small enough to be exact",
}


def differing_runners(picks):
    """Runners whose picks are not the most common picks (ties: the first runner's).

    Parameters
    ----------
    picks : dict
        ``{runner: list of pool indices}``, in the table's order.

    Returns
    -------
    names : list of str
    """
    lists = [tuple(p) for p in picks.values()]
    common = max(lists, key=lists.count) if lists else ()
    return [name for name, p in picks.items() if tuple(p) != common]


def import_runner_modules(names):
    """Import the libraries of these runners now, so that no timing includes the import."""
    for name in names:
        if name in RUNNER_MODULES:
            importlib.import_module(RUNNER_MODULES[name])


def make_probs(N, K, C, seed=0, scale=3.0, noise=1.0):
    """MC-dropout-like posterior samples: a per-point mean logit plus per-member noise."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(scale=scale, size=(N, 1, C))
    logits = mean + rng.normal(scale=noise, size=(N, K, C))
    logits -= logits.max(axis=2, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=2, keepdims=True)


# Our algorithm scoring every candidate, without pruning and incremental sampling (merging
# stays: it changes nothing but M): what the compiled core alone gives.
PLAIN = {"lazy": False, "tol": 0.0, "incremental": False}


def run_batchbald_fast(backend, **options):
    """A runner on one of our backends: ``run(probs_N_K_C, batch_size, num_samples,
    num_threads) -> indices``; ``options`` go to ``batchbald``."""
    def run(probs_N_K_C, batch_size, num_samples, num_threads=None):
        from . import batchbald
        previous = os.environ.get("BATCHBALD_FAST_BACKEND")
        os.environ["BATCHBALD_FAST_BACKEND"] = backend
        try:
            return batchbald(probs_N_K_C, batch_size, num_samples=num_samples,
                             random_state=0, num_threads=num_threads, **options).indices
        finally:
            if previous is None:
                del os.environ["BATCHBALD_FAST_BACKEND"]
            else:
                os.environ["BATCHBALD_FAST_BACKEND"] = previous
    return run


def run_batchbald_redux(probs_N_K_C, batch_size, num_samples, num_threads=None):
    """batchbald_redux 2.0.5 on torch's CPU, float64, on the same thread count."""
    import torch
    from batchbald_redux.batchbald import get_batchbald_batch

    if num_threads is not None:
        torch.set_num_threads(num_threads)
    torch.manual_seed(0)
    log_probs = torch.from_numpy(np.log(probs_N_K_C))
    batch = get_batchbald_batch(log_probs, batch_size, num_samples, dtype=torch.double)
    return np.asarray(batch.indices)


def run_scikit_activeml(probs_N_K_C, batch_size, num_samples, num_threads=None):
    """scikit-activeml 1.0.1's ``batch_bald`` (it clips its input: it gets a copy)."""
    from skactiveml.pool import batch_bald

    utilities = batch_bald(probs_N_K_C.transpose(1, 0, 2).copy(), batch_size,
                           n_MC_samples=num_samples, random_state=0)
    return np.nanargmax(utilities, axis=1)


def _thread_limit(num_threads):
    """BLAS and OpenMP threads (ours follow OpenMP's limit) capped, or left alone for None:
    scanning the libraries torch loads costs ~10 ms."""
    if num_threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(num_threads)


class _RecordingArray(np.ndarray):
    """Keeps the first list an index takes: baal's ``predictions[history]`` hands it the
    very list it appends each pick to, so afterwards it holds the picks in pick order."""

    history = None

    def __getitem__(self, index):
        if isinstance(index, list) and _RecordingArray.history is None:
            _RecordingArray.history = index
        return super().__getitem__(index)


def run_baal(probs_N_K_C, batch_size, num_samples, num_threads=None):
    """baal 2.1.0's ``BatchBALD(batch_size, num_draw=num_samples // K)`` as an
    ``ActiveLearningLoop`` calls it (``get_ranks`` on [N, C, K]; it picks ``batch_size + 1``
    points); returns its first ``batch_size`` picks in pick order."""
    import torch
    from baal.active.heuristics import BatchBALD

    if num_threads is not None:
        torch.set_num_threads(num_threads)
    torch.manual_seed(0)
    np.random.seed(0)
    K = probs_N_K_C.shape[1]
    predictions = np.ascontiguousarray(probs_N_K_C.transpose(0, 2, 1)).view(_RecordingArray)
    _RecordingArray.history = None
    with _thread_limit(num_threads):
        BatchBALD(batch_size, num_draw=max(1, num_samples // K)).get_ranks(predictions)
    return np.asarray(_RecordingArray.history[:batch_size])


def run_baal_adapter(probs_N_K_C, batch_size, num_samples, num_threads=None):
    """Our ``batchbald_fast.baal.BatchBALD`` in baal's place, the same call; returns the
    first ``batch_size`` ranks (the picks, in pick order)."""
    from .baal import BatchBALD

    K = probs_N_K_C.shape[1]
    predictions = np.ascontiguousarray(probs_N_K_C.transpose(0, 2, 1))
    heuristic = BatchBALD(batch_size, num_draw=max(1, num_samples // K), random_state=0)
    with _thread_limit(num_threads):
        return heuristic(predictions)[:batch_size]


def available_runners():
    """Runners installed here, by name: our backends (each also ``-plain``, scoring every
    candidate, without pruning and incremental sampling), then the reference implementations."""
    from ._backend import _kernels_compiled

    backends = ["numpy"] + (["cython"] if _kernels_compiled is not None else [])
    runners = {}
    for backend in backends:
        runners[backend] = run_batchbald_fast(backend)
        runners[f"{backend}-plain"] = run_batchbald_fast(backend, **PLAIN)
    if all(importlib.util.find_spec(m) for m in ("torch", "batchbald_redux", "toma")):
        runners["batchbald_redux"] = run_batchbald_redux
    if importlib.util.find_spec("skactiveml"):
        runners["scikit-activeml"] = run_scikit_activeml
    if all(importlib.util.find_spec(m) for m in ("torch", "baal")):
        runners["baal"] = run_baal
        runners["batchbald_fast.baal"] = run_baal_adapter
    return runners
