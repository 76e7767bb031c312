"""From Hydra overrides to illada points: the sweep's grids, a composed config as a Point, the override to blame.

Used by both sweepers (``sweeps/grid_sweeper.py``, ``sweeps/pareto_sweeper.py``): the grids are the cartesian
product of the sweep overrides (Hydra's grammar, as ``-m`` takes them) and of an ablation's ``sweep:`` block;
:func:`culprit` names the override behind an invalid point.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, ListConfig, OmegaConf

from illada.atomic import unwritable_reason
from illada.evaluate import LM_EVAL_PREFIX, Point, ResolvedPoint, os_error_text, task_kind
from illada.tasks import GENERATION

CONF_DIR = Path(__file__).resolve().parent / "conf"
ABLATIONS_DIR = Path(__file__).resolve().parent.parent / "ablations"

# Where each Point field comes from in the config (to name the override behind an error).
POINT_SOURCES = {"model": "model.path", "dtype": "model.dtype", "device": "model.device",
                 "attn_backend": "model.attn_backend", "chat": "model.chat", "task": "task.name",
                 "split": "task.split", "limit": "task.limit", "num_fewshot": "task.num_fewshot",
                 "data_path": "task.data_path", "seed": "seed", "batch_size": "batch_size"}


# One sweep has one store and one job layout: these keys take one value per sweep.
UNSWEEPABLE = {"sweep_dir", "name", "threads", "sweep", "ablation"}


class SweepError(ValueError):
    """A sweep that cannot run as given; the message names the overrides at fault."""


class UnknownSettingError(SweepError):
    """An override of a key the config does not have (a typo): wrong for every point, so the sweep stops."""


def unknown_setting(override: str, key: str, config: DictConfig) -> UnknownSettingError:
    """The error for ``override`` of ``key``, absent from ``config``: the closest existing setting of the same
    group when there is one (``did you mean 'steps'?``); else how to add a new key."""
    import difflib

    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(config, parent) if parent else config
    known = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(leaf, known, n=1, cutoff=0.6)
    if close:
        return UnknownSettingError(f"override {override!r}: unknown setting {leaf!r}"
                                   f"{f' of {parent!r}' if parent else ''}; did you mean {close[0]!r}?")
    if parent in ("sampler", "scorer"):  # `+sampler.x` would be refused too: the settings are fixed
        return UnknownSettingError(f"override {override!r}: unknown setting {leaf!r} of {parent!r}; known: "
                                   f"{', '.join(sorted(known))}")
    return UnknownSettingError(f"override {override!r}: there is no {key!r} in the config (check the spelling; "
                               f"`+{override}` adds a new key)")


@dataclass
class PlannedPoint:
    """A validated point and the overrides that produced it (beyond those shared by the whole sweep)."""

    overrides: list[str]
    resolved: ResolvedPoint


@dataclass
class Plan:
    """The expanded sweep: its base config (the store), its valid points, what was dropped."""

    base: DictConfig
    points: list[PlannedPoint]
    fixed: list[str]
    invalid: list[str] = field(default_factory=list)
    duplicates: int = 0
    unused: set[tuple[str, str]] = field(default_factory=set)  # (settings group, task) a duplicate swept unread


def unused_group(resolved: ResolvedPoint, overrides: Sequence[str]) -> str | None:
    """The settings group among ``overrides`` that the point's task does not read (``scorer`` on a generation
    task, ``sampler`` on a multiple-choice one), or None."""
    unread = "scorer" if resolved.kind == GENERATION else "sampler"
    for o in overrides:
        if o.lstrip("+~").split("=", 1)[0].split(".")[0] == unread:
            return unread
    return None


def register_ablations(directory: Path = ABLATIONS_DIR) -> list[str]:
    """Make each ``ablations/NAME.yaml`` selectable as ``+ablation=NAME`` (a global experiment file)."""
    store = ConfigStore.instance()
    names = []
    for path in sorted(directory.glob("*.yaml")):
        store.store(group="ablation", name=path.stem, node=OmegaConf.load(path), package="_global_")
        names.append(path.stem)
    return names


#: The config nodes a :class:`Point` is made of (:func:`point_of` reads nothing else).
POINT_NODES = ("model", "task", "sampler", "scorer", "seed", "batch_size", "threads")


def to_point(cfg: DictConfig) -> Point:
    """The :class:`Point` a composed config describes; the task's kind picks ``sampler`` or ``scorer``."""
    return point_of({k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                     for k in POINT_NODES if k in cfg})


