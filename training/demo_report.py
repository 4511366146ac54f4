"""The demo's report: ``report.md`` with the scores, the time and memory of every container run, PNG overlays of CT,
PET, ground truth and prediction, and a Kaplan-Meier plot of the predicted low- and high-risk groups.

:func:`write_report` takes the ``results`` dict that ``training/demo.py`` assembles (it is also saved as
``results.json``); the figures go to ``OUT/figures``.
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from hecktor.tasks import get_task  # noqa: E402

CT_WINDOW_HU = (-250.0, 350.0)  # soft tissue, for display only
CONTOURS = {"ground truth": {1: "#2ca02c", 2: "#17becf"}, "prediction": {1: "#d62728", 2: "#e377c2"}}


# ------------------------------------------------------------------------------------------------------- figures


def _display_arrays(ct: sitk.Image, pet: sitk.Image, truth: sitk.Image, prediction: sitk.Image):
    """CT, PET on the CT's grid, truth and prediction, reoriented to LPS (radiological axial view) as arrays."""
    pet_on_ct = sitk.Resample(pet, ct, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    images = [sitk.DICOMOrient(image, "LPS") for image in (ct, pet_on_ct, truth, prediction)]
    return [sitk.GetArrayFromImage(image) for image in images], images[0].GetSpacing()


def save_overlay(ct: sitk.Image, pet: sitk.Image, truth: sitk.Image, prediction: sitk.Image, path: Path,
                 title: str) -> Path:
    """Three axial panels (CT, PET, fused) at the slice with the most ground-truth tumour, with the contours of the
    ground truth (green GTVp, cyan GTVn) and of the prediction (red GTVp, pink GTVn)."""
    (ct_a, pet_a, truth_a, pred_a), spacing = _display_arrays(ct, pet, truth, prediction)
    area = np.count_nonzero(truth_a, axis=(1, 2))
    if not area.any():
        area = np.count_nonzero(pred_a, axis=(1, 2))
    z = int(np.argmax(area)) if area.any() else ct_a.shape[0] // 2
    aspect = spacing[1] / spacing[0]
    pet_max = max(float(np.percentile(pet_a, 99.9)), 1e-3)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6))
    panels = (("CT", ct_a[z], "gray", CT_WINDOW_HU), ("PET (SUV)", pet_a[z], "hot", (0.0, pet_max)),
              ("PET over CT", ct_a[z], "gray", CT_WINDOW_HU))
    for ax, (name, array, cmap, (low, high)) in zip(axes, panels):
        ax.imshow(array, cmap=cmap, vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
        if name == "PET over CT":
            ax.imshow(np.ma.masked_less(pet_a[z], 0.05 * pet_max), cmap="hot", vmin=0.0, vmax=pet_max, alpha=0.5,
                      aspect=aspect, interpolation="nearest")
        for source, labels in ((truth_a, CONTOURS["ground truth"]), (pred_a, CONTOURS["prediction"])):
            for label, colour in labels.items():
                if np.any(source[z] == label):
                    ax.contour(source[z] == label, levels=[0.5], colors=[colour], linewidths=1.2)
        ax.set_title(name)
        ax.set_axis_off()
    handles = [Line2D([], [], color=colour, label=f"{who} {'GTVp' if label == 1 else 'GTVn'}")
               for who, labels in CONTOURS.items() for label, colour in labels.items()]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False)
    fig.suptitle(f"{title} (axial slice {z} of {ct_a.shape[0]}, patient's left on the right)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def save_kaplan_meier(times: Sequence[float], events: Sequence[int], risks: Sequence[float], path: Path,
                      title: str) -> dict[str, Any]:
    """Kaplan-Meier curves (scikit-survival) of the patients above and at-or-below the median predicted risk, with
    the log-rank test between the two groups (NaN where it is undefined: a group empty, no relapse, or so few
    patients that the test's covariance is singular)."""
    from sksurv.compare import compare_survival
    from sksurv.nonparametric import kaplan_meier_estimator

    times, events, risks = np.asarray(times, float), np.asarray(events, bool), np.asarray(risks, float)
    high = risks > np.median(risks)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    groups = {}
    for name, members, colour in (("low risk", ~high, "#1f77b4"), ("high risk", high, "#d62728")):
        if not members.any():
            continue
        t, s = kaplan_meier_estimator(events[members], times[members])
        ax.step(np.concatenate([[0.0], t]) / 365.25, np.concatenate([[1.0], s]), where="post", color=colour,
                label=f"{name} (n = {members.sum()}, {events[members].sum()} relapses)")
        groups[name] = {"n": int(members.sum()), "relapses": int(events[members].sum())}
    p_value = float("nan")
    if high.any() and (~high).any() and events.any():
        outcome = np.array(list(zip(events, times)), dtype=[("event", bool), ("time", float)])
        try:
            p_value = float(compare_survival(outcome, high.astype(int))[1])
        except np.linalg.LinAlgError:
            pass
    ax.set_xlabel("years since treatment")
    ax.set_ylabel("recurrence-free survival")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower left")
    ax.set_title(f"{title}\nsplit at the median predicted risk; log-rank p = {p_value:.2g}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return {"groups": groups, "logrank_p": p_value}


# -------------------------------------------------------------------------------------------------------- report


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _machine() -> str:
    model = "unknown CPU"
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"


def _resource_rows(runs: dict[str, dict[str, Any]]) -> str:
    wall = [r["wall_s"] for r in runs.values()]
    cpu = [r["cpu_s"] for r in runs.values()]
    rss = [r["peak_rss_mb"] for r in runs.values()]
    return (f"{np.median(wall):.1f} s (max {max(wall):.1f}) | {np.median(cpu):.1f} s (max {max(cpu):.1f}) | "
            f"{np.median(rss):.0f} MB (max {max(rss):.0f})")


def _ci(scores: dict[str, Any], key: str) -> str:
    """`` [95 % interval a–b]`` of a held-out score (the bootstrap over the patients), where the run gives one."""
    interval = scores.get(f"{key}_ci95")
    if not interval or any(v is None or not math.isfinite(v) for v in interval):
        return ""
    return f" [95 % interval {_f(interval[0])}–{_f(interval[1])}]"


def _apart(scores: dict[str, Any], key: str, count: str = "cindex_n") -> str:
    """``; containers X (n), in-process Y (n)`` where the demo scored the extra held-out patients in-process."""
    if f"{key}_in_process" not in scores:
        return ""
    return (f"; the {scores[f'{count}_containers']} container runs: {_f(scores[f'{key}_containers'])}, the "
            f"{scores[f'{count}_in_process']} patients predicted in-process: {_f(scores[f'{key}_in_process'])}")


def write_report(out: Path, results: dict[str, Any]) -> Path:
    """Write ``OUT/report.md`` and its figures; returns the report's path."""
    out = Path(out)
    figures = out / "figures"
    held_out = results["cohorts"]["held_out"]
    scores = results["scores"]
    per_case = {case["case_id"]: case for case in scores["per_case"]}

    # Overlays of the held-out cases with the largest primary tumours (the most to see), at most four.
    ranked = sorted(held_out, key=lambda c: -per_case[c["patient_id"]]["GTVp"]["gt_voxels"])[:4]
    overlays = []
    for case in ranked:
        pid = case["patient_id"]
        folder = out / "held_out" / "task1" / pid / "images"
        ct = sitk.ReadImage(str(next((folder / "ct").iterdir())))
        pet = sitk.ReadImage(str(next((folder / "pet").iterdir())))
        truth = sitk.ReadImage(str(out / "held_out" / "labels" / f"{pid}.nii.gz"))
        prediction = sitk.ReadImage(str(out / "outputs" / "task1" / pid / get_task(1).output))
        dice = per_case[pid]["GTVp"]["dice"]
        overlays.append(save_overlay(ct, pet, truth, prediction, figures / f"overlay_{pid}.png",
                                     f"{pid}: GTVp Dice {_f(dice, 2)}, CT grid {case['ct_orientation']}"))
    # Every held-out patient with a Task 2 risk: the container runs' and the in-process ones' (the same predictor).
    with_risk = [c for c in [*held_out, *results["cohorts"].get("held_out_extra", [])] if c.get("risk") is not None]
    km = save_kaplan_meier([c["rfs_days"] for c in with_risk], [c["relapse"] for c in with_risk],
                           [c["risk"] for c in with_risk], figures / "kaplan_meier.png",
                           f"Held-out patients (n = {len(with_risk)}), Task 2 risk")
    results["kaplan_meier"] = km

    trained = results["training"]
    seg, prog, hpv = (trained[get_task(n).name] for n in (1, 2, 3))
    oof = seg.get("out_of_fold", {})  # absent from a results.json written before the demo reported it
    summary = scores["segmentation"]
    runs = {int(task): records for task, records in results["runs"].items()}  # int keys in memory, str in JSON
    lines = [
        "# HECKTOR 2025 toolkit: demo report",
        "",
        f"Synthetic PET/CT cohort, CPU-sized models trained for minutes, and the {len(runs)} containers' "
        "`inference.py` run once per held-out case as the platform runs them (a fresh process per case, "
        "Grand-Challenge input folders), their outputs scored against the ground truth. The scores show that the "
        "pipeline works end to end, not what the method can do: the demo's HecMamba has "
        f"{seg['parameters'] / 1e6:.1f} M parameters (the default configuration 72 M) and trains "
        f"{seg['epochs'] * seg['iterations_per_epoch']} iterations per fold on "
        f"{seg['plan']['patch_size_zyx'][0]}^3 patches at {seg['plan']['spacing_mm_xyz'][0]:g} mm (the "
        "default: 25,000 on 128^3 patches at 1 mm).",
        "",
        f"Machine: {_machine()}.",
        "",
        "## Data and models",
        "",
        f"* Training cohort: {results['cohorts']['train_cases']} synthetic cases (`hecktor.synthetic`, seed "
        f"{results['seed']}), {results['cohorts']['train_event_fraction']:.0%} relapses, oracle C-index of the true "
        f"log-hazard {_f(results['cohorts']['train_oracle_cindex'])}.",
        f"* Held-out: {len(held_out)} other synthetic patients (another seed), laid out as Grand-Challenge input "
        "folders (UUID-named `.mha`, `ehr.json`; CT grids identity, axis-flipped or oblique), run through every "
        f"container; {len(results['cohorts'].get('held_out_extra', []))} more through the `predict_case` of Tasks "
        "2, 3 and 2026 in the demo's own processes (the containers' call, one Task 1 segmentation per case shared by "
        "the three), so that their C-indices and balanced accuracies rest on more than a dozen patients; both sets "
        "are scored together and apart.",
        f"* Task 1: HecMamba (`training/configs/demo.json`: widths {seg['network_config']['widths']}, "
        f"{seg['network_config'].get('full_resolution_width') or seg['network_config']['widths'][0]} full-resolution "
        f"decoder channels, hidden size {seg['network_config']['hidden_size']}, loss {seg['loss']}, deep supervision "
        f"{'on' if seg['deep_supervision'] else 'off'}) on {seg['plan']['patch_size_zyx']} patches at "
        f"{seg['plan']['spacing_mm_xyz']} mm, both folds of a {seg['n_folds']}-fold split (every training patient "
        f"gets an out-of-fold mask, which Task 2 needs), {seg['epochs']} epochs of {seg['iterations_per_epoch']} "
        f"iterations of {seg['batch_size']} patches; postprocessing chosen on the out-of-fold masks: "
        f"{seg['postprocessing']}, after which they score GTVp Dice {_f(oof.get('dice_GTVp'), 3)}, GTVn DSCagg "
        f"{_f(oof.get('dsc_agg_GTVn'), 3)} ({oof.get('n_cases')} patients). Inference with mirror TTA (the "
        "container's default).",
        f"* Task 2: `{prog['mode']}` mode (the record and the PET biomarkers of Task 1's out-of-fold masks; survival "
        f"model {prog['survival'].get('kind')}), {prog['n_folds']} folds; out-of-fold C-index "
        f"{_f(prog['cindex_oof_mean'])} (pooled {_f(prog['cindex_oof_pooled'])}); ensemble weights "
        f"{', '.join(f'{w:.2f}' for w in prog['ensemble_weights'])}. The container segments with the nested Task 1 "
        "model, then measures the biomarkers.",
        f"* Task 3: `{hpv['mode']}` mode (a calibrated logistic regression on the record and the PET biomarkers of "
        f"Task 1's out-of-fold masks), {hpv['n_folds']} folds; out-of-fold balanced accuracy "
        f"{_f(hpv['balanced_accuracy_oof_mean'])}, AUC {_f(hpv['auc_oof_mean'])}; threshold {_f(hpv['threshold'])} "
        f"(training prevalence {_f(hpv['prevalence'])}"
        f"{'; the threshold is the prevalence: ' + hpv['threshold_fallback'] if hpv.get('threshold_fallback') else ''})"
        ". The container segments with the nested Task 1 model, then measures the biomarkers.",
        "",
        "## Scores on the held-out cases",
        "",
        "In brackets, the 95 % interval of a score over all the held-out patients: the percentile bootstrap, "
        "1,000 draws of the patients with replacement. On three dozen patients one patient moves a C-index or a "
        "balanced accuracy by several points; the interval says how far.",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| GTVp mean Dice (the Task 1 container's masks) | {_f(summary['GTVp']['dice_mean'])} (n = "
        f"{summary['GTVp']['n_dice']}) |",
        f"| GTVp HD95 (mm), mean / median | {_f(summary['GTVp']['hd95_mean'], 1)} / "
        f"{_f(summary['GTVp']['hd95_median'], 1)} ({summary['GTVp']['hd95_n_inf']} case(s) with one mask empty) |",
        f"| GTVp surface Dice (2 mm) | {_f(summary['GTVp']['surface_dice_mean'])} |",
        f"| GTVn DSCagg | {_f(summary['GTVn']['dsc_agg'])} |",
        f"| GTVn F1agg (IoU > 0.3) | {_f(summary['GTVn']['f1_agg'])} (TP {summary['GTVn']['lesion_tp']}, "
        f"FP {summary['GTVn']['lesion_fp']}, FN {summary['GTVn']['lesion_fn']}) |",
        f"| GTVn HD95 (mm), mean | {_f(summary['GTVn']['hd95_mean'], 1)} |",
        f"| GTVn surface Dice (2 mm) | {_f(summary['GTVn']['surface_dice_mean'])} |",
        *_in_process_segmentation_row(scores),
        f"| C-index of the Task 2 risk | {_f(scores['cindex'])}{_ci(scores, 'cindex')} on "
        f"{scores.get('cindex_n', len(held_out))} patients "
        f"(oracle, the true log-hazard: {_f(scores['oracle_cindex'])}){_apart(scores, 'cindex')} |",
        "| log-rank p, high vs low predicted Task 2 risk (every held-out patient, split at the median) | "
        f"{_f(km['logrank_p'], 3)} |",
        f"| Task 3 balanced accuracy | {_f(scores['hpv_balanced_accuracy'])}{_ci(scores, 'hpv_balanced_accuracy')} on "
        f"{scores['hpv_n']} patients of known "
        f"status ({scores['hpv_n_positive']} HPV-positive; oracle, the true P(HPV+): "
        f"{_f(scores['hpv_oracle_balanced_accuracy'])}){_apart(scores, 'hpv_balanced_accuracy', 'hpv_n')} |",
        f"| Task 3 AUC of the predicted P(HPV+) | {_f(scores['hpv_auc'])}{_ci(scores, 'hpv_auc')} (oracle: "
        f"{_f(scores['hpv_oracle_auc'])})"
        f"{_apart(scores, 'hpv_auc', 'hpv_n')} |",
        *(f"| HECKTOR 2026 {stage} stage balanced accuracy | {_f(scores.get(f'{key}_balanced_accuracy'))}"
          f"{_ci(scores, f'{key}_balanced_accuracy')} on "
          f"{scores.get(f'{key}_n')} patients of recorded stage (the 2026 container's {key.replace('_', '-')}.json)"
          f"{_apart(scores, f'{key}_balanced_accuracy', f'{key}_n')} |"
          for stage, key in (("T", "t_stage"), ("N", "n_stage"))),
        f"| HECKTOR 2026 C-index of the RFS time | {_f(scores.get('rfs_time_cindex'))}"
        f"{_ci(scores, 'rfs_time_cindex')} on "
        f"{scores.get('hecktor2026_n')} patients (rfs.json, days)"
        f"{_apart(scores, 'rfs_time_cindex', 'hecktor2026_n')} |",
        f"| HECKTOR 2026 Dice of GTVp and GTVn averaged | {_f(scores.get('hecktor2026_dice_mean'))} on "
        f"{scores.get('hecktor2026_dice_n')} container runs |",
        "",
        "## Container runs (CPU, one process per case)",
        "",
        "Wall time includes the interpreter's start-up, imports and model loading, as the platform counts it. CPU "
        "time and peak resident memory are the process's own (measured by a small launcher process, so that the "
        f"demo's own memory does not count). {results.get('jobs', 1)} process(es) ran at a time, one thread each. "
        "Task 2's run includes its nested Task 1 segmentation (without TTA).",
        "",
        "| container | cases | wall time, median | CPU time, median | peak memory, median |",
        "| --- | --- | --- | --- | --- |",
        *(f"| Task {task} | {len(records)} | {_resource_rows(records)} |" for task, records in sorted(runs.items())),
        "",
        "| case | CT grid | GTVp Dice | GTVn Dice | GTVp HD95 (mm) | risk | RFS (days), relapse | HPV predicted / "
        "recorded | " + " | ".join(f"Task {task} wall / CPU / memory" for task in sorted(runs)) + " |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in runs) + " |",
    ]
    for case in held_out:
        pid = case["patient_id"]
        m = per_case[pid]
        recorded = "unknown" if case["hpv_status"] is None else str(bool(case["hpv_status"])).lower()
        usage = " | ".join(f"{r['wall_s']:.1f} s / {r['cpu_s']:.1f} s / {r['peak_rss_mb']:.0f} MB"
                           for r in (runs[task][pid] for task in sorted(runs)))
        lines.append(
            f"| {pid} | {case['ct_orientation']} | {_f(m['GTVp']['dice'])} | {_f(m['GTVn']['dice'])} | "
            f"{_f(m['GTVp']['hd95'], 1)} | {case['risk']:.3f} | {case['rfs_days']:.0f}, {case['relapse']} | "
            f"{str(case['hpv_predicted']).lower()} / {recorded} | {usage} |")
    lines += ["", "## Figures", ""]
    for path in overlays:
        lines.append(f"![{path.stem}](figures/{path.name})")
        lines.append("")
    lines += ["![Kaplan-Meier](figures/kaplan_meier.png)", "", "## Time per stage", "",
              "| stage | wall | CPU (all processes) |", "| --- | --- | --- |"]
    for name, stage in results["stages"].items():
        lines.append(f"| {name} | {stage['wall_s']:.0f} s | {stage['cpu_s']:.0f} s |")
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _in_process_segmentation_row(scores: dict[str, Any]) -> list[str]:
    """The Task 1 row of the in-process patients' shared segmentations (none in a run without them)."""
    extra = scores.get("segmentation_in_process")
    if not extra:
        return []
    return [f"| Task 1 on the {extra['n_cases']} in-process patients (the nested model, no TTA): GTVp mean Dice / "
            f"GTVn DSCagg / F1agg | {_f(extra['GTVp']['dice_mean'])} / {_f(extra['GTVn']['dsc_agg'])} / "
            f"{_f(extra['GTVn']['f1_agg'])} (GTVn TP {extra['GTVn']['lesion_tp']}, FP {extra['GTVn']['lesion_fp']}, "
            f"FN {extra['GTVn']['lesion_fn']}) |"]


def append_total(report: Path, total: dict[str, float]) -> None:
    """Add the demo's total time (known only once the report itself is written) to the stage table."""
    with Path(report).open("a") as handle:
        handle.write(f"| **total** | **{total['wall_s']:.0f} s** ({total['wall_s'] / 60:.1f} min) | "
                     f"**{total['cpu_s']:.0f} s** |\n")
