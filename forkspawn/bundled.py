"""The offline engine bundle installed into the running interpreter's venv, as measurements see it.

`python -m forkspawn.tools.bundle install` (forkspawn/tools/bundle.py, the build and install tool) writes a
summary of the bundle into the venv (`SUMMARY`); every measurement reads it here: the versions
its records carry and the variables its fresh parents need. Standard library only, and light:
every measurement imports it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SUMMARY = "forkspawn-bundle.json"  # in the venv's root (sys.prefix)


def installed() -> dict | None:
    """The summary of the bundle installed into the running interpreter's venv, or None."""
    try:
        return json.loads((Path(sys.prefix) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def record_versions() -> dict[str, str]:
    """What every record's `versions` says of the installed bundle: its engines, and what was
    left out of them on purpose (packages the box provides are not listed; the manifest has all)."""
    info = installed()
    if info is None:
        return {}
    chosen = [item["what"] for item in info["left_out"] if not item["why"].startswith("the box has it")]
    return {"bundle": f"{info['schema']} " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
            "bundle_left_out": "; ".join(chosen)}


def runtime_env() -> tuple[dict[str, str], list[str]]:
    """The variables the installed bundle needs because of what it left out, and a note each;
    a variable already set keeps its value (the note says so)."""
    env, notes = {}, []
    for item in (installed() or {}).get("env", []):
        name, value = item["name"], item["value"]
        if name in os.environ and os.environ[name] != value:
            notes.append(f"offline bundle wants {name}={value} ({item['why']}); kept {os.environ[name]!r} from the environment")
            continue
        env[name] = value
        notes.append(f"offline bundle: {name}={value} ({item['why']})")
    return env, notes
