"""Hydra side of illada's sweeps: the ``illada-sweep`` Hydra app, its configs (``sweeps/conf``), our sweepers
(``illada_grid``, ``illada_pareto``), the launcher -> executor mapping, plots.

Library code in ``illada/`` never imports this package or Hydra.
"""

import sys
from pathlib import Path

# Hydra discovers plugins by walking the ``hydra_plugins`` namespace package along sys.path; an editable
# install's import hook is invisible to that walk, so the directory holding ours is put on the path.
_PLUGINS = str(Path(__file__).resolve().parent / "plugin")
if _PLUGINS not in sys.path:
    sys.path.append(_PLUGINS)
