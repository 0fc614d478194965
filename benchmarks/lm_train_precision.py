"""LM training step time of SmolLM2-135M in float32 and under bf16 autocast, in one process (issue 18).

Trains ``--steps`` steps of ``--stage`` (``sft``: ``ragim.train.train_sft``; ``grpo``:
``ragim.train.train_grpo`` from an untrained adapter, a group of ``--grpo-group`` answers
sampled under the answer grammar per step) with ``mixed_precision="no"`` and with
``mixed_precision="bf16"``, alternating for ``--rounds`` rounds on the same examples (same
seed), and times each optimiser step with a trainer callback (wall and process CPU seconds;
the first step of every run is left out as warm-up). The prompts are those of the issue's
training runs: heart disease tasks (``--family heart``; 28 tasks, 13 features),
procedure-sized synthetic tasks (``--family procedure``; 79 parameters) or the synthetic
family of the residual runs (``--family synthetic``; 3 features), compact answers, ``--k``
neighbours, the population model and, with ``--statistical-prior``, the statistical prior
with its SDs. Then it times one decoding step (``--grpo-group`` rows, 1,000 cached tokens:
GRPO's sampling) in float32 and under bf16 autocast. Writes one JSON file: seconds per step
of each precision, their ratio, the per-step training losses (SFT) or mean rewards (GRPO) of
both, the decoding step both ways, the mean prompt length and whether the CPU has bfloat16
units (``amx_bf16`` / ``avx512_bf16`` flags).

    .venv/bin/python benchmarks/lm_train_precision.py --stage sft --family heart --statistical-prior \\
        --activation-checkpointing --out benchmarks/results/lm_train_precision_sft_heart.json
    .venv/bin/python benchmarks/lm_train_precision.py --stage grpo --family synthetic --statistical-prior \\
        --out benchmarks/results/lm_train_precision_grpo_synthetic.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path


def cpu_bf16_flags() -> list[str]:
    """The CPU's bfloat16-related flags from /proc/cpuinfo ([] where it cannot be read):
    ``ragim.bench.environment``'s ``cpu_bfloat16_units``."""
    from ragim.bench import environment

    return environment("cpu")["cpu_bfloat16_units"]


def mean_prompt_tokens(gen, index, task_ids) -> float:
    """Mean length in tokens of ``gen``'s SFT prompts (chat template, generation prompt) for
    ``task_ids`` of ``index``: the prompts a training step sees."""
    from ragim.train import build_sft_dataset

    _, tok = gen.load_model()
    ds = build_sft_dataset(index, tok, gen.config, task_ids=list(task_ids))
    lengths = [len(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, return_dict=True)["input_ids"])
               for r in ds]
    return round(sum(lengths) / len(lengths), 1)


def decode_step_seconds(model, *, batch: int, context: int, steps: int = 10, rounds: int = 2) -> dict:
    """Median process CPU seconds of one decoding step (``batch`` rows after ``context`` cached
    tokens, as GRPO samples a group) in float32 and under bf16 autocast, alternating: under
    autocast the frozen weights are cast again at every step."""
    import torch

    from ragim.lm.builtin_decoder import forward_keywords

    name, _ = forward_keywords(model)  # "cache" (transformers 5) or "past_key_values"
    g = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)  # random ids: a forward pass costs the same for any
    ids = torch.randint(0, vocab, (batch, context), generator=g)
    nxt = torch.randint(0, vocab, (batch, 1), generator=g)
    times = {"no": [], "bf16": []}
    model.eval()
    for _ in range(rounds):
        for mp in times:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=mp == "bf16"):
                cache = model(input_ids=ids, use_cache=True)[name]
                for _ in range(steps):
                    t = time.process_time()
                    cache = model(input_ids=nxt, use_cache=True, **{name: cache})[name]
                    times[mp].append(time.process_time() - t)
    return {mp: round(statistics.median(v), 4) for mp, v in times.items()}


