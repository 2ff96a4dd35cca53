"""Validation results: one check per property, printable or as JSON; failing checks fail the run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["pass", "fail", "warn", "skip"]


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    path: str
    kind: str
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: Status, detail: str, **data: Any) -> Check:
        check = Check(name, status, detail, data)
        self.checks.append(check)
        return check

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def to_json(self) -> str:
        return json.dumps({"path": self.path, "kind": self.kind, "ok": self.ok, "checks": [asdict(c) for c in self.checks]},
                          indent=2, default=str)

    def render(self) -> str:
        marks = {"pass": "ok  ", "fail": "FAIL", "warn": "warn", "skip": "skip"}
        width = max((len(c.name) for c in self.checks), default=0)
        lines = [f"{self.path} ({self.kind})"]
        lines += [f"  {marks[c.status]}  {c.name:<{width}}  {c.detail}" for c in self.checks]
        lines.append("valid" if self.ok else f"INVALID: {sum(c.status == 'fail' for c in self.checks)} check(s) failed")
        return "\n".join(lines)
