"""The ``ragim`` command line.

    ragim demo | index build | index search | generate | explain
    ragim predict | score | adapt | export          (validate a model on local patients)
    ragim train {attention,sft,reward,dpo,grpo} | evaluate | bench

Every command that reports results accepts ``--json`` for machine-readable output. Tables
are sorted and fit the terminal; progress bars appear only on a terminal; ``--quiet``
(``ragim -q ...`` or after a command) silences progress and stage messages. Errors are one
line and exit code 2 (with ``--json``, also ``{"error": ...}`` on stdout). The verbs of
local validation live in :mod:`ragim.cli_workflow`, the shared output helpers in
:mod:`ragim.cli_common`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field, make_dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ragim import cli_workflow
from ragim.cli_common import (
    QUIET,
    SHOWN_WARNINGS,
    AsJson,
    CsvOptions,
    FolderOptions,
    OverwriteFile,
    OverwriteOut,
    OverwriteSave,
    Quiet,
    check_dataset_options,
    check_k,
    check_positive,
    echo_json,
    exclude_tasks,
    exclusion_text,
    load_dataset,
    one_line,
    one_line_warnings,
    option_groups,
    parse_exclusions,
    print_global,
    print_local,
    print_provenance,
    print_table,
    refuse_to_replace,
    setup,
    short,
    silence_library_progress,
    warn,
)
from ragim.errors import ArtifactError, RagimError, ValidationError

app = typer.Typer(
    help="RAG-IM: retrieval-augmented generation of interpretable clinical models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
index_app = typer.Typer(help="Build and query task indices.", no_args_is_help=True)
train_app = typer.Typer(help="Train generators.", no_args_is_help=True)
app.add_typer(index_app, name="index")
app.add_typer(train_app, name="train")

# Options shared by `ragim index build` and `ragim evaluate`.
_DatasetName = Annotated[
    str, typer.Option(help="heart-disease | colon-cancer | synthetic | procedure | DIR")
]
_NTasks = Annotated[int | None, typer.Option(help="family size for synthetic/procedure")]
_Embedder = Annotated[
    str,
    typer.Option(
        help="description embedder: minilm (bundled, offline) | hashing (fast, no model) | a "
        "local sentence-transformers folder"
    ),
]
# ... by `ragim train sft` and `ragim generate`.
_SavedIndex = Annotated[Path, typer.Option("--index", help="a saved index")]


def _version(value: bool) -> None:
    if value:
        from ragim import __version__

        typer.echo(f"ragim {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
    quiet: Quiet = False,
):
    """RAG-IM: retrieval-augmented generation of interpretable clinical models."""
    QUIET["on"] = quiet
    SHOWN_WARNINGS.clear()
    if quiet or not sys.stderr.isatty():
        silence_library_progress()


# ---------------------------------------------------------------------- index
@index_app.command("build")
@option_groups
def index_build(
    dataset: _DatasetName = "heart-disease",
    out: Annotated[Path, typer.Option(help="where to save the index")] = Path(
        "indices/heart-disease"
    ),
    overwrite: OverwriteOut = False,
    model: Annotated[str, typer.Option(help="logistic | gam")] = "logistic",
    embedder: _Embedder = "minilm",
    index: Annotated[str, typer.Option(help="auto | Flat | a FAISS factory string")] = "auto",
    n_tasks: _NTasks = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            help="leave out the tasks whose metadata KEY equals VALUE, e.g. site=Switzerland, "
            "or a task by id with task_id=ID (and the tasks sharing its patients); repeatable: "
            "a task is left out when ANY of them matches (recorded in the index's config.json)"
        ),
    ] = None,
    folder: FolderOptions = FolderOptions(),
    seed: int = 0,
    quiet: Quiet = False,
    as_json: AsJson = False,
):
    """Fit one interpretable model per task, embed the descriptions, save a FAISS index."""
    from ragim.index import TaskIndex

    progress = setup(as_json, quiet)
    exclusions = parse_exclusions(exclude or [])
    check_dataset_options(dataset, n_tasks=n_tasks, folder=folder)
    refuse_to_replace(out, overwrite)  # after the checks of the options, before reading data
    tasks = load_dataset(dataset, n_tasks=n_tasks, seed=seed, folder=folder)
    n_excluded, shared = 0, []
    if exclusions:
        left = exclude_tasks(tasks, exclusions)
        tasks, n_excluded, shared = left.tasks, left.n_excluded, left.sharing_patients
        if left.kept_sharing:
            some = ", ".join(left.kept_sharing[:3]) + (" ..." if len(left.kept_sharing) > 3 else "")
            warn(
                f"{len(left.kept_sharing)} kept task(s) share patients with the tasks left out "
                f"({some}); to hold those patients out, --exclude task_id=ID each of them too"
            )
    with one_line_warnings() as caught:
        idx = TaskIndex.build(tasks, model=model, embedder=embedder, index=index, progress=progress)
        caught[:] = [w for w in caught if "left out of the index" not in str(w.message)]
    skipped = getattr(idx, "skipped", {})
    if skipped:
        names = ", ".join(list(skipped)[:3]) + (" ..." if len(skipped) > 3 else "")
        warn(
            f"{len(skipped)} task(s) could not be fitted and are not in the index ({names}); "
            "--json lists the reasons"
        )
    idx.config.excluded = exclusions
    idx.save(out)
    summary = {
        "path": str(out),
        "n_tasks": len(idx),
        "model": model,
        "faiss": idx.config.factory,
        "skipped": skipped,
        "excluded": exclusions,
        "n_excluded": n_excluded,
        "sharing_patients": shared,
    }
    if as_json:
        echo_json(summary)
    else:
        said = (
            f"; left out {n_excluded} task(s) with {exclusion_text(exclusions)}"
            if exclusions
            else ""
        )
        if shared:
            some = ", ".join(shared[:3]) + (" ..." if len(shared) > 3 else "")
            said += f" and {len(shared)} sharing their patients ({some})"
        typer.echo(f"saved {idx!r} to {out}{said}")


@index_app.command("search")
def index_search(
    path: Annotated[Path, typer.Argument(help="a saved index")],
    query: Annotated[str, typer.Argument(help="a task description")],
    k: Annotated[int, typer.Option("-k", help="neighbours")] = 5,
    quiet: Quiet = False,
    as_json: AsJson = False,
):
    """Find the indexed tasks most similar to a description."""
    from ragim.index import TaskIndex

    check_k(k)
    setup(as_json, quiet)
    hits = TaskIndex.load(path).search(query, k)
    if as_json:
        echo_json([{k_: v for k_, v in h.to_dict().items() if k_ != "params"} for h in hits])
        return
    print_table(
        [(f"{h.score:.3f}", h.task_id, short(h.description, 160)) for h in hits],
        [("score", "right"), "task_id", "description"],
        caption="most similar first (cosine similarity)",
    )


def _load_generator(path: Path, *, dtype: str | None = None):
    """Open a saved generator (statistical, attention, LM or rag-im-2024) by its manifest's
    format; ``dtype`` (``--dtype``) is the LM generator's weights' type and refused for the
    others."""
    from ragim.io import artifact_format

    fmt = artifact_format(path)  # None: the load below says what is wrong
    generators = (
        "ragim.statistical-generator",
        "ragim.attention-generator",
        "ragim.lm-generator",
        "ragim.rag-im-2024-generator",
    )
    if fmt is not None and fmt not in generators:
        from ragim.io import describe_kind

        raise ArtifactError(
            f"--generator {path} holds {describe_kind(fmt)}, not a generator; pass a saved "
            f"generator: {', '.join(describe_kind(g) for g in generators)}"
        )
    if fmt == "ragim.lm-generator":
        from ragim.generate.lm import LMGenerator

        return LMGenerator.load(path, dtype=dtype)
    if dtype is not None and fmt in generators:  # another kind of generator
        raise typer.BadParameter(f"--dtype works only with an LM generator; {path} is not one")
    if fmt == "ragim.statistical-generator":
        from ragim.generate.statistical import StatisticalGenerator

        return StatisticalGenerator.load(path)
    if fmt == "ragim.rag-im-2024-generator":
        from ragim.generate.ragim2024 import RagIm2024Generator

        return RagIm2024Generator.load(path)
    from ragim.generate.attention import AttentionGenerator

    return AttentionGenerator.load(path)


@train_app.command("attention")
def train_attention(
    index_path: Annotated[Path, typer.Option("--index", help="a saved index (with its task rows)")],
    out: Annotated[Path, typer.Option(help="where to save the generator")] = Path(
        "generators/attention"
    ),
    overwrite: OverwriteOut = False,
    max_epochs: Annotated[
        int, typer.Option(help="upper bound on epochs (early stopping on validation tasks)")
    ] = 300,
    k: Annotated[int, typer.Option("-k", help="neighbours per task")] = 10,
    seed: int = 0,
    quiet: Quiet = False,
    as_json: AsJson = False,
):
    """Train the RAG-IM attention hypernetwork episodically on an index."""
    from ragim.generate.attention import AttentionGenerator
    from ragim.index import TaskIndex

    progress = setup(as_json, quiet)
    refuse_to_replace(out, overwrite)
    index = TaskIndex.load(index_path)
    gen = AttentionGenerator(max_epochs=max_epochs, k=k, seed=seed).fit(index, progress=progress)
    gen.save(out)
    summary = {
        "path": str(out),
        "epochs": len(gen.history_),
        "seconds": round(gen.train_seconds_, 2),
        "initial_val_loss": gen.initial_val_loss_,
        "best_val_loss": gen.best_val_loss_,
    }
    if as_json:
        echo_json(summary)
        return
    stopped = (
        " (stopped early: the validation loss stopped improving)"
        if len(gen.history_) < max_epochs
        else ""
    )
    typer.echo(
        f"saved the attention generator to {out}\n"
        f"  trained on   {len(index)} tasks, {k} neighbours each\n"
        f"  epochs       {len(gen.history_)} of at most {max_epochs}{stopped}\n"
        f"  validation   loss {gen.initial_val_loss_:.4f} before training -> "
        f"{gen.best_val_loss_:.4f} best "
        "(log-loss per row on held-out tasks)\n"
        f"  time         {gen.train_seconds_:.1f} s"
    )


def _history_last(history: list[dict], key: str, stage: str | None = None):
    """The last logged value of ``key`` (optionally of one training stage), or None."""
    vals = [
        h[key] for h in history if key in h and (stage is None or h.get("stage", "sft") == stage)
    ]
    return vals[-1] if vals else None


def _plain(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_plain(x)}" for k, x in v.items())
    return "-" if v is None else str(v)


def _load_lm(path: Path):
    from ragim.generate.lm import LMGenerator

    return LMGenerator.load(path)


def _save_trained(
    model,
    stage: str,
    out: Path,
    base_model: str,
    t0: float,
    as_json: bool,
    *,
    note: str = "",
    **fields,
) -> None:
    """Save ``model``, trained by the `ragim train` ``stage``, to ``out`` and report it: the
    stage, where it saved, the base model, the stage's own ``fields`` and the seconds since
    ``t0`` (the save included), as JSON or as ``saved <model> to <out><note>`` over a table."""
    from ragim.io import json_safe

    model.save(out)
    seconds = round(time.perf_counter() - t0, 2)
    summary = json_safe(
        {"stage": stage, "path": str(out), "base_model": base_model, **fields, "seconds": seconds}
    )
    if as_json:
        echo_json(summary)
        return
    width = max(len(k) for k in summary)
    typer.echo(
        f"saved {model!r} to {out}{note}\n"
        + "\n".join(f"  {k.replace('_', ' '):<{width}}  {_plain(v)}" for k, v in summary.items())
    )


def _optimiser(max_steps: int, batch_size: int, learning_rate: float) -> dict[str, Any]:
    """The optimiser options of every `ragim train` LM stage, as its trainer's keywords (in the
    order its check_positive names them)."""
    return {"max_steps": max_steps, "batch_size": batch_size, "learning_rate": learning_rate}


def _generator_and_pairs(
    generator_path: Path,
    index_path: Path,
    pair_options: _PairOptions,
    seed: int,
    progress: bool,
    for_dpo: bool = False,
):
    """The saved LM generator and the saved index, checked to fit each other (``for_dpo``: and
    the generator one DPO can train); the preference pairs (a clinician's JSONL file, or built
    from the generator's samples on the index); and the ``time.perf_counter()`` taken before
    the pairs, as ``(generator, index, pairs, t0)``."""
    from ragim.generate.base import advice_for_cli
    from ragim.index import TaskIndex
    from ragim.lm.pairs import check_pair_names, load_preferences
    from ragim.params import param_names
    from ragim.train.preferences import build_preference_pairs

    if pair_options.pairs_file is not None:  # refused before anything is loaded
        sampling = [
            flag
            for flag, name in (
                ("--n-candidates", "n_candidates"),
                ("--pairs", "pairs"),
                ("--min-margin", "min_margin"),
            )
            if getattr(pair_options, name) != getattr(_PairOptions, name)
        ]
        if sampling:
            raise typer.BadParameter(
                f"{', '.join(sampling)} choose how pairs are sampled from the generator; with "
                "--pairs-file the file's pairs are used as they are, so drop "
                f"{'it' if len(sampling) == 1 else 'them'} (or drop --pairs-file)"
            )
    gen, index = _load_lm(generator_path), TaskIndex.load(index_path)
    if for_dpo and gen.config.residual:  # refused before any pair is sampled
        raise typer.BadParameter(
            f"--generator {generator_path} writes residual answers (trained with --residual); "
            "DPO cannot train it, since preference pairs hold final models: use ragim train grpo"
        )
    gen.check_index(index)
    with advice_for_cli(index_path):  # refit advice as a ragim command, not Python
        gen.check_index_unchanged(index)
    t0 = time.perf_counter()
    pairs_file, pairs = pair_options.pairs_file, pair_options.pairs
    if pairs_file is not None:
        data = load_preferences(pairs_file)
        check_pair_names(
            data, param_names(index.model, index.schema), where=f"the pairs in {pairs_file}"
        )
        return gen, index, data, t0
    if pairs not in ("best_worst", "all"):
        raise typer.BadParameter(f"--pairs must be best_worst or all, got {pairs!r}")
    data = build_preference_pairs(
        gen,
        index,
        n_candidates=pair_options.n_candidates,
        min_margin=pair_options.min_margin,
        pairs=pairs,
        seed=seed,
        progress=progress,
    )
    return gen, index, data, t0


def _check_pair_options(pair_options: _PairOptions) -> None:
    """Refuse, before anything is loaded, sampling options a pair cannot come from: fewer than
    two candidates per task."""
    if pair_options.pairs_file is None and pair_options.n_candidates < 2:
        raise typer.BadParameter(
            f"--n-candidates must be at least 2 (a pair compares two candidates), got "
            f"{pair_options.n_candidates}"
        )


# Options shared by `ragim train reward|dpo|grpo`.
_SavedGenerator = Annotated[
    Path, typer.Option("--generator", help="a saved LM generator (usually SFT'd)")
]
_IndexWithRows = Annotated[Path, typer.Option("--index", help="a saved index with its task rows")]
# ... by `ragim train reward|dpo` (the preference pairs).
_PairsFile = Annotated[
    Path | None,
    typer.Option(
        "--pairs-file", help="preference JSONL (docs/training.md) instead of sampled pairs"
    ),
]
_NCandidates = Annotated[int, typer.Option(help="candidates sampled per task for the pairs")]
_PairsMode = Annotated[str, typer.Option(help="best_worst | all")]
_MinMargin = Annotated[float, typer.Option(help="smallest reward gap that makes a pair (nats/row)")]
_PairsPerStep = Annotated[int, typer.Option(help="pairs per step")]


@dataclass(frozen=True)
class _PairOptions:
    """Where the preference pairs of `ragim train reward|dpo` come from: a clinician's file, or
    the generator's own samples (an option group, :func:`ragim.cli_common.option_groups`)."""

    pairs_file: _PairsFile = None
    n_candidates: _NCandidates = 4
    pairs: _PairsMode = "best_worst"
    min_margin: _MinMargin = 0.05


# ... and by `ragim train sft` (whose learning-rate help is its own; LoRA rank: sft, reward).
_MaxSteps = Annotated[int, typer.Option(help="optimiser steps")]
_LearningRate = Annotated[float, typer.Option(help="AdamW rate")]
_LoraRank = Annotated[int, typer.Option(help="LoRA rank (alpha = 2 x rank)")]
_JsonSummary = Annotated[bool, typer.Option("--json", help="print a JSON summary")]
_HeldoutFraction = Annotated[
    float,
    typer.Option(
        help="share of each task's rows the rewards score; SFT with --targets posterior leaves "
        "them out of its targets (give SFT and GRPO the same value and --seed)"
    ),
]


@dataclass(frozen=True)
class _TrainRun:
    """The options every `ragim train sft|reward|dpo|grpo` ends with (an option group,
    :func:`ragim.cli_common.option_groups`)."""

    seed: int = 0
    mixed_precision: Annotated[
        str,
        typer.Option(
            help="auto (bf16 autocast on GPUs that support it), bf16 (on a CPU too: SFT steps "
            "about 1.6x and GRPO steps about 1.3x faster on CPUs with bfloat16 units) or no "
            "(float32 throughout)"
        ),
    ] = "auto"
    activation_checkpointing: Annotated[
        bool,
        typer.Option(
            help="recompute activations in the backward pass: far less memory for long prompts "
            "(procedure-sized SFT, heart-sized GRPO), more time per step"
        ),
    ] = False
    quiet: Quiet = False
    as_json: _JsonSummary = False

    @property
    def compute(self) -> dict[str, Any]:
        """The training-config fields these options set: ``mixed_precision`` and
        ``activation_checkpointing``."""
        return {
            "mixed_precision": self.mixed_precision,
            "activation_checkpointing": self.activation_checkpointing,
        }

    def start(self, dest) -> dict[str, Any]:
        """Before any work: refuse an unknown ``--mixed-precision``, silence library bars unless
        wanted, and refuse to write over ``dest.out`` unless ``dest.overwrite`` (a
        :func:`_saved_to` group); returns the keywords every trainer takes from the run,
        ``seed`` and ``progress`` (whether to show progress bars)."""
        from ragim.train.trainer import check_mixed_precision

        try:
            check_mixed_precision(self.mixed_precision, "--mixed-precision")
        except ValidationError as exc:
            raise typer.BadParameter(str(exc)) from None
        progress = setup(self.as_json, self.quiet)
        refuse_to_replace(dest.out, dest.overwrite)
        return {"seed": self.seed, "progress": progress}


def _saved_to(what: str, default: str) -> type:
    """The option group of a `ragim train` command's ``--out`` (where to save ``what``; the
    folder ``default`` unless given) and ``--overwrite``."""
    out = Annotated[Path, typer.Option(help=f"where to save {what}")]
    fields = [("out", out, field(default=Path(default))), ("overwrite", OverwriteOut, False)]
    return make_dataclass("SavedTo", fields, frozen=True)


_SftOut = _saved_to("the LM generator", "generators/lm-sft")
_RewardOut = _saved_to("the reward model", "generators/reward-model")
_DpoOut = _saved_to("the DPO'd generator", "generators/lm-dpo")
_GrpoOut = _saved_to("the GRPO'd generator", "generators/lm-grpo")


@train_app.command("sft")
@option_groups
def train_sft_cmd(
    index_path: _SavedIndex,
    dest: _SftOut,
    base_model: Annotated[
        str, typer.Option(help="tiny | smollm2-135m | a local model directory")
    ] = "smollm2-135m",
    max_steps: _MaxSteps = 30,
    batch_size: Annotated[int, typer.Option(help="examples per step")] = 4,
    learning_rate: Annotated[float, typer.Option(help="AdamW rate of the LoRA weights")] = 2e-4,
    k: Annotated[
        int,
        typer.Option(
            "-k", "--k", help="neighbours per prompt (0: none, only the population model/prior)"
        ),
    ] = 5,
    lora_r: _LoraRank = 8,
    val_fraction: Annotated[
        float, typer.Option(help="share of tasks held out for the validation loss")
    ] = 0.2,
    population: Annotated[
        bool,
        typer.Option(
            help="show the population model (row-weighted mean of the other "
            "tasks' parameters) in every prompt"
        ),
    ] = True,
    statistical_prior: Annotated[
        bool,
        typer.Option(
            help="show the statistical generator's model for the target (and its SDs) in "
            "every prompt, for the LM to correct"
        ),
    ] = False,
    residual: Annotated[
        bool,
        typer.Option(
            help="the LM writes each parameter's change from the statistical prior (0 keeps "
            "it) instead of the parameter; needs --statistical-prior"
        ),
    ] = False,
    answer_format: Annotated[
        str,
        typer.Option(
            help="json (name-keyed object) or compact (values alone in schema order: shorter "
            "prompts and answers, about 2x faster generation with --decoder llguidance)"
        ),
    ] = "json",
    decoder: Annotated[
        str,
        typer.Option(
            help="constrained decoder it generates with: builtin (one prompt at a time) or "
            "llguidance (batches of targets, the shared prompt prefix computed once)"
        ),
    ] = "builtin",
    targets: Annotated[
        str,
        typer.Option(
            help="what each answer imitates: fit (the task's stored fit on all its rows) or "
            "posterior (its MAP fit under the prompt's prior, leaving out the rows GRPO's "
            "rewards score at the same seed)"
        ),
    ] = "fit",
    heldout_fraction: _HeldoutFraction = 0.5,
    run: _TrainRun = _TrainRun(),
):
    """Supervised fine-tuning (behaviour cloning) of the LM generator with LoRA: train_sft."""
    common = run.start(dest)
    from ragim.index import TaskIndex
    from ragim.train.sft import train_sft

    check_k(k, "--k", allow_zero=True)  # LMConfig(k=0): prompts with no neighbours
    steps = _optimiser(max_steps, batch_size, learning_rate)
    check_positive(**steps, lora_r=lora_r)
    if residual and not statistical_prior:
        raise typer.BadParameter(
            "--residual needs --statistical-prior (a residual answer is a change to the "
            "statistical prior in the prompt)"
        )
    index = TaskIndex.load(index_path)
    t0 = time.perf_counter()
    gen = train_sft(
        index,
        base_model=base_model,
        **steps,
        val_fraction=val_fraction,
        targets=targets,
        heldout_fraction=heldout_fraction,
        **run.compute,
        **common,
        generator_config={
            "k": k,
            "lora_r": lora_r,
            "lora_alpha": 2 * lora_r,
            "seed": run.seed,
            "population": population,
            "statistical_prior": statistical_prior,
            "residual": residual,
            "answer_format": answer_format,
            "decoder": decoder,
        },
    )
    _save_trained(
        gen,
        "sft",
        dest.out,
        base_model,
        t0,
        run.as_json,
        max_steps=max_steps,
        targets=targets,
        n_train_tasks=len(gen.train_task_ids_),
        n_val_tasks=len(gen.val_task_ids_),
        train_loss=_history_last(gen.history_, "loss"),
        eval_loss=_history_last(gen.history_, "eval_loss"),
        n_trainable_params=int(gen.n_trainable_params_),
    )


@train_app.command(
    "reward",
    help=(
        "Preference pairs from the generator, then a Bradley-Terry reward model; prints held-out "
        "pairwise accuracy."
    ),
)
@option_groups
def train_reward_cmd(
    generator_path: _SavedGenerator,
    index_path: _IndexWithRows,
    dest: _RewardOut,
    pair_options: _PairOptions = _PairOptions(),
    save_pairs: Annotated[
        Path | None, typer.Option(help="also write the pairs as JSONL here")
    ] = None,
    max_steps: _MaxSteps = 50,
    batch_size: _PairsPerStep = 4,
    learning_rate: _LearningRate = 1e-4,
    lora_r: _LoraRank = 8,
    val_fraction: Annotated[
        float, typer.Option(help="share of tasks whose pairs are held out")
    ] = 0.2,
    run: _TrainRun = _TrainRun(),
):
    common = run.start(dest)
    refuse_to_replace(save_pairs, dest.overwrite, "--save-pairs")
    from ragim.lm.pairs import pair_rows, save_preferences
    from ragim.params import param_names
    from ragim.train.reward import (
        RewardModelTrainingConfig,
        pair_groups,
        split_pairs_by_task,
        train_reward_model,
    )

    steps = _optimiser(max_steps, batch_size, learning_rate)
    check_positive(n_candidates=pair_options.n_candidates, **steps, lora_r=lora_r)
    _check_pair_options(pair_options)
    # the run's settings are checked before the pairs are sampled (minutes on a real model)
    config = RewardModelTrainingConfig(
        **steps,
        val_fraction=val_fraction,
        seed=common["seed"],
        **run.compute,
    )
    gen, index, data, t0 = _generator_and_pairs(generator_path, index_path, pair_options, **common)
    if save_pairs is not None:
        save_preferences(data, save_pairs)
    # the trainer's own split, made here so that the summary can count its tasks (a pair
    # without task_id counts by its prompt)
    train_rows, val_rows = split_pairs_by_task(
        pair_rows(data), config.val_fraction, config.seed, index=index
    )
    rm = train_reward_model(
        train_rows,
        config,
        val_pairs=val_rows,
        base_model=gen.config.base_model,
        lora_r=lora_r,
        progress=common["progress"],
        device=gen.config.device,
        param_names=param_names(index.model, index.schema),
        answer_format=gen.answer_format(param_names(index.model, index.schema)),
        generator=gen,
    )
    _save_trained(
        rm,
        "reward",
        dest.out,
        rm.config.base_model,
        t0,
        run.as_json,
        note=f" (pairwise accuracy on held-out tasks' pairs: {rm.val_accuracy_:.3f})",
        n_pairs=len(data),
        n_train_tasks=len(set(pair_groups(train_rows))),
        n_val_tasks=len(set(pair_groups(val_rows))),
        n_val_pairs=len(val_rows),
        val_pairwise_accuracy=rm.val_accuracy_,
        train_loss=_history_last(rm.history_, "loss"),
    )


@train_app.command("dpo")
@option_groups
def train_dpo_cmd(
    generator_path: _SavedGenerator,
    index_path: _IndexWithRows,
    dest: _DpoOut,
    pair_options: _PairOptions = _PairOptions(),
    beta: Annotated[float, typer.Option(help="DPO temperature")] = 0.1,
    max_steps: _MaxSteps = 50,
    batch_size: _PairsPerStep = 4,
    learning_rate: _LearningRate = 5e-5,
    run: _TrainRun = _TrainRun(),
):
    """Preference pairs from the generator, then DPO on its LoRA adapter."""
    common = run.start(dest)
    from ragim.train.rl import train_dpo

    steps = _optimiser(max_steps, batch_size, learning_rate)
    check_positive(n_candidates=pair_options.n_candidates, beta=beta, **steps)
    _check_pair_options(pair_options)
    gen, index, data, t0 = _generator_and_pairs(
        generator_path, index_path, pair_options, **common, for_dpo=True
    )
    dpo = train_dpo(gen, data, index=index, beta=beta, **steps, **run.compute, **common)
    _save_trained(
        dpo,
        "dpo",
        dest.out,
        dpo.config.base_model,
        t0,
        run.as_json,
        n_pairs=len(data),
        max_steps=max_steps,
        train_loss=_history_last(dpo.history_, "loss", "dpo"),
        reward_accuracy=_history_last(dpo.history_, "rewards/accuracies", "dpo"),
    )


def _reward_weights(text: str) -> dict[str, float]:
    out = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, w = part.partition("=")
        if name.strip() in out:
            raise typer.BadParameter(
                f"--rewards names {name.strip()!r} twice in {text!r}; give each reward once"
            )
        try:
            out[name.strip()] = float(w) if sep else 1.0
        except ValueError:
            raise typer.BadParameter(
                f"--rewards must look like 'log_likelihood=1,validity=1', got {text!r}"
            ) from None
    if not out:
        raise typer.BadParameter("--rewards needs at least one reward name")
    return out


@train_app.command(
    "grpo",
    help=(
        "GRPO with verifiable rewards (held-out log-likelihood by default) on the generator's LoRA "
        "adapter."
    ),
)
@option_groups
def train_grpo_cmd(
    generator_path: _SavedGenerator,
    index_path: _IndexWithRows,
    dest: _GrpoOut,
    rewards: Annotated[
        str, typer.Option(help="name=weight,... (log_likelihood, auroc, validity, sparsity, sign)")
    ] = "log_likelihood=1",
    sign_constraints: Annotated[
        Path | None,
        typer.Option(
            help="expected signs for the 'sign' reward: a JSON object {\"age\": 1} or a "
            "term,sign CSV (docs/rewards.md)"
        ),
    ] = None,
    num_generations: Annotated[int, typer.Option(help="answers sampled per prompt (>= 2)")] = 4,
    max_steps: _MaxSteps = 50,
    batch_size: Annotated[int, typer.Option(help="prompts per step")] = 1,
    learning_rate: _LearningRate = 5e-5,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 0.8,
    constrained: Annotated[
        bool,
        typer.Option(
            "--constrained/--unconstrained",
            help="sample the answers under the answer grammar (every one parses and scores) "
            "or plainly (malformed answers get the reward floor)",
        ),
    ] = True,
    beta: Annotated[
        float, typer.Option(help="KL coefficient towards the starting adapter (0: none)")
    ] = 0.0,
    heldout_fraction: _HeldoutFraction = 0.5,
    run: _TrainRun = _TrainRun(),
):
    common = run.start(dest)
    from ragim.generate.base import advice_for_cli
    from ragim.index import TaskIndex
    from ragim.train.rewards import VerifiableRewardConfig
    from ragim.train.rl import GRPOTrainingConfig, train_grpo

    steps = _optimiser(max_steps, batch_size, learning_rate)
    check_positive(**steps, temperature=temperature)
    config = VerifiableRewardConfig(
        weights=_reward_weights(rewards),
        sign_constraints=None if sign_constraints is None else str(sign_constraints),
    )
    if "sign" in config.weights and sign_constraints is None:
        raise typer.BadParameter(
            "--rewards sign=... needs --sign-constraints PATH (the expected sign of each term: "
            'a JSON object {"age": 1} or a term,sign CSV)'
        )
    if sign_constraints is not None:
        if "sign" not in config.weights:
            raise typer.BadParameter(
                "--sign-constraints is read by the 'sign' reward only; add sign=WEIGHT to --rewards"
            )
        config.build()  # reads the file: a bad one is refused before anything is loaded
    grpo = GRPOTrainingConfig(  # the run's settings, checked before anything is loaded
        rewards=config,
        num_generations=num_generations,
        **steps,
        temperature=temperature,
        constrained=constrained,
        beta=beta,
        heldout_fraction=heldout_fraction,
        seed=common["seed"],
        **run.compute,
    )
    gen, index = _load_lm(generator_path), TaskIndex.load(index_path)
    with advice_for_cli(index_path):  # refit advice as a ragim command, not Python
        gen.check_index(index)
        gen.check_index_unchanged(index)
    t0 = time.perf_counter()
    rl = train_grpo(gen, index, grpo, progress=common["progress"])
    log = [h for h in rl.history_ if h.get("stage") == "grpo" and "reward" in h]
    zero = [h["frac_reward_zero_std"] for h in log if "frac_reward_zero_std" in h]
    _save_trained(
        rl,
        "grpo",
        dest.out,
        rl.config.base_model,
        t0,
        run.as_json,
        max_steps=max_steps,
        rewards=config.weights,
        constrained=constrained,
        reward_first=log[0]["reward"] if log else None,
        reward_last=log[-1]["reward"] if log else None,
        mean_frac_reward_zero_std=sum(zero) / len(zero) if zero else None,
    )


@app.command("generate")
def generate(
    description: Annotated[str, typer.Argument(help="the new task's clinical description")],
    index_path: _SavedIndex,
    generator_path: Annotated[
        Path | None,
        typer.Option(
            "--generator",
            help="a saved generator (default: the statistical generator, fitted on the index)",
        ),
    ] = None,
    k: Annotated[
        int | None,
        typer.Option(
            "-k",
            help="neighbours (the statistical generator learns from every task and lists the "
            "k that weigh most in its whole stack's baseline risk as its provenance)",
        ),
    ] = None,
    save: Annotated[
        Path | None, typer.Option(help="save the generated parameters as an artifact")
    ] = None,
    overwrite: OverwriteSave = False,
    outcome_name: Annotated[
        str | None,
        typer.Option(
            "--outcome-name",
            help='what the model predicts, in words ("coronary artery disease"); saved with the '
            "model and shown in its tables and plots",
        ),
    ] = None,
    top: Annotated[int | None, typer.Option(help="show only the largest TOP terms")] = None,
    rerank: Annotated[
        str | None, typer.Option(help="LM generator only: logprob | reward_model (best-of-n)")
    ] = None,
    reward_model: Annotated[
        Path | None,
        typer.Option("--reward-model", help="a saved reward model (with --rerank reward_model)"),
    ] = None,
    num_candidates: Annotated[
        int | None,
        typer.Option(
            "-n", "--num-candidates", help="candidates to rerank (default 8 with a reward model)"
        ),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            help="LM generator only: sampling temperature of the candidates (default: the "
            "generator's, 0 = greedy; 0.8 with a reward model); -n > 1 needs one > 0"
        ),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            help="LM generator only: its weights' type, float32 or bfloat16 (about twice as "
            "fast on CPUs with bfloat16 units; default: the saved generator's)"
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="refuse (exit 2) when the description is outside the index's domain, instead of "
            "warning",
        ),
    ] = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
):
    """Generate an interpretable model for a task description (zero-shot).

    Warns when the description is outside what the index covers (its nearest indexed task is
    less similar than 99% of the index's own tasks are to theirs); --strict refuses then."""
    from ragim.domain import check
    from ragim.estimator import neighbor_mean
    from ragim.index import TaskIndex

    check_k(k, allow_zero=True)  # 0: an LM generator's prompt with no neighbours (refused below)
    check_positive(num_candidates=num_candidates, top=top)
    progress = setup(as_json, quiet)
    lm_options = {
        key: v
        for key, v in (
            ("rerank", rerank),
            ("reward_model", reward_model),
            ("num_candidates", num_candidates),
            ("temperature", temperature),
        )
        if v is not None
    }
    if dtype is not None:  # checked before the index or generator is opened
        from ragim.generate.lm import check_dtype

        try:
            check_dtype(dtype, "--dtype")
        except ValidationError as exc:
            raise typer.BadParameter(str(exc)) from None
    if (lm_options or dtype is not None) and generator_path is None:
        raise typer.BadParameter(
            "--rerank, --reward-model, --num-candidates, --temperature and --dtype need "
            "--generator (an LM generator)"
        )
    if rerank == "reward_model" and reward_model is None:
        raise typer.BadParameter("--rerank reward_model needs --reward-model PATH (a saved one)")
    if reward_model is not None and rerank != "reward_model":
        raise typer.BadParameter("--reward-model is used only with --rerank reward_model")
    if k == 0 and generator_path is None:
        raise typer.BadParameter(
            "-k 0 (no neighbours) is for an LM generator's prompt (--generator); give -k 1 or more"
        )
    refuse_to_replace(save, overwrite, "--save")
    index = TaskIndex.load(index_path)
    if strict:  # refuse before fitting or loading anything: coverage needs only the index
        from ragim.domain import coverage

        check(coverage(index, description), description=description, strict=True)
    if generator_path is not None:
        gen = _load_generator(generator_path, dtype=dtype)
        if k == 0 and getattr(gen, "generator_name", None) != "lm":
            raise typer.BadParameter(
                "-k 0 (no neighbours) is for an LM generator's prompt; give -k 1 or more"
            )
        if lm_options and getattr(gen, "generator_name", None) != "lm":
            raise typer.BadParameter(
                "--rerank, --reward-model, --num-candidates and --temperature work only with an "
                "LM generator"
            )
        from ragim.generate.base import advice_for_cli

        with advice_for_cli(index_path):  # refit advice as a ragim command, not Python
            params = gen.generate_params(description, index, k=k, **lm_options)
    else:
        from ragim.generate.statistical import default_generator

        gen = default_generator(index, progress=progress)
        if gen is not None:
            params = gen.generate_params(description, index, k=k)
        else:
            warn(
                "the index holds no task rows, so the default (statistical) generator cannot be "
                "fitted; "
                "using the similarity-weighted neighbour mean"
            )
            params = neighbor_mean(index, description, k=10 if k is None else k)
    meta = {"description": description}
    if outcome_name is not None:
        if not outcome_name.strip():
            raise typer.BadParameter("--outcome-name must not be empty")
        meta["outcome"] = outcome_name.strip()
    if index.config.excluded:
        meta["index_excluded"] = index.config.excluded
    params = params.replace(metadata=meta)
    with one_line_warnings():
        check(params, description=description, strict=strict)
    if save is not None:
        params.save(save)
    if as_json:  # the model's own JSON (with its schema: ModelParams.from_json reads it back)
        payload = params.to_dict()  # its warnings go in its metadata
        payload["metadata"] = {**payload.get("metadata", {}), "warnings": list(SHOWN_WARNINGS)}
        echo_json(payload, with_warnings=False)
        return
    from ragim.models import model_from_params

    expl = model_from_params(params).explain()
    print_global(expl, top=top)
    typer.echo("")
    print_provenance(list(expl.provenance))
    if expl.coverage:
        from ragim.explain import coverage_summary

        typer.echo(coverage_summary(expl.coverage))
    if save is not None:
        typer.echo(
            f"\nsaved to {save}; validate it on your own patients before any use: "
            f"ragim score {save} --rows FILE.csv --outcome COLUMN"
        )


