"""Sampled steps' noise: paired standard errors, ambiguity, contender rounds, saturation.

A sampled step estimates every utility from the same draws, so the pick is only as sure as
the paired error of its lead over the runner-up; docs/sampled_steps.md derives the rules and
says how their constants were chosen.
"""

import math
import threading
import typing
import warnings

import numpy as np
import scipy.special

from . import _sizes

# One-sided error probability of each test of the contender rounds that drops a contender
# or declares the pick resolved, and the most rounds by default: a looser test resolves
# steps sooner and drops more contenders, which pays for more of the rounds that decide.
ALPHA = 0.05
EXTRA_ROUNDS = 16
# Utilities this close are equally good picks: a step is resolved once every contender is
# confidently at most this far above the pick (the pick-fidelity benchmark's criterion).
RESOLUTION = 1e-3
# The rounds take at most this many contenders (and the rows of _sizes.rounds_rows).
MAX_CONTENDERS = 256
# A sampled step's pick is resolved to this fraction of the paired standard error between
# the last sampled step's top two: candidates whose bound is within it of the best are left
# unscored, since the full-M estimates cannot tell such candidates apart.
RESOLVE_FRACTION = 1.0
SATURATION_POLICIES = ("restart", "greedy")


class SaturationWarning(UserWarning):
    """The batch's labels nearly identify the posterior sample: later gains are noise."""


class Noise(typing.NamedTuple):
    """A sampled step's answer from :func:`settle`."""

    outcome: typing.Any  # the search's _search.Outcome, its pick resolved
    std_error: float  # of the pick's utility
    ambiguous: bool
    pair_error: float  # paired standard error of the top two: the next step's resolution
    resolution: float  # 0 when the rounds scored the contenders left
    decision_rows: int
    gain: float  # the pick's gain over the batch so far, on the step's own draws
    gain_error: float  # its paired standard error


def settle(outcome, search, state, pool, settings, fresh, resolution, terms, cond_entropy_N):
    """A sampled step's noise, and its pick resolved by contender rounds where affordable.

    Contenders are the candidates within ``Φ⁻¹(1 − ALPHA)`` paired errors of the pick; the
    search goes on down to them when that is affordable, then the rounds of fresh draws
    (:func:`resolve_contenders`) decide among them.

    Parameters
    ----------
    outcome : _search.Outcome
        The search's; updated in place when the rounds run.
    search : _search.Search
    state : object
        The step's sampled estimator (a JointState, or an objective's own): its
        ``num_configurations`` rows are scored per candidate.
    pool : ArrayPool or a pool with the same methods
    settings : Settings
    fresh : callable
        ``fresh() -> state``: an estimator of new draws, as many as the step's.
    resolution : float
        The search's resolution.
    terms : callable
        ``terms(state, probs_n_K_C) -> (g_n_D, counts_D)``: per-draw terms of the
        estimates of n points' utilities (up to a constant per point), which are
        ``g_n_D @ counts_D / counts_D.sum()``.
    cond_entropy_N : ndarray of shape (N,)
        What each point's utility subtracts beside its terms (:func:`paired_gain`).

    Returns
    -------
    Noise
    """
    tie_tolerance = settings.tie_tolerance
    M = state.num_configurations
    std_error, ambiguous, pair_error = sampling_noise(state, pool, outcome, terms,
                                                      resolution)
    margin = scipy.special.ndtri(1 - ALPHA) * pair_error
    budget = _sizes.rounds_rows(outcome.rows)
    decision_rows = M
    if ambiguous and settings.rounds_on and np.isfinite(margin):
        floor = outcome.score - margin
        _, unscored = outcome.count_at_least(floor)
        if 0 < unscored * M <= budget:
            outcome = search.run(resolution=-margin)
            resolution = 0.0
            floor = outcome.score - margin
        num_contenders, unscored = outcome.count_at_least(floor)
        if not unscored and num_contenders <= MAX_CONTENDERS and num_contenders * M <= budget:
            contenders, utility_c = outcome.at_least(floor)
            lead, estimate, std_error, ambiguous, extra_rows, decision_rows = \
                resolve_contenders(state, pool.rows(contenders), utility_c, fresh, budget,
                                   settings.extra_rounds, tie_tolerance, terms)
            outcome.choose(contenders[lead], estimate)  # the pick's score from every round
            outcome.rows += extra_rows
    gain, gain_error = paired_gain(state, pool, outcome.pick, terms, cond_entropy_N)
    return Noise(outcome, std_error, ambiguous, pair_error, resolution, decision_rows, gain,
                 gain_error)


