"""What a demo run produces: one :class:`StepResult` per step and the :class:`Report` around them.

The JSON shape is the CLI contract (``iscsikit demo --json``)::

    {"steps": [{"name": "discover", "ok": true, "seconds": 0.41,
                "detail": "127.0.0.1:39461 offers iqn.2026-11.io.iscsikit:demo-3f2a1c09",
                "data": {"targets": [...]}}, ...],
     "ok": true, "vm": false, "skipped": [], "interrupted": false, "seconds": 97.3, ...}

``name``, ``ok``, ``seconds`` and ``detail`` are the promise; ``data`` holds what a program
checking the run wants (device path, checksums, rebuild figures), and ``skipped`` names the
steps that did not run because an earlier one failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Report", "StepResult"]


@dataclass(frozen=True, slots=True)
class StepResult:
    """How one step went. ``detail`` says what was done or, when ``ok`` is false, what broke."""

    name: str
    ok: bool
    seconds: float
    detail: str
    data: dict[str, Any] = field(default_factory=dict)
    cleanup: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
            "data": self.data,
            "cleanup": self.cleanup,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StepResult:
        return cls(
            name=str(doc["name"]),
            ok=bool(doc["ok"]),
            seconds=float(doc["seconds"]),
            detail=str(doc.get("detail", "")),
            data=dict(doc.get("data") or {}),
            cleanup=bool(doc.get("cleanup", False)),
        )


@dataclass(slots=True)
class Report:
    """The whole run: steps in the order they ran, and the facts around them."""

    steps: list[StepResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False
    vm: bool = False
    vm_reason: str | None = None
    workdir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every step that ran passed, none was skipped and nobody pressed Ctrl-C."""
        return bool(self.steps) and all(s.ok for s in self.steps) and not self.skipped and not self.interrupted

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    @property
    def first_failure(self) -> StepResult | None:
        return next((s for s in self.steps if not s.ok), None)

    def step(self, name: str) -> StepResult | None:
        return next((s for s in self.steps if s.name == name), None)

    def to_json(self) -> dict[str, Any]:
        failed = self.first_failure
        return {
            "steps": [s.to_json() for s in self.steps],
            "ok": self.ok,
            "failed_step": failed.name if failed else None,
            "skipped": list(self.skipped),
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
            "vm": self.vm,
            "vm_reason": self.vm_reason,
            "workdir": self.workdir,
            **self.extra,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Report:
        known = {"steps", "ok", "failed_step", "skipped", "interrupted", "seconds", "vm", "vm_reason", "workdir"}
        return cls(
            steps=[StepResult.from_json(s) for s in doc.get("steps") or []],
            skipped=[str(s) for s in doc.get("skipped") or []],
            interrupted=bool(doc.get("interrupted", False)),
            vm=bool(doc.get("vm", False)),
            vm_reason=doc.get("vm_reason"),
            workdir=doc.get("workdir"),
            extra={k: v for k, v in doc.items() if k not in known},
        )
