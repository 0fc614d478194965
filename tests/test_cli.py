"""The command line, end to end on small synthetic data with the fast hashing embedder."""

import json
import re

import numpy as np
import pytest
from conftest import run_console
from typer.testing import CliRunner

from ragim import ModelParams
from ragim.cli import app

runner = CliRunner()


def _ok(args):
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    out = _ok(["index", "build", "--dataset", "synthetic", "--n-tasks", "40", "--embedder", "hashing",
               "--out", str(root / "idx"), "--json"])
    summary = json.loads(out)
    assert summary["n_tasks"] >= 35 and summary["faiss"] == "Flat"
    return root


def test_index_search_table_and_json(built):
    text = _ok(["index", "search", str(built / "idx"), "chronic endocarditis in adults", "-k", "3"])
    assert "score" in text and "syn-" in text
    hits = json.loads(_ok(["index", "search", str(built / "idx"), "chronic endocarditis", "-k", "3", "--json"]))
    assert len(hits) == 3 and {"task_id", "score", "description", "metadata"} <= set(hits[0])


def test_train_generate_explain(built):
    summary = json.loads(_ok(["train", "attention", "--index", str(built / "idx"), "--out", str(built / "gen"),
                              "--max-epochs", "3", "--json"]))
    assert summary["epochs"] == 3
    params = json.loads(_ok(["generate", "Predict fatal outcome in adults with chronic endocarditis",
                             "--index", str(built / "idx"), "--generator", str(built / "gen"),
                             "--save", str(built / "p"), "--json"]))
    assert params["kind"] == "logistic" and params["metadata"]["provenance"]
    again = ModelParams.from_json(json.dumps(params))  # the printed model is a loadable model
    np.testing.assert_allclose(again.vector, ModelParams.load(built / "p").vector, atol=1e-6)
    expl = json.loads(_ok(["explain", str(built / "p"), "--json", "--png", str(built / "coef.png")]))
    assert expl["kind"] == "logistic" and (built / "coef.png").stat().st_size > 1000
    # the plain-text explanation of a generated model names the tasks that shaped it, as --json does
    shown = _ok(["explain", str(built / "p")])
    assert "Neighbour tasks that shaped the model" in shown
    assert all(r["task_id"] in shown for r in expl["provenance"])
    text = _ok(["generate", "renal disease in adolescents", "--index", str(built / "idx")])
    assert "Neighbour tasks that shaped the model" in text
    header = next(
        line for line in text.splitlines() if line.split()[:2] == ["weight", "similarity"]
    )
    rows = text.splitlines()[text.splitlines().index(header) + 2 :]
    weights = [
        float(parts[0])
        for parts in map(str.split, rows)
        if len(parts) > 2
        and re.fullmatch(r"-?\d\.\d{3}", parts[0])
        and re.fullmatch(r"-?\d\.\d{3}", parts[1])
    ]
    assert len(weights) == 10
    # largest weight in size first; a negative weight is a contrast, shown with its sign
    assert [abs(w) for w in weights] == sorted(map(abs, weights), reverse=True)
    assert "negative: a contrast" in text


def _leaf_commands():
    import typer.main

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), {o for p in cmd.params for o in getattr(p, "opts", [])}

    return list(walk(typer.main.get_command(app), []))


def test_every_command_takes_quiet_and_json(built):
    """-q/--quiet and --json are accepted by every command, as by index build (ragim generate
    refused -q: "No such option")."""
    commands = dict(_leaf_commands())
    assert {"generate", "index build", "score", "export", "train sft"} <= set(commands)
    lacking = {c: sorted({"-q", "--quiet", "--json"} - opts) for c, opts in commands.items()}
    assert not {c: o for c, o in lacking.items() if o}
    out = _ok(["generate", "Predict fatal outcome in adults with chronic endocarditis", "--index",
               str(built / "idx"), "-q", "--save", str(built / "pq")])
    assert "Neighbour tasks that shaped the model" in out
    assert json.loads(_ok(["index", "search", str(built / "idx"), "endocarditis", "-q", "--json"]))
    assert _ok(["export", str(built / "pq"), "--csv", str(built / "c.csv"), "--quiet"]) == ""


