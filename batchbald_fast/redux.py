"""batchbald_redux-compatible surface: change the import, keep the answers.

``from batchbald_fast.redux import get_batchbald_batch`` in place of
``from batchbald_redux.batchbald import get_batchbald_batch``. Inputs may be NumPy arrays or
torch tensors; torch is imported only when a tensor is passed. Computation is in float64 on
the CPU whatever ``dtype`` and ``device`` say.
"""

from dataclasses import dataclass
from typing import List

from . import _api, _search, _validation

__all__ = ["CandidateBatch", "get_bald_batch", "get_batchbald_batch"]


@dataclass
class CandidateBatch:
    """Picks in order and their scores, as batchbald_redux returns them.

    Attributes
    ----------
    scores : list of float
        For BatchBALD the batch's mutual information after each pick; for BALD each pick's
        own score.
    indices : list of int
        Pool indices in pick order.
    """

    scores: List[float]
    indices: List[int]


def _to_numpy(log_probs_N_K_C):
    # A torch tensor is recognised by its type's module, so torch is never imported for
    # NumPy input; a CUDA tensor comes to the CPU, any float dtype becomes float64.
    if type(log_probs_N_K_C).__module__.split(".")[0] == "torch":
        import torch

        return log_probs_N_K_C.detach().to(device="cpu", dtype=torch.float64).numpy()
    return log_probs_N_K_C


def get_batchbald_batch(log_probs_N_K_C, batch_size, num_samples, dtype=None, device=None):
    """Greedy BatchBALD with batchbald_redux 2.0.5's signature and result.

    Parameters
    ----------
    log_probs_N_K_C : ndarray or torch.Tensor of shape (N, K, C)
        Natural logarithms of ``p(y_n = c | x_n, ω_k)``.
    batch_size : int
        Points to pick (at most N).
    num_samples : int
        Configuration budget M of the joint: exact while ``C ** t <= M``, else sampled.
        Unlike batchbald_redux, ``num_samples < K`` works (one configuration per member).
    dtype, device : ignored
        Accepted for compatibility; the computation is float64 on the CPU (batchbald_redux's
        default ``dtype=None`` computes in float32).

    Returns
    -------
    batch : CandidateBatch
        ``indices`` in pick order and ``scores``, the batch's mutual information after each
        pick. Ties go to the lowest index. Sampled steps draw from NumPy's global random
        state (batchbald_redux draws from torch's); use ``batchbald_fast.batchbald`` with
        ``random_state`` for reproducible draws.
    """
    batch_size = _validation.check_count(batch_size, "batch_size", minimum=0)
    result = _api.batchbald(_to_numpy(log_probs_N_K_C), batch_size, num_samples=num_samples,
                            log_probs=True, saturation="greedy")
    return CandidateBatch(result.scores.tolist(), result.indices.tolist())


def get_bald_batch(log_probs_N_K_C, batch_size, dtype=None, device=None):
    """Top-k BALD with batchbald_redux 2.0.5's signature and result.

    Parameters
    ----------
    log_probs_N_K_C : ndarray or torch.Tensor of shape (N, K, C)
        Natural logarithms of ``p(y_n = c | x_n, ω_k)``.
    batch_size : int
        Points to pick (at most N).
    dtype, device : ignored
        Accepted for compatibility; the computation is float64 on the CPU.

    Returns
    -------
    batch : CandidateBatch
        The ``batch_size`` highest BALD scores and their indices, in the order greedy
        selection picks them: scores within 1e-10 nats of the best remaining one are ties,
        going to the lowest index.
    """
    batch_size = _validation.check_count(batch_size, "batch_size", minimum=0)
    scores_N = _api.bald(_to_numpy(log_probs_N_K_C), log_probs=True)
    top = _search.top_k(scores_N, batch_size)
    return CandidateBatch(scores_N[top].tolist(), top.tolist())
