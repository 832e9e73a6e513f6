"""The greedy driver: one loop over the steps of a batch, reading as docs/algorithm.md does.

Each step asks the objective (``_objectives``) for a scorer and its bounds over the run's
state, the search (``_search``) for the best candidates, and, on sampled steps, the noise
rules (``_noise``) for how sure the pick is; then records the step (``_result``). It knows
nothing about which backend runs or where the pool lives: it asks a pool
(``_pool.ArrayPool``, or a pool on Dask) for joint entropies and rows.
"""

import contextlib

import numpy as np

from . import _joint, _noise, _objectives, _result
from ._threads import blas_limit


class GreedyRun:
    """The state of one greedy run: the batch so far and what bounds its candidates.

    A restart (``saturation="restart"``) resets it: the next pick starts a new run from an
    empty batch, and the picks so far stay out of the pool.

    Attributes
    ----------
    joint : JointState
        The joint of the run's batch.
    probs_A_K_C : ndarray of shape (A, K, C)
        The run's picks' rows, in pick order.
    score, error, cond_entropy : float
        The batch's score, its certified error and the sum of its conditional entropies.
    points : PointState or a pool's state with the same methods
        The per-point state: the candidates left and each one's last-gain bound
        (``_pool.PointState``; on Dask, on the chunks' workers).
    centres : ndarray or None
        The last step's first coarse grouping, the next one's first centres.
    coarsest : bool
        Whether the next step's coarse levels put their coarsest level in front.
    pair_error : float
        The last sampled step's paired standard error of its top two.
    segment : int
        The run's number: 0, then one more per restart.
    """

    def __init__(self, shape, points):
        _, self._K, self._C = shape
        self.points = points
        self.segment = -1
        self.reset()

    def reset(self):
        """A new run: empty batch, unknown gains, the segment numbered on."""
        self.joint = _joint.empty_joint(self._K)
        self.probs_A_K_C = np.empty((0, self._K, self._C))
        self.score = self.error = self.cond_entropy = 0.0
        self.points.reset_gains()
        self.centres, self.coarsest, self.pair_error = None, True, 0.0
        self.segment += 1

    @property
    def sampled(self):
        return self.joint.mode == "sampled"

    def extend(self, probs_1_K_C, settings, rng):
        """The last pick joins the batch: its row, and the joint grown by it."""
        self.probs_A_K_C = np.concatenate([self.probs_A_K_C, probs_1_K_C])
        next_joint = settings.next_joint or _joint.next_joint
        self.joint = next_joint(self.joint, self.probs_A_K_C, settings, rng)

    def fresh_joint(self, settings, rng):
        """A sampled joint of new draws, as many per member as the run's."""
        S = int(round(self.joint.counts_M.sum())) // self._K
        return _joint.fresh_state(self.probs_A_K_C, S, rng, settings.kernels)


def select(pool, batch_size, candidates, settings, rng, *, objective=None, on_step=None):
    """Greedy selection over validated inputs.

    Parameters
    ----------
    pool : ArrayPool or a pool with the same methods
        Answers the driver's questions about the pool points (``_pool.ArrayPool``).
    batch_size : int
    candidates : ndarray of shape (n,), intp, sorted ascending, no repeats; or None
        None: every point (a pool on Dask then never holds N indices here).
    settings : Settings
    rng : numpy.random.Generator or RandomState
    objective : object, default=None
        What to maximise (``_objectives``), made with the same pool, settings and rng;
        None: BatchBALD.
    on_step : callable or None
        Called as ``on_step(done, total)`` after each pick.

    Returns
    -------
    result : BatchResult
    """
    N, K, _ = pool.shape
    objective = objective or _objectives.BatchBALD(pool, settings, rng)
    steps = min(batch_size, N if candidates is None else len(candidates))
    points = pool.points(candidates, objective.first_gain_N,
                         steps if settings.return_utilities else None)
    record = _result.StepRecord(steps)
    run = GreedyRun(pool.shape, points)
    restart = False
    # The driver's own products are small: BLAS threads left spinning after them would take
    # the cores from the kernels' threads. Limiting them costs ~10 ms once (threadpoolctl
    # scans the loaded libraries): runs of small steps skip it.
    big = points.count * settings.num_samples >= settings.coarse_min_work
    with blas_limit(1) if big else contextlib.nullcontext():
        for t in range(steps):
            if restart:
                run.reset()
            elif t > 0:
                run.extend(pool.rows(record["indices"][t - 1:t]), settings, rng)
            restart = _step(t, run, objective, points.remaining(), settings, record)
            points.take(record["indices"][t])
            if on_step is not None:
                on_step(t + 1, steps)
    if record["saturated"].any():
        _noise.warn_saturated(record, K, settings.saturation, objective)
    return record.result(points.utilities())


