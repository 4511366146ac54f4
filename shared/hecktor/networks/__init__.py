"""Segmentation networks of Task 1, chosen by name: HecMamba, the MONAI baselines of the seed's Table 1, and MONAI's
DynUNet (nnU-Net's architecture).

``build_network(name, config)`` builds a network from an explicit registry; ``config`` overrides the defaults of
``network_config_defaults(name)`` key by key (unknown keys are an error), and is what gets stored next to trained
weights so that inference rebuilds the same network. Every network takes (batch, 2, D, H, W) CT/PET inputs and
returns (batch, 3, D, H, W) logits for background / GTVp / GTVn.

The MONAI networks need spatial sizes divisible by their total stride (UNETR: exactly its ``img_size``). They are
wrapped in ``PadToDivisible``, which zero-pads the input at the far end of each axis and crops the output back, so
every registered network accepts any input size (UNETR: any size up to ``img_size``). HecMamba pads internally.

Deep supervision (HecMamba and DynUNet, configuration key ``deep_supervision``, off by default): in training mode the
network returns a list of logits tensors, full resolution first, then coarser decoder levels at their own
resolutions; in eval mode the full-resolution tensor only. Weight the per-output losses with
``deep_supervision_weights(len(outputs))``; see ``hecktor.networks.deep_supervision`` for the whole contract.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import UNETR, SegResNet, UNet, VNet

from hecktor.networks.deep_supervision import crop_to_input, deep_supervision_weights, strip_deep_supervision
from hecktor.networks.dynunet import DeepSupervisedDynUNet, dynunet_filters, dynunet_layout
from hecktor.networks.hecmamba import HecMamba, HecMambaConfig

__all__ = [
    "NETWORK_NAMES",
    "DeepSupervisedDynUNet",
    "HecMamba",
    "HecMambaConfig",
    "PadToDivisible",
    "build_network",
    "deep_supervision_weights",
    "dynunet_filters",
    "dynunet_layout",
    "network_config_defaults",
    "strip_deep_supervision",
]


class PadToDivisible(nn.Module):
    """Runs ``net`` on the input zero-padded to a multiple of ``divisor`` (or to ``fixed_size``) and crops back.

    A network that returns a list (deep supervision in training mode) has each element cropped: an element
    downsampled by a factor f keeps ceil(size / f) voxels per axis (``deep_supervision.crop_to_input``).

    Args:
        net: the wrapped network (kept as ``self.net``, so its weights are stored under ``net.``).
        divisor: each padded spatial size is a multiple of it (one number, or one per spatial axis).
        fixed_size: pad to exactly this size instead (networks with a fixed input size, e.g. UNETR).
    """

    def __init__(
        self, net: nn.Module, divisor: int | Sequence[int] = 1, fixed_size: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        self.net = net
        self.divisor = int(divisor) if isinstance(divisor, int) else tuple(int(d) for d in divisor)
        self.fixed_size = None if fixed_size is None else tuple(int(s) for s in fixed_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        spatial = tuple(x.shape[2:])
        if self.fixed_size is None:
            divisors = (self.divisor,) * len(spatial) if isinstance(self.divisor, int) else self.divisor
            target = tuple(-(-s // d) * d for s, d in zip(spatial, divisors))
        else:
            if len(self.fixed_size) != len(spatial) or any(s > f for s, f in zip(spatial, self.fixed_size)):
                raise ValueError(
                    f"{type(self.net).__name__} takes inputs up to its img_size {self.fixed_size}, got {spatial}: "
                    "use a sliding window of that size."
                )
            target = self.fixed_size
        pad = [p for size, goal in zip(reversed(spatial), reversed(target)) for p in (0, goal - size)]
        out = self.net(F.pad(x, pad) if any(pad) else x)
        if isinstance(out, (list, tuple)):
            return [crop_to_input(o, spatial, target) for o in out]
        return crop_to_input(out, spatial, target)


def _build_hecmamba(config: dict[str, Any]) -> nn.Module:
    return HecMamba(HecMambaConfig.from_dict(config))


def _build_unet(config: dict[str, Any]) -> nn.Module:
    net = UNet(spatial_dims=3, **config)
    return PadToDivisible(net, divisor=math.prod(config["strides"]))


def _build_vnet(config: dict[str, Any]) -> nn.Module:
    # VNet halves the resolution four times; its widths (16 to 256) are fixed by MONAI.
    return PadToDivisible(VNet(spatial_dims=3, **config), divisor=16)


def _build_unetr(config: dict[str, Any]) -> nn.Module:
    config = dict(config)
    img_size = tuple(config.pop("img_size"))
    return PadToDivisible(UNETR(img_size=img_size, spatial_dims=3, **config), fixed_size=img_size)


def _build_segresnet(config: dict[str, Any]) -> nn.Module:
    net = SegResNet(spatial_dims=3, **config)
    return PadToDivisible(net, divisor=2 ** (len(config["blocks_down"]) - 1))


def _build_dynunet(config: dict[str, Any]) -> nn.Module:
    net = DeepSupervisedDynUNet(**config)
    strides = [[s] * 3 if isinstance(s, int) else list(s) for s in config["strides"]]
    return PadToDivisible(net, divisor=[math.prod(axis) for axis in zip(*strides)])


_IO = {"in_channels": 2, "out_channels": 3}
# nnU-Net's 3d_fullres layout for the Task 1 plan's 128**3 patches at 1 mm: six levels, strides 1-2-2-2-2-2
# (bottleneck 4**3), 3**3 kernels, widths 32 to 320, instance norm, leaky ReLU. With deep supervision on,
# deep_supr_num None puts heads on every decoder level below full resolution (four here), as nnU-Net supervises.
_DYNUNET_KERNELS, _DYNUNET_STRIDES = dynunet_layout((128, 128, 128), (1.0, 1.0, 1.0))

# name -> (builder, defaults). Defaults are the full-size configurations; tests pass small overrides.
_REGISTRY: dict[str, tuple[Callable[[dict[str, Any]], nn.Module], dict[str, Any]]] = {
    "hecmamba": (_build_hecmamba, HecMambaConfig().to_dict()),
    "unet": (
        _build_unet,
        {**_IO, "channels": [32, 64, 128, 256, 320], "strides": [2, 2, 2, 2], "num_res_units": 2,
         "norm": "instance", "dropout": 0.0},
    ),
    "vnet": (_build_vnet, {**_IO, "dropout_prob_down": 0.5, "dropout_prob_up": [0.5, 0.5]}),
    "unetr": (
        _build_unetr,
        {**_IO, "img_size": [128, 128, 128], "feature_size": 16, "hidden_size": 768, "mlp_dim": 3072,
         "num_heads": 12, "proj_type": "conv", "norm_name": "instance", "res_block": True, "dropout_rate": 0.0},
    ),
    # The HECKTOR 2022 winner's network (Myronenko et al.): SegResNet with 32 initial filters.
    "segresnet": (
        _build_segresnet,
        {**_IO, "init_filters": 32, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1], "norm": "instance",
         "dropout_prob": None},
    ),
    "dynunet": (
        _build_dynunet,
        {**_IO, "kernel_size": _DYNUNET_KERNELS, "strides": _DYNUNET_STRIDES,
         "filters": dynunet_filters(len(_DYNUNET_STRIDES)), "dropout": None,
         "norm_name": ["INSTANCE", {"affine": True}],
         "act_name": ["leakyrelu", {"inplace": True, "negative_slope": 0.01}], "res_block": False, "trans_bias": False,
         "deep_supervision": False, "deep_supr_num": None},
    ),
}

NETWORK_NAMES = tuple(_REGISTRY)


def _entry(name: str) -> tuple[Callable[[dict[str, Any]], nn.Module], dict[str, Any]]:
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(f"Unknown network {name!r}; choose one of {list(NETWORK_NAMES)}.") from None


def network_config_defaults(name: str) -> dict[str, Any]:
    """The default configuration of network ``name`` (a fresh copy, JSON-compatible)."""
    return copy.deepcopy(_entry(name)[1])


def build_network(name: str, config: dict[str, Any] | None = None) -> nn.Module:
    """Build network ``name`` with ``config`` overriding its defaults.

    Args:
        name: one of ``NETWORK_NAMES`` (case-insensitive).
        config: keys of ``network_config_defaults(name)`` to override.

    Raises:
        ValueError: unknown name or configuration key.
    """
    builder, defaults = _entry(name)
    config = dict(config or {})
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"Unknown {name} configuration keys {unknown}; known keys are {sorted(defaults)}.")
    return builder({**copy.deepcopy(defaults), **config})
