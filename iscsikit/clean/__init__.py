"""Decommission a node and garbage-collect stale iSCSI state, safely (``iscsikit clean``).

Four parts, one job each:

* :mod:`~iscsikit.clean.collect` reads what exists into a :class:`~iscsikit.clean.model.Survey`
  (DB records, sessions, devices, multipath maps, who uses them, connector attachments);
* :mod:`~iscsikit.clean.plan` decides, without any I/O, what to remove and in which order;
* :mod:`~iscsikit.clean.apply` carries the plan out, re-checking as it goes;
* :mod:`~iscsikit.clean.backup` writes the tarball of removed records, and restores it.

Example (what ``iscsikit clean --stale-only --yes`` does)::

    from iscsikit.clean import Executor, Selection, collect, plan
    from iscsikit.db.database import Database
    from iscsikit.iscsiadm import Iscsiadm
    from iscsikit.runner import Runner

    db = Database("/etc/iscsi")
    survey = collect(db, state_dir="/var/lib/iscsikit")
    todo = plan(survey, Selection(stale_only=True))
    for action in todo.actions:
        print(action.order, action.kind, action.detail, action.blocked_by)
    runner = Runner()
    report = Executor(db, runner=runner, iscsiadm=Iscsiadm(runner), state_dir="/var/lib/iscsikit").apply(todo)
    print(report.backup, report.counts())

See docs/cleanup.md for the user guide.
"""

from iscsikit.clean.apply import ApplyReport, Executor, Outcome
from iscsikit.clean.backup import Backup, RestoreReport, read_backup, restore_backup, write_backup
from iscsikit.clean.collect import collect
from iscsikit.clean.desired import DesiredEntry, load_desired, parse_desired
from iscsikit.clean.model import Survey
from iscsikit.clean.plan import Action, Kind, Plan, Selection, plan

__all__ = [
    "Action",
    "ApplyReport",
    "Backup",
    "DesiredEntry",
    "Executor",
    "Kind",
    "Outcome",
    "Plan",
    "RestoreReport",
    "Selection",
    "Survey",
    "collect",
    "load_desired",
    "parse_desired",
    "plan",
    "read_backup",
    "restore_backup",
    "write_backup",
]
