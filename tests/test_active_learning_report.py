"""benchmarks/active_learning.py's results files: --merge, --partial and the tables, on
records written here (no torch needed)."""

import json

import numpy as np
import pytest

import oracle
from conftest import load_benchmark, random_probs

CONFIG = {"labels": 70, "batch_size": 10, "K": {"mnist": 20}, "pool": {"mnist": 100},
          "threads": 1}


def record(method, seed, accuracy, dataset="mnist"):
    """A run of len(accuracy) trainings from 20 labels, 10 a batch, 1 s a part."""
    n = len(accuracy)
    return {"dataset": dataset, "method": method, "seed": seed,
            "labels": [20 + 10 * i for i in range(n)], "accuracy": list(accuracy),
            "epochs": [10] * n, "train_seconds": [1.0] * n, "train_cpu_seconds": [1.0] * n,
            **{f"{part}{cpu}seconds": [1.0] * (n - 1)
               for part in ("inference", "acquisition") for cpu in ("_", "_cpu_")},
            "distinct_picked": [10] * (n - 1), "restarts": [0] * (n - 1),
            "picked": [[seed * 100 + 10 * i + j for j in range(10)] for i in range(n - 1)]}


def write(path, runs, **config):
    path.write_text(json.dumps({"config": {**CONFIG, **config}, "runs": runs}))
    return str(path)


def labels_table(text):
    """The rows of the labels-to-accuracy table, by method: its cells."""
    table = text.split("| data set | method | seeds | labels to 85%", 1)[1].split("\n\n")[0]
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    return {row[1]: row[2:] for row in rows}


def test_merge_unites_files_and_keeps_the_first_of_a_run(al, tmp_path):
    first = write(tmp_path / "a.json", [record("bald", 0, [0.5, 0.8, 0.9, 0.91, 0.92, 0.95]),
                                        None])
    second = write(tmp_path / "b.json", [record("bald", 0, [0.1] * 6),
                                         record("bald", 1, [0.6] * 6, "repeated-mnist")],
                   K={"repeated-mnist": 10}, pool={"repeated-mnist": 300})
    out = tmp_path / "merged.json"
    al.merge([first, second], str(out))
    merged = json.loads(out.read_text())
    assert merged["config"]["K"] == {"mnist": 20, "repeated-mnist": 10}
    assert merged["config"]["pool"] == {"mnist": 100, "repeated-mnist": 300}
    runs = {(r["dataset"], r["seed"]): r for r in merged["runs"]}
    assert set(runs) == {("mnist", 0), ("repeated-mnist", 1)}
    assert runs["mnist", 0]["accuracy"][1] == 0.8  # the first file's

    other = write(tmp_path / "c.json", [record("bald", 2, [0.5] * 6)], batch_size=5)
    with pytest.raises(SystemExit, match="another batch_size"):
        al.merge([first, other], str(tmp_path / "bad.json"))


def test_partial_runs_join_the_tables_and_methods_share_seeds(al, tmp_path, capsys):
    reaches = [0.5, 0.7, 0.85, 0.9, 0.93, 0.96]  # 90% at 50 labels, 95% at 70
    path = write(tmp_path / "runs.json", [
        record("random", 0, reaches), record("bald", 0, reaches),
        record("random", 1, reaches), record("bald", 1, reaches[:3]),  # stopped at 40
        record("random", 2, reaches)])  # seed 2: no bald run, left out of the tables
    al.report([path])
    bald = labels_table(capsys.readouterr().out)["bald"]
    assert bald[0] == "1"  # only seed 0 reached the target
    assert bald[2] == "50 / 50 / 50" and bald[3] == "70 / 70 / 70"

    al.report([path], partial=40)
    table = labels_table(capsys.readouterr().out)
    assert table["random"][0] == table["bald"][0] == "2"  # seeds 0 and 1, not 2
    # Seed 1 stopped at 40 labels before reaching 90%: "> 40", not "not reached".
    assert table["bald"][2] == "50 / 50 / > 40"
    assert table["bald"][4].startswith("40, 40; 50, >40; 70, >40")

    al.report([path], up_to=40)
    table = labels_table(capsys.readouterr().out)
    # Cut at 40 labels, which bald's seed 1 reached too: 85% at most, seeds 0 and 1.
    assert table["random"][0] == table["bald"][0] == "2"
    assert table["random"][1] == "40 / 40 / 40" and table["random"][2] == "not reached / " * 2 + \
        "not reached"


def test_copies_pair_information_is_the_oracles(backend):
    copies = load_benchmark("active_learning_copies")
    probs = random_probs(np.random.default_rng(0), 6, 5, 3)
    got_N = copies.pair_information_N(probs, 2)
    want_N = [oracle.mutual_information(probs, [2, x]) for x in range(6)]
    np.testing.assert_allclose(got_N, want_N, rtol=0, atol=1e-12)