@dataclass(frozen=True)
class _PatientRow:
    """The patient `ragim explain` explains, a row of a CSV file (none: the model globally);
    an option group (:func:`ragim.cli_common.option_groups`)."""

    rows: Annotated[Path | None, typer.Option(help="a CSV of patients; explains one of them")] = (
        None
    )
    row: Annotated[
        int | None, typer.Option(help="which row of --rows (0 = the first patient; default 0)")
    ] = None
    outcome: Annotated[
        str | None, typer.Option(help="the outcome column of --rows, if it has one (ignored)")
    ] = None
    patient_id: Annotated[
        str | None, typer.Option("--patient-id", help="the patient-id column of --rows")
    ] = None

    def check(self) -> None:
        """Refuse --row, --outcome and --patient-id without --rows (the patients to explain)."""
        if self.rows is not None:
            return
        named = (
            ("--row", self.row),
            ("--outcome", self.outcome),
            ("--patient-id", self.patient_id),
        )
        given = [o for o, v in named if v is not None]
        if given:
            raise typer.BadParameter(
                f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --rows FILE: "
                "the patients to explain"
            )


@app.command("explain")
@option_groups
def explain(
    params_path: Annotated[Path, typer.Argument(help="saved parameters (ragim generate --save)")],
    patient: _PatientRow = _PatientRow(),
    csv_options: CsvOptions = CsvOptions(),
    outcome_name: Annotated[
        str | None, typer.Option("--outcome-name", help="what the model predicts, in words")
    ] = None,
    top: Annotated[
        int | None, typer.Option(help="show only the largest TOP terms or features")
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="also show the missing-value indicator terms")
    ] = False,
    png: Annotated[Path | None, typer.Option(help="write the plot here")] = None,
    overwrite: OverwriteFile = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
):
    """Explain a saved model globally, or one patient with --rows (its predicted risk and why)."""
    from ragim.models import model_from_params
    from ragim.params import ModelParams

    check_positive(top=top)
    setup(as_json, quiet)
    refuse_to_replace(png, overwrite, "--png")
    if outcome_name is not None and not outcome_name.strip():
        raise typer.BadParameter("--outcome-name must not be empty")
    patient.check()
    rows, row = patient.rows, 0 if patient.row is None else patient.row
    if rows is None:
        model = model_from_params(ModelParams.load(params_path))
        expl = model.explain(outcome=outcome_name)
    else:  # the outcome is dropped unread: explaining needs no label
        _, model, data = cli_workflow.load_model_and_rows(
            params_path, rows, patient.outcome, patient.patient_id, csv_options, labelled=False
        )
        if not 0 <= row < len(data):
            raise typer.BadParameter(f"--row {row} is outside the {len(data)} rows of {rows}")
        from ragim.schema import rows_named

        with rows_named(f"row {row} of --rows {rows}"):
            expl = model.explain(data.X.iloc[[row]], outcome=outcome_name)
    if png is not None:
        expl.save_png(png, top=top if rows is None else (top or 12))
    if as_json:
        echo_json(expl.data())
    else:
        if expl.adaptation:  # an adapted model says so first: how, on how many rows
            typer.echo(expl.adaptation)
        if rows is not None:
            pid = f" (patient {data.ids.iloc[row]})" if data.ids is not None else ""
            typer.echo(f"row {row} of {rows}{pid}")
            print_local(expl, top=top)
        else:
            print_global(expl, top=top, missing=show_all)
            if expl.provenance:  # a generated model: the retrieved tasks that shaped it
                print_provenance(list(expl.provenance))
        # the coverage, marked as the zero-shot model's when the model was adapted since
        for line in expl.notes:
            if line != expl.adaptation:
                typer.echo(line)


