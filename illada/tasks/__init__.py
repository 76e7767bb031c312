"""Evaluation tasks on real benchmark data, with lm-evaluation-harness prompt formats.

>>> from illada.tasks import get_task
>>> data = get_task("piqa").load(limit=200, seed=0)        # the same 200 validation questions on every run
>>> item = data[0]; item.pairs()                            # [(context, " solution 1"), (context, " solution 2")]

Multiple choice: ``piqa``, ``arc_easy``, ``arc_challenge``, ``hellaswag``, ``winogrande``, ``mmlu``
(items are :class:`MCItem`); generation: ``gsm8k`` (:class:`GenItem`). Generated: ``arithmetic`` and
``arithmetic_mc``, the embedded model's task family (:mod:`illada.tasks.arithmetic`). See each module's docstring for its prompt
format and split, and :mod:`illada.tasks.sources` for where the data comes from. A new task is one line:
``register(MyTask())``.
"""

from illada.tasks.arc import ARCChallenge, ARCEasy
from illada.tasks.arithmetic import Arithmetic, ArithmeticMC
from illada.tasks.base import (GENERATION, MULTIPLE_CHOICE, GenerationTask, GenItem, Item, MCItem,
                               MultipleChoiceTask, Task, TaskData, TaskError, stable_subsample)
from illada.tasks.gsm8k import GSM8K
from illada.tasks.hellaswag import HellaSwag
from illada.tasks.mmlu import MMLU
from illada.tasks.piqa import PIQA
from illada.tasks.registry import TASKS, get_task, register
from illada.tasks.sources import Source, TaskDataNotFound
from illada.tasks.winogrande import WinoGrande

for _task in (PIQA(), ARCEasy(), ARCChallenge(), HellaSwag(), WinoGrande(), MMLU(), GSM8K(), Arithmetic(),
              ArithmeticMC()):
    register(_task)

__all__ = [
    "ARCChallenge", "ARCEasy", "Arithmetic", "ArithmeticMC", "GSM8K", "HellaSwag", "MMLU", "PIQA", "WinoGrande",
    "GENERATION", "MULTIPLE_CHOICE", "TASKS", "GenItem", "GenerationTask", "Item", "MCItem", "MultipleChoiceTask",
    "Source", "Task", "TaskData", "TaskDataNotFound", "TaskError", "get_task", "register", "stable_subsample",
]
