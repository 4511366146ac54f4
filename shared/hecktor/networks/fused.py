"""Multi-modal feature extractor for Task 2 (recurrence-free-survival risk).

``FusedFeatureExtractor`` joins a 3-D ResNet on the 2-channel PET/CT crop (channel 0 CT, channel 1 PET, shape
``(B, 2, z, y, x)``) with a small MLP on the encoded clinical record, and maps the concatenation to a 128-d fused
feature vector. A linear risk head on that vector is trained with the Cox partial likelihood
(:func:`hecktor.survival.cox_partial_likelihood_loss`); downstream, a penalised Cox model per fold is fitted on the
128-d features (a :class:`hecktor.survival_models.SurvivalModel`).

The same class serves the three arms of the baseline comparison through ``mode``:

* ``"fusion"``: image features (512) + clinical features (32) -> fusion MLP -> 128.
* ``"imaging"``: image features only (512) -> fusion MLP -> 128; the clinical record is ignored.
* ``"clinical"``: clinical features only (32) -> fusion MLP -> 128; no CNN is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import ResNet
from torch import nn

__all__ = ["MODES", "RESNET18_BACKBONE", "TINY_BACKBONE", "FusedFeatureExtractor"]

MODES = ("fusion", "imaging", "clinical")

RESNET18_BACKBONE: dict[str, Any] = {"backbone_layers": (2, 2, 2, 2), "backbone_widths": (64, 128, 256, 512)}
"""The default backbone: MONAI's ``resnet18`` (basic blocks, layers 2-2-2-2, widths 64-128-256-512) -> 512 features."""

TINY_BACKBONE: dict[str, Any] = {"backbone_layers": (1, 1, 1, 1), "backbone_widths": (4, 8, 16, 32)}
"""A backbone of a few thousand parameters (32 image features) for tests and smoke runs on CPU."""


def _mlp_block(in_features: int, out_features: int, dropout: float) -> list[nn.Module]:
    """Linear -> BatchNorm -> ReLU -> Dropout, the unit of both MLPs."""
    return [
        nn.Linear(in_features, out_features),
        nn.BatchNorm1d(out_features),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    ]


