"""batchbald_fast.baal: baal 2.1.0's heuristic surface, with greedy picks in pick order."""

import warnings

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("baal")

import torch  # noqa: E402
from baal.active import heuristics as baal_heuristics  # noqa: E402

import oracle  # noqa: E402
from batchbald_fast import batchbald  # noqa: E402
from batchbald_fast.baal import BALD, BatchBALD  # noqa: E402
from conftest import random_probs  # noqa: E402


def baal_layout(probs_N_K_C):
    """baal's [N, C, K] layout."""
    return np.ascontiguousarray(probs_N_K_C.transpose(0, 2, 1))


def oracle_bald(probs_N_K_C):
    return np.array([oracle.mutual_information(probs_N_K_C, [n])
                     for n in range(len(probs_N_K_C))])


def chunks(predictions, size):
    for start in range(0, len(predictions), size):
        yield predictions[start:start + size]


@pytest.fixture
def tiny():
    return random_probs(np.random.default_rng(3), 7, 4, 3, zeros=True)


def test_subclasses_of_baals_heuristics():
    assert isinstance(BatchBALD(2), baal_heuristics.BatchBALD)
    assert isinstance(BatchBALD(2), baal_heuristics.BALD)
    assert isinstance(BALD(), baal_heuristics.BALD)
    assert isinstance(BALD(), baal_heuristics.AbstractHeuristic)


def test_ranks_are_the_greedy_picks_then_the_rest_by_bald(backend, tiny):
    picks, batch_scores, _ = oracle.greedy(tiny, 3)
    bald_N = oracle_bald(tiny)
    ranks, scores_N = BatchBALD(3).get_ranks(baal_layout(tiny))

    assert ranks.tolist()[:3] == picks
    assert sorted(ranks.tolist()) == list(range(7))
    rest = ranks[3:]
    # Decreasing BALD score, the lowest index first among equal scores.
    assert all((bald_N[a], -a) > (bald_N[b], -b) for a, b in zip(rest, rest[1:]))
    # Each pick's gain to the batch; BALD score for the others.
    np.testing.assert_allclose(scores_N[picks], np.diff(batch_scores, prepend=0), atol=1e-10)
    np.testing.assert_allclose(scores_N[rest], bald_N[rest], atol=1e-10)
    np.testing.assert_array_equal(BatchBALD(3)(baal_layout(tiny)), ranks)


@pytest.mark.parametrize("num_samples", [0, 1, 7, 20])
def test_edge_batch_sizes(backend, tiny, num_samples):
    picks, _, _ = oracle.greedy(tiny, num_samples)
    ranks = BatchBALD(num_samples)(baal_layout(tiny))
    assert ranks.tolist()[:len(picks)] == picks
    assert sorted(ranks.tolist()) == list(range(7))
    if num_samples == 0:
        bald_N = oracle_bald(tiny)
        assert ranks.tolist() == sorted(range(7), key=lambda n: (-bald_N[n], n))


def test_first_pick_is_kept(backend):
    # baal labels picks 2..b+1 in reverse and drops its first: here the pick order is kept.
    probs = random_probs(np.random.default_rng(0), 30, 8, 3)
    picks, _, _ = oracle.greedy(probs, 5)
    assert BatchBALD(5)(baal_layout(probs))[:5].tolist() == picks


def test_logits_are_softmaxed_over_the_class_axis(backend, tiny):
    logits_N_C_K = np.log(baal_layout(tiny) + 0.05) * 3 + 7  # some outside [0, 1]
    probs_N_C_K = np.exp(logits_N_C_K) / np.exp(logits_N_C_K).sum(axis=1, keepdims=True)
    picks, _, _ = oracle.greedy(probs_N_C_K.transpose(0, 2, 1), 3)
    assert BatchBALD(3)(logits_N_C_K).tolist()[:3] == picks
    np.testing.assert_allclose(BALD().get_uncertainties(logits_N_C_K),
                               oracle_bald(probs_N_C_K.transpose(0, 2, 1)), atol=1e-10)


