"""The memory budget: what a run may allocate, and what it will allocate at its peak.

A run's arrays are sized by its shape and settings alone: the exact joint of step t has
C^t rows, a pruned one at most ``num_samples``, a sampled one ``num_samples // K`` draws per
member (more, up to a byte cap, while they merge). So the run's peak is known before its
first step: :func:`plan` estimates it from the worst case of every step (pruning and
merging only shrink joints), counting each step's temporaries (argsort, cumsum, the draws
being extended, ``np.unique``'s) beside the state it builds on. A run over the budget either
gives up optional extra draws, which is all the algorithm can spare without changing what
the caller asked for, or stops with a :class:`MemoryBudgetError` before allocating anything.
"""

import math
import os
from dataclasses import dataclass

import numpy as np

from . import _greedy, _joint, _validation

ENV_VAR = "BATCHBALD_FAST_MEMORY_BUDGET"

_FLOAT = 8  # bytes of a float64 or an intp
# Bytes per draw of np.unique's sort of one int64 key per draw (the key, argsort, sorted
# copy, mask, inverse, first indices, counts).
_UNIQUE_BYTES_PER_DRAW = 8 * _FLOAT
# Bytes per row of the coarse grouping beside its chunked products: the sparse grouping
# matrix, the draw of first centres, each level's group ids, per-row sums, and a split's
# sort keys and ranks.
_COARSE_BYTES_PER_ROW = 14 * _FLOAT
# Of which kept while the step scores: sums, masses and a group id per level.
_COARSE_KEPT_BYTES_PER_ROW = 5 * _FLOAT
# Small arrays and objects no formula follows (the result, the candidates' bounds).
_SLACK_BYTES = 2**20


class MemoryBudgetError(ValueError):
    """A run whose estimated peak memory exceeds the memory budget, raised before it starts.

    Attributes
    ----------
    needed : int
        Estimated peak, in bytes, of the arrays the run would allocate.
    budget : float
        The budget, in bytes.
    max_num_samples : int or None
        The largest ``num_samples`` found to fit the budget (None when none does).
    """

    def __init__(self, message, needed, budget, max_num_samples):
        super().__init__(message)
        self.needed = needed
        self.budget = budget
        self.max_num_samples = max_num_samples


def format_bytes(num_bytes):
    """``12.3 GiB``-style figure."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{int(num_bytes)} B"


def available_memory():
    """Bytes a new allocation can take without swapping, or None where it cannot be read.

    Linux: ``MemAvailable`` of /proc/meminfo, within the cgroup's limit when one is set
    (containers). Elsewhere the free physical pages, else the physical memory.
    """
    figures = []
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    figures.append(int(line.split()[1]) * 1024)
                    break
    except OSError:
        pass
    for limit_path, usage_path in (
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
             "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_path) as limit, open(usage_path) as usage:
                text = limit.read().strip()
                if text != "max":  # cgroup v1 says "no limit" with a huge number instead
                    figures.append(max(0, int(text) - int(usage.read())))
        except (OSError, ValueError):
            continue
    if not figures:
        for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
            try:
                figures.append(os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE"))
                break
            except (ValueError, OSError, AttributeError):
                continue
    return min(figures) if figures else None


def resident_bytes():
    """This process's resident memory now (Linux; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return 0


def resolve_budget(memory_budget=None):
    """The budget in bytes (inf: none) and where it came from, for messages.

    ``memory_budget`` when given, else ``BATCHBALD_FAST_MEMORY_BUDGET``, else the available
    memory (no budget where that cannot be read).
    """
    if memory_budget is not None:
        budget = _validation.check_memory_budget(memory_budget)
        return budget, f"memory_budget={memory_budget!r}"
    text = os.environ.get(ENV_VAR, "").strip()
    if text:
        return _validation.check_memory_budget(text, name=ENV_VAR), f"{ENV_VAR}={text}"
    available = available_memory()
    if available is None:
        return math.inf, "no budget: available memory unknown"
    return float(available), "the available memory"


