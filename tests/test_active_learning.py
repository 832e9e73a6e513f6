"""benchmarks/active_learning.py: two acquisitions of every method on a tiny subset, and the
factored consistent MC dropout against one plain masked forward pass per mask."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mlxtend")
pytest.importorskip("tqdm")


def masked_forward(model, x, m1, m2, m3):
    """The network with one explicit set of masks, layer by layer as in training."""
    import torch.nn.functional as F
    h = F.relu(F.max_pool2d(model.conv1(x) * m1[None, :, None, None], 2))
    h = F.relu(F.max_pool2d(model.conv2(h) * m2[None, :, None, None], 2))
    h = F.relu(model.fc1(h.flatten(1))) * m3[None]
    return F.log_softmax(model.fc2(h), dim=1)


def test_consistent_mc_dropout_matches_masked_passes(al):
    torch.manual_seed(0)
    model = al.make_model(10, (28, 28)).eval()
    X = np.random.default_rng(0).random((7, 1, 28, 28), dtype=np.float32)
    masks = al.sample_masks(model, 5, torch.Generator().manual_seed(1))
    ones = torch.ones(32), torch.ones(64)
    for layers in ("all", "dense"):
        # A tiny chunk so that the pool is split across chunks too.
        got_N_K_C = al.mc_log_probs(model, X, masks, layers=layers, chunk=3)
        assert got_N_K_C.shape == (7, 5, 10)
        with torch.no_grad():
            for k in range(5):
                conv_masks = (masks[0][k], masks[1][k]) if layers == "all" else ones
                want_N_C = masked_forward(model, torch.from_numpy(X), *conv_masks,
                                          masks[2][k])
                np.testing.assert_allclose(got_N_K_C[:, k], want_N_C.numpy(), atol=2e-5)
        # Every mask is a different posterior sample.
        assert not np.allclose(got_N_K_C[:, 0], got_N_K_C[:, 1])


def test_masks_drop_half_and_rescale(al):
    model = al.make_model(10, (28, 28))
    m1, m2, m3 = al.sample_masks(model, 400, torch.Generator().manual_seed(0))
    assert m1.shape == (400, 32) and m2.shape == (400, 64) and m3.shape == (400, 128)
    for m in (m1, m2, m3):
        assert set(np.unique(m.numpy())) == {0.0, 2.0}
        assert abs(float((m == 0).float().mean()) - 0.5) < 0.03


def test_two_acquisitions_of_every_method(al, tmp_path, backend, capsys):
    out = tmp_path / "al.json"
    al.main(["--quick", "--datasets", "mnist", "--seeds", "1", "--jobs", "1", "--threads", "1",
             "--methods", ",".join(al.METHODS), "--json", str(out)])
    payload = json.loads(out.read_text())
    runs = {r["method"]: r for r in payload["runs"]}
    assert set(runs) == set(al.METHODS)
    for method, r in runs.items():
        assert r["labels"] == [20, 30, 40], method
        assert len(r["accuracy"]) == 3 and all(0 <= a <= 1 for a in r["accuracy"])
        assert len(r["inference_seconds"]) == len(r["acquisition_seconds"]) == 2
        assert len(r["train_seconds"]) == 3
        # mnist's pool has no copies: every pick is a distinct image.
        assert r["distinct_picked"] == [10, 10]
    assert payload["config"]["pool"] == {"mnist": 200}

    png = tmp_path / "curves.png"
    al.report([str(out)], str(png))
    tables = capsys.readouterr().out
    for method in al.METHODS:
        assert f"| mnist | {method} | 1 |" in tables
    assert png.stat().st_size > 10_000


def test_initial_labels_balanced_and_acquisitions_new(al):
    data = al.subsample(al.load_mnist(), 200, 50, 100)
    assert np.bincount(data.y_pool).tolist() == [20] * 10
    assert len(np.unique(data.base_pool)) == 200
    labelled = al.initial_labels(data.y_pool, 10, 2, np.random.default_rng(0))
    assert np.bincount(data.y_pool[labelled], minlength=10).tolist() == [2] * 10

    class Args:
        labels, batch_size, initial_per_class = 40, 10, 2
        epoch_steps, min_epochs, max_epochs, patience = 2, 1, 1, 1
        mc_layers, train_batch, lr = "all", 8, 1e-3
        K = {"mnist": 4}

    records = list(al.run_cycles(data, "batchbald-greedy", 0, Args))
    assert len(records) == 3 and records[-1]["labels"] == [20, 30, 40]


def _quick(al, path, *extra):
    al.main(["--quick", "--datasets", "mnist", "--seeds", "1", "--jobs", "1", "--threads", "1",
             "--json", str(path), *extra])
    return {r["method"]: r for r in json.loads(path.read_text())["runs"]}


SAME = ("labels", "accuracy", "epochs", "picked", "distinct_picked", "restarts")


def test_stopped_run_resumes_as_if_never_stopped(al, tmp_path):
    whole = _quick(al, tmp_path / "whole.json", "--methods", "batchbald")["batchbald"]
    path = tmp_path / "stopped.json"
    stopped = _quick(al, path, "--methods", "batchbald", "--labels", "30")["batchbald"]
    assert stopped["labels"] == [20, 30]
    # Extended to 40 labels: the training at 30 is redone, then acquired from.
    resumed = _quick(al, path, "--methods", "batchbald", "--resume")["batchbald"]
    for key in SAME:
        assert resumed[key] == whole[key], key
    with pytest.raises(SystemExit, match="other settings"):
        _quick(al, path, "--methods", "batchbald", "--resume", "--K", "3")


def test_greedy_copied_from_restart_equals_greedy_alone(al, tmp_path):
    both = _quick(al, tmp_path / "both.json", "--methods", "batchbald,batchbald-greedy")
    alone = _quick(al, tmp_path / "alone.json", "--methods", "batchbald-greedy")
    for key in SAME:
        assert both["batchbald-greedy"][key] == alone["batchbald-greedy"][key], key


def test_repeated_pool_is_three_noisy_copies(al):
    plain, repeated = al.load_mnist(), al.load_mnist(repeats=3)
    n = len(plain.y_pool)
    assert len(repeated.y_pool) == 3 * n
    np.testing.assert_array_equal(repeated.y_pool[n:2 * n], plain.y_pool)
    noise = repeated.X_pool[n:2 * n] - plain.X_pool
    assert abs(noise.std() - 0.1) < 0.002
    assert not np.allclose(repeated.X_pool[:n], repeated.X_pool[n:2 * n])
    np.testing.assert_array_equal(repeated.X_test, plain.X_test)


def test_npz_data(al, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "digits.npz"
    np.savez(path, X_train=rng.random((300, 784)), y_train=np.repeat(np.arange(3), 100),
             X_test=rng.random((30, 28, 28)), y_test=np.repeat(np.arange(3), 10))
    data = al.load_npz(str(path))
    assert data.name == "digits" and data.n_classes == 3
    assert data.X_pool.shape == (240, 1, 28, 28) and len(data.y_val) == 60
    with pytest.raises(ValueError, match="lacks"):
        np.savez(tmp_path / "bad.npz", X_train=rng.random((3, 4)))
        al.load_npz(str(tmp_path / "bad.npz"))


def test_worker_processes_give_the_results_of_one_process(tmp_path, backend):
    # As a user runs it: a script (spawned workers import it as the main module); the
    # backend reaches the script and its workers through the environment.
    script = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks",
                          "active_learning.py")

    def run(jobs):
        path = tmp_path / f"jobs{jobs}.json"
        subprocess.run([sys.executable, script, "--quick", "--datasets", "mnist", "--seeds",
                        "1", "--threads", "1", "--jobs", str(jobs), "--methods",
                        "random,batchbald,batchbald-greedy", "--json", str(path)],
                       check=True, capture_output=True)
        payload = json.loads(path.read_text())
        assert payload["config"]["jobs"] == jobs
        return {r["method"]: r for r in payload["runs"]}

    one, two = run(1), run(2)
    assert set(one) == set(two) == {"random", "batchbald", "batchbald-greedy"}
    for method in one:
        for key in SAME:
            assert two[method][key] == one[method][key], (method, key)
