"""Artifacts edited and re-sealed (checksums recomputed, as a sender from another hospital could
do): every field a loader reads is checked for type, shape and size at load, and a bad one is one
ArtifactError naming the file and the field, never a traceback, a hang, a crash or gigabytes of
memory later."""

from __future__ import annotations

import json
import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import reseal
from safetensors.numpy import load_file, save_file

from ragim import ModelParams, StatisticalGenerator, TaskCollection, TaskIndex, datasets
from ragim.checks import check_loaded
from ragim.errors import ArtifactError, ValidationError
from ragim.generate.attention import AttentionGenerator

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("loadcheck")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tasks = datasets.synthetic_family(n_tasks=12, n_features=3, seed=0)
        index = TaskIndex.build(tasks, embedder="hashing", progress=False)
        stat = StatisticalGenerator(adaptation_tasks=0).fit(index, progress=False)
        small = {"max_epochs": 1, "hidden": 8, "heads": 2, "bottleneck": 4, "k": 3}
        att = AttentionGenerator(**small, base="none", device="cpu").fit(index, progress=False)
        ivf = TaskIndex.build(
            datasets.synthetic_family(n_tasks=40, n_features=3, seed=1),
            embedder="hashing",
            index="IVF2,Flat",
            storage="ondisk",
            progress=False,
        )
    return {
        "index": index.save(root / "index"),
        "stat": stat.save(root / "stat"),
        "att": att.save(root / "att"),
        "ivf": ivf.save(root / "ivf"),
        "params": index.params(index.ids[0]).save(root / "params"),
        "tasks": tasks.save(root / "tasks"),
        "loaded_index": index,
    }


def _copy(saved, kind: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved[kind], tmp_path / kind))


def _edit_json(folder: Path, name: str, edit) -> Path:
    f = folder / name
    data = json.loads(f.read_text())
    edit(data)
    f.write_text(json.dumps(data))
    reseal(folder)
    return folder


def _edit_arrays(folder: Path, edit) -> Path:
    f = folder / "arrays.safetensors"
    arrays = load_file(str(f))
    edit(arrays)
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(f))
    reseal(folder)
    return folder


# ---------------------------------------------------------------------------- the helper
def test_check_loaded_names_the_field_and_refuses_floats_for_integers():
    spec = {"k": int, "w": [float], "opt?": str, "m": {"*": int}}
    assert check_loaded({"k": 2, "w": [1, 0.5], "m": {"a": 1}}, spec, "state.json") == {
        "k": 2,
        "w": [1.0, 0.5],
        "m": {"a": 1},
    }
    for bad, field in (
        ({"k": 1e30, "w": [], "m": {}}, "state.json.k must be an integer"),
        ({"k": 1, "w": [float("inf")], "m": {}}, r"state.json.w\[0\] must be a number"),
        ({"k": 1, "w": [], "m": {"a": []}}, "state.json.m.a must be an integer"),
        ({"k": 1, "w": {}, "m": {}}, "state.json.w must be a list"),
        ({"w": [], "m": {}}, r"missing \['k'\]"),
    ):
        with pytest.raises(ValidationError, match=field):
            check_loaded(bad, spec, "state.json")


# ---------------------------------------------------------------------------- the index
@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("dim", 5e7, r"embedder.dim must be an integer in \[1, 65536\], got 50000000.0"),
        ("dim", 1e308, "embedder.dim must be an integer"),
        ("dim", 10**9, "embedder.dim must be an integer"),
        ("seed", 2.5, "embedder.seed must be an integer"),
        ("seed", "7", "embedder.seed must be an integer"),
    ],
)
def test_an_index_embedder_identity_must_hold_integers_in_range(saved, tmp_path, key, value, says):
    folder = _edit_json(
        _copy(saved, "index", tmp_path), "config.json", lambda c: c["embedder"].update({key: value})
    )
    with pytest.raises(
        ArtifactError, match=f"config.json: not a valid index configuration .*{says}"
    ):
        TaskIndex.load(folder)


