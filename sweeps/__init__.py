"""Hydra side of illada's sweeps: configs (``sweeps/conf``), the ``illada-sweep`` driver, launchers, plots.

Library code in ``illada/`` never imports this package or Hydra.
"""
