"""Peak memory and time of LM training steps on SmolLM2-135M (issue 18's memory target).

Trains ``--steps`` steps of one stage in this process and reports the process's peak
resident memory (``ru_maxrss``), its resident memory after each step, the mean prompt length
in tokens (of the SFT prompts of the index's first tasks, which GRPO's prompts equal) and the
seconds per step, as one JSON line appended to ``--out`` (``batch_size``: SFT examples, or
GRPO answers, per step):

- ``--stage sft``: ``ragim.train.train_sft`` at ``--batch-size`` on the leave-one-task-out
  examples of the index (``k`` neighbours and the population model in every prompt);
- ``--stage grpo``: ``ragim.train.train_grpo`` from an untrained adapter, one prompt per step
  with a group of ``--grpo-group`` answers sampled under the answer grammar, bf16 autocast.

``--family procedure`` is a ``procedure_family`` index (79 parameters per answer);
``--family heart`` is UCI heart disease (33 parameters) with the statistical prior
and residual answers, the prompts of the heart runs in docs/training.md. Run each setting in
its own process, so that each peak is its own:

    nice -n 5 .venv/bin/python benchmarks/lm_train_memory.py --batch-size 4 --answer-format compact \\
        --activation-checkpointing --out benchmarks/results/lm_sft_memory.jsonl
    .venv/bin/python benchmarks/lm_train_memory.py --stage grpo --family heart --steps 4 \\
        --activation-checkpointing --out benchmarks/results/lm_grpo_memory.jsonl

Without ``--activation-checkpointing`` the activations of a batch of 4 procedure prompts of
about 4,000 tokens are kept for the backward pass; on this 24 GB machine SFT at batch 2 was
killed at 21 GB before, so that setting is not run here.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    import psutil
    import torch
    from lm_train_precision import mean_prompt_tokens
    from transformers import TrainerCallback

    from ragim import TaskIndex, datasets
    from ragim.generate.lm import LMConfig, LMGenerator
    from ragim.train import train_grpo, train_sft

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["sft", "grpo"], default="sft")
    ap.add_argument("--family", choices=["procedure", "heart"], default="procedure")
    ap.add_argument("--base-model", default="smollm2-135m", help="smollm2-135m, or tiny for a plumbing check")
    ap.add_argument("--n-tasks", type=int, default=40, help="tasks of procedure_family(seed=0) (procedure only)")
    ap.add_argument("--batch-size", type=int, default=4, help="SFT examples per step")
    ap.add_argument("--grpo-group", type=int, default=4, help="GRPO answers sampled per prompt")
    ap.add_argument("--steps", type=int, default=1, help="optimiser steps")
    ap.add_argument("--k", type=int, default=None, help="neighbours per prompt (heart: 3, procedure: 2)")
    ap.add_argument("--answer-format", choices=["json", "compact"], default="compact", help="LMConfig.answer_format")
    ap.add_argument("--activation-checkpointing", action="store_true",
                    help="recompute activations in the backward pass (the training configs' field)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    heart = args.family == "heart"
    tasks = datasets.heart_disease() if heart else datasets.procedure_family(n_tasks=args.n_tasks, seed=0)
    index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    k = args.k if args.k is not None else (3 if heart else 2)
    # heart: the settings of the heart runs in docs/training.md
    extra = dict(statistical_prior=True, residual=True, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
    cfg = LMConfig(base_model=args.base_model, k=k, device="cpu", answer_format=args.answer_format,
                   **(extra if heart else {}))
    process = psutil.Process()

    class StepMemory(TrainerCallback):
        """Wall seconds and resident memory (GB) after each optimiser step."""

        def __init__(self):
            self.seconds, self.rss_gb = [], []

        def on_step_begin(self, *a, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, *a, **kw):
            self.seconds.append(round(time.perf_counter() - self._t, 1))
            self.rss_gb.append(round(process.memory_info().rss / 1024**3, 2))

    steps = StepMemory()
    t0 = time.perf_counter()
    if args.stage == "sft":
        gen = train_sft(index, generator_config=cfg, max_steps=args.steps, batch_size=args.batch_size,
                        val_fraction=0, activation_checkpointing=args.activation_checkpointing, progress=False,
                        callbacks=[steps])
    else:
        gen = train_grpo(LMGenerator(cfg), index, num_generations=args.grpo_group, max_steps=args.steps,
                         mixed_precision="bf16", activation_checkpointing=args.activation_checkpointing,
                         progress=False, callbacks=[steps])
    seconds = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux
    row = {
        "stage": args.stage,
        "family": args.family,
        "n_params": len(gen.param_names_),
        "batch_size": args.batch_size if args.stage == "sft" else args.grpo_group,
        "answer_format": args.answer_format,
        "activation_checkpointing": args.activation_checkpointing,
        "steps": args.steps,
        "mean_prompt_tokens": mean_prompt_tokens(gen, index, index.ids[:8]),
        "peak_rss_gb": round(peak_gb, 2),
        "rss_gb_after_each_step": steps.rss_gb,
        "seconds_per_step": steps.seconds,
        "train_seconds": round(gen.train_seconds_, 1),
        "seconds_total": round(seconds, 1),
        "threads": args.threads,
        "machine": f"{platform.machine()}, CPU, torch {torch.__version__}",
        "command": "python " + shlex.join([str(Path(sys.argv[0])), *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
