"""Score a GRPO checkpoint of a ``benchmarks/lm_training.py`` run on its held-out tasks.

A long run keeps a resumable GRPO checkpoint every ``--save-steps`` steps in
``RUN_DIR/grpo-checkpoints/checkpoint-N``, but scores the policy only after its last step. This
script scores the policy of one checkpoint as the run will score its final one: the SFT
generator of ``RUN_DIR/sft`` with the checkpoint's LoRA weights, greedy answers under the
grammar, on every row of each held-out task of the run's split (rebuilt from
``RUN_DIR/settings.json``), then paired with the methods the run has already scored there
(``score-*`` files: the prior, the baselines, SFT), with
:func:`ragim.metrics.paired_differences` (95% bootstrap CI over tasks). It trains nothing and
writes nothing into the run directory, so it may run beside the training run (memory allowing).

    python benchmarks/lm_checkpoint_score.py --run-dir runs/lm-heart-4f0-bf16 --checkpoint 60 \\
        --json-out runs/heart-f0-grpo60.json

Raises SystemExit, in one line, for a run directory without ``settings.json`` or an SFT stage,
a missing checkpoint, or a checkpoint whose adapter does not fit the SFT generator's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def apply_checkpoint(gen, checkpoint: Path) -> int:
    """Load ``checkpoint``'s LoRA weights (``adapter_model.safetensors``, no pickle) into
    ``gen``'s adapter in place; returns how many tensors changed. Refuses (SystemExit) a
    checkpoint with tensors the adapter lacks, or lacking some of its tensors."""
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    f = checkpoint / "adapter_model.safetensors"
    if not f.is_file():
        raise SystemExit(f"{checkpoint} holds no adapter_model.safetensors; give a GRPO checkpoint folder")
    weights = load_file(str(f))
    model, _ = gen.load_model()
    before = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    if set(before) != set(weights):
        raise SystemExit(f"{checkpoint}: its adapter has other tensors than the SFT generator's "
                         f"({len(set(weights) ^ set(before))} differ); is it a checkpoint of this run?")
    set_peft_model_state_dict(model, weights)
    after = get_peft_model_state_dict(model)
    return sum(not torch.equal(before[k], after[k].detach()) for k in before)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--checkpoint", type=int, required=True, help="the GRPO step N of checkpoint-N")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from lm_training import ADDED, paired, score_method, split_tasks

    from ragim import TaskIndex
    from ragim.generate.lm import LMGenerator
    from ragim.io import write_file

    run = args.run_dir
    if not (run / "settings.json").is_file() or not (run / "sft").is_dir():
        raise SystemExit(f"{run} is not an lm_training.py run directory with a finished SFT stage")
    ck = run / "grpo-checkpoints" / f"checkpoint-{args.checkpoint}"
    if not ck.is_dir():
        have = sorted(int(p.name.split("-")[1]) for p in (run / "grpo-checkpoints").glob("checkpoint-*"))
        raise SystemExit(f"{ck} does not exist; the run has GRPO checkpoints {have}")
    settings = {**ADDED, **json.loads((run / "settings.json").read_text())}
    settings["samples"] = 0
    how = argparse.Namespace(**settings)
    train, held, _ = split_tasks(how)
    index = TaskIndex.build(train, embedder="hashing", progress=False)
    gen = LMGenerator.load(run / "sft", device="cpu")
    changed = apply_checkpoint(gen, ck)
    name = f"SFT + GRPO, checkpoint {args.checkpoint}"
    w, gen.prior_correction_ = gen.prior_correction_, None  # the LM's own answers, as the run scores first
    mean, per = score_method(gen, index, held, how)
    per_task = {name: per}
    for f in sorted(run.glob("score-*")):  # file names are the run's method names, lower-cased, dashed
        words = [part for part in f.name.removeprefix("score-").split("-") if part]
        per_task[" ".join(words)] = json.loads(f.read_text())["per"]
    pairs = [(name, b) for b in per_task if b != name]
    out = {"command": "python " + shlex.join([str(Path(sys.argv[0])), *(sys.argv[1:] if argv is None else argv)]),
           "checkpoint": args.checkpoint, "changed_tensors": changed, "sft_correction_weight": w,
           "mean": mean, "per_task": per_task, "comparisons": paired(per_task, pairs)}
    for c in out["comparisons"]:
        if c["metric"] == "log_loss":
            print(f"{c['method']} − {c['baseline']}: {c['mean_diff']:+.4f} "
                  f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], {c['wins']} / {c['n_tasks']}")
    if args.json_out is not None:
        write_file(args.json_out, json.dumps(out, indent=1, default=float).encode("utf-8"))
    return out


if __name__ == "__main__":
    main()
