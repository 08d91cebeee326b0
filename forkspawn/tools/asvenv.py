"""asv's `existing` environment, named without the machine's paths: an asv plugin (asv.conf.json's
`plugins`), used as `asv run -E repo:.venv-vllm/bin/python` (`make bench`).

asv names an `existing` environment after its interpreter's absolute path
(`existing-py_work_main_.venv-vllm_bin_python`), so the same environment gets another name, and
its results another file, in every checkout and on every machine. This one is named after the
path inside the project (`existing-py_.venv-vllm_bin_python`): the same everywhere, and still an
`existing-...` name, which the sidecar's `existing` records join (analysis.load; results named
the old way are read as the same environment there: load.env_key). The results' `python`
parameter, which asv's HTML shows, is that path too.

Imported by asv only (it needs asv itself); nothing else of the harness imports it.
"""

from __future__ import annotations

import os

from asv.environment import ExistingEnvironment, get_env_name


class RepoEnvironment(ExistingEnvironment):
    """An existing interpreter of this project (a venv the Makefile built), as `existing` runs it."""

    tool_name = "repo"

    def __init__(self, conf, executable, requirements, tagged_env_vars):  # noqa: ANN001 (asv's signature)
        # asv applies its requirement matrix to every type but `existing`; an existing interpreter
        # has what it has, so the matrix (and its FORKSPAWN_ENGINES) is left to environments asv builds
        super().__init__(conf, executable, {}, {})

    @property
    def where(self) -> str:
        """The interpreter's path in the project (asv runs in the folder of asv.conf.json), or its
        absolute path where it is outside the project (as `existing` names it)."""
        path = os.path.relpath(self._executable)
        return self._executable if path.startswith(os.pardir) else path

    @property
    def name(self) -> str:
        path = self.where if os.path.isabs(self.where) else os.path.sep + self.where
        return get_env_name(ExistingEnvironment.tool_name, path.replace(os.path.sep, "_"), {}, {})

    @property
    def python(self) -> str:
        """What asv stores as the results' `python` parameter (its HTML's python selector)."""
        return self.where
