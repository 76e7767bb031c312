"""``illada-search``: deprecated alias (for one release) of ``illada-sweep -m hydra/sweeper=illada_pareto``.

    illada-search ARGS   ==   illada-sweep -m +ablation=search ARGS       (search=NAME becomes +ablation=NAME)

It prints the new spelling once and runs the same Hydra app (:mod:`sweeps.app`) with the Pareto sweeper.
"""

from __future__ import annotations

import sys
from typing import Sequence

from sweeps.app import main as app_main


def translate(args: Sequence[str]) -> list[str]:
    """The ``illada-sweep`` arguments of an ``illada-search`` command line."""
    out = [f"+ablation={'search' if a == 'search=frontier' else a.split('=', 1)[1]}" if a.startswith("search=")
           else a for a in args]
    if not any(a.lstrip("+").startswith("ablation=") for a in out):
        out.insert(0, "+ablation=search")  # illada-search's default search, now ablations/search.yaml
    if not any(a.startswith("hydra/sweeper=") for a in out):
        out.insert(0, "hydra/sweeper=illada_pareto")
    if "-m" not in out and "--multirun" not in out and not any(a.startswith("hydra.mode=") for a in out):
        out.insert(0, "-m")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    args = translate(sys.argv[1:] if argv is None else argv)
    print(f"illada-search is deprecated and will be removed in the next release; use: illada-sweep {' '.join(args)}",
          file=sys.stderr)
    app_main(args)


if __name__ == "__main__":
    main()