def test_an_index_factory_must_be_text(saved, tmp_path):
    folder = _edit_json(
        _copy(saved, "index", tmp_path), "config.json", lambda c: c.update(factory=None)
    )
    with pytest.raises(ArtifactError, match="factory must be a FAISS factory string, got None"):
        TaskIndex.load(folder)


def test_a_flat_index_whose_length_field_was_enlarged_is_refused_before_faiss_reads_it(
    saved, tmp_path
):
    folder = _copy(saved, "index", tmp_path)
    f = folder / "index.faiss"
    b = bytearray(f.read_bytes())
    struct.pack_into("<Q", b, 37, 300_000_000)  # the vector block's length: 1.2 GB of floats
    f.write_bytes(bytes(b))
    reseal(folder)
    with pytest.raises(
        ArtifactError, match="index.faiss: a flat index of 12 vectors .* says 300000000 numbers"
    ):
        TaskIndex.load(folder)


def test_an_index_header_counting_other_vectors_is_refused(saved, tmp_path):
    folder = _copy(saved, "index", tmp_path)
    f = folder / "index.faiss"
    b = bytearray(f.read_bytes())
    struct.pack_into("<q", b, 8, 10**9)  # ntotal
    f.write_bytes(bytes(b))
    reseal(folder)
    with pytest.raises(
        ArtifactError, match="header says 1000000000 vectors of dimension 64, but the index has 12"
    ):
        TaskIndex.load(folder)


def test_a_truncated_ondisk_ivfdata_is_refused_at_load_instead_of_crashing_a_search(
    saved, tmp_path
):
    folder = _copy(saved, "ivf", tmp_path)
    data = folder / "index.ivfdata"
    full = data.stat().st_size
    with open(data, "r+b") as fh:
        fh.truncate(4096)
    reseal(folder)
    with pytest.raises(
        ArtifactError,
        match=f"index.ivfdata: has 4096 bytes, but index.faiss places its inverted lists in {full}",
    ):
        TaskIndex.load(folder)
    assert len(TaskIndex.load(saved["ivf"]).search("fatal outcome", k=3)) == 3  # untouched: fine


# ---------------------------------------------------------------------------- generators
@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (
            lambda s: s.update(stack={}),
            r"state.json.stack must have the keys .*missing \['baseline', 'slopes'\]",
        ),
        (lambda s: s.update(stack=0), "state.json.stack must be an object"),
        (
            lambda s: s["stack"]["baseline"].update(text="x"),
            "state.json.stack.baseline.text must be a number >= 0",
        ),
        (
            lambda s: s["vocabulary"].update({next(iter(s["vocabulary"])): 1e30}),
            "state.json.vocabulary.* must be an integer",
        ),
        (
            lambda s: s["groups"]["slopes"].__setitem__(0, 10**30),
            r"state.json.groups.slopes\[0\] must be an integer in \[0, 4\)",
        ),
        (lambda s: s.update(ids=[[]] * len(s["ids"])), r"state.json.ids\[0\] must be text"),
        (
            lambda s: s["ids"].__setitem__(0, "not-in-the-index"),
            r"names 1 task\(s\) that its index_ids .* do not hold: not-in-the-index",
        ),
        (
            lambda s: s["scalars"].update(pooled_var_0=-1.0),
            "state.json.scalars.pooled_var_0 must be >= 0",
        ),
    ],
)
def test_a_statistical_generators_state_fields_are_checked_at_load(saved, tmp_path, edit, says):
    folder = _edit_json(_copy(saved, "stat", tmp_path), "state.json", edit)
    with pytest.raises(ArtifactError, match=says):
        StatisticalGenerator.load(folder)


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (
            lambda a: a.update(n_rows=a["n_rows"][:-1]),
            r"n_rows must have shape \(12,\), got \(11,\)",
        ),
        (lambda a: a.update(pooled_var=-a["pooled_var"]), "pooled_var holds negative values"),
        (lambda a: a.update(fits=a["fits"][:, :2]), r"fits must have shape \(12, 4\)"),
        (
            lambda a: a.update({"state.tau_slopes": a["state.tau_slopes"][:-1]}),
            "state.tau_slopes must have shape",
        ),
        (
            lambda a: a.update(pooled_corr=a["pooled_corr"] * 3),
            r"pooled_corr holds correlations outside \[-1, 1\]",
        ),
    ],
)
def test_a_statistical_generators_arrays_are_checked_against_its_state(saved, tmp_path, edit, says):
    folder = _edit_arrays(_copy(saved, "stat", tmp_path), edit)
    with pytest.raises(ArtifactError, match=f"arrays.safetensors: {says}"):
        StatisticalGenerator.load(folder)


