"""Progress of long selections: a callable or a tqdm bar, one step at a time."""

import importlib.util

import numpy as np
import pytest

import batchbald_fast as bf
from conftest import random_probs


@pytest.fixture
def probs_N_K_C():
    return random_probs(np.random.default_rng(3), 30, 5, 3)


def test_callable_sees_every_pick(backend, probs_N_K_C):
    calls = []
    result = bf.batchbald(probs_N_K_C, 6, num_samples=20, random_state=0,
                          progress=lambda done, total: calls.append((done, total)))
    assert calls == [(t, 6) for t in range(1, 7)]
    expected = bf.batchbald(probs_N_K_C, 6, num_samples=20, random_state=0)
    np.testing.assert_array_equal(result.indices, expected.indices)


def test_total_is_the_picks_that_will_be_made(backend, probs_N_K_C):
    calls = []
    bf.batchbald(probs_N_K_C, 10, candidates=[4, 7, 9], progress=lambda *a: calls.append(a))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    bf.batchbald(probs_N_K_C, 0, progress=lambda *a: calls.append(a))
    assert len(calls) == 3


def test_callable_can_stop_the_selection(backend, probs_N_K_C):
    class Stop(Exception):
        pass

    def stop_after_two(done, total):
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        bf.batchbald(probs_N_K_C, 5, progress=stop_after_two)


def test_tqdm_bar_on_stderr(backend, probs_N_K_C, capsys):
    pytest.importorskip("tqdm")
    bf.batchbald(probs_N_K_C, 4, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "BatchBALD" in captured.err and "4/4" in captured.err


def test_off_by_default(backend, probs_N_K_C, capsys):
    bf.batchbald(probs_N_K_C, 4)
    bf.batchbald(probs_N_K_C, 4, progress=None)
    assert capsys.readouterr() == ("", "")


def test_true_without_tqdm_names_the_extra(probs_N_K_C, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tqdm" else find_spec(name, *a))
    with pytest.raises(ImportError, match=r"batchbald_fast\[progress\]"):
        bf.batchbald(probs_N_K_C, 4, progress=True)


@pytest.mark.parametrize("progress", ["yes", 1, 0.5])
def test_bad_progress_refused(probs_N_K_C, progress):
    with pytest.raises(TypeError, match="progress must be a bool or a callable"):
        bf.batchbald(probs_N_K_C, 2, progress=progress)
