"""Kubernetes: what each step's pod asks for, and the executor that runs every step in its own pod.

Plain functions returning plain dicts. `gpu_op_tags()` / `cpu_op_tags()` are the assets'
`op_tags`: under `dagster-k8s/config`, a step of the `gpu` pool asks for one `nvidia.com/gpu`,
lands on the GPU nodes (node selector, tolerations) and gets a RAM-backed `/dev/shm` (PyTorch
data loader workers share tensors through it; a container's default is 64 MiB); every other
step asks for CPU and memory. The tags only matter to `dagster_k8s.k8s_job_executor`
(`CARDIO_EXECUTOR=k8s`, definitions.py); other executors ignore them.

Sizes come from environment variables, read when the code location loads (deploy/README.md):

| variable | default |
|---|---|
| `CARDIO_K8S_GPU_NODE_SELECTOR` | `{}` (JSON object; e.g. `{"cloud.google.com/gke-accelerator": "nvidia-l4"}`) |
| `CARDIO_K8S_GPU_TOLERATIONS` | tolerate the `nvidia.com/gpu` taint (JSON list of tolerations) |
| `CARDIO_K8S_GPU_CPU` | `4` (request) |
| `CARDIO_K8S_GPU_MEMORY` | `32Gi` (request = limit; `/dev/shm` counts against it) |
| `CARDIO_K8S_SHM_SIZE` | `8Gi` |
| `CARDIO_K8S_CPU` | `2` (request of the CPU steps) |
| `CARDIO_K8S_MEMORY` | `8Gi` (request = limit of the CPU steps) |

and the executor's own (all optional): `CARDIO_K8S_IMAGE` (default: the user-code deployment's
image), `CARDIO_K8S_NAMESPACE` (default: the run launcher's), `CARDIO_K8S_SERVICE_ACCOUNT`,
`CARDIO_K8S_ENV_VARS` (comma-separated names forwarded to the step pods besides every `CARDIO_*`).

dagster_k8s is imported only by `k8s_executor()`, so the default install does not need it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_RESOURCE = "nvidia.com/gpu"
SHM_VOLUME = "dshm"
SHM_PATH = "/dev/shm"
ENV_PREFIX = "CARDIO_"

# GKE, AKS and the NVIDIA GPU operator's examples taint GPU nodes with `nvidia.com/gpu`; tolerating
# a taint that is absent is harmless, and CPU steps (without it) stay off tainted GPU nodes.
DEFAULT_GPU_TOLERATIONS = ({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},)

VARS = {
    "gpu_node_selector": "CARDIO_K8S_GPU_NODE_SELECTOR",
    "gpu_tolerations": "CARDIO_K8S_GPU_TOLERATIONS",
    "gpu_cpu": "CARDIO_K8S_GPU_CPU",
    "gpu_memory": "CARDIO_K8S_GPU_MEMORY",
    "shm_size": "CARDIO_K8S_SHM_SIZE",
    "cpu": "CARDIO_K8S_CPU",
    "memory": "CARDIO_K8S_MEMORY",
    "image": "CARDIO_K8S_IMAGE",
    "namespace": "CARDIO_K8S_NAMESPACE",
    "service_account": "CARDIO_K8S_SERVICE_ACCOUNT",
    "extra_env_vars": "CARDIO_K8S_ENV_VARS",
}

# a Kubernetes resource quantity: 4, 500m, 0.5, 32Gi, 8G, 1e3
_QUANTITY = re.compile(r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")


def _quantity(var: str, value: str) -> str:
    value = value.strip()
    if not _QUANTITY.match(value):
        raise ValueError(f"{var}={value!r} is not a Kubernetes quantity (e.g. 4, 500m, 32Gi)")
    return value


def _json(var: str, value: str, kind: type):
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"{var} is not valid JSON: {error}") from error
    if not isinstance(parsed, kind):
        raise ValueError(f"{var} must be a JSON {'object' if kind is dict else 'list'}, got {value!r}")
    return parsed


@dataclass(frozen=True)
class K8sSettings:
    """Pod sizes of the steps and the k8s executor's settings (module docstring: the variables)."""

    gpu_node_selector: Mapping[str, str] = field(default_factory=dict)
    gpu_tolerations: tuple[Mapping, ...] = DEFAULT_GPU_TOLERATIONS
    gpu_cpu: str = "4"
    gpu_memory: str = "32Gi"
    shm_size: str = "8Gi"
    cpu: str = "2"
    memory: str = "8Gi"
    image: str = ""
    namespace: str = ""
    service_account: str = ""
    extra_env_vars: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> K8sSettings:
        env = os.environ if environ is None else environ
        values: dict = {}
        if env.get(VARS["gpu_node_selector"], "").strip():
            selector = _json(VARS["gpu_node_selector"], env[VARS["gpu_node_selector"]], dict)
            values["gpu_node_selector"] = {str(k): str(v) for k, v in selector.items()}
        if env.get(VARS["gpu_tolerations"], "").strip():
            tolerations = _json(VARS["gpu_tolerations"], env[VARS["gpu_tolerations"]], list)
            if not all(isinstance(t, dict) for t in tolerations):
                raise ValueError(f"{VARS['gpu_tolerations']} must be a JSON list of objects (Kubernetes tolerations)")
            values["gpu_tolerations"] = tuple(tolerations)
        for name in ("gpu_cpu", "gpu_memory", "shm_size", "cpu", "memory"):
            if env.get(VARS[name], "").strip():
                values[name] = _quantity(VARS[name], env[VARS[name]])
        for name in ("image", "namespace", "service_account"):
            if env.get(VARS[name], "").strip():
                values[name] = env[VARS[name]].strip()
        if env.get(VARS["extra_env_vars"], "").strip():
            values["extra_env_vars"] = tuple(v.strip() for v in env[VARS["extra_env_vars"]].split(",") if v.strip())
        return cls(**values)


