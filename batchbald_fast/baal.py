"""baal-compatible heuristics: change the import, keep the active-learning loop.

``from batchbald_fast.baal import BALD, BatchBALD, EPIG, Entropy`` in place of
``from baal.active.heuristics import ...``, and ``PowerSampling``, ``GibbsSampling``,
``RankBasedSampling``, ``PowerBALD``, ``PowerEntropy`` in place of baal's
``heuristics.stochastics`` and ``heuristics.aliases`` (baal 2.1.0). Same constructors,
``get_ranks``, ``__call__``, reductions and input layouts (``[N, C, K]`` arrays or tensors,
logits or probabilities, generators of chunks), usable as the ``heuristic`` of baal's
``ActiveLearningLoop``; subclasses of baal's classes, so ``isinstance`` checks hold.

``BatchBALD`` ranks first its ``num_samples`` greedy picks in pick order (computed by
:func:`batchbald_fast.batchbald`), then the other points by BALD score. baal's ranks instead
start with ``num_samples`` of its ``num_samples + 1`` picks in reverse pick order, its first
pick last. Needs baal (``pip install batchbald_fast[baal]``), which needs torch.
"""

import types
from collections.abc import Sequence

import numpy as np
from baal.active import heuristics as _baal
from baal.utils.array_utils import to_prob

from baal.active.heuristics import stochastics as _baal_stochastics

from . import _search, _stochastic, _validation, bald, batchbald, entropy, epig

__all__ = ["BALD", "BatchBALD", "EPIG", "Entropy", "GibbsSampling", "PowerBALD",
           "PowerEntropy", "PowerSampling", "RankBasedSampling"]

DEPRECATED = _baal.DEPRECATED


def _as_array(predictions):
    """One model output as a NumPy array: tensors come to the CPU, a list of one unwraps."""
    if isinstance(predictions, (list, tuple)):
        if len(predictions) != 1:
            raise ValueError(
                f"This heuristic takes one array of shape [N, C, ..., K], got a list of "
                f"{len(predictions)}; for models with several outputs use "
                f"baal.active.heuristics.CombineHeuristics")
        predictions = predictions[0]
    # A torch tensor is recognised by its type's module (baal imports torch anyway).
    if type(predictions).__module__.split(".")[0] == "torch":
        predictions = predictions.detach().cpu().numpy()
    return np.asarray(predictions)


def _at_least(predictions, ndim, heuristic, layout):
    """:func:`_as_array` of predictions with at least ``ndim`` axes, else a ValueError."""
    predictions = _as_array(predictions)
    if predictions.ndim < ndim:
        raise ValueError(f"{heuristic} needs predictions of shape {layout}, got shape "
                         f"{predictions.shape}")
    return predictions


def _to_probs(predictions):
    """Probabilities of a validated-shape array: baal's logit rule, then our checks.

    Like baal, the array is softmaxed over the class axis (1) unless all its values lie in
    [0, 1] and sum to 1 over classes; non-finite values are an error here (baal scores
    them 0 with a warning).
    """
    if not (np.issubdtype(predictions.dtype, np.floating)
            or np.issubdtype(predictions.dtype, np.integer)) or predictions.dtype == np.bool_:
        raise TypeError(f"predictions must hold real numbers, got dtype {predictions.dtype}")
    bad = ~np.isfinite(predictions)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"predictions hold nan or inf, first at index {index}")
    if predictions.shape[1] < 2:
        raise ValueError(
            f"predictions need at least 2 classes on axis 1, got shape {predictions.shape}; "
            f"for one sigmoid output give [1 - p, p]")
    return to_prob(predictions)


def _streamed(predictions):
    """The chunks of a generator input, or the input as the only chunk."""
    if isinstance(predictions, types.GeneratorType):
        return list(predictions)
    return [predictions]


def _shuffled(ranks, shuffle_prop, rng):
    """baal's deprecated ``shuffle_prop``: a random subset of ranks, each rank in it with
    probability ``shuffle_prop``, trades places among itself."""
    if not shuffle_prop:
        return ranks
    chosen = np.flatnonzero(rng.random(len(ranks)) < shuffle_prop)
    ranks = ranks.copy()
    ranks[chosen] = ranks[rng.permutation(chosen)]
    return ranks


