"""`relreps` command line: compare and stitch your own embedding spaces, embed texts, and run the
paper's experiments.

Every error is one line ``relreps: error: ...`` on stderr: exit status 2 for bad input (files,
options, run folders, missing packages), 1 for an unexpected failure (its traceback is printed
only with ``RELREPS_DEBUG=1``). ``--help``, ``list``, ``run EXP --help`` and ``--version`` load
neither torch nor scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from relreps.errors import RelrepsError

DESCRIPTION = """Relative representations: compare and stitch your own embedding spaces, embed
texts, and run the paper's experiments. Docs: docs/cli.md, docs/own-models.md.

Errors are one line "relreps: error: ..." (exit status 2 for bad input, 1 for an unexpected
failure; RELREPS_DEBUG=1 prints its traceback). RELREPS_QUIET=1 hides progress output;
RELREPS_CACHE sets the cache folder."""

SCALE_HELP = ("smoke: tiny sizes that check the set-up (seconds to a few minutes); full (default): "
              "the sizes the docs report (minutes to ~30 min per experiment on 2 CPU cores, from "
              "a cold cache)")
SEED_HELP = "base seed (default 0); an experiment's seeds are SEED, SEED+1, ..."
OUT_RUN_HELP = ("output folder; must not exist or be empty (default: a fresh runs/{name}, "
                "runs/{name}-2, ...)")
FORCE_HELP = "replace an existing relreps run folder given as --out"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see {self.prog} --help)"
        self.exit(2, f"relreps: error: {message}{hint}\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    """Help with descriptions and epilogs kept as written (lists, paragraphs)."""
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _wrapping(prog: str) -> argparse.HelpFormatter:
    """Help with descriptions and epilogs wrapped to the terminal."""
    return argparse.HelpFormatter(prog, max_help_position=32)


def _parse_options(items: Sequence[str]) -> dict[str, Any]:
    from relreps.errors import OptionError

    opts: dict[str, Any] = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise OptionError(f"--opt expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            opts[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            opts[key.strip()] = value
    return opts


def _experiment_epilog(experiment: str | None) -> str:
    """The experiments and, when one is named, its options (read without importing it)."""
    from relreps import experiments

    lines = ["experiments:"]
    for name, desc in experiments.available().items():
        lines.append(f"  {name:18s} {desc}")
    if experiment:
        opts = experiments.options(experiment)
        lines += ["", f"options of {experiment} (--opt KEY=VALUE; defaults per scale):"]
        if not opts:
            lines.append("  (none: its sizes are fixed per scale)")
        for key, text in opts.items():
            lines.append(f"  {key:18s} {text}")
    return "\n".join(lines)


def _add_cluster(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on an existing Dask cluster (e.g. tcp://host:8786)")
    g.add_argument("--workers", type=int, metavar="N",
                   help="run on a local Dask cluster of N worker processes (1 thread each)")


def build_parser(experiment_help: str | None = None, *, list_experiments: bool = False
                 ) -> argparse.ArgumentParser:
    """The argument parser; ``parser.commands`` maps each command to its sub-parser.

    With `list_experiments`, ``run``'s help lists the experiments and, when `experiment_help`
    names one, its options (read from the experiment modules' literals).
    """
    from relreps import __version__

    p = _Parser(prog="relreps", description=DESCRIPTION, formatter_class=_formatter)
    p.add_argument("--version", action="version", version=f"relreps {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=_Parser)

    # ---------------------------------------------------------------- compare
    c = sub.add_parser(
        "compare", formatter_class=_wrapping,
        help="how alike are these embedding spaces? (neighbourhoods, CKA, stitching)",
        description="Compare embedding spaces of the same items (row i = item i in every file): "
                    "neighbourhood agreement (Jaccard@k, MRR@k, mutual kNN) and CKA, absolute "
                    "vs relative, and with labels zero-shot stitching and latent translation. "
                    "Writes results.md, results.json, meta.json and figures to a run folder.",
        epilog="Files: .npy (memory-mapped), .npz/.safetensors (FILE:KEY), .pt/.pth, "
               ".parquet/.csv/.tsv (FILE:COLUMN for a vector column, else the numeric "
               "columns), .zarr. Labels: .npy, .txt (one per line) or a column. Anchor index: "
               ".npy, .txt or an AnchorSet JSON. See docs/cli.md.")
    c.add_argument("spaces", nargs="+", metavar="SPACE",
                   help="embedding files, two or more, same items in the same order")
    c.add_argument("--names", help="comma list of names for the spaces (default: file names)")
    c.add_argument("--labels", metavar="Y", help="labels of the items (enables stitching)")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--anchors", type=int, default=None, metavar="N",
                   help="number of anchors sampled from the items (default 4 per dimension "
                        "of the widest space, 300 to 1536, at most half of the training items)")
    g.add_argument("--anchor-index", metavar="FILE", help="rows to use as anchors")
    c.add_argument("--sampler", default=None,
                   choices=["uniform", "stratified", "kmeans", "farthest_point"],
                   help="anchor sampler (default stratified with labels, else uniform); kmeans "
                        "and farthest_point run on the first space")
    c.add_argument("--k", type=int, default=10, help="neighbourhood size (default 10)")
    c.add_argument("--similarity", default="whitened_cosine", help="similarity to the anchors "
                   "(default whitened_cosine: cosine after whitening each space by its own "
                   "anchors; cosine is the paper's; see relreps.similarity)")
    c.add_argument("--center", default="auto", choices=["auto", "anchors", "none"],
                   help="subtract the anchor mean first: auto (default) decides from the "
                        "anchors' anisotropy, jointly for all spaces, and records why")
    c.add_argument("--queries", type=int, default=None, metavar="N",
                   help="above 10000 items, neighbourhood metrics use N seeded queries "
                        "searched among all items (default 5000)")
    c.add_argument("--seed", type=int, default=0, help="seed of the anchors, splits and queries "
                   "(default 0)")
    c.add_argument("--out", help=OUT_RUN_HELP.format(name="compare"))
    c.add_argument("--force", action="store_true", help=FORCE_HELP)
    _add_cluster(c)

    # ---------------------------------------------------------------- stitch
    s = sub.add_parser("stitch", formatter_class=_wrapping,
                       help="zero-shot stitching: fit a classifier on one encoder's space, "
                            "predict from another's",
                       description="Fit a relative classifier on one encoder's embeddings and "
                                   "use it on another encoder's embeddings of other items, "
                                   "given that encoder's embeddings of the same anchors.")
    ssub = s.add_subparsers(dest="stitch_command", required=True, metavar="{fit,predict}",
                            parser_class=_Parser)
    sf = ssub.add_parser("fit", formatter_class=_wrapping,
                         help="fit a stitched classifier and save it",
                         description="Fit a StitchedClassifier on SPACE with labels Y, the rows "
                                     "IDX of SPACE as anchors, and save it (a .safetensors "
                                     "file; no pickle).")
    sf.add_argument("space", metavar="SPACE", help="embeddings of the training items")
    sf.add_argument("--labels", required=True, metavar="Y", help="labels of the items")
    sf.add_argument("--anchor-index", required=True, metavar="IDX",
                    help="rows of SPACE used as anchors (.npy, .txt or AnchorSet JSON)")
    sf.add_argument("--out", required=True, metavar="MODEL",
                    help="model file to write (.safetensors)")
    sf.add_argument("--head", default="logreg-cv",
                    help="classifier head: logreg-cv (default: regularisation chosen by "
                         "cross-validation on SPACE), logreg, logreg-c<C>, mlp")
    sf.add_argument("--similarity", default="whitened_cosine",
                    help="similarity (default whitened_cosine, as in compare; cosine is the "
                         "paper's)")
    sf.add_argument("--center", default="auto", choices=["auto", "anchors", "none"],
                    help="centring on the anchor mean (default auto)")
    sf.add_argument("--seed", type=int, default=0, help="seed of the head (default 0)")
    sf.add_argument("--force", action="store_true", help="overwrite an existing MODEL")
    sp = ssub.add_parser("predict", formatter_class=_wrapping,
                         help="predict with a saved stitched classifier",
                         description="Predict the classes of SPACE2's items with MODEL, given "
                                     "SPACE2's encoder's embeddings of MODEL's anchors (the same "
                                     "anchors, in the same order).")
    sp.add_argument("model", metavar="MODEL", help="a model saved by `relreps stitch fit`")
    sp.add_argument("space", metavar="SPACE2", help="embeddings to classify (any encoder)")
    g = sp.add_mutually_exclusive_group(required=True)
    g.add_argument("--anchor-embeddings", metavar="ANCH2",
                   help="SPACE2's encoder's embeddings of the model's anchors, in order")
    g.add_argument("--anchor-index", metavar="IDX2",
                   help="rows of SPACE2 that are the model's anchors, in order")
    sp.add_argument("--labels", metavar="Y2", help="true labels: print the accuracy")
    sp.add_argument("--out", metavar="PRED",
                    help="write the predictions (.npy, or .txt one per line); without --out "
                         "and --labels they are printed")
    sp.add_argument("--force", action="store_true", help="overwrite an existing PRED")

    # ---------------------------------------------------------------- embed
    e = sub.add_parser("embed", formatter_class=_wrapping,
                       help="embed texts with an offline encoder (optionally on a Dask cluster)",
                       description="Embed a text file with an offline encoder and write the "
                                   "embeddings (.npy or .zarr). With --workers/--scheduler the "
                                   "texts are split into partitions embedded in parallel into "
                                   "a Zarr store; a rerun resumes, skipping finished partitions.")
    from relreps.encoders.text import TEXT_ENCODERS  # the registry, so no encoder is left out

    e.add_argument("--encoder", required=True, metavar="NAME_OR_PATH",
                   help=f"{', '.join(TEXT_ENCODERS)}, hf:<folder>, a local "
                        "sentence-transformers folder, or hash:<dim> (a dependency-free "
                        "bag-of-words hashing encoder for trying things out)")
    e.add_argument("--texts", required=True, metavar="FILE",
                   help=".txt (one per line), .jsonl, or a .csv/.tsv/.parquet column (FILE:COL)")
    e.add_argument("--out", required=True, metavar="EMB", help="EMB.npy or EMB.zarr")
    e.add_argument("--batch-size", type=int, default=64, help="texts per batch (default 64)")
    e.add_argument("--partition-size", type=int, default=None, metavar="N",
                   help="texts per partition (one task each; default 4096)")
    e.add_argument("--force", action="store_true",
                   help="overwrite EMB (a rerun without --force resumes a .zarr store)")
    _add_cluster(e)

    # ---------------------------------------------------------------- experiments
    d = sub.add_parser("demo", formatter_class=_wrapping,
                       help="two seeds of a digits MLP: absolute vs relative, zero-shot stitching")
    d.add_argument("--scale", choices=["smoke", "full"], default="full", help=SCALE_HELP)
    d.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    d.add_argument("--out", help=OUT_RUN_HELP.format(name="demo-SCALE"))
    d.add_argument("--force", action="store_true", help=FORCE_HELP)

    sub.add_parser("list", help="list the experiments")

    r = sub.add_parser("run", formatter_class=_formatter, add_help=False,
                       help="run one of the paper's experiments",
                       description="Run an experiment; `relreps run EXPERIMENT --help` lists its "
                                   "options.",
                       epilog=_experiment_epilog(experiment_help) if list_experiments
                       else None)
    r.add_argument("-h", "--help", action="store_true", help="show this help (with an "
                   "EXPERIMENT: also its options) and exit")
    r.add_argument("experiment", nargs="?", metavar="EXPERIMENT", help="see the list below")
    r.add_argument("--scale", choices=["smoke", "full"], default="full", help=SCALE_HELP)
    r.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    r.add_argument("--out", help=OUT_RUN_HELP.format(name="EXPERIMENT-SCALE"))
    r.add_argument("--force", action="store_true", help=FORCE_HELP)
    r.add_argument("--method", default=None,
                   help="stitching method, for experiments that declare a 'method' option")
    r.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the experiment (value parsed as JSON when possible); "
                        "unknown keys are refused")
    p.commands = sub.choices  # command name -> its parser
    return p


# ------------------------------------------------------------------------------ commands

def _cmd_list() -> int:
    from relreps import experiments

    for name, desc in experiments.available().items():
        print(f"{name:20s} {desc}")
    return 0


def _print_results(results: Any) -> None:
    for title, table in results.tables.items():
        print(f"\n## {title}\n\n{table}")
    if results.summary:
        print("\nSummary:")
        for k, v in results.summary.items():
            print(f"  {k}: {v}")
    print(f"\nWrote {results.out}/results.md, results.json, meta.json and "
          f"{len(results.figures)} figure(s).")


def _cmd_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from relreps import experiments

    if args.command == "run":
        if args.help:
            if args.experiment:
                experiments.options(args.experiment)  # unknown name: a one-line error
            build_parser(args.experiment, list_experiments=True).commands["run"].print_help()
            return 0
        if not args.experiment:
            parser.error("run: an EXPERIMENT is required (relreps list shows them)")
        name, opts = args.experiment, _parse_options(args.opt)
        if args.method is not None:
            opts["method"] = args.method
    else:
        name, opts = "demo", {}
    results = experiments.run_experiment(name, scale=args.scale, seed=args.seed, out=args.out,
                                         options=opts, force=args.force)
    _print_results(results)
    return 0


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "list":
        return _cmd_list()
    if args.command in ("run", "demo"):
        return _cmd_run(args, parser)
    if args.command == "compare":
        from relreps.workflow.compare import cli_compare

        return cli_compare(args)
    if args.command == "stitch":
        from relreps.workflow import stitch

        return stitch.cli_fit(args) if args.stitch_command == "fit" else stitch.cli_predict(args)
    if args.command == "embed":
        from relreps.workflow.embed import cli_embed

        return cli_embed(args)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse checks


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _format_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                    line: str | None = None) -> str:
    return f"relreps: warning: {_one_line(str(message))} ({category.__name__})\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 2 bad input, 1 unexpected)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    saved_format = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            return _dispatch(args, parser)
        except SystemExit as e:  # argparse: --help/--version (0) and usage errors (2)
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        except (RelrepsError, OSError) as e:  # bad input: files, options, folders, packages
            if os.environ.get("RELREPS_DEBUG", "") not in ("", "0"):
                import traceback

                traceback.print_exc()
            print(f"relreps: error: {_one_line(_describe(e))}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("relreps: interrupted", file=sys.stderr)
            return 130
        except Exception as e:  # noqa: BLE001 - the CLI's last resort: one line, exit 1
            if os.environ.get("RELREPS_DEBUG", "") not in ("", "0"):
                import traceback

                traceback.print_exc()
            print(f"relreps: error: unexpected {type(e).__name__}: {_one_line(str(e))} (this is "
                  "a bug in relreps or a dependency; set RELREPS_DEBUG=1 for the traceback)",
                  file=sys.stderr)
            return 1
    finally:
        warnings.formatwarning = saved_format


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, RelrepsError) and e.filename:
        return f"{e.strerror or type(e).__name__}: {e.filename}"
    return str(e) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
