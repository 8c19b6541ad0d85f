"""`segkit predict`: images in, masks, overlays and class areas out, for folders of any size.

Decoding and the model's input transform run in DataLoader workers; same-shaped images run as
one batch through the one dispatch (`segkit.infer.segment`), so masks are what evaluation
computed, sliding windows for images far larger than the training crops included.
Broken files are listed in failures.csv and skipped; finished images are skipped on a second run;
under `accelerate launch` each process takes its share of the files.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from accelerate import Accelerator
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from segkit.data.decode import image_size, read_image
from segkit.data.eval_transform import EvalTransform
from segkit.data.sampling import quiet_worker
from segkit.infer.onnx_model import OnnxSegModel, onnx_path
from segkit.infer.predict.inputs import InputImage, list_inputs
from segkit.infer.predict.writer import PredictFolder
from segkit.infer.scores import eval_transform
from segkit.infer.segment import Job, segment
from segkit.infer.sliding import Windows
from segkit.models.base import SegModel
from segkit.models.build import load_model
from segkit.precision import Precision, default_cache, resolve, step_probe
from segkit.processes import end_processes


@dataclass
class PredictOptions:
    batch_size: int = 4
    """Images (or windows) per forward pass."""
    workers: int = 2
    """DataLoader processes that decode and transform images."""
    alpha: float | None = 0.5
    """Overlay tint strength; None writes no overlays."""
    overwrite: bool = False
    """Predict images that an earlier run finished, too."""
    sliding: Literal["auto", "always", "never"] = "auto"
    """auto: as evaluation does (segkit.infer.sliding.Windows); always / never override it."""
    window: tuple[int, int] | None = None
    """Sliding window (height, width); None takes the model's training crop."""
    overlap: float = 0.25
    flip: bool = False
    """Average with the mirrored image's scores (test-time augmentation)."""
    scales: tuple[float, ...] = (1.0,)
    """Multi-scale test-time augmentation: class probabilities averaged over the image rescaled by
    each (`--tta scales=0.75,1.0,1.25`); per window on sliding images."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 (or fp16) on GPUs; on a CPU with native bf16, bf16 only where it measurably runs
    this model faster (segkit.precision), else fp32, the precision reports are scored in."""
    revision: str | None = None
    runtime: Literal["auto", "torch", "onnx"] = "auto"
    """Which runs an export folder that holds both weights and model.onnx: auto and torch take
    the weights, onnx the graph (onnxruntime). A .onnx file always runs in onnxruntime."""


@dataclass
class PredictResult:
    processed: int
    skipped: int
    failed: int
    output: Path
    left: int = 0
    """Readable inputs without outputs when the run ended (0 unless something went wrong)."""


class _Images(Dataset):
    """Decodes and transforms one input in a worker; large images are only measured there (the
    main process decodes them for sliding windows, so they cross no process boundary)."""

    def __init__(self, items: list[InputImage], transform: EvalTransform, slides: Callable[[int, int], bool],
                 keep_image: bool) -> None:
        self.items, self.transform, self.slides, self.keep_image = items, transform, slides, keep_image

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        try:
            size = image_size(item.path, str(item.rel))
            if self.slides(*size):
                return {"item": item, "large": True, "size": size}
            image = read_image(item.path, str(item.rel))
            return {"item": item, "pixels": self.transform(image), "size": (image.height, image.width),
                    "image": np.asarray(image) if self.keep_image else None}
        except (OSError, ValueError) as e:
            return {"item": item, "error": str(e)}


def _precision(choice: str, model: SegModel, device: torch.device) -> Precision:
    """`--precision` (segkit.precision): `auto` on a CPU with native bf16 times the model's forward
    pass on its training crop in fp32 and bf16 and keeps bf16 only when clearly faster."""
    if isinstance(model, OnnxSegModel):
        if choice not in ("auto", "fp32"):
            raise ValueError(f"--precision {choice}: an ONNX graph runs in the precision it was exported in; "
                             "predict with model.fp16.onnx (`segkit export --format onnx --quantize fp16`) instead.")
        return Precision("no", "fp32 inputs (the ONNX graph's own precision)")
    size = model.input_spec.window or model.input_spec.size or (512, 512)
    probe = step_probe(model, tuple(size), batch=1, backward=False, cache=default_cache())
    return resolve(choice, device.type, probe, field="--precision")


def _windows(model: SegModel, options: PredictOptions) -> Windows:
    """The options' sliding-window policy; `auto` is evaluation's own, so predict reproduces its figures."""
    if options.sliding == "always" and not options.window and model.input_spec.window is None:
        raise ValueError("--sliding always: this model does not record its training crop; give --window HxW.")
    return Windows(options.sliding, options.window, options.overlap, options.batch_size)