def test_generator_tensor_and_list_inputs_agree(backend, tiny):
    predictions = baal_layout(tiny)
    ranks, scores_N = BatchBALD(3).get_ranks(predictions)
    for other in [chunks(predictions, 3), torch.from_numpy(predictions), [predictions],
                  (torch.from_numpy(c) for c in chunks(predictions, 2))]:
        other_ranks, other_scores = BatchBALD(3).get_ranks(other)
        np.testing.assert_array_equal(other_ranks, ranks)
        np.testing.assert_allclose(other_scores, scores_N, atol=1e-12)
    np.testing.assert_allclose(BatchBALD(3).get_uncertainties(predictions), scores_N)
    np.testing.assert_allclose(
        BatchBALD(3).get_uncertainties_generator(chunks(predictions, 2)), scores_N)

    bald = BALD()
    np.testing.assert_array_equal(bald(chunks(predictions, 2)), bald(predictions))
    np.testing.assert_allclose(bald.get_uncertainties_generator(chunks(predictions, 3)),
                               oracle_bald(tiny), atol=1e-10)


def test_input_is_not_written(backend, tiny):
    predictions = baal_layout(tiny)
    predictions.flags.writeable = False
    with pytest.warns(DeprecationWarning, match="shuffle_prop"):
        heuristic = BatchBALD(3, shuffle_prop=0.5, random_state=0)
    heuristic.get_ranks(predictions)
    BALD(reduction="mean")(predictions)
    np.testing.assert_array_equal(predictions, baal_layout(tiny))


def test_bald_reductions_over_extra_axes(backend):
    rng = np.random.default_rng(5)
    probs_N_H_W_K_C = rng.dirichlet(np.ones(3), size=(4, 2, 3, 5))
    predictions = np.moveaxis(probs_N_H_W_K_C, -1, 1)  # [N, C, H, W, K]
    per_position_N_H_W = np.array([[[oracle.mutual_information(probs_N_H_W_K_C[:, h, w], [n])
                                     for w in range(3)] for h in range(2)] for n in range(4)])
    for reduction, expected in [("mean", per_position_N_H_W.mean(axis=(1, 2))),
                                ("sum", per_position_N_H_W.sum(axis=(1, 2))),
                                ("max", per_position_N_H_W.max(axis=(1, 2))),
                                ("min", per_position_N_H_W.min(axis=(1, 2))),
                                (lambda s: s[:, 0, 0], per_position_N_H_W[:, 0, 0])]:
        heuristic = BALD(reduction=reduction)
        np.testing.assert_allclose(heuristic.get_uncertainties(predictions), expected,
                                   atol=1e-10)
        assert heuristic(predictions).tolist() == list(np.argsort(-expected, kind="stable"))
    with pytest.raises(ValueError, match="more than 1 dimension"):
        BALD(reduction="none")(predictions)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum", "max", "min"])
def test_batchbald_named_reductions_leave_scores(backend, tiny, reduction):
    ranks, scores_N = BatchBALD(3).get_ranks(baal_layout(tiny))
    other_ranks, other_scores = BatchBALD(3, reduction=reduction).get_ranks(baal_layout(tiny))
    np.testing.assert_array_equal(other_ranks, ranks)
    np.testing.assert_array_equal(other_scores, scores_N)


def test_batchbald_rejects_extra_dimensions(tiny):
    for shape in [(7, 3, 2, 4), (7, 3)]:
        with pytest.raises(ValueError, match="BatchBALD only works on classification"):
            BatchBALD(2)(np.full(shape, 1 / 3))
    with pytest.raises(ValueError, match="shape"):
        BALD()(np.full((7, 3), 1 / 3))


def test_bad_input_errors(tiny):
    predictions = baal_layout(tiny)
    bad = predictions.copy()
    bad[4, 2, 1] = np.nan
    for heuristic in [BatchBALD(2), BALD()]:
        with pytest.raises(ValueError, match=r"nan or inf, first at index \(4, 2, 1\)"):
            heuristic(bad)
        with pytest.raises(ValueError, match="at least 2 classes"):
            heuristic(predictions[:, :1])
        with pytest.raises(TypeError, match="dtype"):
            heuristic(predictions > 0.5)
        with pytest.raises(ValueError, match="CombineHeuristics"):
            heuristic([predictions, predictions])
    with pytest.raises(ValueError, match="No prediction"):
        BatchBALD(2)(x for x in [])
    with pytest.raises(ValueError, match="chunk 1"):
        BatchBALD(2)(x for x in [predictions, predictions[:, :, :2]])
    with pytest.raises(ValueError, match="num_samples"):
        BatchBALD(-1)
    with pytest.raises(TypeError, match="num_samples"):
        BatchBALD(2.5)
    with pytest.raises(ValueError, match="num_draw"):
        BatchBALD(2, num_draw=0)


