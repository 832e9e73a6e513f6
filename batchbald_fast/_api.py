"""The public functions: validate, pick the backend, run the driver."""

import contextlib

import numpy as np

from . import _backend, _epig, _greedy, _memory, _noise, _objectives, _pool, _validation
from ._settings import DEFAULT_TOL, Settings


def batchbald(probs_N_K_C, batch_size, *, num_samples=10_000, log_probs=False,
              candidates=None, random_state=None, return_utilities=False, num_threads=None,
              lazy=None, tol=DEFAULT_TOL, incremental=True, dtype=np.float64,
              memory_budget=None, progress=False, saturation="restart",
              extra_rounds=_noise.EXTRA_ROUNDS):
    """Select a batch of pool points by greedy BatchBALD.

    Each step adds the point x maximising the mutual information
    ``a(A ∪ {x}) = I(y_A, y_x; ω)`` between the batch's labels and the model parameters,
    estimated from K posterior samples (Kirsch, van Amersfoort and Gal, NeurIPS 2019).
    The joint entropy of the batch is exact while ``C ** len(A) <= num_samples``; past
    that, exact less configurations of negligible mass (within a certified error ``tol``)
    while those kept fit ``num_samples``; then estimated by importance sampling from
    ``max(1, num_samples // K)`` configurations per posterior sample.

    Parameters
    ----------
    probs_N_K_C : array-like, dask.array.Array or zarr.Array of shape (N, K, C)
        ``p(y_n = c | x_n, ω_k)`` for N pool points under K posterior samples (ensemble
        members, MC-dropout passes) over C classes. float32 or float64, any strides;
        read-only arrays and memmaps are accepted, never written to and never copied whole
        (float32 stays float32). Other real floating types (float16: exactly) and integer
        types (0/1: one-hot predictions) are converted to float64; bool raises a TypeError.
        A dask or zarr array, chunked along N, runs on the active Dask scheduler (a
        ``distributed.Client`` if one is active): one task per chunk holding candidates,
        the same picks and scores (see ``batchbald_fast.dask``).
    batch_size : int
        Points to pick. More than the candidates picks them all; 0 gives an empty result.
    num_samples : int, default=10_000
        Budget M of joint configurations per step.
    log_probs : bool, default=False
        Whether ``probs_N_K_C`` holds natural logarithms of probabilities.
    candidates : array-like of int, default=None
        Pool indices that may be picked; all points when None.
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
        Source of the configurations drawn in sampled steps. The same value gives the
        same result.
    return_utilities : bool, default=False
        Whether to return every candidate's utility at every step. On a Dask pool they
        come as a dask array of shape (b, N), chunked like the pool and made on the
        workers from the chunks' states: compute (or persist) it while the scheduler
        runs; nothing of size N reaches the client until then.
    num_threads : int, default=None
        Most threads for the kernels. None honours ``OMP_NUM_THREADS`` and
        ``threadpoolctl`` limits, else uses the usable cores. Small steps run on fewer
        (one thread per ~0.5 ms of work), and no thread is left running on return. On
        Dask: threads of each task (None: 1).
    lazy : bool or None, default=None
        Score only the candidates that upper bounds cannot rule out, best bound first,
        until no remaining bound can win. None: certified bounds only, so picks, scores
        and noise flags of exact and pruned steps are those of scoring every candidate;
        they come from a coarse joint on every step (groups of configurations merged into
        one row: entropy is concave, so this can only raise a score) and, on exact and
        pruned steps, from each candidate's last gain (the objective is submodular).
        Sampled steps are resolved to their noise: candidates whose bound is within
        ``result.resolutions`` (the last sampled step's paired standard error) of the
        best are left unscored, so the pick's estimate is within that of the best
        estimate. True: last gains on sampled steps too, where they hold only up to
        sampling noise. False: score every candidate. ``return_utilities=True`` scores
        every candidate.
    tol : float, default=1e-4
        Certified error, in nats, allowed in a pruned joint; 0 samples as soon as the
        exact joint outgrows ``num_samples``.
    incremental : bool, default=True
        In sampled steps, extend the previous step's draws by a label for the new point
        (drawn from the posterior sample that made each draw) instead of drawing every
        label anew. The estimator is the same; only the random numbers differ.
    dtype : {numpy.float64, numpy.float32}, default=numpy.float64
        Precision of the products and logs of the hot loop; sums over configurations and
        classes are float64 either way. float32 is faster and agrees to ~1e-6 nats, so
        near-ties may resolve differently. It is independent of the pool's own dtype: a
        float32 pool computed in float64 gives the results of the float64 array of the
        same values.
    memory_budget : int, float, str or None, default=None
        Bytes the run's arrays may take at their peak: a number, or a string such as
        ``"4GiB"`` or ``"512MB"``; ``"inf"`` for no limit. None: the
        ``BATCHBALD_FAST_MEMORY_BUDGET`` environment variable, else the memory available
        when the call starts. The peak is estimated from the shapes before any step (the
        exact joint has ``C ** t`` rows, a sampled one ``num_samples`` draws); over the
        budget, sampled steps first give up the extra draws they add while draws merge,
        then the call raises a ``ValueError`` naming the estimate and the ``num_samples``
        that fits. ``num_samples`` itself is never lowered behind the caller's back.
    progress : bool or callable, default=False
        Report the picks as they are made. True shows a tqdm bar on stderr (picks done of
        the batch, rate, time left; needs ``pip install "batchbald_fast[progress]"``). A
        callable is called as ``progress(done, total)`` after each pick; an exception it
        raises stops the selection.
    saturation : {"restart", "greedy"}, default="restart"
        What follows a sampled step whose batch score is within noise of ``ln K``: the K
        posterior samples can no longer tell candidates apart, so greedy picks past it are
        estimator noise. "restart": the next pick starts a new greedy run from an empty
        batch, among the points not yet picked (``result.segments`` numbers the runs).
        "greedy": keep extending the batch. Either way such steps are flagged in
        ``result.saturated`` and a ``SaturationWarning`` names K, once per K in a
        process (a model whose samples agree on every candidate, every gain 0, is told
        once in other words). Restart is the default: at b = 100 it is ~5× faster, with
        batch information no lower (docs/sampled_steps.md).
    extra_rounds : int, default=16
        On a sampled step whose top two are within noise of each other, draw up to this
        many rounds of fresh configurations (each as many as the step's, from the same
        posterior samples) for the contenders, the candidates within noise of the pick,
        until the pick is resolved to 1e-3 nats with confidence; ``ambiguous`` then means
        still unresolved. The rounds (and the contenders the bounds left unscored) score
        at most a quarter of the rows of the step, so they run where they are cheap
        beside it: small pools, few contenders. With them, 98% of small sampled steps'
        picks were right at ``num_samples=1000`` (C = 3 and 4), against 67% with 0, for
        2.3× the time of ``extra_rounds=0``; W2 took 0.36 s against 0.33 s
        (docs/sampled_steps.md). Only with ``lazy=None`` and without
        ``return_utilities``; 0: none.

    Returns
    -------
    result : BatchResult
        ``indices`` in pick order, ``scores`` (the batch's mutual information after each
        pick), ``utilities`` (when asked), and per step ``num_configurations``, ``exact``,
        ``mode``, ``error_bounds``, ``std_errors``, ``ambiguous``, ``num_evaluations``,
        ``bound_rows``, ``num_bounded``, ``saturated``, ``segments``, ``rows_scored``,
        ``decision_rows`` and ``resolutions``.

    Notes
    -----
    Utilities within 1e-10 nats of the best are ties; ties go to the lowest pool index.
    ``0 · log 0`` is taken as 0; probabilities are used as given, never clipped.

    Examples
    --------
    >>> import numpy as np
    >>> from batchbald_fast import batchbald
    >>> rng = np.random.default_rng(0)
    >>> probs_N_K_C = rng.dirichlet(np.ones(3), size=(100, 8))
    >>> result = batchbald(probs_N_K_C, 4)
    >>> result.indices.shape
    (4,)
    """
    probs_N_K_C = _validation.check_pool(probs_N_K_C, log_probs=log_probs)
    batch_size = _validation.check_count(batch_size, "batch_size", minimum=0)
    num_samples = _validation.check_count(num_samples, "num_samples", minimum=1)
    lazy_pool = _validation.is_lazy(probs_N_K_C)  # values are checked chunk by chunk there
    # None: every point, without N indices on the client of a Dask pool.
    candidates = None if candidates is None and lazy_pool else \
        _validation.check_candidates(candidates, probs_N_K_C.shape[0])
    num_candidates = probs_N_K_C.shape[0] if candidates is None else len(candidates)
    rng = _validation.check_random_state(random_state)
    num_threads = _validation.check_num_threads(num_threads)
    tol = _validation.check_tol(tol)
    dtype = _validation.check_compute_dtype(dtype)
    progress = _validation.check_progress(progress)
    saturation = _validation.check_choice(saturation, "saturation",
                                          _noise.SATURATION_POLICIES)
    extra_rounds = _validation.check_count(extra_rounds, "extra_rounds", minimum=0)
    settings = Settings(
        num_samples, _backend.kernels_for(num_threads), dtype=dtype, tol=tol,
        incremental=bool(incremental), lazy=None if lazy is None else bool(lazy),
        return_utilities=bool(return_utilities), saturation=saturation,
        extra_rounds=extra_rounds)
    # The budget covers the arrays of this process: on Dask, the client's (the pool and
    # its per-point state are on the workers).
    settings = _memory.check(probs_N_K_C, num_candidates, batch_size, settings,
                             memory_budget)
    if lazy_pool:
        from .dask import DaskPool
        pool = DaskPool(probs_N_K_C, log_probs=log_probs, dtype=dtype, num_threads=num_threads)
    else:
        pool = _pool.ArrayPool(settings.kernels, probs_N_K_C, dtype=dtype)
    with _step_reporter(progress, min(batch_size, num_candidates)) as on_step:
        return _greedy.select(pool, batch_size, candidates, settings, rng, on_step=on_step)


