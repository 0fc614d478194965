"""SFT vs SFT + DPO vs SFT + GRPO vs SFT + best-of-n (reward model) on held-out tasks.

Issue 7, item 5: the same held-out tasks, four ways of producing a zero-shot model with the
LM generator, scored on every row of each held-out task (no row of a held-out task is used
by any stage before scoring):

* **SFT (greedy)** — behaviour cloning, greedy constrained decoding.
* **SFT + DPO** — DPO on preference pairs of the *training* tasks, greedy decoding.
* **SFT + GRPO** — GRPO on verifiable rewards of the *training* tasks, greedy decoding.
* **SFT + best-of-n** — n samples from the SFT generator, the reward model picks one
  (``rerank="reward_model"``).

Metrics per method (macro mean over held-out tasks): the verifiable reward
(``ragim.train.rewards.held_out_log_likelihood`` of the chosen answer on the task's rows, nats per
row), AUROC and log-loss (``ragim.metrics.task_metrics``), constrained parse validity (the
answer that was scored; 1 by construction), and *unconstrained* parse validity and reward of
plain samples (temperature 0.8, as GRPO samples). Also the reward model's pairwise accuracy on
preference pairs of the held-out tasks (candidates of the SFT generator ranked by their
log-likelihood on the task's rows; every pair with margin >= 0.05).

The task family is ``ragim.datasets.synthetic_family``, split *by task* (seeded) into training
and held-out tasks. Settings were chosen on the training tasks only (never on held-out scores): the SFT learning
rate and LoRA modules by the SFT validation loss (validation tasks are training tasks).

Run (defaults take about 15 minutes on 2 CPU cores with the tiny model):

    python benchmarks/lm_training.py
    python benchmarks/lm_training.py --base-model smollm2-135m --sft-steps 10 ...   # slow on CPU

With ``--statistical-prior`` every prompt shows the default statistical generator's model for
its target (``LMConfig(statistical_prior=True)``), that prior is scored as a method of its own,
and the table adds paired differences over the held-out tasks (95% bootstrap CI): each LM
method minus the prior it was shown, and SFT + GRPO minus SFT. ``--family heart-task`` uses
the UCI heart-disease tasks instead (``--n-folds 4 --fold 0`` to ``--fold 3`` hold out each
quarter once; as in :mod:`ragim.evaluate`, every task sharing patients with a held-out task is
left out of training too); ``--family heart-site --fold K`` holds out the K-th of the 4 sites
(in name order) with all its tasks: sites share no patients, so each fold's SFT keeps 9 to 13
training tasks apart from its validation tasks, where leave-task-out folds keep 2 to 7. Every run also scores two baselines that need no LM on the same
rows, fitted on the training tasks only, and pairs each LM method with them: a logistic model
on the training tasks' pooled rows and the similarity-weighted mean of the 10 nearest training
tasks' models (:data:`BASELINES`). ``--stages`` picks the stages after SFT. With ``--residual`` (needs
``--statistical-prior``) the LM writes each parameter's change from that prior
(``LMConfig(residual=True)``); the dpo stage is then left out.

Long runs (issue 18's 300 SFT + 100 GRPO steps on SmolLM2 take hours on CPU) keep every
finished stage in ``--run-dir`` (adapters, pairs, per-task scores, the GRPO log and the wall
time per stage), and SFT and GRPO keep a resumable checkpoint there every ``--save-steps``
steps; rerun the same command with ``--resume`` to reuse the finished stages and continue an
interrupted one from its last checkpoint:

    python benchmarks/lm_training.py --base-model smollm2-135m --answer-format compact \
        --statistical-prior --n-tasks 80 --n-heldout 20 --sft-steps 300 --grpo-steps 100 \
        --stages grpo,reward --samples 0 --run-dir runs/lm-synthetic --resume

It prints a markdown table and writes it, with the command and settings, to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-model", default="tiny", help="tiny | smollm2-135m | a local model directory")
    ap.add_argument("--family", choices=["synthetic", "heart-task", "heart-site"], default="synthetic",
                    help="synthetic_family, or heart_disease split by task (leave-task-out) or by site "
                         "(leave-site-out: --fold K holds out the K-th site in name order)")
    ap.add_argument("--n-tasks", type=int, default=60, help="tasks in the synthetic family")
    ap.add_argument("--n-heldout", type=int, default=12, help="tasks held out for scoring (without --n-folds)")
    ap.add_argument("--plan", action="store_true",
                    help="print the split (held-out tasks, SFT's training and validation tasks, the fewest "
                         "tasks a training prompt may show) as one JSON line, and stop: no model is loaded")
    ap.add_argument("--n-folds", type=int, default=None,
                    help="split the tasks into this many seeded folds and hold out fold --fold")
    ap.add_argument("--fold", type=int, default=0, help="the held-out fold (with --n-folds)")
    ap.add_argument("--answer-format", choices=["json", "compact"], default="json",
                    help="LMConfig.answer_format of the generator")
    ap.add_argument("--statistical-prior", action="store_true",
                    help="LMConfig(statistical_prior=True): the default generator's model is in every prompt, "
                         "and that prior is scored as a method")
    ap.add_argument("--residual", action="store_true",
                    help="LMConfig(residual=True): the LM writes each parameter's change from the statistical prior "
                         "in its prompt (needs --statistical-prior; the dpo stage is left out, train_dpo refuses it)")
    ap.add_argument("--stages", default="sft,pairs,reward,dpo,grpo,best-of",
                    help="comma-separated stages after SFT (pairs is implied by reward, dpo and best-of)")
    ap.add_argument("--run-dir", type=Path, default=None,
                    help="keep each finished stage here (adapters, pairs, scores); with --resume, reuse them")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the finished stages found in --run-dir, and continue SFT and GRPO from their "
                         "last checkpoint there")
    ap.add_argument("--save-steps", type=int, default=10,
                    help="with --run-dir, keep a resumable SFT/GRPO checkpoint every this many steps")
    ap.add_argument("--n-features", type=int, default=3)
    ap.add_argument("--k", type=int, default=3, help="neighbours per prompt")
    ap.add_argument("--sft-steps", type=int, default=300)
    ap.add_argument("--sft-lr", type=float, default=1e-2)
    ap.add_argument("--sft-val-fraction", type=float, default=0.2,
                    help="share of the training tasks SFT holds out to validate on (SFTTrainingConfig.val_fraction; "
                         "the tasks sharing their patients leave SFT's training too)")
    ap.add_argument("--sft-targets", choices=["fit", "posterior"], default="fit",
                    help="SFT completions: each task's stored fit, or its posterior mode under the prompt's "
                         "prior without GRPO's reward rows (SFTTrainingConfig.targets)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--also-bfloat16", action="store_true",
                    help="also score SFT and GRPO generators with their weights in bfloat16 (LMConfig.dtype), "
                         "paired with float32")
    ap.add_argument("--mixed-precision", choices=["auto", "bf16", "no"], default="auto",
                    help="of every training stage: bf16 autocast on the CPU too (faster steps on CPUs with "
                         "bfloat16 units, benchmarks/lm_train_precision.py; the mixed_precision field of "
                         "every training config)")
    ap.add_argument("--activation-checkpointing", action="store_true",
                    help="recompute activations in the backward pass of every training stage (far less "
                         "memory for long prompts, more time per step; the activation_checkpointing field "
                         "of every training config)")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--target-modules", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                    help="LoRA target modules of the generator (comma-separated)")
    ap.add_argument("--pair-candidates", type=int, default=6, help="candidates per training task for the pairs")
    ap.add_argument("--rm-steps", type=int, default=200)
    ap.add_argument("--rm-lr", type=float, default=1e-3)
    ap.add_argument("--rm-reads", choices=["change", "model"], default="change",
                    help="with --residual: the reward model reads each answer as its change from the prior in "
                         "the prompt (what the LM writes), or as the whole model")
    ap.add_argument("--dpo-steps", type=int, default=60)
    ap.add_argument("--dpo-lr", type=float, default=5e-4)
    ap.add_argument("--grpo-steps", type=int, default=60)
    ap.add_argument("--grpo-lr", type=float, default=5e-4)
    ap.add_argument("--grpo-generations", type=int, default=4)
    ap.add_argument("--best-of", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4, help="unconstrained samples per held-out task (validity)")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--grpo-unconstrained", action="store_true",
                    help="GRPO samples plainly, not under the answer grammar (as before it could)")
    ap.add_argument("--prompt-order", choices=["shared-first", "target-first"], default="shared-first",
                    help="LMConfig.prompt_order (target-first: the order before the choice existed)")
    ap.add_argument("--no-population", action="store_true",
                    help="prompts without the population model (as before LMConfig.population existed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/lm_training.md"))
    ap.add_argument("--json-out", type=Path, default=None, help="also write the raw results as JSON")
    args = ap.parse_args(argv)
    if args.residual and not args.statistical_prior:
        ap.error("--residual needs --statistical-prior (the answer is a change to the prior in the prompt)")
    if not args.residual:
        args.rm_reads = "model"  # no prior to read a change from: whole models, as kept run directories
    return args


def heldout_pairs(gen, index, tasks, *, n, temperature, min_margin=0.05):
    """Preference pairs of held-out tasks: SFT candidates ranked by log-likelihood on the task's rows."""
    from ragim.lm.answer import model_text
    from ragim.lm.prompts import answer_text
    from ragim.params import param_names
    from ragim.train.rewards import encode_heldout, held_out_log_likelihood

    cfg = gen.config
    names = param_names(index.model, index.schema)
    rows = []
    for t in tasks:
        prompt, shown = gen.prompt(t.description, index)
        cands = gen.generate_candidates(t.description, index, num_candidates=n, temperature=temperature)
        texts = [answer_text(c, cfg.decimals, max_abs=cfg.max_abs) for c in cands]
        heldout = encode_heldout(index.model, index.schema, t.X, t.y)
        r = held_out_log_likelihood(None, texts, param_names=names, heldout=heldout, max_abs=cfg.max_abs)
        prior = {}  # the prior a residual generator's answers are changes from, as its pairs keep it
        if cfg.residual:
            prior = {"prior": model_text(gen.statistical_priors([t.description], index, [None])[0].as_dict())}
        for i in range(len(texts)):
            for j in range(len(texts)):
                if r[i] - r[j] >= min_margin and texts[i] != texts[j]:
                    rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": texts[i]}],
                                 "rejected": [{"role": "assistant", "content": texts[j]}], "task_id": t.task_id,
                                 "margin": r[i] - r[j], "neighbor_ids": shown, **prior})
    return rows