def test_sampled_steps_are_deterministic_given_a_seed(backend):
    # K·num_draw = 4 configurations against C^t = 4^t: later steps sample.
    probs = random_probs(np.random.default_rng(1), 40, 4, 4)
    assert "sampled" in batchbald(probs, 6, num_samples=4).mode
    predictions = baal_layout(probs)
    first = BatchBALD(6, num_draw=1, random_state=7).get_ranks(predictions)
    second = BatchBALD(6, num_draw=1, random_state=7).get_ranks(predictions)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    heuristic = BatchBALD(6, num_draw=1)  # NumPy's global random state, like baal's
    np.random.seed(3)
    first = heuristic(predictions)
    np.random.seed(3)
    np.testing.assert_array_equal(heuristic(predictions), first)


def test_shuffle_prop(tiny):
    predictions = baal_layout(tiny)
    plain = BatchBALD(3)(predictions)
    with pytest.warns(DeprecationWarning, match="shuffle_prop"):
        heuristic = BatchBALD(3, shuffle_prop=0.99, random_state=0)
    shuffled = heuristic(predictions)
    assert sorted(shuffled.tolist()) == sorted(plain.tolist())
    assert shuffled.tolist() != plain.tolist()
    np.testing.assert_array_equal(heuristic(predictions), shuffled)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(BatchBALD(3, shuffle_prop=1.0)(predictions), plain)
        np.testing.assert_array_equal(BALD(shuffle_prop=1.0)(predictions), BALD()(predictions))


def test_bald_ties_go_to_the_lowest_index():
    # Scores within 1e-10 of the best left are tied (hand-ordered): 1 and 4 tie with 2,
    # then 0 with 4.
    scores = np.array([1.0, 1 + 4e-11, 1 + 1.2e-10, 0.5, 1 + 4e-11])
    assert BALD().reorder_indices(scores).tolist() == [1, 2, 0, 4, 3]
    assert BALD().reorder_indices([scores[:2], scores[2:]]).tolist() == [1, 2, 0, 4, 3]
    # Duplicated points: the same score, lowest index first.
    probs = random_probs(np.random.default_rng(2), 3, 5, 3)
    source = [0, 1, 2, 1, 0, 2]
    bald_N = oracle_bald(probs)[source]
    assert BALD()(baal_layout(probs[source])).tolist() == sorted(
        range(6), key=lambda n: (-bald_N[n], n))


def test_active_learning_loop_with_mc_dropout():
    from baal.active import ActiveLearningDataset, ActiveLearningLoop
    from baal.bayesian.dropout import MCDropoutModule
    from baal.modelwrapper import ModelWrapper, TrainingArgs
    from torch import nn
    from torch.utils.data import TensorDataset

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [3, 0], [0, 3]], dtype=np.float32)
    y = rng.integers(3, size=30)
    X = centres[y] + rng.normal(scale=1.0, size=(30, 2)).astype(np.float32)
    dataset = ActiveLearningDataset(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)))
    dataset.label_randomly(6)
    model = MCDropoutModule(nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.5),
                                          nn.Linear(16, 3)))
    wrapper = ModelWrapper(model, TrainingArgs(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        criterion=nn.CrossEntropyLoss(), batch_size=8, epoch=3, use_cuda=False, workers=0))
    wrapper.train_on_dataset(dataset)

    for get_probabilities in [wrapper.predict_on_dataset, wrapper.predict_on_dataset_generator]:
        seen = []

        def recorded(pool, **kwargs):
            outputs = get_probabilities(pool, **kwargs)
            # The generator's chunks are recorded as the loop consumes them.
            if isinstance(outputs, np.ndarray):
                seen.append(outputs)
                return outputs
            return (seen.append(chunk) or chunk for chunk in outputs)

        labelled_before = set(np.flatnonzero(dataset.labelled))
        pool_to_oracle = dataset._pool_to_oracle_index(list(range(dataset.n_unlabelled)))
        loop = ActiveLearningLoop(dataset, recorded, heuristic=BatchBALD(3, random_state=0),
                                  query_size=3, iterations=6, verbose=False)
        assert loop.step()

        logits_N_C_K = np.concatenate(seen)
        probs_N_C_K = np.exp(logits_N_C_K - logits_N_C_K.max(axis=1, keepdims=True))
        probs_N_C_K /= probs_N_C_K.sum(axis=1, keepdims=True)
        picks, _, _ = oracle.greedy(probs_N_C_K.transpose(0, 2, 1).astype(np.float64), 3)
        labelled = set(np.flatnonzero(dataset.labelled)) - labelled_before
        assert labelled == {pool_to_oracle[p] for p in picks}


