"""After SFT: preference pairs ranked by a verifiable reward, a Bradley–Terry reward model,
best-of-n reranking, and policy optimisation with GRPO (verifiable rewards) and DPO.

Every preference and every reward comes from held-out rows of the *training* tasks; the
Swiss hospital's tasks are never used until the final zero-shot comparison.
Fast mode uses a tiny randomly initialised model and a handful of steps (the numbers are then
meaningless, the plumbing is real); the full run uses SmolLM2-135M-Instruct.
Run: python examples/06_reward_model_and_grpo.py [--fast]
"""

from _common import parse_args

from ragim import TaskIndex, datasets
from ragim.metrics import task_metrics
from ragim.models import model_from_params
from ragim.train import (
    build_preference_pairs,
    train_dpo,
    train_grpo,
    train_reward_model,
    train_sft,
)
from ragim.train.preferences import save_preferences
from ragim.train.rewards import VerifiableRewardConfig

args = parse_args(__doc__)
fast = args.fast
base = "tiny" if fast else "smollm2-135m"
tasks = datasets.heart_disease()
train, held_out = tasks.group_split("site", ["Switzerland"])
index = TaskIndex.build(train, embedder="hashing" if fast else None, progress=not fast)

# 1. SFT (behaviour cloning), as in example 05
sft = train_sft(index, base_model=base, k=2 if fast else 3, max_steps=2 if fast else 60, batch_size=2,
                progress=not fast)

# 2. Preference pairs: sample candidates per training task, rank them by held-out log-likelihood
pairs = build_preference_pairs(sft, index, n_candidates=3 if fast else 6, min_margin=0.05,
                               max_tasks=6 if fast else None, pairs="all", progress=not fast)
save_preferences(pairs, args.out / "pairs.jsonl")  # a clinician can re-rank these (docs/training.md)
print(f"{len(pairs)} preference pairs over {len(set(pairs['task_id']))} tasks; "
      f"mean margin {sum(pairs['margin']) / max(len(pairs), 1):.3f} nats/row")

# 3. Reward model (Bradley–Terry on LoRA + scalar head); accuracy on pairs of held-out tasks
rm = train_reward_model(pairs, base_model=base, max_steps=4 if fast else 80, batch_size=2,
                        learning_rate=1e-3 if fast else 1e-4, val_fraction=0.3, progress=not fast)
print(f"reward model: pairwise accuracy on held-out tasks' pairs = {rm.val_accuracy_:.2f}")
rm.save(args.out / "reward-model")

# 4. Zero-shot on the unseen Swiss hospital: greedy SFT vs best-of-n reranked by the reward model
target = max(held_out, key=lambda t: t.n_rows)
greedy = sft.generate_params(target.description, index)
# best-of-n: sample n candidates, keep the one the reward model scores highest (ragim.train.best_of_n)
best = sft.generate_params(target.description, index, rerank="reward_model", reward_model=rm,
                           num_candidates=4 if fast else 8)
for name, params in (("greedy SFT", greedy), ("best-of-n", best)):
    p = model_from_params(params).predict_proba(target.X)[:, 1]
    print(f"{name:>10}: log-loss on {target.task_id!r} = {task_metrics(target.y, p)['log_loss']:.3f}")
print("reward-model scores of the candidates:", [round(s, 3) for s in best.metadata["reward_scores"]])

# 5. GRPO on verifiable rewards, continuing the SFT adapter
rl = train_grpo(sft, index, reward_config=VerifiableRewardConfig(weights={"log_likelihood": 1.0, "validity": 1.0}),
                num_generations=2 if fast else 4, max_steps=2 if fast else 30, batch_size=1, progress=not fast)
grpo_logs = [h for h in rl.history_ if h.get("stage") == "grpo" and "reward" in h]
print("GRPO mean reward per step:", [round(h["reward"], 2) for h in grpo_logs])
rl.save(args.out / "lm-grpo")

# 6. DPO on the same preference pairs
dpo = train_dpo(sft, pairs, beta=0.1, max_steps=2 if fast else 30, batch_size=2, progress=not fast)
print("DPO loss per step:", [round(h["loss"], 3) for h in dpo.history_ if h.get("stage") == "dpo" and "loss" in h])
