"""How many answer tokens the grammar forces: the most that jump-forward decoding could skip.

Jump-forward decoding (SGLang's compressed finite-state machine) appends the tokens a grammar
forces without a forward pass for each. This script measures the share of such tokens in
compact answers written with SmolLM2-135M's tokenizer, so that the gain is known before the
decoder is changed. Answers are real parameters, not LM samples: the stored fits of the UCI
heart-disease tasks (``ragim.datasets.heart_disease()``, 33 parameters; "full" answers) and
each fit minus the population model without it and the tasks sharing its patients
(``TaskIndex.population_params``, ``exclude=leak_free(...)``; the
"residual" answers of ``LMConfig(residual=True)``), and the same for a
``procedure_family(n_tasks=40, seed=0)`` index (79 parameters). Each answer is written by
``CompactAnswerFormat.write`` (2 decimals), tokenized, and fed token by token through
``ragim.lm.constrained.GrammarLogitsProcessor``, whose ``free`` attribute says at each step
whether the grammar allowed more than one token (the end of the answer is not counted). No
model runs; it takes seconds.

    .venv/bin/python benchmarks/lm_forced_tokens.py --out benchmarks/results/lm_forced_tokens.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def forced_share(tokenizer, fmt, answers: list[dict], vocab_size: int) -> dict:
    """Tokens per answer and the share of them the grammar forces (the end of the answer, forced
    once it is complete, is not counted)."""
    import llguidance
    import torch

    from ragim.lm.constrained import GrammarLogitsProcessor, answer_regex

    grammar = llguidance.LLMatcher.grammar_from_regex(answer_regex(fmt.grammar()))
    tokens = forced = 0
    for values in answers:
        ids = tokenizer(fmt.write(values), add_special_tokens=False)["input_ids"]
        proc = GrammarLogitsProcessor(tokenizer, [grammar], vocab_size=vocab_size, prompt_length=1)
        scores = torch.zeros((1, vocab_size))
        for step in range(len(ids) + 1):  # the last call consumes the answer's last token
            proc(torch.tensor([[0, *ids[:step]]]), scores)
        steps = proc.free[0]
        assert len(steps) == len(ids) and proc.lengths[0] == len(ids), "the answer did not end where written"
        tokens += len(steps)
        forced += sum(not f for f in steps)
    return {"answers": len(answers), "tokens_per_answer": round(tokens / len(answers), 1),
            "forced_share": round(forced / tokens, 4)}


def main() -> None:
    from ragim import TaskIndex, datasets
    from ragim.index import leak_free
    from ragim.io import write_file
    from ragim.lm import load_base_model
    from ragim.lm.answer import answer_format
    from ragim.params import param_names

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-model", default="smollm2-135m", help="its tokenizer writes the answers (tiny: plumbing)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    model, tok = load_base_model(args.base_model)
    vocab = int(model.config.vocab_size)
    rows = []
    for family, tasks in (("heart", datasets.heart_disease()),
                          ("procedure", datasets.procedure_family(n_tasks=40, seed=0))):
        index = TaskIndex.build(tasks, embedder="hashing", progress=False)
        names = param_names(index.model, index.schema)
        fmt = answer_format(names, name="compact", decimals=2, max_abs=20.0)
        fits = {t: index.params(t).as_dict() for t in index.ids}
        pops = {t: index.population_params(exclude=leak_free(index.record(t))).as_dict() for t in index.ids}
        full = [fits[t] for t in index.ids]
        residual = [{k: fits[t][k] - pops[t][k] for k in names} for t in index.ids]
        for kind, answers in (("full", full), ("residual", residual)):
            clipped = [{k: max(-20.0, min(20.0, v)) for k, v in a.items()} for a in answers]
            rows.append({"family": family, "n_params": len(names), "kind": kind,
                         **forced_share(tok, fmt, clipped, vocab)})
            print(rows[-1], flush=True)
    out = {"base_model": args.base_model, "decimals": 2, "rows": rows,
           "command": "python " + shlex.join([str(Path(sys.argv[0])), *sys.argv[1:]])}
    write_file(args.out, (json.dumps(out, indent=1) + "\n").encode("utf-8"))


if __name__ == "__main__":
    main()
