"""`demo`: every stage on the embedded shapes dataset, on a CPU, with a report folder."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="run every stage on the embedded shapes dataset and write a report",
                       description="Make the embedded dataset, train and evaluate the annotation VAE, "
                                   "optimise noisy masks, and write a report folder. CPU only, no downloads.")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from jodiffusion.pipelines.demo import run_demo

    run_demo(args.out, overwrite=args.overwrite, quick=args.quick)
    return 0
