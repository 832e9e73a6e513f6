"""The batchbald-fast command: select, bench, errors."""

import dataclasses
import importlib.util
import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import batchbald_fast
import oracle
from batchbald_fast import _api
from batchbald_fast.cli import main
from batchbald_fast._workloads import WORKLOADS
from conftest import random_probs

W5_PICKS = [143, 49, 131, 81]


@pytest.fixture
def files(tmp_path):
    probs = WORKLOADS["W5"].probs()
    paths = {"nkc": tmp_path / "w5.npy", "knc": tmp_path / "w5_knc.npy",
             "log": tmp_path / "w5_log.npy", "2d": tmp_path / "flat.npy",
             "text": tmp_path / "notes.npy", "one": tmp_path / "one.npz",
             "two": tmp_path / "two.npz"}
    np.save(paths["nkc"], probs)
    np.savez(paths["one"], probs)
    np.savez(paths["two"], probs=probs, labels=np.arange(3))
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


def test_select_saturation_and_extra_rounds_as_the_api(backend, files, capsys):
    probs = WORKLOADS["W5"].probs()
    outs = []
    for argv, kwargs in [([], {}), (["--saturation", "greedy"], {"saturation": "greedy"}),
                         (["--extra-rounds", "4"], {"extra_rounds": 4})]:
        outs.append(run_json(capsys, files["nkc"], "--batch-size", "20", "--num-samples",
                             "40", *argv))
        out = outs[-1]
        with warnings.catch_warnings():  # the select above warned (once per K)
            warnings.simplefilter("ignore", batchbald_fast.SaturationWarning)
            expected = batchbald_fast.batchbald(probs, 20, num_samples=40, random_state=0,
                                                **kwargs)
        # Every per-step field of the result, nan as null.
        step_fields = [f.name for f in dataclasses.fields(expected) if f.name != "utilities"]
        assert set(out) == set(step_fields) | {"backend"}
        for name in step_fields:
            assert out[name] == [None if isinstance(v, float) and math.isnan(v) else v
                                 for v in getattr(expected, name).tolist()], name
    # W5 saturates by step 20: the default restarts, greedy does not; rounds change picks.
    assert max(outs[0]["segments"]) > 0 and max(outs[1]["segments"]) == 0
    assert outs[2]["indices"] != outs[0]["indices"]


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
    (["select", "{nkc}", "--batch-size", "2", "--saturation", "stop"], "invalid choice"),
    (["select", "{nkc}", "--batch-size", "2", "--extra-rounds", "-1"], "extra_rounds"),
    (["select", "{nkc}"], "--batch-size"),
    (["select", "{two}", "--batch-size", "2"],
     "two.npz is an .npz archive holding probs, labels: choose one with --key NAME"),
    (["select", "{two}", "--key", "prob", "--batch-size", "2"],
     "holding probs, labels: --key prob is not one of them"),
    (["select", "{nkc}", "--key", "probs", "--batch-size", "2"], "w5.npy is a .npy file"),
    (["select", "{two}", "--key", "labels", "--batch-size", "2"], "3 dimensions"),
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


def test_npz_archives(files, capsys):
    # One array: no --key needed; several: --key picks one.
    for argv in ([files["one"]], [files["two"], "--key", "probs"]):
        out = run_json(capsys, *argv, "--batch-size", "4", "--num-samples", "10")
        assert out["indices"] == W5_PICKS


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"batchbald-fast {batchbald_fast.__version__}\n"


