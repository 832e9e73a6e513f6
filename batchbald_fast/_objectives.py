"""What the greedy driver maximises: given a run's state, a scorer of each candidate's
utility and the bounds that let the search skip candidates.

An objective answers the driver's questions for one greedy step:

- ``step_state(run)``: the joint the step scores against (its ``mode``,
  ``num_configurations`` and ``error_bound`` go in the record);
- ``utility(run)``: a :class:`_search.Scorer` of ``a(A ∪ {x})`` against the run's joint;
- ``noise(run, outcome, search, resolution)``: on sampled steps, the pick's standard error,
  ambiguity and paired error (``_noise.settle``'s answer);
- ``bounds(run, remaining)``: cheaper upper bounds of the same utilities, coarsest first,
  as ``(scorer, tile)`` pairs, and the coarse levels behind them (for the record);
- ``upper_bounds(run, remaining)``: bounds of the remaining candidates' utilities known
  before any scoring (last gains, where the objective is submodular), or None;
- ``scored(run, outcome)``: what the step's scores leave for later steps' bounds;
- ``max_score``: the most any batch's score can reach (saturation);
- ``cond_entropy_N``: what a pick adds to the run's ``cond_entropy``;
- ``first_gain_N``: bounds of the gains before any is computed (None: unknown);
- ``name``, ``ceiling_name``, ``saturation_cause``, ``remedy``: the words of its
  ``SaturationWarning``.

BatchBALD is the one objective so far; a second (joint EPIG) goes in beside it.
"""

import math

import numpy as np

from . import _coarse, _joint, _noise, _search


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

    first_gain_N = None  # no gain is known before it is computed
    name, ceiling_name = "BatchBALD", "ln K"
    saturation_cause = ("the K samples tell no more candidates apart (the batch's labels "
                        "nearly identify the sample, or no candidate's gain is above noise)")
    remedy = "Use more posterior samples (a larger K) for batches this large."

    def __init__(self, pool, settings, rng):
        N, K, C = pool.shape
        self._pool, self._settings, self._rng = pool, settings, rng
        self.cond_entropy_N = pool.cond_entropy_N
        self.max_score = math.log(K)
        # Rounding of one computed score, relative to the terms it sums: bounds carry it.
        self._rounding = 4 * (K + C) * np.finfo(pool.dtype).eps

    def _scorer(self, run, joint_M_K, weights_M, correction=0.0):
        return _search.Scorer(self._pool, joint_M_K, weights_M, run.joint.offset_K,
                              run.cond_entropy, self.cond_entropy_N, self._rounding,
                              correction)

    def step_state(self, run):
        """The joint the step scores against: its mode, rows and certified error."""
        return run.joint

    def utility(self, run):
        """The scorer of every candidate's utility at the run's next step."""
        return self._scorer(run, run.joint.joint_M_K, run.joint.weights_M)

    def noise(self, run, outcome, search, resolution):
        """A sampled step's noise and contender rounds (``_noise.settle``)."""
        return _noise.settle(outcome, search, run.joint, self._pool, self._settings,
                             lambda: run.fresh_joint(self._settings, self._rng), resolution,
                             self._terms, self.cond_entropy_N)

    def _terms(self, state, probs_n_K_C):
        """Per-draw terms of a sampled joint's estimates of ``H(y_A, y_x)``."""
        return _joint.estimator_terms(state, probs_n_K_C, self._settings.kernels)

    def upper_bounds(self, run, remaining):
        """``a(A) + Δ'(x)`` from each candidate's last gain Δ' (inf before its first), on
        exact and pruned steps, where the objective is submodular; on sampled steps only
        with ``lazy=True``."""
        if not self._settings.last_gains_bound(run.joint.mode != "sampled"):
            return None
        return run.points.upper_bounds(run.score + run.error, remaining)

    def scored(self, run, outcome):
        """Each scored candidate's gain, with its rounding and the step's certified error,
        bounds its later ones."""
        run.points.scored(outcome, run.joint.error_bound, run.score)

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
                                      run.centres, run.coarsest,
                                      work=(len(remaining), self._pool.shape[2]))
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

    @property
    def rows(self):
        return 0 if self._scorer is None else self._scorer.rows

    def scorer(self):
        """The level's scorer, its coarse joint grouped on the first call."""
        if self._scorer is None:
            joint_G_K, correction = self._levels[self._level]
            self._scorer = self._objective._scorer(self._run, joint_G_K,
                                                   np.ones(len(joint_G_K)), correction)
        return self._scorer

    def __call__(self, xs):
        return self.scorer()(xs)


