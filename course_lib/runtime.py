"""Runtime set-up shared by every chapter: seeds, threads, device and precision.

Introduced in chapter 00 (introduction). Every chapter starts with::

    from course_lib import runtime
    device = runtime.setup(seed=0)

which seeds Python, NumPy and PyTorch, sets the thread count in this one place, picks the device
(CUDA, then Apple MPS, then CPU) and prints the device and library versions once.

Environment variables (all optional):

- ``COURSE_DEVICE``: force a device, e.g. ``cpu`` (useful to reproduce committed outputs on a GPU box).
- ``COURSE_NUM_THREADS``: intra-op threads on the CPU (default 1, see :data:`DEFAULT_NUM_THREADS`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import sys
from collections.abc import Iterator

import numpy as np
import torch

__all__ = [
    "DEFAULT_NUM_THREADS",
    "autocast",
    "cpu_name",
    "device_name",
    "get_device",
    "grad_scaler",
    "seed_everything",
    "set_threads",
    "setup",
    "versions",
]

#: Intra-op CPU threads used by the course, set here and nowhere else (``COURSE_NUM_THREADS``
#: overrides it). Measured on the 2-core reference machine (2026-11-21, torch 2.14.1):
#: chapters 00-03 each ran 2-3 s faster with one thread than with two (e.g. 00: 16.8 s vs 19.1 s);
#: a small convnet alone trained up to 1.7x faster with two threads, but with two processes running
#: (``make test`` and ``make execute`` run two kernels) two threads each made it 2x slower and an
#: MLP 7x slower than one thread each. One thread also keeps CPU results reproducible.
DEFAULT_NUM_THREADS = 1

_VALID_DEVICES = ("cpu", "cuda", "mps")
_printed_banner = False


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and PyTorch (CPU and all GPUs).

    Args:
        seed: an integer in [0, 2**64) (the range ``torch.manual_seed`` accepts); NumPy's legacy
            generator gets ``seed % 2**32``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds the legacy global generator on purpose
    torch.manual_seed(seed)


def set_threads(num_threads: int | None = None) -> int:
    """Set the number of intra-op CPU threads used by PyTorch; returns the number set.

    ``None`` reads ``COURSE_NUM_THREADS`` and falls back to :data:`DEFAULT_NUM_THREADS`.
    """
    if num_threads is None:
        env = os.environ.get("COURSE_NUM_THREADS", "").strip()
        if not env:
            num_threads = DEFAULT_NUM_THREADS
        elif env.isdigit() and int(env) >= 1:
            num_threads = int(env)
        else:
            raise ValueError(f"COURSE_NUM_THREADS must be a positive int, got {env!r}")
    if isinstance(num_threads, bool) or not isinstance(num_threads, int | np.integer):
        raise TypeError(f"num_threads must be an int, got {type(num_threads).__name__}")
    num_threads = int(num_threads)
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    torch.set_num_threads(num_threads)
    return num_threads


def get_device(prefer: str | None = None) -> torch.device:
    """Pick the compute device: ``prefer`` if given, else ``$COURSE_DEVICE``, else CUDA, MPS, CPU.

    Raises:
        ValueError: for an unknown device name, or a requested device that is not available.
    """
    name = prefer if prefer is not None else os.environ.get("COURSE_DEVICE") or None
    if name is not None:
        kind = str(name).split(":")[0]
        if kind not in _VALID_DEVICES:
            raise ValueError(f"device must be one of {_VALID_DEVICES}, got {name!r}")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was requested but CUDA is not available")
        if kind == "cuda" and (torch.device(name).index or 0) >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} was requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
        if kind == "mps" and not _mps_available():
            raise ValueError(f"device {name!r} was requested but MPS is not available")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def cpu_name() -> str:
    """The processor's model name (from ``/proc/cpuinfo`` on Linux), or the platform's best guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device | str) -> str:
    """A readable name for ``device``: the GPU's model, or the CPU's model and core count."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type == "mps":
        return "Apple GPU (MPS)"
    return f"{cpu_name()}, {os.cpu_count()} cores"


def versions() -> dict[str, str]:
    """Versions of Python and the main libraries, as strings.

    Read from the installed distributions' metadata, so nothing is imported (importing scikit-learn
    and scikit-image just to print their versions cost seconds per chapter).
    """
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for key, dist in (
        ("torchvision", "torchvision"),
        ("numpy", "numpy"),
        ("sklearn", "scikit-learn"),
        ("skimage", "scikit-image"),
        ("matplotlib", "matplotlib"),
    ):
        try:
            out[key] = version(dist)
        except PackageNotFoundError:  # pragma: no cover - all are dependencies
            out[key] = "missing"
    return out


def setup(
    seed: int = 0,
    *,
    num_threads: int | None = None,
    device: str | None = None,
    deterministic: bool = True,
    style: bool = True,
    verbose: bool = True,
) -> torch.device:
    """One call at the top of every chapter. Returns the device to use.

    Args:
        seed: seed for Python, NumPy and PyTorch.
        num_threads: CPU intra-op threads (``None``: ``$COURSE_NUM_THREADS`` or the course default).
        device: force a device (``"cpu"``, ``"cuda"``, ``"mps"``); ``None`` picks the best available.
        deterministic: ask PyTorch for deterministic algorithms (warns instead of failing where an
            op has no deterministic version) and disable cuDNN autotuning.
        style: apply the course's matplotlib style (:func:`course_lib.viz.use_style`).
        verbose: print the device and versions (only on the first call in a process).
    """
    global _printed_banner
    seed_everything(seed)
    threads = set_threads(num_threads)
    dev = get_device(device)
    if deterministic:
        # cuBLAS needs this to be deterministic; harmless elsewhere.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    if style:
        from course_lib import viz

        viz.use_style()
    if verbose and not _printed_banner:
        v = versions()
        name = device_name(dev)
        print(f"device: {dev.type} ({name}), CPU threads: {threads}, seed: {seed}")
        print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
        _printed_banner = True
    return dev


def _amp_dtype(device: torch.device) -> torch.dtype | None:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


@contextlib.contextmanager
def autocast(device: torch.device | str, enabled: bool = True) -> Iterator[None]:
    """Mixed precision where it pays off (CUDA: bfloat16, or float16 on older GPUs); a no-op elsewhere.

    On the CPU autocast would only slow the small models of the course down, so it is not used.
    """
    dev = torch.device(device)
    dtype = _amp_dtype(dev) if enabled else None
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=dev.type, dtype=dtype):
        yield


def grad_scaler(device: torch.device | str, enabled: bool = True) -> torch.amp.GradScaler:
    """A gradient scaler that is active only when :func:`autocast` uses float16 (old GPUs)."""
    dev = torch.device(device)
    active = enabled and _amp_dtype(dev) == torch.float16
    return torch.amp.GradScaler(dev.type if active else "cpu", enabled=active)


if __name__ == "__main__":  # pragma: no cover
    setup()
    sys.exit(0)
