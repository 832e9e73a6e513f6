"""baal-compatible heuristics: change the import, keep the active-learning loop.

``from batchbald_fast.baal import BALD, BatchBALD`` in place of
``from baal.active.heuristics import BALD, BatchBALD`` (baal 2.1.0). Same constructors,
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

from . import _search, _validation, bald, batchbald

__all__ = ["BALD", "BatchBALD"]

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


class BALD(_baal.BALD):
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

    def __init__(self, shuffle_prop=DEPRECATED, reduction="none", *, random_state=None):
        super().__init__(shuffle_prop=shuffle_prop, reduction=reduction)
        self.random_state = random_state

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
        predictions = _as_array(predictions)
        if predictions.ndim < 3:
            raise ValueError(f"BALD needs predictions of shape [N, C, ..., K] (K MC "
                             f"samples), got shape {predictions.shape}")
        probs = np.moveaxis(_to_probs(predictions), 1, -1)  # [N, ..., K, C]
        K, C = probs.shape[-2:]
        return bald(probs.reshape(-1, K, C)).reshape(probs.shape[:-2])

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