def test_a_statistical_generator_config_is_bounded(saved, tmp_path):
    folder = _edit_json(
        _copy(saved, "stat", tmp_path), "config.json", lambda c: c.update(ngram_max=10**30)
    )
    with pytest.raises(
        ArtifactError, match=r"(?s)config.json: .*ngram_max must be an integer in \[1, 8\]"
    ):
        StatisticalGenerator.load(folder)
    folder = _edit_json(
        _copy(saved, "stat", tmp_path / "b"), "config.json", lambda c: c.update(ngram_max=1e0)
    )
    with pytest.raises(ArtifactError, match="ngram_max must be an integer"):
        StatisticalGenerator.load(folder)


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("blocks", 10**30, r"blocks must be an integer in \[1, 256\]"),
        ("blocks", 3, "blocks is 3, but model.safetensors holds 2 blocks"),
        ("hidden", 16, "model.safetensors: its weights do not fit"),
        ("n_bootstrap", 10**30, r"n_bootstrap must be an integer in \[1, 10000\]"),
        ("k", 2.0, "k must be an integer"),
    ],
)
def test_an_attention_config_is_bounded_and_matches_its_weights(saved, tmp_path, key, value, says):
    folder = _edit_json(
        _copy(saved, "att", tmp_path), "config.json", lambda c: c.update({key: value})
    )
    with pytest.raises(ArtifactError, match=says):
        AttentionGenerator.load(folder, device="cpu")


def test_an_attention_state_emb_dim_must_be_an_integer(saved, tmp_path):
    folder = _edit_json(
        _copy(saved, "att", tmp_path), "state.json", lambda s: s.update(emb_dim=3.5)
    )
    with pytest.raises(ArtifactError, match="state.json: .*emb_dim must be an integer"):
        AttentionGenerator.load(folder, device="cpu")


# ---------------------------------------------------------------------------- models, collections
def test_a_model_schema_range_and_coverage_are_checked(saved, tmp_path):
    folder = _edit_json(
        _copy(saved, "params", tmp_path),
        "config.json",
        lambda c: c["schema"]["fitted"]["ranges"].update(
            {next(iter(c["schema"]["fitted"]["ranges"])): []}
        ),
    )
    with pytest.raises(ArtifactError, match=r"fitted.ranges.x\d+ must be \[min, max\], got \[\]"):
        ModelParams.load(folder)
    folder = _edit_json(
        _copy(saved, "params", tmp_path / "b"),
        "config.json",
        lambda c: c["metadata"].update(
            coverage={
                "top_similarity": 1,
                "effective_similarity": 1,
                "effective_neighbors": 1,
                "k": 3,
                "threshold": "x",
            }
        ),
    )
    with pytest.raises(
        ArtifactError, match="config.json: metadata.coverage.threshold must be a number in"
    ):
        ModelParams.load(folder)


def test_a_collections_true_params_ids_must_be_task_ids(saved, tmp_path):
    folder = _copy(saved, "tasks", tmp_path)
    if not (folder / "true_params_ids.json").exists():
        pytest.skip("this collection keeps no true parameters")
    _edit_json(folder, "true_params_ids.json", lambda ids: ids.__setitem__(0, []))
    with pytest.raises(ArtifactError, match="true_params_ids.json: is not a list of task ids"):
        TaskCollection.load(folder)


