"""docs/benchmarks.md is generated from the committed result files, so its numbers cannot drift."""

from pathlib import Path

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
