"""GPU benchmark of Task 1: HecMamba training steps at full size, and 5-fold inference of one realistic case.

Two parts, each printed as a Markdown table with seconds and peak GPU memory:

* ``train``: HecMamba's full configuration (registry defaults: widths 48-384, two tri-orientated Mamba layers per
  stage) with deep supervision on (the trainer's default) on random 128^3 patches, batch 2, the trainer's default
  loss over the deep-supervision outputs (``hecktor.training.segmentation.make_loss``), fp16 autocast with gradient
  scaling, AdamW, forward and backward, with the pure-PyTorch scan (``HECKTOR_SCAN_BACKEND=torch``) and, when
  ``mamba_ssm`` is importable, its CUDA kernel.
* ``infer``: one ``realistic`` synthetic case (CT 512x512x~200, PET 200^3) through ``hecktor.segment.Segmenter``
  with 5 folds of the full network and mirror TTA, as the Task 1 container runs it (reading excluded, preprocessing
  and the resampling onto the CT grid included), the networks as a bundle holds them (no deep-supervision heads).
  Weights are random: the time does not depend on their values.
  The target is 20 s per case for 5 folds with TTA (Grand Challenge's T4; an H100 is several times faster).

This is the check the Task 1 issue asks for when a session has a GPU; ``--smoke`` runs a tiny version on the CPU so
that the script itself is tested where there is none.

Usage::

    python benchmarks/bench_gpu_segmentation.py                 # on a CUDA machine
    python benchmarks/bench_gpu_segmentation.py --smoke         # tiny model and patch on the CPU: checks the script
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import torch

from hecktor.networks import build_network
from hecktor.plan import RegionPlan
from hecktor.segment import autocast_context
from hecktor.synthetic import make_case

SMOKE_NETWORK = {"widths": [4, 8, 16, 32], "depths": [1, 1, 1, 1], "hidden_size": 32, "d_state": 4, "expand": 1,
                 "mlp_ratio": 1.0}


def _peak_mib(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MiB" if device.type == "cuda" else "n/a (CPU)"


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(backend: str, config: dict, patch: int, batch: int, steps: int, device: torch.device) -> dict:
    """Seconds per optimiser step (median of ``steps`` after two warm-up steps) and peak memory."""
    from hecktor.training.segmentation import TrainingConfig, make_loss

    os.environ["HECKTOR_SCAN_BACKEND"] = backend
    torch.manual_seed(0)
    network = build_network("hecmamba", {**config, "deep_supervision": True}).to(device).train()
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    defaults = TrainingConfig(data_root="", run_dir="")
    loss_function = make_loss(defaults.loss, defaults.dice_include_background, defaults.ce_class_weights).to(device)
    image = torch.randn(batch, 2, patch, patch, patch, device=device)
    label = torch.randint(0, 3, (batch, 1, patch, patch, patch), device=device)
    _reset_peak(device)
    seconds = []
    for step in range(steps + 2):
        _sync(device)
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        with autocast_context(device):
            loss = loss_function(network(image), label)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        _sync(device)
        if step >= 2:
            seconds.append(time.perf_counter() - start)
    seconds.sort()
    return {"backend": backend, "parameters": sum(p.numel() for p in network.parameters()),
            "step_s": seconds[len(seconds) // 2], "peak": _peak_mib(device), "loss": loss.item()}


def time_inference(config: dict, plan: RegionPlan, folds: int, size: str, device: torch.device) -> dict:
    from hecktor.segment import Segmenter

    case = make_case(7, size)
    networks = []
    for fold in range(folds):
        torch.manual_seed(fold)
        networks.append(build_network("hecmamba", {**config, "deep_supervision": False}))
    segmenter = Segmenter(networks, plan, device=device)
    results = {}
    for label, tta in (("5 folds + TTA, first call", True), ("5 folds + TTA", True), ("5 folds, no TTA", False)):
        _reset_peak(device)
        start = time.perf_counter()
        segmenter.predict(case.ct, case.pet, tta=tta)
        results[label] = (time.perf_counter() - start, _peak_mib(device), dict(segmenter.last_report.timings))
    return {"ct_size": case.ct.GetSize(), "pet_size": case.pet.GetSize(), "rows": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=("train", "infer"), default=["train", "infer"])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (after two warm-up steps)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny network, 32^3 patches, 4 mm plan, small case, on the CPU: tests the script")
    args = parser.parse_args(argv)

    if args.smoke:
        device, config, patch, size = torch.device("cpu"), SMOKE_NETWORK, 32, "small"
        plan = RegionPlan(spacing_mm_xyz=(4.0, 4.0, 4.0), patch_size_zyx=(32, 32, 32))
    elif torch.cuda.is_available():
        device, config, patch, size, plan = torch.device("cuda"), {}, 128, "realistic", RegionPlan()
    else:
        parser.error("no CUDA device: this benchmark measures the GPU (use --smoke to test the script on the CPU)")
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}; torch {torch.__version__}")

    if "train" in args.parts:
        backends = ["torch"] + (["cuda"] if device.type == "cuda" and importlib.util.find_spec("mamba_ssm") else [])
        print(f"\n### HecMamba training step ({patch}^3, batch {args.batch}, fp16 autocast on CUDA, AdamW)\n")
        print("| scan backend | parameters | seconds per step (median) | peak GPU memory |\n| --- | --- | --- | --- |")
        for backend in backends:
            row = time_training(backend, config, patch, args.batch, args.steps, device)
            print(f"| {row['backend']} | {row['parameters'] / 1e6:.1f} M | {row['step_s']:.3f} | {row['peak']} |",
                  flush=True)
        if "cuda" not in backends:
            print("\n(mamba_ssm not importable or no CUDA: the CUDA scan backend was not timed)")

    if "infer" in args.parts:
        os.environ["HECKTOR_SCAN_BACKEND"] = "auto"
        result = time_inference(config, plan, 5, size, device)
        print(f"\n### One `{size}` case through Segmenter (CT {result['ct_size']}, PET {result['pet_size']}; "
              f"target ≤ 20 s on a T4 with 5 folds + TTA)\n")
        print("| run | seconds | preprocessing | networks | back to CT grid | peak GPU memory |\n"
              "| --- | --- | --- | --- | --- | --- |")
        for label, (seconds, peak, timings) in result["rows"].items():
            print(f"| {label} | {seconds:.2f} | {timings['preprocess_s']:.2f} | {timings['network_s']:.2f} | "
                  f"{timings['postprocess_s']:.2f} | {peak} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
