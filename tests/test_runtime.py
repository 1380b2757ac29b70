"""course_lib.runtime: seeds, threads, device choice, set-up banner and mixed precision."""

from __future__ import annotations

import os
import random

import matplotlib as mpl
import numpy as np
import pytest
import torch

from course_lib import runtime, viz

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture
def restore_globals(monkeypatch):
    """Undo what setup()/set_threads() change process-wide, so other tests see the defaults."""
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.delenv("COURSE_NUM_THREADS", raising=False)
    with mpl.rc_context():
        yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark


def _draws():
    return (
        random.random(),
        np.random.rand(3).tolist(),  # noqa: NPY002 - the legacy global generator is what gets seeded
        torch.rand(3).tolist(),
        torch.randint(0, 10**6, (2,)).tolist(),
    )


# ------------------------------------------------------------------------------------------ seeds
@pytest.mark.parametrize("seed", [0, 1234, np.int64(7), 2**40])
def test_seed_everything_reproduces_python_numpy_and_torch(seed):
    runtime.seed_everything(seed)
    first = _draws()
    runtime.seed_everything(seed)
    assert _draws() == first
    runtime.seed_everything(int(seed) + 1)
    other = _draws()
    assert all(a != b for a, b in zip(first, other, strict=True)), "another seed gave the same draws"


def test_seed_everything_matches_the_libraries_own_seeding():
    runtime.seed_everything(3)
    got = _draws()
    random.seed(3)
    np.random.seed(3)  # noqa: NPY002
    torch.manual_seed(3)
    assert got == _draws()


@pytest.mark.parametrize(
    "seed, exc, match",
    [(-1, ValueError, "seed must be in"), (2**64, ValueError, "seed must be in"), (1.5, TypeError, "int"),
     ("0", TypeError, "int"), (True, TypeError, "int"), (None, TypeError, "int")],
)  # fmt: skip
def test_seed_everything_rejects_bad_seeds(seed, exc, match):
    with pytest.raises(exc, match=match):
        runtime.seed_everything(seed)


# ---------------------------------------------------------------------------------------- threads
def test_set_threads_sets_torch_threads(restore_globals):
    assert runtime.set_threads(2) == 2
    assert torch.get_num_threads() == 2
    assert runtime.set_threads(np.int32(1)) == 1
    assert torch.get_num_threads() == 1


def test_set_threads_reads_the_environment_and_defaults(restore_globals, monkeypatch):
    torch.set_num_threads(2)
    assert runtime.set_threads() == runtime.DEFAULT_NUM_THREADS == 1
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("COURSE_NUM_THREADS", "2")
    assert runtime.set_threads() == 2
    assert torch.get_num_threads() == 2
    # an explicit argument wins over the environment
    assert runtime.set_threads(1) == 1 and torch.get_num_threads() == 1


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_set_threads_rejects_a_bad_environment_value(restore_globals, monkeypatch, value):
    monkeypatch.setenv("COURSE_NUM_THREADS", value)
    with pytest.raises(ValueError, match="COURSE_NUM_THREADS"):
        runtime.set_threads()


@pytest.mark.parametrize(
    "value, exc", [(0, ValueError), (-1, ValueError), (1.0, TypeError), ("2", TypeError), (True, TypeError)]
)
def test_set_threads_rejects_bad_values(restore_globals, value, exc):
    before = torch.get_num_threads()
    with pytest.raises(exc, match="num_threads"):
        runtime.set_threads(value)
    assert torch.get_num_threads() == before


# ----------------------------------------------------------------------------------------- device
def test_get_device_default_and_forced_cpu(restore_globals, monkeypatch):
    expected = "cuda" if HAS_CUDA else ("mps" if runtime._mps_available() else "cpu")
    assert runtime.get_device().type == expected
    assert runtime.get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert runtime.get_device() == torch.device("cpu")
    # an explicit preference wins over the environment
    monkeypatch.setenv("COURSE_DEVICE", "nonsense")
    assert runtime.get_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="nonsense"):
        runtime.get_device()


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available here")
def test_get_device_refuses_unavailable_cuda(restore_globals, monkeypatch):
    with pytest.raises(ValueError, match="CUDA is not available"):
        runtime.get_device("cuda")
    monkeypatch.setenv("COURSE_DEVICE", "cuda:0")
    with pytest.raises(ValueError, match="CUDA is not available"):
        runtime.get_device()


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_get_device_cuda_index_checked(restore_globals):
    assert runtime.get_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="GPU"):
        runtime.get_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("name", ["gpu", "CPU", "", "tpu:0"])
def test_get_device_rejects_unknown_names(name):
    with pytest.raises(ValueError, match="device must be one of"):
        runtime.get_device(name)


def test_versions_lists_the_libraries():
    v = runtime.versions()
    assert v["torch"] == torch.__version__
    assert v["numpy"] == np.__version__
    assert {"python", "torchvision", "sklearn", "skimage", "matplotlib"} <= set(v)


