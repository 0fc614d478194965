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

The timings need the model's shapes, not its trained weights: ``--architecture DIR`` takes a
folder with a model's ``config.json`` and tokenizer files only (``--export-architecture DIR``
writes one from the base model here) and initialises the weights at random, seeded. Use it where
the weights cannot travel (the SmolLM2 GGUF is 94 MB); the JSON then says ``"weights":
"random"``. With random weights the grammar still bounds every answer, but the numbers written,
and so the answer lengths, are not the trained model's: compare tokens/s, not tasks/s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

#: the base model timed on CUDA
CUDA_BASE_MODEL = "smollm2-135m"


def _version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _write(out: str, result: dict) -> None:
    from ragim.io import write_file

    write_file(out, (json.dumps(result, indent=2) + "\n").encode("utf-8"))  # atomic


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


def gpu_test_files(root: Path) -> list[str]:
    """The test files holding ``gpu``-marked tests (relative to ``root``), so that pytest
    collects only them: a missing package of an unrelated test module cannot stop the check."""
    return sorted(
        str(f.relative_to(root))
        for f in (root / "tests").rglob("test_*.py")
        if "pytest.mark.gpu" in f.read_text(encoding="utf-8")
    )


def run_pytest_gpu(root: Path) -> dict:
    t = time.perf_counter()
    files = gpu_test_files(root)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "gpu",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            *files,
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return {
        "files": files,
        "returncode": proc.returncode,
        "summary": lines[-1] if lines else "",
        "output_tail": lines[-40:],
        "seconds": round(time.perf_counter() - t, 2),
    }


