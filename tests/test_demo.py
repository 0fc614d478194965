"""The main job (`ragim demo`) end to end in fast mode."""

import json
import math

from typer.testing import CliRunner

from ragim.cli import app


def test_demo_writes_report_with_finite_scores(tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["demo", "--fast", "--embedder", "hashing", "--out", str(out), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    for name in ("coefficients.png", "provenance.png", "calibration.png", "waterfall.png", "report.md",
                 "report.html", "result.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 200, name
    assert res["target"]["site"] == "Switzerland"
    for method in ("ragim-attention", "pooled", "neighbor-mean"):
        assert all(math.isfinite(v) for v in res["scores"][method].values())
    assert len(res["provenance"]) > 0
    assert "coefficients.png" in (out / "report.md").read_text()


def test_demo_help_explains_how_to_use_own_data():
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert "--tasks-dir" in result.output and "--site" in result.output