class _Ranked:
    """baal's ``reorder_indices`` with this package's tie rule and seeded shuffle, and the
    constructor of baal's heuristics with a ``random_state`` for that shuffle."""

    def __init__(self, shuffle_prop=DEPRECATED, reduction="none", *, random_state=None,
                 **options):
        super().__init__(shuffle_prop=shuffle_prop, reduction=reduction, **options)
        self.random_state = random_state

    def reorder_indices(self, scores):
        """Indices by decreasing score (ties within 1e-10 to the lowest index), then the
        ``shuffle_prop`` shuffle.

        Parameters
        ----------
        scores : ndarray of shape (N,) or list of them (concatenated)

        Returns
        -------
        ranks : ndarray of shape (N,)
        """
        if isinstance(scores, Sequence):
            scores = np.concatenate(scores)
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim > 1:
            raise ValueError(f"Can't order sequence with more than 1 dimension: scores "
                             f"have shape {scores.shape}; set the heuristic's reduction "
                             f"(now {self._reduction_name!r}) to one score per point")
        bad = ~np.isfinite(scores)
        if bad.any():
            raise ValueError(f"scores hold nan or inf, first at index {int(np.argmax(bad))}")
        rng = _validation.check_random_state(self.random_state)
        return _shuffled(_search.top_k(scores), self.shuffle_prop, rng)


class BALD(_Ranked, _baal.BALD):
    """BALD, ``I(y; ω) = H(y) − E_ω H(y | ω)``, as baal's ``BALD`` heuristic computes it.

    Parameters
    ----------
    shuffle_prop : float, default=DEPRECATED
        baal's deprecated ranking noise: each rank joins a shuffled subset with this
        probability (values ≥ 1 and the default mean none).
    reduction : {"none", "mean", "sum", "max", "min"} or callable, default="none"
        Turns the scores of ``[N, C, ..., K]`` predictions (shape ``[N, ...]``) into one
        score per point, as in baal.
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
        Source of the ``shuffle_prop`` shuffle; None: NumPy's global random state, as baal.

    Notes
    -----
    Ranks go by decreasing score; scores within 1e-10 of the best left are ties, going to
    the lowest index (baal: arbitrary). Predictions of shape ``[N, C, ..., K]``, logits or
    probabilities (baal's rule: softmaxed over axis 1 unless they are probabilities).
    """

    def compute_score(self, predictions, target_predictions=None):
        """BALD score of every point and extra position.

        Parameters
        ----------
        predictions : ndarray or torch.Tensor of shape [N, C, ..., K]
            Logits or probabilities of N points, C classes, K MC samples.
        target_predictions : ignored

        Returns
        -------
        scores : ndarray of shape [N, ...], float64
        """
        predictions = _at_least(predictions, 3, "BALD", "[N, C, ..., K] (K MC samples)")
        probs = np.moveaxis(_to_probs(predictions), 1, -1)  # [N, ..., K, C]
        K, C = probs.shape[-2:]
        return bald(probs.reshape(-1, K, C)).reshape(probs.shape[:-2])


