"""``ragim train sft|reward|dpo|grpo`` and ``ragim generate --rerank`` with the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ragim import TaskIndex, datasets
from ragim.cli import app
from ragim.errors import ArtifactError, ValidationError

pytest.importorskip("trl")

from ragim.generate.lm import LMGenerator  # noqa: E402
from ragim.train.reward import RewardModel  # noqa: E402

runner = CliRunner()



def _flat(text: str) -> str:
    """Typer's error box without its frame and line breaks."""
    return " ".join(text.replace("│", " ").split())


def _run(*args: str) -> dict:
    result = runner.invoke(app, [*map(str, args), "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-train")
    tasks = datasets.synthetic_family(n_tasks=8, n_features=2, seed=0)
    TaskIndex.build(tasks, embedder="hashing", progress=False).save(root / "index")
    return root


@pytest.fixture(scope="module")
def sft(root):
    summary = _run("train", "sft", "--index", root / "index", "--out", root / "sft", "--base-model", "tiny",
                   "--max-steps", 2, "--batch-size", 2, "--learning-rate", 1e-3, "--k", 2)
    return summary


def test_train_sft(root, sft):
    assert sft["stage"] == "sft" and sft["path"] == str(root / "sft") and sft["base_model"] == "tiny"
    assert sft["max_steps"] == 2 and sft["n_train_tasks"] + sft["n_val_tasks"] == 8
    assert np.isfinite(sft["train_loss"]) and np.isfinite(sft["eval_loss"]) and sft["n_trainable_params"] > 0
    gen = LMGenerator.load(root / "sft", device="cpu")
    assert gen.fine_tuned_ and gen.config.k == 2 and gen.config.base_model == "tiny"
    p = gen.generate_params("Predict the outcome.", TaskIndex.load(root / "index"))
    assert p.metadata["rerank"] == "logprob"
    assert gen.config.population is True


def test_train_sft_without_the_population_model(root, tmp_path):
    _run("train", "sft", "--index", root / "index", "--out", tmp_path / "sft", "--base-model", "tiny",
         "--max-steps", 1, "--batch-size", 2, "--k", 1, "--val-fraction", 0, "--no-population")
    assert LMGenerator.load(tmp_path / "sft", device="cpu").config.population is False


def test_mixed_precision_reaches_the_run_config(root, tmp_path):
    _run("train", "sft", "--index", root / "index", "--out", tmp_path / "sft", "--base-model", "tiny",
         "--max-steps", 1, "--batch-size", 2, "--k", 1, "--val-fraction", 0, "--mixed-precision", "bf16")
    gen = LMGenerator.load(tmp_path / "sft", device="cpu")
    assert gen.training_[-1]["config"]["mixed_precision"] == "bf16"
    assert gen.config.dtype == "float32"  # trained in float32 weights under bf16 autocast


def test_train_sft_compact_answers_and_the_batched_decoder(root, tmp_path):
    _run("train", "sft", "--index", root / "index", "--out", tmp_path / "sft", "--base-model", "tiny",
         "--max-steps", 1, "--batch-size", 2, "--k", 1, "--val-fraction", 0, "--answer-format", "compact",
         "--decoder", "llguidance")
    gen = LMGenerator.load(tmp_path / "sft", device="cpu")
    assert (gen.config.answer_format, gen.config.decoder) == ("compact", "llguidance")
    index = TaskIndex.load(root / "index")
    assert len(gen.generate_params([index.record(t)["description"] for t in index.ids[:3]], index)) == 3
    r = runner.invoke(app, ["train", "sft", "--index", str(root / "index"), "--out", str(tmp_path / "x"),
                            "--base-model", "tiny", "--answer-format", "xml"])
    assert isinstance(r.exception, ValidationError) and "answer_format must be one of" in str(r.exception)


def test_train_sft_with_the_statistical_prior(root, tmp_path):
    _run("train", "sft", "--index", root / "index", "--out", tmp_path / "sft", "--base-model", "tiny",
         "--max-steps", 1, "--batch-size", 2, "--k", 1, "--val-fraction", 0, "--statistical-prior")
    gen = LMGenerator.load(tmp_path / "sft", device="cpu")
    assert gen.config.statistical_prior is True and gen.prior_generator_ is not None


def test_train_sft_residual_answers(root, tmp_path):
    _run("train", "sft", "--index", root / "index", "--out", tmp_path / "sft", "--base-model", "tiny",
         "--max-steps", 1, "--batch-size", 2, "--k", 1, "--val-fraction", 0, "--statistical-prior",
         "--residual")
    gen = LMGenerator.load(tmp_path / "sft", device="cpu")
    assert gen.config.residual is True
    index = TaskIndex.load(root / "index")
    assert gen.generate_params("Predict the outcome.", index).metadata["residual"] is True
    r = runner.invoke(app, ["train", "sft", "--index", str(root / "index"), "--out", str(tmp_path / "x"),
                            "--base-model", "tiny", "--residual"])
    assert r.exit_code == 2 and "--residual needs --statistical-prior" in _flat(r.output)
    assert not (tmp_path / "x").exists()
    # DPO cannot train a residual generator: refused before any pair is sampled (it sampled
    # every task's candidates first, then train_dpo refused)
    import ragim.train.preferences as prefs

    def no_sampling(*args, **kwargs):
        raise AssertionError("pairs were sampled before the residual generator was refused")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(prefs, "build_preference_pairs", no_sampling)
        r = runner.invoke(app, ["train", "dpo", "--generator", str(tmp_path / "sft"), "--index", str(root / "index"),
                                "--out", str(tmp_path / "dpo")])
    assert r.exit_code == 2 and "writes residual answers (trained with --residual); DPO cannot train it" in \
        _flat(r.output), r.output


def test_train_sft_on_posterior_targets(root, tmp_path):
    _run("train", "sft", "--index", root / "index", "--out", tmp_path / "sft", "--base-model", "tiny",
         "--max-steps", 1, "--batch-size", 2, "--k", 1, "--val-fraction", 0, "--targets", "posterior")
    gen = LMGenerator.load(tmp_path / "sft", device="cpu")
    assert gen.training_[0]["config"]["targets"] == "posterior"
    r = runner.invoke(app, ["train", "sft", "--index", str(root / "index"), "--out", str(tmp_path / "x"),
                            "--base-model", "tiny", "--targets", "denoised"])
    assert isinstance(r.exception, ValidationError) and "targets must be one of" in str(r.exception)


def test_train_reward_and_generate_with_rerank(root, sft):
    s = _run("train", "reward", "--generator", root / "sft", "--index", root / "index", "--out", root / "rm",
             "--n-candidates", 3, "--pairs", "all", "--max-steps", 2, "--batch-size", 2, "--val-fraction", 0.3,
             "--save-pairs", root / "pairs.jsonl")
    assert s["stage"] == "reward" and s["n_pairs"] > 0 and s["n_val_tasks"] >= 1
    assert s["val_pairwise_accuracy"] is None or 0 <= s["val_pairwise_accuracy"] <= 1
    assert (root / "pairs.jsonl").is_file()
    rm = RewardModel.load(root / "rm", device="cpu")
    assert rm.config.base_model == "tiny" and len(rm.val_task_ids_) == s["n_val_tasks"]

    out = _run("generate", "Predict the outcome in older patients.", "--index", root / "index", "--generator",
               root / "sft", "--rerank", "reward_model", "--reward-model", root / "rm", "-n", 3)
    meta = out["metadata"]
    assert meta["rerank"] == "reward_model" and meta["n"] == 3 and len(meta["reward_scores"]) == 3
    assert meta["reward_scores"].index(max(meta["reward_scores"])) == meta["candidate"]


def test_a_reward_model_of_another_schema_does_not_rerank(root, sft, tmp_path):
    """A reward model trained on pairs of one index reranked the candidates of a generator of an
    index rebuilt on other tasks (the same parameter names over another scaling) without a word;
    it keeps its index's schema fingerprint, and best_of_n refuses another schema."""
    rm = RewardModel.load(root / "rm", device="cpu")
    assert rm.schema_fingerprint_ == TaskIndex.load(root / "index").schema.fingerprint()
    rebuilt = tmp_path / "rebuilt"
    TaskIndex.build(datasets.synthetic_family(n_tasks=8, n_features=2, seed=5), embedder="hashing",
                    progress=False).save(rebuilt)
    _run("train", "sft", "--index", rebuilt, "--out", tmp_path / "sft", "--base-model", "tiny", "--max-steps", 1,
         "--batch-size", 2, "--k", 2)
    r = runner.invoke(app, ["generate", "Predict the outcome.", "--index", str(rebuilt), "--generator",
                            str(tmp_path / "sft"), "--rerank", "reward_model", "--reward-model", str(root / "rm"),
                            "-n", "2"])
    assert isinstance(r.exception, ValidationError), r.output
    assert "trained on pairs of an index with another feature schema" in str(r.exception)


def test_train_dpo_from_a_pairs_file(root, sft):
    s = _run("train", "dpo", "--generator", root / "sft", "--index", root / "index", "--out", root / "dpo",
             "--pairs-file", root / "pairs.jsonl", "--max-steps", 1, "--batch-size", 2)
    assert s["stage"] == "dpo" and s["n_pairs"] > 0 and np.isfinite(s["train_loss"])
    gen = LMGenerator.load(root / "dpo", device="cpu")
    assert gen.fine_tuned_ and {h["stage"] for h in gen.history_} == {"sft", "dpo"}


def test_train_grpo(root, sft):
    s = _run("train", "grpo", "--generator", root / "sft", "--index", root / "index", "--out", root / "grpo",
             "--rewards", "log_likelihood=1,validity=0.5", "--num-generations", 2, "--max-steps", 1)
    assert s["stage"] == "grpo" and s["rewards"] == {"log_likelihood": 1.0, "validity": 0.5}
    assert s["reward_first"] is not None and s["mean_frac_reward_zero_std"] is not None
    gen = LMGenerator.load(root / "grpo", device="cpu")
    assert {h["stage"] for h in gen.history_} == {"sft", "grpo"}
    assert gen.training_[-1]["config"]["constrained"] is True and s["constrained"] is True
    s = _run("train", "grpo", "--generator", root / "sft", "--index", root / "index", "--out", root / "grpo-plain",
             "--num-generations", 2, "--max-steps", 1, "--unconstrained")
    assert LMGenerator.load(root / "grpo-plain", device="cpu").training_[-1]["config"]["constrained"] is False
    _run("train", "grpo", "--generator", root / "sft", "--index", root / "index", "--out", root / "grpo-ac",
         "--num-generations", 2, "--max-steps", 1, "--activation-checkpointing")
    assert LMGenerator.load(root / "grpo-ac", device="cpu").training_[-1]["config"]["activation_checkpointing"]


def test_the_sign_reward_gets_its_constraints_from_the_command_line(root, sft, tmp_path):
    """`--rewards sign=1` could not work from the command line: no option took the expected
    signs, and the run failed at its first step. --sign-constraints gives them; without it the
    sign reward is refused before anything is loaded (train_grpo refuses it too)."""
    from ragim.train import train_grpo

    base = ["train", "grpo", "--generator", str(root / "sft"), "--index", str(root / "index"),
            "--num-generations", "2", "--max-steps", "1"]
    for weights in ("sign=1", "log_likelihood=1,sign=0"):  # TRL calls a 0-weight reward too
        r = runner.invoke(app, [*base, "--rewards", weights, "--out", str(tmp_path / "a")])
        assert r.exit_code == 2 and "--rewards sign=... needs --sign-constraints PATH" in _flat(r.output)
    (tmp_path / "signs.json").write_text('{"x01": 1, "x02": -1}')
    r = runner.invoke(app, [*base, "--sign-constraints", str(tmp_path / "signs.json"), "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "add sign=WEIGHT to --rewards" in _flat(r.output)
    s = _run(*base, "--rewards", "log_likelihood=1,sign=0.5", "--sign-constraints", tmp_path / "signs.json",
             "--out", tmp_path / "c")
    assert s["rewards"] == {"log_likelihood": 1.0, "sign": 0.5}
    gen = LMGenerator.load(tmp_path / "c", device="cpu")
    assert gen.training_[-1]["config"]["rewards"]["sign_constraints"] == str(tmp_path / "signs.json")
    assert any("rewards/sign_agreement/mean" in h for h in gen.history_)
    for weights in ({"sign": 1}, {"log_likelihood": 1, "sign": 0}):
        with pytest.raises(ValidationError, match="the 'sign' reward needs the expected signs"):
            train_grpo(gen, TaskIndex.load(root / "index"), rewards={"weights": weights}, max_steps=1,
                       num_generations=2, progress=False)


@pytest.mark.parametrize(("stage", "option", "message"), [
    ("reward", ["--val-fraction", "1.5"], "val_fraction must be a number in [0, 1), got 1.5"),
    ("grpo", ["--heldout-fraction", "1"], "heldout_fraction must be a number in (0, 1), got 1.0"),
    ("grpo", ["--num-generations", "1"], "num_generations must be an integer >= 2, got 1"),
])
def test_run_settings_are_checked_before_anything_is_loaded(root, tmp_path, stage, option, message):
    """`ragim train reward --val-fraction 1.5` sampled every task's candidates (7 s on the tiny
    model, minutes on SmolLM2) before its run config refused the value; grpo loaded the
    generator first. Both are refused first: here the --generator path does not even exist."""
    r = runner.invoke(app, ["train", stage, "--generator", str(tmp_path / "no-generator"), "--index",
                            str(root / "index"), "--out", str(tmp_path / "out"), *option])
    assert isinstance(r.exception, ValidationError), r.output
    assert message in str(r.exception)


def test_the_reward_summary_counts_the_tasks_of_pairs_without_task_ids(root, sft, tmp_path):
    """A pairs file without task_id (optional) gave 'n_train_tasks 0, n_val_tasks 0' for 6 pairs of
    6 prompts, beside a validation accuracy; the summary counts the tasks the split held out (a
    pair's task_id, else its prompt) and says on how many pairs the accuracy rests."""
    from ragim.train import build_preference_pairs

    pairs = build_preference_pairs(LMGenerator.load(root / "sft", device="cpu"), TaskIndex.load(root / "index"),
                                   n_candidates=2, min_margin=0.0, progress=False)
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in pairs]   # no task_id
    assert len(rows) == 6 and len({json.dumps(r["prompt"]) for r in rows}) == 6
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = _run("train", "reward", "--generator", root / "sft", "--index", root / "index", "--out", tmp_path / "rm",
             "--pairs-file", tmp_path / "prefs.jsonl", "--max-steps", 1, "--batch-size", 2)
    assert (s["n_pairs"], s["n_train_tasks"], s["n_val_tasks"], s["n_val_pairs"]) == (6, 5, 1, 1)
    s = _run("train", "reward", "--generator", root / "sft", "--index", root / "index", "--out", tmp_path / "rm0",
             "--pairs-file", tmp_path / "prefs.jsonl", "--max-steps", 1, "--batch-size", 2, "--val-fraction", 0)
    assert (s["n_train_tasks"], s["n_val_tasks"], s["n_val_pairs"], s["val_pairwise_accuracy"]) == (6, 0, 0, None)


def test_text_output_and_errors(root, sft, tmp_path):
    # a wrong --generator path is a RagimError (cli.main turns it into exit code 2)
    r = runner.invoke(app, ["train", "grpo", "--generator", str(tmp_path / "nope"), "--index", str(root / "index"),
                            "--out", str(tmp_path / "x")])
    assert isinstance(r.exception, ArtifactError)
    r = runner.invoke(app, ["train", "grpo", "--generator", str(root / "sft"), "--index", str(root / "index"),
                            "--rewards", "bleu=1", "--out", str(tmp_path / "x")])
    assert isinstance(r.exception, ValidationError) and "bleu" in str(r.exception)
    r = runner.invoke(app, ["generate", "Predict.", "--index", str(root / "index"), "--generator", str(root / "sft"),
                            "--rerank", "reward_model"])
    assert r.exit_code == 2 and "--rerank reward_model needs --reward-model PATH" in _flat(r.output)
    r = runner.invoke(app, ["generate", "Predict.", "--index", str(root / "index"), "--generator", str(root / "sft"),
                            "--reward-model", str(root / "sft")])
    assert r.exit_code == 2 and "--reward-model is used only with --rerank reward_model" in _flat(r.output)
    # the flags a user typed, not the Python names behind them (which named reward_model=...,
    # statistical_prior=True and n_candidates)
    r = runner.invoke(app, ["train", "sft", "--index", str(root / "index"), "--out", str(tmp_path / "r"),
                            "--residual"])
    assert r.exit_code == 2 and "--residual needs --statistical-prior" in _flat(r.output)
    for stage in ("reward", "dpo"):
        r = runner.invoke(app, ["train", stage, "--generator", str(tmp_path / "none"), "--index",
                                str(root / "index"), "--out", str(tmp_path / stage), "--n-candidates", "1"])
        assert r.exit_code == 2 and "--n-candidates must be at least 2" in _flat(r.output), r.output
    # -n > 1 from a greedy generator would give n identical candidates; --temperature samples them
    r = runner.invoke(app, ["generate", "Predict.", "--index", str(root / "index"), "--generator", str(root / "sft"),
                            "-n", "3"])
    assert isinstance(r.exception, ValidationError) and "identical candidates" in str(r.exception)
    r = runner.invoke(app, ["generate", "Predict.", "--index", str(root / "index"), "--generator", str(root / "sft"),
                            "-n", "2", "--temperature", "0.8", "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "sft", "--index", str(root / "index"), "--max-steps", "0"])
    assert r.exit_code == 2 and "--max-steps must be positive" in _flat(r.output)
    for stage, generator in (("sft", []), ("grpo", ["--generator", str(root / "sft")])):
        r = runner.invoke(app, ["train", stage, "--index", str(root / "index"), *generator,
                                "--out", str(tmp_path / stage), "--mixed-precision", "fp16"])
        assert r.exit_code == 2 and "--mixed-precision must be one of ['auto', 'bf16', 'no'], got 'fp16'" in _flat(
            r.output), r.output
    r = runner.invoke(app, ["generate", "Predict.", "--index", str(root / "index"), "--rerank", "logprob"])
    assert r.exit_code == 2 and "need --generator" in _flat(r.output)
    r = runner.invoke(app, ["generate", "Predict.", "--index", str(root / "index"), "--dtype", "bfloat16"])
    assert r.exit_code == 2 and "--dtype need --generator" in _flat(r.output)
    r = runner.invoke(app, ["generate", "Predict.", "--index", str(tmp_path / "no-index"), "--generator",
                            str(root / "sft"), "--dtype", "half"])  # said before the index is opened
    assert r.exit_code == 2 and "--dtype must be one of ['float32', 'bfloat16'], got 'half'" in _flat(r.output)
    r = runner.invoke(app, ["generate", "Predict.", "--index", str(root / "index"), "--generator", str(root / "sft"),
                            "--dtype", "bfloat16", "--json"])
    assert r.exit_code == 0, r.output
    assert '"generator": "lm"' in r.output


@pytest.mark.parametrize("stage", ["grpo", "dpo", "reward"])
def test_an_index_rebuilt_since_sft_is_refused_before_any_step(root, sft, tmp_path, stage):
    """`ragim train grpo` trained on an index rebuilt on other tasks (same names, other scaling)
    and relabelled the generator as fitted on it; with --pairs-file `train reward|dpo` used it
    too. Each is refused at once, naming the ragim command that fine-tunes a new generator."""
    rebuilt = tmp_path / "rebuilt"
    TaskIndex.build(datasets.synthetic_family(n_tasks=8, n_features=2, seed=5), embedder="hashing",
                    progress=False).save(rebuilt)
    pair = {"prompt": "p", "chosen": {"intercept": 1, "x01": 0, "x02": 0},
            "rejected": {"intercept": -1, "x01": 0, "x02": 0}}
    (tmp_path / "prefs.jsonl").write_text(json.dumps(pair) + "\n")
    pairs = [] if stage == "grpo" else ["--pairs-file", tmp_path / "prefs.jsonl"]
    r = runner.invoke(app, ["train", stage, "--generator", str(root / "sft"), "--index", str(rebuilt),
                            *map(str, pairs), "--out", str(tmp_path / "out"), "--max-steps", "1"])
    assert isinstance(r.exception, ValidationError), r.output
    assert "the index was rebuilt since this LMGenerator was fitted" in str(r.exception)
    assert f"ragim train sft --index {rebuilt} --out NEW-GENERATOR" in str(r.exception)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage", ["dpo", "reward"])
def test_pairs_written_for_another_schema_stop_training_before_any_step(root, sft, tmp_path, stage):
    """A clinician's pairs for a heart-failure cohort (bnp, egfr) cannot train a generator over x01/x02."""
    pair = {"prompt": "Heart-failure clinic: predict readmission within 30 days.",
            "chosen": {"intercept": -1.2, "bnp": 0.6, "egfr": -0.3},
            "rejected": {"intercept": 0.9, "bnp": -0.6, "egfr": 0.5}}
    (tmp_path / "prefs.jsonl").write_text((json.dumps(pair) + "\n") * 4)
    r = runner.invoke(app, ["train", stage, "--generator", str(root / "sft"), "--index", str(root / "index"),
                            "--pairs-file", str(tmp_path / "prefs.jsonl"), "--out", str(tmp_path / "out"),
                            "--max-steps", "1"])
    assert isinstance(r.exception, ValidationError), r.output
    text = str(r.exception)
    assert "do not match the parameter layout of the index/generator (3 parameters" in text
    assert "pairs 1-4: unknown parameters ['bnp', 'egfr']; missing ['x01', 'x02']" in text
    assert text.count("unknown parameters") == 1  # said once for the 4 pairs, not once per pair
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage", ["dpo", "reward"])
def test_a_value_out_of_range_is_not_called_another_schema(root, sft, tmp_path, stage):
    """A pair of the right schema with one value outside the generator's range (intercept 25)
    was refused as 'written for another schema'; the message now names the value alone."""
    pair = {"prompt": "p", "chosen": {"intercept": 25, "x01": 0, "x02": 0},
            "rejected": {"intercept": -1, "x01": 0, "x02": 0}}
    good = {**pair, "chosen": {"intercept": 1, "x01": 0, "x02": 0}}
    (tmp_path / "prefs.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(pair) + "\n")
    r = runner.invoke(app, ["train", stage, "--generator", str(root / "sft"), "--index", str(root / "index"),
                            "--pairs-file", str(tmp_path / "prefs.jsonl"), "--out", str(tmp_path / "out"),
                            "--max-steps", "1"])
    assert isinstance(r.exception, ValidationError), r.output
    text = str(r.exception)
    assert "another schema" not in text and "hold answers that are no model the generator writes" in text
    assert "pair 2: chosen is not a model the generator writes (parameter 'intercept' is 25, outside [-20, 20]" in text


@pytest.mark.parametrize("stage", ["dpo", "reward"])
def test_sampling_options_beside_a_pairs_file_are_refused(root, sft, tmp_path, stage):
    """--min-margin 5 (which would keep none of the file's pairs), --pairs all and
    --n-candidates 9 were ignored beside --pairs-file, training on all 6 pairs; they are
    refused in one line before anything is loaded."""
    pair = {"prompt": "p", "chosen": {"intercept": 1, "x01": 0, "x02": 0},
            "rejected": {"intercept": -1, "x01": 0, "x02": 0}}
    (tmp_path / "prefs.jsonl").write_text(json.dumps(pair) + "\n")
    base = ["train", stage, "--generator", str(root / "sft"), "--index", str(root / "index"),
            "--pairs-file", str(tmp_path / "prefs.jsonl"), "--out", str(tmp_path / "out"), "--max-steps", "1"]
    r = runner.invoke(app, [*base, "--min-margin", "5", "--pairs", "all", "--n-candidates", "9"])
    assert r.exit_code == 2, r.output
    assert ("--n-candidates, --pairs, --min-margin choose how pairs are sampled from the generator; with "
            "--pairs-file the file's pairs are used as they are, so drop them") in _flat(r.output)
    r = runner.invoke(app, [*base, "--min-margin", "0.2"])
    assert r.exit_code == 2 and "--min-margin choose how" in _flat(r.output) and "drop it" in _flat(r.output)
    assert not (tmp_path / "out").exists()


def test_train_dpo_checks_the_pairs_against_the_generator(root, sft):
    from ragim.train import train_dpo

    pairs = [{"prompt": "p", "chosen": '{"x01": 1, "intercept": 0, "x02": 2}',
              "rejected": '{"x01": 2, "intercept": 1, "x02": 0}'}]
    with pytest.raises(ValidationError, match="pair 1: parameters in another order than the generator writes them"):
        train_dpo(LMGenerator.load(root / "sft", device="cpu"), pairs, max_steps=1, progress=False)


def test_training_progress_keeps_stdout_clean(root, capsys, monkeypatch):
    """With progress on (a terminal), the trainer's bar goes to stderr and its per-step log dicts
    go nowhere; stdout stays for ragim's own summary. The logs are still in ``history_``."""
    from ragim.train.sft import train_sft

    gen = train_sft(
        TaskIndex.load(root / "index"),
        base_model="tiny",
        max_steps=2,
        batch_size=2,
        k=2,
        val_fraction=0,
        progress=True,
        device="cpu",
    )
    out = capsys.readouterr()
    assert "loss" not in out.out and "{" not in out.out, out.out
    assert "2/2" in out.err  # the progress bar
    assert any("loss" in h for h in gen.history_)


def test_train_sft_text_summary_is_readable(root, tmp_path):
    result = runner.invoke(
        app,
        [
            "train",
            "sft",
            "--index",
            str(root / "index"),
            "--out",
            str(tmp_path / "s"),
            "--base-model",
            "tiny",
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--k",
            "1",
            "--val-fraction",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "{" not in result.stdout and "train loss" in result.stdout
    assert "n trainable params" in result.stdout
