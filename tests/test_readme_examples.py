"""The docs' examples run as written. Every command of the ```bash blocks and every ```python block of README.md,
ablations/README.md, sweeps/README.md and docs/*.md is read from the doc itself (``illada.benchmarks.readme``, the same
extraction the timing script uses), so doc and test cannot drift. Those that need no cluster, GPU or 8B checkpoint
run as a new user runs them: in document order, in one fresh directory per doc (``.venv`` linked in, the default
``runs/sweeps`` root), so a later command reads what an earlier one wrote. A command the doc says runs for
minutes (its full-size version) runs with its item limit cut. Every other command must be listed in SKIPPED with
the reason, so a new doc command has to be classified here. Also Hydra's own conveniences on the app."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from illada.benchmarks import readme as docs
from illada.store import SweepStore
from sweeps.app import main

ROOT = docs.ROOT
SETUP = "setup: creates .venv"
SUITE = "the test suite itself"
GPU, SLURM, CKPT = "needs a GPU", "needs a Slurm cluster", "needs an 8B checkpoint"
BENCH = "a benchmark: a measurement that runs for minutes"
SERVER = "a web server that runs until stopped (pip install optuna-dashboard)"
FRAGMENT = "a fragment: model, ids, prompt_ids, ctx_ids are the reader's own"

# (doc, first line of the command or block) -> why it is not run here
SKIPPED = {
    ("README.md", ".venv/bin/python -m pytest -q"): SUITE,
    ("docs/models.md", "python block: import illada"): CKPT,
    ("docs/benchmarks.md", ".venv/bin/python -m illada.benchmarks.engine"): BENCH,
    ("docs/benchmarks.md", ".venv/bin/python -m illada.benchmarks.samplers"): BENCH,
    ("docs/benchmarks.md", ".venv/bin/python -m illada.benchmarks.embedded"): BENCH,
    ("docs/benchmarks.md", ".venv/bin/python -m sweeps.benchmark overhead"): BENCH,
    ("docs/benchmarks.md", ".venv/bin/python -m sweeps.benchmark_search hypervolume"): BENCH,
    ("docs/benchmarks.md", ".venv/bin/python -m analysis.bench"): BENCH,
    ("docs/benchmarks.md", ".venv/bin/python -m illada.benchmarks.readme"): BENCH,
    ("docs/benchmarks.md", ".venv/bin/python -m illada.benchmarks.decoders"): BENCH,
    ("docs/benchmarks.md", ".venv/bin/python -m illada.benchmarks.caches"): BENCH,
    ("docs/benchmarks.md", ".venv/bin/python -m illada.benchmarks.families"): BENCH,
    ("docs/benchmarks.md", ".venv/bin/python -m illada.benchmarks.lm_eval"): BENCH,
    ("docs/methods.md", "python block: from illada.sampling import SamplerSettings, generate"): FRAGMENT,
    ("README.md", ".venv/bin/illada-sweep -m +ablation=scoring model=illada-8b-base "
                  "hydra/launcher=submitit_slurm hydra.launcher.partition=gpu"): CKPT,
    ("README.md", ".venv/bin/illada-sweep -m +ablation=search model=illada-8b-base task=gsm8k "
                  "sampler=llada_gsm8k hydra/launcher=submitit_slurm hydra.launcher.partition=gpu "
                  "hydra.launcher.gpus_per_node=1 hydra.sweeper.max_in_flight=16 hydra.sweeper.n_trials=200"): CKPT,
    ("README.md", "optuna-dashboard runs/sweeps/frontier_search/optuna.journal"): SERVER,
    ("README.md", ".venv/bin/illada-sweep -m +ablation=frontier hydra/launcher=submitit_slurm "
                  "hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 hydra.launcher.timeout_min=60"): SLURM,
    ("ablations/README.md", "illada-sweep -m +ablation=caches hydra/launcher=submitit_slurm "
                            "hydra.launcher.partition=gpu"): SLURM,
    ("sweeps/README.md", "illada-sweep -m +ablation=frontier hydra/launcher=example_site --dry-run"): SLURM,
}

EXAMPLES = {doc: docs.examples(doc) for doc in docs.DOCS}
RUNNABLE = [(doc, i) for doc, exs in EXAMPLES.items() for i, ex in enumerate(exs) if not ex.skip]


def test_every_doc_command_is_classified():
    """A command added to a doc either runs in test_doc_command_runs or is listed here with its reason."""
    skipped = {(ex.doc, ex.label): ex.skip for exs in EXAMPLES.values() for ex in exs if ex.skip}
    assert skipped == SKIPPED
    assert len(RUNNABLE) >= 25
    assert any(ex.text == ".venv/bin/illada-sweep -m +ablation=frontier" for ex in EXAMPLES["README.md"][:1])


def test_every_command_states_its_time():
    """Each README command a newcomer can run here says roughly how long it takes, and runs in about a minute
    unless it is a full-size one (then a short version is beside it and is what the doc test runs)."""
    for doc, i in RUNNABLE:
        ex = EXAMPLES[doc][i]
        if ex.kind == "bash":  # python blocks: a time on one of their lines
            assert docs.stated_seconds(ex.stated), f"{doc}:{ex.line}: no time stated for `{ex.label}`"
        seconds = docs.stated_seconds(ex.stated) or 0
        assert seconds <= 120 or docs.is_long(ex), f"{doc}:{ex.line}: {ex.stated} for `{ex.label}`"
    long = [ex for doc, i in RUNNABLE if docs.is_long(ex := EXAMPLES[doc][i])]
    assert [docs.shortened(ex).text for ex in long] == [".venv/bin/illada-sweep -m +ablation=scoring task.limit=3"]


def _sweep_name(ablation: str) -> str:
    return yaml.safe_load((ROOT / "ablations" / f"{ablation}.yaml").read_text())["name"]


def test_paths_the_docs_read_are_written_before():
    """Every `runs/...` path a doc command reads is one an earlier command of the same doc writes: sweeps go to
    runs/sweeps/<the ablation's name> (README once said runs/frontier), illada-eval and evaluate() to their --out."""
    for doc, exs in EXAMPLES.items():
        written: set[str] = set()
        for ex in exs:
            if ex.skip:
                continue
            if re.search(r"illada-sweep\b", ex.text) and not re.search(r"--(help|dry-run)", ex.text):
                m = re.search(r"\+ablation=(\w+)", ex.text)
                written.add(f"runs/sweeps/{_sweep_name(m.group(1)) if m else 'default'}")
            written.update(re.findall(r"(?:--out |--output_path |evaluate\(resolved, \")(runs/[\w/]+)", ex.text))
            for path in re.findall(r"runs/[\w./]+", ex.text):
                assert any(path == w or path.startswith(w + "/") for w in written), f"{doc}:{ex.line} reads {path}"


