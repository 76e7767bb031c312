"""Hydra's entry to illada's Pareto sweeper: ``hydra/sweeper=illada_pareto`` (code: ``sweeps/pareto_sweeper.py``).

Hydra only instantiates plugins defined under the ``hydra_plugins`` namespace package; ``sweeps/__init__.py``
puts this directory's parent on ``sys.path`` so that an editable install finds it too.
"""

from hydra.core.config_store import ConfigStore

from sweeps import pareto_sweeper


class ParetoSweeper(pareto_sweeper.ParetoSweeper):
    __doc__ = pareto_sweeper.ParetoSweeper.__doc__


ConfigStore.instance().store(group="hydra/sweeper", name="illada_pareto", node=pareto_sweeper.ParetoSweeperConf,
                             provider="illada")
