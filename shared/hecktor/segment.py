"""Task 1 inference: CT and PET in, a GTVp/GTVn label map on the CT's grid out.

The path is the one training validates with::

    preprocess_region (localise, resample onto the region, normalise)
      -> MONAI sliding-window inference per fold (Gaussian blending, window = plan.patch_size_zyx)
      -> softmax, averaged over the folds (and over mirrored copies when flip test-time augmentation is on)
      -> probabilities_to_ct_grid (one resampling onto the CT's grid, then argmax)
      -> the bundle's postprocessing (hecktor.postprocessing: connected components on the CT grid), if any

Every number comes from the bundle (its ``plan.json`` and ``model.json``), never from code defaults, so the
container cannot drift from training. :meth:`Segmenter.predict` is the one code path that segments a case: the
container, the demo, the benchmarks and the tests call it. Given a :class:`~hecktor.budget.TimeBudget` it runs the
fold x mirror passes one at a time and lets a :class:`~hecktor.budget.BudgetPolicy` drop mirrors, then folds, when
time runs short. Probabilities are accumulated on the device and copied to the host once per case.
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

from hecktor.budget import BudgetPolicy, NetworkPass, PredictionReport, TimeBudget, fold_order
from hecktor.bundle import Bundle, load_bundle
from hecktor.case import CaseInput
from hecktor.errors import BundleError, HecktorError, InputError
from hecktor.labels import N_CLASSES
from hecktor.plan import RegionPlan
from hecktor.postprocessing import Postprocessing
from hecktor.preprocessing import preprocess_region, probabilities_to_ct_grid
from hecktor.repair import is_placeholder

IN_CHANNELS = 2

POSTPROCESS_FACTOR = 2.0
"""The time to bring probabilities back onto the CT's grid and write the mask, projected as this multiple of the
preprocessing time (both are resamplings between the CT's and the region's grids; going back touches the finer CT
grid with three channels, so it is given twice the time)."""

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
def window_pass(
    network: nn.Module,
    image: torch.Tensor,
    roi_size_zyx: Sequence[int],
    mirror: tuple[int, ...] = (),
    *,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    amp: bool = True,
) -> torch.Tensor:
    """Softmax of one network over ``image`` by Gaussian-blended sliding windows, on ``image`` mirrored along
    ``mirror`` (and mirrored back): (1, C_out, z, y, x) float32 on the input's device.

    Args:
        network: maps (B, 2, *roi) to (B, 3, *roi) logits, on the image's device and in eval mode.
        image: (1, C, z, y, x) float tensor. A region smaller than the window is padded by MONAI and cropped back.
        roi_size_zyx: window size (``plan.patch_size_zyx``).
        mirror: tensor dimensions to flip (one of :data:`TTA_FLIPS`).
        overlap: fraction of a window shared with its neighbour along each axis.
        sw_batch_size: windows per forward pass.
        amp: fp16 autocast on CUDA.
    """
    if image.ndim != 5 or image.shape[0] != 1:
        raise ValueError(f"image must have shape (1, C, z, y, x), got {tuple(image.shape)}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    source = torch.flip(image, mirror) if mirror else image
    with autocast_context(image.device, amp):
        # Windows are blended as logits (MONAI, like nnU-Net); the softmax comes after blending.
        logits = sliding_window_inference(
            source, roi_size=tuple(int(s) for s in roi_size_zyx), sw_batch_size=sw_batch_size, predictor=network,
            overlap=overlap, mode="gaussian",
        )
    probabilities = torch.softmax(torch.as_tensor(logits).float(), dim=1)
    return torch.flip(probabilities, mirror) if mirror else probabilities


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
    """Mean softmax of ``networks`` over ``image`` (every network, every mirror of :data:`TTA_FLIPS` with ``tta``):
    (C_out, z, y, x) float32 on the input's device. Training's validation uses it on cached regions; it is the
    arithmetic of :meth:`Segmenter.predict` without a budget (same passes, same order, same sum)."""
    if not networks:
        raise ValueError("at least one network is needed")
    flips = TTA_FLIPS if tta else ((),)
    total: torch.Tensor | None = None
    for network in networks:
        for dims in flips:
            probabilities = window_pass(network, image, roi_size_zyx, dims, overlap=overlap,
                                        sw_batch_size=sw_batch_size, amp=amp)
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
        postprocessing: applied to every predicted label map (:class:`hecktor.postprocessing.Postprocessing`, the
            bundle's ``model.json`` ``postprocessing``); ``None``: none.

    Attributes:
        last_report: what the last :meth:`predict` call ran, dropped, repaired and spent
            (:class:`~hecktor.budget.PredictionReport`).
    """

    def __init__(
        self,
        networks: Sequence[nn.Module],
        plan: RegionPlan,
        fold_names: Sequence[str] | None = None,
        device: str | torch.device | None = None,
        sw_batch_size: int = 2,
        postprocessing: Postprocessing | None = None,
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
        self.postprocessing = postprocessing or Postprocessing()
        self.last_report = PredictionReport()

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
        postprocessing = Postprocessing.from_dict(bundle.model.get("postprocessing"),
                                                  source=str(bundle.file("model.json")))
        return cls(networks, bundle.plan, fold_names=folds, device=device, sw_batch_size=sw_batch_size,
                   postprocessing=postprocessing)

    def predict_probabilities(
        self,
        region_image: np.ndarray | torch.Tensor,
        *,
        folds: Sequence[int] | None = None,
        tta: bool = True,
        overlap: float = 0.5,
    ) -> np.ndarray:
        """Class probabilities (3, z, y, x) float32 of an already preprocessed region (2, z, y, x): the ensemble
        arithmetic of :meth:`predict` without a budget (tests and analyses of cached regions).

        Args:
            folds: indices of the networks to average (default: all).
            tta: average over mirrored copies as well (:data:`TTA_FLIPS`).
            overlap: sliding-window overlap.
        """
        image = self._input_tensor(region_image)
        networks = [self.networks[k] for k in fold_order(folds, len(self.networks))]
        return sliding_window_probabilities(networks, image, self.plan.patch_size_zyx, overlap=overlap, tta=tta,
                                            sw_batch_size=self.sw_batch_size).cpu().numpy()

    def _input_tensor(self, region_image: np.ndarray | torch.Tensor) -> torch.Tensor:
        image = region_image if isinstance(region_image, torch.Tensor) else torch.from_numpy(np.asarray(region_image))
        if image.ndim != 4 or image.shape[0] != IN_CHANNELS:
            raise ValueError(f"region image must have shape ({IN_CHANNELS}, z, y, x), got {tuple(image.shape)}")
        return image.to(self.device, torch.float32)[None]

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def predict_case(self, case: CaseInput, *, budget: TimeBudget | None = None, **options: Any) -> sitk.Image:
        """:meth:`predict` on a case read by :func:`hecktor.case.read_case` (the container's call).

        Without a usable CT there is no grid to write on: the CT's problem is raised as an :class:`InputError`. A
        case whose PET was dropped is segmented from the CT alone; if even that fails (and the case was not read
        strictly), the mask is all background on the CT's grid, with a warning naming the failure.
        """
        if case.ct is None:
            raise InputError(case.problems.get("CT", "no usable CT in the case"))
        try:
            mask = self.predict(case.ct, case.pet, budget=budget, **options)
        except (HecktorError, RuntimeError, MemoryError) as error:
            if case.strict or case.pet is not None:
                raise
            self.last_report = PredictionReport(placeholder=True)
            detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            self.last_report.warnings.append(f"segmentation from the CT alone failed ({detail}): the mask is all "
                                             "background on the CT's grid")
            mask = blank_mask(case.ct)
        self.last_report.warnings[:0] = case.warnings
        return mask

    def predict(
        self,
        ct: sitk.Image,
        pet: sitk.Image | None,
        *,
        folds: Sequence[int] | None = None,
        tta: bool = True,
        overlap: float = 0.5,
        budget: TimeBudget | None = None,
    ) -> sitk.Image:
        """Segment one case: a UInt8 label map (0 background, 1 GTVp, 2 GTVn) on ``ct``'s exact grid.

        The passes run fold-major (each fold's plain pass, then its mirrors). Their softmax is summed on the device;
        when every fold ran the same passes the result is that sum over the number of passes (the arithmetic of
        :func:`sliding_window_probabilities`), and when mirrors were dropped midway, the mean over folds of each
        fold's mean, so that folds count equally.

        A flat placeholder CT or PET (the platform's sanity check) gives an all-background mask on the CT's grid,
        with a warning in :attr:`last_report`. Without a PET (``None``: a container dropped an unusable one) the
        region is placed from the CT and the PET channel is blank.

        Args:
            ct: CT in HU, any grid.
            pet: PET in SUV, its own grid, or ``None``.
            folds: fold indices in the order to run them (default: all, in bundle order); the first is always kept.
            tta: mirror test-time augmentation.
            overlap: sliding-window overlap.
            budget: the case's deadline; ``None`` runs every pass.
        """
        order = fold_order(folds, len(self.networks))  # a bad fold index fails before any work
        report = self.last_report = PredictionReport()
        policy = BudgetPolicy(budget, report)
        clock = policy.now
        started = clock()
        if is_placeholder(ct) or (pet is not None and is_placeholder(pet)):
            report.placeholder = True
            report.warnings.append("flat placeholder input: the mask is all background on the CT's grid")
            return self._finish(blank_mask(ct), report, budget, clock() - started)

        region = preprocess_region(ct, pet, self.plan)
        report.warnings.extend(region.warnings)
        image = self._input_tensor(region.image)
        report.timings["preprocess_s"] = preprocess_s = clock() - started
        flips = TTA_FLIPS if tta else ((),)
        pending = policy.start([NetworkPass(k, dims) for k in order for dims in flips], POSTPROCESS_FACTOR * preprocess_s)

        # The plain sum of every pass, and the sum of the finished folds' means plus the running fold's sum: the
        # first is the exact arithmetic of sliding_window_probabilities when every fold ran the same passes, the
        # second weighs folds equally when TTA was dropped midway.
        total = fold_means = fold_sum = None
        counts: dict[int, int] = {}
        network_started = clock()
        while pending:
            step, pending = pending[0], pending[1:]
            pass_started = clock()
            probabilities = window_pass(self.networks[step.fold], image, self.plan.patch_size_zyx, step.mirror,
                                        overlap=overlap, sw_batch_size=self.sw_batch_size)
            total = probabilities if total is None else total + probabilities
            if step.fold in counts:  # the passes of a fold are consecutive
                fold_sum, counts[step.fold] = fold_sum + probabilities, counts[step.fold] + 1
            else:
                if fold_sum is not None:
                    fold_means = _add(fold_means, fold_sum / counts[next(reversed(counts))])
                fold_sum, counts[step.fold] = probabilities, 1
            self._synchronize()
            pending = policy.after_pass(clock() - pass_started, pending)
        if len(set(counts.values())) == 1:
            mean = total / sum(counts.values())
        else:
            mean = (_add(fold_means, fold_sum / counts[next(reversed(counts))])) / len(counts)
        probabilities = mean[0].cpu().numpy()  # the one copy to the host
        report.timings["network_s"] = clock() - network_started
        resampling = clock()
        mask = self.postprocessing.apply(probabilities_to_ct_grid(probabilities, region.grid, ct))
        report.timings["postprocess_s"] = clock() - resampling
        report.folds = list(counts)
        report.passes = len(policy.pass_times)
        report.tta = tta and all(c == len(TTA_FLIPS) for c in counts.values())
        return self._finish(mask, report, budget, clock() - started)

    @staticmethod
    def _finish(mask: sitk.Image, report: PredictionReport, budget: TimeBudget | None, total_s: float) -> sitk.Image:
        report.timings["total_s"] = total_s
        if budget is not None:
            report.timings["elapsed_s"] = budget.elapsed()
        return mask


def blank_mask(ct: sitk.Image) -> sitk.Image:
    """An all-background UInt8 mask on ``ct``'s exact grid (any dimension)."""
    mask = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(ct)
    return mask


def _add(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
    return b if a is None else a + b


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