# ------------------------------------------------------------------------------------------ setup
def test_setup_seeds_sets_threads_device_determinism_style_and_prints_once(
    restore_globals, monkeypatch, capsys
):
    monkeypatch.setattr(runtime, "_printed_banner", False)
    torch.use_deterministic_algorithms(False)
    mpl.rcParams["figure.dpi"] = 33
    dev = runtime.setup(seed=5, num_threads=1, device="cpu")
    assert dev == torch.device("cpu")
    draws = _draws()
    runtime.seed_everything(5)
    assert _draws() == draws, "setup(seed=5) did not seed like seed_everything(5)"
    assert torch.get_num_threads() == 1
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.benchmark is False
    assert mpl.rcParams["figure.dpi"] == 80  # viz.use_style applied
    assert list(mpl.rcParams["axes.prop_cycle"].by_key()["color"]) == list(viz.PALETTE)
    out = capsys.readouterr().out
    assert out.startswith("device: cpu (") and "CPU threads: 1, seed: 5" in out
    assert f"torch {torch.__version__}" in out and out.count("\n") == 2
    # the banner is printed once per process
    runtime.setup(seed=5, device="cpu")
    assert capsys.readouterr().out == ""


def test_setup_options(restore_globals, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "_printed_banner", False)
    torch.use_deterministic_algorithms(False)
    mpl.rcParams["figure.dpi"] = 33
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    monkeypatch.setenv("COURSE_NUM_THREADS", "2")
    dev = runtime.setup(deterministic=False, style=False, verbose=False)
    assert dev == torch.device("cpu")
    assert torch.get_num_threads() == 2
    assert not torch.are_deterministic_algorithms_enabled()
    assert mpl.rcParams["figure.dpi"] == 33
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="seed"):
        runtime.setup(seed=-1, verbose=False)


# ------------------------------------------------------------------------------- mixed precision
def test_autocast_is_a_no_op_on_cpu():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with runtime.autocast("cpu"):
        out = a @ b
        conv = torch.nn.functional.conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3))
    assert out.dtype == torch.float32 and conv.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")
    with runtime.autocast(torch.device("cpu"), enabled=False):
        assert (a @ b).dtype == torch.float32


def test_grad_scaler_is_disabled_on_cpu():
    scaler = runtime.grad_scaler("cpu")
    assert isinstance(scaler, torch.amp.GradScaler)
    assert not scaler.is_enabled()
    loss = torch.tensor(2.0, requires_grad=True)
    assert scaler.scale(loss) is loss  # a disabled scaler passes the loss through


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_autocast_uses_low_precision_on_cuda():
    a, b = torch.randn(4, 8, device="cuda"), torch.randn(8, 3, device="cuda")
    with runtime.autocast("cuda"):
        out = a @ b
    want = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert out.dtype == want
    assert runtime.grad_scaler("cuda").is_enabled() == (want == torch.float16)
    with runtime.autocast("cuda", enabled=False):
        assert (a @ b).dtype == torch.float32


def test_device_names_are_readable():
    name = runtime.device_name("cpu")
    assert name.startswith(runtime.cpu_name()) and name.endswith(f"{os.cpu_count()} cores")
    assert runtime.cpu_name() and runtime.cpu_name() != "cpu"


def test_banner_names_the_cpu(capsys, monkeypatch):
    monkeypatch.setattr(runtime, "_printed_banner", False)
    runtime.setup(0, device="cpu", style=False)
    out = capsys.readouterr().out
    assert f"device: cpu ({runtime.cpu_name()}" in out


# ------------------------------------------------------------------ mixed precision with a dtype (ch. 20)
def test_amp_dtype_default_and_explicit():
    assert runtime.amp_dtype("cpu") is None
    assert runtime.amp_dtype("cpu", torch.bfloat16) == torch.bfloat16
    assert runtime.amp_dtype(torch.device("cpu"), torch.float16) == torch.float16
    with pytest.raises(ValueError, match="float16 or torch.bfloat16"):
        runtime.amp_dtype("cpu", torch.float32)


def test_autocast_with_a_dtype_runs_in_that_dtype_on_cpu():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with runtime.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        out = a @ b
        assert out.dtype == torch.bfloat16
        conv = torch.nn.functional.conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3))
        assert conv.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), a @ b, rtol=2e-2, atol=2e-2)
    with runtime.autocast("cpu", enabled=False, dtype=torch.bfloat16):
        assert (a @ b).dtype == torch.float32


def test_grad_scaler_is_active_for_float16_only():
    assert not runtime.grad_scaler("cpu", dtype=torch.bfloat16).is_enabled()
    scaler = runtime.grad_scaler("cpu", dtype=torch.float16)
    assert scaler.is_enabled()
    assert not runtime.grad_scaler("cpu", enabled=False, dtype=torch.float16).is_enabled()
    # an overflowing step is skipped and the scale halved; a finite one is taken
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=0.1)
    scale = scaler.get_scale()
    scaler.scale((2 * p).sum()).backward()
    torch.testing.assert_close(p.grad, torch.full((3,), 2 * scale))
    p.grad[0] = float("inf")
    scaler.step(opt)
    scaler.update()
    assert torch.equal(p.detach(), torch.ones(3)) and scaler.get_scale() == scale / 2
    opt.zero_grad()
    scaler.scale((2 * p).sum()).backward()
    scaler.step(opt)  # unscales first: the step uses the true gradient 2
    scaler.update()
    torch.testing.assert_close(p.detach(), torch.full((3,), 0.8))