@pytest.mark.parametrize("num_samples, num_draw", [(2, 1), (3, 1), (5, 4)])
def test_joint_is_exact_while_it_fits_num_draw_per_sample(backend, num_samples, num_draw):
    # Budget num_draw·K = 4 or 16 configurations: C^(t-1) = 2^(t-1) fits it on every step.
    probs = random_probs(np.random.default_rng(num_samples), 9, 4, 2, zeros=True)
    picks, _, _ = oracle.greedy(probs, num_samples)
    ranks = BatchBALD(num_samples, num_draw=num_draw, random_state=0)(baal_layout(probs))
    assert ranks.tolist()[:num_samples] == picks


def test_new_heuristics_subclass_baals():
    from baal.active.heuristics import stochastics
    from batchbald_fast.baal import (EPIG, Entropy, GibbsSampling, PowerBALD, PowerEntropy,
                                     PowerSampling, RankBasedSampling)
    assert isinstance(EPIG(), baal_heuristics.EPIG)
    assert isinstance(Entropy(), baal_heuristics.Entropy)
    for sampler, theirs in [(PowerSampling, stochastics.PowerSampling),
                            (GibbsSampling, stochastics.GibbsSampling),
                            (RankBasedSampling, stochastics.RankBasedSampling)]:
        assert isinstance(sampler(BALD(), 3), theirs)
        assert isinstance(sampler(BALD(), 3), stochastics.StochasticHeuristic)
    assert isinstance(PowerBALD(3), stochastics.PowerSampling)
    assert isinstance(PowerBALD(3)._bh, baal_heuristics.BALD)
    assert isinstance(PowerEntropy(3)._bh, baal_heuristics.Entropy)


def test_epig_matches_the_definition(backend):
    from batchbald_fast.baal import EPIG
    rng = np.random.default_rng(11)
    pool = random_probs(rng, 8, 4, 3, zeros=True)
    targets = random_probs(rng, 5, 4, 3, zeros=True)
    expected = np.array(oracle.epig(pool, targets)[0])

    scores = EPIG().compute_score(baal_layout(pool), baal_layout(targets))
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-10)
    ranks, scores = EPIG().get_ranks(baal_layout(pool), baal_layout(targets))
    assert ranks.tolist() == sorted(range(8), key=lambda n: (-expected[n], n))
    # Logits, tensors, chunks of a generator: the same scores.
    logits = np.log(np.clip(baal_layout(pool), 1e-300, None)) + 2.0
    np.testing.assert_allclose(EPIG().compute_score(torch.from_numpy(logits.copy()),
                                                    baal_layout(targets)),
                               EPIG().compute_score(baal_layout(pool), baal_layout(targets)),
                               rtol=0, atol=1e-9)
    chunked, _ = EPIG().get_ranks(chunks(baal_layout(pool), 3), baal_layout(targets))
    assert chunked.tolist() == ranks.tolist()


def test_epig_targets_from_the_heuristic(backend):
    from batchbald_fast.baal import EPIG
    rng = np.random.default_rng(12)
    pool, targets = random_probs(rng, 6, 3, 4), random_probs(rng, 4, 3, 4)
    expected = np.array(oracle.epig(pool, targets)[0])
    calls = []

    def predict_targets():
        calls.append(1)
        return baal_layout(targets)

    for heuristic in (EPIG(targets=baal_layout(targets)), EPIG(targets=predict_targets)):
        # The heuristic's targets win over the argument (baal's loop passes the labelled set).
        _, scores = heuristic.get_ranks(baal_layout(pool), baal_layout(pool))
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-10)
        _, scores = heuristic.get_ranks(chunks(baal_layout(pool), 4))
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-10)
    assert len(calls) == 2  # once per get_ranks, not once per chunk
    with pytest.raises(ValueError, match="needs target predictions"):
        EPIG().compute_score(baal_layout(pool))
    with pytest.raises(ValueError, match=r"shape \[T, C, K\]"):
        EPIG().compute_score(baal_layout(pool), baal_layout(targets)[..., 0])
    with pytest.raises(ValueError, match="same K posterior samples"):
        EPIG().compute_score(baal_layout(pool), baal_layout(targets)[..., :2])


