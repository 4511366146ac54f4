"""Selective scan (the S6 recurrence of Mamba) with two backends.

``selective_scan`` follows the argument conventions of ``mamba_ssm``'s ``selective_scan_fn``::

    delta <- softplus(delta + delta_bias)                  (each optional)
    h_t    = exp(delta_t * A) * h_{t-1} + delta_t * u_t * B_t     h: (batch, dim, N)
    y_t    = sum_n h_t[:, :, n] * C_t[:, n]  +  D * u_t
    out    = y * silu(z)                                    (if z is given)

Backends:

* ``"cuda"``: ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` (fused CUDA kernel). Needs ``mamba_ssm``
  (the optional ``hecktor[mamba]`` extra) and CUDA tensors.
* ``"torch"``: pure PyTorch, runs on any device, autograd-capable. Written here because the only public PyTorch
  scans (mambapy's parallel scan, the reference loop of mamba_ssm) materialise (length x dim x N) tensors for the
  whole sequence: 1.6 GB per tensor for one 64**3 feature map, several of them in flight.
* ``"auto"`` (default): ``"cuda"`` when mamba_ssm is importable and the tensors are on CUDA, otherwise ``"torch"``.

The backend is chosen by the ``backend`` argument; ``"auto"`` defers to the environment variable
``HECKTOR_SCAN_BACKEND`` (``auto`` / ``torch`` / ``cuda``) when it is set.

Logging (logger ``hecktor.scan``): the first scan on a device logs at INFO which backend runs and why, e.g.
``selective scan: pure-PyTorch chunked scan (mamba_ssm not installed)``; each distinct line is logged once per
process, not per call. When mamba_ssm is installed but its import fails (a CUDA or torch version mismatch in a
container), the scan falls back to the torch backend, which is several times slower, and a WARNING gives the
import error: a time-budgeted container must not lose its fast path silently.

How the torch backend works (memory O(chunk_size x dim x N), whatever the length):

1. The sequence is processed in *segments* of ``chunk_size`` positions, one after the other, carrying the state.
2. A segment is split into K chunks of T positions. A Python loop of T steps runs the recurrence for all K chunks at
   once, each chunk started from a zero state, in place on a (batch, K, T, dim, N) buffer. The same loop turns
   the decay buffer into within-chunk cumulative products prod_{s<=t} exp(delta_s A).
3. The state entering each chunk follows the same kind of recurrence over the K chunk ends (decay: the chunk's
   cumulative product); it is solved by a loop for small K and by one more level of this method otherwise. One
   vectorised multiply-add then adds ``cumprod_t * h_start`` to every position. All exponents are
   ``delta * A <= 0`` (A < 0, delta >= 0), so nothing overflows for large delta (unlike the exp(+cumsum) trick,
   which divides by a vanishing cumulative product).
4. y is the contraction of the states with C; delta's bias and softplus, the D skip and the silu(z) gate are
   applied per segment too, so no full-length temporary is made besides the output.

The exponent delta * A is clamped at -80 before exp (see ``_MIN_EXPONENT``): that changes a decay factor by less than
2e-35, and float32 exp of underflowing arguments is an order of magnitude slower.

Autograd goes through a ``torch.autograd.Function`` whose backward recomputes the states segment by segment (from
the states saved at segment starts, as the CUDA kernel does) and runs the adjoint recurrence
``lambda_t = exp(delta_{t+1} A) * lambda_{t+1} + g_t C_t`` with the same chunked machinery backwards in time. It saves
only the inputs and one (batch, dim, N) state per segment, so training memory is O(batch x dim x length) like the
rest of the network, not O(batch x dim x N x length).

Measured with ``benchmarks/bench_scan.py`` (forward, batch 1, L 262,144, dim 96, N 16, float32) on 2 AMD EPYC cores
shared with other jobs: 2 threads 1.7 s and 207 MiB peak against mambapy's parallel scan 7.4 s and 8.5 GB (load 2,
OMP_WAIT_POLICY=PASSIVE); 1 thread 2.5 s against 21.4 s (load 6.6). Outputs agree to 1e-7. The backward pass costs
about 3x the forward.

Shared machines: each loop step is an OpenMP parallel region (thousands per call). When other processes keep the
cores busy, OpenMP's default spin-waiting at those barriers burns the CPU the other thread needs: measured at load
3.5 on 2 cores, 2 threads took 7 s with the default policy and 1.9 s with ``OMP_WAIT_POLICY=PASSIVE`` (set it in the
environment before Python starts; a library cannot change it once the OpenMP runtime is loaded).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from hecktor.errors import HecktorError

__all__ = [
    "BACKEND_ENV_VAR",
    "BACKENDS",
    "ScanBackendError",
    "default_chunk_size",
    "describe_scan_backend",
    "mamba_ssm_import_problem",
    "mamba_ssm_selective_scan",
    "resolve_scan_backend",
    "selective_scan",
]

logger = logging.getLogger(__name__)

BACKEND_ENV_VAR = "HECKTOR_SCAN_BACKEND"
BACKENDS = ("auto", "torch", "cuda")

# Default size of the torch backend's segment buffers, in state elements (batch x positions x dim x N); the forward
# holds two such buffers, the backward four. chunk_size=None turns this into positions for the actual batch, dim and
# N, so small layers get long segments (fewer, larger operations). On CPU, measured at batch 1, dim 96, N 16,
# L 262,144 (the benchmark's size) with T = 16 steps per chunk: 2048 positions (3.1 M elements) used the least CPU
# time (buffers stay in cache), 4096 about 6% more and 8192 13% more; but every loop step is an OpenMP parallel
# region, and with other processes competing for the cores fewer, larger regions (longer segments) ran twice as fast.
# 4096 x 96 x 16 (25 MB in float32) is the compromise. On a GPU, longer segments mean fewer kernel launches.
_CPU_BUFFER_ELEMENTS = 4096 * 96 * 16
_GPU_BUFFER_ELEMENTS = 4 * _CPU_BUFFER_ELEMENTS
_MIN_CHUNK_SIZE = 256


class ScanBackendError(HecktorError, RuntimeError):
    """The requested selective-scan backend cannot run here (mamba_ssm missing, or tensors not on CUDA)."""


@functools.lru_cache(maxsize=1)
def _import_mamba_ssm() -> tuple[Callable | None, str]:
    """(``selective_scan_fn`` or None, why it is None: "" when imported). Tried once per process."""
    if importlib.util.find_spec("mamba_ssm") is None:
        return None, "mamba_ssm not installed"
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    # Installed but broken: a compiled extension built for another CUDA/torch fails in many ways (ImportError for an
    # undefined symbol, OSError for a missing library, RuntimeError from triton). The torch scan still gives the same
    # result, so fall back, but loudly.
    except Exception as error:  # noqa: BLE001
        reason = f"mamba_ssm installed but its import failed: {_one_line(error)}"
        logger.warning("selective scan: %s; falling back to the slower pure-PyTorch scan.", reason)
        return None, reason
    return selective_scan_fn, ""


def _one_line(error: BaseException) -> str:
    """``Type: first line of the message`` of an exception."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def mamba_ssm_selective_scan() -> Callable | None:
    """``mamba_ssm``'s ``selective_scan_fn`` if it can be imported, else ``None``.

    The import is tried once per process; when mamba_ssm is installed but cannot be imported, that first try logs a
    WARNING with the import error (see ``mamba_ssm_import_problem``).
    """
    return _import_mamba_ssm()[0]


