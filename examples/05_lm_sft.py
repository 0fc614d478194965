"""LoRA supervised fine-tuning of the LM generator: a language model that reads a task
description plus its retrieved neighbours and writes the new model's parameters as JSON.

Fast mode uses a tiny randomly initialised model built in code; the full run uses
SmolLM2-135M-Instruct from the bundled GGUF (converted once, then cached).
Run: python examples/05_lm_sft.py [--fast]
"""

from _common import parse_args

from ragim import TaskIndex, datasets
from ragim.metrics import task_metrics
from ragim.train import train_sft

args = parse_args(__doc__)
tasks = datasets.heart_disease()
train, held_out = tasks.group_split("site", ["Switzerland"])
index = TaskIndex.build(train, embedder="hashing" if args.fast else None, progress=not args.fast)

gen = train_sft(index, base_model="tiny" if args.fast else "smollm2-135m",
                max_steps=4 if args.fast else 30, batch_size=2, progress=not args.fast)
print(f"LoRA trainable parameters: {gen.n_trainable_params_:,}; SFT took {gen.train_seconds_:.1f}s")
print("logged losses:", [round(h["loss"], 3) for h in gen.history_ if "loss" in h][:5])

target = max(held_out, key=lambda t: t.n_rows)
model = gen.generate(target.description, index=index)   # constrained decoding: always valid JSON
print(model.explain())
print("scores on the real outcomes:", task_metrics(target.y, model.predict_proba(target.X)[:, 1]))
gen.save(args.out / "lm-generator")                      # the LoRA adapter only, never the base model