def paired_gain(state, pool, pick, terms, cond_entropy_N):
    """The pick's gain over the batch so far and its standard error, both from the step's
    own draws.

    The gain against the last step's score mixes two estimates of independent draws, whose
    noise can hide every gain a sampled joint EPIG has (docs/sampled_steps.md). A point
    predicted one-hot by every posterior sample adds nothing to any batch, so its utility
    on these draws estimates the batch's own score; the pick's lead over it is paired. Its
    per-draw terms differ from the pick's by the pick's conditional entropy, as the terms
    of any two points differ by what their utilities subtract beside them.
    """
    _, K, C = pool.shape
    nothing_1_K_C = np.zeros((1, K, C))
    nothing_1_K_C[..., 0] = 1.0
    probs_2_K_C = np.concatenate([pool.rows(np.array([pick])), nothing_1_K_C])
    g_2_M, counts_M = terms(state, probs_2_K_C)
    difference_M = g_2_M[0] - g_2_M[1]
    gain = difference_M @ counts_M / counts_M.sum() - cond_entropy_N[pick]
    return float(gain), float(paired_error(difference_M, counts_M))


def saturation_flags(score, gain, max_score, score_noise, gain_noise):
    """``(near_max, saturated)``: the score within ``score_noise`` of the most any batch can
    reach (ln K), and that or a gain within ``gain_noise`` of 0."""
    near_max = max_score - score <= score_noise
    return near_max, bool(near_max or gain <= gain_noise)


# What has been warned about in this process: ("saturated", K) and ("uninformed",). A loop
# of calls warns once, not every call (the text carries scores, so Python's own
# once-per-location filter would not silence it); result.saturated flags every step.
_WARNED = set()
_WARNED_LOCK = threading.Lock()


def _first_time(key):
    """Whether ``key`` is warned about for the first time in this process."""
    with _WARNED_LOCK:
        first = key not in _WARNED
        _WARNED.add(key)
    return first


def warn_saturated(out, K, saturation, objective):
    """One ``SaturationWarning`` per objective and K in a process for calls with flagged
    steps (``out``: the step record); a model whose samples agree everywhere is told once
    in other words. ``objective`` names itself, its ceiling and the remedy."""
    first = int(np.argmax(out["saturated"]))
    name, ceiling = objective.name, objective.max_score
    if first == 0 and (K == 1 or out["scores"][0] < ceiling / 2):
        # Step 0 flagged far below ln K: no candidate's BALD is above noise. That is a
        # model whose samples agree everywhere (before any training, or copies of one
        # member), not a batch that exhausted them.
        if _first_time(("uninformed",)):
            warnings.warn(
                f"{name}: the K={K} posterior samples predict the same for every "
                f"candidate (every information gain is 0), so every pick is a tie. "
                f"This is expected before any labels; otherwise check that the samples "
                f"differ (distinct seeds, dropout active at prediction). Warned once; "
                f"result.saturated flags such steps.", SaturationWarning, stacklevel=4)
        return
    if not _first_time(("saturated", name, K)):
        return
    after = {"restart": f"each sampled step within noise of {objective.ceiling_name} starts "
                        f"a new greedy run from an empty batch (saturation='greedy' keeps "
                        f"extending the batch)",
             "greedy": "later picks are decided by estimator noise (saturation='restart' "
                       "starts a new greedy run instead)"}[saturation]
    warnings.warn(
        f"{name} saturated with K={K} posterior samples: from step {first} (batch "
        f"score {out['scores'][first]:.4f}, at most {objective.ceiling_name} = "
        f"{ceiling:.4f}) {objective.saturation_cause}; {int(out['saturated'].sum())} "
        f"step(s) are flagged in result.saturated, and {after}. {objective.remedy} Warned "
        f"once per K; result.saturated flags every such step of every call.",
        SaturationWarning, stacklevel=4)


