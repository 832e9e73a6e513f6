"""The batchbald-fast command: select, bench, errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from batchbald_fast.cli import main
from batchbald_fast._workloads import WORKLOADS

W5_PICKS = [143, 49, 131, 81]


@pytest.fixture
def files(tmp_path):
    probs = WORKLOADS["W5"].probs()
    paths = {"nkc": tmp_path / "w5.npy", "knc": tmp_path / "w5_knc.npy",
             "log": tmp_path / "w5_log.npy", "2d": tmp_path / "flat.npy",
             "text": tmp_path / "notes.npy"}
    np.save(paths["nkc"], probs)
    np.save(paths["knc"], probs.transpose(1, 0, 2))
    np.save(paths["log"], np.log(probs))
    np.save(paths["2d"], probs[:, 0])
    paths["text"].write_text("not an array")
    return {k: str(v) for k, v in paths.items()}


def run_json(capsys, *argv):
    assert main(["select", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_select_layouts_and_log_probs_agree(backend, files, capsys):
    for argv in ([files["nkc"]], [files["knc"], "--layout", "KNC"],
                 [files["log"], "--log-probs"]):
        out = run_json(capsys, *argv, "--batch-size", "4", "--num-samples", "10")
        assert out["indices"] == W5_PICKS
        assert out["exact"] == [True] * 4
        assert out["backend"] == backend


def test_select_table_and_seeded_sampled_steps(backend, files, capsys):
    assert main(["select", files["nkc"], "--batch-size", "6", "--num-samples", "10",
                 "--seed", "3", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 and "sampled" in lines[-1]
    assert [int(line.split()[1]) for line in lines[1:5]] == W5_PICKS
    seeded = [run_json(capsys, files["nkc"], "--batch-size", "6", "--num-samples", "10",
                       "--seed", "3") for _ in range(2)]
    assert seeded[0] == seeded[1]


@pytest.mark.parametrize("argv, message", [
    (["select", "missing.npy", "--batch-size", "2"], "No such file"),
    (["select", "{text}", "--batch-size", "2"], "not a .npy file"),
    (["select", "{2d}", "--batch-size", "2"], "3 dimensions"),
    (["select", "{2d}", "--layout", "KNC", "--batch-size", "2"], "3 dimensions"),
    (["select", "{log}", "--batch-size", "2"], "--log-probs"),
    (["select", "{nkc}", "--batch-size", "-1"], "batch_size"),
    (["select", "{nkc}", "--batch-size", "two"], "invalid int"),
    (["select", "{nkc}", "--batch-size", "2", "--threads", "0"], "num_threads"),
    (["select", "{nkc}", "--batch-size", "2", "--layout", "CKN"], "invalid choice"),
    (["select", "{nkc}"], "--batch-size"),
    (["bench", "--workloads", "W9"], "unknown workload W9"),
    (["bench", "--runners", "nope"], "not available"),
    (["demo", "--cycles", "0"], "--cycles"),
    ([], "command"),
])
def test_bad_input_is_one_line_and_status_2(files, capsys, argv, message):
    argv = [a.format(**files) for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err
    assert captured.err.startswith("batchbald-fast: error:")


def test_module_entry_point_no_traceback(files):
    done = subprocess.run([sys.executable, "-m", "batchbald_fast", "select", "missing.npy",
                           "--batch-size", "2"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "batchbald_fast", "select", files["nkc"],
                           "--batch-size", "4", "--num-samples", "10", "--json"],
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["indices"] == W5_PICKS


def test_bench_prints_a_table(capsys):
    assert main(["bench", "--workloads", "W5", "--runners", "numpy", "--quiet"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert "numpy" in header and row.startswith("W5") and " s " in row + " "
    assert row.endswith("yes (4 steps)")
