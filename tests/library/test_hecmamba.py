"""Tests of HecMamba (tri-orientated scanning by construction, shapes, training) and the network registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hecktor.networks import NETWORK_NAMES, PadToDivisible, build_network, network_config_defaults
from hecktor.networks.hecmamba import (
    SCAN_ORIENTATIONS,
    HecMamba,
    HecMambaConfig,
    MambaMixer,
    TriOrientedMamba,
    from_scan_order,
    to_scan_order,
)
from hecktor.scan import ScanBackendError

TINY_CONFIGS = {
    "hecmamba": {"widths": [8, 8, 16, 16], "depths": [1, 1, 1, 1], "hidden_size": 16, "d_state": 4},
    "unet": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
    "vnet": {},  # MONAI's VNet has fixed widths
    "unetr": {"img_size": [32, 32, 32], "feature_size": 4, "hidden_size": 32, "mlp_dim": 32, "num_heads": 2},
    "segresnet": {"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]},
    "dynunet": {"kernel_size": [3, 3, 3, 3], "strides": [1, 2, 2, 2], "filters": [4, 8, 8, 16]},
}


def test_registry_covers_the_seed_networks():
    assert set(NETWORK_NAMES) == {"hecmamba", "unet", "vnet", "unetr", "segresnet", "dynunet"}
    assert set(TINY_CONFIGS) == set(NETWORK_NAMES)


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_output_shape_for_odd_input_sizes(name):
    torch.manual_seed(0)
    net = build_network(name, TINY_CONFIGS[name]).eval()
    x = torch.randn(2, 2, 19, 21, 23)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, 3, 19, 21, 23)
    assert torch.isfinite(out).all()
    # Padding is at the far end of each axis only: the two batch items stay independent, and a different second
    # item leaves the first item's output unchanged.
    x2 = x.clone()
    x2[1] = torch.randn(2, 19, 21, 23)
    with torch.no_grad():
        torch.testing.assert_close(net(x2)[0], out[0], rtol=1e-4, atol=1e-5)


def test_network_config_defaults_are_copies_and_json():
    for name in NETWORK_NAMES:
        defaults = network_config_defaults(name)
        assert defaults["in_channels"] == 2 and defaults["out_channels"] == 3
        assert json.loads(json.dumps(defaults)) == defaults
        defaults["in_channels"] = 99
        assert network_config_defaults(name)["in_channels"] == 2
    assert network_config_defaults("hecmamba") == HecMambaConfig().to_dict()
    assert network_config_defaults("hecmamba")["widths"] == [48, 96, 192, 384]


def test_build_network_rejects_unknown_names_and_keys():
    with pytest.raises(ValueError, match="Unknown network 'transunet'"):
        build_network("transunet")
    with pytest.raises(ValueError, match=r"Unknown unet configuration keys \['chanels'\]"):
        build_network("unet", {"chanels": [4, 8]})


def test_unetr_rejects_inputs_larger_than_img_size():
    net = build_network("unetr", TINY_CONFIGS["unetr"])
    assert isinstance(net, PadToDivisible)
    with pytest.raises(ValueError, match="img_size"):
        net(torch.zeros(1, 2, 33, 16, 16))


def test_hecmamba_config_round_trip():
    config = HecMambaConfig(widths=(4, 8), depths=(1, 2), hidden_size=8, scan_backend="torch", scan_chunk_size=64)
    as_dict = config.to_dict()
    assert as_dict["widths"] == [4, 8]
    assert HecMambaConfig.from_dict(json.loads(json.dumps(as_dict))) == config
    assert config.total_stride == 4
    with pytest.raises(ValueError, match="unknown keys"):
        HecMambaConfig.from_dict({"width": [4]})
    with pytest.raises(ValueError, match="equal length"):
        HecMambaConfig(widths=(4, 8), depths=(1,))


def test_full_size_layout():
    net = HecMamba()
    stem = net.downsample[0]
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride) == (2, 48, (7, 7, 7), (2, 2, 2))
    assert [len(stage) for stage in net.stages] == [2, 2, 2, 2]
    assert [stage[0].norm.normalized_shape[0] for stage in net.stages] == [48, 96, 192, 384]
    assert net.head.conv.conv.out_channels == 3
    layer = net.stages[0][0].mamba
    assert layer.mixer("forward").d_inner == 96 and layer.mixer("forward").d_state == 16


def test_full_resolution_width_widens_only_the_full_resolution_decoder():
    base = {"widths": [8, 8, 16, 16], "depths": [1, 1, 1, 1], "hidden_size": 16, "d_state": 4, "deep_supervision": True}
    assert HecMambaConfig.from_dict(base).decoder_width == 8
    net = HecMamba({**base, "full_resolution_width": 12}).train()
    assert net.input_encoder.layer.conv1.conv.out_channels == 12
    assert net.final_block.layer.conv1.conv.in_channels == 12 and net.head.conv.conv.in_channels == 12
    assert net.up_blocks[-1].conv_block.conv1.conv.out_channels == 12
    assert net.downsample[0].out_channels == 8  # the encoder keeps widths[0]
    outputs = net(torch.randn(1, 2, 32, 32, 32))
    assert [tuple(o.shape[2:]) for o in outputs] == [(32, 32, 32), (16, 16, 16), (8, 8, 8), (4, 4, 4)]
    # Without the key the stored configuration rebuilds the same network, state-dict key for key.
    assert HecMamba(base).state_dict().keys() == HecMamba({**base, "full_resolution_width": None}).state_dict().keys()
    with pytest.raises(ValueError, match="full_resolution_width must be positive"):
        HecMambaConfig(full_resolution_width=0)


# ---- tri-orientated scanning ----

def inter_slice_permutation(depth: int, height: int, width: int) -> np.ndarray:
    """Token indices in inter-slice order, built independently of the library: all slices of (h, w), then next."""
    return np.array([d * height * width + h * width + w for h in range(height) for w in range(width)
                     for d in range(depth)])


def test_scan_orders_are_distinct_permutations():
    shape = (3, 4, 5)
    length = int(np.prod(shape))
    tokens = torch.arange(length, dtype=torch.float32).reshape(1, length, 1)
    orders = {name: to_scan_order(tokens, shape, name)[0, :, 0].long().numpy() for name in SCAN_ORIENTATIONS}
    np.testing.assert_array_equal(orders["forward"], np.arange(length))
    np.testing.assert_array_equal(orders["reverse"], np.arange(length)[::-1])
    np.testing.assert_array_equal(orders["inter_slice"], inter_slice_permutation(*shape))
    for name, order in orders.items():
        assert sorted(order) == list(range(length)), name  # a permutation
        np.testing.assert_array_equal(from_scan_order(to_scan_order(tokens, shape, name), shape, name), tokens)
    assert len({tuple(order) for order in orders.values()}) == 3


def test_each_orientation_has_its_own_parameters():
    layer = TriOrientedMamba(6, d_state=4)
    single = sum(p.numel() for p in MambaMixer(6, d_state=4).parameters())
    assert sum(p.numel() for p in layer.parameters()) == 3 * single
    pointers = [{p.data_ptr() for p in layer.mixer(name).parameters()} for name in SCAN_ORIENTATIONS]
    assert not (pointers[0] & pointers[1]) and not (pointers[0] & pointers[2]) and not (pointers[1] & pointers[2])


@pytest.mark.parametrize("orientation", SCAN_ORIENTATIONS)
def test_tri_orientation_by_construction(orientation):
    """With the other two mixers silenced, the layer is one mixer run over the permuted sequence, permuted back."""
    torch.manual_seed(0)
    shape = (3, 4, 5)
    layer = TriOrientedMamba(6, d_state=4, d_conv=3)
    with torch.no_grad():
        for name in SCAN_ORIENTATIONS:
            if name != orientation:
                layer.mixer(name).out_proj.weight.zero_()
    tokens = torch.randn(2, 60, 6)
    permutation = {
        "forward": np.arange(60),
        "reverse": np.arange(60)[::-1].copy(),
        "inter_slice": inter_slice_permutation(*shape),
    }[orientation]
    inverse = np.argsort(permutation)
    mixer = layer.mixer(orientation)
    with torch.no_grad():
        expected = mixer(tokens[:, permutation])[:, inverse]
        out = layer(tokens, shape)
        unpermuted = mixer(tokens)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    if orientation != "forward":  # the mixer is causal, so the order it reads the tokens in changes its output
        assert (out - unpermuted).abs().max() > 1e-3


def test_mixer_is_causal():
    torch.manual_seed(0)
    mixer = MambaMixer(6, d_state=4)
    tokens = torch.randn(1, 30, 6)
    changed = tokens.clone()
    changed[:, 20:] += 1.0
    with torch.no_grad():
        a, b = mixer(tokens), mixer(changed)
    torch.testing.assert_close(a[:, :20], b[:, :20])
    assert (a[:, 20:] - b[:, 20:]).abs().max() > 1e-3


def test_scan_backend_is_taken_from_the_config(monkeypatch):
    monkeypatch.setattr("hecktor.scan.mamba_ssm_selective_scan", lambda: None)
    net = HecMamba({"widths": [4], "depths": [1], "hidden_size": 4, "d_state": 2, "scan_backend": "cuda"})
    with pytest.raises(ScanBackendError, match="mamba_ssm"):
        net(torch.zeros(1, 2, 4, 4, 4))


def test_a_few_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    net = HecMamba({"widths": [4, 8, 8], "depths": [1, 1, 1], "hidden_size": 8, "d_state": 4})
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 16, 16, 16, generator=generator)
    # GTVn where the smoothed CT channel is high, GTVp where the smoothed PET channel is high.
    smooth = F.avg_pool3d(x, 3, stride=1, padding=1)
    target = torch.zeros(1, 16, 16, 16, dtype=torch.long)
    target[smooth[:, 1] > 0.25] = 1
    target[smooth[:, 0] > 0.25] = 2
    assert 0.05 < (target == 1).float().mean() < 0.2 and 0.05 < (target == 2).float().mean() < 0.2
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss = F.cross_entropy(net(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Every Mamba parameter took part (gradients flow through the scan into all three orientations).
    for name, parameter in net.stages.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert losses[-1] < 0.8 * losses[0]
