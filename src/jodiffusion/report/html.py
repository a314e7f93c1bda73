"""The demo's report page: one self-contained ``index.html`` next to its figures.

No external CSS, JavaScript or fonts, images referenced by relative paths: the folder can be zipped,
copied or opened from ``file://`` and looks the same. Every piece of text is escaped (prompts and
captions come from datasets and users). A few lines of inline script record, once the page has
loaded, how many images actually decoded (``<body data-images-loaded="N">``), which lets a headless
browser check the page without looking at pixels.
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.transforms import describe_fit
from jodiffusion.utils.io import write_text_atomic

log = logging.getLogger("jodiffusion")

# The summary table: (key in metrics, label, kind). Always shown; a missing value reads "n/a".
# Percent values are already in percent (ConfusionMatrix.miou, PromptAdherence), not fractions.
SUMMARY_ROWS: tuple[tuple[str, str, str], ...] = (
    ("vae_reconstruction_miou", "Annotation VAE: reconstruction mIoU", "percent"),
    ("prompt_precision", "Generated pairs: prompted-class precision", "percent"),
    ("prompt_recall", "Generated pairs: prompted-class recall", "percent"),
    ("agreement_miou", "Generated pairs: image-mask agreement mIoU", "percent"),
    ("seg_miou_real", "Segmenter mIoU: real only", "percent"),
    ("seg_miou_synthetic", "Segmenter mIoU: synthetic only", "percent"),
    ("seg_miou_real_synthetic", "Segmenter mIoU: real + synthetic", "percent"),
)
# Shown in the summary only when present (the demo's other stages).
OPTIONAL_ROWS: tuple[tuple[str, str, str], ...] = (
    ("vae_parameters", "Annotation VAE: parameters", "count"),
    ("codec_reconstruction_mae", "Image codec: reconstruction error (grey levels of 255)", "number"),
    ("codec_reconstruction_psnr", "Image codec: reconstruction PSNR (dB)", "number"),
    ("codec_parameters", "Image codec: parameters", "count"),
    ("raw_mask_miou", "Mask optimisation: mIoU before", "percent"),
    ("refined_mask_miou", "Mask optimisation: mIoU after", "percent"),
    ("pairs", "Generated pairs: count", "count"),
    ("pairs_per_second", "Generated pairs per second", "number"),
    ("test_miou_real", "Held-out split: real only", "percent"),
    ("test_miou_real_synthetic", "Held-out split: real + synthetic (the val choice)", "percent"),
)
# Time entries are rendered from stage_times, not repeated among the other values.
_TIME_KEYS = ("stage_seconds", "total_seconds")

_STYLE = """
body { font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin: 0 0 .6em; }
h2 { font-size: 1.2em; margin: 1.4em 0 .5em; border-bottom: 1px solid #ddd; }
.summary { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
table { border-collapse: collapse; }
th, td { padding: .2em .8em; border-bottom: 1px solid #eee; text-align: left; }
td.value { text-align: right; font-variant-numeric: tabular-nums; }
td.na { color: #999; }
tr.total td { font-weight: bold; border-top: 1px solid #999; }
.legend { display: flex; flex-wrap: wrap; gap: .4em 1.2em; }
.swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #888; vertical-align: -.15em;
          margin-right: .35em; }
figure { margin: 0 0 2em; }
figure img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
figcaption { color: #444; margin-top: .3em; max-width: 60em; }
.missing { color: #a00; }
details { margin-top: 1em; }
"""

# Counts decoded images once everything has loaded; headless checks read it back from the DOM.
_SCRIPT = """
window.addEventListener("load", function () {
  var loaded = 0;
  for (var i = 0; i < document.images.length; i++) {
    var im = document.images[i];
    if (im.complete && im.naturalWidth > 0) { loaded++; }
  }
  document.body.dataset.imagesLoaded = String(loaded);
});
"""


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) or math.isinf(value) else float(value)


def format_value(value, kind: str) -> str:
    """Metric value -> text: percent with 1 decimal, counts as integers; None, NaN and non-numbers -> "n/a"."""
    v = _number(value)
    if v is None:
        return "n/a"
    if kind == "percent":
        return f"{v:.1f}%"
    if kind == "count":
        return f"{round(v):,}"
    if kind == "seconds":
        return format_seconds(v)
    if isinstance(value, int):  # counts, steps, seeds: all digits
        return f"{value:,}"
    return f"{v:.4g}"


def format_seconds(seconds) -> str:
    """Seconds -> "m:ss" ("h:mm:ss" from an hour on); "n/a" when not a number."""
    v = _number(seconds)
    if v is None or v < 0:
        return "n/a"
    total = int(round(v))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _row(label: str, text: str, css: str = "") -> str:
    na = " na" if text.startswith("n/a") else ""
    cls = f' class="{css}"' if css else ""
    return f'<tr{cls}><th scope="row">{_esc(label)}</th><td class="value{na}">{_esc(text)}</td></tr>'


def _summary_table(metrics: Mapping) -> str:
    """The headline values; one that does not apply says why (``metrics["not_applicable"]``)."""
    reasons = metrics.get("not_applicable") or {}

    def text(key: str, kind: str) -> str:
        value = format_value(metrics.get(key), kind)
        return f"n/a: {reasons[key]}" if value == "n/a" and reasons.get(key) else value

    rows = [_row(label, text(key, kind)) for key, label, kind in SUMMARY_ROWS]
    rows += [_row(label, format_value(metrics[key], kind)) for key, label, kind in OPTIONAL_ROWS if key in metrics]
    return '<table class="metrics"><caption>Metrics</caption>' + "".join(rows) + "</table>"


def _candidates_table(metrics: Mapping) -> str:
    """real+synthetic's candidates, each with its val mIoU, the one chosen on val marked, beside real only;
    the filter's counts under it."""
    selection = metrics.get("seg_selection")
    if not isinstance(selection, Mapping) or not selection.get("candidates"):
        return ""
    skipped = selection.get("skipped") or {}
    rows = [_row("real only (baseline)", format_value(selection.get("real"), "percent"))]
    for name, value in selection["candidates"].items():
        text = f"n/a: {skipped[name]}" if name in skipped else format_value(value, "percent")
        mark = " (chosen)" if name == selection.get("chosen") else ""
        rows.append(_row(f"{name}{mark}", text, css="total" if mark else ""))
    verdict = ("the chosen candidate beats real only on val" if selection.get("synthetic_helps") else
               "no candidate beats real only on val: the real-only segmenter stays the pick")
    note = f"<p>{_esc(verdict)}.</p>"
    fil = metrics.get("filter")
    if isinstance(fil, Mapping) and "kept" in fil:
        dropped = ", ".join(f"{why} {n}" for why, n in (fil.get("dropped") or {}).items()) or "none"
        note += (f"<p>Quality filter: {_esc(fil['kept'])} of {_esc(fil['seen'])} pairs kept "
                 f"(dropped: {_esc(dropped)}).</p>")
    return ('<table class="candidates"><caption>real + synthetic: candidates, mIoU on the val split</caption>'
            + "".join(rows) + "</table>" + note)


def _times_table(stage_times: Mapping[str, float]) -> str:
    rows = [_row(name, format_seconds(sec)) for name, sec in stage_times.items()]
    numbers = [v for v in (_number(s) for s in stage_times.values()) if v is not None]
    total = format_seconds(sum(numbers)) if numbers else "n/a"
    rows.append(_row("total", total, css="total"))
    return '<table class="times"><caption>Wall time (m:ss)</caption>' + "".join(rows) + "</table>"


def _flatten(obj: Mapping, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out += _flatten(value, name + ".")
        else:
            out.append((name, value))
    return out


def _other_values(metrics: Mapping) -> str:
    """Every metric not in the summary, so nothing in metrics.json is hidden from the page."""
    shown = {k for k, _, _ in SUMMARY_ROWS + OPTIONAL_ROWS} | set(_TIME_KEYS)
    items = _flatten({k: v for k, v in metrics.items() if k not in shown})
    if not items:
        return ""
    rows = []
    for name, value in items:
        if _number(value) is not None:
            text = format_value(value, "number")
        elif value is None or isinstance(value, float):  # None, NaN, inf
            text = "n/a"
        elif isinstance(value, str | bool):
            text = str(value)
        else:
            text = json.dumps(value, default=str)
            text = text if len(text) <= 120 else text[:117] + "..."
        rows.append(_row(name, text))
    return ("<details><summary>All other values</summary><table>" + "".join(rows) + "</table></details>")


def _fit_note(fit: Mapping | None) -> str:
    """How the real pairs were fitted to the working size, per split: what was padded or cropped."""
    if not fit:
        return ""
    items = "".join(f"<li>{_esc(split)}: {_esc(describe_fit(counts))}</li>" for split, counts in fit.items())
    return f'<h2>Data at the working size</h2><ul class="fit">{items}</ul>'


def _legend(classes: ClassInfo) -> str:
    items = [f'<span><span class="swatch" style="background: rgb({r}, {g}, {b})"></span>{_esc(name)}</span>'
             for name, (r, g, b) in zip(classes.names, classes.palette, strict=True)]
    items.append(f'<span><span class="swatch" style="background: rgb(255, 255, 255)"></span>'
                 f"ignore ({classes.ignore_index})</span>")
    return '<h2>Class colours</h2><div class="legend">' + "".join(items) + "</div>"


def _relative(folder: Path, path: str | Path) -> PurePosixPath:
    """A figure path as a relative POSIX path inside ``folder``; anything else would break the self-contained page."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(folder.resolve())
        except ValueError as err:
            raise ValueError(f"figure {path} is outside the report folder {folder}: write it inside") from err
    rel = PurePosixPath(p.as_posix())
    if ".." in rel.parts:
        raise ValueError(f"figure {path} points outside the report folder {folder}")
    return rel


def _figure(folder: Path, path: str | Path, caption: str) -> str:
    rel = _relative(folder, path)
    if not (folder / rel).is_file():
        log.warning("report: figure %s is missing; the page shows a note instead", folder / rel)
        return (f'<figure><p class="missing">figure not written: {_esc(rel)}</p>'
                f"<figcaption>{_esc(caption)}</figcaption></figure>")
    src = _esc(quote(str(rel)))
    return (f'<figure><a href="{src}"><img src="{src}" alt="{_esc(caption)}"></a>'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def render_report(folder: str | Path, metrics: Mapping, figures: Sequence[tuple[str, str]], title: str,
                  stage_times: Mapping[str, float] | None = None, classes: ClassInfo | None = None) -> str:
    """The page's HTML text (see ``write_report``)."""
    folder = Path(folder)
    metrics = dict(metrics or {})
    if stage_times is None:  # the demo keeps them in metrics.json as well
        stage_times = metrics.get("stage_seconds") or {}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head>",
        '<body data-images-loaded="pending">',
        f"<h1>{_esc(title)}</h1>",
        f'<div class="summary">{_summary_table(metrics)}{_times_table(stage_times)}</div>',
        _candidates_table(metrics),
        _fit_note(metrics.get("data_fit")),
        _other_values(metrics),
    ]
    if (folder / "metrics.json").is_file():
        parts.append('<p>All numbers: <a href="metrics.json">metrics.json</a>.</p>')
    if classes is not None:
        parts.append(_legend(classes))
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [_figure(folder, path, caption) for path, caption in figures]
    parts += [f"<script>{_SCRIPT}</script>", "</body></html>", ""]
    return "\n".join(p for p in parts if p)


def write_report(folder: str | Path, metrics: Mapping, figures: Sequence[tuple[str, str]], title: str,
                 stage_times: Mapping[str, float] | None = None, classes: ClassInfo | None = None) -> Path:
    """Write ``folder/index.html`` atomically and return its path.

    ``metrics``: the values of metrics.json (keys of SUMMARY_ROWS / OPTIONAL_ROWS get labels, missing ones
    read "n/a", every other value is listed under "All other values"). ``figures``: (path relative to
    ``folder``, caption) pairs, shown in order. ``stage_times``: stage name -> seconds (default:
    ``metrics["stage_seconds"]``). ``classes``: adds a legend of the mask colours.
    """
    folder = Path(folder)
    path = folder / "index.html"
    write_text_atomic(path, render_report(folder, metrics, figures, title, stage_times, classes))
    return path
