"""SFT with LoRA on the tiny model: only adapters train, leave-one-task-out data, adapter artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import reseal
from safetensors import safe_open
from transformers import TrainerCallback

from ragim import TaskIndex, datasets
from ragim.errors import ArtifactError, DataWarning, ValidationError
from ragim.generate.lm import LMConfig, LMGenerator
from ragim.index import leak_free
from ragim.lm import build_tiny_tokenizer, load_base_model
from ragim.lm.prompts import answer_text
from ragim.train import build_sft_dataset, train_sft


@pytest.fixture(scope="module")
def family():
    return datasets.synthetic_family(n_tasks=10, n_features=3, seed=0)


@pytest.fixture(scope="module")
def index(family):
    return TaskIndex.build(family, embedder="hashing", progress=False)


class Snapshot(TrainerCallback):
    """Copies every parameter when training starts."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.params = {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def trained(index):
    snap = Snapshot()
    gen = train_sft(index, base_model="tiny", generator_config=LMConfig(k=2, device="cpu"), max_steps=3,
                    batch_size=2, learning_rate=5e-3, progress=False, callbacks=[snap])
    return gen, snap.params


def _base_name(peft_name: str) -> str:
    return peft_name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def test_sft_trains_lora_weights_only(trained):
    gen, before = trained
    fresh = dict(load_base_model("tiny", device="cpu", seed=0)[0].named_parameters())
    after = dict(gen.model_.named_parameters())
    assert set(after) == set(before)
    lora = [n for n in after if "lora_" in n]
    assert lora and all(after[n].requires_grad for n in lora)
    for n in lora:
        assert not torch.equal(after[n], before[n]), f"LoRA parameter {n} did not change"
    frozen = [n for n in after if "lora_" not in n]
    assert len(frozen) == len(fresh)
    for n in frozen:
        assert not after[n].requires_grad
        assert torch.equal(after[n], before[n]), f"base parameter {n} changed"
        assert torch.equal(after[n], fresh[_base_name(n)]), f"base parameter {n} differs from the base model"
    assert gen.n_trainable_params_ == sum(after[n].numel() for n in lora) == 8192


def test_history_logs_train_and_validation_loss(trained, index):
    gen, _ = trained
    train_losses = [h["loss"] for h in gen.history_ if "loss" in h]
    eval_losses = [h["eval_loss"] for h in gen.history_ if "eval_loss" in h]
    assert len(train_losses) == 3 and all(np.isfinite(train_losses))
    assert len(eval_losses) == 1 and np.isfinite(eval_losses[0])
    assert gen.train_seconds_ > 0 and gen.fine_tuned_
    assert set(gen.train_task_ids_).isdisjoint(gen.val_task_ids_)
    assert sorted(gen.train_task_ids_ + gen.val_task_ids_) == sorted(index.ids)
    assert len(gen.val_task_ids_) == 2
    p = gen.generate_params(index.record(index.ids[0])["description"], exclude=[index.ids[0]])
    assert p.metadata["fine_tuned"] is True and len(p.metadata["provenance"]) == 2


def test_sft_dataset_is_leave_one_task_out():
    tasks = datasets.heart_disease()
    index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    tok = build_tiny_tokenizer()
    cfg = LMConfig(k=3, decimals=2)
    ids = ["cleveland-any_cad-all", "cleveland-any_cad-men_ge60", "hungary-any_cad-all", "switzerland-any_cad-all"]
    hide = ["va_long_beach-any_cad-all"]
    ds = build_sft_dataset(index, tok, cfg, task_ids=ids, hide=hide, max_tokens=200_000)
    assert ds.column_names == ["prompt", "completion", "task_id", "neighbor_ids"]
    for row in ds:
        tid, rec = row["task_id"], index.record(row["task_id"])
        assert len(row["neighbor_ids"]) == 3
        excluded = leak_free(rec)
        for nb in row["neighbor_ids"]:
            assert nb != tid and nb not in hide
            assert not excluded(index.record(nb)), f"{nb} shares patients with {tid}"
        user = row["prompt"][1]["content"]
        assert user.count(rec["description"]) == 1  # only as the target
        assert answer_text(index.params(tid), 2) not in user
        # the population model leaves out the same tasks as the retrieval (and the hidden ones)
        pop = index.population_params(lambda r, ex=excluded: ex(r) or r["task_id"] in hide)
        assert f"Population model (average over {pop.metadata['n_tasks']} indexed tasks" in user
        assert answer_text(pop, 2) in user
        assert pop.metadata["n_tasks"] < len(index) - 1
        assert row["completion"] == [{"role": "assistant", "content": answer_text(index.params(tid), 2)}]
    # the whole-site task overlaps every subgroup of its site: none of them may be a neighbour
    first = ds[0]
    assert not any(nb.startswith("cleveland-") for nb in first["neighbor_ids"])


