"""Benchmark: selective-scan forward, ``hecktor.scan`` (chunked pure PyTorch) against mambapy's parallel scan.

Default size: stage 1 of HecMamba on a 128**3 patch (batch 1, length 64**3 = 262,144, 96 channels, state 16),
float32, 2 threads. Each implementation runs in a fresh subprocess on the same inputs (same seed), each in its own
layout (mambapy: (batch, L, dim); ours: (batch, dim, L), mamba_ssm's convention). Peak memory is the growth of the
process's resident-set high-water mark (``VmHWM``, reset through /proc/self/clear_refs) over the resident set with the
inputs allocated; the Python allocators' counters do not see torch's buffers. The script prints the times, peaks and
ratios in one table, and checks that both outputs agree.

mambapy (the package ``mambapy``) is a benchmark-only dependency; without it, its row is skipped with a message.
Usage::

    python benchmarks/bench_scan.py             # the target size (mambapy needs about 8 GB and ~15 s per run)
    python benchmarks/bench_scan.py --quick     # length 16,384
    python benchmarks/bench_scan.py --backward  # also time the backward pass (ours)

On a machine shared with other busy processes, OpenMP's spin-waiting inflates multi-threaded times (ours far more
than mambapy's: thousands of small parallel regions against a few dozen large ones); ``OMP_WAIT_POLICY=PASSIVE``
in the environment avoids that, for both implementations.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

IMPLEMENTATIONS = ("hecktor", "mambapy")
_SAMPLE = 64  # positions at each end of the output compared between implementations


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status (this benchmark needs Linux).")


def _reset_peak() -> bool:
    """Reset VmHWM to the current resident set (Linux >= 4.0); False where that is not permitted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _inputs(args: argparse.Namespace, length: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    dim, n_state = args.dim, args.state
    return {
        "u": randn(args.batch, dim, length),
        # softplus(N(-3, 1)) ~ 0.05: Mamba's usual step sizes (dt init in [0.001, 0.1]).
        "delta": F.softplus(randn(args.batch, dim, length) - 3.0),
        "A": -torch.arange(1, n_state + 1, dtype=torch.float32).repeat(dim, 1) * torch.exp(0.3 * randn(dim, n_state)),
        "B": randn(args.batch, n_state, length),
        "C": randn(args.batch, n_state, length),
        "D": randn(dim),
    }


def _runner(name: str, inputs: dict[str, torch.Tensor], args: argparse.Namespace):
    """A zero-argument function running one scan of ``name`` on ``inputs`` (converted to its layout here)."""
    if name == "hecktor":
        from hecktor.scan import selective_scan

        kwargs = dict(inputs)
        if args.backward:
            for value in kwargs.values():
                value.requires_grad_()

        def run():
            out = selective_scan(**kwargs, backend="torch", chunk_size=args.chunk_size)
            if args.backward:
                out.backward(torch.ones_like(out))
            return out

        return run
    from mambapy.mamba import MambaBlock

    # mambapy's layout: x, delta (batch, L, dim); B, C (batch, L, N).
    x, delta = (inputs[k].transpose(1, 2).contiguous() for k in ("u", "delta"))
    B, C = (inputs[k].transpose(1, 2).contiguous() for k in ("B", "C"))
    A, D = inputs["A"], inputs["D"]

    def run():
        # MambaBlock.selective_scan does not use self: deltaA, deltaB*x -> pscan -> contraction with C, + D x.
        return MambaBlock.selective_scan(None, x, delta, A, B, C, D).transpose(1, 2)

    return run


def worker(args: argparse.Namespace) -> None:
    """Time one implementation in this (fresh) process and print a JSON line."""
    torch.set_num_threads(args.threads)
    grad = torch.enable_grad() if args.backward else torch.no_grad()
    with grad:
        _runner(args.worker, _inputs(args, min(4096, args.length)), args)()  # warm-up: lazy initialisation
        run = _runner(args.worker, _inputs(args, args.length), args)
        baseline_kib = _status_kib("VmRSS")
        peak_resettable = _reset_peak()
        if not peak_resettable:
            baseline_kib = _status_kib("VmHWM")
        seconds, cpu_seconds = [], []
        for _ in range(args.repeats):
            wall0, cpu0 = time.perf_counter(), time.process_time()
            out = run()
            seconds.append(time.perf_counter() - wall0)
            cpu_seconds.append(time.process_time() - cpu0)
            sample = torch.cat([out[..., :_SAMPLE], out[..., -_SAMPLE:]], dim=-1).detach()
            del out
        peak_mib = (_status_kib("VmHWM") - baseline_kib) / 1024
    print(json.dumps({
        "name": args.worker, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": peak_mib,
        "peak_exact": peak_resettable, "sample": sample.double().flatten().tolist(),
    }))


def run_worker(name: str, args: argparse.Namespace) -> dict | None:
    command = [sys.executable, __file__, "--worker", name, "--length", str(args.length), "--dim", str(args.dim),
               "--state", str(args.state), "--batch", str(args.batch), "--threads", str(args.threads),
               "--repeats", str(args.repeats)]
    if args.chunk_size is not None:
        command += ["--chunk-size", str(args.chunk_size)]
    if args.backward and name == "hecktor":
        command.append("--backward")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"{name}: failed (exit {result.returncode}):\n{result.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=262_144, help="sequence length L (default: 64**3)")
    parser.add_argument("--dim", type=int, default=96, help="channels (Mamba's d_inner)")
    parser.add_argument("--state", type=int, default=16, help="state size N")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in each worker")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per implementation (best is reported)")
    parser.add_argument("--chunk-size", type=int, default=None, help="hecktor.scan chunk_size (default: its own)")
    parser.add_argument("--quick", action="store_true", help="length 16,384 instead of the default")
    parser.add_argument("--backward", action="store_true", help="time forward + backward for hecktor.scan")
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.length = 16_384
    if args.worker:
        worker(args)
        return 0

    names = ["hecktor"]
    if importlib.util.find_spec("mambapy") is None:
        print("mambapy is not installed (pip install mambapy): skipping its row.")
    else:
        names.append("mambapy")
    results = {name: run_worker(name, args) for name in names}
    results = {name: result for name, result in results.items() if result is not None}

    load = os.getloadavg()[0]
    passes = "forward + backward (hecktor) / forward (mambapy)" if args.backward else "forward"
    threads = f"{args.threads} thread{'s' if args.threads != 1 else ''}"
    wait_policy = os.environ.get("OMP_WAIT_POLICY", "default")
    print(f"\nselective scan, {passes}: batch {args.batch}, L {args.length:,}, dim {args.dim}, N {args.state}, "
          f"float32, {threads}; torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load:.1f}, "
          f"OMP_WAIT_POLICY {wait_policy}")
    if load > os.cpu_count():
        print("  warning: other processes are busy on this machine; wall times are inflated (compare CPU seconds"
              + (", or run with OMP_WAIT_POLICY=PASSIVE)." if wait_policy == "default" else ")."))
    header = f"{'implementation':<16}{'best s':>9}{'median s':>10}{'CPU s':>8}{'peak MiB':>10}"
    print(header)
    print("-" * len(header))
    for name, result in results.items():
        print(f"{name:<16}{min(result['seconds']):>9.2f}{statistics.median(result['seconds']):>10.2f}"
              f"{min(result['cpu_seconds']):>8.2f}{result['peak_mib']:>10.0f}"
              + ("" if result["peak_exact"] else "  (peak since start: clear_refs not permitted)"))
    if {"hecktor", "mambapy"} <= set(results):
        ours, theirs = results["hecktor"], results["mambapy"]
        print(f"{'mambapy / ours':<16}{min(theirs['seconds']) / min(ours['seconds']):>8.1f}x"
              f"{statistics.median(theirs['seconds']) / statistics.median(ours['seconds']):>9.1f}x"
              f"{min(theirs['cpu_seconds']) / min(ours['cpu_seconds']):>7.1f}x"
              f"{theirs['peak_mib'] / max(ours['peak_mib'], 1.0):>9.1f}x")
        a, b = torch.tensor(ours["sample"]), torch.tensor(theirs["sample"])
        difference = ((a - b).norm() / b.norm()).item()
        print(f"outputs agree to a relative difference of {difference:.1e} (first and last {_SAMPLE} positions)")
        if difference > 1e-4:
            print("error: the implementations disagree", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
