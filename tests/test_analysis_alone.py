"""`analysis` stands alone: it runs where torch, psutil and NVML cannot be imported (a desk
machine with pandas, matplotlib, numpy and asv_runner only). A fresh venv lends this one's
packages through a .pth file (offline: nothing is installed) and its sitecustomize makes
`import torch` (and psutil, pynvml) raise."""

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "h100-tp1"
BLOCKER = '''
import sys
BLOCKED = {"torch", "psutil", "pynvml"}
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: analysis must not import it")
        return None
sys.meta_path.insert(0, _Blocker())
'''


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = tmp_path_factory.mktemp("analysis-venv")
    venv.EnvBuilder(with_pip=False).create(env)
    py = env / "bin" / "python"
    purelib = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # this checkout first, then this venv's packages (pandas, matplotlib, numpy, asv_runner, ...)
    (purelib / "lend.pth").write_text(f"{ROOT}\n{sysconfig.get_paths()['purelib']}\n")
    (purelib / "sitecustomize.py").write_text(BLOCKER)
    assert subprocess.run([py, "-c", "import torch"], capture_output=True).returncode != 0
    return py


@pytest.mark.parametrize("args", [["table", str(REPORT)], ["summary", str(REPORT)], ["headline", str(REPORT)],
                                  ["plan", str(REPORT), "--tp", "1"], ["report", str(REPORT / "results"), "-o", "{out}"]])
def test_the_analysis_cli_runs_without_torch(bare_python: Path, args: list[str], tmp_path: Path) -> None:
    args = [a.replace("{out}", str(tmp_path / "report")) for a in args]
    out = subprocess.run([bare_python, "-m", "analysis", *args], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stderr[-2000:]
    mine = subprocess.run([sys.executable, "-m", "analysis", *args[:1], *args[1:]], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path) if args[0] != "report" else None
    if mine is not None:  # the same output as in the full environment
        assert out.stdout == mine.stdout
