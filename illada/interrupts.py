"""Ctrl-C told apart from a failure.

A Ctrl-C that lands while a library cleans up (Hydra restoring its job config, an OmegaConf node half-set)
can come out as another exception, raised while the ``KeyboardInterrupt`` was being handled. Caught as a
point's failure, it would write a false failure record ("AttributeError ...") and swallow the Ctrl-C: the
sweep or search would go on. Every place that turns an exception into a failure record asks
:func:`reraise_interrupt` first.
"""

from __future__ import annotations


def caused_by_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``KeyboardInterrupt`` or was raised while one was being handled (its chain of
    ``__cause__`` / ``__context__`` holds one, suppressed context included)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        todo += [e.__cause__, e.__context__]
    return False


def reraise_interrupt(exc: BaseException) -> None:
    """Raise ``KeyboardInterrupt`` (from ``exc``) when ``exc`` is an interrupt in disguise; else return."""
    if caused_by_interrupt(exc):
        raise KeyboardInterrupt(f"Ctrl-C, surfaced as {type(exc).__name__}: {exc}") from exc
