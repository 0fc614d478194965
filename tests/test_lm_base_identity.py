"""An LM generator trained on a base model in a folder records the sha256 of the folder's
weight, config, tokenizer and chat-template files, and refuses to load on a base model whose
files changed since (another checkpoint of the same size included), naming the file."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from conftest import reseal

pytest.importorskip("peft")

from ragim import TaskIndex, datasets  # noqa: E402
from ragim.errors import ArtifactError, DataWarning  # noqa: E402
from ragim.generate.lm import LMGenerator  # noqa: E402
from ragim.lm.base_models import base_model_identity, load_base_model  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmbase")
    for seed in (0, 1):
        model, tok = load_base_model("tiny", device="cpu", seed=seed)
        model.save_pretrained(root / f"base{seed}")
        tok.save_pretrained(root / f"base{seed}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = TaskIndex.build(
            datasets.synthetic_family(n_tasks=6, n_features=3, seed=0),
            embedder="hashing",
            progress=False,
        )
        gen = LMGenerator(base_model=str(root / "base0"), k=2, device="cpu")
        gen.generate_params(index.records[0]["description"], index)
    return root, gen.save(root / "gen")


def _fresh(trained, tmp_path):
    root, _ = trained
    base = shutil.copytree(root / "base0", tmp_path / "base")
    gen = shutil.copytree(root / "gen", tmp_path / "gen")
    cfg = json.loads((gen / "config.json").read_text())
    cfg["base_model"] = str(base)
    (gen / "config.json").write_text(json.dumps(cfg))
    reseal(gen)
    return base, gen


def test_the_identity_of_a_folder_lists_the_content_hash_of_each_file(trained):
    root, _ = trained
    ident = base_model_identity(str(root / "base0"))
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(ident["files"])
    assert all(len(h) == 64 for h in ident["files"].values())
    assert base_model_identity(str(root / "base1"))["sha256_16"] != ident["sha256_16"]


def test_an_untouched_base_model_loads_without_a_warning(trained, tmp_path):
    _, gen = _fresh(trained, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        LMGenerator.load(gen, device="cpu")


def test_weights_swapped_for_another_checkpoint_of_the_same_size_are_refused(trained, tmp_path):
    root, _ = trained
    base, gen = _fresh(trained, tmp_path)
    other = root / "base1" / "model.safetensors"
    assert other.stat().st_size == (base / "model.safetensors").stat().st_size
    shutil.copy(other, base / "model.safetensors")
    with pytest.raises(
        ArtifactError, match="its file model.safetensors had sha256 [0-9a-f]{16}, now"
    ):
        LMGenerator.load(gen, device="cpu")


def test_a_changed_tokenizer_or_chat_template_is_refused(trained, tmp_path):
    base, gen = _fresh(trained, tmp_path)
    f = base / "tokenizer_config.json"
    cfg = json.loads(f.read_text())
    cfg["chat_template"] = "{{ messages[0]['content'] }}"
    f.write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="its file tokenizer_config.json had sha256"):
        LMGenerator.load(gen, device="cpu")


def test_an_artifact_saved_without_file_hashes_loads_with_a_warning(trained, tmp_path):
    _, gen = _fresh(trained, tmp_path)
    cfg = json.loads((gen / "config.json").read_text())
    del cfg["base_model_identity"]["files"]
    (gen / "config.json").write_text(json.dumps(cfg))
    reseal(gen)
    with pytest.warns(DataWarning, match="cannot be verified to be the model it was trained on"):
        LMGenerator.load(gen, device="cpu")
