"""What every stage returns: a typed result that is also JSON (Airflow XCom, reports, `fusionrec status`)."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


@dataclasses.dataclass
class StageResult:
    """Base for stage results; subclasses are plain dataclasses of small values (paths, counts, metrics)."""

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    def save(self, reports_dir: Path, stage: str) -> Path:
        """Write the result to ``reports_dir/<stage>.json`` (the latest run of each stage)."""
        reports_dir.mkdir(parents=True, exist_ok=True)
        path = reports_dir / f"{stage}.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        return path


def load_report(reports_dir: Path, stage: str) -> dict[str, Any] | None:
    path = reports_dir / f"{stage}.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_label(run_id: str | None) -> str:
    """A file-safe label of a run: the orchestrator's run id, else the current UTC time (to the microsecond)."""
    label = run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "run"


class StageInputError(ValueError):
    """A stage cannot run on what it was given (missing earlier output, unknown model, wrong protocol for the
    data); the message is one line saying what to do."""