def point_of(values: dict) -> Point:
    """The :class:`Point` of a composed config's :data:`POINT_NODES` as plain (resolved) values."""
    model, task = values["model"], values["task"]
    name = f"{LM_EVAL_PREFIX}{task['name']}" if task.get("lm_eval") else task["name"]
    generation = task_kind(name) == GENERATION
    return Point(model=str(model["path"]), task=name, split=task["split"], limit=task["limit"],
                 seed=values["seed"], num_fewshot=task["num_fewshot"], data_path=task["data_path"],
                 sampler=values.get("sampler") or {} if generation else {},
                 scorer={} if generation else values.get("scorer") or {}, chat=model["chat"],
                 dtype=model["dtype"], attn_backend=model["attn_backend"], batch_size=values["batch_size"],
                 device=model["device"], threads=values.get("threads", 1))  # threads is part of the key


_FIELD = re.compile(r"^(?:(SamplerSettings|ScoringSettings)\.)?([A-Za-z_][\w.]*)\s*(?:=|\s)")
_SETTINGS_GROUP = {"SamplerSettings": "sampler", "ScoringSettings": "scorer"}


def culprit(message: str, overrides: Sequence[str]) -> str:
    """The override most likely behind an error message that starts with ``field=value`` (illada's
    convention): the override of that key, else of its config group, else an ablation, else the defaults.
    ``overrides`` are in the order they were applied."""
    m = _FIELD.match(message)
    if m:
        group, name = m.groups()
        key = f"{_SETTINGS_GROUP[group]}.{name}" if group else POINT_SOURCES.get(name, name)
        latest_first = list(reversed(overrides))  # the last override of a key is the one that holds
        keys = [o.split("=", 1)[0].lstrip("+~") for o in latest_first]
        for candidate in (key, key.split(".")[0]):
            for o, k in zip(latest_first, keys):
                if k == candidate:
                    return o
    for o in overrides:
        if o.lstrip("+").startswith("ablation="):
            return o
    return "the defaults (sweeps/conf)"


def check_writable(sweep_dir: str | Path) -> None:
    """Raise :class:`SweepError` naming ``sweep_dir`` and the reason unless this process can create the sweep's
    files there; nothing is created (a dry run writes nothing)."""
    reason = unwritable_reason(sweep_dir)
    if reason is not None:
        raise SweepError(f"sweep_dir={sweep_dir}: cannot write the sweep's files there: {reason}; "
                         "choose another sweep_dir=... (or ILLADA_SWEEP_ROOT)")


def os_error_line(error: OSError, sweep_dir: str | Path | None) -> str:
    """One line for a filesystem error of the sweep driver: the file, the errno text, the sweep directory."""
    hint = ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "; free space or fix the permissions, then run the same command again to resume"
    return f"{os_error_text(error)} (sweep_dir={sweep_dir}){hint}"


def grids(parser: OverridesParser, base: DictConfig, cli: Sequence[Override]) -> list[list[list[str]]]:
    """The sweep's grids: ``sweep:`` is one grid (key -> values) or a list of grids (their union); each grid
    is a list of axes, each axis the ``key=value`` overrides of its values. Command-line sweeps join every
    grid, and a command-line override of a key replaces that key's axis."""
    spec = base.get("sweep") or {}
    grids = list(spec) if isinstance(spec, ListConfig) else [spec]
    cli_keys = {o.key_or_group for o in cli}
    out = []
    for grid in grids:
        axes = []
        for key, expr in grid.items():
            if key in cli_keys:
                continue
            if isinstance(expr, ListConfig):
                expr = ",".join("null" if v is None else str(v) for v in expr)
            axes.append(parser.parse_override(f"{key}={expr}"))
        axes.extend(o for o in cli if o.is_sweep_override())
        out.append([_axis_values(a) for a in axes])
    return out


def _axis_values(axis: Override) -> list[str]:
    if axis.key_or_group.split(".")[0] in UNSWEEPABLE or axis.is_hydra_override():
        raise SweepError(f"sweep {axis.input_line!r}: one sweep has one launcher and one store; "
                         f"run one sweep per value of {axis.key_or_group!r} instead")
    if not axis.is_sweep_override():  # a single value in an ablation's grid: an axis of one
        return [axis.input_line]
    if not axis.is_discrete_sweep():
        raise SweepError(f"sweep {axis.input_line!r}: give a list of values (a,b,c / range() / choice() / "
                         "glob()); intervals need an optimizer, not a grid")
    values = [f"{axis.get_key_element()}={v}" for v in axis.sweep_string_iterator()]
    if not values:  # the grid would be empty: no point, and a run would rewrite the sweep's plan with none
        raise SweepError(f"sweep {axis.input_line!r}: has no values, so the grid has no points; nothing was run "
                         "or written")
    return values