def gpu_k8s_config(settings: K8sSettings | None = None, gpus: int = 1) -> dict:
    """The `dagster-k8s/config` of a `gpu` pool step: `gpus` GPUs, GPU nodes, memory, a RAM-backed /dev/shm."""
    s = settings or K8sSettings.from_env()
    return {
        "container_config": {
            "resources": {
                "requests": {"cpu": s.gpu_cpu, "memory": s.gpu_memory, GPU_RESOURCE: str(gpus)},
                "limits": {"memory": s.gpu_memory, GPU_RESOURCE: str(gpus)},
            },
            "volume_mounts": [{"name": SHM_VOLUME, "mount_path": SHM_PATH}],
        },
        "pod_spec_config": {
            **({"node_selector": dict(s.gpu_node_selector)} if s.gpu_node_selector else {}),
            "tolerations": [dict(t) for t in s.gpu_tolerations],
            "volumes": [{"name": SHM_VOLUME, "empty_dir": {"medium": "Memory", "size_limit": s.shm_size}}],
        },
    }


def cpu_k8s_config(settings: K8sSettings | None = None) -> dict:
    """The `dagster-k8s/config` of a CPU step: a CPU and memory request (memory also the limit), no GPU."""
    s = settings or K8sSettings.from_env()
    return {"container_config": {"resources": {"requests": {"cpu": s.cpu, "memory": s.memory}, "limits": {"memory": s.memory}}}}


def gpu_op_tags(settings: K8sSettings | None = None, gpus: int = 1) -> dict:
    """`op_tags` of every asset in the `gpu` pool (the data-parallel ControlNet asks for more GPUs)."""
    return {K8S_CONFIG_TAG: gpu_k8s_config(settings, gpus)}


def cpu_op_tags(settings: K8sSettings | None = None) -> dict:
    """`op_tags` of every other asset."""
    return {K8S_CONFIG_TAG: cpu_k8s_config(settings)}


def forwarded_env_vars(settings: K8sSettings | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Names of the variables every step pod gets: each `CARDIO_*` set now, plus CARDIO_K8S_ENV_VARS.

    Names only: dagster-k8s reads their values in the run pod when it launches a step.
    """
    s = settings or K8sSettings.from_env(environ)
    env = os.environ if environ is None else environ
    names = sorted(name for name in env if name.startswith(ENV_PREFIX))
    return names + [name for name in s.extra_env_vars if name not in names]


def k8s_executor_config(settings: K8sSettings | None = None, environ: Mapping[str, str] | None = None) -> dict:
    """Config of `dagster_k8s.k8s_job_executor`: what is not set is left to the run launcher and the
    user-code deployment (image, namespace, service account, volumes such as the data lake's claim)."""
    s = settings or K8sSettings.from_env(environ)
    config: dict = {"env_vars": forwarded_env_vars(s, environ)}
    if s.image:
        config["job_image"] = s.image
    if s.namespace:
        config["job_namespace"] = s.namespace
    if s.service_account:
        config["service_account_name"] = s.service_account
    return config


def k8s_executor(settings: K8sSettings | None = None, environ: Mapping[str, str] | None = None):
    """`dagster_k8s.k8s_job_executor` configured from the environment: every step in its own pod."""
    from dagster_k8s import k8s_job_executor  # only here: the default install does not need dagster-k8s

    return k8s_job_executor.configured(k8s_executor_config(settings, environ), name="k8s")
