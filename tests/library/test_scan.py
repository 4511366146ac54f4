"""Tests of hecktor.scan: the chunked PyTorch selective scan against a step-by-step reference, and backend choice."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from hecktor import scan
from hecktor.scan import BACKEND_ENV_VAR, ScanBackendError, resolve_scan_backend, selective_scan


def reference_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The S6 recurrence one position at a time (mamba_ssm's selective_scan_ref, in float64)."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        decay = torch.exp(delta[:, :, t, None] * A)
        state = decay * state + (delta[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]
        ys.append((state * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        y = y * F.silu(z.double())
    return y


def make_inputs(batch=2, dim=5, n_state=4, length=97, delta_offset=-1.0, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype)

    return dict(
        u=randn(batch, dim, length),
        delta=randn(batch, dim, length) + delta_offset,
        A=-torch.exp(randn(dim, n_state)),  # negative, as in Mamba (A = -exp(A_log))
        B=randn(batch, n_state, length),
        C=randn(batch, n_state, length),
        D=randn(dim),
        z=randn(batch, dim, length),
        delta_bias=0.1 * randn(dim),
    )


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).norm() / expected.double().norm()).item()


OPTION_SETS = {
    "plain": dict(D=False, z=False, delta_bias=False, delta_softplus=False),
    "skip": dict(D=True, z=False, delta_bias=False, delta_softplus=True),
    "gate": dict(D=False, z=True, delta_bias=True, delta_softplus=True),
    "all": dict(D=True, z=True, delta_bias=True, delta_softplus=True),
}


def select(inputs: dict, options: dict) -> dict:
    kwargs = {k: inputs[k] for k in ("u", "delta", "A", "B", "C")}
    for name in ("D", "z", "delta_bias"):
        kwargs[name] = inputs[name] if options[name] else None
    kwargs["delta_softplus"] = options["delta_softplus"]
    if not options["delta_softplus"]:
        kwargs["delta"] = kwargs["delta"].abs()  # without softplus, delta must be non-negative for a stable scan
    return kwargs


@pytest.mark.parametrize("options", list(OPTION_SETS.values()), ids=list(OPTION_SETS))
@pytest.mark.parametrize("chunk_size", [16, 50, 4096])
def test_forward_matches_step_by_step_reference(options, chunk_size):
    kwargs = select(make_inputs(), options)
    out = selective_scan(**kwargs, backend="torch", chunk_size=chunk_size)
    assert out.dtype == torch.float32 and out.shape == (2, 5, 97)
    assert rel_err(out, reference_scan(**kwargs)) <= 1e-4


def test_large_delta_is_stable():
    # delta = softplus(10 + noise) ~ 10 and |A| up to ~20: exp(-A * cumsum(delta)) would be exp(>> 88) after a few
    # steps, so any exp(+cumsum) formulation overflows float32 here.
    inputs = make_inputs(length=300, delta_offset=10.0, n_state=6)
    inputs["A"] = -torch.linspace(0.5, 20.0, 5 * 6).reshape(5, 6)
    kwargs = select(inputs, OPTION_SETS["all"])
    out = selective_scan(**kwargs, backend="torch", chunk_size=64)
    assert torch.isfinite(out).all()
    assert rel_err(out, reference_scan(**kwargs)) <= 1e-4


def test_long_sequence_matches_reference():
    # Small deltas keep memory over thousands of steps, so errors in the carried state would show.
    inputs = make_inputs(batch=1, dim=3, n_state=4, length=5000, delta_offset=-5.0, seed=1)
    inputs["A"] = -torch.rand(3, 4, generator=torch.Generator().manual_seed(2)) * 0.5
    kwargs = select(inputs, OPTION_SETS["all"])
    expected = reference_scan(**kwargs)
    for chunk_size in (None, 333):
        assert rel_err(selective_scan(**kwargs, backend="torch", chunk_size=chunk_size), expected) <= 1e-4


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(("length", "steps"), [(16, 16), (40 * 8, 8), (37 * 4, 4), (1000, 1)])
def test_chunked_linear_recurrence(length, steps, reverse):
    """The core: T loop steps over K chunks, then the K chunk boundaries (by a loop, or recursively for K > 32)."""
    generator = torch.Generator().manual_seed(length)
    decay = torch.rand(2, length, 3, 2, generator=generator, dtype=torch.float64) * 0.5 + 0.5
    x = torch.randn(2, length, 3, 2, generator=generator, dtype=torch.float64)
    h0 = torch.randn(2, 3, 2, generator=generator, dtype=torch.float64)
    expected, state = torch.empty_like(x), h0
    for t in range(length - 1, -1, -1) if reverse else range(length):
        state = decay[:, t] * state + x[:, t]
        expected[:, t] = state
    carry = scan._linear_scan_(decay.clone(), x, h0, steps, reverse=reverse)
    torch.testing.assert_close(x, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(carry, state, rtol=1e-12, atol=1e-12)


def test_result_does_not_depend_on_chunk_size():
    kwargs = select(make_inputs(length=203), OPTION_SETS["all"])
    outputs = [selective_scan(**kwargs, backend="torch", chunk_size=c) for c in (1, 7, 64, 203, 10_000)]
    for out in outputs[1:]:
        assert rel_err(out, outputs[0]) <= 1e-6


def scan_gradients(kwargs: dict, fn) -> dict[str, torch.Tensor]:
    leaves = {k: v.detach().clone().requires_grad_() for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
    out = fn(**{**kwargs, **leaves})
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(out.dtype)
    (out * weights).sum().backward()
    return {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize("options", [OPTION_SETS["plain"], OPTION_SETS["all"]], ids=["plain", "all"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradients_match_reference(options, dtype):
    # Several segments (chunk 24 < length 61) so gradients also cross segment and chunk boundaries.
    kwargs = select(make_inputs(length=61, delta_offset=0.5, dtype=dtype), options)
    ours = scan_gradients(kwargs, lambda **kw: selective_scan(**kw, backend="torch", chunk_size=24))
    expected = scan_gradients({k: v.double() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()},
                              reference_scan)
    assert set(ours) == set(expected)
    for name in expected:
        assert ours[name].dtype == dtype
        assert rel_err(ours[name], expected[name]) <= 1e-4, name


def test_gradients_with_large_delta():
    inputs = make_inputs(length=80, delta_offset=10.0, dtype=torch.float64)
    inputs["A"] = -torch.linspace(0.5, 20.0, 5 * 4, dtype=torch.float64).reshape(5, 4)
    kwargs = select(inputs, OPTION_SETS["all"])
    ours = scan_gradients(kwargs, lambda **kw: selective_scan(**kw, backend="torch", chunk_size=32))
    expected = scan_gradients(kwargs, reference_scan)
    for name in expected:
        assert torch.isfinite(ours[name]).all()
        assert rel_err(ours[name], expected[name]) <= 1e-4, name


def test_gradcheck_float64():
    kwargs = select(make_inputs(batch=1, dim=2, n_state=3, length=13, dtype=torch.float64), OPTION_SETS["all"])
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    leaves = tuple(kwargs[n].clone().requires_grad_() for n in names)

    def fn(*tensors):
        return selective_scan(**dict(zip(names, tensors)), delta_softplus=True, backend="torch", chunk_size=4)

    assert torch.autograd.gradcheck(fn, leaves)


class _LargestAllocation(TorchDispatchMode):
    """Records the element count of the largest tensor any aten op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for tensor in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return result


