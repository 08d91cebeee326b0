"""vLLM (offline `LLM`, and `vllm serve`) and Xinference under each start method (and vLLM's
labelled fork override).

Each engine lives in an environment of its own (mk/engines.mk, mk/ASV-MATRIX.md): run these
classes with that environment's Python (`asv run -E existing:.venv-vllm/bin/python --bench
'^engines\\.VllmServe'`; `^engines\\.Vllm(Startup|Phases|Memory|Throughput)` for the offline engine),
or let FORKSPAWN_ENGINES pick them in asv-built environments. Elsewhere their configurations are
skipped (the adapter reports the engine unavailable).
"""

from forkspawn import asvsuite as suite
from forkspawn.engines import vllm, vllm_serve, xinference

_VLLM = dict(
    engine="vllm",
    # vLLM has no forkserver. On CPU it always forces spawn, so an asked-for fork measures spawn
    # again (the tests show it): there the grid has spawn and the explicit fork override instead.
    # ray: vLLM's Ray executor (workers as actors of a local head, or of RAY_ADDRESS's cluster)
    methods=("fork", "spawn", "ray") if suite.ON_GPU else ("spawn", "ray"),
    variants={} if suite.ON_GPU else {"fork-override": ("fork", {vllm.OVERRIDE_KEY: True}),
                                      "ray-override": ("ray", {vllm.RAY_OVERRIDE_KEY: True})},
    # a cold start takes about a minute on 2 cores: the parent states that differ (device ones) on GPUs only
    states=suite.parent_states(with_device_states=True) if suite.ON_GPU else ["bare"],
)
# `vllm serve`: the same grid, but the server runs in its own interpreter, where no override can
# reach vLLM's CPU platform: spawn only on CPU.
_VLLM_SERVE = dict(engine="vllm-serve", methods=tuple(m for m in _VLLM["methods"] if m != "ray"), states=_VLLM["states"])
# The server and its model processes are exec'd: our parent's state and start method never reach
# them (/proc shows Xinference's own choice), so one state and, on CPU, one method suffice.
_XINF = dict(engine="xinference", methods=("fork", "spawn") if suite.ON_GPU else ("spawn",), states=["bare"])
_PROCESSES = {"vllm": ["group", "parent", "engine-core", "ray"],
              "vllm-serve": ["group", "server", "engine-core"],
              "xinference": ["group", "parent", "server", "supervisor", "model", "engine-core"]}


def _memory(engine: str) -> list:
    ranks = [f"rank{r}" for r in range(max(suite.tp_sizes()))]
    return [_PROCESSES[engine] + ranks, ["uss", "pss", "rss"] + (["gpu"] if suite.ON_GPU else [])]


class VllmStartup(suite.Startup):
    engine, methods, variants, states = _VLLM["engine"], _VLLM["methods"], _VLLM["variants"], _VLLM["states"]


class VllmPhases(suite.Phases):
    engine, methods, variants, states = _VLLM["engine"], _VLLM["methods"], _VLLM["variants"], _VLLM["states"]
    extra_params = [list(vllm.PHASES[1:])]


class VllmMemory(suite.Memory):
    engine, methods, variants, states = _VLLM["engine"], _VLLM["methods"], _VLLM["variants"], _VLLM["states"]
    extra_params = _memory("vllm")


class VllmThroughput(suite.Throughput):
    engine, methods, variants, states = _VLLM["engine"], _VLLM["methods"], _VLLM["variants"], _VLLM["states"]


class VllmServeStartup(suite.Startup):
    engine, methods, states = _VLLM_SERVE["engine"], _VLLM_SERVE["methods"], _VLLM_SERVE["states"]


class VllmServePhases(suite.Phases):
    engine, methods, states = _VLLM_SERVE["engine"], _VLLM_SERVE["methods"], _VLLM_SERVE["states"]
    extra_params = [list(vllm_serve.PHASES[1:])]


class VllmServeMemory(suite.Memory):
    engine, methods, states = _VLLM_SERVE["engine"], _VLLM_SERVE["methods"], _VLLM_SERVE["states"]
    extra_params = _memory("vllm-serve")


class VllmServeThroughput(suite.Throughput):
    engine, methods, states = _VLLM_SERVE["engine"], _VLLM_SERVE["methods"], _VLLM_SERVE["states"]


class XinferenceStartup(suite.Startup):
    engine, methods, states = _XINF["engine"], _XINF["methods"], _XINF["states"]


class XinferencePhases(suite.Phases):
    engine, methods, states = _XINF["engine"], _XINF["methods"], _XINF["states"]
    extra_params = [list(xinference.PHASES[1:])]


class XinferenceMemory(suite.Memory):
    engine, methods, states = _XINF["engine"], _XINF["methods"], _XINF["states"]
    extra_params = _memory("xinference")


class XinferenceThroughput(suite.Throughput):
    engine, methods, states = _XINF["engine"], _XINF["methods"], _XINF["states"]