@dataclass(frozen=True)
class Run:
    """What decides a greedy run's memory: shapes and settings.

    ``scratch_bytes(M, n)`` is what the kernels allocate to score n candidates against M
    rows; ``lazy``, ``coarse_min_work`` and ``return_utilities`` decide whether a step
    groups its rows for bounds.
    """

    N: int
    K: int
    C: int
    num_candidates: int
    steps: int
    tol: float
    incremental: bool
    itemsize: int
    return_utilities: bool
    lazy: object
    coarse_min_work: int
    scratch_bytes: object
    extra_rounds: int = _greedy.EXTRA_ROUNDS

    def peak(self, num_samples, max_draw_bytes):
        """Estimated peak bytes of the run's arrays, and what reaches it.

        Exact steps grow with t and sampled ones with the labels per draw, so the first,
        the last exact, the two after it (their first pruned and sampled steps) and the
        last step are the only ones that can hold the peak.
        """
        K, C, N, F = self.K, self.C, self.N, _FLOAT
        last_exact = 0
        while last_exact + 1 < self.steps and C ** (last_exact + 1) <= num_samples:
            last_exact += 1
        base = _SLACK_BYTES + N * K * F + 4 * N * F + N + 12 * self.steps * F
        if self.itemsize == 4:
            base += N * K * C * 4  # the float32 copy of the probabilities
        if self.return_utilities:
            base += self.steps * N * F
        # Conditional entropies: one per member and point, and a tile of p log p.
        found = (N * K * F + min(N * K * C * F, 64 * 2**20), "the conditional entropies")
        for t in sorted({0, last_exact, last_exact + 1, last_exact + 2, self.steps - 1}):
            if 0 <= t < self.steps:
                found = max(found, *self._step(t, num_samples, max_draw_bytes),
                            key=lambda item: item[0])
        return base + found[0], found[1]

    def _step(self, t, num_samples, max_draw_bytes):
        """(bytes, what) of step t's transition to its joint and of its scoring."""
        K, C, F = self.K, self.C, _FLOAT
        f32 = K * 4 if self.itemsize == 4 else 0  # the joint's float32 copy, per row

        def exact(M):
            return M * (K + 1) * F

        def draws(D, A):
            return D * F * (A + K + 2)  # labels, log joint, member and rank

        def unique(D, A):  # int64 keys, or the rows themselves past 63 bits
            return D * _UNIQUE_BYTES_PER_DRAW + (D * A * F if A * math.log2(C) >= 63 else 0)

        def extend(D):  # one more label: cdf, uniforms, comparison, labels, log-prob rows
            return D * (F * (C + K + 5) + C)

        def merged(U):  # the joint, its scales, weights and counts, and their temporaries
            return U * F * (3 * K + 4)

        if t == 0:
            return [self._scoring(t, 1, exact(1) + f32, sampled=False)]
        if C ** t <= num_samples:
            M = C ** t
            return [(exact(M // C) + M // C * f32 + exact(M),
                     f"step {t}: the exact joint of {M} configurations x {K} members"),
                    self._scoring(t, M, exact(M) + M * f32, sampled=False)]

        previous = min(C ** (t - 1), num_samples)  # rows of an exact or pruned joint
        held = exact(previous) + previous * f32
        phases = []
        if self.tol > 0:
            E = C * previous
            phases.append((held + E * F * (K + 6) + E + min(E, num_samples) * F * (K + 2),
                           f"step {t}: pruning the exact joint of {E} configurations"))
        S = max(1, num_samples // K)
        D = S * K

        def carried(A):  # draws kept after fitting A points' draws to the budget
            if not self.incremental:
                return D
            cap = max_draw_bytes // (K * F * (K + A + 2))
            return max(D, K * min(_joint.MAX_GROWTH * S, cap))

        def rows(A):
            if not self.incremental:
                return min(D, C ** A)
            return min(carried(A), C ** A, max(num_samples, K))

        fresh = draws(D, t) + extend(D)  # fresh draws fill arrays allocated once
        Dc = carried(t)
        merge = draws(Dc, t) + unique(Dc, t) + merged(rows(t))
        label = f"step {t}: {Dc} sampled configurations of {t} labels"
        if self.incremental:
            # Fitting grows the draws (the last round draws as many again as it has, then
            # concatenates) or keeps some (a copy); the draws it started from stay held.
            half = Dc // 2
            fit = max(2 * draws(half, t) + extend(half),
                      2 * draws(Dc, t), draws(Dc, t) + unique(Dc, t), merge)
            phases.append((held + max(fresh, draws(D, t) + fit), label))
            if C ** (t - 1) > num_samples:  # the previous step may have sampled
                Dp = carried(t - 1)
                held_sampled = draws(Dp, t - 1) + merged(rows(t - 1)) + rows(t - 1) * f32
                phases.append((held_sampled + draws(Dp, t) + max(extend(Dp), fit), label))
            state = draws(Dc, t) + merged(rows(t))
        else:
            held = max(held, merged(rows(t - 1)) + rows(t - 1) * f32)
            phases.append((held + max(fresh, merge), label))
            state = merged(rows(t))
        M = max(rows(t), num_samples if self.tol > 0 else 0)
        if self.tol > 0:
            state = max(state, exact(num_samples))
        return phases + [self._scoring(t, M, state + M * f32, sampled=True)]

    def _scoring(self, t, M, state, sampled):
        """Scoring M rows: the coarse grouping, then the kernels' scratch, then the noise
        terms, one after the other."""
        F, n = _FLOAT, self.num_candidates
        extra = self.scratch_bytes(M, n)
        if self.lazy is not False and not self.return_utilities and \
                (n - t) * M >= self.coarse_min_work:
            # The levels, grouped on demand, keep their rows' sums and groups while scoring.
            extra = max(extra + M * _COARSE_KEPT_BYTES_PER_ROW,
                        M * _COARSE_BYTES_PER_ROW + _joint.COARSE_CHUNK_BYTES)
        if sampled:  # two candidates' P (M x C), p log p and per-row terms
            extra = max(extra, M * F * (2 * self.C + 6))
        if sampled and self.extra_rounds and self.lazy is None and not self.return_utilities:
            # Fresh draws for the contenders: a state of new draws beside the step's, a
            # round's per-row terms (within the rounds' share of the step's rows) and its
            # chunk of P with their entropies.
            terms = min(_greedy.EXTRA_WORK * (n - t) * M, _greedy.EXTRA_ROWS_MAX)
            extra = max(extra, state + terms * F
                        + 2 * min(_joint.TERMS_CHUNK_BYTES, terms * self.C * F))
        return (state + 10 * n * F + extra,
                f"step {t}: scoring {n - t} candidates against {M} configurations")


def plan(run, num_samples, budget, source):
    """The draws' byte cap that keeps the run within ``budget``, or an error saying why not.

    Parameters
    ----------
    run : Run
    num_samples : int
    budget : float
        Bytes (inf: no budget).
    source : str
        Where the budget came from, for the message.

    Returns
    -------
    max_draw_bytes : int
        Cap of the optional extra draws of sampled steps (``_joint.MAX_DRAW_BYTES`` unless
        the budget needs less).

    Raises
    ------
    MemoryBudgetError
        If even without extra draws the run's estimated peak exceeds the budget.
    """
    needed, what = run.peak(num_samples, _joint.MAX_DRAW_BYTES)
    if needed <= budget:
        return _joint.MAX_DRAW_BYTES
    if run.peak(num_samples, 0)[0] <= budget:
        # The peak grows with the cap: the largest cap that fits, to 1/64 of the default.
        lo, hi = 0, _joint.MAX_DRAW_BYTES
        while hi - lo > _joint.MAX_DRAW_BYTES // 64:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if run.peak(num_samples, mid)[0] <= budget else (lo, mid)
        return lo
    fits = _num_samples_that_fit(run, num_samples, budget)
    advice = (f"Lower num_samples={num_samples} to {fits}, which fits," if fits is not None
              else "It does not fit with num_samples=1 either: lower batch_size"
              + (" or pass return_utilities=False," if run.return_utilities else ","))
    raise MemoryBudgetError(
        f"the run needs an estimated {format_bytes(needed)} ({what}), over the memory "
        f"budget of {format_bytes(budget)} ({source}). {advice} or raise the budget "
        f"(memory_budget=, {ENV_VAR} or --memory-budget)",
        needed, budget, fits)


def _num_samples_that_fit(run, num_samples, budget):
    """The largest of a few ``num_samples`` below the one asked for that fits (None if
    none): the exact sizes C^t and a grid of four per halving. The peak is not monotone
    in num_samples (just below C^t a step samples where C^t lets it enumerate), hence no
    bisection."""
    candidates = {num_samples * 2 ** (-j / 4) for j in range(4 * num_samples.bit_length())}
    candidates = {max(1, int(c)) for c in candidates}
    t = 0
    while t < run.steps and run.C ** t <= num_samples:
        candidates.add(run.C ** t)
        t += 1
    for candidate in sorted(candidates, reverse=True):
        if candidate < num_samples and run.peak(candidate, 0)[0] <= budget:
            return candidate
    return None


def make_run(kernels, probs_N_K_C, num_candidates, batch_size, *, tol=0.0,
             incremental=False, dtype=np.float64, return_utilities=False, lazy=None,
             num_threads=None, extra_rounds=_greedy.EXTRA_ROUNDS):
    """The :class:`Run` of a greedy call with these arguments (validated)."""
    N, K, C = probs_N_K_C.shape
    itemsize = np.dtype(dtype).itemsize

    def scratch_bytes(M, n):
        return kernels.scratch_bytes(M, K, C, n, itemsize, num_threads)

    return Run(N, K, C, num_candidates, min(batch_size, num_candidates), tol, incremental,
               itemsize, return_utilities, lazy, _greedy.COARSE_MIN_WORK, scratch_bytes,
               extra_rounds)


def check(kernels, probs_N_K_C, num_candidates, batch_size, num_samples, *,
          memory_budget=None, **settings):
    """Plan a greedy call within the memory budget (:func:`plan`), before it allocates.

    ``settings`` are those of :func:`make_run`.

    Returns
    -------
    max_draw_bytes : int
        For ``_joint.fit_budget``.
    """
    run = make_run(kernels, probs_N_K_C, num_candidates, batch_size, **settings)
    return plan(run, num_samples, *resolve_budget(memory_budget))
