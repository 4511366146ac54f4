"""MONAI's DynUNet (nnU-Net's architecture) with hecktor's deep-supervision contract, and an nnU-Net-like layout.

``DeepSupervisedDynUNet`` holds a ``monai.networks.nets.DynUNet`` built *without* MONAI's deep supervision and adds
its own heads, because MONAI's version does not fit the contract of ``hecktor.networks.deep_supervision``: it runs
the heads in eval mode too (at inference they would cost time for nothing), and in training mode it returns one
stacked tensor with every head's output upsampled (nearest neighbour) to full resolution. Here the heads are 1**3
convolutions (MONAI's ``UnetOutBlock``, initialised as DynUNet initialises its own) on the outputs of the
``deep_supr_num`` up-blocks just below full resolution, exactly where MONAI puts its heads; in training mode the
network returns ``[full, 1/2, 1/4, ...]`` logits, each at its own resolution (nnU-Net's layout), in eval mode the
full-resolution logits only.

``dynunet_layout`` derives the kernel sizes and strides the way nnU-Net plans them (``get_pool_and_conv_props``):
halve an axis while it stays at least 4 voxels and its spacing is less than twice the finest; 3-voxel kernels
along axes whose spacing is less than twice the finest, 1 otherwise. For 128**3 patches at 1 mm that gives six
levels (strides 1, 2, 2, 2, 2, 2; 3**3 kernels), nnU-Net's 3d_fullres network for such patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks.dynunet_block import UnetOutBlock
from monai.networks.nets import DynUNet

from hecktor.networks.deep_supervision import IgnoresDeepSupervisionHeads

__all__ = ["DeepSupervisedDynUNet", "dynunet_filters", "dynunet_layout"]


def dynunet_layout(
    patch_size: Sequence[int],
    spacing: Sequence[float],
    max_levels: int = 6,
    min_size: int = 4,
) -> tuple[list[list[int]], list[list[int]]]:
    """nnU-Net-like (kernel sizes, strides) of a DynUNet for patches of ``patch_size`` voxels at ``spacing`` mm.

    Both arguments are in the order of the network's spatial axes (z, y, x). The first stride is 1 (the input
    block); each further level halves the axes that are at least ``2 * min_size`` voxels and whose spacing is less
    than twice the finest current spacing, until no axis can be halved or there are ``max_levels`` levels. A
    level's kernel is 3 along axes whose spacing is less than twice the finest, else 1 (as nnU-Net, so strongly
    anisotropic volumes convolve in-plane first).

    Args:
        patch_size: training patch size (voxels per axis).
        spacing: voxel spacing of the patches (mm per axis).
        max_levels: most levels (input block included); nnU-Net's 3-D networks have at most 6 or 7.
        min_size: smallest size of the bottleneck feature map along an axis that is halved.
    """
    size = [int(s) for s in patch_size]
    current = [float(s) for s in spacing]
    if len(size) != len(current) or min(size) < 1 or min(current) <= 0:
        raise ValueError(f"dynunet_layout: bad patch size {patch_size} or spacing {spacing}.")

    def kernel() -> list[int]:
        finest = min(current)
        return [3 if s < 2 * finest else 1 for s in current]

    kernels, strides = [kernel()], [[1] * len(size)]
    while len(strides) < max_levels:
        finest = min(current)
        stride = [2 if n >= 2 * min_size and s < 2 * finest else 1 for n, s in zip(size, current)]
        if max(stride) == 1:
            break
        size = [n // f for n, f in zip(size, stride)]
        current = [s * f for s, f in zip(current, stride)]
        strides.append(stride)
        kernels.append(kernel())
    if len(strides) < 3:
        raise ValueError(f"dynunet_layout: patches {patch_size} at {spacing} mm allow fewer than 3 levels.")
    return kernels, strides


def dynunet_filters(levels: int, base: int = 32, cap: int = 320) -> list[int]:
    """nnU-Net's widths: ``base`` doubled per level, capped at ``cap`` (32, 64, 128, 256, 320, 320)."""
    return [min(base * 2**level, cap) for level in range(levels)]