def test_memory_is_not_length_times_dim_times_state():
    batch, dim, n_state, length, chunk_size = 1, 16, 8, 4096, 128
    kwargs = select(make_inputs(batch=batch, dim=dim, n_state=n_state, length=length), OPTION_SETS["all"])
    leaves = {k: v.requires_grad_() for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
    with _LargestAllocation() as tracker:
        out = selective_scan(**kwargs, backend="torch", chunk_size=chunk_size)
        out.sum().backward()
    assert all(leaf.grad is not None for leaf in leaves.values())
    # Forward and backward: the largest tensors are the (batch, dim, L) output and input gradients. The segment
    # buffers hold batch x (chunk_size + 1) x dim x N; nothing holds the L x dim x N state history.
    assert tracker.largest == batch * dim * length
    assert batch * (chunk_size + 1) * dim * n_state < tracker.largest < batch * length * dim * n_state


def test_half_precision_inputs_are_computed_in_float32():
    kwargs = select(make_inputs(length=40), OPTION_SETS["all"])
    half = {k: v.to(torch.bfloat16) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    out = selective_scan(**half, backend="torch")
    assert out.dtype == torch.bfloat16
    expected = reference_scan(**{k: v.float() if isinstance(v, torch.Tensor) else v for k, v in half.items()})
    assert rel_err(out, expected) <= 1e-2  # bfloat16 output rounding only


def test_shape_errors_are_reported():
    kwargs = select(make_inputs(), OPTION_SETS["all"])
    kwargs["B"] = kwargs["B"][:, :, :-1]
    with pytest.raises(ValueError, match="B must have shape"):
        selective_scan(**kwargs, backend="torch")


# ---- backend selection ----

def test_auto_and_torch_backends_on_cpu(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    assert resolve_scan_backend("auto", torch.device("cpu")) == "torch"
    assert resolve_scan_backend(None, torch.device("cpu")) == "torch"
    assert resolve_scan_backend("torch", torch.device("cpu")) == "torch"
    # Even with mamba_ssm importable, CPU tensors go to the torch backend.
    monkeypatch.setattr(scan, "mamba_ssm_selective_scan", lambda: object())
    assert resolve_scan_backend("auto", torch.device("cpu")) == "torch"


def test_forced_cuda_without_mamba_ssm_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    monkeypatch.setattr(scan, "mamba_ssm_selective_scan", lambda: None)
    kwargs = select(make_inputs(length=8), OPTION_SETS["all"])
    with pytest.raises(ScanBackendError, match="needs mamba_ssm.*HECKTOR_SCAN_BACKEND=torch"):
        selective_scan(**kwargs, backend="cuda")
    # The same through the environment variable.
    monkeypatch.setenv(BACKEND_ENV_VAR, "cuda")
    with pytest.raises(ScanBackendError, match="environment variable HECKTOR_SCAN_BACKEND"):
        selective_scan(**kwargs)


def test_forced_cuda_on_cpu_tensors_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(scan, "mamba_ssm_selective_scan", lambda: object())
    with pytest.raises(ScanBackendError, match="needs CUDA tensors"):
        resolve_scan_backend("cuda", torch.device("cpu"))


def test_environment_variable_selects_backend(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, "torch")
    assert resolve_scan_backend("auto", torch.device("cpu")) == "torch"
    monkeypatch.setenv(BACKEND_ENV_VAR, "fast")
    with pytest.raises(ValueError, match="Unknown selective-scan backend 'fast'"):
        resolve_scan_backend("auto", torch.device("cpu"))
    # An explicit argument wins over the environment.
    assert resolve_scan_backend("torch", torch.device("cpu")) == "torch"


def test_cuda_backend_receives_mamba_ssm_arguments(monkeypatch):
    calls = []

    def fake_kernel(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        calls.append(dict(D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus))
        return scan._selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, None)

    monkeypatch.setattr(scan, "mamba_ssm_selective_scan", lambda: fake_kernel)
    monkeypatch.setattr(scan, "resolve_scan_backend", lambda backend, device: "cuda")
    kwargs = select(make_inputs(length=20), OPTION_SETS["all"])
    out = selective_scan(**kwargs, backend="cuda")
    assert len(calls) == 1 and calls[0]["delta_softplus"] is True
    assert calls[0]["z"] is kwargs["z"] and calls[0]["delta_bias"] is kwargs["delta_bias"]
    assert rel_err(out, reference_scan(**kwargs)) <= 1e-4


# ---- which backend runs, logged once ----

@pytest.fixture
def fresh_backend_log(monkeypatch):
    """Forget the cached mamba_ssm import and the lines already logged, before and after the test."""

    def reset():
        scan._import_mamba_ssm.cache_clear()
        scan._LOGGED_BACKEND_KEYS.clear()
        scan._LOGGED_BACKEND_LINES.clear()

    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    reset()
    yield
    reset()


def test_installed_but_broken_mamba_ssm_warns_with_the_reason(tmp_path, monkeypatch, caplog, fresh_backend_log):
    # A real package on sys.path whose import fails the way a mismatched CUDA build does.
    package = tmp_path / "mamba_ssm"
    package.mkdir()
    (package / "__init__.py").write_text(
        'raise ImportError("libcudart.so.11.0: cannot open shared object file: No such file or directory\\nmore")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mamba_ssm", raising=False)
    caplog.set_level(logging.INFO, logger="hecktor.scan")
    assert scan.mamba_ssm_selective_scan() is None
    assert scan.mamba_ssm_selective_scan() is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the import is tried once per process
    message = warnings[0].getMessage()
    assert "mamba_ssm installed but its import failed: ImportError: libcudart.so.11.0: cannot open" in message
    assert "\n" not in message and "more" not in message
    assert "pure-PyTorch" in message
    # On a GPU the INFO line gives the same reason; auto falls back to torch instead of failing.
    assert resolve_scan_backend("auto", torch.device("cuda")) == "torch"
    assert scan.describe_scan_backend("auto", torch.device("cuda")) == (
        "selective scan: pure-PyTorch chunked scan (mamba_ssm installed but its import failed: ImportError: "
        "libcudart.so.11.0: cannot open shared object file: No such file or directory)"
    )


def test_missing_mamba_ssm_is_no_warning(monkeypatch, caplog, fresh_backend_log):
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # find_spec answers None, as when not installed
    caplog.set_level(logging.INFO, logger="hecktor.scan")
    assert scan.mamba_ssm_selective_scan() is None
    assert scan.mamba_ssm_import_problem() == "mamba_ssm not installed"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert scan.describe_scan_backend("auto", torch.device("cuda")) == (
        "selective scan: pure-PyTorch chunked scan (mamba_ssm not installed)"
    )


def test_backend_descriptions(monkeypatch, fresh_backend_log):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert scan.describe_scan_backend("auto", cpu).endswith("pure-PyTorch chunked scan (tensors on cpu, the "
                                                           "mamba_ssm kernel needs CUDA)")
    assert scan.describe_scan_backend("torch", gpu).endswith("pure-PyTorch chunked scan (backend 'torch')")
    monkeypatch.setenv(BACKEND_ENV_VAR, "torch")
    assert scan.describe_scan_backend("auto", gpu).endswith("pure-PyTorch chunked scan (HECKTOR_SCAN_BACKEND=torch)")
    monkeypatch.setattr(scan, "mamba_ssm_selective_scan", lambda: object())
    monkeypatch.setenv(BACKEND_ENV_VAR, "cuda")
    line = scan.describe_scan_backend("auto", gpu)
    assert line == "selective scan: mamba_ssm CUDA kernel (HECKTOR_SCAN_BACKEND=cuda)"
    monkeypatch.delenv(BACKEND_ENV_VAR)
    assert scan.describe_scan_backend("auto", gpu) == (
        "selective scan: mamba_ssm CUDA kernel (mamba_ssm imported, tensors on cuda)"
    )


def test_backend_is_logged_once_not_per_call(monkeypatch, caplog, fresh_backend_log):
    from hecktor.networks.hecmamba import MambaMixer

    caplog.set_level(logging.INFO, logger="hecktor.scan")
    torch.manual_seed(0)
    mixer = MambaMixer(4, d_state=2)
    with torch.no_grad():
        for _ in range(3):
            mixer(torch.randn(1, 10, 4))
    lines = [r.getMessage() for r in caplog.records if r.name == "hecktor.scan"]
    assert lines == ["selective scan: pure-PyTorch chunked scan (tensors on cpu, the mamba_ssm kernel needs CUDA)"]
    # A different choice is a new line, once.
    monkeypatch.setenv(BACKEND_ENV_VAR, "torch")
    kwargs = select(make_inputs(length=8), OPTION_SETS["all"])
    for _ in range(2):
        selective_scan(**kwargs)
    lines = [r.getMessage() for r in caplog.records if r.name == "hecktor.scan"]
    assert lines[1:] == ["selective scan: pure-PyTorch chunked scan (HECKTOR_SCAN_BACKEND=torch)"]
