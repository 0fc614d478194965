"""The main job (`ragim demo`) end to end in fast mode, and its report: report.html is a proper
UTF-8 page with the same content as report.md."""

import html.parser
import json
import math
import re

from typer.testing import CliRunner

from ragim.cli import app


class _Text(html.parser.HTMLParser):
    """The visible text of an HTML page, and its image sources and alt texts."""

    def __init__(self):
        super().__init__()
        self.parts, self.images, self._skip = [], [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script", "title"):
            self._skip += 1
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag in ("style", "script", "title"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)

    def text(self):
        return " ".join(" ".join(self.parts).split())


def md_pieces(md: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The text pieces of report.md (headings, paragraphs, quotes, table cells) and its images."""
    texts, images = [], []
    for line in md.splitlines():
        line = line.strip()
        if not line or re.fullmatch(r"\|[-:|]+\|", line):
            continue
        if m := re.fullmatch(r"!\[(.*)\]\((.*)\)", line):
            images.append((m.group(2), m.group(1)))
        elif line.startswith("|"):
            texts += [
                c.strip().replace("\\|", "|") for c in line.strip("|").split(" | ") if c.strip()
            ]
        else:
            texts.append(re.sub(r"^(#+|>)\s*", "", line).replace("**", "").strip("_"))
    return texts, images


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
    for method in ("ragim", "pooled", "neighbor-mean"):
        assert all(math.isfinite(v) for v in res["scores"][method].values())
    assert len(res["provenance"]) > 0
    assert "coefficients.png" in (out / "report.md").read_text()

    # report.html: a proper page with the same content as report.md, images linked relative
    page = (out / "report.html").read_text(encoding="utf-8")
    assert (
        page.startswith("<!DOCTYPE html>")
        and '<meta charset="utf-8">' in page
        and "</html>" in page
    )
    parser = _Text()
    parser.feed(page)
    text = parser.text()
    pieces, images = md_pieces((out / "report.md").read_text(encoding="utf-8"))
    assert len(pieces) > 60 and len(images) == 4
    missing = [p for p in pieces if " ".join(p.split()) not in text]
    assert not missing, missing
    assert [(i["src"], i["alt"]) for i in parser.images] == images
    assert all((out / src).is_file() for src, _ in images)
    # what a clinician needs: the outcome in words, reference levels, the truncation, the risk
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "The model predicts coronary artery disease (>50% narrowing)." in md
    assert "vs typical angina" in md and "male vs female" in md
    assert re.search(
        r"15 of \d+ terms shown \(largest first\); \d+ missing-value indicator terms not shown", md
    )
    assert re.search(
        r"## One patient \(row \d+\): predicted risk of coronary artery disease \(>50% narrowing\) "
        r"0\.\d\d",
        md,
    )
    weights = [r["weight"] for r in res["provenance"]]
    table = md.split("## The neighbours that shaped it")[1].split("![")[0]
    shown = [
        float(line.split("|")[-2])
        for line in table.splitlines()
        if line.startswith("| ") and "task_id" not in line
    ]
    assert shown == sorted(shown, reverse=True) and len(shown) == len(weights)  # heaviest first


def test_demo_help_explains_how_to_use_own_data():
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert "--tasks-dir" in result.output and "--site" in result.output


def test_demo_keeps_tasks_sharing_the_held_out_sites_patients_out_of_the_index(tmp_path):
    """The same patient id is the same patient: a task at another site that reuses the held-out
    site's patients would leak their outcomes into a model the demo calls zero-shot."""
    import warnings

    import numpy as np
    import pandas as pd

    from ragim.demo import run_demo
    from ragim.errors import DataWarning

    root = tmp_path / "tasks"
    (root / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for tid, site, ids in [("a1", "A", range(0, 80)), ("b1", "B", range(100, 180)), ("c1", "C", range(200, 280)),
                           ("d1", "D", range(0, 80))]:  # d1 reuses a1's patients
        x = rng.normal(size=80)
        y = (rng.random(80) < 1 / (1 + np.exp(-x))).astype(int)
        pd.DataFrame({"patient_id": [f"p{i}" for i in ids], "lactate": x.round(3), "y": y}).to_csv(
            root / "data" / f"{tid}.csv", index=False)
        rows.append({"task_id": tid, "description": f"Predict ICU transfer at hospital {site}", "site": site})
    pd.DataFrame(rows).to_csv(root / "descriptions.csv", index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run_demo(out=tmp_path / "out", site="A", tasks_dir=root, embedder="hashing", fast=True, quiet=True)
    assert any(issubclass(w.category, DataWarning) and "['d1']" in str(w.message) for w in caught)
    assert sorted(res["indexed"]) == ["b1", "c1"]


def test_demo_reads_a_semicolon_separated_task_folder_with_sep(tmp_path):
    import numpy as np
    import pandas as pd
    import pytest

    from ragim.demo import run_demo
    from ragim.errors import ValidationError

    root = tmp_path / "tasks"
    (root / "data").mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = []
    for tid, site in [("a1", "A"), ("b1", "B"), ("c1", "C"), ("d1", "D")]:
        x = rng.normal(size=80)
        y = (rng.random(80) < 1 / (1 + np.exp(-x))).astype(int)
        pd.DataFrame({"lactate": x.round(3), "y": y}).to_csv(root / "data" / f"{tid}.csv", sep=";", index=False)
        rows.append({"task_id": tid, "description": f"Predict ICU transfer at hospital {site}", "site": site})
    pd.DataFrame(rows).to_csv(root / "descriptions.csv", sep=";", index=False)
    kw = dict(out=tmp_path / "out", site="A", tasks_dir=root, embedder="hashing", fast=True, quiet=True)
    with pytest.raises(ValidationError, match="pass --sep ';'"):
        run_demo(**kw)
    assert sorted(run_demo(**kw, sep=";")["indexed"]) == ["b1", "c1", "d1"]