@contextlib.contextmanager
def _step_reporter(progress, total):
    """The driver's ``on_step`` for a checked ``progress``: None, the caller's callable, or
    the update of a tqdm bar that closes with the selection (also when it is stopped)."""
    if progress is True:
        from tqdm import tqdm

        # disable=False: progress=True asks for the bar, whatever TQDM_DISABLE said when
        # tqdm was imported (bench sets it to quiet its anchors' bars).
        with tqdm(total=total, desc="BatchBALD", unit="pick", disable=False) as bar:
            yield lambda done, _: bar.update(done - bar.n)
    else:
        yield progress or None


def bald(probs_N_K_C, *, log_probs=False):
    """BALD score of each point: ``I(y_n; ω) = H(y_n) − E_n``.

    Parameters
    ----------
    probs_N_K_C : array-like of shape (n_points, n_members, n_classes)
        Probabilities (or log-probabilities with ``log_probs=True``).
    log_probs : bool, default=False

    Returns
    -------
    scores_N : ndarray of shape (n_points,), float64
    """
    probs_N_K_C = _validation.check_probs(probs_N_K_C, log_probs=log_probs)
    kernels = _backend.kernels_for()
    return _pool.entropy(kernels, probs_N_K_C) - _pool.conditional_entropy(kernels, probs_N_K_C)