class BatchBALD(_baal.BatchBALD):
    """Greedy BatchBALD as a baal heuristic: ``num_samples`` picks, in pick order.

    Parameters
    ----------
    num_samples : int
        Points to pick, baal's ``query_size`` (the batch size of
        :func:`batchbald_fast.batchbald`).
    num_draw : int, default=500
        Configurations drawn per MC sample in sampled steps, as in baal: the joint's budget
        is ``num_draw * K`` configurations, and the joint is exact while ``C ** t`` fits it.
    shuffle_prop : float, default=DEPRECATED
        baal's deprecated ranking noise (values ≥ 1 and the default mean none).
    reduction : {"none", "mean", "sum", "max", "min"} or callable, default="none"
        Accepted as in baal. Predictions are ``[N, C, K]``, where baal's named reductions
        leave the per-point scores as they are; a callable is applied to the scores
        ``get_ranks`` returns and does not change the ranks.
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
        Source of the configurations of sampled steps and of the ``shuffle_prop`` shuffle;
        None: NumPy's global random state (baal draws from torch's). An int gives the same
        ranks on every call.

    Notes
    -----
    ``get_ranks`` returns every pool index: the picks in pick order, then the others by
    decreasing BALD score (scores within 1e-10 tie, going to the lowest index). The scores
    are, for each pick, the mutual information it added to the batch,
    ``a(A_t) − a(A_{t−1})`` (they sum to the batch's), and for every other point its BALD
    score, ``a({x})``. Generators of ``[n, C, K]`` chunks are concatenated into one pool
    (baal raises ValueError).
    """

    def __init__(self, num_samples, num_draw=500, shuffle_prop=DEPRECATED, reduction="none",
                 *, random_state=None):
        super().__init__(_validation.check_count(num_samples, "num_samples", minimum=0),
                         num_draw=_validation.check_count(num_draw, "num_draw", minimum=1),
                         shuffle_prop=shuffle_prop, reduction=reduction)
        self.random_state = random_state

    def _pool(self, predictions):
        """The pool's probabilities, [N, C, K], from any input baal's heuristics take."""
        chunks = []
        for chunk in _streamed(predictions):
            chunk = _as_array(chunk)
            if chunk.ndim != 3:
                raise ValueError(f"BatchBALD only works on classification: expected "
                                 f"predictions of shape [N, C, K], got shape {chunk.shape}")
            if chunks and chunk.shape[1:] != chunks[0].shape[1:]:
                raise ValueError(f"chunk {len(chunks)} of the predictions has shape "
                                 f"{chunk.shape}, chunk 0 {chunks[0].shape}: C and K differ")
            chunks.append(_to_probs(chunk))
        if not chunks:
            raise ValueError("No prediction! Cannot order the values!")
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def _rank(self, probs_N_C_K, rng):
        """Picks then the rest, and every point's score."""
        probs_N_K_C = probs_N_C_K.transpose(0, 2, 1)
        N, K, _ = probs_N_K_C.shape
        result = batchbald(probs_N_K_C, self.num_samples, num_samples=self.num_draw * K,
                           random_state=rng)
        scores_N = bald(probs_N_K_C)
        rest = np.setdiff1d(np.arange(N), result.indices)  # ascending: ties stay lowest first
        ranks = np.concatenate([result.indices, rest[_search.top_k(scores_N[rest])]])
        scores_N[result.indices] = np.diff(result.scores, prepend=0.0)
        return ranks, scores_N

    def compute_score(self, predictions, target_predictions=None):
        """Each pick's gain to the batch, every other point's BALD score.

        Parameters
        ----------
        predictions : ndarray, torch.Tensor or generator of them, of shape [N, C, K]
        target_predictions : ignored

        Returns
        -------
        scores : ndarray of shape (N,), float64
        """
        rng = _validation.check_random_state(self.random_state)
        return self._rank(self._pool(predictions), rng)[1]

    def get_uncertainties_generator(self, predictions, target_predictions=None):
        """``get_uncertainties`` of the concatenated chunks (one pool, not one per chunk)."""
        return self.get_uncertainties(predictions, target_predictions)

    def get_ranks(self, predictions, target_predictions=None):
        """Rank the pool: the greedy picks in pick order, then the rest by BALD score.

        Parameters
        ----------
        predictions : ndarray, torch.Tensor, list of one, or generator of chunks
            Logits or probabilities of shape [N, C, K] (chunks: [n, C, K], concatenated).
        target_predictions : ignored

        Returns
        -------
        ranks : ndarray of shape (N,), int64
            Every pool index, the ``num_samples`` picks first.
        scores : ndarray of shape (N,), float64
            Each pick's gain to the batch, every other point's BALD score.

        Raises
        ------
        ValueError
            If the predictions are not [N, C, K], hold nan or inf, or have one class.
        """
        rng = _validation.check_random_state(self.random_state)
        ranks, scores_N = self._rank(self._pool(predictions), rng)
        return _shuffled(ranks, self.shuffle_prop, rng), self.reduction(scores_N)


class Entropy(_Ranked, _baal.Entropy):
    """Entropy of the mean prediction, ``H(y) = −Σ_c p̄ log p̄``, as baal's ``Entropy``.

    Parameters
    ----------
    shuffle_prop : float, default=DEPRECATED
        baal's deprecated ranking noise (values ≥ 1 and the default mean none).
    reduction : {"none", "mean", "sum", "max", "min"} or callable, default="none"
        Turns the scores of ``[N, C, ...]`` predictions into one score per point.
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
        Source of the ``shuffle_prop`` shuffle; None: NumPy's global random state.

    Notes
    -----
    Predictions ``[N, C, ..., K]`` are averaged over their last axis (K MC samples) when
    they have 3 or more axes, as in baal; ``[N, C]`` are one prediction per point. Ties
    as for :class:`BALD`.
    """

    def compute_score(self, predictions, target_predictions=None):
        """Entropy of every point's (and extra position's) mean prediction.

        Parameters
        ----------
        predictions : ndarray or torch.Tensor of shape [N, C, ..., K] or [N, C]
        target_predictions : ignored

        Returns
        -------
        scores : ndarray of shape [N, ...], float64
        """
        probs = _to_probs(_at_least(predictions, 2, "Entropy", "[N, C, ...]"))
        if probs.ndim >= 3:
            probs = probs.mean(axis=-1)
        probs = np.moveaxis(probs, 1, -1)  # [N, ..., C]
        return entropy(probs.reshape(-1, 1, probs.shape[-1])).reshape(probs.shape[:-1])


