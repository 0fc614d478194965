"""Few-shot: adapt the generated model with k labelled rows (a MAP fit with the generated model as prior).

Run: python examples/03_few_shot_adaptation.py [--fast]
"""

import numpy as np
from _common import parse_args

from ragim import AttentionGenerator, TaskIndex, ZeroShotClassifier, datasets
from ragim.metrics import task_metrics
from ragim.models import LogisticModel

args = parse_args(__doc__)
tasks = datasets.heart_disease()
train, held_out = tasks.group_split("site", ["Hungary"])
index = TaskIndex.build(train, embedder="hashing" if args.fast else None, progress=not args.fast)
gen = AttentionGenerator(max_epochs=20 if args.fast else 300).fit(index, progress=not args.fast)

target = max(held_out, key=lambda t: t.n_rows)
support, test = target.split(test_size=0.5, seed=0)
rng = np.random.default_rng(0)
k = 8
rows = np.concatenate([rng.choice(np.where(support.y == c)[0], k // 2, replace=False) for c in (0, 1)])
X_k, y_k = support.X.iloc[rows], support.y[rows]

zero = ZeroShotClassifier(index=index, generator=gen, description=target.description).fit()
few = ZeroShotClassifier(index=index, generator=gen, description=target.description).fit(X_k, y_k)
plain = LogisticModel(schema=index.schema).fit(X_k, y_k)
for name, clf in [("zero-shot", zero), (f"adapted on {k} rows", few), (f"plain LR on {k} rows", plain)]:
    m = task_metrics(test.y, clf.predict_proba(test.X)[:, 1])
    print(f"{name:>22}: AUROC {m['auroc']:.3f}  log-loss {m['log_loss']:.3f}")
print("prior strength chosen by the evidence:", few.prior_strength_)
