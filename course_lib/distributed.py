"""Multi-process data-parallel training: set-up from ``torchrun``'s environment, and a launcher.

Introduced in chapter 20 (scaling up). A training script launched by ``torchrun`` calls
:func:`init_from_env` first and :func:`cleanup` last::

    ctx = distributed.init_from_env()        # rank, world size, device, backend
    try:
        model = DistributedDataParallel(model, device_ids=ctx.device_ids)
        ...
    finally:
        distributed.cleanup()

and a notebook starts it with :func:`torchrun_command` and :func:`run_isolated`, which runs the
command in its own process group and kills the whole group (``torchrun`` and every worker it
started) on a timeout or an error, so that a failed run leaves no process behind.

The backend follows the device: NCCL between GPUs, gloo on the CPU (:func:`backend_for`). The device
comes from :func:`course_lib.runtime.get_device`, so the same script runs on a laptop and on a GPU node.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from course_lib import runtime

__all__ = [
    "Context",
    "Launch",
    "backend_for",
    "cleanup",
    "group_alive",
    "init_from_env",
    "kill_group",
    "launch_device",
    "run_isolated",
    "torchrun_command",
]


def backend_for(device: torch.device | str) -> str:
    """The collective-communication backend for ``device``: ``"nccl"`` for GPUs where PyTorch has it,
    ``"gloo"`` otherwise (gloo runs on any CPU, and also on GPUs, more slowly)."""
    dev = torch.device(device)
    if dev.type == "cuda" and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def launch_device(nproc_per_node: int) -> str:
    """The device kind for ``nproc_per_node`` processes on this machine: the GPU kind when there is one
    GPU per process (NCCL wants one GPU per rank), else ``"cpu"`` (gloo)."""
    if isinstance(nproc_per_node, bool) or not isinstance(nproc_per_node, int) or nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be an int >= 1, got {nproc_per_node!r}")
    dev = runtime.get_device()
    if dev.type == "cuda" and torch.cuda.device_count() >= nproc_per_node:
        return dev.type
    return "cpu"


@dataclass(frozen=True)
class Context:
    """Where this process sits in the job: its global ``rank`` among ``world_size`` processes, its
    ``local_rank`` on this machine (which GPU it drives), its ``device`` and the ``backend``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0

    @property
    def device_ids(self) -> list[int] | None:
        """What ``DistributedDataParallel(device_ids=...)`` wants: ``[index]`` on a GPU, ``None`` on the CPU."""
        return [self.device.index] if self.device.type == "cuda" else None


def _env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise ValueError(
                f"${name} is not set: launch the script with torchrun (it sets RANK, WORLD_SIZE, ...)"
            )
        return default
    if not value.strip().isdigit():
        raise ValueError(f"${name} must be a non-negative int, got {value!r}")
    return int(value)