def test_untouched_artifacts_still_load(saved):
    TaskIndex.load(saved["index"])
    StatisticalGenerator.load(saved["stat"])
    AttentionGenerator.load(saved["att"], device="cpu")
    ModelParams.load(saved["params"])


# ---------------------------------------------------------------------------- embedder identity
def test_an_index_whose_embedder_seed_was_changed_is_refused_on_first_use(saved, tmp_path):
    folder = _edit_json(
        _copy(saved, "index", tmp_path), "config.json", lambda c: c["embedder"].update(seed=7)
    )
    index = TaskIndex.load(folder)  # loading stays cheap: nothing is embedded yet
    with pytest.raises(
        ArtifactError, match="stored vectors do not match its embedder and descriptions"
    ):
        index.search("fatal outcome", k=2)


def test_an_index_whose_descriptions_were_rewritten_is_refused_on_first_use(saved, tmp_path):
    folder = _copy(saved, "index", tmp_path)
    lines = (folder / "records.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for r in records:
        r["description"] = "Healthy children at a dental clinic: will the child need a filling?"
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    reseal(folder)
    with pytest.raises(
        ArtifactError, match=r"records.jsonl were changed after the index was built"
    ):
        TaskIndex.load(folder).search("fatal outcome", k=2)


def test_a_compressed_index_passes_its_own_vector_check(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tasks = datasets.synthetic_family(n_tasks=60, n_features=3, seed=2)
        TaskIndex.build(tasks, embedder="hashing", index="IVF2,SQ8", progress=False).save(
            tmp_path / "sq"
        )
    assert len(TaskIndex.load(tmp_path / "sq").search("fatal outcome", k=3)) == 3


# ---------------------------------------------------------------------------- strict JSON
def test_a_key_given_twice_in_a_json_file_is_refused_naming_the_file_and_key(saved, tmp_path):
    """``{"age": 6.5, "age": 65.1}`` loaded as 65.1 (Python keeps the last value; other readers
    may keep the first, so one file meant two models)."""
    folder = _copy(saved, "params", tmp_path)
    config = folder / "config.json"
    text = config.read_text()
    config.write_text(text.replace('"kind": ', '"kind": "gam", "kind": ', 1))
    reseal(folder)
    with pytest.raises(ArtifactError) as err:
        ModelParams.load(folder)
    assert "config.json: not valid JSON (the key 'kind' appears twice in one object" in str(
        err.value
    )
    assert "\n" not in str(err.value)
    folder = _copy(saved, "params", tmp_path / "b")
    manifest = folder / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format": ', '"format": "x", "format": ', 1))
    with pytest.raises(ArtifactError, match="manifest.json: .*the key 'format' appears twice"):
        ModelParams.load(folder)


# ---------------------------------------------------------------------------- fitted schemas
def _fitted(edit):
    return lambda c: edit(c["schema"]["fitted"])


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (
            _fitted(lambda f: f["means"].update(x01=True)),
            "fitted.means.x01 must be a number, got True",
        ),
        (
            _fitted(lambda f: f["means"].update(x01="0.5")),
            "fitted.means.x01 must be a number, got '0.5'",
        ),
        (_fitted(lambda f: f["medians"].update(x01=False)), "fitted.medians.x01 must be a number"),
        (_fitted(lambda f: f["scales"].update(x01="1")), r"fitted.scales.x01 must be a number > 0"),
        (
            _fitted(lambda f: f["scales"].update(x01=-1.0)),
            r"fitted.scales.x01 must be a number > 0",
        ),
        (
            _fitted(lambda f: f["bin_edges"].update(x01=[True, 2.0])),
            r"fitted.bin_edges.x01\[0\] must be a number",
        ),
        (
            _fitted(lambda f: f["bin_edges"].update(x01=f["bin_edges"]["x01"][::-1])),
            "bin edges of 'x01' must be finite and increasing",
        ),
        (_fitted(lambda f: f.update(missing=["nosuch"])), "fitted.missing names 'nosuch'"),
        (_fitted(lambda f: f.update(missing=["x01", "x01"])), "fitted.missing lists 'x01' more"),
        (
            _fitted(lambda f: f.update(extra={})),
            r"fitted must have the keys .*got also \['extra'\]",
        ),
        (
            _fitted(lambda f: f["means"].update(x01=60.0)),  # a mean no value in range can have
            r"fitted mean of 'x01' \(60\) lies outside its fitted range",
        ),
        (
            _fitted(lambda f: f["scales"].update(x01=1e300)),
            r"fitted scale of 'x01' \(1e\+300\) exceeds half its fitted range",
        ),
        (
            lambda c: c["schema"]["features"][0].update(type="binary"),  # continuous retyped
            "fitted.means holds a value for 'x01', a binary feature, which has none",
        ),
    ],
)
def test_a_models_fitted_schema_is_checked_field_by_field(saved, tmp_path, edit, says):
    """A fitted statistic was converted with float(): ``"means": {"age": true}`` loaded as mean
    1 and moved every predicted risk (0.637 to 0.975), and "65" loaded as 65."""
    folder = _edit_json(_copy(saved, "params", tmp_path), "config.json", edit)
    with pytest.raises(ArtifactError, match=f"(?s)config.json: schema: .*{says}"):
        ModelParams.load(folder)