@torch.inference_mode()
def predict_folder(model_path: str | Path, inputs: list[str], output: str | Path,
                   options: PredictOptions | None = None) -> PredictResult:
    """Predict every image `inputs` names (files, folders, globs) into `output`."""
    options = options or PredictOptions()
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    graph = onnx_path(model_path, options.runtime)  # MODEL.onnx or --runtime onnx: onnxruntime, same path
    model = OnnxSegModel(graph) if graph else load_model(model_path, revision=options.revision).to(accelerator.device).eval()
    out = PredictFolder(Path(output), model.labels,
                        part=f".{accelerator.process_index}" if accelerator.num_processes > 1 else "")
    items = list_inputs(inputs, Path(output))
    done = set() if options.overwrite else out.done(items, options.alpha is not None)
    remaining = [it for it in items if it.rel not in done]
    todo = remaining[accelerator.process_index:: accelerator.num_processes]
    accelerator.wait_for_everyone()  # every process reads the same folder before any writes to it
    if not options.overwrite:
        if accelerator.is_main_process:
            # after a kill -9: one areas row per finished image, the ones to redo out of failures.csv
            PredictFolder(Path(output), model.labels).reconcile(done, {it.rel for it in remaining})
        accelerator.wait_for_everyone()
    out.start(options.overwrite)
    if options.overwrite and accelerator.num_processes > 1 and accelerator.is_main_process:
        PredictFolder(Path(output), model.labels).start(overwrite=True)  # the shared files the parts join
    windows = _windows(model, options)
    precision = _precision(options.precision, model, accelerator.device)
    autocast = precision.autocast(accelerator.device.type)
    if accelerator.is_main_process and todo:
        print(f"segkit predict: {len(todo)} images on {accelerator.device}, precision {precision.why}", flush=True)
    dataset = _Images(todo, eval_transform(model), partial(windows.applies, model.input_spec),
                      keep_image=options.alpha is not None)
    loader = DataLoader(dataset, batch_size=options.batch_size, num_workers=options.workers, collate_fn=list,
                        worker_init_fn=quiet_worker)
    processed = failed = 0
    bar = tqdm(total=len(todo), desc="predict", unit="img", disable=not accelerator.is_local_main_process)
    with ThreadPoolExecutor(max_workers=1) as writer:  # PNG encoding overlaps the next batch's compute
        pending = []
        for batch in loader:
            ready = []
            for b in batch:
                if b.get("large"):  # decoded here, not in a worker: it would cross processes whole
                    try:
                        b["image"] = read_image(b["item"].path, str(b["item"].rel))
                        b["size"] = (b["image"].height, b["image"].width)  # after EXIF rotation
                    except (OSError, ValueError) as e:
                        b["error"] = str(e)
                elif b.get("image") is not None:
                    b["image"] = Image.fromarray(b["image"])
                if "error" in b:
                    out.fail(b["item"], b["error"])
                    failed += 1
                else:
                    ready.append(b)
            jobs = [Job(b["size"], b.get("pixels"), b["image"]) for b in ready]
            for i, mask in segment(model, jobs, accelerator.device, autocast, options.flip, windows, options.scales):
                b = ready[i]
                pending.append(writer.submit(out.write, b["item"], b["image"], mask.cpu().numpy(), options.alpha))
                processed += 1
            bar.update(len(batch))
            for f in [f for f in pending if f.done()]:
                f.result()  # surfaces a failed write now, not at the end
                pending.remove(f)
        for f in pending:
            f.result()
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        if accelerator.is_main_process:
            _merge_parts(Path(output), model)
        accelerator.wait_for_everyone()  # every process counts what is left from the merged tables
    left = _left(PredictFolder(Path(output), model.labels), items, options.alpha is not None)
    end_processes(accelerator)
    return PredictResult(processed, len(items) - len(remaining), failed, Path(output), left=left)


def _left(out: PredictFolder, items: list[InputImage], overlays: bool) -> int:
    """Readable inputs that still have no outputs: what a non-zero exit status reports. A file in
    failures.csv is unreadable, and predicting it again cannot help."""
    done, broken = out.done(items, overlays), out.failed()
    return sum(1 for it in items if it.rel not in done and str(it.rel) not in broken)


def _merge_parts(root: Path, model: SegModel) -> None:
    """Under several processes each wrote its own CSV files: append them to the shared ones."""
    main = PredictFolder(root, model.labels)
    main.start(overwrite=False)
    for part in sorted(root.glob("areas.*.csv")) + sorted(root.glob("failures.*.csv")):
        target = main.areas if part.name.startswith("areas") else main.failures
        with open(part, newline="") as f:
            rows = list(csv.reader(f))[1:]
        with open(target, "a", newline="") as f:
            csv.writer(f).writerows(rows)
        os.remove(part)
