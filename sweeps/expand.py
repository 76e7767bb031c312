"""Expand a sweep (command-line overrides + an ablation's ``sweep:`` block) into validated points.

Hydra composes the configs; this module does what Hydra's basic sweeper does (the cartesian product of the
sweep overrides) but without launching anything, so that every point is resolved by
:func:`illada.evaluate.resolve` before the first job is submitted. An invalid point is reported with the
override that caused it.
"""

from __future__ import annotations

import copy
import errno
import itertools
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from illada.evaluate import Point, ResolvedPoint, model_limits, os_error_text, resolve
from illada.loading import DeviceUnavailableError, check_device, resolve_model
from illada.tasks import GENERATION, get_task

CONF_DIR = Path(__file__).resolve().parent / "conf"
ABLATIONS_DIR = Path(__file__).resolve().parent.parent / "ablations"

# Where each Point field comes from in the config (to name the override behind an error).
POINT_SOURCES = {"model": "model.path", "dtype": "model.dtype", "device": "model.device",
                 "attn_backend": "model.attn_backend", "chat": "model.chat", "task": "task.name",
                 "split": "task.split", "limit": "task.limit", "num_fewshot": "task.num_fewshot",
                 "data_path": "task.data_path", "seed": "seed", "batch_size": "batch_size"}


UNSWEEPABLE = {"launcher", "sweep_dir", "name", "on_invalid", "rerun_failed", "dry_run", "plot"}


class SweepError(ValueError):
    """A sweep that cannot run as given; the message names the overrides at fault."""


@dataclass
class PlannedPoint:
    """A validated point and the overrides that produced it (beyond those shared by the whole sweep)."""

    overrides: list[str]
    resolved: ResolvedPoint


@dataclass
class Plan:
    """The expanded sweep: its base config (launcher, store), its valid points, what was dropped."""

    base: DictConfig
    points: list[PlannedPoint]
    fixed: list[str]
    invalid: list[str] = field(default_factory=list)
    duplicates: int = 0


def register_ablations(directory: Path = ABLATIONS_DIR) -> list[str]:
    """Make each ``ablations/NAME.yaml`` selectable as ``+ablation=NAME`` (a global experiment file)."""
    store = ConfigStore.instance()
    names = []
    for path in sorted(directory.glob("*.yaml")):
        store.store(group="ablation", name=path.stem, node=OmegaConf.load(path), package="_global_")
        names.append(path.stem)
    return names


class Composer:
    """Compose configs, once per distinct set of group choices: plain ``key=value`` overrides are applied
    to a copy, as Hydra applies them, which keeps a few hundred points fast to validate."""

    def __init__(self, parser: OverridesParser) -> None:
        self.parser = parser
        self.cache: dict[tuple[str, ...], DictConfig] = {}

    def __call__(self, overrides: Sequence[str]) -> DictConfig:
        parsed = self.parser.parse_overrides(list(overrides))
        values = [o for o in parsed if _is_value_override(o)]
        structural = tuple(o.input_line for o in parsed if not _is_value_override(o))
        if structural not in self.cache:
            self.cache[structural] = compose("config", overrides=list(structural))
        cfg = copy.deepcopy(self.cache[structural])
        for o in values:
            key = o.key_or_group
            if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
                raise SweepError(f"override {o.input_line!r}: there is no {key!r} in the config "
                                 f"(check the spelling; `+{o.input_line}` adds a new key)")
            OmegaConf.update(cfg, key, o.value(), merge=True)
        return cfg


_ABSENT = object()


def _is_value_override(o: Override) -> bool:
    return o.type == OverrideType.CHANGE and "." in o.key_or_group and not o.key_or_group.startswith("hydra.")


def to_point(cfg: DictConfig) -> Point:
    """The :class:`Point` a composed config describes; the task's kind picks ``sampler`` or ``scorer``."""
    generation = get_task(cfg.task.name).kind == GENERATION
    container = lambda node: OmegaConf.to_container(node, resolve=True)  # noqa: E731
    return Point(model=str(cfg.model.path), task=cfg.task.name, split=cfg.task.split, limit=cfg.task.limit,
                 seed=cfg.seed, num_fewshot=cfg.task.num_fewshot, data_path=cfg.task.data_path,
                 sampler=container(cfg.sampler) if generation else {},
                 scorer={} if generation else container(cfg.scorer), chat=cfg.model.chat,
                 dtype=cfg.model.dtype, attn_backend=cfg.model.attn_backend, batch_size=cfg.batch_size,
                 device=cfg.model.device)


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
    sweep_dir = Path(sweep_dir)
    existing = next(p for p in (sweep_dir, *sweep_dir.parents) if os.path.lexists(p))
    if not existing.is_dir():
        reason = f"{os.strerror(errno.ENOTDIR)} ({existing})"
    elif not os.access(existing, os.W_OK | os.X_OK):
        code = errno.EROFS if os.statvfs(existing).f_flag & os.ST_RDONLY else errno.EACCES
        reason = f"{os.strerror(code)} ({existing})"
    else:
        return
    raise SweepError(f"sweep_dir={sweep_dir}: cannot write the sweep's files there: {reason}; "
                     "choose another sweep_dir=... (or ILLADA_SWEEP_ROOT)")