def resolve_contenders(state, probs_c_K_C, utility_c, fresh, budget, max_rounds,
                       tie_tolerance, terms, alpha=ALPHA, resolution=RESOLUTION):
    """The pick among a sampled step's contenders, resolved with fresh draws where needed.

    Each round of fresh draws (from the same members, as many as the step's) is an
    independent estimator of every utility; a contender's estimate is the mean over the
    rounds, and its difference with the leader's has the variance of the paired per-row
    terms summed over the rounds. After each round a contender is dropped once the leader
    is better with confidence (one-sided, level ``alpha``); the step is resolved once every
    one left is confidently at most ``resolution`` above the leader. Rounds stop there, after
    ``max_rounds``, or before their rows would exceed ``budget``. docs/sampled_steps.md
    derives the rule and its error probability.

    Parameters
    ----------
    state : object
        The step's sampled estimator (round 0), as for :func:`settle`.
    probs_c_K_C : ndarray of shape (c, K, C)
        The contenders' rows, in ascending pool order.
    utility_c : ndarray of shape (c,)
        Their utilities from ``state``.
    fresh : callable
        ``fresh() -> state``: new draws, as many as ``state``'s, independent of every
        earlier one.
    budget : float
        Candidate × rows the rounds may score.
    max_rounds : int
    tie_tolerance : float
    terms : callable
        As for :func:`settle`.
    alpha, resolution : float

    Returns
    -------
    lead : int
        Position of the pick among the contenders.
    estimate, std_error : float
        Its utility from every round, and the standard error of that.
    ambiguous : bool
        Unresolved when the rounds stopped.
    extra_rows : int
        Candidate × rows of the fresh rounds.
    rows : int
        Rows behind the pick: the step's own and every fresh round's.
    """
    z = scipy.special.ndtri(1 - alpha)
    n = len(utility_c)
    g_c_M, counts_M = terms(state, probs_c_K_C)
    draws = float(counts_M.sum())  # every round's, so its terms' sums add up
    mean_sum_c = np.zeros(n)
    # Σ over rounds of Σ_m counts_m (g_m − ḡ)(g_m − ḡ)ᵀ: any pair's paired sum of squares,
    # whichever contender leads (dropped contenders' entries go stale, unread).
    gram_c_c = np.zeros((n, n))

    def add_round(g_a_M, counts_M, alive):
        mean_a = g_a_M @ counts_M / draws
        centred_a_M = g_a_M - mean_a[:, None]
        mean_sum_c[alive] += mean_a
        gram_c_c[np.ix_(alive, alive)] += (centred_a_M * counts_M) @ centred_a_M.T

    alive = np.arange(n)
    add_round(g_c_M, counts_M, alive)
    offset_c = utility_c - mean_sum_c  # what a utility adds to the estimate of H(y_A, y_x)
    rounds, extra_rows, rows = 1, 0, state.num_configurations
    while True:
        mean_c = mean_sum_c / rounds + offset_c
        lead = alive[np.argmax(mean_c[alive] >= mean_c[alive].max() - tie_tolerance)]
        squares_c = np.diag(gram_c_c) - 2 * gram_c_c[lead] + gram_c_c[lead, lead]
        squares_c[lead] = gram_c_c[lead, lead]  # the leader's own error
        se_c = np.sqrt(np.maximum(squares_c, 0.0) / ((draws - 1) * draws)) / rounds
        gap_c = mean_c[lead] - mean_c
        alive = alive[(gap_c[alive] <= z * se_c[alive]) | (alive == lead)]
        others = alive[alive != lead]
        resolved = bool((gap_c[others] >= z * se_c[others] - resolution).all())
        next_rows = len(alive) * state.num_configurations  # about a fresh round's
        if resolved or rounds > max_rounds or extra_rows + next_rows > budget:
            break
        round_state = fresh()
        add_round(*terms(round_state, probs_c_K_C[alive]), alive)
        extra_rows += len(alive) * round_state.num_configurations
        rows += round_state.num_configurations
        rounds += 1
    return lead, float(mean_c[lead]), float(se_c[lead]), not resolved, extra_rows, rows


def sampling_noise(state, pool, outcome, terms, resolution=0.0):
    """Standard error of the top utility, whether the runner-up is within two standard
    errors of the difference (both from the same draws, so the difference is paired), and
    that standard error. A candidate left unscored may be up to ``resolution`` above the
    runner-up scored: it counts as within noise when that could be.

    Draws are treated as independent from the mixture; with S draws per member the
    stratified estimator's variance is no larger, so the standard error is conservative.
    """
    top, utility_t = outcome.top(2)
    terms_t_M, counts_M = terms(state, pool.rows(top))
    std_error_top = paired_error(terms_t_M[0], counts_M)
    if len(top) < 2:
        return std_error_top, False, 0.0
    gap = utility_t[0] - utility_t[1]
    pair_error = paired_error(terms_t_M[0] - terms_t_M[1], counts_M)
    return std_error_top, bool(gap <= 2 * pair_error + max(resolution, 0.0)), pair_error


def paired_error(g_M, counts_M):
    """Standard error of the mean of per-row terms ``g_M`` (rows of ``counts_M`` draws;
    along the last axis). Unknown (inf) from one draw, and from draws that all fell on one
    configuration: their spread of 0 says nothing of the estimator's (K = 1,
    num_samples = 2: an estimate 1.3 nats off with a standard error of 0)."""
    M = counts_M.sum()
    if M <= 1 or len(counts_M) <= 1:
        return np.full(g_M.shape[:-1], np.inf)[()]
    mean = g_M @ counts_M / M
    return np.sqrt((g_M - mean[..., None]) ** 2 @ counts_M / (M - 1) / M)
