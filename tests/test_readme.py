"""The README's quickstart runs as written, and the README gives the two commands."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_gives_exactly_the_two_commands():
    block = README.split("## Start here: two commands", 1)[1].split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in block.splitlines()[1:] if line.strip()]
    assert commands == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_quickstart_runs_as_written(tmp_path, monkeypatch):
    code = re.search(r"## Quickstart \(Python\)\s+```python\n(.*?)```", README, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README quickstart", "exec"), namespace)
    model, target = namespace["model"], namespace["target"]
    assert model.provenance and target.task_id == "switzerland-any_cad-all"
    assert (tmp_path / "indices" / "heart" / "manifest.json").is_file()
