"""Peak memory and time of procedure-sized LM SFT steps on SmolLM2-135M (issue 18's memory target).

Trains ``--steps`` SFT steps of ``ragim.train.train_sft`` at ``--batch-size`` on the leave-one-
task-out examples of a ``procedure_family`` index (79 parameters per answer; ``k``
neighbours and the population model in every prompt), in this process, and reports the
process's peak resident memory (``ru_maxrss``), the mean prompt length in tokens and the
seconds per step, as one JSON line appended to ``--out``. Run each setting in its own process,
so that each peak is its own:

    nice -n 5 .venv/bin/python benchmarks/lm_sft_memory.py --batch-size 4 --answer-format compact \\
        --activation-checkpointing --out benchmarks/results/lm_sft_memory.jsonl

Without ``--activation-checkpointing`` the activations of a batch of 4 prompts of about 4,000
tokens are kept for the backward pass; on this 24 GB machine batch 2 was killed at 21 GB
before, so that setting is not run here.
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


def main() -> None:
    import torch

    from ragim import TaskIndex, datasets
    from ragim.generate.lm import LMConfig
    from ragim.train import build_sft_dataset, train_sft

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-tasks", type=int, default=40, help="tasks of procedure_family(seed=0) in the index")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--answer-format", choices=["json", "compact"], default="compact")
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tasks = datasets.procedure_family(n_tasks=args.n_tasks, seed=0)
    index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    cfg = LMConfig(base_model="smollm2-135m", k=args.k, device="cpu", answer_format=args.answer_format)
    t0 = time.perf_counter()
    gen = train_sft(index, generator_config=cfg, max_steps=args.steps, batch_size=args.batch_size,
                    val_fraction=0, activation_checkpointing=args.activation_checkpointing, progress=False)
    seconds = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux
    _, tok = gen.load_model()
    ds = build_sft_dataset(index, tok, cfg, task_ids=index.ids[: 2 * args.batch_size])
    lengths = [len(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, return_dict=True)["input_ids"])
               for r in ds]
    row = {
        "n_params": len(gen.param_names_),
        "batch_size": args.batch_size,
        "answer_format": args.answer_format,
        "activation_checkpointing": args.activation_checkpointing,
        "steps": args.steps,
        "mean_prompt_tokens": round(sum(lengths) / len(lengths), 1),
        "peak_rss_gb": round(peak_gb, 2),
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
