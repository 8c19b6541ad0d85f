"""`segkit train | evaluate | report | inspect | predict | export | push`: each a few lines over a library call.

User mistakes (a bad recipe, a missing file, a wrong flag) print one clear message and exit 2;
only real bugs show a traceback. Each command imports its library module when it runs, not at the
top: torch and transformers take seconds to import, and `segkit --help` should not wait for them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _recipe(args: argparse.Namespace):
    from segkit.config.recipe import load_recipe

    return load_recipe(args.recipe, args.set)


def cmd_train(args: argparse.Namespace) -> int:
    from segkit.train.loop import train

    recipe = _recipe(args)
    out = args.output_dir or f"runs/{recipe.name}"
    resume = True if args.resume == "latest" else args.resume
    result = train(recipe, out, resume=resume, overwrite=args.overwrite)
    if result["status"] == "interrupted":
        print(f"Interrupted at step {result['step']}; checkpoint saved. Continue with:\n"
              f"  segkit train {args.recipe} --output-dir {out} --resume")
        return 130
    print(f"Run folder: {out}  (model/, metrics.json, per_class.md, per_image.csv, report.html, overlays/)")
    if args.push_to_hub:
        from segkit.hub.export import push

        print(f"Pushed: {push(out, args.push_to_hub, private=_visibility(args), overlays=args.overlays)}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from segkit.config.recipe import load_recipe
    from segkit.evaluation.scoring import evaluate_saved

    recipe_path = args.data or _run_recipe(args.model)
    evaluate_saved(args.model, load_recipe(recipe_path, args.set), args.split, args.output, revision=args.revision,
                   flip=args.flip, scales=_scales(args.tta))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from segkit.evaluation.html_report import write_html

    print(f"Report: {write_html(args.run)}")
    return 0


def _run_recipe(model: str) -> str:
    from segkit.run_folder import RunFolder

    path = RunFolder(model).recipe
    if not path.is_file():
        raise FileNotFoundError(f"{model} is not a run folder with recipe.yaml: pass --data RECIPE.")
    return str(path)


def cmd_inspect(args: argparse.Namespace) -> int:
    from segkit.data.audit import inspect_main

    recipe = _recipe(args)
    return inspect_main(recipe, Path(args.output or f"runs/{recipe.name}-inspect"))


def cmd_convert(args: argparse.Namespace) -> int:
    from segkit.config.recipe import load_recipe, recipe_from_dict
    from segkit.data.convert import convert

    if args.recipe.endswith((".yaml", ".yml")):
        data = load_recipe(args.recipe, args.set).data
    else:  # FORMAT PATH, without a recipe
        data = recipe_from_dict({"data": {"format": args.recipe, "path": args.path}}).data
    out = convert(data, Path(args.output), hub=args.hub)
    print(f"Converted to {out} (images/, annotations/, id2label.json{', data/*.parquet' if args.hub else ''})")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from segkit.infer.predict import PredictOptions, predict_folder

    options = PredictOptions(batch_size=args.batch_size, workers=args.workers,
                             alpha=None if args.no_overlays else args.alpha, overwrite=args.overwrite,
                             sliding=args.sliding, window=_size_arg(args.window), overlap=args.overlap, flip=args.flip,
                             scales=_scales(args.tta),
                             precision=args.precision, revision=args.revision, runtime=args.runtime)
    result = predict_folder(args.model, args.images, args.output, options)
    skipped = f", {result.skipped} already done" if result.skipped else ""
    failed = f", {result.failed} failed (see failures.csv)" if result.failed else ""
    if result.processed == 0 and result.left == 0:
        unreadable = f"; {result.failed} unreadable files are listed in failures.csv" if result.failed else ""
        print(f"Nothing left to do: {result.skipped} images already done{unreadable} -> {result.output}")
    else:
        print(f"Predicted {result.processed} images{skipped}{failed} -> {result.output} (masks/, overlays/, areas.csv)")
    if result.left:
        print(f"{result.left} readable images have no mask yet: run the same command again to finish them.")
    return 1 if result.left else 0  # a scheduler that reruns a finished job must not see a failure


def _scales(text: str | None) -> tuple[float, ...]:
    from segkit.infer.scores import parse_scales

    return parse_scales(text)


def _tta_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tta", metavar="scales=S,S,...",
                        help="multi-scale test-time augmentation, e.g. scales=0.75,1.0,1.25 (averages class probabilities)")
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image (slower, smoother)")


def _size_arg(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x")) if "x" in text.lower() else (int(text),) * 2
    except ValueError:
        raise ValueError(f"--window {text}: give HEIGHTxWIDTH, e.g. 512x512, or one side.") from None
    return h, w


def cmd_export(args: argparse.Namespace) -> int:
    from segkit.hub.export import export

    out = export(args.run, args.output, overlays=args.overlays is not False, formats=args.format, quantize=args.quantize)
    print(f"Exported to {out}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from segkit.hub.export import push

    url = push(args.run, args.repo_id, private=_visibility(args), overlays=args.overlays, formats=args.format,
               quantize=args.quantize)
    print(f"Pushed: {url}")
    return 0


def _visibility(args: argparse.Namespace) -> bool | None:
    """--private, --public, or neither: then the Hub's default (an organisation's may be private)."""
    return True if args.private else False if args.public else None


def _hub_flags(parser: argparse.ArgumentParser) -> None:
    vis = parser.add_mutually_exclusive_group()
    vis.add_argument("--private", action="store_true", help="create the repo private")
    vis.add_argument("--public", action="store_true", help="create the repo public (default: the Hub's default)")
    pics = parser.add_mutually_exclusive_group()
    pics.add_argument("--with-overlays", dest="overlays", action="store_const", const=True, default=None,
                      help="ship overlay pictures even of gated or non-commercial data")
    pics.add_argument("--no-overlays", dest="overlays", action="store_const", const=False,
                      help="ship no overlay pictures")


def _deploy_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", action="append", choices=("onnx",), default=[],
                        help="also write model.onnx, checked against PyTorch at export (needs segkit[onnx])")
    parser.add_argument("--quantize", action="append", choices=("int8", "fp16"), default=[],
                        help="with --format onnx: also an int8 (dynamic quantisation) or fp16 graph, each checked")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segkit", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    def with_recipe(name: str, help: str, fn: Callable) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help)
        s.add_argument("recipe", help="recipe YAML (see recipes/)")
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.lr=1e-4")
        s.set_defaults(fn=fn)
        return s

    t = with_recipe("train", "fine-tune a model", cmd_train)
    t.add_argument("--output-dir", help="run folder (default runs/NAME)")
    t.add_argument("--resume", nargs="?", const="latest", help="continue the run (latest checkpoint, or a PATH)")
    t.add_argument("--overwrite", action="store_true", help="replace a run already in --output-dir")
    t.add_argument("--push-to-hub", metavar="REPO_ID", help="push the best model to this Hub repo at the end")
    _hub_flags(t)

    i = with_recipe("inspect", "audit the labels a recipe produces", cmd_inspect)
    i.add_argument("--output", help="folder for samples.png (default runs/NAME-inspect)")

    c = with_recipe("convert", "write a source (any format) as id PNGs + id2label.json", cmd_convert)
    c.add_argument("path", nargs="?", help="the export, when RECIPE is a format name (segkit convert labelme DIR)")
    c.add_argument("--output", required=True, help="folder to write")
    c.add_argument("--hub", action="store_true", help="also write data/SPLIT-*.parquet, loadable as data.format: hub")

    e = sub.add_parser("evaluate", help="score a saved model on a split")
    e.add_argument("model", help="run folder, model folder or Hub model id")
    e.add_argument("--revision", help="Hub revision (branch, tag or commit) of a model id")
    e.add_argument("--data", help="recipe whose data to score on (default: the run's recipe.yaml)")
    e.add_argument("--split", default="test")
    e.add_argument("--output", help="report folder (default RUN/eval-SPLIT)")
    _tta_flags(e)
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    e.set_defaults(fn=cmd_evaluate)

    rp = sub.add_parser("report", help="rebuild report.html from a run folder (or an eval-SPLIT folder)")
    rp.add_argument("run", help="run folder, or a report folder that `segkit evaluate` wrote")
    rp.set_defaults(fn=cmd_report)

    pr = sub.add_parser("predict", help="predict masks for files, folders or globs of images")
    pr.add_argument("model", help="run folder, model folder, Hub model id, or MODEL.onnx (onnxruntime)")
    pr.add_argument("images", nargs="+", help="image files, folders (searched recursively) or quoted globs")
    pr.add_argument("--output", default="predictions", help="output folder (not inside an input folder)")
    pr.add_argument("--batch-size", type=int, default=4, help="images (or windows) per forward pass")
    pr.add_argument("--workers", type=int, default=2, help="processes that decode and transform images")
    pr.add_argument("--alpha", type=float, default=0.5, help="overlay tint strength, 0..1")
    pr.add_argument("--no-overlays", action="store_true", help="write masks and areas only")
    pr.add_argument("--overwrite", action="store_true", help="predict images that an earlier run finished, too")
    pr.add_argument("--sliding", choices=("auto", "always", "never"), default="auto",
                    help="sliding windows for large images (auto: above 4x the training crop's area)")
    pr.add_argument("--window", help="sliding window HEIGHTxWIDTH (default: the training crop)")
    pr.add_argument("--overlap", type=float, default=0.25, help="share of a window that overlaps the next")
    _tta_flags(pr)
    pr.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                    help="auto: fp32 on CPU (the reported figures), bf16/fp16 on GPU")
    pr.add_argument("--revision", help="Hub revision (branch, tag or commit) of a model id")
    pr.add_argument("--runtime", choices=("auto", "torch", "onnx"), default="auto",
                    help="an export folder with weights and model.onnx: torch (the default, as auto) or onnx "
                         "(onnxruntime); a .onnx file always runs in onnxruntime")
    pr.set_defaults(fn=cmd_predict)

    ex = sub.add_parser("export", help="write the model folder with a model card")
    ex.add_argument("run", help="run folder")
    ex.add_argument("--output", help="export folder (default RUN/export)")
    ex.add_argument("--no-overlays", dest="overlays", action="store_const", const=False, default=None,
                    help="leave the overlay pictures out")
    _deploy_flags(ex)
    ex.set_defaults(fn=cmd_export)

    pu = sub.add_parser("push", help="upload the exported model to the Hugging Face Hub")
    pu.add_argument("run", help="run folder")
    pu.add_argument("repo_id", help="e.g. your-name/segformer-camvid")
    _hub_flags(pu)
    _deploy_flags(pu)
    pu.set_defaults(fn=cmd_push)
    return p


def _quiet_libraries(verbose: bool) -> None:
    """Keep segkit's own progress bars and messages readable: libraries speak only to warn
    (transformers only on errors). `--verbose` shows everything."""
    if verbose:
        return
    for noisy in ("httpx", "urllib3", "huggingface_hub", "filelock", "datasets", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-file "Loading weights" bars on every save and load
    # transformers 5 prints a LOAD REPORT table on every load with a new head, and a warning that
    # num_labels differs from the checkpoint's: segkit's own log says which weights start fresh.
    hf_logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    _quiet_libraries(args.verbose)
    from segkit.processes import leave

    return leave(_run(args))  # under `accelerate launch`, the process exits here


def _run(args: argparse.Namespace) -> int:
    """The command's exit status; known failures in words, without a traceback."""
    from segkit.train.checkpoint import CheckpointError
    from segkit.train.guard import RunStopped

    try:
        return args.fn(args)
    except RunStopped as e:  # a fault the run survived: what was kept and what to do, no traceback
        if args.verbose:
            raise
        print(f"segkit {args.command}: stopped: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        if args.verbose:
            raise
        print(f"segkit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