@app.command("evaluate")
@option_groups
def evaluate_cmd(
    dataset: _DatasetName = "heart-disease",
    protocol: Annotated[
        str, typer.Option(help="leave-task-out | leave-group-out")
    ] = "leave-task-out",
    group: Annotated[
        str | None,
        typer.Option(
            help="metadata key for leave-group-out (default: site when the tasks have it, "
            "else group)"
        ),
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help="comma-separated method names (default: all)")
    ] = None,
    k_shots: Annotated[str, typer.Option(help="comma-separated k (0 = zero-shot)")] = "0",
    n_tasks: _NTasks = None,
    max_targets: Annotated[
        int | None, typer.Option(help="evaluate at most this many targets")
    ] = None,
    folds: int = 5,
    embedder: _Embedder = "minilm",
    folder: FolderOptions = FolderOptions(),
    seed: int = 0,
    quiet: Quiet = False,
    as_json: AsJson = False,
):
    """Zero-/few-shot evaluation against the baselines (macro mean with bootstrap 95% CI)."""
    from ragim import evaluate as ev
    from ragim.metrics import format_table, summarize, to_records

    progress = setup(as_json, quiet)
    check_positive(max_targets=max_targets)  # before the data are read
    if seed < 0:
        raise typer.BadParameter(f"--seed must be >= 0, got {seed}")
    tasks = load_dataset(dataset, n_tasks=n_tasks, seed=seed, folder=folder)
    try:
        ks = [int(k) for k in k_shots.split(",") if k.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"--k-shots must be comma-separated integers, got {k_shots!r}"
        ) from None
    if not ks or any(k < 0 for k in ks):
        raise typer.BadParameter(
            f"--k-shots needs at least one k >= 0 (0 = zero-shot), got {k_shots!r}"
        )
    if protocol == "leave-group-out":  # the tasks' "site" by default, else "group"
        group = ev.group_key(tasks, group, option="--group")
    common = dict(
        protocol=protocol,
        group=group,
        methods=[m.strip() for m in methods.split(",")] if methods else None,
        folds=folds,
        embedder=embedder,
        seed=seed,
        progress=progress,
        max_targets=max_targets,
    )
    few = [k for k in ks if k > 0]
    if few:  # the k-independent methods and zero-shot are scored too, at k_shot = 0
        per_task = ev.few_shot(tasks, k_shots=tuple(few), reference=0 in ks, **common)
    else:
        per_task = ev.zero_shot(tasks, **common)
    summary = summarize(per_task)
    if as_json:
        echo_json(to_records(summary))
    else:
        typer.echo(format_table(summary))
        if not quiet:  # what each fold's generator did (its stack weights): not a warning
            for line in per_task.attrs.get("info", []):
                typer.echo(f"note: {line}", err=True)


