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

from . import _sizes, _validation

ENV_VAR = "BATCHBALD_FAST_MEMORY_BUDGET"

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
    """What decides a greedy run's memory: its shapes and settings.

    Every size comes from ``_sizes``, the definitions the engine allocates by; the
    settings decide which allocations a step makes (coarse bounds, contender rounds).
    """

    N: int
    K: int
    C: int
    num_candidates: int
    steps: int
    settings: object
    # False for a pool on Dask: its per-point arrays and the kernels' scratch are its
    # chunks' workers', and the client holds the O(M) joints and contender rounds only.
    points_here: bool = True

    @property
    def _f32(self):
        """Bytes per joint row of the joint's float32 copy (0 in float64)."""
        return self.K * 4 if np.dtype(self.settings.dtype).itemsize == 4 else 0

    def peak(self, num_samples, max_draw_bytes):
        """Estimated peak bytes of the run's arrays, and what reaches it.

        Exact steps grow with t and sampled ones with the labels per draw, so the first,
        the last exact, the two after it (their first pruned and sampled steps) and the
        last step are the only ones that can hold the peak.
        """
        K, C, N, F = self.K, self.C, self.N, _sizes.FLOAT
        last_exact = _sizes.last_exact_step(C, num_samples, self.steps)
        base = _SLACK_BYTES + 12 * self.steps * F
        found = (0, "the batch's rows")
        if self.points_here:
            base += N * K * F + 4 * N * F + N
            if self._f32:
                base += N * K * C * 4  # the float32 copy of the probabilities
            if self.settings.return_utilities:
                base += self.steps * N * F
            # Conditional entropies: one per member and point, and a tile of p log p.
            found = (N * K * F + min(N * K * C * F, 64 * 2**20), "the conditional entropies")
        for t in sorted({0, last_exact, last_exact + 1, last_exact + 2, self.steps - 1}):
            if 0 <= t < self.steps:
                found = max(found, *self._step(t, num_samples, max_draw_bytes),
                            key=lambda item: item[0])
        return base + found[0], found[1]

    def _carried(self, A, num_samples, max_draw_bytes):
        """Draws kept after fitting A points' draws to the budget."""
        D = self.K * _sizes.draws_per_member(num_samples, self.K)
        if not self.settings.incremental:
            return D
        return max(D, self.K * _sizes.max_draws_per_member(num_samples, self.K, A,
                                                           max_draw_bytes))

    def _rows(self, A, num_samples, max_draw_bytes):
        """Distinct rows of a sampled joint of A labels, at most."""
        carried = self._carried(A, num_samples, max_draw_bytes)
        if not self.settings.incremental:
            return min(carried, self.C ** A)
        return min(carried, self.C ** A, max(num_samples, self.K))

    def _step(self, t, num_samples, max_draw_bytes):
        """(bytes, what) of step t's transition to its joint and of its scoring."""
        K, C, F, f32 = self.K, self.C, _sizes.FLOAT, self._f32
        if t == 0:
            return [self._scoring(t, 1, _sizes.exact_bytes(1, K) + f32, sampled=False)]
        if C ** t <= num_samples:
            M = C ** t
            return [(_sizes.exact_bytes(M // C, K) + M // C * f32 + _sizes.exact_bytes(M, K),
                     f"step {t}: the exact joint of {M} configurations x {K} members"),
                    self._scoring(t, M, _sizes.exact_bytes(M, K) + M * f32, sampled=False)]
        previous = min(C ** (t - 1), num_samples)  # rows of an exact or pruned joint
        held = _sizes.exact_bytes(previous, K) + previous * f32
        phases = []
        if self.settings.tol > 0:
            E = C * previous
            phases.append((held + E * F * (K + 6) + E + min(E, num_samples) * F * (K + 2),
                           f"step {t}: pruning the exact joint of {E} configurations"))
        D = K * _sizes.draws_per_member(num_samples, K)
        Dc = self._carried(t, num_samples, max_draw_bytes)
        U, U_before = (self._rows(A, num_samples, max_draw_bytes) for A in (t, t - 1))
        fresh = _sizes.draw_bytes(D, t, K) + _sizes.extend_bytes(D, K, C)  # filled in place
        merging = _sizes.draw_bytes(Dc, t, K) + _sizes.unique_bytes(Dc, t, C)
        merge = merging + _sizes.merged_bytes(U, K)
        label = f"step {t}: {Dc} sampled configurations of {t} labels"
        if self.settings.incremental:
            # Fitting grows the draws (the last round draws as many again as it has, then
            # concatenates) or keeps some (a copy); the draws it started from stay held.
            half = Dc // 2
            fit = max(2 * _sizes.draw_bytes(half, t, K) + _sizes.extend_bytes(half, K, C),
                      2 * _sizes.draw_bytes(Dc, t, K), merging, merge)
            phases.append((held + max(fresh, _sizes.draw_bytes(D, t, K) + fit), label))
            if C ** (t - 1) > num_samples:  # the previous step may have sampled
                Dp = self._carried(t - 1, num_samples, max_draw_bytes)
                held_sampled = (_sizes.draw_bytes(Dp, t - 1, K)
                                + _sizes.merged_bytes(U_before, K) + U_before * f32)
                phases.append((held_sampled + _sizes.draw_bytes(Dp, t, K)
                               + max(_sizes.extend_bytes(Dp, K, C), fit), label))
            state = _sizes.draw_bytes(Dc, t, K) + _sizes.merged_bytes(U, K)
        else:
            held = max(held, _sizes.merged_bytes(U_before, K) + U_before * f32)
            phases.append((held + max(fresh, merge), label))
            state = _sizes.merged_bytes(U, K)
        M = max(U, num_samples if self.settings.tol > 0 else 0)
        if self.settings.tol > 0:
            state = max(state, _sizes.exact_bytes(num_samples, K))
        return phases + [self._scoring(t, M, state + M * f32, sampled=True)]

    def _scoring(self, t, M, state, sampled):
        """Scoring M rows: the coarse grouping, then the kernels' scratch, then the noise
        terms, one after the other."""
        F, n, settings = _sizes.FLOAT, self.num_candidates, self.settings
        per_point, extra = 0, 0
        if self.points_here:
            per_point = 10 * n * F
            extra = settings.kernels.scratch_bytes(M, self.K, self.C, n,
                                                   np.dtype(settings.dtype).itemsize)
        if settings.coarse_bounds(n - t, M):
            # The levels, grouped on demand, keep their rows' sums and groups while scoring.
            extra = max(extra + M * _sizes.COARSE_KEPT_BYTES_PER_ROW,
                        M * _sizes.COARSE_BYTES_PER_ROW + _sizes.COARSE_CHUNK_BYTES)
        if sampled:  # two candidates' P (M x C), p log p and per-row terms
            extra = max(extra, M * F * (2 * self.C + 6))
        if sampled and settings.rounds_on:
            # Fresh draws for the contenders: a state of new draws beside the step's, a
            # round's per-row terms (within the rounds' share of the step's rows) and its
            # chunk of P with their entropies.
            terms = _sizes.rounds_rows((n - t) * M)
            extra = max(extra, state + terms * F
                        + 2 * min(_sizes.TERMS_CHUNK_BYTES, terms * self.C * F))
        return (state + per_point + extra,
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
        Cap of the optional extra draws of sampled steps (``_sizes.MAX_DRAW_BYTES`` unless
        the budget needs less).

    Raises
    ------
    MemoryBudgetError
        If even without extra draws the run's estimated peak exceeds the budget.
    """
    needed, what = run.peak(num_samples, _sizes.MAX_DRAW_BYTES)
    if needed <= budget:
        return _sizes.MAX_DRAW_BYTES
    if run.peak(num_samples, 0)[0] <= budget:
        # The peak grows with the cap: the largest cap that fits, to 1/64 of the default.
        lo, hi = 0, _sizes.MAX_DRAW_BYTES
        while hi - lo > _sizes.MAX_DRAW_BYTES // 64:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if run.peak(num_samples, mid)[0] <= budget else (lo, mid)
        return lo
    fits = _num_samples_that_fit(run, num_samples, budget)
    advice = (f"Lower num_samples={num_samples} to {fits}, which fits," if fits is not None
              else "It does not fit with num_samples=1 either: lower batch_size"
              + (" or pass return_utilities=False," if run.settings.return_utilities else ","))
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
    candidates |= {run.C ** t for t in range(
        _sizes.last_exact_step(run.C, num_samples, run.steps) + 1)}
    for candidate in sorted(candidates, reverse=True):
        if candidate < num_samples and run.peak(candidate, 0)[0] <= budget:
            return candidate
    return None


def make_run(probs_N_K_C, num_candidates, batch_size, settings):
    """The :class:`Run` of a greedy call on this pool with these settings: on a pool held
    by Dask, of what its client holds."""
    N, K, C = probs_N_K_C.shape
    return Run(N, K, C, num_candidates, min(batch_size, num_candidates), settings,
               points_here=not _validation.is_lazy(probs_N_K_C))


def check(probs_N_K_C, num_candidates, batch_size, settings, memory_budget=None):
    """The settings of a greedy call, planned within the memory budget (:func:`plan`)
    before it allocates: ``max_draw_bytes`` lowered where the budget needs it."""
    run = make_run(probs_N_K_C, num_candidates, batch_size, settings)
    cap = plan(run, settings.num_samples, *resolve_budget(memory_budget))
    return settings.replace(max_draw_bytes=cap)
