"""The seed example: runs, writes its pictures, and agrees with scikit-activeml."""

import os
import warnings

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from batchbald_fast import SaturationWarning, demo  # noqa: E402
from batchbald_fast.cli import main  # noqa: E402

from oracle import mutual_information  # noqa: E402
from conftest import random_probs  # noqa: E402


def no_saturation_warning(run):
    """``run()``, asserting that it warned of no saturation: the first cycle's uninformed
    model (nothing labelled, every gain 0) is said in the demo's log instead."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = run()
    assert not [w for w in caught if issubclass(w.category, SaturationWarning)]
    return out


def test_demo_writes_gif_and_png(tmp_path):
    from PIL import Image

    lines = []
    report = no_saturation_warning(lambda: demo.run(tmp_path, n_cycles=2, log=lines.append))
    assert "every gain is 0" in lines[1] and "every gain" not in lines[2]
    for key, name in (("png", demo.PNG_NAME), ("gif", demo.GIF_NAME)):
        assert report[key] == os.path.join(tmp_path, name)
        assert os.path.getsize(report[key]) > 10_000
    assert Image.open(report["gif"]).n_frames == 2
    assert len(report["picks"]) == 2 and all(len(p) == 4 for p in report["picks"])
    assert any(report["png"] in line for line in lines)
    if demo.installed("skactiveml"):
        assert report["same_picks"]
        assert report["picks"] == report["skactiveml_picks"]
        assert report["max_utility_difference"] < 1e-12


def test_demo_runs_without_skactiveml(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "installed", lambda module: module != "skactiveml")
    lines = []
    report = no_saturation_warning(lambda: demo.run(tmp_path, n_cycles=2, log=lines.append))
    assert "skactiveml_picks" not in report
    assert "every gain is 0" in lines[1]
    assert "not installed" in lines[0]
    assert os.path.getsize(report["png"]) > 10_000
    assert len(set(sum(report["picks"], []))) == 8  # no point picked twice


def test_demo_command(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "out"), "--cycles", "1"]) == 0
    out = capsys.readouterr().out
    assert "cycle 1: picks" in out
    assert os.path.exists(tmp_path / "out" / demo.PNG_NAME)


def test_information_gain_is_brute_force_batchbald(backend):
    probs_N_K_C = random_probs(np.random.default_rng(5), 7, 3, 3, zeros=True)
    for batch in ([], [2], [2, 5], [2, 5, 0]):
        others = [g for g in range(7) if g not in batch]
        expected = [mutual_information(probs_N_K_C, batch + [g])
                    - mutual_information(probs_N_K_C, batch) for g in others]
        gain = demo.information_gain(probs_N_K_C[batch], probs_N_K_C[others])
        np.testing.assert_allclose(gain, expected, rtol=0, atol=1e-12)


def _strategies():
    yield "sklearn", lambda n, grid: demo.sklearn_cycles(n, 4, grid)
    if demo.installed("skactiveml"):
        from skactiveml.pool import BatchBALD as ReferenceBatchBALD

        from batchbald_fast.skactiveml import BatchBALD

        yield "skactiveml", lambda n, grid: demo.skactiveml_cycles(BatchBALD, n, 4, grid)
        # scikit-activeml's own BatchBALD: its utilities are an oracle for the picture's.
        yield "skactiveml-reference", lambda n, grid: demo.skactiveml_cycles(
            ReferenceBatchBALD, n, 4, grid)


STRATEGIES = dict(_strategies())


@pytest.fixture(scope="module", params=list(STRATEGIES))
def runs(request):
    """Two and three cycles of one loop, with the members' probabilities on a small grid."""
    X, _, _ = demo.make_data()
    grid_G_2 = demo.make_grid(X, size=12)[2]
    make = STRATEGIES[request.param]
    return request.param, list(make(2, grid_G_2)), list(make(3, grid_G_2))


def test_each_cycle_pictures_its_own_ensemble(runs):
    # A cycle's picture must not change with the cycles that run after it (the GIF drew
    # every frame with the last cycle's ensemble).
    _, two, three = runs
    for a, b in zip(two, three):
        np.testing.assert_array_equal(a.probs_G_K_C, b.probs_G_K_C)
        np.testing.assert_array_equal(a.probs_N_K_C, b.probs_N_K_C)
    # Nothing labelled in cycle 1: every member predicts 50 : 50 everywhere.
    assert np.all(two[0].probs_G_K_C == 0.5) and np.all(two[0].probs_N_K_C == 0.5)
    # Later cycles have learnt something: their frames differ from the first.
    for cycle in three[1:]:
        assert np.abs(cycle.probs_G_K_C[:, :, 1].mean(axis=1) - 0.5).max() > 0.1


def test_picture_field_is_what_the_query_scored(runs):
    # At the pool's points, the gain drawn plus the batch's own information a(A) (the
    # previous pick's utility) is the utility the query returned. scikit-activeml (and so
    # our adapter) clips probabilities at eps = 1e-7, the picture does not: the members
    # that predict their prior say 0 and 1, which moves utilities by ~eps·log(1/eps).
    name, _, three = runs
    atol = 1e-9 if name == "sklearn" else 1e-5
    for cycle in three[1:]:
        picks = cycle.query_indices
        for i in range(4):
            shared = 0.0 if i == 0 else cycle.utilities_B_N[i - 1, picks[i - 1]]
            pool_N = ~cycle.labelled_N
            pool_N[picks[:i]] = False
            gain = demo.information_gain(cycle.probs_N_K_C[picks[:i]],
                                         cycle.probs_N_K_C[pool_N])
            np.testing.assert_allclose(gain + shared, cycle.utilities_B_N[i, pool_N],
                                       rtol=0, atol=atol)
