"""The yardstick: what a practitioner runs today, written from the Hugging Face semantic-segmentation
example's recipe (not a copy of it): `transformers.Trainer` on `SegformerForSemanticSegmentation`
with the model's own loss (cross-entropy, 255 ignored), albumentations pad + random crop + flip +
normalise, AdamW with a linear decay, no class weighting, no sampling tricks.

    python bench/baseline_trainer.py --out bench/out/baseline [--epochs 10] [--crop 256] [--batch 8]

Data: CamVid (../shared/data/camvid) reduced to car, pedestrian, bicyclist and sign_symbol; every
other class is background and `unlabelled` is ignored, as in recipes/camvid-4class-segformer.yaml.
Writes the trained model (save_pretrained) and summary.json: wall time of `trainer.train()`, the
steady-state training rate (the first 10% of steps left out) and peak memory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from common import SHARED, parser, peak_rss_mb  # noqa: I001  (bench/ is on the path)
from PIL import Image
from transformers import SegformerConfig, SegformerForSemanticSegmentation, Trainer, TrainerCallback, TrainingArguments

CAMVID = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian",
          "bicyclist", "unlabelled"]
CHOSEN = ["car", "pedestrian", "bicyclist", "sign_symbol"]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # SegformerImageProcessor's defaults
B0 = dict(depths=[2, 2, 2, 2], hidden_sizes=[32, 64, 160, 256], num_attention_heads=[1, 2, 5, 8], decoder_hidden_size=256)


def lookup(chosen: list[str] = CHOSEN) -> np.ndarray:
    """CamVid id -> 0 background, 1..N the chosen classes, 255 ignored."""
    lut = np.zeros(256, dtype=np.uint8)
    for k, name in enumerate(chosen, start=1):
        lut[CAMVID.index(name)] = k
    lut[CAMVID.index("unlabelled")] = 255
    lut[len(CAMVID):] = 255
    return lut


class CamVid(torch.utils.data.Dataset):
    def __init__(self, root: Path, split: str, transform: A.Compose, limit: int | None = None,
                 chosen: list[str] = CHOSEN) -> None:
        self.images = sorted((root / split).glob("*.png"))[:limit]
        self.masks = [root / f"{split}annot" / p.name for p in self.images]
        self.transform, self.lut = transform, lookup(chosen)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = np.asarray(Image.open(self.images[i]).convert("RGB"))
        mask = self.lut[np.asarray(Image.open(self.masks[i]))]
        out = self.transform(image=image, mask=mask)
        return {"pixel_values": out["image"], "labels": out["mask"].long()}


class StepClock(TrainerCallback):
    """Step times; with `max_seconds`, stops training once that much wall time has passed."""

    def __init__(self, max_seconds: float | None = None) -> None:
        self.times: list[float] = []
        self.max_seconds, self.started = max_seconds, time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.times.append(time.perf_counter())
        if self.max_seconds is not None and self.times[-1] - self.started >= self.max_seconds:
            control.should_training_stop = True


def steady_rate(times: list[float], batch: int) -> float:
    """Images per second after the first 10% of steps (worker start-up, allocator warm-up)."""
    start = max(1, len(times) // 10) if len(times) > 3 else 0  # a very short run leaves nothing out
    return batch * (len(times) - 1 - start) / (times[-1] - times[start]) if len(times) > start + 1 else float("nan")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench/out/baseline"))
    p.add_argument("--data", type=Path, default=SHARED / "camvid")
    p.add_argument("--epochs", type=float, default=10)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="fine-tune this model folder the HF example's way: a new head (ignore_mismatched_sizes)")
    p.add_argument("--classes", default=",".join(CHOSEN), help="the chosen CamVid classes, comma-separated")
    p.add_argument("--max-steps", type=int, default=-1, help="the step budget (the schedule's length); -1: epochs")
    p.add_argument("--max-seconds", type=float, default=None, help="stop training after this much wall time")
    args = p.parse_args()
    chosen = args.classes.split(",")
    if args.smoke:
        args.epochs, args.limit, args.crop = 1, 16, 64
    torch.manual_seed(0)
    train = CamVid(args.data, "train", A.Compose([
        A.PadIfNeeded(args.crop, args.crop, border_mode=0, fill=0, fill_mask=255),
        A.RandomCrop(args.crop, args.crop), A.HorizontalFlip(p=0.5),
        A.Normalize(mean=MEAN, std=STD, max_pixel_value=255.0), ToTensorV2()]), args.limit, chosen)
    if args.checkpoint is not None:  # the example's `--model_name_or_path`: the old head is dropped
        names = ["background", *chosen]
        model = SegformerForSemanticSegmentation.from_pretrained(
            args.checkpoint, num_labels=len(names), id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)}, ignore_mismatched_sizes=True, semantic_loss_ignore_index=255)
    else:
        model = SegformerForSemanticSegmentation(SegformerConfig(**B0, num_labels=len(CHOSEN) + 1,
                                                                 semantic_loss_ignore_index=255))
    clock = StepClock(args.max_seconds)
    trainer = Trainer(model=model, train_dataset=train, callbacks=[clock], args=TrainingArguments(
        output_dir=str(args.out / "trainer"), per_device_train_batch_size=args.batch, learning_rate=args.lr,
        num_train_epochs=args.epochs, max_steps=args.max_steps, dataloader_num_workers=args.workers, remove_unused_columns=False,
        save_strategy="no", eval_strategy="no", logging_steps=10, report_to=[], seed=0, use_cpu=not torch.cuda.is_available()))
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    model.save_pretrained(args.out / "model")
    summary = {"wall_s": wall, "steps": len(clock.times), "images_per_s": steady_rate(clock.times, args.batch),
               "peak_rss_mb": peak_rss_mb(), "workers_peak_rss_mb": peak_rss_mb(children=True)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