class EPIG(_Ranked, _baal.EPIG):
    """EPIG, the expected information about target inputs' labels, as baal's ``EPIG``.

    ``EPIG(x) = E_{x*}[I(y; y* | x, x*)]`` over target inputs (Bickford Smith et al., 2023),
    computed by :func:`batchbald_fast.epig` in float64 (baal: float32).

    Parameters
    ----------
    shuffle_prop : float, default=DEPRECATED
        baal's deprecated ranking noise (values ≥ 1 and the default mean none).
    reverse : bool, default=False
        Unused, as in baal (EPIG ranks the highest first).
    reduction : {"none", "mean", "sum", "max", "min"} or callable, default="none"
        Applied to the per-point scores, as in baal.
    targets : ndarray, torch.Tensor or callable, default=None
        The target predictions ``[T, C, K]`` to use in place of the ``target_predictions``
        argument, or a callable taking no argument that returns them (called once per
        ``get_ranks``, so that each step of an active-learning loop predicts the targets
        with the current model). None: the ``target_predictions`` argument, as in baal,
        whose ``ActiveLearningLoop`` passes the predictions on the labelled set.
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
        Source of the ``shuffle_prop`` shuffle; None: NumPy's global random state.

    Examples
    --------
    Targets in baal's ``ActiveLearningLoop``, predicted anew at every step::

        heuristic = EPIG(targets=lambda: wrapper.predict_on_dataset(target_set,
                                                                    iterations=20))
        loop = ActiveLearningLoop(dataset, wrapper.predict_on_dataset, heuristic,
                                  query_size=10, iterations=20)
    """

    def __init__(self, shuffle_prop=DEPRECATED, reverse=False, reduction="none", *,
                 targets=None, random_state=None):
        super().__init__(shuffle_prop=shuffle_prop, reverse=reverse, reduction=reduction,
                         random_state=random_state)
        self.targets = targets

    def _target_probs(self, target_predictions):
        """The targets' probabilities as [T, K, C] from the argument or ``targets``."""
        if self.targets is not None:
            target_predictions = self.targets() if callable(self.targets) else self.targets
        if target_predictions is None:
            raise ValueError("EPIG needs target predictions [T, C, K]: pass "
                             "target_predictions, or construct EPIG(targets=...)")
        target_predictions = _as_array(target_predictions)
        if target_predictions.ndim != 3:
            raise ValueError(f"EPIG only supports classification: expected target "
                             f"predictions of shape [T, C, K], got shape "
                             f"{target_predictions.shape}")
        return np.ascontiguousarray(_to_probs(target_predictions).transpose(0, 2, 1))

    def compute_score(self, predictions, target_predictions=None):
        """EPIG of every pool point.

        Parameters
        ----------
        predictions : ndarray or torch.Tensor of shape [N, C, K]
            Logits or probabilities of the pool.
        target_predictions : ndarray or torch.Tensor of shape [T, C, K], default=None
            Logits or probabilities of the targets, the same K samples and C classes;
            ignored when the heuristic has ``targets``.

        Returns
        -------
        scores : ndarray of shape (N,), float64
        """
        return self._score(predictions, self._target_probs(target_predictions))

    def _score(self, predictions, target_probs_T_K_C):
        predictions = _as_array(predictions)
        if predictions.ndim != 3:
            raise ValueError(f"EPIG only supports classification: expected predictions of "
                             f"shape [N, C, K], got shape {predictions.shape}")
        return epig(_to_probs(predictions).transpose(0, 2, 1), target_probs_T_K_C)

    def get_uncertainties_generator(self, predictions, target_predictions=None):
        """Reduced scores of the chunks of a generator, the targets resolved once."""
        target_probs_T_K_C = self._target_probs(target_predictions)
        scores = [self.reduction(self._score(chunk, target_probs_T_K_C))
                  for chunk in predictions]
        if not scores:
            raise ValueError("No prediction! Cannot order the values!")
        return np.concatenate(scores)


