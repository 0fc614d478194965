"""The ``ragim`` command line.

    ragim demo | index build | index search | generate | explain | train attention | evaluate | bench

Every command that reports results accepts ``--json`` for machine-readable output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ragim.errors import RagimError

app = typer.Typer(help="RAG-IM: retrieval-augmented generation of interpretable clinical models.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
index_app = typer.Typer(help="Build and query task indices.", no_args_is_help=True)
train_app = typer.Typer(help="Train generators.", no_args_is_help=True)
app.add_typer(index_app, name="index")
app.add_typer(train_app, name="train")

DATASETS = ("heart-disease", "synthetic", "procedure")


def load_dataset(name: str, *, n_tasks: int | None = None, seed: int = 0):
    """A TaskCollection from a dataset name or a task directory / saved collection."""
    from ragim import datasets
    from ragim.tasks import TaskCollection

    if name == "heart-disease":
        return datasets.heart_disease()
    if name == "synthetic":
        return datasets.synthetic_family(n_tasks=n_tasks or 300, seed=seed)
    if name == "procedure":
        return datasets.procedure_family(n_tasks=n_tasks or 1000, seed=seed)
    path = Path(name)
    if (path / "manifest.json").is_file():
        return TaskCollection.load(path)
    if path.is_dir():
        from ragim.datasets.folder import load_task_folder

        return load_task_folder(path)
    raise typer.BadParameter(f"unknown dataset {name!r}: use one of {list(DATASETS)}, a saved task collection or a task folder")


def _echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, allow_nan=False, default=_json_default))


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"cannot serialise {type(o).__name__}")


# ---------------------------------------------------------------------- index
@index_app.command("build")
def index_build(
    dataset: Annotated[str, typer.Option(help="heart-disease | synthetic | procedure | DIR")] = "heart-disease",
    out: Annotated[Path, typer.Option(help="where to save the index")] = Path("indices/heart-disease"),
    model: Annotated[str, typer.Option(help="logistic | gam")] = "logistic",
    embedder: Annotated[str, typer.Option(help="minilm | hashing | a local sentence-transformers folder")] = "minilm",
    index: Annotated[str, typer.Option(help="auto | Flat | a FAISS factory string")] = "auto",
    n_tasks: Annotated[int | None, typer.Option(help="family size for synthetic/procedure")] = None,
    seed: int = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON summary")] = False,
):
    """Fit one interpretable model per task, embed the descriptions, save a FAISS index."""
    from ragim.index import TaskIndex

    tasks = load_dataset(dataset, n_tasks=n_tasks, seed=seed)
    idx = TaskIndex.build(tasks, model=model, embedder=embedder, index=index, progress=not as_json)
    idx.save(out)
    summary = {"path": str(out), "n_tasks": len(idx), "model": model, "faiss": idx.config.factory,
               "skipped": getattr(idx, "skipped", {})}
    if as_json:
        _echo_json(summary)
    else:
        typer.echo(f"saved {idx!r} to {out}")


@index_app.command("search")
def index_search(
    path: Annotated[Path, typer.Argument(help="a saved index")],
    query: Annotated[str, typer.Argument(help="a task description")],
    k: Annotated[int, typer.Option("-k", help="neighbours")] = 5,
    as_json: Annotated[bool, typer.Option("--json")] = False,
):
    """Find the indexed tasks most similar to a description."""
    from ragim.index import TaskIndex

    hits = TaskIndex.load(path).search(query, k)
    if as_json:
        _echo_json([{k_: v for k_, v in h.to_dict().items() if k_ != "params"} for h in hits])
        return
    typer.echo(f"{'score':>6}  {'task_id':<40} description")
    for h in hits:
        typer.echo(f"{h.score:6.3f}  {h.task_id:<40} {h.description}")


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option(help="report folder")] = Path("reports/demo"),
    site: Annotated[str, typer.Option(help="the hospital held out of the index (a value of --group)")] = "Switzerland",
    tasks_dir: Annotated[Path | None, typer.Option(help="your own task folder instead of the heart-disease data (see docs/own_tasks.md)")] = None,
    group: Annotated[str, typer.Option(help="metadata key that defines hospitals")] = "site",
    target_task: Annotated[str | None, typer.Option(help="which held-out task to generate (default: the largest)")] = None,
    embedder: Annotated[str, typer.Option(help="minilm (bundled, offline) | hashing (fast)")] = "minilm",
    fast: Annotated[bool, typer.Option(help="short training, for smoke tests")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
):
    """Zero-shot model for a hospital the index never saw: build, train, generate, explain, score, report."""
    from ragim.demo import run_demo

    result = run_demo(out=out, site=site, tasks_dir=tasks_dir, group=group, target_task=target_task,
                      embedder=embedder, fast=fast, quiet=as_json)
    if as_json:
        _echo_json(result)


def main() -> None:
    """Entry point: ragim errors become one clear line and exit code 2."""
    try:
        app()
    except RagimError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