@app.command(
    "bench",
    help=(
        "Speed benchmarks; each reports ours vs a baseline measured in the same run, on equal "
        "threads."
    ),
)
def bench(
    name: Annotated[
        str,
        typer.Argument(
            help="fit | retrieval | generate | generate-statistical | lm | lm-throughput | all"
        ),
    ],
    n_tasks: Annotated[
        int | None,
        typer.Option(
            help="tasks (fit: 10000, retrieval: 100000, generate: 300, "
            "generate-statistical: 10000, lm: 3 queries, "
            "lm-throughput: 4 queries per schema)"
        ),
    ] = None,
    threads: Annotated[
        str | None,
        typer.Option(
            help="comma-separated thread counts, each used by both sides of "
            "every ratio (default: 1 and all CPUs; lm: 1)"
        ),
    ] = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
):
    from ragim import bench as b

    setup(as_json, quiet)

    if n_tasks is not None and n_tasks < 1:
        raise typer.BadParameter(f"--n-tasks must be at least 1, got {n_tasks}")
    counts = None
    if threads is not None:
        try:
            counts = [int(t) for t in threads.split(",")]
        except ValueError:
            counts = []
        if not counts or min(counts) < 1:
            raise typer.BadParameter(
                f"--threads must be positive integers separated by commas, got {threads!r}"
            )
    runners = {
        "fit": lambda: b.bench_fit(n_tasks if n_tasks is not None else 10_000, threads=counts),
        "retrieval": lambda: b.bench_retrieval(
            n_tasks if n_tasks is not None else 100_000, threads=counts
        ),
        "generate": lambda: b.bench_generate(
            n_tasks if n_tasks is not None else 300, threads=counts
        ),
        "generate-statistical": lambda: b.bench_generate_statistical(
            n_tasks if n_tasks is not None else 10_000, threads=counts
        ),
        "lm": lambda: b.bench_generate_lm(
            n_tasks if n_tasks is not None else 3, threads=(counts or [1])[0]
        ),
        "lm-throughput": lambda: b.bench_lm_throughput(
            n_tasks if n_tasks is not None else 4, threads=(counts or [1])[0]
        ),
    }
    if name not in (*runners, "all"):
        raise typer.BadParameter(f"unknown benchmark {name!r}; use one of {[*runners, 'all']}")
    results = [runners[n]() for n in (runners if name == "all" else [name])]
    out = results[0] if name != "all" else {"name": "all", "results": results}
    if as_json:
        echo_json(out)
    else:
        for r in results:
            typer.echo(
                f"{r['name']}: ours {r['ours']} | baseline {r['baseline']} | ratio {r['ratio']}x"
            )
            typer.echo(f"  {b.resources_line(r)}")


