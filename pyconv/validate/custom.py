"""Checks for folders that carry their own modeling code (an ``auto_map``): the code the folder ships is
what loaded and loading said nothing; then the checks of the model's family (``Family.checks``), which
say that the behaviour the family promises holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import registry
from .report import Report


def custom_checks(folder: Path, model: Any, ids: Any, messages: list[str], report: Report) -> None:
    """Runs the family's checks when the folder has an ``auto_map``; nothing for other folders."""
    config = json.loads((folder / "config.json").read_text())
    if "auto_map" not in config:
        return
    modules = {ref.split(".")[0] for ref in config["auto_map"].values()}
    loaded = type(model).__module__.rsplit(".", 1)[-1]
    report.add("custom code", "pass" if loaded in modules else "fail",
               f"{type(model).__name__} from the folder's {loaded}.py (auto_map names {', '.join(sorted(modules))})")
    report.add("init warnings", "fail" if messages else "pass",
               f"{len(messages)} warning(s) while loading" + (f", first: {messages[0][:200]}" if messages else ""))
    checks = registry.model_checks(config.get("model_type"))
    if checks is not None:
        checks.run(folder, model, ids, report)
