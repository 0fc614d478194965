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

It prints a markdown table and writes it, with the command and settings, to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-model", default="tiny", help="tiny | smollm2-135m | a local model directory")
    ap.add_argument("--n-tasks", type=int, default=60, help="tasks in the synthetic family")
    ap.add_argument("--n-heldout", type=int, default=12, help="tasks held out for scoring")
    ap.add_argument("--n-features", type=int, default=3)
    ap.add_argument("--k", type=int, default=3, help="neighbours per prompt")
    ap.add_argument("--sft-steps", type=int, default=300)
    ap.add_argument("--sft-lr", type=float, default=1e-2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--target-modules", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                    help="LoRA target modules of the generator (comma-separated)")
    ap.add_argument("--pair-candidates", type=int, default=6, help="candidates per training task for the pairs")
    ap.add_argument("--rm-steps", type=int, default=200)
    ap.add_argument("--rm-lr", type=float, default=1e-3)
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
    return ap.parse_args(argv)


def heldout_pairs(gen, index, tasks, *, n, temperature, min_margin=0.05):
    """Preference pairs of held-out tasks: SFT candidates ranked by log-likelihood on the task's rows."""
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
        for i in range(len(texts)):
            for j in range(len(texts)):
                if r[i] - r[j] >= min_margin and texts[i] != texts[j]:
                    rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": texts[i]}],
                                 "rejected": [{"role": "assistant", "content": texts[j]}], "task_id": t.task_id,
                                 "margin": r[i] - r[j], "neighbor_ids": shown})
    return rows


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