def entropy(probs_N_K_C, *, log_probs=False):
    """Entropy of each point's predictive mixture, ``H(y_n) = −Σ_c p̄ log p̄``.

    Parameters
    ----------
    probs_N_K_C : array-like of shape (n_points, n_members, n_classes)
    log_probs : bool, default=False

    Returns
    -------
    entropy_N : ndarray of shape (n_points,), float64
    """
    probs_N_K_C = _validation.check_probs(probs_N_K_C, log_probs=log_probs)
    return _pool.entropy(_backend.kernels_for(), probs_N_K_C)


def conditional_entropy(probs_N_K_C, *, log_probs=False):
    """Expected entropy of each point under the posterior samples, ``E_n``.

    Parameters
    ----------
    probs_N_K_C : array-like of shape (n_points, n_members, n_classes)
    log_probs : bool, default=False

    Returns
    -------
    conditional_entropy_N : ndarray of shape (n_points,), float64
    """
    probs_N_K_C = _validation.check_probs(probs_N_K_C, log_probs=log_probs)
    return _pool.conditional_entropy(_backend.kernels_for(), probs_N_K_C)


def batch_epig(probs_N_K_C, target_probs_T_K_C, batch_size, *, num_samples=10_000,
               log_probs=False, candidates=None, random_state=None, return_utilities=False,
               num_threads=None, lazy=None, dtype=np.float64, memory_budget=None,
               progress=False, saturation="greedy", extra_rounds=_noise.EXTRA_ROUNDS):
    """Select a batch of pool points by greedy joint EPIG.

    Each step adds the point x maximising the batch's expected predictive information gain
    ``J(A ∪ {x}) = (1/T) Σ_t I(y_A, y_x; y*_t)`` about the labels of T target inputs x*_t
    (drawn from where the model will be used): EPIG (Bickford Smith et al., AISTATS 2023)
    is its one-point case, and it is to EPIG what BatchBALD is to BALD, counting what the
    batch's labels tell the targets together, not each on its own. Computed by the same
    driver and kernels as :func:`batchbald` (docs/algorithm.md, joint EPIG).

    Exact while the batch's configurations times the targets' (``C^|A| · T · C``) fit
    ``num_samples``; past that, both ``H(y_A, y_x)`` and the mean over targets of
    ``H(y_A, y_x, y*_t)`` are estimated from the same ``num_samples // C`` draws of the
    batch's labels, each with one target (every target alike often) whose labels are
    summed exactly, so that most of their noise cancels in the difference;
    ``std_errors`` and ``ambiguous`` report what is left, and contender rounds resolve
    near-ties as in :func:`batchbald` (``extra_rounds``).

    Parameters
    ----------
    probs_N_K_C : array-like of shape (N, K, C)
        ``p(y_n = c | x_n, ω_k)`` for N pool points, as for :func:`batchbald` (in memory).
    target_probs_T_K_C : array-like of shape (T, K, C)
        The same K posterior samples' predictions on T target inputs, over the same C
        classes.
    batch_size : int
        Points to pick; more than the candidates picks them all.
    num_samples : int, default=10_000
        Budget of configuration rows per joint and step.
    log_probs : bool, default=False
        Whether both arrays hold natural logarithms of probabilities.
    candidates : array-like of int, default=None
        Pool indices that may be picked; all points when None.
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
        Source of every draw; the same value gives the same result.
    return_utilities : bool, default=False
        Return ``J(A_t ∪ {x})`` of every candidate at every step (scores every one).
    num_threads : int, default=None
        Most threads for the kernels, as for :func:`batchbald`.
    lazy : bool or None, default=None
        Joint EPIG is not submodular, but its gain is at most BatchBALD's, which only
        shrinks as the batch grows. None: each candidate's BatchBALD gain, computed while
        the batch's joint is exact (BALD before), bounds its later joint-EPIG gains, and
        candidates those bounds rule out are not scored. True: BatchBALD gains from sampled
        steps too (within their noise). False: score every candidate.
    dtype : {numpy.float64, numpy.float32}, default=numpy.float64
        Precision of the products and logs of both joints' scoring, as for
        :func:`batchbald`: float32 is faster and agrees to ~1e-5 nats, so near-ties may
        resolve differently; the standard errors' per-draw terms stay float64.
    memory_budget : int, float, str or None, default=None
        As for :func:`batchbald` (the estimate covers the batch's joint; the targets' joint
        adds at most ``num_samples · (K + 2)`` float64 values, twice that while contender
        rounds run).
    progress : bool or callable, default=False
        As for :func:`batchbald`.
    saturation : {"greedy", "restart"}, default="greedy"
        After a sampled step whose score is within noise of the most any batch can reach
        (the targets' mean BALD): keep extending the batch (default), or start a new greedy
        run, as for :func:`batchbald`.
    extra_rounds : int, default=16
        Most rounds of fresh draws (both joints drawn anew) that a sampled step whose top
        candidates are within noise may spend on them, as for :func:`batchbald`: they
        re-estimate only the contenders, within a quarter of the rows the step scored.
        0: none; ``ambiguous`` then flags every such step.

    Returns
    -------
    result : BatchResult
        As :func:`batchbald`'s, ``scores`` the batch's joint EPIG after each pick (nats)
        and ``num_configurations`` the rows of both joints.

    Examples
    --------
    >>> import numpy as np
    >>> from batchbald_fast import batch_epig
    >>> rng = np.random.default_rng(0)
    >>> probs_N_K_C = rng.dirichlet(np.ones(3), size=(100, 8))
    >>> targets_T_K_C = rng.dirichlet(np.ones(3), size=(10, 8))
    >>> batch_epig(probs_N_K_C, targets_T_K_C, 3).indices.shape
    (3,)
    """
    if _validation.is_lazy(probs_N_K_C):
        raise TypeError("batch_epig takes pools in memory (a NumPy array or array-like), "
                        "not dask or zarr arrays")
    probs_N_K_C = _validation.check_pool(probs_N_K_C, log_probs=log_probs)
    target_probs_T_K_C = np.ascontiguousarray(_validation.check_probs(
        target_probs_T_K_C, log_probs=log_probs, name="target_probs_T_K_C"), dtype=np.float64)
    _validation.check_same_models(probs_N_K_C.shape, target_probs_T_K_C.shape)
    batch_size = _validation.check_count(batch_size, "batch_size", minimum=0)
    num_samples = _validation.check_count(num_samples, "num_samples", minimum=1)
    candidates = _validation.check_candidates(candidates, probs_N_K_C.shape[0])
    rng = _validation.check_random_state(random_state)
    num_threads = _validation.check_num_threads(num_threads)
    progress = _validation.check_progress(progress)
    saturation = _validation.check_choice(saturation, "saturation",
                                          _noise.SATURATION_POLICIES)
    extra_rounds = _validation.check_count(extra_rounds, "extra_rounds", minimum=0)
    dtype = _validation.check_compute_dtype(dtype)
    # No pruning: pruned joints bound entropies from one side, which a difference loses.
    settings = Settings(num_samples, _backend.kernels_for(num_threads), dtype=dtype,
                        incremental=True,
                        lazy=None if lazy is None else bool(lazy),
                        return_utilities=bool(return_utilities), saturation=saturation,
                        extra_rounds=extra_rounds)
    settings = _memory.check(probs_N_K_C, len(candidates), batch_size, settings,
                             memory_budget)
    pool = _pool.ArrayPool(settings.kernels, probs_N_K_C, dtype=dtype)
    objective = _objectives.JointEPIG(pool, target_probs_T_K_C, settings, rng)
    with _step_reporter(progress, min(batch_size, len(candidates))) as on_step:
        return _greedy.select(pool, batch_size, candidates, settings, rng,
                              objective=objective, on_step=on_step)


