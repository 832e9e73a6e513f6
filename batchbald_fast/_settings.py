"""The settings of one call, built once from its arguments and read by the driver and the
memory planner alike."""

import dataclasses
from dataclasses import dataclass

import numpy as np

from . import _noise, _search, _sizes

# Certified error allowed in a pruned joint (nats): ~100x below the typical error of the
# sampled estimator it replaces (1e-2), and enough to keep a confident model's joint exact
# a step or two past the budget.
DEFAULT_TOL = 1e-4


@dataclass(frozen=True)
class Settings:
    """How a greedy call runs (validated values; the meanings are ``batchbald``'s).

    Attributes
    ----------
    num_samples : int
        Configuration budget M of the joint.
    kernels : _backend.Kernels
        The backend's kernels with the call's thread count.
    dtype : numpy.float64 or numpy.float32
        Compute precision of the kernels' products and logs.
    tol : float
        Certified error allowed in a pruned joint (0: no pruning).
    incremental : bool
        Sampled steps extend the last step's draws (else draw anew).
    lazy : bool or None
        None: certified bounds only; True: last gains on sampled steps too; False: score
        every candidate.
    return_utilities : bool
    saturation : {"restart", "greedy"}
    extra_rounds : int
        Most contender rounds of a sampled step (with ``lazy=None`` only).
    resolve_fraction : float
        Sampled steps' resolution, in paired standard errors of the last sampled step.
    tie_tolerance : float
    lazy_tile : int
        Candidates of the first kernel call that scores by bound.
    coarse_min_work : int
        Rows a step must score in full before coarse joints bound it.
    max_draw_bytes : int
        Cap of the draws fitting adds (the memory plan may lower it).
    next_joint : callable or None
        ``next_joint(state, probs_A_K_C, settings, rng)``: the joint once the batch has
        grown by one pick; None: ``_joint.next_joint``.
    """

    num_samples: int
    kernels: object
    dtype: type = np.float64
    tol: float = 0.0
    incremental: bool = False
    lazy: object = None
    return_utilities: bool = False
    saturation: str = "restart"
    extra_rounds: int = _noise.EXTRA_ROUNDS
    resolve_fraction: float = _noise.RESOLVE_FRACTION
    tie_tolerance: float = _search.TIE_TOLERANCE
    lazy_tile: int = _search.LAZY_TILE
    coarse_min_work: int = _sizes.COARSE_MIN_WORK
    max_draw_bytes: int = _sizes.MAX_DRAW_BYTES
    next_joint: object = None

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def coarse_bounds(self, num_remaining, M):
        """Whether a step scoring ``num_remaining`` candidates against M rows groups its
        rows into coarse joints to bound them."""
        return not self.return_utilities and self.lazy is not False and \
            num_remaining * M >= self.coarse_min_work

    @property
    def rounds_on(self):
        """Whether ambiguous sampled steps may take contender rounds."""
        return self.extra_rounds > 0 and self.lazy is None and not self.return_utilities

    def last_gains_bound(self, gains_hold):
        """Whether bounds known before a step (last gains) rule out its candidates, where
        the objective says they hold (``gains_hold``) or ``lazy=True`` asks for them
        anyway."""
        if self.return_utilities:
            return False
        return self.lazy if self.lazy is not None else gains_hold