@app.command(
    "demo",
    help=(
        "Zero-shot model for a hospital the index never saw: build, train, generate, explain, "
        "score, report."
    ),
)
@option_groups
def demo(
    out: Annotated[Path, typer.Option(help="report folder")] = Path("reports/demo"),
    site: Annotated[
        str, typer.Option(help="the hospital held out of the index (a value of --group)")
    ] = "Switzerland",
    tasks_dir: Annotated[
        Path | None,
        typer.Option(
            help="your own task folder instead of the heart-disease data (see docs/own_tasks.md)"
        ),
    ] = None,
    group: Annotated[str, typer.Option(help="metadata key that defines hospitals")] = "site",
    target_task: Annotated[
        str | None, typer.Option(help="which held-out task to generate (default: the largest)")
    ] = None,
    folder: FolderOptions = FolderOptions(),
    embedder: _Embedder = "minilm",
    fast: Annotated[bool, typer.Option(help="short training, for smoke tests")] = False,
    overwrite: OverwriteOut = False,
    quiet: Quiet = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
):
    from ragim.demo import run_demo

    if tasks_dir is None and folder.given:
        raise typer.BadParameter(
            "--outcome, --patient-id, --pos-label, --sep, --na-values and --thousands apply to "
            "--tasks-dir"
        )
    progress = setup(as_json, quiet)
    refuse_to_replace(out, overwrite)
    with one_line_warnings():
        result = run_demo(
            out=out,
            site=site,
            tasks_dir=tasks_dir,
            group=group,
            target_task=target_task,
            embedder=embedder,
            fast=fast,
            quiet=as_json or quiet or QUIET["on"],
            progress=progress,
            **asdict(folder),
        )
    if as_json:
        echo_json(result)