def mamba_ssm_import_problem() -> str:
    """Why ``mamba_ssm_selective_scan()`` is None (e.g. ``"mamba_ssm not installed"``); ``""`` when it imports."""
    return _import_mamba_ssm()[1]


def resolve_scan_backend(backend: str | None, device: torch.device) -> str:
    """The backend that will run (``"torch"`` or ``"cuda"``) for tensors on ``device``.

    Args:
        backend: ``"auto"``, ``"torch"``, ``"cuda"`` or ``None`` (same as ``"auto"``). ``"auto"`` defers to the
            ``HECKTOR_SCAN_BACKEND`` environment variable when it is set.
        device: device of the scan's tensors.

    Raises:
        ValueError: unknown backend name.
        ScanBackendError: ``"cuda"`` forced without an importable mamba_ssm or on non-CUDA tensors.
    """
    name = (backend or "auto").strip().lower()
    if name == "auto":
        name = os.environ.get(BACKEND_ENV_VAR, "").strip().lower() or "auto"
        source = f"environment variable {BACKEND_ENV_VAR}"
    else:
        source = "backend argument"
    if name not in BACKENDS:
        raise ValueError(f"Unknown selective-scan backend {name!r} (from the {source}); choose one of {BACKENDS}.")
    device = torch.device(device)
    if name == "cuda":
        if mamba_ssm_selective_scan() is None:
            raise ScanBackendError(
                f"Selective-scan backend 'cuda' (from the {source}) needs mamba_ssm, which cannot be imported here: "
                "install the CUDA extra (pip install 'hecktor[mamba]') or use backend 'torch' "
                f"({BACKEND_ENV_VAR}=torch)."
            )
        if device.type != "cuda":
            raise ScanBackendError(
                f"Selective-scan backend 'cuda' (from the {source}) needs CUDA tensors, got tensors on "
                f"{device.type}: move the model to a GPU or use backend 'torch' ({BACKEND_ENV_VAR}=torch)."
            )
        return "cuda"
    if name == "torch":
        return "torch"
    return "cuda" if device.type == "cuda" and mamba_ssm_selective_scan() is not None else "torch"


