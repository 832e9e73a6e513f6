"""The seed example: runs, writes its pictures, and agrees with scikit-activeml."""

import os

import pytest

pytest.importorskip("matplotlib")

from batchbald_fast import demo  # noqa: E402
from batchbald_fast.cli import main  # noqa: E402


def test_demo_writes_gif_and_png(tmp_path):
    lines = []
    report = demo.run(tmp_path, n_cycles=2, log=lines.append)
    for key, name in (("png", demo.PNG_NAME), ("gif", demo.GIF_NAME)):
        assert report[key] == os.path.join(tmp_path, name)
        assert os.path.getsize(report[key]) > 10_000
    assert len(report["picks"]) == 2 and all(len(p) == 4 for p in report["picks"])
    assert any(report["png"] in line for line in lines)
    if demo.installed("skactiveml"):
        assert report["same_picks"]
        assert report["picks"] == report["skactiveml_picks"]
        assert report["max_utility_difference"] < 1e-12


def test_demo_runs_without_skactiveml(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "installed", lambda module: module != "skactiveml")
    lines = []
    report = demo.run(tmp_path, n_cycles=2, log=lines.append)
    assert "skactiveml_picks" not in report
    assert "not installed" in lines[0]
    assert os.path.getsize(report["png"]) > 10_000
    assert len(set(sum(report["picks"], []))) == 8  # no point picked twice


def test_demo_command(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "out"), "--cycles", "1"]) == 0
    out = capsys.readouterr().out
    assert "cycle 1: picks" in out
    assert os.path.exists(tmp_path / "out" / demo.PNG_NAME)
