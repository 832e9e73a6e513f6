"""batchbald_fast.redux: batchbald_redux 2.0.5's surface, its picks and scores."""

import subprocess
import sys

import numpy as np
import pytest

from batchbald_fast._workloads import WORKLOADS
from batchbald_fast.redux import CandidateBatch, get_bald_batch, get_batchbald_batch

# The picks batchbald_redux and scikit-activeml both make on W5, and the batch scores.
W5_PICKS = [143, 49, 131, 81]
W5_SCORES = [0.29820, 0.54338, 0.75305, 0.93849]


def log_probs(name):
    return np.log(WORKLOADS[name].probs())


def test_numpy_input_gives_the_anchors_picks(backend):
    batch = get_batchbald_batch(log_probs("W5"), 4, 10)
    assert isinstance(batch, CandidateBatch)
    assert batch.indices == W5_PICKS
    assert all(type(i) is int for i in batch.indices)
    assert all(type(s) is float for s in batch.scores)
    np.testing.assert_allclose(batch.scores, W5_SCORES, atol=5e-6)


def test_edge_sizes(backend):
    lp = log_probs("W5")
    assert get_batchbald_batch(lp, 0, 10) == CandidateBatch([], [])
    assert len(get_batchbald_batch(lp[:3], 5, 10).indices) == 3  # at most N
    assert get_bald_batch(lp, 0) == CandidateBatch([], [])
    with pytest.raises(ValueError, match="above 0"):
        get_batchbald_batch(np.exp(lp) + 1, 2, 10)  # probabilities, not logs


def test_bald_batch_is_top_k_bald(backend):
    from batchbald_fast import bald

    lp = log_probs("W5")
    batch = get_bald_batch(lp, 5)
    scores = bald(lp, log_probs=True)
    assert batch.indices == np.argsort(-scores, kind="stable")[:5].tolist()
    np.testing.assert_allclose(batch.scores, scores[batch.indices], rtol=0, atol=0)


def test_numpy_input_never_imports_torch():
    code = ("import sys, numpy as np\n"
            "from batchbald_fast.redux import get_batchbald_batch\n"
            "p = np.full((5, 3, 2), 0.5)\n"
            "get_batchbald_batch(np.log(p), 2, 10)\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def redux_reference():
    """batchbald_redux's own results on W1 and W5, float64 (computed once)."""
    torch = pytest.importorskip("torch")
    redux = pytest.importorskip("batchbald_redux.batchbald")
    results = {}
    for name in ("W1", "W5"):
        w = WORKLOADS[name]
        lp = torch.from_numpy(log_probs(name))
        results[name] = (redux.get_batchbald_batch(lp, w.batch_size, w.num_samples,
                                                   dtype=torch.double),
                         redux.get_bald_batch(lp, w.batch_size, dtype=torch.double))
    return results


@pytest.mark.parametrize("name", ["W1", "W5"])  # every step of both is exact
def test_same_as_batchbald_redux_on_exact_steps(backend, redux_reference, name):
    import torch

    w = WORKLOADS[name]
    theirs, theirs_bald = redux_reference[name]
    # A float32 tensor, as batchbald_redux users pass it: computed in float64 all the same.
    for lp in (log_probs(name), torch.from_numpy(log_probs(name)),
               torch.from_numpy(log_probs(name)).float()):
        ours = get_batchbald_batch(lp, w.batch_size, w.num_samples)
        assert ours.indices == theirs.indices
        tol = 1e-9 if lp.dtype != torch.float32 else 1e-5
        np.testing.assert_allclose(ours.scores, theirs.scores, rtol=0, atol=tol)
    ours_bald = get_bald_batch(torch.from_numpy(log_probs(name)), w.batch_size)
    assert ours_bald.indices == theirs_bald.indices
    np.testing.assert_allclose(ours_bald.scores, theirs_bald.scores, rtol=0, atol=1e-9)


def test_bald_batch_ties_mathematically_equal_points(backend):
    # One point's predictions repeated at scattered positions: exact copies, members or
    # classes reordered. Their BALD is equal; computed, it differs by rounding on some seeds.
    from batchbald_fast import bald

    positions = [0, 3, 7, 11]
    disordered = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        probs_N_K_C = np.repeat(rng.dirichlet(np.ones(5), size=(16, 1)), 7, axis=1)  # BALD 0
        a_K_C = rng.dirichlet(np.ones(5), size=7)
        copies = [a_K_C[:, ::-1], a_K_C[::-1], a_K_C,
                  a_K_C[rng.permutation(7)][:, rng.permutation(5)]]
        probs_N_K_C[positions] = copies
        lp = np.log(probs_N_K_C)
        raw = bald(lp, log_probs=True)[positions]
        disordered += np.argmax(raw) != 0  # a plain sort would not put point 0 first
        assert get_bald_batch(lp, 5).indices[:4] == positions
    assert disordered  # the rule was exercised