class DeepSupervisedDynUNet(IgnoresDeepSupervisionHeads, nn.Module):
    """MONAI ``DynUNet`` whose deep supervision follows ``hecktor.networks.deep_supervision`` (see module docstring).

    Args:
        in_channels, out_channels, kernel_size, strides, filters, dropout, norm_name, act_name, res_block,
            trans_bias: as ``monai.networks.nets.DynUNet`` (``upsample_kernel_size`` is ``strides[1:]``).
        deep_supervision: add ``deep_supr_num`` heads, used in training mode only.
        deep_supr_num: heads on the up-block outputs at the ``deep_supr_num`` levels below full resolution
            (1 <= deep_supr_num < len(strides) - 1, as in MONAI); ``None``: all of them, ``len(strides) - 2``
            (nnU-Net supervises every decoder level).

    Input (batch, in_channels, D, H, W) of a size divisible by the product of the strides (the registry wraps it in
    ``PadToDivisible``); output (batch, out_channels, D, H, W) logits, or in training mode with deep supervision a
    list of ``1 + deep_supr_num`` logits tensors, full resolution first, the k-th at the k-th decoder level's
    resolution (downsampled by the product of strides[1:k+1]).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[Sequence[int] | int],
        strides: Sequence[Sequence[int] | int],
        filters: Sequence[int] | None = None,
        dropout: float | None = None,
        norm_name: Any = ("INSTANCE", {"affine": True}),
        act_name: Any = ("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        res_block: bool = False,
        trans_bias: bool = False,
        deep_supervision: bool = False,
        deep_supr_num: int | None = None,
    ) -> None:
        super().__init__()
        # JSON configurations store (name, args) pairs as lists; MONAI's factories want tuples.
        norm_name = tuple(norm_name) if isinstance(norm_name, list) else norm_name
        act_name = tuple(act_name) if isinstance(act_name, list) else act_name
        self.dynunet = DynUNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            strides=strides,
            upsample_kernel_size=list(strides[1:]),
            filters=filters,
            dropout=dropout,
            norm_name=norm_name,
            act_name=act_name,
            deep_supervision=False,
            res_block=res_block,
            trans_bias=trans_bias,
        )
        self.ds_heads = None
        if deep_supervision:
            n_up = len(strides) - 1
            deep_supr_num = n_up - 1 if deep_supr_num is None else int(deep_supr_num)
            if not 1 <= deep_supr_num < n_up:
                raise ValueError(
                    f"DynUNet: deep_supr_num must be in [1, {n_up - 1}] for {len(strides)} levels, got {deep_supr_num}."
                )
            widths = self.dynunet.filters
            self.ds_heads = nn.ModuleList(
                UnetOutBlock(3, widths[k], out_channels, dropout=dropout) for k in range(1, deep_supr_num + 1)
            )
            self.ds_heads.apply(DynUNet.initialize_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        # DynUNet.forward, unrolled: its recursive skip layers would run MONAI's heads; here the decoder outputs are
        # kept so that our heads run in training mode only.
        net = self.dynunet
        supervised = self.training and self.ds_heads is not None
        skips = [net.input_block(x)]
        for down in net.downsamples:
            skips.append(down(skips[-1]))
        out = net.bottleneck(skips[-1])
        decoder = []  # up-block outputs, coarsest first (kept only when the heads run); decoder[-1 - k]: k levels down
        for up in net.upsamples:
            out = up(out, skips.pop())  # popped: each skip is freed once used, as in MONAI's recursive forward
            if supervised:
                decoder.append(out)
        logits = net.output_block(out)
        if not supervised:
            return logits
        return [logits, *(head(decoder[-1 - k]) for k, head in enumerate(self.ds_heads, 1))]