def test_a_warning_raised_again_in_one_command_is_printed_once(capsys):
    """ragim evaluate printed "values ... more than 8 SDs" (and "only 3 indexed task(s)") once
    per fold or method: each distinct warning is one line, once per command."""
    import warnings

    from ragim import cli_common
    from ragim.errors import DataWarning

    cli_common.SHOWN_WARNINGS.clear()
    text = "values in X lie more than 8 SDs from those the model was fitted on: 'lactate'"
    for _ in range(2):  # two folds, each recording its warnings
        with cli_common.one_line_warnings():
            warnings.warn(text, DataWarning, stacklevel=1)
    cli_common.warn(text)  # and once more, as main's showwarning does
    cli_common.warn("another warning")
    err = capsys.readouterr().err
    assert err.count("more than 8 SDs") == 1 and err.count("another warning") == 1
    assert cli_common.SHOWN_WARNINGS == [text, "another warning"]
    cli_common.SHOWN_WARNINGS.clear()


def test_errors_are_one_clear_line(built, tmp_path):
    result = runner.invoke(app, ["index", "search", str(tmp_path / "missing"), "x"])
    assert result.exit_code != 0
    assert "no artifact at" in str(result.exception) or "no artifact at" in result.output
    result = runner.invoke(app, ["index", "build", "--dataset", "nonsense", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "unknown dataset 'nonsense'" in result.output
    result = runner.invoke(app, ["bench", "nonsense"])
    assert result.exit_code == 2 and "unknown benchmark" in result.output


def test_main_turns_ragim_errors_into_exit_code_2(tmp_path, monkeypatch, capsys):
    import sys

    from ragim import cli

    monkeypatch.setattr(sys, "argv", ["ragim", "index", "search", str(tmp_path / "nope"), "x"])
    with pytest.raises(SystemExit) as err:
        cli.main()
    assert err.value.code == 2
    assert "error: no artifact at" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, says",
    [
        (["train", "grpo", "--generator", "g", "--index", "i", "--out", "{t}/o", "--beta", "-1",
          "--num-generations", "1"],
         "error: --num-generations must be an integer >= 2, got 1; --beta must be a number >= 0, got -1.0\n"),
        (["train", "sft", "--index", "{t}/index", "--out", "{t}/o", "--heldout-fraction", "1.5", "--base-model",
          "tiny"],
         "error: --heldout-fraction must be a number in (0, 1), got 1.5\n"),
    ],
)
def test_a_run_configs_problems_are_said_with_the_commands_options(args, says, tmp_path, monkeypatch, capsys):
    """'invalid GRPOTrainingConfig: heldout_fraction must be ...' named a Python class and field
    that a command-line user never typed."""
    import sys

    from ragim import TaskIndex, cli, datasets

    TaskIndex.build(datasets.synthetic_family(n_tasks=6, n_features=2, seed=0), embedder="hashing",
                    progress=False).save(tmp_path / "index")
    monkeypatch.setattr(sys, "argv", ["ragim", *[a.replace("{t}", str(tmp_path)) for a in args]])
    with pytest.raises(SystemExit) as err:
        cli.main()
    assert err.value.code == 2 and capsys.readouterr().err == says
    assert cli.command_options(["train", "grpo"]) >= {"--beta", "--heldout-fraction", "--num-generations"}
    from ragim.errors import ValidationError

    mixed = ValidationError("invalid LMConfig:", ["k must be >= 0", "top_p must be in (0, 1]"])
    assert cli.in_option_words(mixed, {"--k"}) == "invalid LMConfig: k must be >= 0; top_p must be in (0, 1]"


@pytest.mark.parametrize(
    "args, says",
    [
        (["index", "search", "{t}/nope", "x", "--json"], "no artifact at"),  # a RagimError
        (["generate", "x", "--index", "{t}/nope", "--bogus", "--json"], "No such option: --bogus"),
        (["bench", "nonsense", "--json"], "unknown benchmark 'nonsense'"),  # a BadParameter
    ],
)
def test_with_json_an_error_is_also_a_json_object_on_stdout(args, says, tmp_path, monkeypatch, capsys):
    """--json errors printed only to stderr, leaving stdout empty for a script that reads it."""
    import sys

    from ragim import cli

    argv = [a.replace("{t}", str(tmp_path)) for a in args]
    for as_json in (True, False):
        monkeypatch.setattr(sys, "argv", ["ragim", *(argv if as_json else argv[:-1])])
        with pytest.raises(SystemExit) as err:
            cli.main()
        out = capsys.readouterr()
        assert err.value.code == 2 and says in out.err and out.err.startswith("error: ")
        if as_json:
            payload = json.loads(out.out)
            assert says in payload["error"] and payload["exit_code"] == 2 and payload["warnings"] == []
            assert "error: " + payload["error"] in out.err
        else:
            assert out.out == ""


def _equal_resources(out: dict) -> None:
    """A bench result names its threads (the same on both sides), libraries and device."""
    assert out["threads"]["ours"] == out["threads"]["baseline"] >= 1
    for t, row in out["by_threads"].items():
        assert row["threads"] == {"ours": int(t), "baseline": int(t)}
    env = out["environment"]
    assert env["device"] == out["device"] and env["cpus"] >= 1
    assert env["libraries"] and all({"api", "version", "threads", "package"} <= set(lib) for lib in env["libraries"])
    assert "numpy" in env["versions"]


def test_bench_fit_json_contract():
    out = json.loads(_ok(["bench", "fit", "--n-tasks", "60", "--threads", "1,2", "--json"]))
    for key in ("name", "n", "ours", "baseline", "ratio", "max_abs_diff", "threads", "by_threads", "device",
                "environment"):
        assert key in out
    assert out["name"] == "fit" and out["n"] == 60 and "description" in out["ours"] and out["ratio"] > 0
    assert out["max_abs_diff"] < 1e-3
    _equal_resources(out)
    assert set(out["by_threads"]) == {"1", "2"} and out["threads"] == {"ours": 1, "baseline": 1}
    assert out["by_threads"]["1"]["ratio"] == out["ratio"]


def test_bench_retrieval_json_contract():
    from ragim.bench import bench_retrieval, resources_line

    out = bench_retrieval(n_tasks=3000, n_queries=50, dim=32, threads=(1, 2))
    assert out["name"] == "retrieval" and out["n"] == 3000 and out["recall_at_10"] == 1.0
    assert out["baseline"]["description"] and out["ratio"] > 0
    _equal_resources(out)
    assert out["indices"]["Flat"]["by_threads"]["2"]["speedup_vs_numpy"] == out["by_threads"]["2"]["ratio"]
    line = resources_line(out)
    assert line.startswith("threads: 1 (ours) = 1 (baseline); BLAS/OpenMP: ") and "device: cpu" in line


def test_bench_rejects_bad_thread_counts():
    result = runner.invoke(app, ["bench", "fit", "--threads", "0,x"])
    assert result.exit_code == 2 and "--threads must be positive integers" in result.output


def test_evaluate_json_records_contract():
    out = json.loads(_ok(["evaluate", "--dataset", "synthetic", "--n-tasks", "40", "--embedder", "hashing",
                          "--methods", "neighbor-mean,pooled,true-model", "--folds", "2", "--json"]))
    assert out and {"dataset", "protocol", "method", "k_shot", "metric", "mean", "ci_low", "ci_high",
                    "n_tasks"} <= set(out[0])
    assert {r["method"] for r in out} == {"neighbor-mean", "pooled", "true-model"}
    assert {r["dataset"] for r in out} == {"synthetic"}


def _semicolon_task_folder(root, n_tasks=2, sep=";"):
    """A task folder whose CSV files use ``sep`` (';') as the field separator."""
    import numpy as np
    import pandas as pd

    (root / "data").mkdir(parents=True)
    ids = [f"t{i}" for i in range(n_tasks)]
    groups = ["adults", "children"]
    (root / "descriptions.csv").write_text(
        f"task_id{sep}description\n" + "".join(f"{t}{sep}sepsis in {groups[i % 2]} {i}\n" for i, t in enumerate(ids))
    )
    rng = np.random.default_rng(0)
    for t in ids:
        x = rng.normal(size=60)
        y = (rng.random(60) < 1 / (1 + np.exp(-x))).astype(int)
        pd.DataFrame({"lactate": x.round(2), "y": y}).to_csv(root / "data" / f"{t}.csv", sep=sep, index=False)
    return root


def test_index_build_reads_a_semicolon_separated_task_folder_with_sep(tmp_path):
    root = _semicolon_task_folder(tmp_path / "tasks")
    args = ["index", "build", "--dataset", str(root), "--embedder", "hashing", "-q"]
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "i1")])
    assert refused.exit_code != 0 and "pass --sep ';'" in refused.output + str(refused.exception)
    built = runner.invoke(app, [*args, "--out", str(tmp_path / "i2"), "--sep", ";"])
    assert built.exit_code == 0, built.output
    assert json.loads((tmp_path / "i2" / "config.json").read_text())["n_tasks"] == 2


