"""`segkit predict` against `pipeline("image-segmentation")`: same model, same images, one run.

    python bench/bench_predict.py [--images 100] [--family segformer --size b0]

The model is built from random weights (the speed does not depend on them) and saved as segkit
saves trained models; the images are CamVid test frames (480x360). The pipeline gets each image
as a PIL picture and returns one mask per class; segkit predict reads the files and writes an
indexed mask PNG and a row of areas.csv per image (and overlays in the last row). Images/s count
everything from the first image to the last output.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import torch
from common import SHARED, parser, record, table  # noqa: I001
from PIL import Image


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--family", default="segformer")
    p.add_argument("--size", default="b0")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args()
    from transformers import pipeline

    from segkit.config.sections import InputSpec, ModelConfig
    from segkit.infer.predict import PredictOptions, predict_folder
    from segkit.labels import LabelSet
    from segkit.models import build_model

    n, size = (6, "tiny") if args.smoke else (args.images, args.size)
    frames = sorted((SHARED / "camvid" / "test").glob("*.png"))[:n]
    if not frames:
        raise SystemExit("the shared CamVid copy is missing")
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    images = work / "images"
    images.mkdir()
    for f in frames:
        shutil.copy(f, images / f.name)
    torch.manual_seed(0)
    labels = LabelSet(("background", "car", "pedestrian", "bicyclist", "sign_symbol"), background=0)
    model = build_model(ModelConfig(family=args.family, size=size), labels, spec=InputSpec("none", window=(256, 256)))
    model.save_pretrained(work / "model")

    results = []

    def timed(name: str, run) -> None:  # noqa: ANN001
        started = time.perf_counter()
        run()
        rate = len(frames) / (time.perf_counter() - started)
        results.append([name, f"{rate:.2f}"])
        record(args.jsonl, "predict", smoke=args.smoke, system=name, family=args.family, size=size,
               images=len(frames), images_per_s=rate, torch_threads=torch.get_num_threads())

    subtask = {"subtask": "semantic"} if args.family in ("maskformer", "mask2former") else {}
    segmenter = pipeline("image-segmentation", model=str(work / "model"))
    timed("pipeline(\"image-segmentation\"), one image at a time",
          lambda: [segmenter(Image.open(f).convert("RGB"), **subtask) for f in sorted(images.iterdir())])
    for name, options in (
        ("segkit predict, masks + areas", PredictOptions(batch_size=args.batch, workers=args.workers, alpha=None)),
        ("segkit predict, masks + areas, bf16", PredictOptions(batch_size=args.batch, workers=args.workers, alpha=None,
                                                                precision="bf16")),
        ("segkit predict, masks + areas + overlays", PredictOptions(batch_size=args.batch, workers=args.workers)),
    ):
        out = work / f"out-{len(results)}"
        timed(name, lambda: predict_folder(work / "model", [str(images)], out, options))
    base = float(results[0][1])
    print(f"{len(frames)} CamVid frames (480x360), {args.family} {size}, {torch.get_num_threads()} torch threads")
    print(table(["", "images/s", "vs pipeline"], [[*r, f"{float(r[1]) / base:.2f}x"] for r in results]))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
