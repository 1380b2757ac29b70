"""course_lib.distributed: backend choice, torchrun command lines, process-group set-up, isolated runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.distributed as dist

from course_lib import distributed


def test_backend_follows_the_device():
    assert distributed.backend_for("cpu") == "gloo"
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    want = "nccl" if dist.is_nccl_available() else "gloo"
    assert distributed.backend_for(torch.device("cuda", 0)) == want


def test_launch_device_is_cpu_without_one_gpu_per_process(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert distributed.launch_device(2) == "cpu"
    with pytest.raises(ValueError, match="nproc_per_node"):
        distributed.launch_device(0)


def test_torchrun_command_standalone_and_multi_node():
    cmd = distributed.torchrun_command("train.py", "--out", "r", nproc_per_node=2)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[3:] == ["--standalone", "--nproc_per_node", "2", "train.py", "--out", "r"]
    multi = distributed.torchrun_command(
        "train.py", nproc_per_node=8, nnodes=2, node_rank=1, rdzv_endpoint="node0:29500", rdzv_id="job"
    )
    flags = multi[3:]
    assert "--standalone" not in flags
    for key, value in [
        ("--nnodes", "2"),
        ("--rdzv_backend", "c10d"),
        ("--rdzv_endpoint", "node0:29500"),
        ("--rdzv_id", "job"),
        ("--node_rank", "1"),
        ("--nproc_per_node", "8"),
    ]:
        assert flags[flags.index(key) + 1] == value
    assert flags[-1] == "train.py"
    static = distributed.torchrun_command(
        "train.py", nproc_per_node=4, nnodes=2, node_rank=0, master_addr="node0", master_port=1234
    )[3:]
    assert static[: static.index("--nproc_per_node")] == [
        "--nnodes", "2", "--node_rank", "0", "--master_addr", "node0", "--master_port", "1234"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"nproc_per_node": 0}, "nproc_per_node"),
        ({"nnodes": 0}, "nnodes"),
        ({"nnodes": 2}, "rdzv_endpoint"),
        ({"nnodes": 2, "node_rank": 2, "rdzv_endpoint": "h:1"}, "node_rank"),
        ({"nnodes": 2, "master_addr": "h"}, "needs node_rank"),
        ({"nnodes": 2, "node_rank": 0, "master_addr": "h", "rdzv_endpoint": "h:1"}, "not both"),
    ],
)
def test_torchrun_command_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        distributed.torchrun_command("train.py", **kwargs)


def test_init_from_env_needs_torchrun_variables(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        distributed.init_from_env("cpu")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK must be in"):
        distributed.init_from_env("cpu")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="non-negative int"):
        distributed.init_from_env("cpu")


def test_init_from_env_joins_a_one_process_group_and_cleans_up(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }.items():
        monkeypatch.setenv(name, value)
    try:
        ctx = distributed.init_from_env("cpu", timeout_s=30)
        assert (ctx.rank, ctx.world_size, ctx.backend, ctx.device.type) == (0, 1, "gloo", "cpu")
        assert ctx.is_main and ctx.device_ids is None
        assert dist.get_world_size() == 1
        t = torch.tensor([3.0])
        dist.all_reduce(t)
        assert t.item() == 3.0
    finally:
        distributed.cleanup()
    assert not dist.is_initialized()
    distributed.cleanup()  # a second call is harmless


def test_run_isolated_returns_output_and_exit_code():
    ok = distributed.run_isolated([sys.executable, "-c", "print('hello')"], timeout_s=60)
    assert ok.returncode == 0 and ok.output.strip() == "hello" and ok.seconds > 0
    assert ok.check() is ok and not distributed.group_alive(ok.pgid)
    bad = distributed.run_isolated(
        [sys.executable, "-c", "import sys; print('oops'); sys.exit(3)"], timeout_s=60
    )
    assert bad.returncode == 3
    with pytest.raises(RuntimeError, match="exited with 3"):
        bad.check()
    with pytest.raises(ValueError, match="timeout_s"):
        distributed.run_isolated(["true"], timeout_s=0)


def _pid_running(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_run_isolated_kills_the_whole_group_on_timeout(tmp_path):
    """A parent that starts a child and hangs: after the timeout neither is left running."""
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(60)
        """
    )
    start = time.perf_counter()
    with pytest.raises(subprocess.TimeoutExpired):
        distributed.run_isolated([sys.executable, "-c", script], timeout_s=6)
    assert time.perf_counter() - start < 20
    assert pid_file.exists(), "the parent did not start its child within the timeout"
    child = int(pid_file.read_text())
    assert not _pid_running(child), "the grandchild survived the timeout"


def test_kill_group_of_a_finished_group_is_a_no_op():
    done = distributed.run_isolated([sys.executable, "-c", "pass"], timeout_s=60)
    assert distributed.kill_group(done.pgid) is True


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_a_hung_torchrun_job_leaves_no_worker_behind(tmp_path):
    """torchrun with two workers that hang: after the timeout neither torchrun nor a worker runs."""
    script = tmp_path / "hang.py"
    script.write_text(
        "import os, time\n"
        f"open(os.path.join({str(tmp_path)!r}, 'w' + os.environ['RANK']), 'w').write(str(os.getpid()))\n"
        "time.sleep(120)\n"
    )
    cmd = distributed.torchrun_command(script, nproc_per_node=2)
    with pytest.raises(subprocess.TimeoutExpired):
        distributed.run_isolated(cmd, timeout_s=12, cwd=tmp_path)
    pids = [int((tmp_path / f"w{r}").read_text()) for r in range(2) if (tmp_path / f"w{r}").exists()]
    assert not any(_pid_running(p) for p in pids), "a torchrun worker survived the timeout"
    if len(pids) < 2:
        pytest.skip("torchrun had not started both workers within the timeout (a loaded machine)")
