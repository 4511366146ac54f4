"""Task 1 inference: CT and PET in, a GTVp/GTVn label map on the CT's grid out.

The path is the one training validates with::

    preprocess_region (localise, resample onto the region, normalise)
      -> MONAI sliding-window inference per fold (Gaussian blending, window = plan.patch_size_zyx)
      -> softmax, averaged over the folds (and over mirrored copies when flip test-time augmentation is on)
      -> probabilities_to_ct_grid (one resampling onto the CT's grid, then argmax)

Every number comes from the bundle (its ``plan.json`` and ``model.json``), never from code defaults, so the
container cannot drift from training. Folds and TTA are arguments of :meth:`Segmenter.predict` so that a caller
with a time budget can drop TTA first and then folds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from hecktor.bundle import Bundle, load_bundle
from hecktor.errors import BundleError, InputError
from hecktor.plan import Plan
from hecktor.preprocessing import preprocess_region, probabilities_to_ct_grid

N_CLASSES = 3
IN_CHANNELS = 2

# Mirror test-time augmentation: the unflipped input plus one mirror along each spatial axis of a (B, C, z, y, x)
# tensor. Four passes rather than nnU-Net's eight (every axis combination): the single-axis mirrors give most of the
# gain, and the T4's per-case time budget is the binding constraint.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (4,))


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"``: the first CUDA GPU if there is one, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device} was asked for, but CUDA is not available; use --device cpu")
    return device


def autocast_context(device: torch.device, enabled: bool = True):
    """fp16 autocast on CUDA (the T4 has no bf16 tensor cores); nothing on the CPU, where fp16 is slow."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


@torch.inference_mode()
def sliding_window_probabilities(
    networks: Sequence[nn.Module],
    image: torch.Tensor,
    roi_size_zyx: Sequence[int],
    *,
    overlap: float = 0.5,
    tta: bool = False,
    sw_batch_size: int = 2,
    amp: bool = True,
) -> torch.Tensor:
    """Mean softmax of ``networks`` over ``image`` by Gaussian-blended sliding windows.

    Args:
        networks: models mapping (B, 2, *roi) to (B, 3, *roi) logits, already on the device and in eval mode.
        image: (1, C, z, y, x) float tensor on the networks' device. A region smaller than the window is padded
            with zeros by MONAI and cropped back.
        roi_size_zyx: window size (``plan.patch_size_zyx``).
        overlap: fraction of a window shared with its neighbour along each axis.
        tta: also average over the mirrored copies of :data:`TTA_FLIPS` (each mirrored back after inference).
        sw_batch_size: windows per forward pass.
        amp: fp16 autocast on CUDA.

    Returns:
        (C_out, z, y, x) float32 probabilities on the input's device; every voxel sums to 1.
    """
    if image.ndim != 5 or image.shape[0] != 1:
        raise ValueError(f"image must have shape (1, C, z, y, x), got {tuple(image.shape)}")
    if not networks:
        raise ValueError("at least one network is needed")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    flips = TTA_FLIPS if tta else ((),)
    total: torch.Tensor | None = None
    with autocast_context(image.device, amp):
        for network in networks:
            for dims in flips:
                source = torch.flip(image, dims) if dims else image
                # Windows are blended as logits (MONAI, like nnU-Net); the softmax comes after blending.
                logits = sliding_window_inference(
                    source, roi_size=tuple(int(s) for s in roi_size_zyx), sw_batch_size=sw_batch_size,
                    predictor=network, overlap=overlap, mode="gaussian",
                )
                probabilities = torch.softmax(torch.as_tensor(logits).float(), dim=1)
                if dims:
                    probabilities = torch.flip(probabilities, dims)
                total = probabilities if total is None else total + probabilities
    assert total is not None
    return (total / (len(networks) * len(flips)))[0]