def epig(probs_N_K_C, target_probs_T_K_C, *, log_probs=False, return_std_error=False,
         dtype=np.float64, num_threads=None, memory_budget=None):
    """Expected predictive information gain of each pool point, in nats.

    ``EPIG(x) = E_{x*}[I(y; y* | x, x*)]``, the information the label of x is expected to
    give about the labels of target inputs x* drawn from where the model will be used
    (Bickford Smith, Kirsch, Farquhar, Gal, Foster and Rainforth, AISTATS 2023), estimated
    from K posterior samples, the expectation over x* taken as the mean over T targets::

        EPIG_t(x) = H(y) + H(y*_t) − H(y, y*_t),
        P_t[c, c'] = (1/K) Σ_k p(y = c | x, ω_k) p(y* = c' | x*_t, ω_k),

    every term exact (no sampling), in float64 by default. Unlike BALD, a point scores only for what
    its label says about the targets' labels, so it gives little weight to pool points
    unlike any target.

    Parameters
    ----------
    probs_N_K_C : array-like of shape (N, K, C)
        ``p(y_n = c | x_n, ω_k)`` for N pool points, as for :func:`batchbald` (float32 or
        float64 read where it lies, never copied whole; other types converted; a Dask or
        zarr array is read into memory).
    target_probs_T_K_C : array-like of shape (T, K, C)
        The same K posterior samples' predictions on T target inputs, over the same C
        classes (for instance a random subsample of the pool, or unlabelled inputs from
        the test distribution). Copied as float64.
    log_probs : bool, default=False
        Whether both arrays hold natural logarithms of probabilities.
    return_std_error : bool, default=False
        Also return each point's standard error over targets,
        ``std_t(EPIG_t(x)) / sqrt(T)``: the error of the mean over these T targets as an
        estimate of the expectation over the target distribution, for targets drawn
        independently from it. Needs T ≥ 2.
    dtype : {numpy.float64, numpy.float32}, default=numpy.float64
        Precision of the joint predictives and their logs, the bulk of the work.
        float32 (sums over classes and targets still in float64, and each point's and
        target's entropy in float64) takes about half the time at K = 100 and errs by
        ~1e-7 nats (baal's and the EPIG authors' float32 code, by ~1e-6); near-equal
        scores may then rank differently. Independent of the pool's own dtype: a float32 pool
        is read in place with float32, converted block by block with float64.
    num_threads : int, default=None
        Most threads for the kernels, as for :func:`batchbald`.
    memory_budget : int, float, str or None, default=None
        Bytes the call's arrays may take beside its inputs, as for :func:`batchbald`;
        over it, a :class:`MemoryBudgetError` before any work. The call needs
        ``2·T·K·C + 2·N`` float64 values (the targets and their joint; the scores) plus
        blocks of a few MiB.

    Returns
    -------
    epig_N : ndarray of shape (N,), float64
        EPIG of every pool point, ≥ 0 up to rounding (~1e-15).
    std_error_N : ndarray of shape (N,), float64
        Only with ``return_std_error=True``.

    Raises
    ------
    ValueError
        If either array is not valid probabilities (as for :func:`batchbald`), if their K
        or C differ, or if ``return_std_error`` with one target.
    TypeError
        If ``dtype`` is neither float64 nor float32.
    MemoryBudgetError
        If the estimated peak exceeds ``memory_budget``.

    Notes
    -----
    Cost: ``N·T·C²·(K + 1)`` multiply-adds and ``N·T·C²`` logarithms, through the same
    fused product and ``x log x`` reduction as BatchBALD's scoring; memory O(N + T·K·C),
    never the N × T × C × C joints.

    How many targets: the standard error shrinks as 1/sqrt(T). Spend targets until the
    errors are small beside the differences between the scores you act on; with
    ``return_std_error=True`` the function reports them, so check on your own data. On
    a ``make_probs`` pool (N = 2000, K = 20, C = 10; benchmarks/epig_targets.py) the
    median standard error was 6.5% of the median EPIG at T = 100, 2.0% at T = 1000 and
    1.0% at T = 4000, and the top 50 at T = 100, 300 and 1000 held 41, 45 and 47 of the
    top 50 at T = 4000.

    Examples
    --------
    >>> import numpy as np
    >>> from batchbald_fast import epig
    >>> rng = np.random.default_rng(0)
    >>> probs_N_K_C = rng.dirichlet(np.ones(3), size=(100, 8))
    >>> targets_T_K_C = probs_N_K_C[rng.choice(100, 20, replace=False)]
    >>> scores_N, errors_N = epig(probs_N_K_C, targets_T_K_C, return_std_error=True)
    >>> scores_N.shape, errors_N.shape
    ((100,), (100,))
    """
    dtype = _validation.check_compute_dtype(dtype)
    probs_N_K_C = _validation.check_pool(np.asarray(probs_N_K_C), log_probs=log_probs)
    target_probs_T_K_C = _validation.check_probs(target_probs_T_K_C, log_probs=log_probs,
                                                 name="target_probs_T_K_C")
    _validation.check_same_models(probs_N_K_C.shape, target_probs_T_K_C.shape)
    T = len(target_probs_T_K_C)
    if return_std_error and T < 2:
        raise ValueError("a standard error over targets needs at least 2 targets, got 1")
    kernels = _backend.kernels_for(_validation.check_num_threads(num_threads))
    plan = _epig.Plan(kernels, probs_N_K_C.shape, T, _epig.reads_in_place(probs_N_K_C, dtype),
                      dtype, spread=bool(return_std_error))
    _epig.check_budget(plan, memory_budget)
    if not return_std_error:
        return _epig.epig_mean(kernels, probs_N_K_C, target_probs_T_K_C, plan)
    epig_N, sq_dev_N = _epig.epig_with_spread(kernels, probs_N_K_C, target_probs_T_K_C, plan)
    return epig_N, np.sqrt(sq_dev_N / (T - 1) / T)