def test_adapter_round_trip(trained, index, family, tmp_path):
    gen, _ = trained
    desc = family.descriptions[3]
    before = gen.generate_params(desc, index, exclude=[family.ids[3]])
    path = gen.save(tmp_path / "lm")
    adapter = path / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert all(f.stat().st_size < 2_000_000 for f in path.rglob("*") if f.is_file())
    base_names = {n for n, _ in load_base_model("tiny", device="cpu")[0].named_parameters()}
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    assert keys and all("lora_" in k for k in keys)
    assert not any(k.removeprefix("base_model.model.") in base_names for k in keys)
    config = json.loads((path / "config.json").read_text())
    assert config["base_model"] == "tiny" and config["base_model_identity"]["name"] == "tiny"
    state = json.loads((path / "state.json").read_text())
    assert state["param_names"] == before.names and state["fine_tuned"] is True

    loaded = LMGenerator.load(path, device="cpu")
    after = loaded.generate_params(desc, index, exclude=[family.ids[3]])
    assert np.array_equal(before.vector, after.vector)
    assert loaded.history_ == gen.history_ and loaded.n_trainable_params_ == gen.n_trainable_params_

    other = TaskIndex.build(datasets.synthetic_family(n_tasks=4, n_features=2, seed=1), embedder="hashing",
                            progress=False)
    with pytest.raises(ValidationError, match="does not match the generator"):
        loaded.generate_params("Predict death.", other)

    raw = bytearray((adapter / "adapter_model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (adapter / "adapter_model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="checksum mismatch for 'adapter/adapter_model.safetensors'"):
        LMGenerator.load(path)


def test_a_trained_lm_refuses_an_index_that_lost_tasks_it_learned_from(trained, index, family, tmp_path):
    """Its adapter learned from every task of its index: an index without one of them (removed,
    or built without it) must not be used as if nothing changed; a saved one remembers too."""
    gen, _ = trained
    loaded = LMGenerator.load(gen.save(tmp_path / "lm"), device="cpu")
    assert loaded.fitted_ids_ == gen.fitted_ids_ == index.ids
    fewer = TaskIndex.build(family.take(range(1, len(family))), embedder="hashing", progress=False,
                            schema=index.schema)
    with pytest.raises(ValidationError, match=rf"no longer holds 1 task\(s\) this LMGenerator was fitted on \({index.ids[0]}\)"):
        loaded.generate_params(family.descriptions[3], fewer)


def test_fit_method_and_input_validation(index):
    gen = LMGenerator(base_model="tiny", k=1, device="cpu").fit(index, max_steps=1, batch_size=2, val_fraction=0.0,
                                                                progress=False)
    assert gen.fine_tuned_ and gen.val_task_ids_ == [] and gen.index_ is index
    assert not any("eval_loss" in h for h in gen.history_)
    with pytest.raises(ValidationError, match="already fine-tuned"):
        gen.fit(index)
    with pytest.raises(ValidationError, match="max_steps"):
        train_sft(index, base_model="tiny", max_steps=0)
    with pytest.raises(ValidationError, match="val_fraction"):
        train_sft(index, base_model="tiny", val_fraction=1.0)
    with pytest.raises(ValidationError, match=r"SFT trains a float32 model .*dtype='bfloat16'"):
        LMGenerator(base_model="tiny", k=1, device="cpu", dtype="bfloat16").fit(index)


def test_the_run_is_one_config_saved_beside_the_adapter(trained, tmp_path):
    from ragim.train import SFTTrainingConfig

    gen, _ = trained
    expected = SFTTrainingConfig(max_steps=3, batch_size=2, learning_rate=5e-3)
    assert gen.training_ == [{"stage": "sft", "config": {
        "max_steps": 3, "learning_rate": 5e-3, "batch_size": 2, "grad_accum": 1, "val_fraction": 0.2,
        "eval_steps": None, "seed": 0, "max_tasks": None, "activation_checkpointing": False,
        "output_dir": None, "save_steps": None, "resume_from_checkpoint": False, "mixed_precision": "auto",
        "targets": "fit",
        "heldout_fraction": 0.5}}]
    assert SFTTrainingConfig(**gen.training_[0]["config"]) == expected
    state = json.loads((gen.save(tmp_path / "lm") / "state.json").read_text())
    assert state["training"] == gen.training_
    with pytest.raises(ValidationError, match=r"invalid SFTTrainingConfig:\n  - batch_size must be an integer >= 1"):
        SFTTrainingConfig(batch_size=0)
    with pytest.raises(ValidationError, match="config must be a SFTTrainingConfig"):
        train_sft(trained[0].index_, LMConfig())


def test_statistical_prior_is_shown_leak_free_trained_on_and_saved(index, family, tmp_path):
    """LMConfig(statistical_prior=True): every SFT prompt shows the StatisticalGenerator's model
    for its target generated without the target (and the hidden validation tasks), the
    generator keeps that prior generator, uses it when generating and saves it."""
    from ragim.lm.answer import answer_format
    from ragim.lm.prompts import PRIOR_HEAD

    cfg = LMConfig(k=2, device="cpu", statistical_prior=True)
    gen = train_sft(index, base_model="tiny", generator_config=cfg, max_steps=1, batch_size=2,
                    val_fraction=0.2, progress=False)
    prior = gen.prior_generator_
    assert prior is not None and set(prior.summaries_.ids) == set(index.ids)
    _, tok = gen.load_model()
    fmt = answer_format(gen.param_names_, decimals=cfg.decimals, max_abs=cfg.max_abs)
    ds = build_sft_dataset(index, tok, cfg, task_ids=gen.train_task_ids_, hide=gen.val_task_ids_,
                           prior_generator=prior)
    hidden = set(gen.val_task_ids_)
    for row in ds:
        user = row["prompt"][1]["content"]
        rec = index.record(row["task_id"])
        fair = prior.generate_params(rec["description"], index,
                                     exclude=lambda r, rec=rec: leak_free(rec)(r) or r["task_id"] in hidden)
        assert f"{PRIOR_HEAD}\n{fmt.write(fair.as_dict())}\nIts standard deviations:" in user
        seen = prior.generate_params(rec["description"], index)  # fitted with the target
        if fmt.write(seen.as_dict()) != fmt.write(fair.as_dict()):
            assert fmt.write(seen.as_dict()) not in user
        assert user.index("Target task:") < user.index(PRIOR_HEAD) < user.index("Similar tasks")
    p = gen.generate_params(family.descriptions[0], index)
    assert p.metadata["statistical_prior"] is True
    loaded = LMGenerator.load(gen.save(tmp_path / "with-prior"), device="cpu")
    assert loaded.config.statistical_prior and loaded.prior_generator_ is not None
    # the answer moves towards the prior by prior_correction_; the loaded prior generator agrees
    # with the saved one to rounding (~1e-16)
    np.testing.assert_allclose(loaded.generate_params(family.descriptions[0], index).vector, p.vector,
                               rtol=0, atol=1e-12)
    assert loaded.prompt(family.descriptions[1], index)[0] == gen.prompt(family.descriptions[1], index)[0]
    with pytest.raises(ValidationError, match="statistical_prior must be True or False"):
        LMConfig(statistical_prior="yes")


def test_statistical_prior_follows_the_index_and_its_errors_name_it(index, family, tmp_path):
    """An untrained generator fits its prior on the index it is given and refits it for
    another one; what the prior cannot do is said as the prior's problem; a trained artifact
    without its prior/ folder is refused."""
    import shutil

    from ragim.io import read_artifact

    gen = LMGenerator(base_model="tiny", k=1, device="cpu", statistical_prior=True)
    first = gen.fitted_prior(index)
    assert gen.fitted_prior(index) is first
    other = TaskIndex.build(datasets.synthetic_family(n_tasks=10, n_features=3, seed=1), embedder="hashing",
                            progress=False)
    assert gen.fitted_prior(other) is not first  # same ids and layout, other data: refitted
    rowless = TaskIndex.build(family, embedder="hashing", progress=False, keep_tasks=False)
    with pytest.raises(ValidationError, match=r"statistical prior cannot be fitted.*statistical_prior=False"):
        LMGenerator(base_model="tiny", k=1, device="cpu", statistical_prior=True).prompt(family.descriptions[0],
                                                                                         rowless)
    with pytest.raises(ValidationError, match=r"statistical prior cannot be generated.*statistical_prior=False"):
        gen.generate_params(family.descriptions[0], other, exclude=other.ids[1:])
    trained = train_sft(index, base_model="tiny", generator_config=LMConfig(k=1, device="cpu", statistical_prior=True),
                        max_steps=1, batch_size=2, val_fraction=0, progress=False)
    path = trained.save(tmp_path / "g")
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    shutil.rmtree(broken / "prior")
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("prior/")}
    (broken / "manifest.json").write_text(json.dumps(manifest))
    read_artifact(broken, "ragim.lm-generator")  # a consistent artifact, but without its prior
    with pytest.raises(ArtifactError, match="prior/ folder is missing"):
        LMGenerator.load(broken, device="cpu")


