"""Hydra's entry to illada's sweepers: ``hydra/sweeper=illada_grid`` (``sweeps/grid_sweeper.py``) and
``hydra/sweeper=illada_pareto`` (``sweeps/pareto_sweeper.py``).

Hydra only instantiates plugins defined under the ``hydra_plugins`` namespace package; ``sweeps/__init__.py``
puts this directory's parent on ``sys.path`` so that an editable install finds it too.
"""

from hydra.core.config_store import ConfigStore

from sweeps import grid_sweeper, pareto_sweeper


class GridSweeper(grid_sweeper.GridSweeper):
    __doc__ = grid_sweeper.GridSweeper.__doc__


class ParetoSweeper(pareto_sweeper.ParetoSweeper):
    __doc__ = pareto_sweeper.ParetoSweeper.__doc__


for name, node in (("illada_grid", grid_sweeper.GridSweeperConf), ("illada_pareto", pareto_sweeper.ParetoSweeperConf)):
    ConfigStore.instance().store(group="hydra/sweeper", name=name, node=node, provider="illada")