class _StepJoint:
    """What the record says of a step's joint: how it was computed and its rows."""

    def __init__(self, mode, num_configurations):
        self.mode, self.num_configurations, self.error_bound = mode, num_configurations, 0.0


class JointEPIG:
    """The batch's expected predictive information gain (joint EPIG):

    ``J(A ∪ {x}) = (1/T) Σ_t I(y_A, y_x; y*_t) = H(y_A, y_x) + H̄* − (1/T) Σ_t H(y_A, y_x, y*_t)``

    over targets x*_t (``H̄*`` the targets' mean entropy). Both joint entropies are sums of
    −P log P over configurations, scored by the kernels against two joints built on the same
    configurations of the batch's labels: the run's exact joint and its extension by every
    target's label while they fit the budget; else draws of the batch's labels
    (``_joint.draws_joint``), each extended by one target's labels (``_joint.with_targets``),
    so that each draw's surprisal cancels between the two.

    Joint EPIG need not be submodular, so its own last gains bound nothing. Its gain is at
    most BatchBALD's (``I(y_x; y* | y_A) ≤ I(y_x; ω | y_A)``: y* depends on y_x only through
    ω), and BatchBALD's gain only shrinks as the batch grows, so each candidate's BatchBALD
    gain bounds its later joint-EPIG gains: BALD before any step, then those of the exact
    steps (docs/algorithm.md, joint EPIG).

    Parameters
    ----------
    pool : ArrayPool or a pool with the same methods
    target_probs_T_K_C : ndarray of shape (T, K, C), float64, validated
    settings : Settings
    rng : numpy.random.Generator or RandomState
    """

    name, ceiling_name = "Joint EPIG", "the targets' mean BALD"
    saturation_cause = "no candidate's gain is above the estimate's noise"
    remedy = ("A larger num_samples lowers the noise; more posterior samples (a larger K) "
              "raise the ceiling.")

    def __init__(self, pool, target_probs_T_K_C, settings, rng):
        N, K, C = pool.shape
        self._pool, self._settings, self._rng = pool, settings, rng
        self._targets_T_K_C = target_probs_T_K_C
        kernels = settings.kernels
        T = len(target_probs_T_K_C)
        entropy_T, cond_entropy_T = np.empty(T), np.empty(T * K)
        kernels.entropy_rows(np.ascontiguousarray(target_probs_T_K_C.mean(axis=1)), entropy_T)
        kernels.entropy_rows(target_probs_T_K_C.reshape(T * K, C), cond_entropy_T)
        self._mean_target_entropy = float(entropy_T.mean())
        # J(A) ≤ (1/T) Σ_t I(y*_t; ω): the targets' mean BALD.
        self.max_score = float((entropy_T - cond_entropy_T.reshape(T, K).mean(axis=1)).mean())
        self.cond_entropy_N = np.zeros(N)  # EPIG subtracts no conditional entropy
        self._rounding = 4 * (K + C) * np.finfo(pool.dtype).eps
        self._cond_entropy_N = pool.cond_entropy_N
        # BALD, each point's BatchBALD gain given the empty batch, bounds its first gain.
        empty = _search.Scorer(pool, np.full((1, K), 1.0 / K), np.ones(1), np.zeros(K), 0.0,
                               self._cond_entropy_N, self._rounding)
        bald_N, slack_N = empty(np.arange(N))
        self.first_gain_N = bald_N + 2 * slack_N
        self._entropy_N, self._entropy_slack_N = np.full(N, np.nan), np.zeros(N)
        self._segment, self._batch_entropy = -1, 0.0
        self._margin, self._next_margin = 0.0, 0.0
        self._base = self._targets = None

    def step_state(self, run):
        """The step's two joints, made once (with fresh draws where sampled); the record's
        view of them: exact or sampled, the rows of both."""
        settings, state = self._settings, run.joint
        if run.segment != self._segment:  # a new greedy run: an empty batch, a known score
            self._segment, self._batch_entropy, self._margin = run.segment, 0.0, 0.0
        T, _, C = self._targets_T_K_C.shape
        if state.mode == "exact" and state.num_configurations * T * C <= settings.num_samples:
            self._base = state
        else:
            self._base = self._draws_joint(run)
        self._targets = _joint.with_targets(self._base, self._targets_T_K_C, self._rng)
        self._next_margin = 0.0
        return _StepJoint(self._targets.mode,
                          self._base.num_configurations + self._targets.num_configurations)

    def _draws_joint(self, run):
        """New draws of the batch's labels: each, extended by C labels of a target, makes C
        rows of the targets' joint, which ``num_samples`` bounds."""
        C = self._targets_T_K_C.shape[2]
        return _joint.draws_joint(run.probs_A_K_C, max(1, self._settings.num_samples // C),
                                  self._rng, self._settings.kernels)

    def utility(self, run):
        zeros_N, base, targets = self.cond_entropy_N, self._base, self._targets
        return _Difference(
            _search.Scorer(self._pool, base.joint_M_K, base.weights_M, base.offset_K, 0.0,
                           zeros_N, self._rounding),
            _search.Scorer(self._pool, targets.joint_M_K, targets.weights_M,
                           targets.offset_K, 0.0, zeros_N, self._rounding),
            self._mean_target_entropy, self._entropy_N, self._entropy_slack_N)

    def bounds(self, run, remaining):
        """No coarse bounds: they bound entropies from above, and the mean over targets
        enters with a minus sign."""
        return [], None

    def upper_bounds(self, run, remaining):
        """``J(A) + Δ_BB(x)``, widened by J(A)'s noise, from each candidate's last certified
        BatchBALD gain (any with ``lazy=True``)."""
        settings = self._settings
        if settings.return_utilities or settings.lazy is False:
            return None
        return run.points.upper_bounds(run.score + self._margin, remaining)

    def noise(self, run, outcome, search, resolution):
        """A sampled step's noise and contender rounds (``_noise.settle``), from the per-draw
        terms of the two joints' difference; each round draws both joints anew."""
        settings, T_K_C = self._settings, self._targets_T_K_C

        def fresh():
            base = self._draws_joint(run)
            return _Draws(base, _joint.with_targets(base, T_K_C, self._rng))

        answer = _noise.settle(outcome, search, _Draws(self._base, self._targets), self._pool,
                               settings, fresh, resolution, self._terms, self.cond_entropy_N)
        self._next_margin = 2 * answer.std_error
        return answer

    def _terms(self, draws, probs_n_K_C):
        """Per-draw terms of ``H(y_A, y_x) − (1/T) Σ_t H(y_A, y_x, y*_t)``."""
        return _joint.paired_terms(draws.base, draws.targets, probs_n_K_C,
                                   self._settings.kernels)

    def scored(self, run, outcome):
        """BatchBALD gains of the scored candidates, where ``H(y_A, y_x)`` was exact (any
        with ``lazy=True``), bound their later joint-EPIG gains."""
        evaluated = outcome.evaluated
        if self._base.mode == "exact" or self._settings.lazy:
            gain_n = self._entropy_N[evaluated] - self._batch_entropy \
                - self._cond_entropy_N[evaluated] + 2 * self._entropy_slack_N[evaluated]
            run.points.tighten(evaluated, gain_n)
        self._batch_entropy = self._entropy_N[evaluated[outcome.best]]
        self._margin = self._next_margin


class _Draws:
    """A sampled joint-EPIG estimator: draws of the batch's labels and their extension by
    the targets' labels, scored per candidate together."""

    def __init__(self, base, targets):
        self.base, self.targets = base, targets
        self.num_configurations = base.num_configurations + targets.num_configurations


class _Difference:
    """``plus − minus + constant`` of two scorers, keeping ``plus``'s values per point."""

    def __init__(self, plus, minus, constant, plus_N, plus_slack_N):
        self._plus, self._minus, self._constant = plus, minus, constant
        self._plus_N, self._plus_slack_N = plus_N, plus_slack_N

    @property
    def rows(self):
        return self._plus.rows + self._minus.rows

    def __call__(self, xs):
        plus_n, plus_slack_n = self._plus(xs)
        minus_n, minus_slack_n = self._minus(xs)
        self._plus_N[xs], self._plus_slack_N[xs] = plus_n, plus_slack_n
        return plus_n - minus_n + self._constant, plus_slack_n + minus_slack_n