def os_error_line(error: OSError, sweep_dir: str | Path | None) -> str:
    """One line for a filesystem error of the sweep driver: the file, the errno text, the sweep directory."""
    hint = ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "; free space or fix the permissions, then run the same command again to resume"
    return f"{os_error_text(error)} (sweep_dir={sweep_dir}){hint}"


def _grids(parser: OverridesParser, base: DictConfig, cli: Sequence[Override]) -> list[list[list[str]]]:
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
    if axis.key_or_group.split(".")[0] in UNSWEEPABLE:
        raise SweepError(f"sweep {axis.input_line!r}: one sweep has one launcher and one store; "
                         f"run one sweep per value of {axis.key_or_group!r} instead")
    if not axis.is_sweep_override():  # a single value in an ablation's grid: an axis of one
        return [axis.input_line]
    if not axis.is_discrete_sweep():
        raise SweepError(f"sweep {axis.input_line!r}: give a list of values (a,b,c / range() / choice() / "
                         "glob()); intervals need an optimizer, not a grid")
    return [f"{axis.get_key_element()}={v}" for v in axis.sweep_string_iterator()]


@contextmanager
def _hydra() -> Iterator[OverridesParser]:
    """Hydra initialised on ``sweeps/conf`` (ablations registered); yields an override parser."""
    register_ablations()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        yield OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())


def base_config(overrides: Sequence[str]) -> DictConfig:
    """The sweep's base config (its non-sweep overrides composed, no point validated): where its store is,
    how it launches. Cheap, for checks that should come before validating every point."""
    with _hydra() as parser:
        try:
            fixed = [o.input_line for o in parser.parse_overrides(list(overrides)) if not o.is_sweep_override()]
            return Composer(parser)(fixed)
        except (HydraException, OmegaConfBaseException) as e:
            raise SweepError(f"{e}") from None


def plan_sweep(overrides: Sequence[str]) -> Plan:
    """Compose and validate every point of the sweep; raise :class:`SweepError` listing what is wrong.

    With the in-process launcher this process is the job host, so a point whose device is not here (e.g.
    ``model.device=cuda`` without CUDA) is invalid; with a submitit launcher the jobs check it on their node.
    """
    with _hydra() as parser:
        try:
            parsed = parser.parse_overrides(list(overrides))
            fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
            compose_point = Composer(parser)
            base = compose_point(fixed)
            grids = _grids(parser, base, parsed)
        except (HydraException, OmegaConfBaseException) as e:
            raise SweepError(f"{e}") from None
        plan = Plan(base=base, points=[], fixed=fixed)
        errors: list[str] = []
        causes: set[str] = set()
        seen: set[str] = set()
        described: dict[str, Any] = {}
        in_process = OmegaConf.select(base, "launcher.cluster") == "inprocess"
        combos = [combo for grid in grids for combo in itertools.product(*grid)]
        for i, combo in enumerate(combos):
            own = list(combo)
            try:
                point = to_point(compose_point(fixed + own))
                model = resolve_model(point.model)
                if model not in described:
                    described[model] = model_limits(model)
                resolved = resolve(point, *described[model])
                if in_process:
                    check_device(point.device)
            except (ValueError, OSError, DeviceUnavailableError, HydraException, OmegaConfBaseException) as e:
                message = str(e).strip()
                cause = f"caused by {culprit(message, fixed + own)!r}: {message}"
                causes.add(cause)
                errors.append(f"point {i + 1}/{len(combos)} [{' '.join(own) or 'no sweep overrides'}]: {cause}")
                continue
            if resolved.key in seen:
                plan.duplicates += 1
                continue
            seen.add(resolved.key)
            plan.points.append(PlannedPoint(own, resolved))
    if errors and base.on_invalid != "skip" and len(causes) == 1 and "\n" not in next(iter(causes)):
        # one cause (a model that cannot be described, a device that is not there): one line says it all
        raise SweepError(f"{'all ' if len(errors) == len(combos) else ''}{len(errors)} of {len(combos)} points are "
                         f"invalid, {next(iter(causes))}; nothing was run (pass on_invalid=skip to drop invalid points)")
    if errors and base.on_invalid != "skip":
        shown = "\n  ".join(errors[:10])
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise SweepError(f"{len(errors)} of {len(combos)} points are invalid; nothing was run:\n  {shown}{more}\n"
                         "(fix the overrides, or pass on_invalid=skip to drop invalid points)")
    plan.invalid = errors
    return plan
