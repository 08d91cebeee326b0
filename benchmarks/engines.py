"""vLLM (offline `LLM`, and `vllm serve`) and Xinference under each start method (and vLLM's
labelled fork override).

Each engine lives in an environment of its own (mk/engines.mk, mk/ASV-MATRIX.md): run these
classes with that environment's Python (`asv run -E repo:.venv-vllm/bin/python --bench
'^engines\\.VllmServe'`; `^engines\\.Vllm(Startup|Phases|Memory|Throughput)` for the offline engine),
or let FORKSPAWN_ENGINES pick them in asv-built environments. Elsewhere their configurations are
skipped (the adapter reports the engine unavailable).
"""

from forkspawn.engines import vllm, vllm_common, vllm_serve, xinference

from . import common as suite


def _grid_methods(adapter_methods: tuple[str, ...]) -> tuple[str, ...]:
    """An engine adapter's METHODS, less fork on a CPU: vLLM's CPU platform forces spawn (inside
    Xinference and `vllm serve` too), so an asked-for fork would measure spawn again."""
    return tuple(m for m in adapter_methods if suite.SUITE.on_gpu or m != "fork")


class _Vllm:
    engine = "vllm"
    # vLLM has no forkserver. On CPU it always forces spawn, so an asked-for fork measures spawn
    # again (the tests show it): there the grid has spawn and the explicit fork override instead.
    # ray: vLLM's Ray executor (workers as actors of a local head, or of RAY_ADDRESS's cluster)
    methods = _grid_methods(vllm.METHODS)
    # On GPUs the main series is vLLM's default (its default executor: `uni` at TP 1, torch.compile
    # and CUDA graphs, with a compile cache warm from earlier starts); labelled variants (`full`
    # measures them, and the deploy queue from a torch parent, mk/deploy-queue.sh): the `mp` executor (a
    # worker process even at TP 1, the layout of TP > 1), eager mode, gc.freeze() before LLM(...), fresh empty
    # compile caches every start (`coldcache`: never mixed with warm), and a SIGKILL of the worker
    # (`killworker`) or the engine core (`killcore`) mid-decode.
    _eager = {vllm.KWARGS_KEY: {"enforce_eager": True}}
    _cold = {vllm_common.COMPILE_CACHE_KEY: "cold"}
    _mp = {vllm_common.EXECUTOR_KEY: "mp"}
    # a worker process to kill needs the mp executor (vLLM's default at TP 1 runs the model in the engine core)
    _kill = {"killworker": {vllm.FAULT_KEY: "rank0:decode:kill", **_mp},
             "killcore": {vllm.FAULT_KEY: "engine-core:decode:kill"}}
    variants = ({"fork-mp": ("fork", _mp), "spawn-mp": ("spawn", _mp),
                 "fork-eager": ("fork", _eager), "spawn-eager": ("spawn", _eager),
                 "fork-gcfreeze": ("fork", {vllm.GC_FREEZE_KEY: True}),
                 "fork-coldcache": ("fork", _cold), "spawn-coldcache": ("spawn", _cold),
                 **{f"{m}-{k}": (m, extra) for k, extra in _kill.items() for m in ("fork", "spawn")}} if suite.SUITE.on_gpu else
                {"fork-override": ("fork", {vllm.OVERRIDE_KEY: True}),
                 "ray-override": ("ray", {vllm.RAY_OVERRIDE_KEY: True})})
    # a cold start takes about a minute on 2 cores: the parent states that differ (device ones) on GPUs only
    states = suite.parent_states(with_device_states=True) if suite.SUITE.on_gpu else ["bare"]
    # torch.compile takes 30 s or more of every CPU cold start here, engine work that no start
    # method avoids: the default and quick profiles leave it out, and the record's config says so
    options = {vllm.KWARGS_KEY: {"enforce_eager": True}} if suite.SUITE.profile.cpu_eager and not suite.SUITE.on_gpu else {}


class _VllmServe:
    """`vllm serve`: the same grid, but the server runs in its own interpreter, where no override
    can reach vLLM's CPU platform: spawn only on CPU; no Ray path here."""
    engine = "vllm-serve"
    methods = _grid_methods(vllm_serve.METHODS)
    states = ["bare"]  # the server is exec'd: our parent's state never reaches it


class _Xinference:
    """The server and its model processes are exec'd: our parent's state and start method never
    reach them (/proc shows Xinference's own choice), so one state and, on CPU, one method suffice."""
    engine = "xinference"
    methods = _grid_methods(xinference.METHODS)
    states = ["bare"]
    tps = list(suite.SUITE.tps) if suite.SUITE.on_gpu else [1]  # its CPU path (Transformers) has no tensor parallelism


_PROCESSES = {"vllm": ["group", "parent", "engine-core", "ray"],
              "vllm-serve": ["group", "server", "engine-core"],
              "xinference": ["group", "parent", "server", "supervisor", "model", "engine-core"]}


def _memory(engine: str) -> list:
    ranks = [f"rank{r}" for r in range(max(list(suite.SUITE.tps)))]
    return [_PROCESSES[engine] + ranks, ["uss", "pss", "rss"] + (["gpu"] if suite.SUITE.on_gpu else [])]


# Each class names its engine's grid first (a plain class: asv's Grid reads it through the MRO).
class VllmStartup(_Vllm, suite.Startup):
    pass


class VllmPhases(_Vllm, suite.Phases):
    extra_params = [list(vllm.PHASES[1:])]


class VllmMemory(_Vllm, suite.Memory):
    extra_params = _memory("vllm")


class VllmThroughput(_Vllm, suite.Throughput):
    pass


class VllmServeStartup(_VllmServe, suite.Startup):
    pass


class VllmServePhases(_VllmServe, suite.Phases):
    extra_params = [list(vllm_serve.PHASES[1:])]


class VllmServeMemory(_VllmServe, suite.Memory):
    extra_params = _memory("vllm-serve")


class VllmServeThroughput(_VllmServe, suite.Throughput):
    pass


class XinferenceStartup(_Xinference, suite.Startup):
    pass


class XinferencePhases(_Xinference, suite.Phases):
    extra_params = [list(xinference.PHASES[1:])]


class XinferenceMemory(_Xinference, suite.Memory):
    extra_params = _memory("xinference")


class XinferenceThroughput(_Xinference, suite.Throughput):
    pass
