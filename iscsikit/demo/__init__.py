"""``iscsikit demo``: iscsikit's whole job, end to end, on embedded defaults.

A replicated target starts (three ``iscsikit replica serve`` processes and ``iscsikit target
serve``), open-iscsi discovers it and logs in, the disk appears, ext4 goes on it, files are
written and checksummed, a replica is killed with SIGKILL, writes go on, the replica comes
back and is rebuilt, every file and every replica's image is verified, and then everything
is unmounted, logged out, stopped and cleaned, and checked to be gone. When this host's
kernel has no iSCSI initiator the same flow runs in a throwaway VM.

Parts: :mod:`~iscsikit.demo.flow` (the step runner), :mod:`~iscsikit.demo.steps` (the
steps), :mod:`~iscsikit.demo.run` (here or in a VM), :mod:`~iscsikit.demo.vmmode` (the VM
side), :mod:`~iscsikit.demo.render` (terminal, plain and event output),
:mod:`~iscsikit.demo.report` (the JSON report). See docs/demo.md.

Example::

    from iscsikit.demo import DemoOptions, run_demo
    from iscsikit.demo.render import PlainRenderer

    report = run_demo(DemoOptions(), PlainRenderer())
    print(report.to_json()["ok"])
"""

from iscsikit.demo.context import DemoOptions
from iscsikit.demo.report import Report, StepResult
from iscsikit.demo.run import run_demo, run_local

__all__ = ["DemoOptions", "Report", "StepResult", "run_demo", "run_local"]
