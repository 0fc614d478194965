"""A LoRA rank above the width of the modules it adapts is refused in one line, by every
trainer (they share train_from_scratch) and by an untrained generator's adapter; and a save
under a file is one line, whatever is saved."""

from __future__ import annotations

import pytest

from ragim import TaskIndex, datasets
from ragim.errors import ArtifactError, ValidationError
from ragim.generate.lm import LMConfig, LMGenerator
from ragim.train import train_reward_model, train_sft


@pytest.fixture(scope="module")
def index():
    return TaskIndex.build(datasets.synthetic_family(n_tasks=6, n_features=2, seed=0),
                           embedder="hashing", progress=False)


RANK = r"lora_r 2000 is above 64, the width of the target module .*q_proj of tiny; choose a LoRA rank of at most 64"


def test_a_lora_rank_above_the_models_width_is_refused(index):
    """--lora-r 2000 on the 64-wide tiny model was accepted (and 100000 was killed for memory
    with no message)."""
    with pytest.raises(ValidationError, match=RANK):
        train_sft(index, generator_config=LMConfig(base_model="tiny", lora_r=2000), max_steps=1,
                  batch_size=2, progress=False)
    with pytest.raises(ValidationError, match=RANK):
        LMGenerator(LMConfig(base_model="tiny", lora_r=2000))._ensure_adapter()
    pairs = [{"prompt": "p", "chosen": '{"a": 1}', "rejected": '{"a": 2}', "task_id": f"t{i}",
              "margin": 1.0} for i in range(4)]
    with pytest.raises(ValidationError, match=RANK):
        train_reward_model(pairs, base_model="tiny", lora_r=2000, max_steps=1, batch_size=2,
                           progress=False)
    LMGenerator(LMConfig(base_model="tiny", lora_r=64))._ensure_adapter()  # the width itself is fine


def test_lora_target_modules_that_name_no_layer_are_refused(index):
    """peft drops a target that matches nothing when another matches: target_modules=("q_proj",
    "v_prj") trained q_proj alone (2,048 trainable parameters against 4,096 with v_proj) while
    config.json kept both; a block ("self_attn") was peft's multi-line ValueError with the
    module's repr. Both are one-line ValidationErrors naming the target and the model's layers,
    for a trainer and for an untrained generator's adapter."""
    kw = dict(max_steps=1, batch_size=2, progress=False)
    with pytest.raises(ValidationError, match=r"target_modules \['q_proj', 'v_prj'\] do not fit tiny: "
                                              r"'v_prj' matches no module; its layers are \[.*'v_proj'"):
        train_sft(index, generator_config=LMConfig(base_model="tiny", target_modules=("q_proj", "v_prj")), **kw)
    with pytest.raises(ValidationError, match=r"'self_attn' names a block, not a layer LoRA can adapt") as err:
        train_sft(index, generator_config=LMConfig(base_model="tiny", target_modules=("self_attn",)), **kw)
    assert "\n" not in str(err.value)
    with pytest.raises(ValidationError, match="'qproj' matches no module"):
        LMGenerator(LMConfig(base_model="tiny", target_modules=("qproj",)))._ensure_adapter()
    gen = train_sft(index, generator_config=LMConfig(base_model="tiny", target_modules=("q_proj", "v_proj")), **kw)
    assert gen.n_trainable_params_ == 4096


def test_a_save_under_a_file_is_one_line(tmp_path):
    """gen.save("file.txt/sub") raised a raw FileExistsError."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("notes")
    gen = LMGenerator(LMConfig(base_model="tiny"))
    with pytest.raises(ArtifactError, match=rf"^cannot save to {blocker / 'sub'}: {blocker} is a file, not a folder; choose another path$"):
        gen.save(blocker / "sub")
    with pytest.raises(ArtifactError, match="is a file, not a folder"):
        datasets.synthetic_family(n_tasks=2, n_features=2, seed=0).save(blocker / "a" / "b")
    assert blocker.read_text() == "notes"