def test_bf16_mixed_precision_on_a_cpu_autocasts_and_keeps_float32_weights(index):
    """mixed_precision='bf16' runs the passes under bf16 autocast on a CPU too (its losses are
    near float32's but not equal), while the weights and LoRA adapter stay float32; 'auto'
    keeps float32 on a CPU, as before the setting existed."""
    from trl import SFTConfig

    from ragim.train.trainer import trainer_args

    common = dict(on_cuda=False, progress=False, seed=0, output_dir="x", max_steps=1,
                  learning_rate=1e-3)
    assert trainer_args(SFTConfig, **common)["bf16"] is False
    assert trainer_args(SFTConfig, **common, mixed_precision="bf16")["bf16"] is True
    assert trainer_args(SFTConfig, **common, mixed_precision="no")["bf16"] is False
    runs = [train_sft(index, base_model="tiny", generator_config=LMConfig(k=1, device="cpu"), max_steps=2,
                      batch_size=2, val_fraction=0, progress=False, mixed_precision=mp)
            for mp in ("no", "bf16")]
    losses = [[h["loss"] for h in g.history_ if "loss" in h] for g in runs]
    assert losses[0] == pytest.approx(losses[1], rel=1e-2) and losses[0] != losses[1]
    assert {p.dtype for p in runs[1].model_.parameters()} == {torch.float32}
    assert runs[1].training_[-1]["config"]["mixed_precision"] == "bf16"
    with pytest.raises(ValidationError, match=r"mixed_precision must be one of \['auto', 'bf16', 'no'\]"):
        train_sft(index, base_model="tiny", mixed_precision="fp16", progress=False)
    with pytest.raises(ValidationError, match="bfloat16 is how LMConfig.dtype says it"):
        train_sft(index, base_model="tiny", mixed_precision="bfloat16", progress=False)
    # arithmetic, like the device, may change when a run resumes (and runs saved before the
    # setting existed still resume)
    from ragim.train.sft import SFTTrainingConfig
    from ragim.train.trainer import run_description

    assert "mixed_precision" not in run_description("sft", SFTTrainingConfig(mixed_precision="bf16"))["training"]