def prior_density_accuracy(gen, index, tasks, hpairs):
    """Pairwise accuracy on ``hpairs`` of a reference that needs no LM: of two answers, the one more
    probable under the statistical prior in the prompt (independent normals with the prior's SDs) is
    preferred; nan when ``gen`` shows no statistical prior."""
    from ragim.lm.answer import answer_values
    from ragim.params import param_names

    if not gen.config.statistical_prior:
        return float("nan")
    fmt = gen.answer_format(param_names(index.model, index.schema))
    by_id = {t.task_id: t for t in tasks}
    ids = list(dict.fromkeys(p["task_id"] for p in hpairs))
    priors = dict(zip(ids, gen.statistical_priors([by_id[i].description for i in ids], index, [None] * len(ids)),
                      strict=True))

    def log_density(answer, prior):  # answers in JSON (heldout_pairs) or in the generator's own format
        v = np.array(list(answer_values(answer, answer_format=fmt).values()))
        return -0.5 * float(np.sum(((v - prior.vector) / np.maximum(prior.std, 1e-9)) ** 2))

    return float(np.mean([log_density(p["chosen"], priors[p["task_id"]])
                          > log_density(p["rejected"], priors[p["task_id"]]) for p in hpairs]))


def unconstrained(gen, index, task, *, m, temperature, seed):
    """``m`` plain samples (no constrained decoding, as GRPO samples): texts."""
    from ragim.lm.prompts import answer_room
    from ragim.params import param_names

    model, tok = gen.load_model()
    prompt, _ = gen.prompt(task.description, index)
    ids = tok.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    room = answer_room(param_names(index.model, index.schema), tok, decimals=gen.config.decimals,
                       max_abs=gen.config.max_abs)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"], do_sample=True,
                             temperature=temperature, top_p=1.0, top_k=0, num_return_sequences=m,
                             max_new_tokens=room, pad_token_id=tok.pad_token_id)
    return tok.batch_decode(out[:, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def score_method(gen, index, tasks, args, *, params_of=None, **gen_kwargs):
    """Per held-out task, the metrics in the module docstring, and their macro means.

    ``params_of(task)`` gives the parameters to score (default: ``gen.generate_params``);
    unconstrained samples of ``gen`` are drawn only when ``args.samples > 0``."""
    from ragim.evaluate import params_proba
    from ragim.lm.prompts import answer_text
    from ragim.metrics import task_metrics
    from ragim.params import param_names
    from ragim.train.rewards import encode_heldout, held_out_log_likelihood, parse_validity

    cfg = gen.config
    names = param_names(index.model, index.schema)
    per = []
    for i, t in enumerate(tasks):
        if params_of is None:
            params = gen.generate_params(t.description, index, **gen_kwargs)  # index holds no held-out task
        else:
            params = params_of(t)
        heldout = encode_heldout(index.model, index.schema, t.X, t.y)
        text = answer_text(params, cfg.decimals, max_abs=cfg.max_abs)
        reward = held_out_log_likelihood(None, [text], param_names=names, heldout=heldout, max_abs=cfg.max_abs)[0]
        m = task_metrics(t.y, params_proba(params, t.X))
        row = {"task_id": t.task_id, "reward": reward, "auroc": m["auroc"], "log_loss": m["log_loss"],
               "valid_constrained": parse_validity(None, [text], param_names=names)[0]}
        if args.samples > 0:
            samples = unconstrained(gen, index, t, m=args.samples, temperature=args.temperature, seed=args.seed + i)
            valid = parse_validity(None, samples, param_names=names, max_abs=cfg.max_abs)
            # a residual sample is a change from the prior in its prompt
            base = gen.statistical_priors([t.description], index, [None])[0] if cfg.residual else None
            s_reward = held_out_log_likelihood(None, samples, param_names=names, heldout=heldout,
                                               max_abs=cfg.max_abs,
                                               prior=None if base is None else base.vector.tolist())
            row.update(valid_unconstrained=float(np.mean(valid)), sample_reward=float(np.mean(s_reward)))
        per.append(row)
    keys = [k for k in per[0] if k != "task_id"]
    return {key: float(np.nanmean([p[key] for p in per])) for key in keys}, per


def split_tasks(args):
    """(training TaskSet, held-out tasks, data description) for ``args.family``."""
    from ragim import datasets

    if args.family == "synthetic":
        tasks = datasets.synthetic_family(n_tasks=args.n_tasks, n_features=args.n_features, seed=args.seed)
        what = f"`ragim.datasets.synthetic_family(n_tasks={args.n_tasks}, n_features={args.n_features}, seed={args.seed})`"
    else:
        tasks = datasets.heart_disease()
        what = "`ragim.datasets.heart_disease()` (UCI Heart Disease, CC BY 4.0), leave-task-out"
    perm = np.random.default_rng(args.seed).permutation(len(tasks))
    if args.family == "heart-site":
        # patients are never shared across sites, so a site is the unit that keeps training
        # apart from the held-out patients; it is also the clinical question (a new hospital)
        sites = sorted({t.metadata["site"] for t in tasks})
        if args.n_folds not in (None, len(sites)):
            raise SystemExit(f"--family heart-site has {len(sites)} folds, one per site; got --n-folds {args.n_folds}")
        if not 0 <= args.fold < len(sites):
            raise SystemExit(f"--fold must be in [0, {len(sites)}) (the sites {sites}), got {args.fold}")
        held_pos = np.array([i for i, t in enumerate(tasks) if t.metadata["site"] == sites[args.fold]])
        what = (f"`ragim.datasets.heart_disease()` (UCI Heart Disease, CC BY 4.0), leave-site-out: the "
                f"{len(held_pos)} tasks of site {sites[args.fold]!r} (fold {args.fold} of {len(sites)})")
    elif args.n_folds is None:
        held_pos = perm[:args.n_heldout]
    else:
        if not 0 <= args.fold < args.n_folds:
            raise SystemExit(f"--fold must be in [0, {args.n_folds}), got {args.fold}")
        held_pos = perm[args.fold::args.n_folds]
        what += f", fold {args.fold} of {args.n_folds}"
    held_pos = sorted(held_pos.tolist())
    # ragim.evaluate's leave-task-out: a task that shares patients with a held-out task (a site's
    # "all adults" task and its subgroups, one cohort's two outcomes) leaves training too, or its
    # rows (in SFT targets, neighbours and the prior) would include the held-out task's rows
    shared = {o for i in held_pos for o in tasks.overlapping(tasks[i])}
    train_pos = [i for i in range(len(tasks)) if i not in set(held_pos) and tasks.ids[i] not in shared]
    if len(train_pos) < 4:
        raise SystemExit(f"only {len(train_pos)} training tasks share no patient with the held-out ones; "
                         "hold out fewer tasks (more --n-folds, or a smaller --n-heldout)")
    if shared:
        what += (f"; the {len(tasks) - len(held_pos) - len(train_pos)} other tasks that share patients with "
                 f"a held-out task are left out too, so {len(train_pos)} tasks train")
    return tasks.take(train_pos), [tasks[i] for i in held_pos], what


#: the baselines every run scores on the same held-out rows (no LM; see :func:`baselines`)
BASELINES = ("pooled (training rows)", "neighbour mean (k=10)")


def baselines(index):
    """``{name: params_of(task)}`` for :data:`BASELINES`, each fitted on the training tasks
    of ``index`` only: a logistic model fitted on all their pooled rows (``C=1``, the index's
    model family, as ``ragim.evaluate``'s ``pooled``), and the similarity-weighted mean of the
    10 closest training tasks' parameters (:func:`ragim.estimator.neighbor_mean`, as
    ``ragim.evaluate``'s ``neighbor-mean``)."""
    import pandas as pd

    from ragim.estimator import neighbor_mean
    from ragim.params import model_family

    tasks = list(index.tasks)
    X = pd.concat([t.X for t in tasks], ignore_index=True)
    y = np.concatenate([t.y for t in tasks])
    pooled = model_family(index.model).estimator(index.schema, C=1.0).fit(X, y).to_params()
    return {BASELINES[0]: lambda t: pooled,
            BASELINES[1]: lambda t: neighbor_mean(index, t.description, k=10)}


#: options added after run directories were kept: a kept settings.json without one was run with this value
ADDED = {"residual": False, "rm_reads": "model", "sft_val_fraction": 0.2}
#: options that do not change what a stage computes (a run directory may be resumed with others)
VOLATILE = {"stages", "resume", "out", "json_out", "threads", "run_dir", "save_steps", "samples",
            "activation_checkpointing", "also_bfloat16", "mixed_precision", "plan"}
def differing_settings(ours: dict, theirs: dict, *, ignore=frozenset(), word: str = "now") -> str:
    """The settings that differ between ``ours`` and ``theirs`` (either kept before an option was
    added counts as run with its :data:`ADDED` default; keys in ``ignore`` are left out), as
    ``"key=theirs (now ours), ..."``; empty when they agree."""
    ours, theirs = ({k: v for k, v in {**ADDED, **d}.items() if k not in ignore} for d in (ours, theirs))
    differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    return ", ".join(f"{k}={theirs.get(k)!r} ({word} {ours.get(k)!r})" for k in differ)


def paired_table(comparisons) -> list[str]:
    """Markdown lines of :func:`paired`'s comparisons: difference, metric, mean, CI, wins."""
    return ["| paired difference (same held-out tasks) | metric | mean | 95% bootstrap CI | wins / tasks |",
            "|---|---|---:|---|---|",
            *(f"| {c['method']} − {c['baseline']} | {c['metric']} | {c['mean_diff']:+.4f} | "
              f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] | {c['wins']} / {c['n_tasks']} |" for c in comparisons)]


#: what --also-bfloat16 adds to a method's name
BF16 = "bfloat16 weights"


class Stages:
    """Run-directory bookkeeping: each finished stage is kept, and ``--resume`` reuses it.

    ``settings.json`` in the run directory keeps the options the stages were computed with;
    resuming with other values of any of them (a different SFT target, learning rate, ...)
    stops with the options named, instead of mixing stages of two runs."""

    def __init__(self, args):
        self.dir, self.resume = args.run_dir, args.resume
        self.timings: dict[str, float] = {}
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            f = self.dir / "timings.json"
            if self.resume and f.exists():
                self.timings = json.loads(f.read_text())
            mine = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in VOLATILE}
            kept = self.dir / "settings.json"
            if self.resume and kept.exists():
                differ = differing_settings(mine, json.loads(kept.read_text()), ignore=VOLATILE)
                if differ:
                    raise SystemExit(f"--resume: {self.dir} was run with other settings: {differ}; "
                                     "use a new --run-dir")
            save_json(mine, kept)

    def path(self, name):
        return None if self.dir is None else self.dir / name

    def have(self, name):
        p = self.path(name)
        return self.resume and p is not None and p.exists()

    def run(self, name, compute, *, save=None, load=None):
        """The stage's result: loaded from the run directory when resuming, else computed (and kept)."""
        p = self.path(name)
        if self.have(name) and load is not None:
            print(f"[{name}] reused {p}", flush=True)
            return load(p)
        t0 = time.perf_counter()
        out = compute()
        self.timings[name] = round(time.perf_counter() - t0, 1)
        print(f"[{name}] {self.timings[name]} s", flush=True)
        if p is not None and save is not None:
            save(out, p)
        if self.dir is not None:
            (self.dir / "timings.json").write_text(json.dumps(self.timings, indent=2))
        return out


def step_printer(stage, every=10):
    """A transformers callback that prints the step and the last logged values every ``every`` steps
    (a background run's log shows how far it got)."""
    from transformers import TrainerCallback

    class Printer(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.global_step % every == 0 and logs and {"loss", "reward", "eval_loss"} & logs.keys():
                shown = {k: round(v, 4) for k, v in logs.items() if k in ("loss", "reward", "eval_loss")}
                print(f"[{stage}] step {state.global_step}/{state.max_steps} {shown}", flush=True)

    return [Printer()]


def save_json(obj, p):
    from ragim.io import write_file

    write_file(p, json.dumps(obj, indent=2, default=float).encode("utf-8"))  # atomic


def load_json(p):
    return json.loads(p.read_text())


def paired(per_task, pairs):
    """Paired differences ``method - baseline`` over the held-out tasks, for each ``(method,
    baseline)`` of ``pairs``, in log-loss and AUROC (:func:`ragim.metrics.paired_differences`)."""
    import pandas as pd

    from ragim.metrics import paired_differences

    rows = pd.DataFrame([{**r, "method": m, "dataset": "lm", "protocol": "held-out", "k_shot": 0}
                         for m, per in per_task.items() for r in per])
    out = []
    for method, baseline in pairs:
        out += paired_differences(rows, [method], [baseline]).to_dict("records")
    return out


def plan(index, held, args) -> dict:
    """What a run of ``args`` would train and validate SFT on (``ragim.train.sft.sft_split``
    with ``--sft-val-fraction``), and the fewest tasks one of its training prompts may show
    (the index less the task, the tasks sharing its patients, and the hidden ones): the
    statistical prior needs 2."""
    from ragim.train.sft import prompt_pool_sizes, sft_split

    split = sft_split(index, val_fraction=args.sft_val_fraction, seed=args.seed)
    shown = prompt_pool_sizes(index, split)
    n_folds = args.n_folds
    if args.family == "heart-site":  # one fold per site, among the index's and the held-out tasks
        n_folds = len({r["metadata"].get("site") for r in index.records} | {t.metadata.get("site") for t in held})
    return {"family": args.family, "fold": None if n_folds is None else args.fold,
            "n_folds": n_folds, "held_out": len(held),
            "index_tasks": len(index), "sft_val": split.val_ids, "sft_train": len(split.train_ids),
            "left_out": len(split.left_out), "hidden": len(split.hidden),
            "fewest_tasks_a_prompt_may_show": min(shown.values(), default=0)}


def main(argv=None):
    args = parse_args(argv)
    if args.resume and args.run_dir is None:
        raise SystemExit("--resume needs --run-dir")
    torch.set_num_threads(args.threads)
    from ragim import TaskIndex
    from ragim.generate.lm import LMConfig, LMGenerator
    from ragim.io import write_file
    from ragim.lm.pairs import load_preferences, save_preferences
    from ragim.lm.reward_model import RewardModel
    from ragim.params import param_names
    from ragim.train import (
        build_preference_pairs,
        train_dpo,
        train_grpo,
        train_reward_model,
        train_sft,
        validate_prior_correction,
    )
    from ragim.train.rewards import VerifiableRewardConfig

    stages = set(args.stages.split(","))
    unknown = stages - {"sft", "pairs", "reward", "dpo", "grpo", "best-of"}
    if unknown:
        raise SystemExit(f"unknown --stages {sorted(unknown)}")
    if stages & {"reward", "dpo", "best-of"}:
        stages.add("pairs")
    if "best-of" in stages:
        stages.add("reward")
    if args.residual and "dpo" in stages:
        print("[dpo] left out: train_dpo refuses a residual generator (pairs hold final models)", flush=True)
        stages.discard("dpo")
    t_all = time.perf_counter()
    train, held, data_what = split_tasks(args)
    index = TaskIndex.build(train, embedder="hashing", progress=False)
    assert not set(index.ids) & {t.task_id for t in held}
    if args.plan:  # before Stages: a plan touches no run directory
        print(json.dumps(plan(index, held, args)), flush=True)
        return None
    st = Stages(args)

    def checkpoints(stage):
        """Trainer keywords that keep resumable checkpoints of ``stage`` in the run directory."""
        if args.run_dir is None:
            return {}
        return {"output_dir": str(args.run_dir / f"{stage}-checkpoints"), "save_steps": args.save_steps,
                "resume_from_checkpoint": args.resume}

    # the arithmetic and memory of every training stage (fields of every training config)
    compute = {"mixed_precision": args.mixed_precision, "activation_checkpointing": args.activation_checkpointing}

    def save_gen(g, p):
        g.save(p)

    def load_gen(p):
        return LMGenerator.load(p, device="cpu")

    sft = st.run("sft", lambda: train_sft(
        index, base_model=args.base_model, max_steps=args.sft_steps, learning_rate=args.sft_lr,
        batch_size=args.batch_size, progress=False, seed=args.seed, callbacks=step_printer("sft"), **checkpoints("sft"),
        targets=args.sft_targets, val_fraction=args.sft_val_fraction, **compute,
        generator_config=LMConfig(k=args.k, device="cpu", lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
                                  seed=args.seed, target_modules=tuple(args.target_modules.split(",")),
                                  population=not args.no_population, prompt_order=args.prompt_order,
                                  answer_format=args.answer_format,
                                  statistical_prior=args.statistical_prior, residual=args.residual)),
        save=save_gen, load=load_gen)

    results, per_task = {}, {}

    def score(name, gen, *, lm=True, **kw):
        """Score ``name`` on the held-out tasks; ``lm=False`` (a baseline) draws no LM samples."""
        key = "score-" + "".join(c if c.isalnum() else "-" for c in name.lower())
        how = args if lm else argparse.Namespace(**{**vars(args), "samples": 0})
        r = st.run(key, lambda: dict(zip(("mean", "per"), score_method(gen, index, held, how, **kw), strict=True)),
                   save=save_json, load=load_json)
        results[name], per_task[name] = r["mean"], r["per"]

    weights = {}

    def score_raw_and_corrected(name, gen, stage):
        """Score ``gen``'s own answers as ``name``; with the statistical prior, also its answers
        moved towards the prior by the correction weight validated on its validation tasks
        (``validate_prior_correction``; the weight is kept in the run directory). With
        ``--also-bfloat16``, each again by a copy of ``gen`` whose weights are bfloat16."""
        gens = [(name, gen)]
        if args.also_bfloat16:
            with tempfile.TemporaryDirectory() as tmp:
                gens.append((f"{name}, {BF16}", LMGenerator.load(gen.save(Path(tmp) / "g"), device="cpu",
                                                                 dtype="bfloat16")))
        if not args.statistical_prior:
            for n, g in gens:
                score(n, g)
            return
        def validated():  # trainers validate it; a generator trained before they did is validated here
            if not gen.prior_correction_cv_:
                validate_prior_correction(gen, index)
            return gen.prior_correction_cv_  # [] when it has no validation tasks

        cv = st.run(f"prior-correction-{stage}.json", validated, save=save_json, load=load_json)
        w = weights[stage] = min(cv, key=lambda r: r[1])[0] if cv else None  # the first: the smallest
        for n, g in gens:
            g.prior_correction_ = None
            score(n, g)
            if w is not None:
                g.prior_correction_ = w
                score(f"{n}, correction validated", g)

    if args.statistical_prior:
        prior = sft.fitted_prior(index)
        score("statistical prior (in the prompt)", sft, lm=False,
              params_of=lambda t: prior.generate_params(t.description, index))
    for name, params_of in baselines(index).items():  # no LM: what a reviewer compares with
        score(name, sft, lm=False, params_of=params_of)
    score_raw_and_corrected("SFT (greedy)", sft, "sft")

    grpo_log = []
    if "grpo" in stages:
        grpo = st.run("grpo", lambda: train_grpo(
            sft, index, reward_config=VerifiableRewardConfig(weights={"log_likelihood": 1.0, "validity": 1.0}),
            num_generations=args.grpo_generations, batch_size=1, max_steps=args.grpo_steps,
            learning_rate=args.grpo_lr, temperature=args.temperature, progress=False, seed=args.seed,
            constrained=not args.grpo_unconstrained, callbacks=step_printer("grpo"), **checkpoints("grpo"),
            **compute),
        save=save_gen, load=load_gen)
        grpo_log = st.run("grpo_log.json", lambda: [h for h in grpo.history_
                                                    if h.get("stage") == "grpo" and "reward" in h],
                          save=save_json, load=load_json)
        score_raw_and_corrected("SFT + GRPO", grpo, "grpo")

    pairs = hpairs = rm = None
    if "pairs" in stages:
        pairs = st.run("pairs.jsonl", lambda: build_preference_pairs(
            sft, index, n_candidates=args.pair_candidates, min_margin=0.05, temperature=args.temperature,
            pairs="all", progress=False, seed=args.seed), save=save_preferences, load=load_preferences)
    if "reward" in stages:
        rm = st.run("reward-model", lambda: train_reward_model(
            pairs, index=index, base_model=args.base_model, lora_r=args.lora_r, max_steps=args.rm_steps,
            learning_rate=args.rm_lr, batch_size=args.batch_size, val_fraction=0.2, progress=False,
            device="cpu", seed=args.seed, generator=sft, residual=args.rm_reads == "change", **compute,
            answer_format=sft.answer_format(param_names(index.model, index.schema))),
            save=lambda m, p: m.save(p), load=lambda p: RewardModel.load(p, device="cpu"))
        hpairs = st.run("heldout-pairs.json", lambda: heldout_pairs(
            sft, index, held, n=args.pair_candidates, temperature=args.temperature),
            save=save_json, load=load_json)
    rm_pairs = []  # every held-out pair's two scores, for paired comparisons between runs
    if hpairs:
        s_w, s_l = rm.pair_scores(hpairs)
        rm_pairs = [{"task_id": p["task_id"], "chosen_score": float(a), "rejected_score": float(b)}
                    for p, a, b in zip(hpairs, s_w, s_l, strict=True)]
    rm_acc_heldout = (float(np.mean([(r["chosen_score"] > r["rejected_score"])
                                     + 0.5 * (r["chosen_score"] == r["rejected_score"]) for r in rm_pairs]))
                      if rm_pairs else float("nan"))
    prior_acc_heldout = prior_density_accuracy(sft, index, held, hpairs) if hpairs else float("nan")
    if "dpo" in stages:
        dpo = st.run("dpo", lambda: train_dpo(sft, pairs, beta=0.1, max_steps=args.dpo_steps,
                                              learning_rate=args.dpo_lr, batch_size=args.batch_size,
                                              progress=False, seed=args.seed, **compute),
                     save=save_gen, load=load_gen)
        score("SFT + DPO", dpo)
    best_of = f"SFT + best-of-{args.best_of} (reward model)"
    if "best-of" in stages:  # the reward model's pick as SFT (greedy) is scored: raw, then corrected
        rerank = dict(rerank="reward_model", reward_model=rm, n=args.best_of, temperature=args.temperature)
        w, sft.prior_correction_ = sft.prior_correction_, None
        score(best_of, sft, **rerank)
        if w is not None:
            sft.prior_correction_ = w
            score(f"{best_of}, correction validated", sft, **rerank)
    wall = round(time.perf_counter() - t_all, 1)

    base = "statistical prior (in the prompt)" if args.statistical_prior else None
    lm_methods = [m for m in results if m != base and m not in BASELINES]
    versus = [(m, base) for m in lm_methods if base]
    versus += [(m, b) for m in lm_methods if BF16 not in m for b in BASELINES]
    if "SFT + GRPO" in results:
        versus.append(("SFT + GRPO", "SFT (greedy)"))
    if best_of in results:
        versus.append((best_of, "SFT (greedy)"))
    if f"{best_of}, correction validated" in results:
        versus.append((f"{best_of}, correction validated", "SFT (greedy), correction validated"))
    if "SFT + GRPO, correction validated" in results:
        versus.append(("SFT + GRPO, correction validated", "SFT (greedy), correction validated"))
    versus += [(m, m.replace(f", {BF16}", "")) for m in results if BF16 in m]
    comparisons = paired(per_task, versus)

    cmd = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/lm_training.py", *(argv or sys.argv[1:])])
    sampled = args.samples > 0
    head = "| method | mean verifiable reward (held-out LL, nats/row) ↑ | AUROC ↑ | log-loss ↓ | parse validity (constrained)"
    lines = [head + (" | parse validity (unconstrained samples) | mean reward of unconstrained samples |"
                     if sampled else " |"),
             "|---|---|---|---|---" + ("|---|---|" if sampled else "|")]
    for name, r in results.items():
        row = f"| {name} | {r['reward']:.4f} | {r['auroc']:.4f} | {r['log_loss']:.4f} | {r['valid_constrained']:.2f} |"
        if sampled:
            row += (f" {r['valid_unconstrained']:.2f} | {r['sample_reward']:.2f} |" if "sample_reward" in r
                    else " – | – |")
        lines.append(row)
    if comparisons:
        lines += ["", *paired_table(comparisons)]
    extra = []
    if rm is not None:
        extra.append(f"Reward model: pairwise accuracy on {len(hpairs)} pairs of the {len(held)} held-out tasks = "
                     f"**{rm_acc_heldout:.3f}**; on its validation pairs (20% of the training tasks) = "
                     f"{rm.val_accuracy_:.3f}; trained on {len(pairs)} pairs minus the validation tasks' pairs.")
        if not np.isnan(prior_acc_heldout):
            extra.append("A reference that needs no LM, preferring the answer more probable under the statistical "
                         f"prior in the prompt, is right on **{prior_acc_heldout:.3f}** of the same held-out pairs.")
    if weights:
        extra.append("Validated correction weights (`LMGenerator.prior_correction_`, chosen by "
                     "`validate_prior_correction` on each generator's validation tasks, 20% of the "
                     "training tasks; 0: the prior, 1: the LM's own answer): "
                     + ", ".join(f"{k} {v}" for k, v in weights.items()) + ".")
    if grpo_log:
        curve = [round(h["reward"], 3) for h in grpo_log]
        tenth = max(1, len(curve) // 10)
        means = [round(float(np.mean(curve[i:i + tenth])), 3) for i in range(0, len(curve), tenth)]
        extra.append(f"GRPO learning curve (training prompts): mean reward per block of {tenth} steps "
                     f"{means}; mean frac_reward_zero_std = "
                     f"{np.mean([h.get('frac_reward_zero_std', np.nan) for h in grpo_log]):.2f}.")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    md = "\n".join([
        "# LM generator training: SFT vs DPO vs GRPO vs best-of-n",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), CPU; torch {torch.__version__}. "
        f"Wall time of this invocation {wall} s (stages reused from --run-dir are not counted).",
        "",
        f"Data: {data_what}, split by task: {len(train)} training tasks (the index; every training stage "
        f"uses only these), {len(held)} held-out tasks (scored on all their rows, zero-shot).",
        "",
        f"Base model: `{args.base_model}`. Settings: `{json.dumps(settings)}`",
        "",
        "Wall time per stage (s): " + ", ".join(f"{k} {v}" for k, v in st.timings.items()),
        "",
        *lines,
        "",
        *[f"- {e}" for e in extra],
        "",
    ])
    print(md)
    write_file(args.out, md.encode("utf-8"))
    if args.json_out is not None:
        write_file(args.json_out, json.dumps({"settings": settings, "results": results, "per_task": per_task,
                                             "comparisons": comparisons, "grpo_log": grpo_log,
                                             "rm_pairwise_accuracy_heldout": rm_acc_heldout,
                                             "rm_val_accuracy": None if rm is None else rm.val_accuracy_,
                                             "prior_density_pairwise_accuracy_heldout": prior_acc_heldout,
                                             "n_heldout_pairs": None if hpairs is None else len(hpairs),
                                             "rm_heldout_pair_scores": rm_pairs,
                                             "timings": st.timings, "wall_s": wall}, indent=2, default=float)
                   .encode("utf-8"))
    return results


if __name__ == "__main__":
    from ragim.errors import RagimError

    try:
        main()
    except RagimError as exc:  # a refused setting or split: its one line, not a traceback
        raise SystemExit(f"error: {exc}") from None
