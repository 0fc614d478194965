"""A zero-shot interpretable model for a hospital the index never saw, and why it predicts what it does.

Run: python examples/02_zero_shot_model_and_explanation.py [--fast]
"""

from _common import parse_args

from ragim import AttentionGenerator, TaskIndex, datasets
from ragim.metrics import task_metrics

args = parse_args(__doc__)
tasks = datasets.heart_disease()
train, held_out = tasks.group_split("site", ["VA Long Beach"])
index = TaskIndex.build(train, embedder="hashing" if args.fast else None, progress=not args.fast)
gen = AttentionGenerator(max_epochs=20 if args.fast else 300).fit(index, progress=not args.fast)

target = max(held_out, key=lambda t: t.n_rows)
model = gen.generate(target.description)  # no label from VA Long Beach is used
print(model.explain())                      # odds ratios with bootstrap intervals
print(model.explain().provenance.to_frame()[["task_id", "similarity", "weight"]])
print("scores on the real outcomes:", task_metrics(target.y, model.predict_proba(target.X)[:, 1]))

model.explain().save_png(args.out / "coefficients.png", kind="odds_ratio")
model.explain(target.X.iloc[[0]]).save_png(args.out / "patient0_waterfall.png")