def main() -> None:
    import torch
    from transformers import TrainerCallback

    from ragim import TaskIndex, datasets
    from ragim.generate.lm import LMConfig, LMGenerator
    from ragim.io import write_file
    from ragim.train import train_grpo, train_sft

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["sft", "grpo"], default="sft")
    ap.add_argument("--base-model", default="smollm2-135m", help="smollm2-135m, or tiny for a plumbing check")
    ap.add_argument("--family", choices=["heart", "procedure", "synthetic"], default="heart")
    ap.add_argument("--steps", type=int, default=4, help="training steps per run (the first is warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each precision, alternating")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--statistical-prior", action="store_true")
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument("--grpo-group", type=int, default=4, help="rows of the timed decoding step (GRPO's group)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.steps < 2 or args.rounds < 1:
        ap.error("--steps must be at least 2 (the first is warm-up) and --rounds at least 1")
    torch.set_num_threads(args.threads)

    tasks = {"heart": datasets.heart_disease,
             "procedure": lambda: datasets.procedure_family(n_tasks=40, seed=0),
             "synthetic": lambda: datasets.synthetic_family(n_tasks=20, n_features=3, seed=0)}[args.family]()
    index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    cfg = LMConfig(base_model=args.base_model, k=args.k, device="cpu", answer_format="compact",
                   statistical_prior=args.statistical_prior, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))

    class StepTimer(TrainerCallback):
        """Wall and process CPU seconds of each optimiser step."""

        def __init__(self):
            self.wall, self.cpu = [], []

        def on_step_begin(self, *a, **kw):
            self._t = (time.perf_counter(), time.process_time())

        def on_step_end(self, *a, **kw):
            self.wall.append(time.perf_counter() - self._t[0])
            self.cpu.append(time.process_time() - self._t[1])

    runs = {"no": [], "bf16": []}
    losses = {}
    gen = None
    for _ in range(args.rounds):
        for mp in runs:
            timer = StepTimer()
            if args.stage == "sft":
                gen = train_sft(index, generator_config=cfg, max_steps=args.steps, batch_size=args.batch_size,
                                val_fraction=0, mixed_precision=mp,
                                activation_checkpointing=args.activation_checkpointing, progress=False,
                                callbacks=[timer])
            else:  # GRPO from a fresh adapter (a trained policy's answers may cost more or less per step)
                gen = train_grpo(LMGenerator(cfg), index, num_generations=args.grpo_group, batch_size=1,
                                 max_steps=args.steps, temperature=0.8, mixed_precision=mp, progress=False,
                                 callbacks=[timer])
            runs[mp].append({"wall": timer.wall[1:], "cpu": timer.cpu[1:]})
            key = "loss" if args.stage == "sft" else "reward"
            losses[mp] = [round(h[key], 5) for h in gen.history_ if key in h]
            print(mp, [round(s, 1) for s in timer.wall], flush=True)

    def per_step(mp, key):
        return statistics.median(s for r in runs[mp] for s in r[key])

    decode = decode_step_seconds(gen.load_model()[0], batch=args.grpo_group, context=1000)

    row = {
        "stage": args.stage,
        "family": args.family,
        "n_params": len(gen.param_names_),
        "batch_size": args.batch_size,
        "statistical_prior": args.statistical_prior,
        "activation_checkpointing": args.activation_checkpointing,
        "mean_prompt_tokens": mean_prompt_tokens(gen, index, index.ids[: 2 * args.batch_size]),
        "timed_steps_per_precision": sum(len(r["wall"]) for r in runs["no"]),
        "seconds_per_step": {mp: round(per_step(mp, "wall"), 2) for mp in runs},
        "cpu_seconds_per_step": {mp: round(per_step(mp, "cpu"), 2) for mp in runs},
        "speed_up_bf16": round(per_step("no", "wall") / per_step("bf16", "wall"), 2),
        "speed_up_bf16_cpu": round(per_step("no", "cpu") / per_step("bf16", "cpu"), 2),
        "losses_or_rewards_last_run": losses,
        "decode_step_seconds": decode,
        "decode_slow_down_bf16": round(decode["bf16"] / decode["no"], 2),
        "runs": runs,
        "threads": args.threads,
        "cpu_bf16_flags": cpu_bf16_flags(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "command": "python " + shlex.join([str(Path(sys.argv[0])), *sys.argv[1:]]),
    }
    write_file(args.out, (json.dumps(row, indent=1) + "\n").encode("utf-8"))  # atomic
    print(json.dumps({k: row[k] for k in ("mean_prompt_tokens", "seconds_per_step", "speed_up_bf16",
                                          "decode_slow_down_bf16")}))


if __name__ == "__main__":
    main()