def _step(t, run, objective, remaining, settings, record):
    """One greedy step: search, noise, record; whether the next step restarts."""
    state = objective.step_state(run)
    sampled = state.mode == "sampled"
    utility = objective.utility(run)
    bounds, levels = objective.bounds(run, remaining)
    upper_n = objective.upper_bounds(run, remaining)
    # Sampled steps are resolved to the noise of the last one (docs/sampled_steps.md).
    resolution = 0.0
    if (upper_n is not None or bounds) and sampled and np.isfinite(run.pair_error):
        resolution = settings.resolve_fraction * run.pair_error
    search = run.points.search(utility, bounds, remaining, upper_n, settings.lazy_tile,
                               settings.tie_tolerance)
    # Sampled steps report the runner-up's distance too: it must be true (to within the
    # resolution).
    outcome = search.run(top=2 if sampled else 1, resolution=resolution)
    if levels is not None and levels.coarsest:
        # It pays while the rows it saves (G per candidate it rules out) are as many as its
        # own (16 per candidate it bounds).
        run.coarsest = bool(outcome.level_counts[1] * levels.rows[1]
                            >= levels.rows[0] * outcome.num_bounded)
    std_error, ambiguous, decision_rows = np.nan, False, state.num_configurations
    if sampled:
        noise = objective.noise(run, outcome, search, resolution)
        outcome, std_error, ambiguous, decision_rows = \
            noise.outcome, noise.std_error, noise.ambiguous, noise.decision_rows
        run.pair_error, resolution = noise.pair_error, noise.resolution
    score = outcome.score
    # What cannot tell the score from its maximum, nor the gain from nothing. A sampled
    # step's gain is paired on its own draws (_noise.paired_gain).
    if sampled:
        gain, gain_noise = noise.gain, 2 * noise.gain_error + settings.tie_tolerance
        score_noise = 2 * std_error
    else:
        gain, gain_noise = score - run.score, state.error_bound + settings.tie_tolerance
        score_noise = gain_noise
    near_max, saturated = _noise.saturation_flags(score, gain, objective.max_score,
                                                  score_noise, gain_noise)
    record.record(
        t, indices=outcome.pick, scores=score, num_configurations=state.num_configurations,
        exact=state.mode == "exact", mode=state.mode,
        error_bounds=np.nan if sampled else state.error_bound, std_errors=std_error,
        ambiguous=ambiguous, num_evaluations=outcome.num_evaluations,
        bound_rows=levels.rows[-1] if levels else 0, num_bounded=outcome.num_bounded,
        saturated=saturated, segments=run.segment, rows_scored=outcome.rows,
        decision_rows=decision_rows, resolutions=max(resolution, 0.0))
    run.points.keep_utilities(t, outcome)
    objective.scored(run, outcome)
    run.score, run.error = score, state.error_bound
    run.cond_entropy += objective.cond_entropy_N[outcome.pick]
    # Only a score at its maximum restarts: a gain lost in the noise of a small budget is
    # the budget's limit, not the posterior samples'.
    return settings.saturation == "restart" and sampled and near_max
