"""What the greedy driver maximises: given a run's state, a scorer of each candidate's
utility and the bounds that let the search skip candidates.

An objective answers the driver's questions for one greedy step:

- ``utility(run)``: a :class:`_search.Scorer` of ``a(A ∪ {x})`` against the run's joint;
- ``bounds(run, remaining)``: cheaper upper bounds of the same utilities, coarsest first,
  as ``(scorer, tile)`` pairs, and the coarse levels behind them (for the record);
- ``upper_bounds(run, remaining)``: bounds of the remaining candidates' utilities known
  before any scoring (last gains, where the objective is submodular), or None;
- ``scored(run, outcome)``: what the step's scores leave for later steps' bounds;
- ``max_score``: the most any batch's score can reach (saturation);
- ``cond_entropy_N``: what a pick adds to the run's ``cond_entropy``.

BatchBALD is the one objective so far; a second (joint EPIG) goes in beside it.
"""

import math

import numpy as np

from . import _coarse, _search


class BatchBALD:
    """``a(A ∪ {x}) = H(y_A, y_x) − Σ_{a∈A} E_a − E_x``, the batch's mutual information
    with the model parameters (Kirsch, van Amersfoort and Gal, 2019).

    Exact and pruned joints make it submodular in the batch, so last gains bound; coarse
    joints (``_coarse.CoarseLevels``) bound ``H(y_A, y_x)`` on every step.

    Parameters
    ----------
    pool : ArrayPool or a pool with the same methods
    settings : Settings
    """

    def __init__(self, pool, settings):
        N, K, C = pool.shape
        self._pool, self._settings = pool, settings
        self.cond_entropy_N = pool.cond_entropy_N
        self.max_score = math.log(K)
        # Rounding of one computed score, relative to the terms it sums: bounds carry it.
        self._rounding = 4 * (K + C) * np.finfo(pool.dtype).eps

    def _scorer(self, run, joint_M_K, weights_M, correction=0.0):
        return _search.Scorer(self._pool, joint_M_K, weights_M, run.joint.offset_K,
                              run.cond_entropy, self.cond_entropy_N, self._rounding,
                              correction)

    def utility(self, run):
        """The scorer of every candidate's utility at the run's next step."""
        return self._scorer(run, run.joint.joint_M_K, run.joint.weights_M)

    def upper_bounds(self, run, remaining):
        """``a(A) + Δ'(x)`` from each candidate's last gain Δ' (inf before its first), on
        exact and pruned steps, where the objective is submodular; on sampled steps only
        with ``lazy=True``."""
        if not self._settings.last_gains_bound(run.joint.mode != "sampled"):
            return None
        return run.score + run.error + run.upper_gain_N[remaining]

    def scored(self, run, outcome):
        """Each scored candidate's gain, with its rounding and the step's certified error,
        bounds its later ones."""
        run.upper_gain_N[outcome.evaluated] = outcome.utility_n + 2 * outcome.slack_n \
            + run.joint.error_bound - run.score

    def bounds(self, run, remaining):
        """Coarse bounds of the step's utilities, coarsest first, and their levels.

        Returns
        -------
        bounds : list of (callable, int)
            Each level's scorer (its coarse joint grouped on first use) and the candidates
            of its first call: a bound costs G rows where a score costs M, so that many
            more per call.
        levels : _coarse.CoarseLevels or None
        """
        settings, state = self._settings, run.joint
        if not settings.coarse_bounds(len(remaining), state.num_configurations):
            return [], None
        levels = _coarse.CoarseLevels(state, settings.kernels, self._pool.row_sum_range,
                                      run.centres, run.coarsest)
        run.centres = levels.centres
        tile = settings.lazy_tile * state.num_configurations
        return [(_CoarseBound(self, run, levels, level), tile // G)
                for level, G in enumerate(levels.rows)], levels


class _CoarseBound:
    """Upper bounds of utilities from one coarse level, grouped when first asked for."""

    def __init__(self, objective, run, levels, level):
        self._objective, self._run = objective, run
        self._levels, self._level = levels, level
        self._scorer = None
        self.rows = 0

    def __call__(self, xs):
        if self._scorer is None:
            joint_G_K, correction = self._levels[self._level]
            self._scorer = self._objective._scorer(self._run, joint_G_K,
                                                   np.ones(len(joint_G_K)), correction)
        bound_n, slack_n = self._scorer(xs)
        self.rows = self._scorer.rows
        return bound_n, slack_n
