"""`demo`: every stage on the embedded shapes dataset, then the report."""

from __future__ import annotations

from jodiffusion.experiments.demo import run_demo


def register(sub) -> None:
    p = sub.add_parser("demo", help="run every stage on the embedded shapes dataset and write a report",
                       description="Make the embedded dataset, train the annotation VAE and the joint model, "
                                   "generate a synthetic set, train segmenters on real, synthetic and "
                                   "real+synthetic data, and write a report folder (index.html, figures, "
                                   "metrics.json). CPU only, no downloads. A rerun skips complete stages.")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--overwrite", action="store_true", help="delete the output folder first and start again")
    p.add_argument("--quick", action="store_true", help="toy sizes: a smoke run in about a minute")
    p.add_argument("--preset", default=None,
                   help="a pipeline preset on the embedded dataset: demo (default), shapes-cpu (the longer proof, "
                        "under an hour on 2 cores) or demo-quick (same as --quick)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides of the pipeline/demo preset, e.g. synthetic_pairs=256")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    run_demo(args.out, overwrite=args.overwrite, quick=args.quick, overrides=tuple(args.overrides), preset=args.preset)
    return 0
