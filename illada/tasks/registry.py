"""The task registry: ``get_task(name)``; ``register(task)`` adds one (e.g. a generated synthetic task)."""

from __future__ import annotations

from illada.tasks.base import Task, TaskError

TASKS: dict[str, Task] = {}


def register(task: Task, *, replace: bool = False) -> Task:
    """Add ``task`` under ``task.name`` (``replace=True`` to overwrite one already there); returns it."""
    if task.name in TASKS and not replace:
        raise TaskError(f"task {task.name!r} is already registered (pass replace=True to overwrite it)")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task called ``name``."""
    try:
        return TASKS[name]
    except KeyError:
        raise TaskError(f"task={name!r} is unknown; registered tasks: {sorted(TASKS)}") from None
