"""docs/benchmarks.md is generated from the committed result files, so its numbers cannot drift."""

from pathlib import Path

import pytest
from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def _report():
    return load_benchmark("report")


def test_benchmarks_doc_is_generated_from_the_results():
    report = _report()
    assert (ROOT / "docs" / "benchmarks.md").read_text() == report.build(), (
        "docs/benchmarks.md is stale: run .venv/bin/python benchmarks/report.py"
    )


def test_every_evaluation_table_has_its_command():
    """Each evaluation with a committed result is in the doc with its command; each listed
    evaluation is one that benchmarks/evaluate_all.py can run."""
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    evaluate_all = load_benchmark("evaluate_all")
    for name, _, _ in _report().EVALS:
        assert name in evaluate_all.CONFIGS
        if (ROOT / "benchmarks" / "results" / f"eval_{name}.md").is_file():
            assert f"benchmarks/evaluate_all.py --only {name}`" in text


def test_readme_results_block_is_generated_from_the_results():
    report = _report()
    readme = (ROOT / "README.md").read_text()
    assert readme == report.render_readme(readme), "README results are stale: run .venv/bin/python benchmarks/report.py"
    assert "| Real heart disease, leave-site-out |" in readme


def test_scaling_doc_block_is_generated_from_the_results():
    report = _report()
    text = (ROOT / "docs" / "scaling.md").read_text()
    assert text == report.render_scaling(text), "docs/scaling.md is stale: run .venv/bin/python benchmarks/report.py"
    assert "benchmarks/scale.py" in text.split("<!-- scale:start")[1]


def test_skill_interval_agrees_with_the_skill_of_the_means_and_resamples_targets():
    """The targets table's skill is ragim.metrics.skill's definition on the mean log-loss, and
    its CI comes from resampling targets (wide for few, noisy targets; a point for identical
    ones); no gap to the oracle gives None."""
    import numpy as np
    import pandas as pd

    report = _report()
    rng = np.random.default_rng(0)
    n = 40
    base = rng.uniform(0.5, 0.7, n)
    frame = pd.DataFrame(
        [
            {"task_id": f"t{i}", "k_shot": 0, "method": m, "log_loss": v}
            for i in range(n)
            for m, v in [("pooled", base[i] + 0.1), ("neighbor-mean", base[i]),
                         ("oracle", base[i] - 0.1), ("ragim-statistical", base[i] - 0.03)]
        ]
    )
    point, lo, hi = report.skill_interval(frame)
    assert point == pytest.approx(0.3) and lo == pytest.approx(0.3) and hi == pytest.approx(0.3)
    noisy = frame.copy()
    ours = noisy["method"] == "ragim-statistical"
    noisy.loc[ours, "log_loss"] += rng.normal(0, 0.05, n)
    point, lo, hi = report.skill_interval(noisy)
    gap = noisy[noisy.method == "neighbor-mean"].log_loss.mean() - noisy[noisy.method == "oracle"].log_loss.mean()
    want = (noisy[noisy.method == "neighbor-mean"].log_loss.mean() - noisy[ours].log_loss.mean()) / gap
    assert point == pytest.approx(want) and lo < point < hi
    no_gap = frame.copy()
    no_gap.loc[no_gap.method == "oracle", "log_loss"] += 0.5
    assert report.skill_interval(no_gap) is None
