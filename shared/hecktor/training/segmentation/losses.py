"""The losses of Task 1 training (:data:`LOSS_SPECS`, :func:`make_loss`: soft Dice and cross-entropy, over the
deep-supervision outputs too) and the learning-rate schedule (:func:`warmup_cosine`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hecktor.errors import InputError

@dataclass(frozen=True)
class LossSpec:
    """What a loss name means.

    Attributes:
        batch_dice: Dice summed over the whole batch before dividing (nnU-Net's ``batch_dice``), rather than one Dice
            per sample and class averaged (MONAI's default).
        cross_entropy: add the cross-entropy of the softmax (weights: ``ce_class_weights``).
        dice_background: the background class counts in the Dice term (MONAI's default); nnU-Net leaves it out.
            ``TrainingConfig.dice_include_background`` overrides it.
        description: one line for ``--help`` and docs/how-to/task1-segmentation.md.
    """

    batch_dice: bool
    cross_entropy: bool
    dice_background: bool
    description: str


LOSS_SPECS: dict[str, LossSpec] = {
    "dicece": LossSpec(False, True, True, "the seed's Dice + CE: soft Dice per sample and class (background "
                                          "included, MONAI DiceCELoss's defaults) + cross-entropy"),
    "batch_dicece": LossSpec(True, True, False, "nnU-Net's: soft Dice over the whole batch, foreground classes only, "
                                                "+ cross-entropy"),
    "dice": LossSpec(False, False, True, "soft Dice per sample and class (background included), no cross-entropy"),
    "batch_dice": LossSpec(True, False, False, "soft Dice over the whole batch, foreground only, no cross-entropy"),
}
LOSSES = tuple(LOSS_SPECS)


class DiceCrossEntropyLoss(nn.Module):
    """Soft Dice (MONAI ``DiceLoss``) plus, optionally, cross-entropy, on logits (B, C, ...) and labels (B, 1, ...).

    Written as a sum of MONAI's ``DiceLoss`` and torch's cross-entropy rather than as MONAI's ``DiceCELoss`` because
    that one applies its ``weight`` to the Dice term as well; here class weights act on the cross-entropy only
    (nnU-Net's Dice has none).

    Args:
        batch: one Dice over the whole batch per class (nnU-Net) instead of one per sample and class.
        include_background: the background class in the Dice term.
        cross_entropy: add the cross-entropy.
        ce_class_weights: cross-entropy weight per class, or None.
    """

    def __init__(self, batch: bool, include_background: bool, cross_entropy: bool = True,
                 ce_class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(to_onehot_y=True, softmax=True, batch=batch, include_background=include_background)
        self.cross_entropy = cross_entropy
        weights = None if ce_class_weights is None else torch.tensor([float(w) for w in ce_class_weights])
        self.register_buffer("ce_class_weights", weights, persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = self.dice(logits, labels)
        if self.cross_entropy:
            loss = loss + nn.functional.cross_entropy(logits, labels[:, 0].long(), weight=self.ce_class_weights)
        return loss


class SegmentationLoss(nn.Module):
    """The training loss of one network output or, with deep supervision, of a list of outputs (full resolution
    first): MONAI's ``DeepSupervisionLoss`` with nnU-Net's weights (:func:`hecktor.networks.deep_supervision_weights`:
    halving per level, the coarsest weighted 0, normalised), the labels resized to each output with nearest-exact
    interpolation.

    Args:
        base: the loss of one output (:class:`DiceCrossEntropyLoss`).
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self._deep: dict[int, nn.Module] = {}

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.base(outputs.float(), labels)
        from monai.losses import DeepSupervisionLoss

        from hecktor.networks import deep_supervision_weights

        n = len(outputs)
        if n not in self._deep:
            self._deep[n] = DeepSupervisionLoss(self.base, weights=deep_supervision_weights(n))
        # Float labels: F.interpolate has no nearest-exact for integer tensors; the base loss casts them back.
        return self._deep[n]([o.float() for o in outputs], labels.float())


def make_loss(name: str, include_background: bool | None = None,
              ce_class_weights: Sequence[float] | None = None) -> SegmentationLoss:
    """The loss called ``name`` (:data:`LOSS_SPECS`) on logits, or on a list of deep-supervision logits.

    Args:
        name: ``dicece``, ``batch_dicece``, ``dice`` or ``batch_dice``.
        include_background: the background class in the Dice term (``None``: the loss's convention).
        ce_class_weights: cross-entropy weight per class (losses with cross-entropy only).
    """
    if name not in LOSS_SPECS:
        raise InputError(f"loss must be one of {LOSSES}, got {name!r}")
    spec = LOSS_SPECS[name]
    background = spec.dice_background if include_background is None else bool(include_background)
    return SegmentationLoss(DiceCrossEntropyLoss(spec.batch_dice, background, spec.cross_entropy, ce_class_weights))


def describe_loss(run_config: dict[str, Any]) -> dict[str, Any]:
    """What the loss of a run was, from its ``config.json`` (read by
    :func:`~hecktor.training.segmentation.config.read_run_config`, which refuses a run written by an older version):
    ``{"loss", "batch_dice", "dice_include_background", "cross_entropy", "ce_class_weights"}``."""
    name = run_config.get("loss")
    if name is None:
        return {"loss": None}
    spec = LOSS_SPECS[name]
    background = run_config.get("dice_include_background")
    return {"loss": name, "batch_dice": spec.batch_dice,
            "dice_include_background": spec.dice_background if background is None else bool(background),
            "cross_entropy": spec.cross_entropy, "ce_class_weights": run_config.get("ce_class_weights")}


def warmup_cosine(total_iterations: int, warmup_fraction: float, min_lr_ratio: float):
    """Learning-rate factor per iteration: linear warm-up from 0, then a cosine decay to ``min_lr_ratio``."""
    warmup = int(round(warmup_fraction * total_iterations))

    def factor(iteration: int) -> float:
        if iteration < warmup:
            return (iteration + 1) / warmup
        progress = min(1.0, (iteration - warmup) / max(1, total_iterations - warmup))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