class Segmenter:
    """A fold ensemble of Task 1 networks and the plan they were trained with.

    Build it with :meth:`from_bundle` (the containers) or directly from in-memory networks (tests, validation).

    Args:
        networks: one network per fold, mapping (B, 2, z, y, x) to (B, 3, z, y, x) logits.
        plan: the preprocessing plan of the training run.
        fold_names: a name per network (the bundle's weight files), for reports.
        device: where inference runs; ``None`` picks CUDA when available.
        sw_batch_size: sliding windows per forward pass.

    Attributes:
        last_timings: seconds spent in the stages of the last :meth:`predict` call (``preprocess_s``,
            ``network_s``, ``resample_s``, ``total_s``) and what ran (``folds``, ``tta``, ``region_shape_zyx``).
        last_warnings: what preprocessing repaired or assumed in the last :meth:`predict` call.
    """

    def __init__(
        self,
        networks: Sequence[nn.Module],
        plan: Plan,
        fold_names: Sequence[str] | None = None,
        device: str | torch.device | None = None,
        sw_batch_size: int = 2,
    ) -> None:
        if not networks:
            raise ValueError("a Segmenter needs at least one network")
        self.device = resolve_device(device)
        self.networks = [network.to(self.device).eval() for network in networks]
        self.plan = plan
        self.fold_names = list(fold_names) if fold_names is not None else [f"fold_{k}" for k in range(len(networks))]
        if len(self.fold_names) != len(self.networks):
            raise ValueError(f"{len(self.fold_names)} fold names for {len(self.networks)} networks")
        self.sw_batch_size = int(sw_batch_size)
        self.last_timings: dict[str, Any] = {}
        self.last_warnings: list[str] = []

    @classmethod
    def from_bundle(
        cls, path: str | Path, device: str | torch.device | None = None, sw_batch_size: int = 2
    ) -> "Segmenter":
        """Load every fold of a verified Task 1 bundle (see :mod:`hecktor.bundle`); weights load with
        ``weights_only=True``. A bundle whose ``model.json`` or weights do not fit is a :class:`BundleError`."""
        from hecktor.networks import build_network  # the networks import MONAI's heavier modules; load on demand

        bundle = load_bundle(path, task=1)
        name, config, folds = _model_description(bundle)
        networks = []
        for fold in folds:
            try:
                network = build_network(name, config)
            except (TypeError, ValueError, KeyError) as error:
                raise BundleError(f"{bundle.file('model.json')}: cannot build network {name!r} ({error}); "
                                  "re-export the bundle") from None
            try:
                network.load_state_dict(bundle.load_state_dict(fold))
            except RuntimeError as error:
                first = str(error).strip().splitlines()[0][:200]
                raise BundleError(f"{bundle.file(fold)} does not fit network {name!r} of model.json ({first}); "
                                  "re-export the bundle") from None
            networks.append(network)
        return cls(networks, bundle.plan, fold_names=folds, device=device, sw_batch_size=sw_batch_size)

    def _select(self, folds: Sequence[int] | None) -> list[nn.Module]:
        if folds is None:
            return self.networks
        chosen = list(folds)
        if not chosen:
            raise ValueError("folds must name at least one fold")
        bad = [k for k in chosen if not 0 <= int(k) < len(self.networks)]
        if bad:
            raise ValueError(f"fold index(es) {bad} out of range: this ensemble has {len(self.networks)} folds")
        return [self.networks[int(k)] for k in chosen]

    def predict_probabilities(
        self,
        region_image: np.ndarray | torch.Tensor,
        *,
        folds: Sequence[int] | None = None,
        tta: bool = True,
        overlap: float = 0.5,
    ) -> np.ndarray:
        """Class probabilities (3, z, y, x) float32 of a preprocessed region (2, z, y, x).

        Args:
            folds: indices of the networks to average (default: all).
            tta: average over mirrored copies as well (:data:`TTA_FLIPS`).
            overlap: sliding-window overlap.
        """
        image = region_image if isinstance(region_image, torch.Tensor) else torch.from_numpy(np.asarray(region_image))
        if image.ndim != 4 or image.shape[0] != IN_CHANNELS:
            raise ValueError(f"region image must have shape ({IN_CHANNELS}, z, y, x), got {tuple(image.shape)}")
        image = image.to(self.device, torch.float32)[None]
        probabilities = sliding_window_probabilities(
            self._select(folds), image, self.plan.patch_size_zyx, overlap=overlap, tta=tta,
            sw_batch_size=self.sw_batch_size,
        )
        return probabilities.cpu().numpy()

    def predict(
        self,
        ct: sitk.Image,
        pet: sitk.Image,
        *,
        folds: Sequence[int] | None = None,
        tta: bool = True,
        overlap: float = 0.5,
    ) -> sitk.Image:
        """Segment one case: a UInt8 label map (0 background, 1 GTVp, 2 GTVn) on ``ct``'s exact grid.

        Args:
            ct: CT in HU, any grid.
            pet: PET in SUV, its own grid.
            folds: indices of the fold networks to use (default: all).
            tta: mirror test-time augmentation.
            overlap: sliding-window overlap.
        """
        networks = self._select(folds)  # a bad fold index fails before any work
        start = time.perf_counter()
        region = preprocess_region(ct, pet, self.plan)
        preprocessed = time.perf_counter()
        probabilities = self.predict_probabilities(region.image, folds=folds, tta=tta, overlap=overlap)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        inferred = time.perf_counter()
        mask = probabilities_to_ct_grid(probabilities, region.grid, ct)
        done = time.perf_counter()
        self.last_warnings = list(region.warnings)
        self.last_timings = {
            "preprocess_s": preprocessed - start,
            "network_s": inferred - preprocessed,
            "resample_s": done - inferred,
            "total_s": done - start,
            "folds": len(networks),
            "tta": bool(tta),
            "region_shape_zyx": list(region.grid.shape_zyx),
        }
        return mask


def _model_description(bundle: Bundle) -> tuple[str, dict[str, Any], list[str]]:
    """Network name, full network config and fold weight files from ``model.json``, checked."""
    model = bundle.model
    where = bundle.file("model.json")
    fix = "re-export the bundle with training/export_segmentation.py"
    name = model.get("network")
    config = model.get("network_config", {})
    folds = model.get("folds")
    if not isinstance(name, str):
        raise BundleError(f"{where} names no network; {fix}")
    if not isinstance(config, dict):
        raise BundleError(f"{where}: network_config must be an object; {fix}")
    if not isinstance(folds, list) or not folds or not all(isinstance(f, str) for f in folds):
        raise BundleError(f"{where} lists no fold weight files; {fix}")
    for fold in folds:
        bundle.file(fold)  # raises BundleError when the manifest does not list it
    return name, config, folds