def test_entropy_matches_the_definition(backend):
    from batchbald_fast.baal import Entropy
    rng = np.random.default_rng(13)
    probs = random_probs(rng, 7, 4, 3, zeros=True)
    mean = probs.mean(axis=1)
    expected = -np.array([sum(p * np.log(p) for p in row if p > 0) for row in mean])
    np.testing.assert_allclose(Entropy().compute_score(baal_layout(probs)), expected,
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(Entropy().compute_score(mean), expected, rtol=0, atol=1e-12)
    assert Entropy()(baal_layout(probs)).tolist() == sorted(range(7),
                                                             key=lambda n: (-expected[n], n))


@pytest.mark.parametrize("name, mode", [("PowerSampling", "power"),
                                        ("GibbsSampling", "softmax"),
                                        ("RankBasedSampling", "softrank")])
def test_samplers_draw_like_stochastic_batch(backend, name, mode):
    import batchbald_fast.baal as ours
    from batchbald_fast import stochastic_batch
    probs = random_probs(np.random.default_rng(14), 20, 4, 3)
    bald_N = oracle_bald(probs)
    sampler = getattr(ours, name)(BALD(), query_size=5, temperature=0.5, random_state=3)
    ranks, distribution = sampler.get_ranks(baal_layout(probs))
    assert ranks.tolist() == stochastic_batch(bald_N, 5, mode=mode, beta=2.0,
                                              random_state=3).tolist()
    if mode == "power":
        w = bald_N ** 2.0
    elif mode == "softmax":
        w = np.exp(2.0 * bald_N)
    else:
        w = (1.0 + np.argsort(np.argsort(-bald_N))) ** -2.0
    np.testing.assert_allclose(distribution, w / w.sum(), rtol=1e-9)
    # A batch of one seed is the same on every call.
    assert sampler.get_ranks(baal_layout(probs))[0].tolist() == ranks.tolist()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        getattr(ours, name)(BALD(), 5, temperature=0)


def test_power_bald_and_entropy_aliases(backend):
    from batchbald_fast.baal import Entropy, PowerBALD, PowerEntropy, PowerSampling
    probs = baal_layout(random_probs(np.random.default_rng(15), 30, 4, 3))
    for alias, base in [(PowerBALD, BALD), (PowerEntropy, Entropy)]:
        ranks, _ = alias(6, temperature=2.0, random_state=1).get_ranks(probs)
        expected, _ = PowerSampling(base(), 6, 2.0, random_state=1).get_ranks(probs)
        assert ranks.tolist() == expected.tolist()
        assert len(set(ranks.tolist())) == 6


def test_active_learning_loop_with_epig_targets_and_power_bald():
    """baal's loop: EPIG on a target set predicted by the current model at each step, and
    PowerBALD (whose baal version the loop calls with an argument it does not take)."""
    from baal.active import ActiveLearningDataset, ActiveLearningLoop
    from batchbald_fast.baal import EPIG, PowerBALD
    from torch.utils.data import TensorDataset

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    dataset = ActiveLearningDataset(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)))
    dataset.label_randomly(5)
    weights = rng.normal(size=(2, 2, 6))  # a fixed "ensemble" of 6 linear models

    def predict(data, **kwargs):
        inputs = np.stack([np.asarray(data[i][0]) for i in range(len(data))])
        return np.einsum("nd,dck->nck", inputs, weights)  # logits [N, C, K]

    targets_X = rng.normal(size=(10, 2)).astype(np.float32)
    target_calls = []

    def predict_targets():
        target_calls.append(1)
        return np.einsum("nd,dck->nck", targets_X, weights)

    for heuristic in (EPIG(targets=predict_targets), PowerBALD(3, random_state=0)):
        before = dataset.n_labelled
        loop = ActiveLearningLoop(dataset, predict, heuristic=heuristic, query_size=3)
        assert loop.step()
        assert dataset.n_labelled == before + 3
    assert len(target_calls) == 1
