"""Benchmark: one Task 1 training step on the CPU, contiguous (channels-first) tensors against channels-last ones.

The trainer puts the network and each batch in channels-last layout on the CPU
(``hecktor.training.segmentation.trainer``), where oneDNN's 3-D convolution backward passes run faster. This script
times the same steps of the same network in both layouts, interleaved in one process (``--rounds`` rounds of
``--steps`` steps each, after two warm-up steps), and prints the medians and their ratio. Default: the demo's
HecMamba (``training/configs/demo.json`` with its 16-channel full-resolution decoder, as ``training/demo.py`` trains
it), a batch of 2 x 2 x 32^3, one thread, a forward pass, the mean of every deep-supervision output as the loss, a
backward pass and an AdamW step. Usage::

    python benchmarks/bench_training_step.py
    python benchmarks/bench_training_step.py --threads 2 --full-resolution-width 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from hecktor.training.segmentation.config import build_segmentation_network

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "demo.json"
LAYOUTS = {"channels-first": torch.contiguous_format, "channels-last": torch.channels_last_3d}


def time_steps(layout: torch.memory_format, network_config: dict, batch: int, patch: int, steps: int) -> float:
    """Mean seconds per training step over ``steps`` steps (after two warm-up ones) in ``layout``."""
    torch.manual_seed(0)
    network = build_segmentation_network("hecmamba", network_config).to(memory_format=layout)
    images = torch.randn(batch, 2, patch, patch, patch).contiguous(memory_format=layout)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)

    def step() -> None:
        outputs = network(images)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        loss = sum(output.float().mean() for output in outputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the demo trains on one per fold)")
    parser.add_argument("--batch", type=int, default=2, help="patches per step")
    parser.add_argument("--patch", type=int, default=32, help="patch edge in voxels")
    parser.add_argument("--full-resolution-width", type=int, default=16,
                        help="channels of the full-resolution decoder (the demo's 16; demo.json says 32)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round and layout")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each timing both layouts in turn")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    network_config = json.loads(CONFIG.read_text())["network_config"]
    network_config = {**network_config, "full_resolution_width": args.full_resolution_width}
    seconds: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for round_index in range(args.rounds):
        for name, layout in LAYOUTS.items():
            seconds[name].append(time_steps(layout, network_config, args.batch, args.patch, args.steps))
            print(f"round {round_index + 1}/{args.rounds} {name}: {seconds[name][-1]:.3f} s per step", flush=True)
    first, last = (statistics.median(seconds[name]) for name in LAYOUTS)
    print(f"\nHecMamba (demo.json, full-resolution width {args.full_resolution_width}), batch {args.batch} x 2 x "
          f"{args.patch}^3, {args.threads} thread(s), torch {torch.__version__}")
    print("| layout | seconds per step (median of rounds) |\n| --- | --- |")
    print(f"| channels-first | {first:.3f} |\n| channels-last (the trainer's on the CPU) | {last:.3f} |")
    print(f"ratio channels-first / channels-last: {first / last:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