def test_an_index_and_a_generator_check_their_schemas_too(saved, tmp_path):
    folder = _edit_json(
        _copy(saved, "index", tmp_path),
        "schema.json",
        lambda s: s["fitted"]["means"].update(x01=True),
    )
    with pytest.raises(ArtifactError, match="schema.json: .*fitted.means.x01 must be a number"):
        TaskIndex.load(folder)
    folder = _edit_json(
        _copy(saved, "stat", tmp_path),
        "state.json",
        lambda s: s["schema"]["fitted"]["scales"].update(x02="1"),
    )
    with pytest.raises(ArtifactError, match=r"state.json: schema: .*fitted.scales.x02 must be"):
        StatisticalGenerator.load(folder)


def test_a_generator_refuses_an_index_whose_schema_is_not_the_one_it_was_fitted_with(
    saved, tmp_path
):
    """A generator's state.json keeps the schema it was fitted with, and the statistical
    generator gives it to every model it generates: a mean edited there (age 30 for 65.1)
    moved the generated model's risks (0.637 to 0.897) with no error. Either side edited is
    refused at generation, in one line naming the first difference."""
    index = TaskIndex.load(saved["index"])
    folder = _edit_json(
        _copy(saved, "stat", tmp_path),
        "state.json",
        lambda s: s["schema"]["fitted"]["means"].update(x01=0.5),
    )
    gen = StatisticalGenerator.load(folder)  # a plausible number: only the index can tell
    with pytest.raises(ValidationError) as err:
        gen.generate_params("fatal outcome", index)
    msg = str(err.value)
    assert msg.startswith(
        "the index's feature schema differs from the one this "
        "StatisticalGenerator was fitted with (fitted.means.x01: "
    )
    assert "0.5 in the generator" in msg and "\n" not in msg
    edited = _edit_json(
        _copy(saved, "index", tmp_path),
        "schema.json",
        lambda s: s["fitted"]["medians"].update(x02=0.25),
    )
    with pytest.raises(ValidationError, match=r"\(fitted.medians.x02: 0.25 in the index, "):
        StatisticalGenerator.load(saved["stat"]).generate_params(
            "fatal outcome", TaskIndex.load(edited)
        )
    StatisticalGenerator.load(saved["stat"]).generate_params("fatal outcome", index)


