"""The learning curves of screening runs (scripts/screen_joint.sh) as one table: each probe's figures at
its sample count, per run, and the mean over the runs of a change (NAME-sSEED folders share NAME).

    python scripts/screen_table.py runs/screen/*-s*/ [--figures agreement_miou prompt_precision ...]
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

DEFAULT = ("agreement_miou", "prompt_precision", "prompt_recall", "colour_accuracy", "count_accuracy")


def curves(run: Path) -> dict[int, dict[str, float]]:
    """{samples seen: {figure: value}} of one run's probe rows."""
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "samples_seen" in row:
            out[int(row["samples_seen"])] = {k[len("probe/"):]: v for k, v in row.items() if k.startswith("probe/")}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--figures", nargs="+", default=list(DEFAULT))
    args = p.parse_args(argv)
    groups: dict[str, list[Path]] = defaultdict(list)
    for run in args.runs:
        if (run / "metrics.jsonl").is_file():
            groups[re.sub(r"-s\d+$", "", run.name.rstrip("/"))].append(run)
    print("| change | seeds | samples | " + " | ".join(args.figures) + " |")
    print("|---|---|---|" + "---|" * len(args.figures))
    for name, runs in sorted(groups.items()):
        per_run = [curves(r) for r in runs]
        for samples in sorted(set().union(*per_run)):
            rows = [c[samples] for c in per_run if samples in c]
            cells = []
            for fig in args.figures:
                values = [r[fig] for r in rows if r.get(fig) is not None]
                cells.append(" / ".join(f"{v:.1f}" for v in values) if values else "-")
            print(f"| {name} | {len(rows)} | {samples / 1000:.1f}k | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