class _Stochastic:
    """baal's stochastic heuristics drawn by :func:`batchbald_fast.stochastic_batch`."""

    _mode = None

    def __init__(self, base_heuristic, query_size, temperature=1.0, *, random_state=None):
        if isinstance(temperature, (bool, np.bool_)) or not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        super().__init__(base_heuristic=base_heuristic, query_size=query_size,
                         temperature=temperature)
        self.random_state = random_state

    def get_scores(self, predictions, target_predictions=None):
        """The base heuristic's scores, one per point (chunks of a generator concatenated).

        Parameters
        ----------
        predictions : ndarray, torch.Tensor or generator of them
        target_predictions : ndarray, default=None
            Passed to the base heuristic (EPIG's targets).

        Returns
        -------
        scores : ndarray of shape (N,)
        """
        if isinstance(predictions, types.GeneratorType):
            scores = self._bh.get_uncertainties_generator(predictions, target_predictions)
        else:
            scores = self._bh.get_uncertainties(predictions, target_predictions)
        if isinstance(scores, Sequence):
            scores = np.concatenate(scores)
        return np.asarray(scores, dtype=np.float64)

    def _make_distribution(self, scores):
        """Each point's probability of being drawn first (the input is not written)."""
        return _stochastic.first_draw_probabilities(scores, self._mode, 1 / self.temperature)

    def get_ranks(self, predictions, target_predictions=None):
        """Draw ``query_size`` points without replacement, each ∝ its tempered score.

        Parameters
        ----------
        predictions : ndarray, torch.Tensor or generator of them
        target_predictions : ndarray, default=None
            Passed to the base heuristic (baal's ``ActiveLearningLoop`` passes it).

        Returns
        -------
        ranks : ndarray of shape (min(query_size, N),)
            Pool indices in draw order.
        distribution : ndarray of shape (N,)
            Each point's probability of being drawn first.
        """
        scores = self.get_scores(predictions, target_predictions)
        ranks = _stochastic.stochastic_batch(scores, self.query_size, mode=self._mode,
                                             beta=1 / self.temperature,
                                             random_state=self.random_state)
        return ranks, self._make_distribution(scores)


_SAMPLER_DOC = """{what}

    Draws :func:`batchbald_fast.stochastic_batch` with ``mode="{mode}"`` and
    ``beta = 1 / temperature``: without replacement, each draw ∝ {weight} among the points
    left (Kirsch et al., TMLR 2023).

    Parameters
    ----------
    base_heuristic : baal heuristic
        Gives the scores (its ``get_uncertainties``), e.g. :class:`BALD`, :class:`EPIG`.
    query_size : int
        Points to draw.
    temperature : float, default=1.0
        > 0; baal's temperature, ``1 / beta``.
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
        Source of the draws; None: NumPy's global random state, as baal. An int gives the
        same batch on every call.
    """


class PowerSampling(_Stochastic, _baal_stochastics.PowerSampling):
    __doc__ = _SAMPLER_DOC.format(what="Power sampling: ∝ score ** (1 / temperature).",
                                  mode="power", weight="``score ** beta`` (scores ≥ 0)")
    _mode = "power"


class GibbsSampling(_Stochastic, _baal_stochastics.GibbsSampling):
    __doc__ = _SAMPLER_DOC.format(what="Softmax sampling: ∝ exp(score / temperature).",
                                  mode="softmax", weight="``exp(beta · score)``")
    _mode = "softmax"


class RankBasedSampling(_Stochastic, _baal_stochastics.RankBasedSampling):
    __doc__ = _SAMPLER_DOC.format(what="Soft-rank sampling: ∝ rank ** (−1 / temperature).",
                                  mode="softrank",
                                  weight="``rank ** −beta`` (rank 1 the highest score)")
    _mode = "softrank"


def PowerBALD(query_size, temperature=1.0, reduction="none", *, random_state=None):
    """:class:`PowerSampling` of :class:`BALD` scores, as baal's ``PowerBALD``."""
    return PowerSampling(BALD(reduction=reduction), query_size=query_size,
                         temperature=temperature, random_state=random_state)


def PowerEntropy(query_size, temperature=1.0, reduction="none", *, random_state=None):
    """:class:`PowerSampling` of :class:`Entropy` scores, as baal's ``PowerEntropy``."""
    return PowerSampling(Entropy(reduction=reduction), query_size=query_size,
                         temperature=temperature, random_state=random_state)
