"""GAMs on shared bins: every task's shape functions live on the same bins, so they can be
retrieved, averaged and generated like coefficient vectors.

Run: python examples/04_gam_family_shape_plots.py [--fast]
"""

from _common import parse_args

from ragim import AttentionGenerator, TaskIndex, datasets

args = parse_args(__doc__)
tasks = datasets.heart_disease()
train, held_out = tasks.group_split("site", ["Cleveland"])
# fast mode: fewer bags and boosting rounds per task (the defaults are outer_bags=8, max_rounds=1500)
quick = {"outer_bags": 2, "max_rounds": 200} if args.fast else {}
index = TaskIndex.build(train, model="gam", embedder="hashing" if args.fast else None, progress=not args.fast,
                        **quick)
gen = AttentionGenerator(max_epochs=10 if args.fast else 300).fit(index, progress=not args.fast)
target = max(held_out, key=lambda t: t.n_rows)
gam = gen.generate(target.description)
print(gam.shape_functions().head(12))
gam.explain().save_png(args.out / "gam_shapes.png")
ebm = gam.to_interpret()  # interpret's own tools accept it: ebm.explain_global()
print(type(ebm).__name__)