def test_evaluate_reads_a_semicolon_separated_task_folder_with_sep(tmp_path):
    root = _semicolon_task_folder(tmp_path / "tasks", n_tasks=6)
    args = ["evaluate", "--dataset", str(root), "--embedder", "hashing", "--methods", "pooled,neighbor-mean",
            "--folds", "2", "--json"]
    refused = runner.invoke(app, args)
    assert refused.exit_code != 0 and "pass --sep ';'" in refused.output + str(refused.exception)
    out = json.loads(_ok([*args, "--sep", ";"]))
    assert {r["method"] for r in out} == {"pooled", "neighbor-mean"} and out[0]["n_tasks"] == 6


def test_sep_names_the_data_files_and_descriptions_csv_keeps_its_own_separator(tmp_path):
    """European data files (';') beside a comma descriptions.csv: --sep ';' builds the index
    (it used to say that descriptions.csv looks comma-separated: pass --sep ','), and the help
    says what --sep covers."""
    import pandas as pd

    root = _semicolon_task_folder(tmp_path / "tasks")
    desc = pd.read_csv(root / "descriptions.csv", sep=";")
    desc.to_csv(root / "descriptions.csv", index=False)
    out = tmp_path / "i"
    _ok(["index", "build", "--dataset", str(root), "--embedder", "hashing", "-q", "--sep", ";", "--out", str(out)])
    assert json.loads((out / "config.json").read_text())["n_tasks"] == 2
    for cmd in (["index", "build"], ["evaluate"], ["demo"]):
        text = " ".join(runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "300"}).output.split())
        assert "data files" in text and "descriptions.csv's own comma, semicolon or tab is detected" in text