def init_from_env(device: str | None = None, *, timeout_s: float = 120.0) -> Context:
    """Join the process group that ``torchrun`` set up, reading ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT`` from the environment.

    Args:
        device: force a device kind (``"cpu"``...); ``None`` lets :func:`runtime.get_device` choose.
            On a GPU each process takes the GPU of its local rank.
        timeout_s: how long a collective may wait for the other processes before failing (a crashed
            rank then ends the job instead of hanging it).
    Returns:
        The :class:`Context` of this process.
    """
    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={world_size}), got {rank}")
    dev = runtime.get_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    backend = backend_for(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return Context(rank, world_size, local_rank, dev, backend)


def cleanup() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def torchrun_command(
    script: str | os.PathLike,
    *args: str,
    nproc_per_node: int = 2,
    nnodes: int = 1,
    node_rank: int | None = None,
    rdzv_endpoint: str | None = None,
    rdzv_id: str = "course",
    rdzv_backend: str = "c10d",
    master_addr: str | None = None,
    master_port: int = 29500,
) -> list[str]:
    """The command line that runs ``script`` under ``torchrun`` (as ``python -m torch.distributed.run``,
    so it uses this interpreter and needs no ``torchrun`` on the PATH).

    One machine (``nnodes=1`` and no endpoint): ``--standalone``, a rendezvous on a free local port.
    Several machines: the same command on each, with ``--nnodes``, the ``--rdzv_endpoint`` host:port
    that every node can reach (a node of the job), a shared ``--rdzv_id``, and optionally a fixed
    ``--node_rank`` (otherwise the rendezvous assigns ranks). The older static form: ``master_addr``
    (the host of node 0, reachable from every node) and ``master_port`` with an explicit ``node_rank``
    on each node (``--master_addr``, ``--master_port``, ``--node_rank``).
    """
    for name, value in (("nproc_per_node", nproc_per_node), ("nnodes", nnodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if node_rank is not None and not 0 <= node_rank < nnodes:
        raise ValueError(f"node_rank must be in [0, nnodes={nnodes}), got {node_rank}")
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if master_addr is not None:
        if rdzv_endpoint is not None:
            raise ValueError("give either rdzv_endpoint (rendezvous) or master_addr (static), not both")
        if node_rank is None:
            raise ValueError("the static form (master_addr) needs node_rank on every node")
        cmd += ["--nnodes", str(nnodes), "--node_rank", str(node_rank)]
        cmd += ["--master_addr", master_addr, "--master_port", str(master_port)]
    elif nnodes == 1 and rdzv_endpoint is None:
        cmd += ["--standalone"]
    else:
        if rdzv_endpoint is None:
            raise ValueError("several nodes need rdzv_endpoint='host:port' (reachable from every node)")
        cmd += ["--nnodes", str(nnodes), "--rdzv_backend", rdzv_backend, "--rdzv_endpoint", rdzv_endpoint]
        cmd += ["--rdzv_id", rdzv_id]
        if node_rank is not None:
            cmd += ["--node_rank", str(node_rank)]
    return [*cmd, "--nproc_per_node", str(nproc_per_node), str(script), *map(str, args)]


def _live_members(pgid: int) -> list[int] | None:
    """The pids of the group's processes that still run (zombies left out), from ``/proc``; ``None``
    where there is no ``/proc`` (macOS)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (command) ": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group ``pgid`` is still running (ended processes that
    their parent has not collected yet, zombies, do not count)."""
    members = _live_members(pgid)
    if members is not None:
        return bool(members)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a group of another user's processes exists
        return True
    return True


def kill_group(pgid: int, *, grace_s: float = 3.0) -> bool:
    """Stop every process of the group ``pgid``: SIGTERM, then SIGKILL after ``grace_s`` seconds.

    Returns whether the group is gone afterwards.
    """
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if not group_alive(pgid):
                return True
            time.sleep(0.05)
    return not group_alive(pgid)


@dataclass(frozen=True)
class Launch:
    """The outcome of :func:`run_isolated`: the command, its exit code, its output (stdout and stderr
    together), the wall time in seconds and the process group id it ran in."""

    cmd: tuple[str, ...]
    returncode: int
    output: str
    seconds: float
    pgid: int

    def check(self) -> Launch:
        """Raise ``RuntimeError`` with the end of the output when the command failed; else return self."""
        if self.returncode != 0:
            raise RuntimeError(
                f"{' '.join(self.cmd[:6])} ... exited with {self.returncode}:\n{self.output[-3000:]}"
            )
        return self


def run_isolated(
    cmd: Sequence[str],
    *,
    timeout_s: float,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
) -> Launch:
    """Run ``cmd`` in a new session (its own process group) and wait at most ``timeout_s`` seconds.

    On a timeout, an error or an interrupt, the whole group (the command and every process it
    started, e.g. torchrun's workers) is killed before the exception propagates
    (``subprocess.TimeoutExpired`` for a timeout). After a normal exit, processes left in the group are
    killed too. POSIX only (process groups).
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    cmd = tuple(str(c) for c in cmd)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=Path(cwd) if cwd is not None else None,
        env=dict(env) if env is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    pgid = proc.pid  # the leader of a new session: its pid is the group id
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except BaseException:
        kill_group(pgid)
        proc.communicate()
        raise
    finally:
        if group_alive(pgid):
            kill_group(pgid)
    return Launch(cmd, proc.returncode, output, time.perf_counter() - start, pgid)