def load_model(base_model: str, architecture: str | None, device: str):
    """The base model and tokenizer: ``base_model`` through ragim's loader, or, with
    ``architecture`` (a folder with ``config.json`` and tokenizer files), that architecture with
    seeded random weights."""
    from ragim.lm.base_models import load_base_model

    if architecture is None:
        return load_base_model(base_model, device=device)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(architecture, local_files_only=True)
    model = AutoModelForCausalLM.from_config(config).to(device)
    tok = AutoTokenizer.from_pretrained(architecture, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    return model.eval(), tok


def export_architecture(base_model: str, folder: str) -> None:
    """Write ``base_model``'s ``config.json`` and tokenizer files (no weights) to ``folder``."""
    from ragim.lm.base_models import load_base_model

    model, tok = load_base_model(base_model, device="cpu")
    Path(folder).mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    tok.save_pretrained(folder)


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
    generate_sizes: tuple[tuple[int, int], ...],
    architecture: str | None = None,
) -> dict:
    from peft import LoraConfig, get_peft_model

    from ragim.lm.answer import answer_format
    from ragim.lm.constrained import generate_answer_batch

    model, tok = load_model(base_model, architecture, device)
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
    generation = []
    all_parsed = []
    for size, n_prompts in generate_sizes:
        keys_ = ["intercept"] + [f"x{i}" for i in range(size - 1)]
        fmt_ = answer_format(keys_, name="compact", decimals=2)
        g_ids = torch.randint(4, vocab, (n_prompts, seq_len // 2), generator=g)
        prompts = list(g_ids)
        answers = []

        def gen(prompts=prompts, fmt_=fmt_, answers=answers):
            with torch.no_grad(), autocast:
                out = generate_answer_batch(model, tok, prompts, fmt_)
            answers.append([r for group_ in out for r in group_])

        gen()  # warm-up
        secs = float(np.median(_timed(gen, device, 2)))
        last = answers[-1]
        all_parsed += [fmt_.parse_or_none(r.text) is not None for a in answers for r in a]
        generation.append(
            {
                "n_params": size,
                "prompt_tokens": seq_len // 2,
                "batch": n_prompts,
                "seconds": round(secs, 4),
                "tasks_per_s": round(n_prompts / secs, 3),
                "answer_tokens_mean": round(float(np.mean([r.n_tokens for r in last])), 1),
                "tokens_per_s": round(sum(r.n_tokens for r in last) / secs, 1),
            }
        )
    # per-token cost at one prompt: transformers' own greedy generate (no grammar) against the
    # grammar-constrained decoder, the same prompt and answer length; it tells whether decoding
    # is bound by the grammar or by the model's per-token launches
    prompt = torch.randint(4, vocab, (1, seq_len // 2), generator=g)
    keys_ = ["intercept"] + [f"x{i}" for i in range(generate_sizes[0][0] - 1)]
    fmt_ = answer_format(keys_, name="compact", decimals=2)
    with torch.no_grad(), autocast:
        n_new = generate_answer_batch(model, tok, [prompt[0]], fmt_)[0][0].n_tokens
        constrained = float(
            np.median(
                _timed(lambda: generate_answer_batch(model, tok, [prompt[0]], fmt_), device, 2)
            )
        )
        plain_kwargs = dict(
            max_new_tokens=n_new,
            min_new_tokens=n_new,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            attention_mask=torch.ones_like(prompt, device=device),
        )
        model.generate(prompt.to(device), **plain_kwargs)  # warm-up
        plain = float(
            np.median(_timed(lambda: model.generate(prompt.to(device), **plain_kwargs), device, 2))
        )
    per_token = {
        "n_params": generate_sizes[0][0],
        "answer_tokens": n_new,
        "constrained_ms_per_token": round(1000 * constrained / n_new, 2),
        "plain_generate_ms_per_token": round(1000 * plain / n_new, 2),
    }
    # the same with transformers' static cache, which on CUDA lets generate compile the forward
    # (CUDA graphs): how much of the per-token cost is launch overhead that ragim could remove
    try:
        with torch.no_grad(), autocast:
            static = dict(plain_kwargs, cache_implementation="static")
            model.generate(prompt.to(device), **static)  # warm-up (and compilation)
            fast = float(
                np.median(_timed(lambda: model.generate(prompt.to(device), **static), device, 2))
            )
        per_token["plain_generate_static_cache_ms_per_token"] = round(1000 * fast / n_new, 2)
    except Exception as exc:  # noqa: BLE001 - recorded: an untested path on this card
        per_token["plain_generate_static_cache_error"] = f"{type(exc).__name__}: {exc}"[:500]
    return {
        "base_model": base_model if architecture is None else None,
        "architecture": None if architecture is None else Path(architecture).name,
        "weights": "pretrained" if architecture is None else "random",
        "model_type": model.config.model_type,
        "n_layers": int(model.config.num_hidden_layers),
        "n_base_params": int(
            sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
        ),
        "dtype": str(dtype).replace("torch.", ""),
        "seq_len": seq_len,
        "batch": batch,
        "lora_r": 8,
        "sft_step_seconds": round(float(np.median(sft)), 4),
        "sft_tokens_per_s": round(batch * seq_len / float(np.median(sft)), 1),
        "grpo_step_seconds": round(float(np.median(grpo)), 4),
        "grpo_group": group,
        "grpo_parse_rate": float(np.mean(parsed)),
        "grpo_n_params": n_params,
        "generate": generation,
        "decode_per_token_batch_1": per_token,
        "generate_parse_rate": float(np.mean(all_parsed)),
    }


def solver(device: str, n_tasks: int, n_features: int) -> dict:
    from ragim.models.batched import fit_logistic_batched

    rng = np.random.default_rng(0)
    X = [rng.normal(size=(int(n), n_features)) for n in rng.integers(40, 120, n_tasks)]
    y = [(x[:, 0] + rng.normal(size=len(x)) > 0).astype(int) for x in X]
    fit_logistic_batched(X[:8], y[:8], device=device)  # warm-up
    secs = _timed(lambda: fit_logistic_batched(X, y, device=device), device, 2)
    fit = fit_logistic_batched(X, y, device=device)
    out = {
        "n_tasks": n_tasks,
        "n_features": n_features,
        "seconds": round(float(np.median(secs)), 4),
        "tasks_per_s": round(n_tasks / float(np.median(secs)), 1),
        "ok_fraction": float(np.mean([s == "ok" for s in fit.status])),
    }
    if device != "cpu":  # the same fits on this machine's CPU cores: the ratio and agreement
        t = time.perf_counter()
        ref = fit_logistic_batched(X, y, device="cpu")
        cpu = time.perf_counter() - t
        out.update(
            cpu_threads=torch.get_num_threads(),
            cpu_seconds=round(cpu, 4),
            speedup_vs_cpu=round(cpu / out["seconds"], 2),
            max_abs_coef_difference_vs_cpu=float(np.max(np.abs(fit.coef - ref.coef))),
        )
    return out


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
        "faiss_version": faiss.__version__,
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
    ap.add_argument(
        "--out",
        help="the JSON to write (default: benchmarks/results/gpu_check.json on CUDA; with --cpu, "
        "gpu_check_cpu.json in the temporary folder, so that a plumbing run never replaces a "
        "GPU run's results)",
    )
    ap.add_argument(
        "--architecture",
        metavar="DIR",
        help="time this architecture (config.json + tokenizer files) with random weights",
    )
    ap.add_argument(
        "--export-architecture",
        metavar="DIR",
        help="write the CUDA run's base model's config.json and tokenizer files to DIR, and stop",
    )
    args = ap.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    if args.export_architecture:
        if args.cpu or args.architecture:
            ap.error("--export-architecture writes a folder and stops: give it alone")
        if Path(args.export_architecture).is_file():
            ap.error(f"--export-architecture {args.export_architecture} is a file; give a folder")
        export_architecture(CUDA_BASE_MODEL, args.export_architecture)
        return 0
    if args.architecture and not (Path(args.architecture) / "config.json").is_file():
        ap.error(
            f"--architecture {args.architecture} holds no config.json; write one with "
            "--export-architecture DIR"
        )
    if args.out is None:
        args.out = (
            str(Path(tempfile.gettempdir()) / "gpu_check_cpu.json")
            if args.cpu
            else "benchmarks/results/gpu_check.json"
        )
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
                "generate_sizes": ((5, 1), (5, 2)),
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
                "base_model": CUDA_BASE_MODEL,
                "seq_len": 2048,
                "batch": 4,
                "steps": 5,
                "group": 8,
                "n_params": 79,
                # (parameters, prompts): the heart (33) and procedure (79) schemas, 1 to 32 prompts
                "generate_sizes": tuple((n, b) for n in (33, 79) for b in (1, 8, 32)),
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
        "transformers": _version("transformers"),
    }
    sections = {
        "pytest_gpu": (lambda: {"skipped": "cpu mode"})
        if args.cpu
        else (lambda: run_pytest_gpu(root)),
        "lm": lambda: lm_steps(
            cfg.pop("base_model"), device, dtype, architecture=args.architecture, **cfg
        ),
        "batched_logistic": lambda: solver(device, *sizes["solver"]),
        "faiss": lambda: faiss_search(not args.cpu, *sizes["faiss"]),
    }
    failed = []
    for name, run in sections.items():
        # one section's failure is recorded and the others still run; the JSON is rewritten
        # after each, so a run stopped at a time limit keeps what it finished
        try:
            result[name] = run()
        except Exception as exc:  # noqa: BLE001 - recorded in the JSON, and the exit status says so
            failed.append(name)
            result[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        result["total_seconds"] = round(time.perf_counter() - t0, 2)
        _write(args.out, result)
    print(json.dumps(result, indent=2))
    if failed:
        print(f"gpu check: these sections failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