def describe_scan_backend(backend: str | None, device: torch.device, resolved: str | None = None) -> str:
    """One line saying which scan runs for tensors on ``device`` and why (the line ``selective_scan`` logs).

    Args:
        backend: the requested backend, as given to ``resolve_scan_backend``.
        device: device of the scan's tensors.
        resolved: the backend that runs; ``None``: ``resolve_scan_backend(backend, device)``.
    """
    device = torch.device(device)
    resolved = resolved or resolve_scan_backend(backend, device)
    requested = (backend or "auto").strip().lower()
    from_env = os.environ.get(BACKEND_ENV_VAR, "").strip().lower() if requested == "auto" else ""
    if resolved == "cuda":
        description = "mamba_ssm CUDA kernel"
        forced = f"{BACKEND_ENV_VAR}=cuda" if from_env == "cuda" else ("backend 'cuda'" if requested == "cuda" else "")
        why = forced or f"mamba_ssm imported, tensors on {device}"
    else:
        description = "pure-PyTorch chunked scan"
        if requested == "torch":
            why = "backend 'torch'"
        elif from_env == "torch":
            why = f"{BACKEND_ENV_VAR}=torch"
        elif device.type != "cuda":
            why = f"tensors on {device.type}, the mamba_ssm kernel needs CUDA"
        else:
            why = mamba_ssm_import_problem() or "mamba_ssm not importable"
    return f"selective scan: {description} ({why})"


# What _log_backend_once has seen: the scan's inputs (cheap to test on every call) and the lines logged (one INFO
# line per distinct choice and process, not one per scan).
_LOGGED_BACKEND_KEYS: set[tuple] = set()
_LOGGED_BACKEND_LINES: set[str] = set()


def _log_backend_once(backend: str | None, device: torch.device, resolved: str) -> None:
    key = (backend, str(device), resolved, os.environ.get(BACKEND_ENV_VAR, ""))
    if key in _LOGGED_BACKEND_KEYS:
        return
    _LOGGED_BACKEND_KEYS.add(key)
    line = describe_scan_backend(backend, device, resolved)
    if line not in _LOGGED_BACKEND_LINES:
        _LOGGED_BACKEND_LINES.add(line)
        logger.info(line)


def default_chunk_size(device: torch.device, batch: int = 1, dim: int = 96, n_state: int = 16) -> int:
    """Default positions per segment of the torch backend for tensors on ``device`` of the given sizes."""
    budget = _GPU_BUFFER_ELEMENTS if torch.device(device).type == "cuda" else _CPU_BUFFER_ELEMENTS
    return max(_MIN_CHUNK_SIZE, budget // max(1, batch * dim * n_state))


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    backend: str | None = "auto",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Selective scan with mamba_ssm's ``selective_scan_fn`` conventions.

    Args:
        u: inputs, (batch, dim, L).
        delta: step sizes before bias/softplus, (batch, dim, L).
        A: state matrix (diagonal per channel, negative real part for a stable scan), (dim, N).
        B: input-dependent input matrix, (batch, N, L).
        C: input-dependent output matrix, (batch, N, L).
        D: skip connection, (dim,).
        z: gate, (batch, dim, L); the output is multiplied by silu(z).
        delta_bias: added to delta before the softplus, (dim,).
        delta_softplus: apply softplus to delta (+ bias).
        backend: ``"auto"``, ``"torch"`` or ``"cuda"`` (see the module docstring).
        chunk_size: torch backend only: positions held in memory at once (memory is
            O(batch x chunk_size x dim x N)); ``None``: ``default_chunk_size`` (buffers of about 25 MB on CPU,
            100 MB on GPU). The result does not depend on it beyond rounding.

    Returns:
        (batch, dim, L) tensor in the dtype of ``u``.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    resolved = resolve_scan_backend(backend, u.device)
    _log_backend_once(backend, u.device, resolved)
    if resolved == "cuda":
        scan_fn = mamba_ssm_selective_scan()
        return scan_fn(u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)
    return _selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size)