class _DocRun:
    """One doc's commands run in order in one directory; each result is kept for the test of that command."""

    def __init__(self, doc: str, cwd: Path):
        self.doc, self.cwd, self.results = doc, docs.workdir(cwd), {}

    def upto(self, index: int):
        for i, ex in enumerate(EXAMPLES[self.doc][: index + 1]):
            if not ex.skip and i not in self.results:
                self.results[i], _ = docs.run(docs.shortened(ex), self.cwd, timeout=1800)
        return self.results[index]


@pytest.fixture(scope="module")
def doc_runs(tmp_path_factory):
    return {doc: _DocRun(doc, tmp_path_factory.mktemp(doc.replace("/", "_").replace(".", "_"))) for doc in docs.DOCS}


@pytest.mark.slow
@pytest.mark.parametrize("doc, index", RUNNABLE, ids=[f"{d}:{EXAMPLES[d][i].line}" for d, i in RUNNABLE])
def test_doc_command_runs(doc, index, doc_runs):
    done = doc_runs[doc].upto(index)
    assert done.returncode == 0 and "Traceback" not in done.stderr, \
        f"{EXAMPLES[doc][index].label}\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_readme_outputs(doc_runs):
    """What the README's commands promise is there after running them in order."""
    run = doc_runs["README.md"]
    run.upto(len(EXAMPLES["README.md"]) - 1)
    sweeps = run.cwd / "runs" / "sweeps"
    assert (sweeps / "frontier" / "pareto.png").stat().st_size > 0
    assert len(SweepStore(sweeps / "frontier").records()) >= 10
    assert len(SweepStore(sweeps / "scoring").records()) == 6  # 3 tasks x 2 scorers
    # three illada-eval points; the python block's evaluate() is the first command's point again
    assert len(list((run.cwd / "runs" / "demo").glob("*.items.parquet"))) == 3
    assert (sweeps / "frontier_search" / "optuna.journal").stat().st_size > 0
    assert list((run.cwd / "figures").glob("pareto_latency.*"))
    for report in ("frontier", "budget", "search"):
        out = run.cwd / "reports" / report
        assert (out / "report.md").exists() and list(out.rglob("*.png")), report