# ---------------------------------------------------------------------------- params.npz
def _edit_npz(folder: Path, edit) -> Path:
    f = folder / "params.npz"
    with np.load(f) as z:
        arrays = dict(z)
    edit(arrays)
    np.savez(f, **arrays)
    reseal(folder)
    return folder


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda a: a.update(vector=np.round(a["vector"]).astype(np.int64)), "got int64 of shape"),
        (lambda a: a.update(vector=a["vector"] > 0), "got bool of shape"),
        (lambda a: a.update(vector=a["vector"].astype(str)), "got <U"),
        (lambda a: a.update(vector=a["vector"].astype(complex)), "got complex128"),
        (lambda a: a.update(vector=a["vector"].astype(np.float16)), "got float16"),
        (lambda a: a.update(vector=a["vector"][None, :]), r"got float64 of shape \(1, 4\)"),
        (lambda a: a.update(std=np.ones(4, dtype=np.int64)), "std must be float64"),
        (
            lambda a: a.update(std=np.ones(4), correlation=np.eye(4).ravel()),
            r"correlation must be float64 numbers of shape \(4, 4\)",
        ),
    ],
)
def test_a_models_arrays_must_be_float64_of_the_layouts_shape(saved, tmp_path, edit, says):
    """An integer, bool, text, complex or half-precision vector, or a 2-D one, loaded (cast to
    float, or flattened)."""
    folder = _edit_npz(_copy(saved, "params", tmp_path), edit)
    with pytest.raises(ArtifactError, match=f"params.npz: .*{says}"):
        ModelParams.load(folder)


def test_a_model_whose_log_odds_overflow_within_its_fitted_ranges_is_refused(saved, tmp_path):
    """A coefficient of 1e308 made every in-range patient's log-odds overflow (risks NaN);
    1e300 keeps them finite (every risk 0 or 1) and loads: no tighter bound follows from what a
    coefficient means."""
    folder = _edit_npz(
        _copy(saved, "params", tmp_path), lambda a: a["vector"].__setitem__(1, 1e308)
    )
    with pytest.raises(ArtifactError, match="params.npz: vector: the model's log-odds overflow"):
        ModelParams.load(folder)
    folder = _edit_npz(
        _copy(saved, "params", tmp_path / "b"), lambda a: a["vector"].__setitem__(1, 1e300)
    )
    assert ModelParams.load(folder)["x01"] == 1e300


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"vector": 1e308}, "vector: the model's log-odds overflow"),
        ({"metadata": {"k": 0}}, "metadata.k must be an integer >= 1"),
        ({"metadata": {"between_tasks": ["beds"]}}, "metadata.between_tasks names 'beds'"),
    ],
)
def test_a_model_that_would_not_load_is_not_saved(saved, tmp_path, change, says):
    """A model built in memory with a coefficient of 1e308 (or metadata load refuses) was
    saved, and then the saved artifact could not be opened again: save refuses it now, naming
    the field, and writes nothing."""
    p = ModelParams.load(saved["params"])
    vector = p.vector.copy()
    if "vector" in change:
        vector[1] = change["vector"]
    model = ModelParams(
        p.kind, p.schema, vector, metadata={**p.metadata, **change.get("metadata", {})}
    )
    with pytest.raises(ValidationError, match=f"not saved, since it could not be loaded: {says}"):
        model.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()
    tupled = {"between_tasks": ("x01",), "classes": (0, 1)}  # written as JSON lists: they load
    saved_tuples = ModelParams(p.kind, p.schema, p.vector, metadata=tupled).save(tmp_path / "t")
    assert ModelParams.load(saved_tuples).metadata["between_tasks"] == ["x01"]
    vector[1] = 1e300  # finite log-odds: saved, and loads (test above)
    assert (
        ModelParams.load(ModelParams(p.kind, p.schema, vector).save(tmp_path / "ok"))["x01"]
        == 1e300
    )