cli_workflow.register(app)


def json_requested(args: list[str]) -> bool:
    """Whether the command line asks for JSON output (``--json`` before any ``--``), read
    before parsing, so that an error that stops the parsing is JSON too."""
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def _fail(message: str, code: int, as_json: bool) -> int:
    """Report an error: ``error: ...`` on stderr, and with ``--json`` also
    ``{"error": ..., "warnings": [...]}`` on stdout, so that a script reading stdout sees it;
    returns the exit code."""
    typer.echo(f"error: {message}", err=True)
    if as_json:
        echo_json({"error": message, "exit_code": code})
    return code


def _run_app(as_json: bool = False) -> int:
    """Run the app without click's standalone mode, so that usage errors are one line too;
    returns the exit code."""
    # typer raises click's exceptions (its own vendored copy in recent versions)
    errors = sys.modules[typer.BadParameter.__module__]
    no_args = getattr(errors, "NoArgsIsHelpError", ())
    try:
        rv = app(standalone_mode=False)
    except (
        no_args
    ) as exc:  # `ragim` or `ragim train` alone: the help (typer may have printed it already)
        text = exc.format_message()
        if text.strip():
            typer.echo(text)
        return exc.exit_code
    except errors.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx is not None else "ragim"
        return _fail(
            f"{one_line(exc.format_message())} (see '{cmd} --help')", exc.exit_code, as_json
        )
    except typer.Abort:
        return _fail("aborted", 1, as_json)
    except errors.ClickException as exc:
        return _fail(one_line(exc.format_message()), exc.exit_code, as_json)
    return rv if isinstance(rv, int) else 0


