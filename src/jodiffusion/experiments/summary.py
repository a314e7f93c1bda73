"""The one-screen summary of a pipeline run (``jodiffusion pipeline``, ``jodiffusion demo``): the figures that
matter from its metrics, the time of each stage, and where the report is."""

from __future__ import annotations

from pathlib import Path

from jodiffusion.data.transforms import describe_fit


def _fmt(value, digits: int = 1) -> str:
    return "  n/a" if value is None else f"{value:5.{digits}f}"


def _probe_lines(probe: dict | None, real: dict | None) -> list[str]:
    """The conditioning probe beside the real data's values; figures that do not apply say why."""
    if not probe:
        return []
    real = real or {}
    missing = probe.get("not_applicable", {})
    lines = []
    if probe.get("background_gap") is not None:
        lines.append(f"  generated pairs: background dark / light   {probe['background_dark']:5.0f} / "
                     f"{probe['background_light']:.0f}  (real {_fmt(real.get('background_dark'), 0).strip()} / "
                     f"{_fmt(real.get('background_light'), 0).strip()})")
    elif "background_gap" in missing:
        lines.append(f"  generated pairs: background tone           n/a ({missing['background_gap']})")
    parts = [f"{label} {_fmt(probe.get(key), 0).strip()}%" for key, label in
             (("colour_accuracy", "colour"), ("count_accuracy", "object count")) if probe.get(key) is not None]
    if parts:
        lines.append("  generated pairs: attributes as prompted    " + ", ".join(parts))
    return lines


def _adherence_lines(metrics: dict) -> list[str]:
    """Prompt adherence and agreement; a figure that cannot discriminate says why instead of a number."""
    reasons = metrics.get("not_applicable") or {}
    precision, recall = reasons.get("prompt_precision"), reasons.get("prompt_recall")
    if precision and precision == recall:  # one reason for both (one class, or one caption for all)
        lines = [f"  generated pairs: prompted-class precision / recall   n/a ({precision})"]
    else:
        lines = [f"  generated pairs: prompted-class precision {_fmt(metrics.get('prompt_precision'))}"
                 f"   recall {_fmt(metrics.get('prompt_recall'))}"]
        lines += [f"    ({name} n/a: {why})" for name, why in (("precision", precision), ("recall", recall)) if why]
    if metrics.get("agreement_miou") is None and reasons.get("agreement_miou"):
        lines.append(f"  generated pairs: image-mask agreement mIoU  n/a ({reasons['agreement_miou']})")
    else:
        lines.append(f"  generated pairs: image-mask agreement mIoU{_fmt(metrics.get('agreement_miou'))}")
    return lines


def _fit_lines(fit: dict | None) -> list[str]:
    """What fitting the real pairs to the working size changed, per split (nothing silently cropped)."""
    return [f"  data {split}: {describe_fit(counts)}" for split, counts in (fit or {}).items()]


def _real_synthetic_lines(metrics: dict) -> list[str]:
    """real+synthetic as the best candidate on val, every candidate's val figure, the filter's counts, what
    the pipeline stands behind, and the held-out split's scores."""
    selection = metrics.get("seg_selection")
    if not selection:  # a run from before the candidates, or one without real+synthetic
        return ([f"  segmenter mIoU, real + synthetic          {_fmt(metrics['seg_miou_real_synthetic'])}"]
                if "seg_miou_real_synthetic" in metrics else [])
    chosen = selection.get("chosen")
    scores = selection.get("candidates", {})
    lines = [f"  segmenter mIoU, real + synthetic          {_fmt(metrics.get('seg_miou_real_synthetic'))}"
             + (f"  (best on val of {len(scores)}: {chosen})" if chosen else "  (no candidate trained)")]
    if len(scores) > 1 or selection.get("skipped"):
        lines.append("    candidates on val: " + ", ".join(
            f"{name} {_fmt(value).strip()}" for name, value in scores.items()))
    fil = metrics.get("filter")
    if fil:
        dropped = ", ".join(f"{why} {n}" for why, n in fil.get("dropped", {}).items()) or "none"
        lines.append(f"    quality filter: {fil['kept']} of {fil['seen']} pairs kept (dropped: {dropped})")
    if chosen and not selection.get("synthetic_helps"):
        lines.append("    no candidate beat real only on val: the real-only segmenter stays the pipeline's pick")
    if metrics.get("test_split"):
        lines.append(f"  on the held-out {metrics['test_split']} split (never used to choose): real only "
                     f"{_fmt(metrics.get('test_miou_real')).strip()}, real + synthetic "
                     f"{_fmt(metrics.get('test_miou_real_synthetic')).strip()}")
    return lines


def _codec_lines(metrics: dict) -> list[str]:
    """The learned image codec's reconstruction, when the pipeline trained one."""
    if metrics.get("codec_reconstruction_mae") is None:
        return []
    return [f"  image codec reconstruction error          {metrics['codec_reconstruction_mae']:5.1f} / 255 "
            f"(PSNR {metrics['codec_reconstruction_psnr']:.1f} dB)"]


def print_summary(metrics: dict, out: Path, title: str = "jodiffusion demo") -> None:
    """One screen: the numbers that matter, the time of each stage, and where the report is."""
    seconds = metrics.get("stage_seconds", {})
    lines = [
        "",
        f"{title}: summary",
        *_fit_lines(metrics.get("data_fit")),
        f"  annotation VAE reconstruction mIoU        {_fmt(metrics.get('vae_reconstruction_miou'))}",
        *_codec_lines(metrics),
        *([f"  joint model training speed                {metrics['joint_samples_per_second']:5.0f} samples/s "
           "(probes excluded)"] if metrics.get("joint_samples_per_second") else []),
        *_adherence_lines(metrics),
        *_probe_lines(metrics.get("probe"), metrics.get("probe_real")),
        f"  segmenter mIoU, real only                 {_fmt(metrics.get('seg_miou_real'))}",
        f"  segmenter mIoU, synthetic only            {_fmt(metrics.get('seg_miou_synthetic'))}",
        *([f"  segmenter mIoU, synthetic only (4x)       {_fmt(metrics['seg_miou_synthetic_x4'])}"]
          if metrics.get("seg_miou_synthetic_x4") is not None else []),
        *_real_synthetic_lines(metrics),
        "  wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items())
        + f"  (total {sum(seconds.values()) / 60:.1f} min)",
    ]
    if metrics.get("skipped_stages"):
        lines.append("  skipped (already complete): " + ", ".join(metrics["skipped_stages"]))
    if "report" in seconds:  # drawn by this run (report=false draws none, whatever an earlier run left)
        lines.append(f"  report: {out / 'report' / 'index.html'}")
    print("\n".join(lines))
