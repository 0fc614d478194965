"""One GPU check for a CUDA machine (issue 18): the gpu-marked tests and timings, as ONE JSON.

Run ``scripts/gpu_check.sh`` (or ``make gpu-check``) on a machine with a CUDA GPU. It:

1. runs ``pytest -m gpu`` (pass/fail counts and seconds);
2. times LoRA SFT steps (forward, backward, AdamW) in bf16 autocast;
3. times GRPO steps: a group of answers sampled under the answer grammar, then a
   policy-gradient backward on their log-probabilities (the core compute of one step, not the
   TRL trainer's bookkeeping);
4. times batched grammar-constrained generation
   (:func:`ragim.lm.constrained.generate_answer_batch`);
5. times the batched logistic solver (:func:`ragim.models.batched.fit_logistic_batched`) and a
   FAISS flat search on the GPU;

and writes ``benchmarks/results/gpu_check.json`` (``--out`` to change it). ``--cpu`` runs the
same plumbing tiny on the CPU (tiny model, fp32, small sizes, no pytest) so it can be tested
anywhere.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t)
    return out


def run_pytest_gpu(root: Path) -> dict:
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    tail = proc.stdout.strip().splitlines()[-1:] or [""]
    return {
        "returncode": proc.returncode,
        "summary": tail[0],
        "seconds": round(time.perf_counter() - t, 2),
    }


def lm_steps(
    base_model: str,
    device: str,
    dtype: torch.dtype,
    *,
    seq_len: int,
    batch: int,
    steps: int,
    group: int,
    n_params: int,
) -> dict:
    from peft import LoraConfig, get_peft_model

    from ragim.lm.answer import answer_format
    from ragim.lm.base_models import load_base_model
    from ragim.lm.constrained import generate_answer_batch

    model, tok = load_base_model(base_model, device=device)
    model = get_peft_model(
        model,
        LoraConfig(
            task_type="CAUSAL_LM",
            r=8,
            lora_alpha=16,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        ),
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vocab = int(model.config.vocab_size)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (batch, seq_len), generator=g).to(device)
    autocast = torch.autocast(
        device_type=device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32
    )

    def sft_step():
        model.train()
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sft_step()  # warm-up
    sft = _timed(sft_step, device, steps)

    keys = ["intercept"] + [f"x{i}" for i in range(n_params - 1)]
    fmt = answer_format(keys, name="compact", decimals=2)
    prompt = ids[0, : max(8, seq_len // 2)].cpu()
    parsed = []

    def grpo_step():
        model.eval()
        with torch.no_grad(), autocast:
            res = generate_answer_batch(
                model, tok, [prompt], fmt, temperature=1.0, num_candidates=group, seed=len(parsed)
            )[0]
        parsed.extend(fmt.parse_or_none(r.text) is not None for r in res)
        rewards = torch.tensor([-abs(sum(r.values.values())) for r in res])
        adv = (rewards - rewards.mean()) / (rewards.std() + 1e-6)
        model.train()
        full = [torch.cat([prompt, torch.tensor(r.token_ids, dtype=torch.long)]) for r in res]
        width = max(len(f) for f in full)
        batch_ids = torch.stack([torch.nn.functional.pad(f, (width - len(f), 0)) for f in full]).to(
            device
        )
        with autocast:
            logits = model(input_ids=batch_ids).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(2, batch_ids[:, 1:, None])[..., 0]
        answer = torch.zeros_like(logp, dtype=torch.bool)
        for i, r in enumerate(res):
            answer[i, width - 1 - len(r.token_ids) :] = True
        loss = -(adv.to(device)[:, None] * (logp * answer)).sum() / answer.sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    grpo = _timed(grpo_step, device, steps)
    model.eval()
    prompts = [ids[i, : seq_len // 2].cpu() for i in range(batch)]
    gen_times = []
    answers = []

    def gen():
        with torch.no_grad(), autocast:
            out = generate_answer_batch(model, tok, prompts, fmt)
        answers.extend(r for group_ in out for r in group_)

    gen()  # warm-up
    gen_times = _timed(gen, device, 2)
    n_tok = sum(r.n_tokens for r in answers[-batch:])
    return {
        "base_model": base_model,
        "dtype": str(dtype).replace("torch.", ""),
        "seq_len": seq_len,
        "batch": batch,
        "lora_r": 8,
        "sft_step_seconds": round(float(np.median(sft)), 4),
        "sft_tokens_per_s": round(batch * seq_len / float(np.median(sft)), 1),
        "grpo_step_seconds": round(float(np.median(grpo)), 4),
        "grpo_group": group,
        "grpo_parse_rate": float(np.mean(parsed)),
        "generate_batch": batch,
        "generate_n_params": n_params,
        "generate_seconds": round(float(np.median(gen_times)), 4),
        "generate_tasks_per_s": round(batch / float(np.median(gen_times)), 3),
        "generate_tokens_per_s": round(n_tok / float(np.median(gen_times)), 1),
        "generate_parse_rate": float(
            np.mean([fmt.parse_or_none(r.text) is not None for r in answers])
        ),
    }


def solver(device: str, n_tasks: int, n_features: int) -> dict:
    from ragim.models.batched import fit_logistic_batched

    rng = np.random.default_rng(0)
    X = [rng.normal(size=(int(n), n_features)) for n in rng.integers(40, 120, n_tasks)]
    y = [(x[:, 0] + rng.normal(size=len(x)) > 0).astype(int) for x in X]
    fit_logistic_batched(X[:8], y[:8], device=device)  # warm-up
    secs = _timed(lambda: fit_logistic_batched(X, y, device=device), device, 2)
    fit = fit_logistic_batched(X, y, device=device)
    return {
        "n_tasks": n_tasks,
        "n_features": n_features,
        "seconds": round(float(np.median(secs)), 4),
        "tasks_per_s": round(n_tasks / float(np.median(secs)), 1),
        "ok_fraction": float(np.mean([s == "ok" for s in fit.status])),
    }


def faiss_search(use_gpu: bool, n: int, dim: int, n_queries: int) -> dict:
    import faiss

    rng = np.random.default_rng(0)
    db = rng.normal(size=(n, dim)).astype("float32")
    q = db[:n_queries] + 0.01 * rng.normal(size=(n_queries, dim)).astype("float32")
    index = faiss.IndexFlatIP(dim)
    on_gpu = False
    if use_gpu and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        on_gpu = True
    index.add(db)
    index.search(q[:4], 10)
    t = time.perf_counter()
    _, ids = index.search(q, 10)
    secs = time.perf_counter() - t
    return {
        "n": n,
        "dim": dim,
        "n_queries": n_queries,
        "on_gpu": on_gpu,
        "seconds": round(secs, 4),
        "queries_per_s": round(n_queries / secs, 1),
        "self_hit_rate": float(np.mean(ids[:, 0] == np.arange(n_queries))),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="tiny plumbing run on the CPU")
    ap.add_argument("--out", default="benchmarks/results/gpu_check.json")
    args = ap.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    if args.cpu:
        device, dtype, cfg = (
            "cpu",
            torch.float32,
            {
                "base_model": "tiny",
                "seq_len": 64,
                "batch": 2,
                "steps": 2,
                "group": 2,
                "n_params": 5,
            },
        )
        sizes = {"solver": (64, 5), "faiss": (2000, 32, 50)}
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --cpu for the plumbing check", file=sys.stderr)
            return 2
        device, dtype, cfg = (
            "cuda",
            torch.bfloat16,
            {
                "base_model": "smollm2-135m",
                "seq_len": 2048,
                "batch": 4,
                "steps": 5,
                "group": 8,
                "n_params": 79,
            },
        )
        sizes = {"solver": (20_000, 20), "faiss": (1_000_000, 384, 1000)}
    t0 = time.perf_counter()
    result = {
        "name": "gpu-check",
        "mode": "cpu" if args.cpu else "cuda",
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "pytest_gpu": {"skipped": "cpu mode"} if args.cpu else run_pytest_gpu(root),
        "lm": lm_steps(cfg.pop("base_model"), device, dtype, **cfg),
        "batched_logistic": solver(device, *sizes["solver"]),
        "faiss": faiss_search(not args.cpu, *sizes["faiss"]),
    }
    result["total_seconds"] = round(time.perf_counter() - t0, 2)
    from ragim.io import write_file

    write_file(args.out, (json.dumps(result, indent=2) + "\n").encode("utf-8"))  # atomic
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