def _check_shapes(u, delta, A, B, C, D, z, delta_bias) -> None:
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, dim, L), got shape {tuple(u.shape)}.")
    batch, dim, length = u.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: A must be (dim={dim}, N), got shape {tuple(A.shape)}.")
    n_state = A.shape[1]
    expected = {
        "delta": (delta, (batch, dim, length)),
        "B": (B, (batch, n_state, length)),
        "C": (C, (batch, n_state, length)),
        "D": (D, (dim,)),
        "z": (z, (batch, dim, length)),
        "delta_bias": (delta_bias, (dim,)),
    }
    for name, (tensor, shape) in expected.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"selective_scan: {name} must have shape {shape}, got {tuple(tensor.shape)}.")


def _selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size) -> torch.Tensor:
    # Compute in float32 (float64 if any input is float64): half-precision states lose the long-range signal, and
    # mamba_ssm's kernel also keeps its states in float32. Autocast would turn the contractions into fp16 matmuls.
    out_dtype = u.dtype
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    dtype = torch.float64 if any(t is not None and t.dtype == torch.float64 for t in inputs) else torch.float32
    if chunk_size is None:
        chunk_size = default_chunk_size(u.device, u.shape[0], u.shape[1], A.shape[1])
    if chunk_size < 1:
        raise ValueError(f"selective_scan: chunk_size must be positive, got {chunk_size}.")
    with torch.autocast(device_type=u.device.type, enabled=False):
        inputs = tuple(None if t is None else t.to(dtype) for t in inputs)
        y = _ChunkedScan.apply(*inputs, bool(delta_softplus), int(chunk_size))
    return y.to(out_dtype)


