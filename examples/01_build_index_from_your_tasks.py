"""Build an index from your own tasks: a folder of CSV files plus a descriptions file.

The folder layout (see docs/own_tasks.md):

    my_tasks/descriptions.csv      task_id,description,site
    my_tasks/data/<task_id>.csv    feature columns + outcome column "y" (+ optional patient_id)

Here we write such a folder from the bundled heart-disease data, then load and index it.
Run: python examples/01_build_index_from_your_tasks.py [--fast]
"""

import pandas as pd
from _common import parse_args

from ragim import TaskIndex, datasets
from ragim.datasets.folder import load_task_folder

args = parse_args(__doc__)
folder = args.out / "my_tasks"
(folder / "data").mkdir(parents=True, exist_ok=True)
rows = []
for task in datasets.heart_disease():
    if task.metadata["subgroup"] == "all":  # keep the disjoint subgroup tasks only
        continue
    df = task.X.assign(y=task.y, patient_id=task.metadata["patient_ids"])
    df.to_csv(folder / "data" / f"{task.task_id}.csv", index=False)
    rows.append({"task_id": task.task_id, "description": task.description, "site": task.metadata["site"]})
pd.DataFrame(rows).to_csv(folder / "descriptions.csv", index=False)

tasks = load_task_folder(folder)
print(tasks)
index = TaskIndex.build(tasks, model="logistic", embedder="hashing" if args.fast else None, progress=not args.fast)
index.save(args.out / "my_index")
for hit in index.search("Predict coronary artery disease in women at a Swiss clinic", k=3):
    print(f"{hit.score:.3f}  {hit.task_id}")