def score_method(gen, index, tasks, args, **gen_kwargs):
    """Macro means over held-out tasks of the metrics in the module docstring."""
    from ragim.evaluate import params_proba
    from ragim.lm.prompts import answer_text
    from ragim.metrics import task_metrics
    from ragim.params import param_names
    from ragim.train.rewards import encode_heldout, held_out_log_likelihood, parse_validity

    cfg = gen.config
    names = param_names(index.model, index.schema)
    per = []
    for i, t in enumerate(tasks):
        params = gen.generate_params(t.description, index, **gen_kwargs)  # index holds no held-out task
        heldout = encode_heldout(index.model, index.schema, t.X, t.y)
        text = answer_text(params, cfg.decimals, max_abs=cfg.max_abs)
        reward = held_out_log_likelihood(None, [text], param_names=names, heldout=heldout, max_abs=cfg.max_abs)[0]
        m = task_metrics(t.y, params_proba(params, t.X))
        samples = unconstrained(gen, index, t, m=args.samples, temperature=args.temperature, seed=args.seed + i)
        valid = parse_validity(None, samples, param_names=names, max_abs=cfg.max_abs)
        s_reward = held_out_log_likelihood(None, samples, param_names=names, heldout=heldout, max_abs=cfg.max_abs)
        per.append({"reward": reward, "auroc": m["auroc"], "log_loss": m["log_loss"],
                    "valid_constrained": parse_validity(None, [text], param_names=names)[0],
                    "valid_unconstrained": float(np.mean(valid)), "sample_reward": float(np.mean(s_reward))})
    return {key: float(np.nanmean([p[key] for p in per])) for key in per[0]}, per


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from ragim import TaskIndex, datasets
    from ragim.generate.lm import LMConfig
    from ragim.train import (
        build_preference_pairs,
        train_dpo,
        train_grpo,
        train_reward_model,
        train_sft,
    )
    from ragim.train.rewards import VerifiableRewardConfig

    t_all = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name):
        timings[name] = time.perf_counter()

    def done(name):
        timings[name] = round(time.perf_counter() - timings[name], 1)
        print(f"[{name}] {timings[name]} s", flush=True)

    tasks = datasets.synthetic_family(n_tasks=args.n_tasks, n_features=args.n_features, seed=args.seed)
    perm = np.random.default_rng(args.seed).permutation(len(tasks))
    held_pos, train_pos = sorted(perm[:args.n_heldout].tolist()), sorted(perm[args.n_heldout:].tolist())
    train, held = tasks.take(train_pos), [tasks[i] for i in held_pos]
    index = TaskIndex.build(train, embedder="hashing", progress=False)
    assert not set(index.ids) & {t.task_id for t in held}

    stage("sft")
    sft = train_sft(index, base_model=args.base_model, max_steps=args.sft_steps, learning_rate=args.sft_lr,
                    batch_size=args.batch_size, progress=False, seed=args.seed,
                    generator_config=LMConfig(k=args.k, device="cpu", lora_r=args.lora_r,
                                              lora_alpha=2 * args.lora_r, seed=args.seed,
                                              target_modules=tuple(args.target_modules.split(",")),
                                              population=not args.no_population,
                                              prompt_order=args.prompt_order))
    done("sft")
    stage("pairs")
    pairs = build_preference_pairs(sft, index, n_candidates=args.pair_candidates, min_margin=0.05,
                                   temperature=args.temperature, pairs="all", progress=False, seed=args.seed)
    done("pairs")
    stage("reward model")
    rm = train_reward_model(pairs, base_model=args.base_model, lora_r=args.lora_r, max_steps=args.rm_steps,
                            learning_rate=args.rm_lr, batch_size=args.batch_size, val_fraction=0.2,
                            progress=False, device="cpu", seed=args.seed)
    done("reward model")
    stage("held-out pairs")
    hpairs = heldout_pairs(sft, index, held, n=args.pair_candidates, temperature=args.temperature)
    rm_acc_heldout = rm.pairwise_accuracy(hpairs) if hpairs else float("nan")
    done("held-out pairs")
    stage("dpo")
    dpo = train_dpo(sft, pairs, beta=0.1, max_steps=args.dpo_steps, learning_rate=args.dpo_lr,
                    batch_size=args.batch_size, progress=False, seed=args.seed)
    done("dpo")
    stage("grpo")
    grpo = train_grpo(sft, index, reward_config=VerifiableRewardConfig(weights={"log_likelihood": 1.0, "validity": 1.0}),
                      num_generations=args.grpo_generations, batch_size=1, max_steps=args.grpo_steps,
                      learning_rate=args.grpo_lr, temperature=args.temperature, progress=False, seed=args.seed,
                      constrained=not args.grpo_unconstrained)
    done("grpo")
    grpo_log = [h for h in grpo.history_ if h.get("stage") == "grpo" and "reward" in h]

    results, per_task = {}, {}
    for name, gen, kw in (
        ("SFT (greedy)", sft, {}),
        ("SFT + DPO", dpo, {}),
        ("SFT + GRPO", grpo, {}),
        (f"SFT + best-of-{args.best_of} (reward model)", sft,
         {"rerank": "reward_model", "reward_model": rm, "n": args.best_of, "temperature": args.temperature}),
    ):
        stage(f"score {name}")
        results[name], per_task[name] = score_method(gen, index, held, args, **kw)
        done(f"score {name}")
    wall = round(time.perf_counter() - t_all, 1)

    cmd = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/lm_training.py", *(argv or sys.argv[1:])])
    lines = [
        "| method | mean verifiable reward (held-out LL, nats/row) ↑ | AUROC ↑ | log-loss ↓ "
        "| parse validity (constrained) | parse validity (unconstrained samples) | mean reward of unconstrained samples |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['reward']:.4f} | {r['auroc']:.4f} | {r['log_loss']:.4f} | "
                     f"{r['valid_constrained']:.2f} | {r['valid_unconstrained']:.2f} | {r['sample_reward']:.2f} |")
    table = "\n".join(lines)
    n_train_pairs = len(pairs)
    extra = [
        f"Reward model: pairwise accuracy on {len(hpairs)} pairs of the {len(held)} held-out tasks = "
        f"**{rm_acc_heldout:.3f}**; on its validation pairs (20% of the training tasks) = {rm.val_accuracy_:.3f}; "
        f"trained on {n_train_pairs} pairs minus the validation tasks' pairs.",
        f"GRPO reward per step (training prompts, first → last 5): "
        f"{[round(h['reward'], 2) for h in grpo_log[:5]]} → {[round(h['reward'], 2) for h in grpo_log[-5:]]}; "
        f"mean frac_reward_zero_std = "
        f"{np.mean([h.get('frac_reward_zero_std', np.nan) for h in grpo_log]):.2f}.",
    ]
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    md = "\n".join([
        "# LM generator training: SFT vs DPO vs GRPO vs best-of-n",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), CPU; torch {torch.__version__}. "
        f"Total wall time {wall} s.",
        "",
        f"Data: `ragim.datasets.synthetic_family(n_tasks={args.n_tasks}, n_features={args.n_features}, "
        f"seed={args.seed})`, split by task: {len(train)} training tasks (the index; SFT, pairs, reward model, "
        f"DPO and GRPO use only these), {len(held)} held-out tasks (scored on all their rows, zero-shot).",
        "",
        f"Base model: `{args.base_model}`. Settings: `{json.dumps(settings)}`",
        "",
        "Wall time per stage (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()),
        "",
        table,
        "",
        *[f"- {e}" for e in extra],
        "",
    ])
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(md)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps({"settings": settings, "results": results, "per_task": per_task,
                                             "rm_pairwise_accuracy_heldout": rm_acc_heldout,
                                             "rm_val_accuracy": rm.val_accuracy_, "n_heldout_pairs": len(hpairs),
                                             "timings": timings, "wall_s": wall}, indent=2, default=float))
    return results


if __name__ == "__main__":
    main()