def test_sep_takes_the_tab_a_shell_passes_and_is_refused_for_a_bundled_dataset(tmp_path):
    root = _semicolon_task_folder(tmp_path / "tabs", sep="\t")
    args = ["index", "build", "--dataset", str(root), "--embedder", "hashing", "-q", "--out", str(tmp_path / "i")]
    refused = runner.invoke(app, args)
    assert refused.exit_code != 0 and "pass --sep '\\t'" in refused.output + str(refused.exception)
    # what that message says to type: in a shell, '\t' is a backslash and a t
    assert runner.invoke(app, [*args, "--sep", "\\t"]).exit_code == 0
    ignored = runner.invoke(app, ["evaluate", "--dataset", "synthetic", "--n-tasks", "8", "--sep", ";"],
                            env={"COLUMNS": "200"})
    assert ignored.exit_code != 0 and "--sep, --na-values and --thousands apply to a task folder" in ignored.output


def test_evaluate_reports_what_each_fold_did_as_notes_not_warnings():
    """The stack weights of each fold were printed as 'warning:' lines; they are 'note:' lines
    (and none with -q), and the evaluation frame keeps them in attrs['info'], unwarned."""
    import warnings

    from ragim import datasets, evaluate

    tasks = datasets.synthetic_family(n_tasks=24, n_features=3, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = evaluate.zero_shot(tasks, methods=["ragim-statistical", "pooled"], folds=2,
                                embedder="hashing", progress=False)
    info = df.attrs["info"]
    assert len(info) == 2 and all(n.startswith("ragim-statistical fold") for n in info)
    assert not [w for w in caught if "ragim-statistical fold" in str(w.message)]
    args = ["evaluate", "--dataset", "synthetic", "--n-tasks", "24", "--embedder", "hashing",
            "--methods", "ragim-statistical,pooled", "--folds", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "note: ragim-statistical fold 0" in res.stderr and "warning: ragim-statistical" not in res.stderr
    assert "note:" not in runner.invoke(app, [*args, "-q"]).stderr


def test_evaluate_leave_group_out_names_the_option_and_the_keys_of_a_task_folder(tmp_path, monkeypatch, capsys):
    """A task folder whose descriptions.csv has a 'site' column: leave-group-out holds sites out
    by default (as ragim.evaluate does), and a key no task has is refused naming --group (not
    Python's group=) and the keys the tasks do have."""
    import pandas as pd

    root = _semicolon_task_folder(tmp_path / "tasks", n_tasks=6, sep=",")
    desc = pd.read_csv(root / "descriptions.csv")
    desc.assign(site=["North", "South", "East"] * 2).to_csv(root / "descriptions.csv", index=False)
    args = ["evaluate", "--dataset", str(root), "--embedder", "hashing", "--methods", "pooled",
            "--protocol", "leave-group-out", "--json"]
    code, stdout, _ = run_console([*args, "--group", "hospital"], monkeypatch, capsys)
    assert code == 2
    assert json.loads(stdout)["error"] == (
        "no task has the metadata key 'hospital'; pass --group with one of the tasks' keys ['site']"
    )
    out = json.loads(_ok(args))
    assert {r["method"] for r in out} == {"pooled"} and out[0]["protocol"] == "leave-group-out"


def test_table_cells_are_printed_as_written_not_read_as_markup(capsys):
    """rich read a cell such as 'cp[asymptomatic]' as markup and printed 'cp', so two levels of
    one feature showed as identical rows."""
    from ragim.cli_common import print_table

    print_table([["cp[asymptomatic]", "+0.666"], ["cp[typical]", "-0.531"], ["[bold]x[/bold]", "1"]],
                ["term", ("coef", "right")])
    out = capsys.readouterr().out
    assert "cp[asymptomatic]" in out and "cp[typical]" in out and "[bold]x[/bold]" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        # before: a Python traceback (numpy's "number sections must be larger than 0.") and exit 1
        (["--max-targets", "0"], "--max-targets must be positive, got 0"),
        (["--seed", "-1", "--dataset", "heart-disease"], "--seed must be >= 0, got -1"),
        # before: ignored without --protocol leave-group-out
        (["--group", "group"], "ragim evaluate --protocol leave-group-out"),
        # before: "(no results)" and exit 0
        (["--k-shots", "4", "--methods", "pooled"], "no method to score: pooled: a zero-shot"),
    ],
)
def test_evaluate_refuses_bad_settings_in_one_line(extra, message, monkeypatch, capsys):
    args = ["evaluate", "--dataset", "synthetic", "--n-tasks", "8", "--embedder", "hashing",
            "--folds", "2", "-q", *extra]
    code, out, err = run_console(args, monkeypatch, capsys)
    assert code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
