"""The opt-in ``contextualized`` evaluation method (contextualized-ml as a peer)."""

import importlib.util

import numpy as np
import pytest

from ragim import datasets
from ragim import evaluate as ev

HAS_CONTEXTUALIZED = importlib.util.find_spec("contextualized") is not None


def easy_family():
    """Two systems of 8 tasks, 200 rows each, strong shared effects (true-model AUROC ~0.86)."""
    return datasets.synthetic_family(
        n_tasks=16, n_features=2, seed=0, levels=("system",), branching=(2,), n_rows=200, noise=0.05
    )


@pytest.mark.skipif(
    not HAS_CONTEXTUALIZED,
    reason="contextualized-ml is not installed; install it with "
    "`pip install --no-deps contextualized-ml` plus pytorch-lightning torchmetrics "
    "lightning-utilities igraph texttable (docs/faq.md)",
)
def test_contextualized_gives_sane_predictions_and_leaves_no_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    state = np.random.get_state()[1].copy()
    df, preds = ev.zero_shot(
        easy_family(),
        methods=["contextualized"],
        folds=2,
        embedder="hashing",
        progress=False,
        return_predictions=True,
    )
    assert len(df) == 16 and set(df["status"]) == {"ok"}
    p = preds["p"].to_numpy()
    assert len(p) == df["n_test"].sum() and np.all((p > 0) & (p < 1))
    assert df["auroc"].mean() > 0.6 and df["log_loss"].mean() < np.log(2)
    assert list(tmp_path.iterdir()) == [], (
        "checkpoints and logs must not land in the working directory"
    )
    assert np.array_equal(np.random.get_state()[1], state), (
        "numpy's global random state is restored"
    )
    out, err = capsys.readouterr()
    assert "GPU available" not in out + err and "Received unknown keyword" not in out


def test_without_the_package_the_method_is_skipped_with_a_note(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "contextualized" else real(name, *a),
    )
    with pytest.warns(UserWarning, match="contextualized-ml is not installed; method skipped"):
        df = ev.zero_shot(
            easy_family(),
            methods=["contextualized", "pooled"],
            folds=2,
            embedder="hashing",
            progress=False,
        )
    assert set(df["method"]) == {"pooled"}
    assert any("pip install --no-deps contextualized-ml" in n for n in df.attrs["notes"])