def command_options(argv: list[str]) -> set[str]:
    """The long options (``--heldout-fraction``) of the command ``argv`` names (``train grpo
    ...``); the top-level app's when it names none."""
    cmd = typer.main.get_command(app)
    for token in argv:
        sub = getattr(cmd, "commands", {}).get(token)
        if sub is None:
            break
        cmd = sub
    return {o for p in cmd.params for o in getattr(p, "opts", ()) if o.startswith("--")}


def in_option_words(exc: RagimError, options: set[str]) -> str:
    """``exc`` as one line, a run config's field problems (``invalid GRPOTrainingConfig:
    heldout_fraction must be ...``) said in the command line's words (``--heldout-fraction must
    be ...``) where the command has the option; the config's name is kept for a field that is
    no option."""
    problems = getattr(exc, "problems", [])
    head = str(exc).splitlines()[0] if str(exc) else ""
    if not problems or not (head.startswith("invalid ") and head.endswith("Config:")):
        return one_line(exc)
    said = []
    for problem in problems:
        name, _, rest = problem.partition(" ")
        option = "--" + name.replace("_", "-")
        said.append(f"{option} {rest}" if option in options else None)
    if None in said:
        return one_line(exc)
    return "; ".join(said)


def main() -> None:
    """Entry point: errors (ragim's, and the operating system's: a path that cannot be read
    or written) are one line (``error: ...``) and exit code 2, and with ``--json`` also a JSON
    object ``{"error": ...}`` on stdout; warnings are one line without a source path."""
    import warnings

    # every Python warning is one line (no source path) and is kept for --json output
    warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: warn(
        str(message)
    )
    as_json = json_requested(sys.argv[1:])
    try:
        code = _run_app(as_json)
    except RagimError as exc:
        code = _fail(in_option_words(exc, command_options(sys.argv[1:])), 2, as_json)
    except OSError as exc:  # a folder that cannot be written, a full disk: the path, no traceback
        where = f": {exc.filename}" if exc.filename else ""
        code = _fail(one_line(f"{exc.strerror or exc}{where}"), 2, as_json)
    except KeyboardInterrupt:
        code = _fail("interrupted", 130, as_json)
    sys.exit(code)


if __name__ == "__main__":
    main()