class FusedFeatureExtractor(nn.Module):
    """3-D ResNet image branch + clinical MLP -> fused features -> linear Cox risk head.

    Args:
        n_clinical: length of the encoded clinical vector (the clinical encoder's output). Ignored (may be 0) in
            ``"imaging"`` mode.
        mode: ``"fusion"``, ``"imaging"`` or ``"clinical"`` (see the module docstring).
        image_channels: input channels of the image branch (2: CT, PET).
        clinical_dim: width of the clinical branch's output.
        fused_dim: width of the fused feature vector that downstream survival models use.
        dropout: dropout probability after every hidden layer of both MLPs.
        backbone_layers: residual blocks per stage of the MONAI ``ResNet`` (basic blocks). The default, with the
            default widths, is exactly MONAI's ``resnet18``.
        backbone_widths: channels per stage; the last one is the number of image features (512 for ResNet-18).
        conv1_stride: stride of the 7x7x7 stem convolution. MONAI defaults to 1; we use 2, the standard ResNet-18
            stem, because at 96^3 it cuts the network's cost about 8-fold (the 5-fold ensemble must run on CPU)
            and still leaves a 3^3 map before global pooling.
    """

    def __init__(
        self,
        n_clinical: int,
        mode: str = "fusion",
        image_channels: int = 2,
        clinical_dim: int = 32,
        fused_dim: int = 128,
        dropout: float = 0.3,
        backbone_layers: Sequence[int] = RESNET18_BACKBONE["backbone_layers"],
        backbone_widths: Sequence[int] = RESNET18_BACKBONE["backbone_widths"],
        conv1_stride: int = 2,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode != "imaging" and n_clinical < 1:
            raise ValueError(f"mode {mode!r} needs at least one clinical feature, got n_clinical={n_clinical}")
        if len(backbone_layers) != 4 or len(backbone_widths) != 4:
            raise ValueError("backbone_layers and backbone_widths need 4 entries each (the 4 ResNet stages)")
        self.mode = mode
        self._config: dict[str, Any] = {
            "n_clinical": int(n_clinical),
            "mode": mode,
            "image_channels": int(image_channels),
            "clinical_dim": int(clinical_dim),
            "fused_dim": int(fused_dim),
            "dropout": float(dropout),
            "backbone_layers": [int(v) for v in backbone_layers],
            "backbone_widths": [int(v) for v in backbone_widths],
            "conv1_stride": int(conv1_stride),
        }

        fusion_in = 0
        self.image_encoder: ResNet | None = None
        self.clinical_encoder: nn.Sequential | None = None
        if mode in ("fusion", "imaging"):
            # feed_forward=False drops MONAI's classification layer: the output is the globally pooled last stage.
            self.image_encoder = ResNet(
                block="basic",
                layers=list(backbone_layers),
                block_inplanes=list(backbone_widths),
                spatial_dims=3,
                n_input_channels=image_channels,
                conv1_t_stride=conv1_stride,
                feed_forward=False,
            )
            fusion_in += int(backbone_widths[-1])
        if mode in ("fusion", "clinical"):
            clinical_hidden = 2 * clinical_dim
            self.clinical_encoder = nn.Sequential(
                *_mlp_block(n_clinical, clinical_hidden, dropout), *_mlp_block(clinical_hidden, clinical_dim, dropout)
            )
            fusion_in += clinical_dim
        self.image_feature_dim = int(backbone_widths[-1]) if self.image_encoder is not None else 0
        self.feature_dim = int(fused_dim)
        fusion_hidden = 2 * fused_dim
        self.fusion = nn.Sequential(
            *_mlp_block(fusion_in, fusion_hidden, dropout), *_mlp_block(fusion_hidden, fused_dim, dropout)
        )
        self.risk_head = nn.Linear(fused_dim, 1)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments, JSON-serialisable: ``FusedFeatureExtractor(**model.config)`` rebuilds the model."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    def _check_inputs(self, image: torch.Tensor | None, clinical: torch.Tensor | None) -> None:
        if self.image_encoder is not None:
            channels = self._config["image_channels"]
            if image is None or image.ndim != 5 or image.shape[1] != channels:
                got = None if image is None else tuple(image.shape)
                raise ValueError(f"mode {self.mode!r} needs image of shape (B, {channels}, z, y, x), got {got}")
        if self.clinical_encoder is not None:
            n_clinical = self._config["n_clinical"]
            if clinical is None or clinical.ndim != 2 or clinical.shape[1] != n_clinical:
                got = None if clinical is None else tuple(clinical.shape)
                raise ValueError(f"mode {self.mode!r} needs clinical of shape (B, {n_clinical}), got {got}")
        if self.image_encoder is not None and self.clinical_encoder is not None:
            assert image is not None and clinical is not None
            if image.shape[0] != clinical.shape[0]:
                raise ValueError(f"batch sizes differ: image {image.shape[0]}, clinical {clinical.shape[0]}")

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, C, z, y, x)`` -> ``(B, image_feature_dim)`` globally pooled CNN features."""
        if self.image_encoder is None:
            raise ValueError("mode 'clinical' has no image branch")
        return self.image_encoder(image)

    def extract_features(self, image: torch.Tensor | None, clinical: torch.Tensor | None) -> torch.Tensor:
        """Fused features ``(B, fused_dim)``; pass ``None`` for the input that the mode does not use."""
        self._check_inputs(image, clinical)
        parts = []
        if self.image_encoder is not None:
            parts.append(self.image_encoder(image))
        if self.clinical_encoder is not None:
            parts.append(self.clinical_encoder(clinical))
        return self.fusion(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])

    def forward(self, image: torch.Tensor | None, clinical: torch.Tensor | None = None) -> torch.Tensor:
        """Cox risk (log hazard ratio) ``(B,)``: higher means earlier relapse."""
        return self.risk_head(self.extract_features(image, clinical)).squeeze(1)