def _run(args: list[str]) -> None:
    try:
        main(args)
    except SystemExit as e:
        assert e.code in (0, None), f"illada-sweep {' '.join(args)}: {e.code}"


def test_main_job_ends_in_the_pareto_plot(tmp_path, monkeypatch):
    """README: `illada-sweep -m +ablation=frontier` ... ends with runs/sweeps/frontier/pareto.png."""
    monkeypatch.setenv("ILLADA_SWEEP_ROOT", str(tmp_path))
    _run(["-m", "+ablation=frontier", "task.limit=4"])
    store = SweepStore(tmp_path / "frontier")
    assert (store.root / "pareto.png").stat().st_size > 0 and len(store.records()) >= 10
    multirun = yaml.safe_load((store.root / "multirun.yaml").read_text())
    assert multirun["hydra"]["mode"] == "MULTIRUN" and "+ablation=frontier" in multirun["hydra"]["overrides"]["task"]


def test_hydra_conveniences(tmp_path, monkeypatch, capsys):
    """--help lists the config groups, --hydra-help the sweepers and launchers, --cfg job and --info answer,
    shell completion completes our groups."""
    _run(["--help"])
    out = capsys.readouterr().out
    assert "illada-sweep" in out and "ablation: caches, decoders, frontier" in out and "task: " in out
    _run(["--hydra-help"])
    out = capsys.readouterr().out
    assert "hydra/sweeper: basic, illada_grid, illada_pareto" in out
    assert "hydra/launcher: basic, example_site, submitit_local, submitit_slurm" in out
    _run(["--cfg", "job", "+ablation=steps_blocks"])
    assert yaml.safe_load(capsys.readouterr().out)["name"] == "steps_blocks"
    _run(["--cfg", "hydra", "-p", "hydra.sweeper", "+ablation=search"])
    assert "ParetoSweeper" in capsys.readouterr().out  # an ablation selects the sweeper
    _run(["--info", "defaults"])
    assert "hydra/sweeper/illada_grid" in capsys.readouterr().out
    monkeypatch.setenv("COMP_LINE", "illada-sweep hydra/sweeper=illada_")
    _run(["-sc", "query=bash"])
    assert "hydra/sweeper=illada_grid hydra/sweeper=illada_pareto" in capsys.readouterr().out


def test_documents_link_no_file_outside_the_repository():
    """A relative path in a README or pyproject.toml must lead to a file of this repository (a fresh clone has
    nothing beside it)."""
    docs_ = [ROOT / "pyproject.toml", *sorted(ROOT.glob("*.md")), *sorted(ROOT.glob("*/README.md"))]
    dead = []
    for doc in docs_:
        for ref in re.findall(r"(?<![\w.])(\.\./[\w./-]+)", doc.read_text()):
            target = (doc.parent / ref.rstrip(".")).resolve()
            if ROOT.resolve() not in target.parents or not target.exists():
                dead.append(f"{doc.relative_to(ROOT)}: {ref}")
    assert not dead, dead
