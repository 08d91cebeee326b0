"""The fresh parent interpreter of one cold start: `python -m forkspawn.parent CONFIG RESULT`.

Its state is ours to control, unlike that of asv's benchmark process. It prepares the
requested parent state, lets the engine adapter start and measure one worker group, and
writes the `Run` as JSON (atomically, so the caller sees a whole result or none).
Keep imports light: a `bare` parent must not import torch, and spawned workers re-import
this module as `__mp_main__`.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from .gcwatch import install_from_env

install_from_env()  # a spawned child of a watched engine (gcwatch.py): count its collections too


def main(config_path: str, result_path: str) -> int:
    # Imported here, not at module level: spawned and forkserver ranks re-import this module as
    # `__mp_main__` before their first stamp, and should pay for nothing they do not use.
    from .atomic import write_json_atomic
    from .config import Config
    from .record import Run

    config = Config.from_json(Path(config_path).read_text())
    try:
        from . import engines, parent_state, ray_cluster

        state = parent_state.prepare(config)
        adapter = engines.adapter(config.engine)
        with ray_cluster.for_run(config, adapter.ray_head(config)) as cluster:  # Ray's method needs one before the start request
            run = adapter.run_once(config, state)
        if cluster and cluster["local"]:
            run.notes.append(f"local Ray head started in {cluster['start_s']:.1f} s, before the start request")
    except Exception as exc:
        from .worker import exception_line

        run = Run(status="error", error=f"{exception_line(exc)} (in the parent interpreter)",
                  traceback=traceback.format_exc().strip())
    write_json_atomic(Path(result_path), run.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