def test_activation_checkpointing_trains_the_same_adapter(index, checkpointing_probe):
    """Recomputing activations changes memory and time, not the result: the same losses and
    LoRA weights as without it; the run records the setting."""
    seen = [checkpointing_probe(), checkpointing_probe()]
    runs = [train_sft(index, base_model="tiny", generator_config=LMConfig(k=1, device="cpu"), max_steps=2,
                      batch_size=2, val_fraction=0, progress=False, activation_checkpointing=on, callbacks=[cb])
            for on, cb in zip((False, True), seen, strict=True)]
    assert [cb.seen for cb in seen] == [[False, False], [True, True]]
    losses = [[h["loss"] for h in g.history_ if "loss" in h] for g in runs]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    a, b = ({n: p for n, p in g.model_.named_parameters() if "lora_" in n} for g in runs)
    assert a.keys() == b.keys() and all(torch.allclose(a[n], b[n], atol=1e-5) for n in a)
    assert runs[1].training_[-1]["config"]["activation_checkpointing"] is True
    with pytest.raises(ValidationError, match="activation_checkpointing must be True or False"):
        train_sft(index, base_model="tiny", activation_checkpointing="yes", progress=False)


def _sharing(family, cohort):
    """The family's tasks with patient ids: tasks of one ``cohort(i)`` share patients."""
    from ragim import Task

    return [Task(t.task_id, t.description, t.X, t.y, metadata={"patient_ids": [f"{cohort(i)}-{r}" for r in
                                                                               range(len(t.y))]})
            for i, t in enumerate(family)]


