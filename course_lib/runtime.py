"""Runtime set-up shared by every chapter: seeds, threads, device and precision.

Introduced in chapter 00 (introduction). Every chapter starts with::

    from course_lib import runtime
    device = runtime.setup(seed=0)

which seeds Python, NumPy and PyTorch, sets the thread count in this one place, picks the device
(CUDA, then Apple MPS, then CPU) and prints the device and library versions once.

Environment variables (all optional):

- ``COURSE_DEVICE``: force a device, e.g. ``cpu`` (useful to reproduce committed outputs on a GPU box).
- ``COURSE_NUM_THREADS``: intra-op threads on the CPU (default 1, see :data:`DEFAULT_NUM_THREADS`).

Chapter 20 (scaling up) adds what long runs need: mixed precision on any device (:func:`autocast` and
:func:`grad_scaler` with an explicit ``dtype``), a step timer (:func:`benchmark`), and checkpoints that
resume a run exactly (:func:`save_checkpoint`, :func:`load_checkpoint`, :func:`rng_state`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "DEFAULT_NUM_THREADS",
    "Timing",
    "amp_dtype",
    "autocast",
    "benchmark",
    "cpu_name",
    "device_name",
    "get_device",
    "grad_scaler",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
    "set_threads",
    "setup",
    "unwrap",
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


_AMP_DTYPES = (torch.float16, torch.bfloat16)


def amp_dtype(device: torch.device | str, dtype: torch.dtype | None = None) -> torch.dtype | None:
    """The low-precision dtype :func:`autocast` uses on ``device``, or ``None`` where it does nothing.

    With ``dtype=None`` the course's default: on CUDA bfloat16 where the GPU supports it, else float16;
    elsewhere ``None`` (on the CPU autocast slowed the course's small models down, see chapter 20). An
    explicit ``dtype`` (``torch.bfloat16`` or ``torch.float16``) is used on any device.
    """
    dev = torch.device(device)
    if dtype is not None:
        if dtype not in _AMP_DTYPES:
            raise ValueError(f"dtype must be torch.float16 or torch.bfloat16, got {dtype}")
        return dtype
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


@contextlib.contextmanager
def autocast(
    device: torch.device | str, enabled: bool = True, dtype: torch.dtype | None = None
) -> Iterator[None]:
    """Mixed precision: matrix products and convolutions in a 16-bit float, the rest in float32.

    Without ``dtype``: bfloat16 on CUDA (float16 on GPUs without bfloat16), a no-op elsewhere (on the
    CPU autocast would only slow the small models of the course down). With ``dtype`` (e.g.
    ``torch.bfloat16`` on the CPU, chapter 20) autocast runs in that dtype on any device.
    """
    dev = torch.device(device)
    dt = amp_dtype(dev, dtype) if enabled else None
    if dt is None:
        yield
        return
    with torch.autocast(device_type=dev.type, dtype=dt):
        yield


def grad_scaler(
    device: torch.device | str, enabled: bool = True, dtype: torch.dtype | None = None
) -> torch.amp.GradScaler:
    """A gradient scaler that is active only when :func:`autocast` (same arguments) uses float16.

    float16's smallest normal number is about 6e-5: small gradients underflow to zero unless the loss
    is multiplied by a large factor before ``backward`` and the gradients divided by it before the
    step, which is what the scaler does (skipping the steps whose scaled gradients overflow and
    halving the factor then). bfloat16 has float32's exponent range and needs no scaler.
    """
    dev = torch.device(device)
    active = enabled and amp_dtype(dev, dtype) == torch.float16
    return torch.amp.GradScaler(dev.type if active else "cpu", enabled=active)


# --------------------------------------------------------------------------------------- timing
@dataclass(frozen=True)
class Timing:
    """Seconds per call of a benchmarked function: one entry per repeat (each the mean of ``steps``)."""

    times: tuple[float, ...]
    steps: int

    @property
    def median(self) -> float:
        """The median over repeats of the seconds per call (robust to one disturbed repeat)."""
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        """The fastest repeat's seconds per call (the least disturbed by other processes)."""
        return min(self.times)

    def per_second(self, items_per_call: int = 1) -> float:
        """Throughput: ``items_per_call`` (e.g. the batch size) divided by the median time."""
        return items_per_call / self.median

    def __str__(self) -> str:
        return f"{self.median * 1e3:.2f} ms per call (median of {len(self.times)} x {self.steps} calls)"


def benchmark(fn: Callable[[], Any], *, steps: int = 5, warmup: int = 1, repeats: int = 3) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` rounds of ``steps`` timed calls.

    Each round gives its mean seconds per call (``time.perf_counter``); on a GPU the device is
    synchronized before every clock read, so the time covers the work and not only its launch.

    Introduced in chapter 20.
    """
    for name, value, low in (("steps", steps, 1), ("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")

    def sync() -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        times.append((time.perf_counter() - start) / steps)
    return Timing(tuple(times), steps)


# ----------------------------------------------------------------------------------- checkpoints
def rng_state() -> dict[str, Any]:
    """The state of every global generator the course seeds (Python, NumPy, PyTorch CPU and GPUs).

    Only tensors, ints, tuples and dicts, so that ``torch.load(..., weights_only=True)`` reads it back.
    Introduced in chapter 20.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - the legacy global generator
    version, internal, gauss_next = random.getstate()
    state = {
        "python": (version, torch.tensor(internal, dtype=torch.int64), gauss_next),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_gpu"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (GPU states only where GPUs are present)."""
    if not isinstance(state, dict) or not {"python", "numpy", "torch"} <= set(state):
        raise ValueError("state must be the dict rng_state() returns (keys python, numpy, torch)")
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss_next))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "torch_gpu" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_gpu"])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under a ``DistributedDataParallel`` (``.module``) or ``torch.compile`` (``._orig_mod``)
    wrapper, at any depth; any other module is returned as it is. Introduced in chapter 20."""
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):  # torch.compile's wrapper
            model = model._orig_mod
        else:
            return model


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    *,
    scaler: torch.amp.GradScaler | None = None,
    step: int = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save everything a run needs to continue exactly: weights, optimizer, scheduler, scaler, step, RNG.

    ``extra`` holds anything else the loop needs (e.g. a data generator's ``get_state()``): tensors,
    numbers, strings, lists, tuples and dicts, what ``weights_only=True`` loading accepts. The file is
    written next to ``path`` and then renamed over it, so a crash mid-write never leaves a torn
    checkpoint. A model wrapped in ``DistributedDataParallel`` or ``torch.compile`` is saved unwrapped,
    so the file loads into the plain model. Returns the path.

    Introduced in chapter 20.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    path = Path(path)
    payload = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "step": step,
        "rng": rng_state(),
        "extra": extra or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    *,
    scaler: torch.amp.GradScaler | None = None,
    restore_rng: bool = True,
    map_location: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Load a :func:`save_checkpoint` file into the given objects; returns ``{"step", "extra"}``.

    Read with ``torch.load(..., weights_only=True)``: only tensors and plain containers are unpickled,
    so a checkpoint from elsewhere cannot run code on load. Raises ``ValueError`` when the file lacks a
    state that an object was passed for.

    Introduced in chapter 20.
    """
    ckpt = torch.load(Path(path), map_location=map_location, weights_only=True)
    unwrap(model).load_state_dict(ckpt["model"])
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is None:
            continue
        if ckpt.get(name) is None:
            raise ValueError(f"the checkpoint {path} holds no {name} state")
        obj.load_state_dict(ckpt[name])
    if restore_rng:
        set_rng_state(ckpt["rng"])
    return {"step": ckpt["step"], "extra": ckpt["extra"]}


if __name__ == "__main__":  # pragma: no cover
    setup()
    sys.exit(0)