def test_seed_defaults_to_0(files, capsys):
    argv = [files["nkc"], "--batch-size", "8", "--num-samples", "10"]
    runs = [run_json(capsys, *argv) for _ in range(2)] + [run_json(capsys, *argv, "--seed", "0")]
    assert "sampled" in runs[0]["mode"]
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.parametrize("tqdm", [True, False])
def test_select_shows_picks_on_a_terminal(files, capsys, monkeypatch, tqdm):
    if tqdm:
        pytest.importorskip("tqdm")
    else:
        find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "tqdm" else find_spec(name, *a))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["select", files["nkc"], "--batch-size", "6", "--json"]) == 0
    err = capsys.readouterr().err
    assert "6/6" in err and err.endswith("\n")
    if not tqdm:
        assert "6/6 picks" in err and "left" in err
    assert main(["select", files["nkc"], "--batch-size", "6", "--json", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_no_progress_off_a_terminal(files, capsys):
    assert main(["select", files["nkc"], "--batch-size", "6", "--json"]) == 0
    assert capsys.readouterr().err == ""


def test_ctrl_c_is_one_line_and_status_130(files, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_api, "batchbald", interrupted)
    assert main(["select", files["nkc"], "--batch-size", "6"]) == 130
    assert capsys.readouterr().err == "batchbald-fast: interrupted\n"


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32",
                    reason="needs POSIX signals and a pseudo-terminal")
def test_ctrl_c_during_a_long_select(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    # A run of minutes: interrupted once the progress shows its first picks.
    path = tmp_path / "pool.npy"
    np.save(path, np.random.default_rng(0).dirichlet(np.ones(10), size=(2000, 20)))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    # SIGINT's default disposition in the child: a shell that started the suite in the
    # background left it ignored, and Python then installs no KeyboardInterrupt handler.
    proc = subprocess.Popen([sys.executable, "-m", "batchbald_fast", "select", str(path),
                             "--batch-size", "2000"], stdout=subprocess.DEVNULL, stderr=slave,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(slave)

    def read(until):
        out = b""
        deadline = time.monotonic() + 300  # a safety net, not an assertion on speed
        while not until(out) and time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the terminal closed with the process
                    break
                if not chunk:
                    break
                out += chunk
        return out

    try:
        err = read(lambda out: re.search(rb"[1-9][0-9]*/2000", out))
        proc.send_signal(signal.SIGINT)
        err += read(lambda out: False)  # to the end: the terminal closes with the process
        status = proc.wait(timeout=300)
    finally:
        proc.kill()
        os.close(master)
    text = err.decode()
    assert status == 130
    assert "Traceback" not in text
    assert text.rstrip().endswith("batchbald-fast: interrupted")


def oracle_bald(probs_N_K_C):
    return np.array([oracle.mutual_information(probs_N_K_C, [n])
                     for n in range(len(probs_N_K_C))])


@pytest.fixture
def epig_files(tmp_path):
    rng = np.random.default_rng(0)
    probs = random_probs(rng, 12, 4, 3)
    targets = random_probs(rng, 5, 4, 3)
    paths = {"pool": tmp_path / "pool.npy", "targets": tmp_path / "targets.npy",
             "one": tmp_path / "one_target.npy", "pool_knc": tmp_path / "pool_knc.npy",
             "targets_knc": tmp_path / "targets_knc.npy", "other_k": tmp_path / "k5.npy"}
    np.save(paths["pool"], probs)
    np.save(paths["targets"], targets)
    np.save(paths["one"], targets[:1])
    np.save(paths["pool_knc"], probs.transpose(1, 0, 2))
    np.save(paths["targets_knc"], targets.transpose(1, 0, 2))
    np.save(paths["other_k"], random_probs(rng, 5, 5, 3))
    return probs, targets, {k: str(v) for k, v in paths.items()}


def test_select_bald_and_epig_top_scores(backend, epig_files, capsys):
    probs, targets, paths = epig_files
    bald_N = oracle_bald(probs)
    out = run_json(capsys, paths["pool"], "--objective", "bald", "--batch-size", "4")
    assert out["indices"] == sorted(range(12), key=lambda n: (-bald_N[n], n))[:4]
    np.testing.assert_allclose(out["scores"], bald_N[out["indices"]], atol=1e-10)

    epig_N, errors_N = map(np.array, oracle.epig(probs, targets))
    best = sorted(range(12), key=lambda n: (-epig_N[n], n))[:4]
    for argv in ([paths["pool"], "--targets", paths["targets"]],
                 [paths["pool_knc"], "--targets", paths["targets_knc"], "--layout", "KNC"]):
        out = run_json(capsys, *argv, "--objective", "epig", "--batch-size", "4")
        assert out["indices"] == best and out["objective"] == "epig"
        np.testing.assert_allclose(out["scores"], epig_N[best], atol=1e-10)
        np.testing.assert_allclose(out["std_errors"], errors_N[best], atol=1e-10)
    out = run_json(capsys, paths["pool"], "--objective", "epig", "--targets", paths["one"],
                   "--batch-size", "20")
    assert sorted(out["indices"]) == list(range(12)) and "std_errors" not in out
    assert main(["select", paths["pool"], "--objective", "epig", "--targets",
                 paths["targets"], "--batch-size", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and "std error" in lines[0]
    assert [int(line.split()[1]) for line in lines[1:]] == best[:3]


def test_select_batch_epig_is_the_greedy_oracle(backend, epig_files, capsys):
    probs, targets, paths = epig_files
    picks, scores, _ = oracle.greedy_joint_epig(probs, targets, 3)
    for argv in ([paths["pool"], "--targets", paths["targets"]],
                 [paths["pool_knc"], "--targets", paths["targets_knc"], "--layout", "KNC"]):
        out = run_json(capsys, *argv, "--objective", "batch-epig", "--batch-size", "3",
                       "--num-samples", "1000000")
        assert out["indices"] == picks and out["mode"] == ["exact"] * 3
        np.testing.assert_allclose(out["scores"], scores, rtol=0, atol=1e-10)
    assert main(["select", paths["pool"], "--objective", "batch-epig", "--batch-size",
                 "2"]) == 2
    assert "--objective batch-epig needs --targets" in capsys.readouterr().err


def test_select_stochastic(backend, epig_files, capsys):
    probs, targets, paths = epig_files
    for objective, scores_N, extra in [
            ("bald", batchbald_fast.bald(probs), []),
            ("epig", batchbald_fast.epig(probs, targets), ["--targets", paths["targets"]])]:
        for mode in ("power", "softmax", "softrank"):
            out = run_json(capsys, paths["pool"], "--objective", objective, *extra,
                           "--stochastic", mode, "--beta", "2", "--seed", "5",
                           "--batch-size", "6")
            expected = batchbald_fast.stochastic_batch(scores_N, 6, mode=mode, beta=2.0,
                                                       random_state=5)
            assert out["indices"] == expected.tolist()
            assert out["stochastic"] == mode and out["beta"] == 2.0


def test_select_dtype_float32_against_the_oracles(backend, epig_files, capsys):
    probs, targets, paths = epig_files
    picks, scores, _ = oracle.greedy(probs, 3)
    out = run_json(capsys, paths["pool"], "--batch-size", "3", "--dtype", "float32")
    assert out["indices"] == picks and out["mode"] == ["exact"] * 3
    np.testing.assert_allclose(out["scores"], scores, rtol=0, atol=2e-6)

    picks, scores, _ = oracle.greedy_joint_epig(probs, targets, 3)
    out = run_json(capsys, paths["pool"], "--targets", paths["targets"], "--objective",
                   "batch-epig", "--batch-size", "3", "--dtype", "float32")
    assert out["indices"] == picks
    np.testing.assert_allclose(out["scores"], scores, rtol=0, atol=2e-6)

    epig_N, errors_N = map(np.array, oracle.epig(probs, targets))
    out = run_json(capsys, paths["pool"], "--targets", paths["targets"], "--objective",
                   "epig", "--batch-size", "12", "--dtype", "float32")
    np.testing.assert_allclose(out["scores"], epig_N[out["indices"]], rtol=0, atol=2e-6)
    np.testing.assert_allclose(out["std_errors"], errors_N[out["indices"]], rtol=0,
                               atol=2e-6)


@pytest.mark.parametrize("argv, message", [
    (["--objective", "bald", "--dtype", "float32"],
     "--dtype is the precision of joint predictives; --objective bald computes none"),
    (["--dtype", "float16"], "invalid choice"),
    (["--objective", "epig"], "--objective epig needs --targets"),
    (["--targets", "{targets}"], "--targets is for --objective epig or batch-epig, not batchbald"),
    (["--objective", "bald", "--targets", "{targets}"], "not bald"),
    (["--stochastic", "power"], "--stochastic draws by a per-point score"),
    (["--objective", "bald", "--stochastic", "gumbel"], "invalid choice"),
    (["--objective", "bald", "--stochastic", "power", "--beta", "-1"], "beta must be"),
    (["--objective", "epig", "--targets", "{other_k}"], "same K posterior samples"),
    (["--objective", "epig", "--targets", "missing.npy"], "No such file"),
    (["--objective", "nope"], "invalid choice"),
    (["--objective", "bald", "--beta", "2"], "--beta is the inverse temperature of --stochastic"),
])
def test_select_objective_errors(epig_files, capsys, argv, message):
    _, _, paths = epig_files
    argv = ["select", paths["pool"], "--batch-size", "2"] + [a.format(**paths) for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert message in captured.err


def test_bench_names_the_runner_whose_picks_differ(capsys, monkeypatch):
    from batchbald_fast import _workloads

    ours = _workloads.available_runners()["numpy"]

    def shifted(by):
        return lambda *args: np.roll(ours(*args), by)

    monkeypatch.setattr(_workloads, "available_runners", lambda: {
        "numpy": ours, "again": ours, "baal": shifted(1), "odd": shifted(2)})
    monkeypatch.setattr(_workloads, "import_runner_modules", lambda names: None)
    assert main(["bench", "--workloads", "W5", "--quiet"]) == 0
    header, row, *notes = capsys.readouterr().out.splitlines()
    assert row.endswith("NO: baal (by design), odd (4 steps)")
    assert notes == [f"baal differs on W5 by design: {_workloads.DIFFERS_BY_DESIGN['baal']}"]
