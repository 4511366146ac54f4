"""The benchmark scripts that a later session runs on hardware this machine lacks must at least start and run here."""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import pytest
import torch

from helpers.paths import REPO


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_smoke_training_step_runs_on_cpu(capsys):
    bench = _load("bench_gpu_segmentation")
    assert bench.main(["--smoke", "--parts", "train", "--steps", "1"]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| torch |"))
    seconds = float(row.split("|")[3])
    assert 0.0 < seconds < 60.0
    assert "the CUDA scan backend was not timed" in table


def test_training_step_benchmark_times_both_layouts_and_prints_their_ratio(capsys):
    bench = _load("bench_training_step")
    assert bench.main(["--steps", "1", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    first, last = (float(next(line for line in out.splitlines() if line.startswith(f"| {name}")).split("|")[2])
                   for name in ("channels-first", "channels-last"))
    ratio = float(out.split("channels-first / channels-last: ")[1].split("x")[0])
    assert 0.0 < first < 60.0 and 0.0 < last < 60.0
    assert ratio == pytest.approx(first / last, abs=0.01)


def test_channels_last_training_step_computes_what_channels_first_does():
    """The trainer's CPU layout changes speed, not arithmetic: the same network and batch in either layout give the
    same outputs and weight gradients up to float rounding."""
    from hecktor.training.segmentation.config import build_segmentation_network

    config = {"widths": [8, 8, 16, 16], "depths": [1, 1, 1, 1], "hidden_size": 16, "d_state": 4,
              "full_resolution_width": 8}
    images = torch.randn(1, 2, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    results = []
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        torch.manual_seed(0)
        network = build_segmentation_network("hecmamba", config).to(memory_format=layout)
        outputs = network(images.contiguous(memory_format=layout))
        output = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        output.square().mean().backward()
        results.append((output.detach(), [p.grad.clone() for p in network.parameters()]))
    (out_first, grads_first), (out_last, grads_last) = results
    assert torch.allclose(out_first, out_last, atol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(grads_first, grads_last))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where there is no GPU")
def test_gpu_benchmark_without_cuda_says_so():
    bench = _load("bench_gpu_segmentation")
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--parts", "train"])
    assert exit_info.value.code == 2


def test_segmentation_benchmark_settings_name_rows_and_folders():
    bench = _load("bench_segmentation")
    settings = dict([bench.parse_setting("learning_rate=0.004"), bench.parse_setting("ce_class_weights=[1,1,2]"),
                     bench.parse_setting("loss=batch_dicece")])
    assert settings == {"learning_rate": 0.004, "ce_class_weights": [1, 1, 2], "loss": "batch_dicece"}
    assert bench.setting_suffix({}) == ""
    assert bench.setting_suffix({"learning_rate": 0.004}) == ' [learning_rate=0.004]'
    with pytest.raises(Exception, match="KEY=VALUE"):
        bench.parse_setting("learning_rate")
    # Long row names keep distinct folders: a tuned row never reuses the untuned row's checkpoints.
    name = bench.CONFIGURATIONS[0][0]
    plain, tuned = bench.slug(name), bench.slug(name + bench.setting_suffix(settings))
    assert plain == "hecmamba__current_recipe" and tuned != plain and len(tuned) <= 60
    assert bench.slug(name + ' [learning_rate=0.004]') != bench.slug(name + ' [learning_rate=0.006]')


def test_segmentation_ceiling_row_is_near_perfect_at_the_plan_spacing(tmp_path):
    """The ceiling row scores the true labels through the plan's grid: near 1 at 4 mm on small synthetic cases, and
    exactly what a perfect prediction on that grid would score (Dice below 1 only from the voxel size)."""
    from hecktor.synthetic import generate_cohort
    from hecktor.training.segmentation import load_config_file

    bench = _load("bench_segmentation")
    generate_cohort(tmp_path / "held_out", 2, seed=1003, size="small")
    base = load_config_file(REPO / "training" / "configs" / "demo.json")
    row = bench.ceiling_row(bench.CEILING, {**base, "data_root": str(tmp_path / "held_out")}, tmp_path / "held_out")
    p, n = row["summary"]["GTVp"], row["summary"]["GTVn"]
    assert row["summary"]["n_cases"] == 2 and row["network"] == "ceiling"
    assert 0.85 < p["dice_mean"] < 1.0 and 0.8 < n["dsc_agg"] < 1.0
    assert "| — | — |" in bench.markdown([{**row, "table": 1}], 1)


def test_segmentation_rows_keep_their_full_resolution_width(tmp_path):
    """demo.json's recipe widens the full-resolution decoder to 32 channels; the seed-widths row must still build the
    8-channel network of the README's row and the former-recipe row the 16-channel one (a HecMamba row's
    network_config is merged into the base's, so a key the row leaves out is inherited)."""
    from hecktor.networks.hecmamba import HecMambaConfig
    from hecktor.training.segmentation import load_config_file

    bench = _load("bench_segmentation")
    base = load_config_file(REPO / "training" / "configs" / "demo.json")
    widths = {}
    for name, _, overrides in bench.CONFIGURATIONS:
        config = bench.row_config(base, overrides, tmp_path / "run")
        if config.get("network", "hecmamba") == "hecmamba":
            widths[name] = HecMambaConfig.from_dict(config["network_config"]).decoder_width
    assert widths["HecMamba (current recipe)"] == 32
    assert widths["HecMamba, widths 8-64 (8 full-resolution channels)"] == 8
    assert widths["HecMamba (seed recipe: widths 8-64, batch Dice+CE, no deep supervision)"] == 8
    assert widths["HecMamba, 16 full-resolution channels (the former recipe)"] == 16
    assert widths["HecMamba, no deep supervision"] == 32
    unet = bench.row_config(base, dict(bench.CONFIGURATIONS[2][2]), tmp_path / "run")
    assert unet["network"] == "unet" and unet["network_config"] == {} and "deep_supervision" not in unet


def test_segmentation_repeats_table_gives_mean_and_sd_per_row():
    bench = _load("bench_segmentation")

    def row(name, p, n, f1):
        return {"name": name, "summary": {"GTVp": {"dice_mean": p}, "GTVn": {"dsc_agg": n, "f1_agg": f1}}}

    rows = [row("U-Net (MONAI) [seed=0]", 0.90, 0.70, 0.8), row("U-Net (MONAI) [seed=1]", 0.92, 0.74, 0.6),
            row("HecMamba (current recipe) [learning_rate=0.004, seed=0]", 0.9, 0.8, 1.0),
            row("HecMamba (current recipe) [learning_rate=0.004, seed=1]", 0.9, 0.8, 1.0),
            row("nnU-Net v2", 0.8, 0.6, 0.5)]
    table = bench.repeats(rows)
    # U-Net: GTVp 0.91 ± 0.0141, DSCagg 0.72 ± 0.0283, F1 0.7 ± 0.1414, headline (0.8, 0.83) -> 0.815 ± 0.0212.
    assert "| U-Net (MONAI) | 2 | 0.910 ± 0.014 | 0.720 ± 0.028 | 0.700 ± 0.141 | 0.815 ± 0.021 |" in table
    assert "| HecMamba (current recipe) [learning_rate=0.004] | 2 | 0.900 ± 0.000 |" in table
    assert "nnU-Net" not in table  # a row without seeds is no repeat
    assert bench.repeats([rows[-1]]) == "" and bench.repeats([rows[0]]) == ""  # one seed (--set seed=S) is no repeat


def test_segmentation_comparison_uses_seed_means():
    bench = _load("bench_segmentation")

    def row(name, p, n, seconds, network="hecmamba"):
        return {"name": name, "network": network, "train_s": seconds,
                "summary": {"GTVp": {"dice_mean": p}, "GTVn": {"dsc_agg": n, "f1_agg": 0.5}}}

    seeded = [row("HecMamba (current recipe) [seed=0]", 0.90, 0.70, 100),  # headline 0.80
              row("HecMamba (current recipe) [seed=0]" + bench.POSTPROCESSED, 1.0, 1.0, 100),  # never "ours"
              row("HecMamba (current recipe) [seed=1]", 0.94, 0.78, 300),  # 0.86 -> mean 0.83 in 200 s
              row("U-Net (MONAI) [seed=0]", 0.90, 0.80, 50, "unet"),  # 0.85
              row("U-Net (MONAI) [seed=1]", 0.90, 0.70, 70, "unet"),  # 0.80 -> mean 0.825 in 60 s
              row("DynUNet (MONAI) [seed=0]", 0.90, 0.76, 80, "dynunet"),  # 0.83
              row("DynUNet (MONAI) [seed=1]", 0.90, 0.72, 80, "dynunet")]  # 0.81 -> mean 0.82
    text = bench.comparison(seeded)
    assert "HecMamba (current recipe) (mean of 2 seeds) 0.830 in 200 s" in text
    assert "U-Net (MONAI) (mean of 2 seeds) 0.825 in 60 s" in text and "difference +0.005" in text
    # One seed per row: the rows themselves, as before.
    single = bench.comparison([row("HecMamba (current recipe)", 0.90, 0.70, 100),
                               row("DynUNet (MONAI)", 0.90, 0.76, 80, "dynunet")])
    assert "HecMamba (current recipe) 0.800 in 100 s" in single and "DynUNet (MONAI) 0.830 in 80 s" in single
    assert "difference -0.030" in single
    assert bench.comparison([row("U-Net (MONAI)", 0.9, 0.8, 1, "unet")]).startswith("Comparison: needs")


@pytest.mark.parametrize("tta", [False, True])
def test_segmentation_nnunet_row_gets_the_tables_tta(monkeypatch, tmp_path, tta):
    """``--tta`` reaches nnU-Net v2's predictor (its mirroring) as it reaches ours, so the rows stay comparable."""
    bench = _load("bench_segmentation")
    calls = []
    fake = types.SimpleNamespace(run_nnunet_row=lambda *args, **kwargs: calls.append(kwargs) or {"name": "n"})
    monkeypatch.setitem(sys.modules, "nnunet_baseline", fake)
    base = {"plan": {"spacing_mm_xyz": [4.0, 4.0, 4.0], "patch_size_zyx": [32, 32, 32]}, "epochs": 40,
            "iterations_per_epoch": 25}
    rows = bench.run_configuration(bench.NNUNET, {"network": "nnunet"}, base, tmp_path, tmp_path, tta)
    assert calls[0]["tta"] is tta and calls[0]["iterations"] == 1000 and calls[0]["forced"] == (4.0, 32)
    assert rows == [{"name": "n", "network": "nnunet"}]


def test_segmentation_reports_keep_every_runs_copy(tmp_path):
    bench = _load("bench_segmentation")
    first = bench.write_reports(tmp_path, "first report", [{"name": "A"}], "20261201T000000Z")
    second = bench.write_reports(tmp_path, "second report", [{"name": "B"}], "20261201T010000Z")
    assert first.read_text() == "first report\n" and second.read_text() == "second report\n"
    assert json.loads(first.with_suffix(".json").read_text()) == [{"name": "A"}]
    assert (tmp_path / "bench_segmentation.md").read_text() == "second report\n"
    assert json.loads((tmp_path / "bench_segmentation.json").read_text()) == [{"name": "B"}]


def test_held_out_noise_benchmark_prints_the_model_and_the_oracle_over_held_out_sets(tmp_path, capsys):
    from hecktor.synthetic import generate_cohort

    generate_cohort(tmp_path / "cohort", cases=24, seed=3, size="small")
    bench = _load("bench_held_out_noise")
    args = ["--data", str(tmp_path / "cohort"), "--true-masks", "--train", "12", "--held-out", "8", "--draws", "2",
            "--sets", "5", "--target", "0.5"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "2 draws of 12 training patients, 5 held-out sets of 8 per draw" in out
    rows = {line.split("|")[1].strip(): line.split("|")[2:5] for line in out.splitlines()
            if line.startswith(("| model", "| true"))}
    assert list(rows) == ["model, on the 12 patients not drawn", "model, on 8 of them",
                          "true log-hazard, on the same 8"]
    for mean_sd, _, share in rows.values():
        mean, sd = (float(v) for v in mean_sd.split("±"))
        assert 0.0 <= mean <= 1.0 and sd >= 0.0 and 0.0 <= float(share) <= 1.0
    assert float(rows["true log-hazard, on the same 8"][0].split("±")[0]) > 0.6
    assert bench.main([*args[:5], "--held-out", "13"]) == 2
    assert "need more" in capsys.readouterr().err
