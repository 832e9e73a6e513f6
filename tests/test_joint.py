"""The joint state: exact enumeration and the sampled estimator, scored by each backend."""

import itertools

import numpy as np
import pytest

import batchbald_fast as bf
import oracle
from batchbald_fast import _backend, _joint
from conftest import random_probs


def joint_entropy_estimate(state, probs_N_K_C, x):
    out = np.empty(1)
    _backend.get_kernels().score_candidates(state.joint_M_K, state.weights_M, probs_N_K_C,
                                            np.array([x], dtype=np.intp), out, 1)
    return out[0] + state.offset


def test_exact_joint_enumerates_configurations(backend):
    probs_N_K_C = random_probs(np.random.default_rng(0), 3, 4, 3)
    state = _joint.empty_joint(4)
    for a in range(3):
        state = _joint.extend_exact(state, probs_N_K_C[a])
    assert state.exact and state.num_configurations == 27
    q_expected = sorted(
        np.mean([np.prod([probs_N_K_C[a, k, c] for a, c in enumerate(labels)])
                 for k in range(4)])
        for labels in itertools.product(range(3), repeat=3))
    np.testing.assert_allclose(sorted(state.joint_M_K.sum(axis=1)), q_expected, rtol=1e-12)


def test_sampled_joint_entropy_converges(backend):
    # |A| = 6 with C = 3: the exact value has 3^7 configurations, the estimate far fewer.
    rng = np.random.default_rng(1)
    probs_N_K_C = random_probs(rng, 7, 5, 3, concentration=0.7)
    batch, x = list(range(6)), 6
    exact = oracle.joint_entropy(probs_N_K_C, batch + [x])
    rms = []
    for num_samples in (50, 800, 12800):
        errors = [joint_entropy_estimate(
            _joint.sample_joint(probs_N_K_C[batch], num_samples, np.random.default_rng(s)),
            probs_N_K_C, x) - exact for s in range(30)]
        rms.append(np.sqrt(np.mean(np.square(errors))))
    # 16x the samples: error down ~4x (1/sqrt(M)); allow a wide margin for chance.
    assert rms[1] < rms[0] / 2.5 and rms[2] < rms[1] / 2.5, rms
    assert rms[2] < 0.01, rms


def test_sampled_rows_stay_finite_when_products_underflow(backend):
    # 110 labels of probability 1e-3 each: every J[m, k] is 1e-330, below float64's range
    # unless rows are scaled. Uniform members make the exact value (|A| + 1) log C.
    C, K, A = 1000, 2, 110
    probs_N_K_C = np.full((A + 1, K, C), 1.0 / C)
    state = _joint.sample_joint(probs_N_K_C[:A], 100, np.random.default_rng(0))
    estimate = joint_entropy_estimate(state, probs_N_K_C, A)
    np.testing.assert_allclose(estimate, (A + 1) * np.log(C), rtol=1e-12)


def test_sampled_steps_follow_the_budget(backend):
    probs_N_K_C = random_probs(np.random.default_rng(2), 30, 4, 3)
    result = bf.batchbald(probs_N_K_C, 6, num_samples=30, random_state=0)
    np.testing.assert_array_equal(result.exact, [True, True, True, True, False, False])
    np.testing.assert_array_equal(result.num_configurations, [1, 3, 9, 27, 28, 28])
    tiny = bf.batchbald(probs_N_K_C, 3, num_samples=1, random_state=0)  # S = max(1, 1 // K)
    np.testing.assert_array_equal(tiny.num_configurations, [1, 4, 4])


@pytest.mark.parametrize("make_state", [
    lambda: 7, lambda: np.random.RandomState(7), lambda: np.random.default_rng(7)])
def test_same_random_state_same_result(backend, make_state):
    probs_N_K_C = random_probs(np.random.default_rng(3), 60, 5, 4)
    first = bf.batchbald(probs_N_K_C, 6, num_samples=40, random_state=make_state(),
                         return_utilities=True)
    second = bf.batchbald(probs_N_K_C, 6, num_samples=40, random_state=make_state(),
                          return_utilities=True)
    assert not first.exact[-1]
    np.testing.assert_array_equal(first.indices, second.indices)
    np.testing.assert_array_equal(first.scores, second.scores)
    np.testing.assert_array_equal(first.utilities, second.utilities)
    other = bf.batchbald(probs_N_K_C, 6, num_samples=40, random_state=8,
                         return_utilities=True)
    assert not np.array_equal(first.utilities[-1], other.utilities[-1])