def test_sft_trains_on_no_patient_of_its_validation_tasks(family):
    """A task that shares patients with a validation task is not trained on (each pair of tasks
    here is one cohort), so the validation loss and the correction weight see unseen patients;
    the validation tasks are the same seeded draw as without patient ids."""
    from ragim.index import shares_patients

    plain = TaskIndex.build(family, embedder="hashing", progress=False)
    paired = TaskIndex.build(_sharing(family, lambda i: i // 2), embedder="hashing", progress=False)
    kw = dict(base_model="tiny", generator_config=LMConfig(k=1, device="cpu"), max_steps=1, batch_size=2,
              val_fraction=0.3, progress=False)
    before = train_sft(plain, **kw)
    with pytest.warns(DataWarning, match=r"task\(s\) share patients with a validation task and are not trained on"):
        gen = train_sft(paired, **kw)
    val, train = gen.val_task_ids_, gen.train_task_ids_
    assert val == before.val_task_ids_ and len(val) == 3 and before.train_task_ids_ != train
    partners = {t for v in val for t in paired.ids if shares_patients(paired.record(v))(paired.record(t))}
    assert set(train) == set(paired.ids) - partners and len(partners) > len(val)
    from ragim.train.sft import apart_from_validation, hidden_for_validation

    # training prompts (and GRPO's, and preference pairs by default) hide the same tasks
    assert set(hidden_for_validation(paired, val, train)) == partners
    assert hidden_for_validation(paired, []) == [] and hidden_for_validation(paired, ["nope"]) == []
    with pytest.raises(ValidationError, match=r"not in the index: \['nope'\]"):
        apart_from_validation(paired, paired.ids[:2], ["nope"])
    with pytest.raises(ValidationError, match="both training and validation tasks"):
        apart_from_validation(paired, paired.ids[:2], paired.ids[1:3])
    # one cohort throughout: nothing could be trained on, so all is, and a warning says so
    one = TaskIndex.build(_sharing(family, lambda i: 0), embedder="hashing", progress=False)
    with pytest.warns(DataWarning, match="shares patients with a validation task"):
        gen = train_sft(one, **kw)
    assert gen.train_task_ids_ == before.train_task_ids_


def test_an_sft_resume_refuses_another_split_and_accepts_a_run_saved_without_one(family, tmp_path):
    """The split into training and validation tasks is part of the run: a resume whose split
    differs (say, after the rule for left-out tasks changed) is refused by name; a run file
    saved before the split was recorded still resumes."""
    import json

    paired = TaskIndex.build(_sharing(family, lambda i: i // 2), embedder="hashing", progress=False)
    kw = dict(base_model="tiny", generator_config=LMConfig(k=1, device="cpu"), batch_size=2, val_fraction=0.3,
              progress=False, output_dir=tmp_path / "sft", save_steps=1)
    train_sft(paired, max_steps=1, **kw)
    run_file = tmp_path / "sft" / "ragim_run.json"
    saved = json.loads(run_file.read_text())
    assert "split" in saved
    run_file.write_text(json.dumps({**saved, "split": "0" * 16}))
    with pytest.raises(ValidationError, match="differs in the training and validation tasks"):
        train_sft(paired, max_steps=2, resume_from_checkpoint=True, **kw)
    # a run saved before tasks sharing patients with the validation tasks were left out
    # trained on them: its data differ
    from ragim.train.trainer import data_digest, index_data

    run_file.write_text(json.dumps({**{k: v for k, v in saved.items() if k != "split"},
                                    "data": data_digest(index_data(paired))}))
    with pytest.raises(ValidationError, match="differs in the training data"):
        train_sft(paired, max_steps=2, resume_from_checkpoint=True, **kw)
    run_file.write_text(json.dumps({k: v for k, v in saved.items() if k != "split"}))
    gen = train_sft(paired, max_steps=2, resume_from_checkpoint=True, **kw)
    assert [h["step"] for h in gen.history_ if "loss" in h] == [1, 2]


def test_a_validation_task_sharing_patients_with_later_training_is_not_unseen(family):
    """GRPO or DPO may train on tasks SFT left out; a validation task sharing their patients is
    then left out of the correction weight's validation, with a warning, as one trained on is."""
    from ragim.train.sft import validate_prior_correction

    paired = TaskIndex.build(_sharing(family, lambda i: i // 2), embedder="hashing", progress=False)
    gen = train_sft(paired, base_model="tiny", max_steps=1, batch_size=2, val_fraction=0.3, progress=False,
                    generator_config=LMConfig(k=1, device="cpu", statistical_prior=True))
    first = gen.val_task_ids_[0]
    partner = next(t for t in paired.ids if t != first and paired.ids.index(t) // 2 == paired.ids.index(first) // 2)
    with pytest.warns(DataWarning, match="1 validation task.* share patients with tasks trained on"):
        validate_prior_correction(gen, paired, trained_on=[partner])


def test_posterior_mode_moves_from_the_prior_only_as_far_as_the_rows_support(index, family):
    """A confident prior keeps its values; a vague one gives way to the rows' own maximum
    likelihood fit (scikit-learn's unpenalised logistic regression on the same design)."""
    from sklearn.linear_model import LogisticRegression

    from ragim.params import ModelParams, design_matrix
    from ragim.train.sft import posterior_mode

    task = family[0]
    prior = index.population_params()
    sure = ModelParams(prior.kind, prior.schema, prior.vector, std=np.full(len(prior.vector), 1e-6))
    np.testing.assert_allclose(posterior_mode(sure, task.X, task.y).vector, prior.vector, atol=1e-6)
    vague = ModelParams(prior.kind, prior.schema, prior.vector, std=np.full(len(prior.vector), 1e4))
    D = design_matrix(prior.kind, prior.schema, task.X)
    mle = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(D, task.y)
    np.testing.assert_allclose(posterior_mode(vague, task.X, task.y).vector,
                               np.r_[mle.intercept_, mle.coef_[0]], atol=1e-3)
    # without SDs the default prior SDs shrink towards the prior: between the prior and the MLE
    default = posterior_mode(ModelParams(prior.kind, prior.schema, prior.vector), task.X, task.y).vector
    full = np.r_[mle.intercept_, mle.coef_[0]]
    assert np.linalg.norm(default - prior.vector) < np.linalg.norm(full - prior.vector)
    assert np.linalg.norm(default - full) < np.linalg.norm(full - prior.vector)


def test_posterior_targets_leave_out_the_grpo_reward_rows(index):
    """targets='posterior': each completion is the task's posterior mode, under the prior its
    prompt shows (here the leak-free population model), of exactly the rows GRPO's rewards do
    not score (Task.split(heldout_fraction, seed))."""
    from ragim.train.sft import posterior_mode

    tok = build_tiny_tokenizer()
    cfg = LMConfig(k=2, decimals=3)
    ids = index.ids[:3]
    ds = build_sft_dataset(index, tok, cfg, task_ids=ids, targets="posterior", heldout_fraction=0.4, seed=3)
    fits = build_sft_dataset(index, tok, cfg, task_ids=ids)
    for row, fit in zip(ds, fits, strict=True):
        tid = row["task_id"]
        train_rows, reward_rows = index.tasks[tid].split(0.4, seed=3)
        assert reward_rows.n_rows > 0 and train_rows.n_rows + reward_rows.n_rows == index.tasks[tid].n_rows
        center = index.population_params(exclude=leak_free(index.record(tid)))
        want = answer_text(posterior_mode(center, train_rows.X, train_rows.y), 3)
        assert row["completion"] == [{"role": "assistant", "content": want}]
        assert want != fit["completion"][0]["content"]  # not the stored fit on every row
        assert row["prompt"] == fit["prompt"]  # only the completion changes


def test_posterior_targets_are_checked(index, family):
    from ragim.params import ModelParams
    from ragim.train.sft import SFTTrainingConfig, posterior_mode

    tok = build_tiny_tokenizer()
    with pytest.raises(ValidationError, match="targets must be one of"):
        train_sft(index, base_model="tiny", max_steps=1, targets="denoised", progress=False)
    with pytest.raises(ValidationError, match="heldout_fraction"):
        train_sft(index, base_model="tiny", max_steps=1, targets="posterior", heldout_fraction=1.0,
                  progress=False)
    with pytest.raises(ValidationError, match=r"(?s)targets must be one of.*heldout_fraction must be"):
        SFTTrainingConfig(targets="x", heldout_fraction=2)  # every problem, in one error
    assert type(SFTTrainingConfig(targets=np.str_("posterior")).targets) is str
    bare = TaskIndex.build(family, embedder="hashing", progress=False, keep_tasks=False)
    with pytest.raises(ValidationError, match="keep_tasks=True"):
        build_sft_dataset(bare, tok, LMConfig(k=2), targets="posterior")
    with pytest.raises(ValidationError, match="the prompt shows none"):  # no prior to centre on
        build_sft_dataset(index, tok, LMConfig(k=2, population=False), targets="posterior")
    prior, task = index.population_params(), family[0]
    with pytest.raises(ValidationError, match=r"y must be 0/1 \(1: the event\), got values \[1, 2\]"):
        posterior_mode(prior, task.X, task.y + 1)  # outcomes coded 1/2
    with pytest.raises(ValidationError, match="one outcome per row"):
        posterior_mode(prior, task.X, task.y[:-1])
    with pytest.raises(ValidationError, match="prior must be a ModelParams"):
        posterior_mode(prior.vector, task.X, task.y)
    # an SD of 0 fixes the parameter at the prior's value; no rows leave the prior as it is
    sd = np.ones(len(prior.vector))
    sd[0] = 0.0
    fixed = posterior_mode(ModelParams(prior.kind, prior.schema, prior.vector, std=sd), task.X, task.y)
    assert fixed.vector[0] == pytest.approx(prior.vector[0], abs=1e-6)
    assert not np.allclose(fixed.vector[1:], prior.vector[1:], atol=1e-3)
    empty = posterior_mode(prior, task.X.iloc[:0], task.y[:0])
    np.testing.assert_allclose(empty.vector, prior.vector)
    assert empty.metadata == {"source": "posterior", "n_rows": 0, "prior": "population"}


def test_a_split_that_leaves_a_side_empty_gives_an_empty_task(family):
    """Task.split at a fraction that rounds one side to no rows: an empty task, not an
    IndexError (np.sort([]) is a float array); posterior targets of a task with no training
    rows are the prior."""
    task = family[0]
    train, test = task.split(0.001, seed=0)
    assert (train.n_rows, test.n_rows) == (task.n_rows, 0)
    train, test = task.split(0.999, seed=0)
    assert (train.n_rows, test.n_rows) == (0, task.n_rows)
    assert task.subset([]).n_rows == 0
    with pytest.raises(ValidationError, match=r"test_size must be a number in \[0, 1\]"):
        task.split(1.5)


def test_rewards_on_rows_that_shaped_posterior_targets_are_flagged(index):
    """GRPO and the preference pairs score rewards on Task.split(heldout_fraction, seed)[1];
    after SFT on posterior targets with another split, some of those rows shaped the targets."""
    import warnings

    from ragim.errors import DataWarning
    from ragim.train.sft import warn_if_rewards_overlap_targets

    gen = LMGenerator(base_model="tiny", k=2, device="cpu")
    gen.training_ = [{"stage": "sft", "config": {"targets": "posterior", "heldout_fraction": 0.5, "seed": 0}}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_rewards_overlap_targets(gen, 0.5, 0, "GRPO") is False
    with pytest.warns(DataWarning, match=r"GRPO scores rewards on Task.split\(0.3, seed=0\)\[1\].*heldout_fraction=0.5"):
        assert warn_if_rewards_overlap_targets(gen, 0.3, 0, "GRPO") is True
    with pytest.warns(DataWarning, match="seed=0"):
        warn_if_rewards_overlap_targets(gen, 0.5, 4, "build_preference_pairs")
    gen.training_[0]["config"]["heldout_fraction"] = 0.4
    with warnings.catch_warnings():  # the same split, given as numpy scalars (0.4 is inexact in float32)
        warnings.simplefilter("error")
        assert warn_if_rewards_overlap_targets(gen, np.float32(0.4), np.int64(0), "GRPO") is False
    gen.training_[0]["config"]["heldout_fraction"] = 0.5
    gen.training_[0]["config"]["targets"] = "fit"  # the stored fits saw every row anyway
    assert warn_if_rewards_overlap_targets(gen, 0.3, 4, "GRPO") is False


class _FakeLM:
    """Stands in for a fine-tuned LM generator: its 'answers' are given, its prior is the
    population model (what validate_prior_correction reads of a generator)."""

    def __init__(self, index, answer):
        self.config = LMConfig(statistical_prior=True)
        self.val_task_ids_ = list(index.ids[:6])
        self.answer, self.index = answer, index

    def generate_params(self, queries, index, exclude):
        assert len(queries) == len(exclude)
        by_text = {index.record(t)["description"]: t for t in index.ids}
        return [self.answer(by_text[q]) for q in queries]

    def statistical_priors(self, queries, index, excludes):
        return [index.population_params(exclude=ex) for ex in excludes]


def test_prior_correction_is_chosen_on_validation_tasks(index):
    """The weight of the LM's correction is the one whose blend with the prior scores best on
    the validation tasks' rows: an LM that writes each task's own fit is trusted fully, one
    that writes noise is not trusted at all."""
    from ragim.train import validate_prior_correction
    from ragim.train.sft import CORRECTION_GRID

    good = _FakeLM(index, index.params)
    assert validate_prior_correction(good, index) == 1.0
    assert [w for w, _ in good.prior_correction_cv_] == list(CORRECTION_GRID)
    losses = [v for _, v in good.prior_correction_cv_]
    assert losses[-1] == min(losses) < losses[0]
    rng = np.random.default_rng(0)
    noisy = _FakeLM(index, lambda t: index.params(t).replace(vector=rng.normal(0, 8, len(index.params(t).vector))))
    assert validate_prior_correction(noisy, index) <= 0.1
    off = _FakeLM(index, index.params)
    off.config = LMConfig(statistical_prior=False)
    assert validate_prior_correction(off, index) is None and off.prior_correction_ is None


def test_answers_move_towards_the_prior_by_the_validated_weight(index, family, tmp_path):
    cfg = LMConfig(k=1, device="cpu", statistical_prior=True)
    gen = train_sft(index, base_model="tiny", generator_config=cfg, max_steps=1, batch_size=2,
                    val_fraction=0.3, progress=False)
    assert gen.prior_correction_ is not None and len(gen.prior_correction_cv_) == 21
    desc = family.descriptions[0]
    chosen = gen.generate_params(desc, index)
    w = gen.prior_correction_
    gen.prior_correction_ = None
    with pytest.warns(DataWarning, match="never validated"):
        raw = gen.generate_params(desc, index)
    [prior] = gen.statistical_priors([desc], index, [None])
    np.testing.assert_allclose(chosen.vector, prior.vector + w * (raw.vector - prior.vector))
    assert chosen.metadata["prior_correction"] == w and raw.metadata["prior_correction"] is None
    gen.prior_correction_ = 0.0
    np.testing.assert_allclose(gen.generate_params(desc, index).vector, prior.vector)
    gen.prior_correction_ = w
    loaded = LMGenerator.load(gen.save(tmp_path / "g"), device="cpu")
    assert loaded.prior_correction_ == w and loaded.prior_correction_cv_ == gen.prior_correction_cv_
    state = tmp_path / "g" / "state.json"
    data = json.loads(state.read_text())
    data["prior_correction"] = 1.5
    state.write_text(json.dumps(data))
    reseal(tmp_path / "g")
    with pytest.raises(ArtifactError, match="prior_correction must be a number in"):
        LMGenerator.load(tmp_path / "g", device="cpu")


def test_tasks_training_used_are_not_validation_tasks_and_an_unvalidated_weight_is_kept(index):
    import warnings

    from ragim.errors import DataWarning
    from ragim.train import validate_prior_correction

    gen = _FakeLM(index, index.params)
    with pytest.warns(DataWarning, match="2 validation task\\(s\\) were trained on"):
        assert validate_prior_correction(gen, index, trained_on=gen.val_task_ids_[:2]) == 1.0
    gen.prior_correction_ = 0.3
    with pytest.warns(DataWarning, match="correction weight 0.3 validated before is kept"):
        assert validate_prior_correction(gen, index, trained_on=gen.val_task_ids_) == 0.3
    assert gen.prior_correction_ == 0.3
    bare = _FakeLM(index, index.params)  # nothing validated yet and nothing to validate on
    bare.prior_correction_, bare.val_task_ids_ = None, []
    with pytest.warns(DataWarning, match="answers are the LM's own, unvalidated; train with val_fraction > 0"):
        assert validate_prior_correction(bare, index) is None
    # validated later on tasks it never trained on; the ones it trained on are left out
    bare.train_task_ids_ = list(index.ids[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert validate_prior_correction(bare, index, task_ids=index.ids[2:6]) == 1.0
    with pytest.warns(DataWarning, match="2 validation task\\(s\\) were trained on"):
        validate_prior_correction(bare, index, task_ids=index.ids[:6])


def test_an_unvalidated_prior_correction_is_said_at_training_and_at_each_generation(index, family):
    """val_fraction=0 leaves no task to validate the LM's correction of its statistical prior
    on: training says so, and so does every generate call (its answers are the LM's own)."""
    import warnings

    cfg = LMConfig(k=1, device="cpu", statistical_prior=True)
    with pytest.warns(DataWarning, match="never validated .*val_fraction > 0.*validate_prior_correction"):
        gen = train_sft(index, base_model="tiny", generator_config=cfg, max_steps=1, batch_size=2,
                        val_fraction=0, progress=False)
    assert gen.prior_correction_ is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ps = gen.generate_params(family.descriptions[:2], index)
    said = [w for w in caught if "never validated" in str(w.message)]
    assert len(said) == 1 and issubclass(said[0].category, DataWarning)  # once per call
    assert [p.metadata["prior_correction"] for p in ps] == [None, None]


def test_a_correction_weight_out_of_range_is_refused_on_save_and_load(index, family, tmp_path):
    cfg = LMConfig(k=1, device="cpu", statistical_prior=True)
    gen = train_sft(index, base_model="tiny", generator_config=cfg, max_steps=1, batch_size=2,
                    val_fraction=0.3, progress=False)
    gen.prior_correction_ = 1.5
    with pytest.raises(ValidationError, match=r"prior_correction must be a number in \[0, 1\]"):
        gen.save(tmp_path / "bad")
    with pytest.raises(ValidationError, match=r"prior_correction_ must be a number in \[0, 1\]"):
        gen.generate_params(family.descriptions[0], index)
    gen.prior_correction_ = 0.5
    path = gen.save(tmp_path / "g")
    bad_tables = [([["abc", 1]], "prior_correction_cv values"), ([[0, 1, 2]], "pairs"),
                  ([[float("nan"), 1.0]], r"state.json: not valid JSON \(a bare NaN")]
    for table, message in bad_tables:
        data = json.loads((path / "state.json").read_text())
        data["prior_correction_cv"] = table
        (path / "state.json").write_text(json.dumps(data))
        reseal(path)
        with pytest.raises(ArtifactError, match=message):
            LMGenerator.load(path, device="cpu")


def test_sft_resumes_only_its_own_run(index, tmp_path):
    """Checkpoints of an SFT run with another answer format are refused on resume, naming the
    setting; a longer run of the same settings resumes (max_steps may change)."""
    out = tmp_path / "sft"
    kw = dict(base_model="tiny", k=1, device="cpu", batch_size=2, progress=False, output_dir=out, save_steps=1)
    train_sft(index, max_steps=1, **kw)
    with pytest.raises(ValidationError, match=r"another run \(it differs in model.answer_format\)"):
        train_sft(index, max_steps=2, resume_from_checkpoint=True,
                  generator_config=LMConfig(answer_format="compact"), **kw)
    again = train_sft(index, max_steps=2, resume_from_checkpoint=True, **kw)
    assert [h["step"] for h in again.history_ if "loss" in h] == [1, 2]


def test_a_new_run_refuses_an_output_dir_holding_another_runs_checkpoints(index, tmp_path):
    """A run started without resume in a folder that holds checkpoints would rewrite its
    ragim_run.json and leave them there; a later resume then continued the earlier run's last
    checkpoint as its own (its log began with the other run's steps at learning rate 1e-2, run
    B's being 1e-3). It is refused before any step; the first run's checkpoints are kept."""
    out = tmp_path / "sft"
    kw = dict(base_model="tiny", k=1, device="cpu", batch_size=2, progress=False, output_dir=out)
    train_sft(index, max_steps=2, save_steps=1, learning_rate=1e-2, **kw)
    with pytest.raises(ValidationError, match=r"already holds checkpoints of an earlier run \(the last: "
                                              r"checkpoint-2\).*resume_from_checkpoint=True"):
        train_sft(index, max_steps=3, save_steps=3, learning_rate=1e-3, **kw)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert json.loads((out / "ragim_run.json").read_text())["training"]["learning_rate"] == 1e-2


def test_sft_answers_clipped_by_max_abs_are_said(index):
    """LMConfig(max_abs=0.5) wrote a stored coefficient of -2.06 as -0.5 in the SFT answer
    without a word, so the LM learned clipped targets; the clipping is now a DataWarning naming
    the largest value, and the answers are unchanged (clipped, as the decoder bounds them)."""
    import warnings

    tok = build_tiny_tokenizer()
    big = max(index.ids, key=lambda t: float(np.abs(index.params(t).vector).max()))
    value = float(np.abs(index.params(big).vector).max())
    assert value > 0.5
    with pytest.warns(DataWarning, match=rf"SFT answers have values beyond max_abs=0.5 \(the largest: .* in '{big}'\)"):
        ds = build_sft_dataset(index, tok, LMConfig(max_abs=0.5, k=1))
    assert all(abs(v) <= 0.5 for r in ds for v in json.loads(r["completion"][0]["content"]).values())
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        build_sft_dataset(index, tok, LMConfig(k=1))                    # max_abs=20: nothing clipped
        build_sft_dataset(index, tok, LMConfig(max_abs=0.5, k=1), warn_clipped=False)


def test_validation_task_ids_that_are_not_in_the_index_are_refused(index):
    """validate_prior_correction(gen, index, task_ids=["nope"]) dropped the unknown id and kept the
    old weight with 'no unseen validation task with rows in this index'; a typo is now named."""
    from ragim.train import validate_prior_correction

    gen = train_sft(index, base_model="tiny", generator_config=LMConfig(k=1, device="cpu", statistical_prior=True),
                    max_steps=1, batch_size=2, progress=False)
    with pytest.raises(ValidationError, match=r"1 of the task_ids are not in the index: \['nope'\]"):
        validate_prior_correction(gen, index, task_ids=["nope", gen.val_task_ids_[0]])


def test_a_validation_split_that_starves_the_training_prompts_says_why():
    """Heart folds 1 and 3: a validation task sharing patients with most training tasks hides
    them all from the training prompts, and the 2 tasks left had one neighbour each; the
    statistical prior's error did not say that SFT's own validation split caused it."""
    family = datasets.synthetic_family(n_tasks=6, n_features=2, seed=0)
    kw = dict(base_model="tiny", generator_config=LMConfig(k=1, device="cpu", statistical_prior=True), max_steps=1,
              batch_size=2, val_fraction=0.17, progress=False)
    plain = train_sft(TaskIndex.build(family, embedder="hashing", progress=False), **kw)
    (val,) = plain.val_task_ids_                       # the same seeded draw with patient ids
    others = [t for t in family.ids if t != val]
    cohort = {t: 0 for t in [val, *others[:3]]}       # val and three others: one cohort
    index = TaskIndex.build(_sharing(family, lambda i: cohort.get(family.ids[i], i + 1)), embedder="hashing",
                            progress=False)
    with pytest.warns(DataWarning, match="not trained on"), pytest.raises(
            ValidationError, match=rf"SFT's validation task\(s\) \({val}\) and the 3 task\(s\) sharing their "
                                   r"patients are hidden .* leaves the 2 training task\(s\) too few others .*"
                                   r"statistical prior cannot be generated.*val_fraction=0"):
        train_sft(index, **kw)