def _chunk_layout(chunk_size: int, chunks_per_step: int = 16) -> tuple[int, int]:
    """(steps per chunk T, segment length S = K * T) for a requested segment length.

    T is the power of two nearest sqrt(chunk_size / chunks_per_step), so that K is about chunks_per_step * T: each
    of the T loop steps then works on K chunks at once (few, large operations), and the K chunk boundaries are
    resolved by one more level of the same method (see ``_chunk_boundary_scan_``).
    """
    steps = 1 << max(0, round(math.log2(math.sqrt(chunk_size / chunks_per_step))))
    segment = -(-chunk_size // steps) * steps
    return steps, segment


def _segments(length: int, segment: int, steps: int):
    """(start, stop, padded length) of each segment; the padded length is a multiple of ``steps``."""
    for start in range(0, length, segment):
        stop = min(start + segment, length)
        yield start, stop, -(-(stop - start) // steps) * steps


def _linear_scan_(decay: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None, steps: int, reverse: bool = False):
    """In-place chunked linear recurrence over dim 1 of (batch, S, dim, N) buffers, S a multiple of ``steps``.

    Forward:  x[t] <- decay[t] * x[t-1] + x[t], with x[-1] = h0 (zero if None).
    Reverse:  x[t] <- decay[t] * x[t+1] + x[t], with x[S] = h0.

    ``decay`` is overwritten (within-chunk cumulative products). Returns the last state (x[S-1], or x[0] when
    reversed) as a new tensor, to carry into the next segment.
    """
    batch, length, dim, n_state = x.shape
    n_chunks = length // steps
    a5 = decay.view(batch, n_chunks, steps, dim, n_state)
    x5 = x.view(batch, n_chunks, steps, dim, n_state)
    if reverse:
        step_order, neighbour, boundary = range(steps - 2, -1, -1), 1, 0
    else:
        step_order, neighbour, boundary = range(1, steps), -1, steps - 1
    # Every chunk starts from a zero state; the loop runs over the T positions of all K chunks at once.
    for t in step_order:
        x5[:, :, t].addcmul_(x5[:, :, t + neighbour], a5[:, :, t])
        a5[:, :, t].mul_(a5[:, :, t + neighbour])
    # True state entering each chunk: start_k = E_{k-1} with E_k = end_k + cumprod_k * E_{k-1}, E_{-1} = h0 (mirrored
    # when reversed). That is the same recurrence over the K chunk ends, solved by the same method.
    ends = x5[:, :, boundary].clone()
    carry = _chunk_boundary_scan_(a5[:, :, boundary].clone(), ends, h0, reverse)
    starts = torch.empty_like(ends)
    zero = ends.new_zeros(()) if h0 is None else h0
    if reverse:
        starts[:, :-1], starts[:, -1] = ends[:, 1:], zero
    else:
        starts[:, 1:], starts[:, 0] = ends[:, :-1], zero
    x5.addcmul_(a5, starts.unsqueeze(2))
    return carry


# Below this many chunks a plain loop over the chunk boundaries is cheaper than another level of chunking.
_MAX_LOOPED_CHUNKS = 32


def _chunk_boundary_scan_(decay: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None, reverse: bool):
    """In place on (batch, K, dim, N): the recurrence of ``_linear_scan_`` over K chunk ends. Returns the last state."""
    n_chunks = x.shape[1]
    if n_chunks <= _MAX_LOOPED_CHUNKS:
        order = range(n_chunks - 1, -1, -1) if reverse else range(n_chunks)
        previous = h0
        for k in order:
            if previous is not None:
                x[:, k].addcmul_(decay[:, k], previous)
            previous = x[:, k]
        return previous.clone()
    steps, padded = _chunk_layout(n_chunks, chunks_per_step=1)
    if padded == n_chunks:
        return _linear_scan_(decay, x, h0, steps, reverse)
    # Pad at the far end (the end the recurrence reaches last) with decay 1, input 0: the carry passes unchanged.
    shape = (x.shape[0], padded, *x.shape[2:])
    decay_padded, x_padded = decay.new_ones(shape), x.new_zeros(shape)
    if reverse:
        decay_padded[:, padded - n_chunks :], x_padded[:, padded - n_chunks :] = decay, x
    else:
        decay_padded[:, :n_chunks], x_padded[:, :n_chunks] = decay, x
    carry = _linear_scan_(decay_padded, x_padded, h0, steps, reverse)
    x.copy_(x_padded[:, padded - n_chunks :] if reverse else x_padded[:, :n_chunks])
    return carry


# exp(x) for x below about -87 underflows float32, and the vectorised exp takes a slow path there (10-30x slower
# per element on x86). exp(-80) = 1.8e-35 is as good as zero for a decay factor, so the exponent is clamped there.
_MIN_EXPONENT = -80.0


def _fill_decay(out: torch.Tensor, delta_t: torch.Tensor, A: torch.Tensor) -> None:
    """out[:, :n] = exp(delta_t * A) for delta_t (batch, n, dim); positions past n get decay 1 (padding)."""
    n = delta_t.shape[1]
    head = out[:, :n]
    torch.mul(delta_t.unsqueeze(-1), A, out=head)
    head.clamp_min_(_MIN_EXPONENT).exp_()
    out[:, n:].fill_(1.0)


def _fill_outer(out: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> None:
    """out[:, :n] = left (batch, n, dim) outer right (batch, n, N); positions past n get 0 (padding)."""
    n = left.shape[1]
    torch.mul(left.unsqueeze(-1), right.unsqueeze(2), out=out[:, :n])
    out[:, n:].zero_()


# Moving between the (batch, channels, L) inputs and the (batch, n, channels) segment layout. A direct transposing
# copy of a (batch, channels, L)-contiguous tensor reads its rows at a stride of L floats; when L is a power of two
# (262,144 for a 64**3 feature map) all rows map to the same cache sets and the copy runs 3x slower. So rows are first
# copied (sequentially) into a staging buffer whose row stride is not a power of two, and transposed from there.
_STAGING_PAD = 16


def _seq_last(t: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """(batch, C, L)[..., start:stop] as a contiguous (batch, stop - start, C) block."""
    src = t[:, :, start:stop]
    if src.stride(-1) != 1 or t.device.type == "cuda":  # already channels-last in memory, or no cache sets to fear
        return src.transpose(1, 2).contiguous()
    stage = t.new_empty(t.shape[0], t.shape[1], stop - start + _STAGING_PAD)[:, :, : stop - start]
    stage.copy_(src)
    return stage.transpose(1, 2).contiguous()


def _store_seq_last(dst: torch.Tensor, start: int, src: torch.Tensor) -> None:
    """dst[:, :, start:start + n] = src.transpose(1, 2) for src (batch, n, C) and dst (batch, C, L)."""
    view = dst[:, :, start : start + src.shape[1]]
    if view.stride(-1) != 1 or dst.device.type == "cuda":
        view.copy_(src.transpose(1, 2))
        return
    stage = src.new_empty(src.shape[0], src.shape[2], src.shape[1] + _STAGING_PAD)[:, :, : src.shape[1]]
    stage.copy_(src.transpose(1, 2))
    view.copy_(stage)


class _Segment:
    """The per-position inputs of one segment, laid out (batch, n, channels) with positions before channels."""

    def __init__(self, start: int, stop: int, u, delta_raw, B, C, z, delta_bias, delta_softplus: bool):
        self.u = _seq_last(u, start, stop)
        self.B = _seq_last(B, start, stop)
        self.C = _seq_last(C, start, stop)
        self.z = None if z is None else _seq_last(z, start, stop)
        self.delta_raw, self.delta = _segment_delta(delta_raw, delta_bias, delta_softplus, start, stop)


def _segment_delta(delta_raw, delta_bias, delta_softplus: bool, start: int, stop: int):
    """(delta + bias, softplus(delta + bias) or delta + bias) for positions start:stop, laid out (batch, n, dim)."""
    biased = _seq_last(delta_raw, start, stop)
    if delta_bias is not None:
        biased += delta_bias
    return biased, F.softplus(biased) if delta_softplus else biased


def _scan_forward(u, delta_raw, A, B, C, D, z, delta_bias, delta_softplus: bool, chunk_size: int):
    """Output (batch, dim, L) and the SSM state entering each segment (kept for the backward)."""
    batch, dim, length = u.shape
    n_state = A.shape[1]
    steps, segment = _chunk_layout(min(chunk_size, length))
    out = u.new_empty(batch, dim, length)
    decay = u.new_empty(batch, segment, dim, n_state)
    states = u.new_empty(batch, segment, dim, n_state)
    segment_starts = []
    carry = None
    for start, stop, padded in _segments(length, segment, steps):
        n = stop - start
        seg = _Segment(start, stop, u, delta_raw, B, C, z, delta_bias, delta_softplus)
        a, h = decay[:, :padded], states[:, :padded]
        _fill_decay(a, seg.delta, A)
        _fill_outer(h, seg.delta * seg.u, seg.B)
        segment_starts.append(carry)
        carry = _linear_scan_(a, h, carry, steps)
        # y_t = sum_n h_t[:, n] C_t[n] (einsum is about 2x faster here than multiply + sum or a batched matmul).
        y = torch.einsum("bsdn,bsn->bsd", h[:, :n], seg.C)
        if D is not None:
            y.addcmul_(seg.u, D)
        if z is not None:
            y.mul_(F.silu(seg.z))
        _store_seq_last(out, start, y)
    return out, segment_starts


def _scan_backward(grad_out, u, delta_raw, A, B, C, D, z, delta_bias, delta_softplus, segment_starts, chunk_size):
    """Gradients of sum(grad_out * out) with respect to u, delta, A, B, C, D, z, delta_bias (None if absent)."""
    batch, dim, length = u.shape
    n_state = A.shape[1]
    steps, segment = _chunk_layout(min(chunk_size, length))
    grad_u, grad_delta = torch.empty_like(u), torch.empty_like(delta_raw)
    grad_B, grad_C = torch.empty_like(B), torch.empty_like(C)
    grad_A = torch.zeros_like(A)
    grad_D = None if D is None else torch.zeros_like(D)
    grad_z = None if z is None else torch.empty_like(z)
    grad_bias = None if delta_bias is None else torch.zeros_like(delta_bias)
    decay_ext = u.new_empty(batch, segment + 1, dim, n_state)
    decay, states, adjoint = (u.new_empty(batch, segment, dim, n_state) for _ in range(3))
    adjoint_carry = None
    for index, (start, stop, padded) in reversed(list(enumerate(_segments(length, segment, steps)))):
        n = stop - start
        seg = _Segment(start, stop, u, delta_raw, B, C, z, delta_bias, delta_softplus)
        g = _seq_last(grad_out, start, stop)
        # exp(delta_t A) for the segment's positions and the next one: [:n] recomputes the states, [1:n+1] is the
        # decay of the adjoint recurrence. Past the end of the sequence the adjoint carry is zero: any value works.
        if stop < length:
            delta_next = _segment_delta(delta_raw, delta_bias, delta_softplus, stop, stop + 1)[1]
        else:
            delta_next = seg.delta.new_zeros(batch, 1, dim)
        ext = decay_ext[:, : padded + 1]
        _fill_decay(ext, torch.cat([seg.delta, delta_next], dim=1), A)
        a, h, lam = decay[:, :padded], states[:, :padded], adjoint[:, :padded]
        a.copy_(ext[:, :padded])
        delta_u = seg.delta * seg.u
        _fill_outer(h, delta_u, seg.B)
        h_start = segment_starts[index]
        _linear_scan_(a, h, h_start, steps)
        # exp(delta_t A) * h_{t-1}: the part of h_t that went through the decay, whose derivative gives dA, ddelta.
        torch.mul(ext[:, 1:n], h[:, : n - 1], out=a[:, 1:n])
        if h_start is None:
            a[:, 0].zero_()
        else:
            torch.mul(ext[:, 0], h_start, out=a[:, 0])
        h, a = h[:, :n], a[:, :n]
        # Undo the gate and the skip: out = (y + D u) * silu(z).
        if z is not None:
            y = torch.einsum("bsdn,bsn->bsd", h, seg.C)
            if D is not None:
                y.addcmul_(seg.u, D)
            sig = torch.sigmoid(seg.z)
            _store_seq_last(grad_z, start, g * y * sig * (1 + seg.z * (1 - sig)))
            g = g * seg.z * sig
        grad_u_t = torch.zeros_like(seg.u)
        if D is not None:
            grad_D += torch.einsum("bsd,bsd->d", g, seg.u)
            grad_u_t.addcmul_(g, D)
        # Adjoint lambda_t = dLoss/dh_t = exp(delta_{t+1} A) lambda_{t+1} + g_t C_t, run backwards in time.
        _fill_outer(lam, g, seg.C)
        adjoint_carry = _linear_scan_(ext[:, 1 : padded + 1], lam, adjoint_carry, steps, reverse=True)
        lam = lam[:, :n]
        _store_seq_last(grad_C, start, torch.matmul(g.unsqueeze(-2), h).squeeze(-2))
        _store_seq_last(grad_B, start, torch.matmul(delta_u.unsqueeze(-2), lam).squeeze(-2))
        # Contractions: the formulations below were the fastest on CPU (batched matmuls of (dim x N) @ (N x 1) and
        # an einsum summing over positions were 4-10x slower).
        lam_B = torch.einsum("bsdn,bsn->bsd", lam, seg.B)  # sum_n lambda[., n] B[n]
        grad_u_t.addcmul_(lam_B, seg.delta)
        _store_seq_last(grad_u, start, grad_u_t)
        weighted = a.mul_(lam)  # lambda_t * exp(delta_t A) * h_{t-1}
        grad_A += torch.mul(weighted, seg.delta.unsqueeze(-1), out=lam).sum((0, 1))
        grad_delta_t = lam_B * seg.u + torch.einsum("bsdn,dn->bsd", weighted, A)
        if delta_softplus:
            grad_delta_t *= torch.sigmoid(seg.delta_raw)
        if delta_bias is not None:
            grad_bias += grad_delta_t.sum((0, 1))
        _store_seq_last(grad_delta, start, grad_delta_t)
    return grad_u, grad_delta, grad_A, grad_B, grad_C, grad_D, grad_z, grad_bias


class _ChunkedScan(torch.autograd.Function):
    """The whole selective scan (bias, softplus, D and gate included) with a recomputing chunked backward."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size):
        with torch.no_grad():
            out, segment_starts = _scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.segment_starts = segment_starts
        ctx.delta_softplus = delta_softplus
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
        with torch.no_grad():
            grads = _scan_backward(
                grad_out.to(u.dtype), u, delta, A, B, C, D, z, delta_bias,
                ctx.delta_softplus, ctx.segment_starts, ctx.chunk_size,
            )
        return (*grads, None, None)