# ----------------------------------------------------------------------------------------- timing
def test_benchmark_counts_calls_and_reports_times():
    calls = []
    t = runtime.benchmark(lambda: calls.append(1), steps=4, warmup=2, repeats=3)
    assert len(calls) == 2 + 4 * 3
    assert len(t.times) == 3 and t.steps == 4 and all(x >= 0 for x in t.times)
    assert t.best <= t.median and t.per_second(8) == pytest.approx(8 / t.median)
    assert "ms per call" in str(t)
    slow = runtime.benchmark(lambda: __import__("time").sleep(0.01), steps=2, warmup=0, repeats=1)
    assert slow.median >= 0.009


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps"),
        ({"warmup": -1}, "warmup"),
        ({"repeats": 0}, "repeats"),
        ({"steps": 1.5}, "steps"),
    ],
)
def test_benchmark_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        runtime.benchmark(lambda: None, **kwargs)
    with pytest.raises(TypeError, match="callable"):
        runtime.benchmark(3)


# ------------------------------------------------------------------------------------ checkpoints
def test_rng_state_round_trip_restores_every_generator():
    runtime.seed_everything(11)
    random.random()
    np.random.randn()  # noqa: NPY002 - leaves a cached Gaussian in the legacy state
    state = runtime.rng_state()
    first = _draws()
    runtime.seed_everything(99)
    runtime.set_rng_state(state)
    assert _draws() == first
    with pytest.raises(ValueError, match="rng_state"):
        runtime.set_rng_state({"torch": torch.get_rng_state()})


def _run(model, opt, sched, steps):
    """A few steps whose data and dropout come from the global generators (so RNG state matters)."""
    for _ in range(steps):
        x = torch.randn(8, 4)
        loss = torch.nn.functional.dropout(model(x), 0.3).pow(2).mean() + np.random.rand() * 0  # noqa: NPY002
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def _objects(seed):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def test_checkpoint_resumes_the_same_continuation(tmp_path):
    runtime.seed_everything(0)
    model, opt, sched = _objects(0)
    _run(model, opt, sched, 3)
    path = runtime.save_checkpoint(
        tmp_path / "ck.pt", model, opt, sched, step=3, extra={"note": "mid", "g": [1, 2]}
    )
    assert path.exists() and not (tmp_path / "ck.pt.tmp").exists()
    _run(model, opt, sched, 4)
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    runtime.seed_everything(123)  # other global state, other initial weights: the checkpoint must win
    model2, opt2, sched2 = _objects(5)
    info = runtime.load_checkpoint(path, model2, opt2, sched2)
    assert info == {"step": 3, "extra": {"note": "mid", "g": [1, 2]}}
    assert sched2.last_epoch == 3 and opt2.param_groups[0]["lr"] == pytest.approx(0.025)
    _run(model2, opt2, sched2, 4)
    for k, v in model2.state_dict().items():
        torch.testing.assert_close(v, straight[k], rtol=0, atol=0)

    # without the RNG state the continuation sees other data: it differs
    model3, opt3, sched3 = _objects(5)
    runtime.load_checkpoint(path, model3, opt3, sched3, restore_rng=False)
    runtime.seed_everything(7)
    _run(model3, opt3, sched3, 4)
    assert not torch.allclose(model3.weight, straight["weight"])


def test_unwrap_finds_the_plain_module_under_compile_but_leaves_others():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    assert runtime.unwrap(model) is model
    holder = torch.nn.Module()
    holder.module = model  # an attribute called "module" is not a DDP wrapper
    assert runtime.unwrap(holder) is holder
    compiled = torch.compile(model, backend="eager")
    assert runtime.unwrap(compiled) is model


def test_checkpoint_is_loaded_with_weights_only_and_unwraps_compiled_models(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    wrapped = torch.nn.Module()
    wrapped._orig_mod = model  # what torch.compile's wrapper holds
    path = runtime.save_checkpoint(tmp_path / "w.pt", wrapped)
    assert set(torch.load(path, weights_only=True)["model"]) == {"weight", "bias"}
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    fresh = torch.nn.Linear(3, 2)
    runtime.load_checkpoint(path, fresh, restore_rng=False)
    assert seen.get("weights_only") is True
    torch.testing.assert_close(fresh.weight, model.weight)
    with pytest.raises(ValueError, match="no optimizer state"):
        runtime.load_checkpoint(path, fresh, torch.optim.SGD(fresh.parameters(), lr=0.1))


@pytest.mark.parametrize("kwargs, exc", [({"step": -1}, ValueError), ({"step": 1.0}, ValueError)])
def test_save_checkpoint_rejects_bad_arguments(tmp_path, kwargs, exc):
    with pytest.raises(exc, match="step"):
        runtime.save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(1, 1), **kwargs)
    with pytest.raises(TypeError, match="nn.Module"):
        runtime.save_checkpoint(tmp_path / "x.pt", {"w": 1})