# ---------------------------------------------------------------------------- model metadata
@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ({"adaptation_policy": "yes"}, "metadata.adaptation_policy must be a list of policy"),
        (
            {"adaptation_policy": [{}]},
            "metadata.adaptation_policy: an adaptation policy entry lacks",
        ),
        (
            {
                "provenance": [
                    {"task_id": "a", "description": "A", "similarity": 0.9, "weight": "x"}
                ]
            },
            r"metadata.provenance\[0\].weight must be a number, got 'x'",
        ),
        ({"provenance": [{"weight": 1.0}]}, r"metadata.provenance\[0\].task_id must be text"),
        ({"between_tasks": 5}, "metadata.between_tasks must be a list, got 5"),
        ({"between_tasks": ["beds"]}, "metadata.between_tasks names 'beds', which is not a term"),
        ({"description": ["a"]}, r"metadata.description must be text, got \['a'\]"),
        ({"constant_terms": {"x01": "0"}}, "metadata.constant_terms.x01 must be a number"),
        ({"classes": ["yes", "yes"]}, "metadata.classes must be two different labels"),
        ({"k_shot": 2.5}, "metadata.k_shot must be an integer"),
        (
            {"coverage": {"top_similarity": "high", "effective_similarity": 0.5, "k": 3}},
            "metadata.coverage.top_similarity must be a number in",
        ),
    ],
)
def test_a_models_metadata_is_checked_where_ragim_reads_it(saved, tmp_path, metadata, says):
    """An adaptation policy "yes" or [{}] loaded (only adapt failed, naming no file), and a
    provenance weight "x" was carried into an adapted model."""
    folder = _edit_json(
        _copy(saved, "params", tmp_path), "config.json", lambda c: c["metadata"].update(metadata)
    )
    with pytest.raises(ArtifactError, match=f"config.json: {says}"):
        ModelParams.load(folder)


def test_a_models_own_metadata_keys_still_load(saved, tmp_path):
    mine = {"site": ["north"], "between_tasks": ["x02"], "classes": ["no", "yes"]}
    folder = _edit_json(
        _copy(saved, "params", tmp_path), "config.json", lambda c: c["metadata"].update(mine)
    )
    assert ModelParams.load(folder).metadata["site"] == ["north"]


# ---------------------------------------------------------------------------- statistical state
@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (
            lambda s: s["stack"].update(shift=1e6),  # every generated risk 1
            r"state.json.stack \(shift 1e\+06\) lies 1e\+06 from where its fit started, but the "
            r"ridge it was fitted under keeps it within",
        ),
        (
            lambda s: s["stack"]["baseline"].update(pooled=50.0),
            "the ridge it was fitted under keeps it within",
        ),
        (
            lambda s: s.update(interval_scale=1e6),
            r"state.json.interval_scale must be a number in \[0.05, 20\]",
        ),
        (
            lambda s: s.update(interval_scale=0.5),  # narrows the intervals: never since the anchor
            r"state.json.interval_scale must be a number in \[1, 20\]",
        ),
        (
            lambda s: s.update(ids=[s["ids"][0]] * len(s["ids"])),
            "state.json.ids lists syn-0000000 more than once",
        ),
        (
            lambda s: s["ids"].__setitem__(1, "not-in-the-index"),
            "state.json.ids names 1 task.s. that its index_ids .* do not hold: not-in-the-index",
        ),
        (lambda s: s["cv"].update(n_tasks=10**6), "state.json.cv.n_tasks is 1000000, more than"),
        (lambda s: s["cv"].update(n_tasks=2.5), "state.json.cv.n_tasks must be an integer"),
    ],
)
def test_a_statistical_generators_stack_and_tasks_are_bounded_by_what_fit_can_make(
    saved, tmp_path, edit, says
):
    """A shift of 1e6 (generated intercept 1,000,000.7, every risk 1), an interval scale of 1e6
    and one task id written four times (the provenance listed one task four times) loaded."""
    folder = _edit_json(_copy(saved, "stat", tmp_path), "state.json", edit)
    with pytest.raises(ArtifactError, match=says):
        StatisticalGenerator.load(folder)


def test_a_statistical_generators_own_stack_lies_within_its_bound():
    """The bound is the fit's own: fitted stacks stay well inside it (and load)."""
    from ragim.generate.statistical import _check_validated

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(3):
            index = TaskIndex.build(
                datasets.synthetic_family(n_tasks=6, n_features=3, seed=seed),
                embedder="hashing",
                progress=False,
            )
            gen = StatisticalGenerator(adaptation_tasks=0).fit(index, progress=False)
            _check_validated(gen.stack_, gen.cv_, gen.interval_scale_, 6, gen.config)
