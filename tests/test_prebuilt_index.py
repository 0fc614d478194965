"""The committed demo index loads, verifies, and answers exactly like a fresh build."""

from pathlib import Path

import numpy as np
import pytest

from ragim import TaskIndex, datasets

PREBUILT = Path(__file__).resolve().parents[1] / "indices" / "heart-disease"


@pytest.fixture(scope="module")
def fresh():
    return TaskIndex.build(datasets.heart_disease(), progress=False)


def test_committed_index_matches_a_fresh_build(fresh):
    committed = TaskIndex.load(PREBUILT)
    assert committed.ids == fresh.ids
    assert committed.schema == fresh.schema
    assert committed.schema.ranges_  # the fitted value ranges the missing-code check reads
    assert np.allclose(committed.params_matrix(), fresh.params_matrix(), atol=1e-8)
    for q in ["Predict coronary artery disease in women at a Swiss clinic",
              "multi-vessel disease in older men, Cleveland", "VA Long Beach veterans aged 50 to 59"]:
        a = [(h.task_id, round(h.score, 5)) for h in committed.search(q, k=5)]
        b = [(h.task_id, round(h.score, 5)) for h in fresh.search(q, k=5)]
        assert a == b


def test_women_query_finds_same_site_or_same_population(fresh):
    hits = fresh.search("Predict coronary artery disease in women under 50 at the Hungarian Institute of "
                        "Cardiology, Budapest", k=5)
    assert any(h.metadata["site"] == "Hungary" for h in hits[:3])
    assert any(h.metadata.get("sex") == "female" or "women" in h.task_id for h in hits[:3])
