"""Hydra's entry to illada's grid sweeper: ``hydra/sweeper=illada_grid`` (code: ``sweeps/grid_sweeper.py``).

Hydra only instantiates plugins defined under the ``hydra_plugins`` namespace package; ``sweeps/__init__.py``
puts this directory's parent on ``sys.path`` so that an editable install finds it too.
"""

from hydra.core.config_store import ConfigStore

from sweeps import grid_sweeper


class GridSweeper(grid_sweeper.GridSweeper):
    __doc__ = grid_sweeper.GridSweeper.__doc__


ConfigStore.instance().store(group="hydra/sweeper", name="illada_grid", node=grid_sweeper.GridSweeperConf,
                             provider="illada")
