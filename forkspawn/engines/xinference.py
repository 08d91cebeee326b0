"""Xinference adapter: a local server (supervisor + worker), one custom LLM launched and served.

Per run, inside the fresh parent: start `xinference-local` on 127.0.0.1 and a free port in a new
process group, with a private XINFERENCE_HOME (auth database, secrets, logs and registrations
live and die with the run); create the initial admin from the setup token the server logs and
log in (credentials are random per run and never written to the record); register the
checkpoint as a custom LLM under a unique name; launch it (engine `vLLM` with
tensor_parallel_size on CUDA, with VLLM_WORKER_MULTIPROC_METHOD passed in the model's `envs`;
`Transformers` on CPU); generate through the OpenAI-compatible /v1/completions; terminate the
model; stop the server by process group. Nothing is left running.

Phases (rank 0, seconds since the server start request): server_ready (/status answers),
launch_requested, model_started / engine_core_started / workers_started (kernel start times of
Xinference's model process and of vLLM's processes under it, on GPU boxes), ready (launch
returned: the model answers). `time_to_ready_s` is the launch
time (launch request to model ready), which is what the issue measures; the server start is a
phase. Throughput: fixed-length greedy completions, timed in windows of a short and a long request
(engines/decode.py); concurrent requests make the batch. The vLLM engine honours `ignore_eos` and
`min_tokens`; the Transformers engine reads neither and always stops at the checkpoint's declared
EOS, so it is served a copy of the checkpoint that declares none (`without_eos`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import psutil

from .. import lifecycle, machine, memory
from ..checkpoint import ModelSpec, ensure_tokenizer, resolve_checkpoint
from ..clock import now
from ..config import Config
from ..methods import FORK, SPAWN, apply, verify
from ..record import Phase, ProcessMemory, Run
from ..worker import exception_line
from .contract import no_ray_head
from .serving import HTTP_TIMEOUT_S, completion_throughput, http_json, one_line, wait_answering

PHASES = ("start_requested", "server_ready", "launch_requested", "model_started", "engine_core_started",
          "workers_started", "ready")
VLLM_ROLES = ("engine-core", "rank")
SERVER_START_TIMEOUT_S = 180.0


def unavailable() -> str | None:
    if importlib.util.find_spec("xinference") is None:
        return "Xinference is not installed in this environment (build it with `make .venv-xinference/.done`)"
    if shutil.which("xinference-local", path=str(Path(sys.executable).parent)) is None:
        return "the xinference-local command is missing from this environment"
    return None


def engine_version() -> str:
    try:
        return f"xinference {importlib.metadata.version('xinference')}"
    except importlib.metadata.PackageNotFoundError:
        return "xinference unknown"


METHODS = (FORK, SPAWN)  # vLLM's inside Xinference (GPU); on CPU the method does not reach its model process
ray_head = no_ray_head  # no Ray launch path here


def run_once(config: Config, parent_state: dict[str, Any]) -> Run:
    run = Run(parent_state=parent_state, engine_version=engine_version())
    checkpoint = ensure_tokenizer(resolve_checkpoint(config.model, config.cache_path()), config.cache_path())
    on_gpu = config.device == "cuda"
    if not on_gpu and config.tp > 1:
        return run.fail("skipped", "Xinference's Transformers engine (the CPU path) has no tensor parallelism; TP=1 only")
    if not on_gpu:
        run.notes.append("CPU: engine Transformers runs the model in one process started by Xinference; "
                         "the requested start method does not apply (method_used says how it was started)")
    home = Path(tempfile.mkdtemp(prefix="forkspawn-xinf-"))
    server = Server(home)
    try:
        t0 = now()
        server.start()
        run.phases.append(Phase(0, "start_requested", 0.0))
        server.wait_ready(SERVER_START_TIMEOUT_S)
        run.phases.append(Phase(0, "server_ready", now() - t0))
        server.login()
        if not on_gpu:
            checkpoint = without_eos(checkpoint, home / "served")
            run.notes.append(EOS_NOTE)
        name = server.register(checkpoint)
        engine = "vLLM" if on_gpu else "Transformers"
        t_launch = now()
        run.phases.append(Phase(0, "launch_requested", t_launch - t0))
        uid = server.launch(name, engine, config, timeout=config.timeout_s)
        ready = now()
        run.time_to_ready_s = ready - t_launch
        run.exec_to_ready_s = ready - t0  # a restart of Xinference: its server's exec to the model ready
        run.processes, notes = server.processes()
        run.notes += notes + method_env_notes(run.processes)
        run.phases += _process_phases(run.processes, t0, ready - t0) + [Phase(0, "ready", ready - t0)]
        # How Xinference really started the model's processes (on CPU nothing asked it to use ours).
        run.method_used = verify.method_used([p.pid for p in run.processes
                                               if p.role in ("model", "engine-core", "rank")])
        memory.probe(run.processes, on_gpu=on_gpu)
        completion_throughput(run, lambda prompt, tokens: server.complete(uid, prompt, tokens, on_gpu),
                              ModelSpec.from_hf(checkpoint).vocab_size, config, 1 if on_gpu else TRANSFORMERS_BLOCK)
        t_stop = now()
        server.terminate(uid)
        run.teardown_s = now() - t_stop  # model terminate; the server stop below is not timed
    except Exception as exc:  # a failing engine is a result
        run.fail("error", f"{exception_line(exc)} (Xinference){server.log_tail()}", traceback.format_exc())
    finally:
        left = server.stop()
        shutil.rmtree(home, ignore_errors=True)
        if left:
            run.notes.append(f"killed after the server stop: {', '.join(left)}")
    if run.status != "ok":
        run.teardown_s = None
    return run


# Xinference's Transformers engine (4.1.0) decodes the whole batch 16 rounds per scheduler step and
# answers a request at the end of its step (model/llm/transformers/utils.py,
# _batch_inference_one_step_internal's decode_round; model/scheduler/batch.py, step).
TRANSFORMERS_BLOCK = 16

# Where Xinference's Transformers engine (4.1.0) takes its stop tokens from, and which key declares EOS there.
EOS_KEYS = {"tokenizer_config.json": "eos_token", "special_tokens_map.json": "eos_token",
            "generation_config.json": "eos_token_id", "config.json": "eos_token_id"}
EOS_NOTE = ("Transformers engine: served the checkpoint with no EOS declared (null in "
            f"{', '.join(EOS_KEYS)}; weights and tokenizer linked), since it reads no ignore_eos or min_tokens "
            "and stops at a declared EOS: requests end at max_tokens, as with vLLM's ignore_eos")


def without_eos(checkpoint: Path, into: Path) -> Path:
    """A copy of `checkpoint` under `into` (same name) that declares no EOS; every other file is a link.

    Xinference's Transformers engine stops a request at the tokenizer's EOS and at
    generation_config.json's eos_token_id, whatever the request says: scheduler/request.py
    (`InferenceRequest.get_generate_configs`: `stop_token_ids.add(eos_token_id)`) and
    llm/transformers/core.py (`get_builtin_stop_token_ids`); `ignore_eos`, `min_tokens` and
    `min_new_tokens` are read nowhere on that path, and `logit_bias` is refused (HTTP 501). A
    random-weights model emits EOS for some prompts (greedy, from the first token on), so only a
    checkpoint that declares none gets fixed-length requests. The weights are the same.
    """
    view = into / checkpoint.name
    view.mkdir(parents=True)
    for f in checkpoint.iterdir():
        if f.name in EOS_KEYS and f.is_file():
            cfg = json.loads(f.read_text())
            if EOS_KEYS[f.name] in cfg:
                cfg[EOS_KEYS[f.name]] = None  # explicit: a tokenizer class's default EOS must not apply
            (view / f.name).write_text(json.dumps(cfg, indent=1))
        else:
            (view / f.name).symlink_to(f.resolve())
    return view


class Server:
    """One `xinference-local` process group and an authenticated HTTP session with it."""

    def __init__(self, home: Path):
        self.home, self.port = home, machine.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.token: str | None = None
        self.log = home / "server.log"

    def start(self) -> None:
        # SPT_NOENV: setproctitle (Xinference and vLLM rename their processes) then leaves each
        # process's exec environment in /proc/PID/environ legible (method_env_notes reads it).
        env = {**os.environ, "XINFERENCE_HOME": str(self.home), "TMPDIR": str(self.home),
               "XINFERENCE_DISABLE_METRICS": "1", "HF_HUB_OFFLINE": "1", "SPT_NOENV": "1"}
        exe = str(Path(sys.executable).parent / "xinference-local")
        with open(self.log, "wb") as out:
            self.proc = lifecycle.start_group([exe, "--host", "127.0.0.1", "--port", str(self.port)], env, stdout=out)

    def wait_ready(self, timeout: float) -> None:
        wait_answering(self.proc, self.url + "/status", timeout, "xinference-local")

    def login(self) -> None:
        """Create the initial admin (4.x demands one) and log in; older releases have no auth."""
        token = self._setup_token()
        if token is None:
            return
        user, password = f"bench-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
        self._request("POST", "/v1/admin/setup", {"setup_token": token, "username": user, "password": password},
                      auth=False)
        self.token = self._request("POST", "/token", {"username": user, "password": password}, auth=False)["access_token"]

    def _setup_token(self) -> str | None:
        deadline = now() + 30
        while now() < deadline:
            m = re.search(r"Setup token:\s*(\S+)", self.log.read_text(errors="replace"))
            if m:
                return m.group(1)
            try:  # no token logged: is setup needed at all?
                status = self._request("GET", "/v1/admin/setup/status", auth=False, timeout=5)
                if not status.get("needs_setup", status.get("setup_required", True)):
                    return None
            except RuntimeError as exc:
                if "404" in str(exc):
                    return None  # a release without the setup flow
            time.sleep(0.2)
        raise RuntimeError("the server asks for set-up but logged no setup token")

    def register(self, checkpoint: Path) -> str:
        spec = ModelSpec.from_hf(checkpoint)
        name = f"forkspawn-{checkpoint.name}-{secrets.token_hex(3)}"  # unique: short names clash with built-ins
        size = _params(spec) / 1e9
        model = {
            "version": 2,
            "context_length": spec.max_position_embeddings,
            "model_name": name,
            "model_lang": ["en"],
            "model_ability": ["generate"],
            "model_description": "forkspawn-bench local checkpoint",
            "model_family": "llama-2",  # any generate-family: Transformers then loads it as a causal LM
            # its vLLM engine matches on these (config.json of a generated checkpoint: LlamaForCausalLM)
            "architectures": json.loads((checkpoint / "config.json").read_text()).get("architectures"),
            "model_specs": [{"model_format": "pytorch", "model_size_in_billions": _size_str(size),
                             "quantization": "none", "model_uri": checkpoint.resolve().as_uri()}],
        }
        try:
            self._request("POST", "/v1/model_registrations/LLM", {"model": json.dumps(model), "persist": False})
        except RuntimeError as exc:
            if "permitted: 1" not in str(exc):
                raise
            # Releases before spec version 2 (1.x): a list of quantizations, explicit optional fields.
            spec = model["model_specs"][0]
            spec["quantizations"] = [spec.pop("quantization")]
            spec["model_id"] = None
            model.update(version=1, chat_template=None, stop_token_ids=[2], stop=None)
            self._request("POST", "/v1/model_registrations/LLM", {"model": json.dumps(model), "persist": False})
        self.size = _size_str(size)
        return name

    def launch(self, name: str, engine: str, config: Config, timeout: float) -> str:
        payload: dict[str, Any] = {
            "model_uid": f"{name}-0", "model_name": name, "model_type": "LLM", "model_engine": engine,
            "model_format": "pytorch", "quantization": "none", "model_size_in_billions": self.size,
            "replica": 1, "n_gpu": config.tp if engine == "vLLM" else None,
        }
        if engine == "vLLM":
            payload.update(tensor_parallel_size=config.tp, max_model_len=256, gpu_memory_utilization=0.5,
                           envs=apply.vllm_environment(config.method))
        return self._request("POST", "/v1/models", payload, timeout=timeout)["model_uid"]

    def complete(self, uid: str, prompt: str, tokens: int, vllm: bool) -> int:
        body: dict[str, Any] = {"model": uid, "prompt": prompt, "max_tokens": tokens, "temperature": 0.0,
                                "stream": False}
        if vllm:  # the Transformers engine reads neither (see without_eos)
            body.update(ignore_eos=True, min_tokens=tokens)
        out = self._request("POST", "/v1/completions", body)
        return int(out.get("usage", {}).get("completion_tokens", 0))

    def terminate(self, uid: str) -> None:
        self._request("DELETE", f"/v1/models/{uid}")

    def processes(self) -> tuple[list[ProcessMemory], list[str]]:
        """The server's tree by role, and notes on what else was found.

        xinference-local (4.x) is the REST server; it spawns one process for the local cluster,
        where the supervisor and the worker actor pools live together; the worker starts one
        process per model ("Model: <uid>" title); with vLLM that one starts the engine core and
        its tensor-parallel workers.
        """
        root = psutil.Process(self.proc.pid)
        procs = [ProcessMemory("parent", None, os.getpid(), started_by=None),
                 ProcessMemory("server", None, root.pid, started_by=verify.started_by(root.pid))]
        notes, seen = [], set()
        for p in root.children(recursive=True):
            try:
                cmd, ppid = " ".join(p.cmdline()), p.ppid()
            except psutil.Error:
                continue
            if "resource_tracker" in cmd or "semaphore_tracker" in cmd:
                continue
            role, rank = _role(cmd, ppid == root.pid)
            label = role if rank is None else f"rank{rank}"
            if role == "other" or label in seen:
                notes.append(f"unclassified process in the server's tree: {cmd[:80]}")
                continue
            seen.add(label)
            procs.append(ProcessMemory(role, rank, p.pid, started_by=verify.started_by(p.pid)))
        if "supervisor" in seen:
            notes.append("role supervisor: xinference-local runs the supervisor and worker actors in one process")
        return procs, notes

    def stop(self) -> list[str]:
        """SIGTERM the process group, then SIGKILL what is left; names of what had to be killed."""
        return lifecycle.stop_group(self.proc) if self.proc is not None else []

    def log_tail(self) -> str:
        try:
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if "Error" in line or "error" in line]
        except OSError:
            return ""
        # Never echo secrets: the setup token line does not contain "error", and the log is not kept.
        return f" (server log: {one_line(lines[-1])})" if lines else ""

    def _request(self, method: str, path: str, body: dict | None = None, auth: bool = True,
                 timeout: float = HTTP_TIMEOUT_S) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}
        return http_json(self.url + path, method, body, headers, timeout)


def method_env_notes(processes: list[ProcessMemory]) -> list[str]:
    """VLLM_WORKER_MULTIPROC_METHOD in the environment each vLLM process was exec'd with, next to
    how it was really started. A forked process shows its exec'd ancestor's environment, not the
    variable its parent set in os.environ before forking: said so rather than read."""
    notes = []
    for proc in processes:
        if proc.role not in VLLM_ROLES:
            continue
        if proc.started_by == FORK:
            seen = "inherited by fork (not in its own exec environment)"
        else:
            seen = repr(_exec_env(proc.pid).get("VLLM_WORKER_MULTIPROC_METHOD", "unset"))
        notes.append(f"{proc.label} started by {proc.started_by}: VLLM_WORKER_MULTIPROC_METHOD at exec {seen}")
    return notes


def _exec_env(pid: int) -> dict[str, str]:
    try:
        pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return {}
    return dict(p.decode(errors="replace").split("=", 1) for p in pairs if b"=" in p)


def _process_phases(processes: list[ProcessMemory], t0: float, ready: float) -> list[Phase]:
    """model_started, engine_core_started, workers_started: kernel start times of those processes."""
    phases = []
    for name, roles in (("model_started", ("model",)), ("engine_core_started", ("engine-core",)),
                        ("workers_started", ("rank",))):
        starts = [verify.process_start(p.pid) for p in processes if p.role in roles]
        if starts and None not in starts:
            phases.append(Phase(0, name, min(ready, max(0.0, max(starts) - t0))))
    return phases


def _role(cmd: str, child_of_server: bool) -> tuple[str, int | None]:
    """A process's role from the titles Xinference (xoscar) and vLLM give their processes."""
    if m := re.search(r"Worker(?:_TP(\d+))?", cmd) if "VLLM" in cmd or "VllmWorker" in cmd else None:
        return "rank", int(m.group(1) or 0)
    if "EngineCore" in cmd:
        return "engine-core", None
    if "multiprocessing.forkserver" in cmd:
        return "forkserver", None  # 1.x start model sub-pools through a forkserver
    if cmd.startswith("Model:") or " Model: " in cmd:
        return "model", None
    if child_of_server:
        return "supervisor", None
    return "other", None


def _params(spec: ModelSpec) -> float:
    h, i, layers = spec.hidden_size, spec.intermediate_size, spec.num_hidden_layers
    kv = spec.num_key_value_heads * spec.head_dim
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i
    return layers * per_layer + spec.vocab_size * h * (1 if spec.tie_word_embeddings else 2)


def _size_str(billions: float) -> str:
    return f"{billions:.6f}".rstrip("0").rstrip(".").replace(".", "_") or "0"
