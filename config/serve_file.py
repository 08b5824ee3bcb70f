"""Reading a Serve config file (``serve_config.yaml``, ``configs/*.yaml``): the one loader used by
the launcher and by every offline command that needs the app's args. Ray-free."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from config.args import AppArgs


@dataclass(frozen=True)
class ServeFile:
    path: Path
    raw: dict[str, Any]  # the file as Serve reads it

    @property
    def applications(self) -> list[dict[str, Any]]:
        apps: list[dict[str, Any]] = self.raw["applications"]
        return apps

    def app_args(self, name: str | None = None) -> AppArgs:
        """The typed args of the named application (the first one by default)."""
        apps = [a for a in self.applications if name in (None, a.get("name"))]
        if not apps:
            raise SystemExit(f"{self.path}: no application named {name!r}")
        return AppArgs.model_validate(apps[0].get("args") or {})


def load_serve_config(path: str | Path) -> ServeFile:
    path = Path(path)
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or not raw.get("applications"):
        raise SystemExit(f"{path}: not a Serve config file (no 'applications')")
    return ServeFile(path=path, raw=raw)
