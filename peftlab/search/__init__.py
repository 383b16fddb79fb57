"""Honest hyperparameter selection from a grid sweep or an Optuna study on the search split, and its hand-off.

CLI::

    python -m peftlab.search select <search dir> [--out DIR] [--name NAME] [--keys optim.lr,...] [--force]
    python -m peftlab.search optuna [train overrides] search=<space>        (see peftlab/tune.py)

``select`` reads every ``results.json`` under the search dir. All must be ``data.split=search`` runs (VTAB-1k
train800 -> val200, FGVC train -> val): a ``split=final`` result is refused, because test accuracy never selects
anything. Per task the runs are grouped by their configuration (the run identity without seed); the configuration
with the best final-epoch validation accuracy (``reported.value``, mean over seeds) wins; ties go to the smaller
learning rate, as in VPT, then to the smaller other values. The selection records the COMPLETE configuration of the
chosen run (every semantic key, not only those that varied) as a ``method_data`` config, written beside the search's
outputs (``<search dir>/selection/method_data/<name>.yaml``) or under ``--out``, and prints the command that runs
the final (``split=final``) runs with it, which works as printed.

Modules: ``selection`` (read and check the results, select per task), ``handoff`` (the ``method_data`` file and the
final-run command), ``cli``; the Optuna driver is ``peftlab/tune.py``.
"""

from peftlab.search.cli import main
from peftlab.search.handoff import final_command, method_data_yaml
from peftlab.search.selection import Choice, SearchError, Trial, select, select_from_sweep

__all__ = ["Choice", "SearchError", "Trial", "final_command", "main", "method_data_yaml", "select", "select_from_sweep"]
