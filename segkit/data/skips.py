"""Training samples that fail to decode or to map mid-run: skipped, listed, and limited.

`segkit inspect` audits a split before training, but a streamed split cannot be read up front, and
a run hours long should not die on one broken file. A training item that raises `DataError` comes
out of the dataset as `{"skipped": reason, "index": i}`; `train_collate` leaves it out of the batch
and hands the reason on; the loop writes it to RUN/skipped.csv (one row per skip, flushed) and
stops once skips pass `data.max_skipped`. Under several processes each meets its own share; they
are gathered at each evaluation and checkpoint, listed by the main process, and checked against
the limit there by all at once (segkit.train.faults.sync_skips).

Decoding is deterministic, so a resumed run meets the same broken samples at the same places: the
rows written after the checkpoint it resumes from are dropped first, and read again.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from segkit.data.errors import DataError
from segkit.run_folder import write_text

SKIPPED_FILE = "skipped.csv"
SHARE_BASE = 1000
"""`data.max_skipped` as a share counts against at least this many samples, so that the first
broken file of a run does not count as 100% of it."""
HEADER = ["step", "epoch", "index", "reason"]


class SkipLog:
    """RUN/skipped.csv and the limit on it."""

    def __init__(self, root: Path, max_skipped: float) -> None:
        self.path = Path(root) / SKIPPED_FILE
        self.max_skipped = max_skipped
        self.held: list[tuple[int, int, int, str]] = []
        self.held_images = 0

    def resume(self, step: int) -> None:
        """Keep the rows up to `step` (the checkpoint's); later ones will be met again."""
        if not self.path.is_file():
            return
        with open(self.path, newline="") as f:
            rows = [r for r in csv.reader(f)][1:]
        kept = [r for r in rows if len(r) == len(HEADER) and r[0].isdigit() and int(r[0]) <= step]
        buffer = io.StringIO()
        csv.writer(buffer).writerows([HEADER, *kept])
        write_text(self.path, buffer.getvalue())

    def add(self, step: int, epoch: int, index: int, reason: str) -> None:
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(HEADER)
            w.writerow([step, epoch, index, reason])
            f.flush()

    def hold(self, rows: list[tuple[int, int, int, str]], images: int) -> None:
        """One of several processes: keep its (step, epoch, index, reason) rows and its count of
        images read until `release` (segkit.train.faults.sync_skips gathers them)."""
        self.held.extend(rows)
        self.held_images += images

    def release(self) -> tuple[list[tuple[int, int, int, str]], int]:
        held = (self.held, self.held_images)
        self.held, self.held_images = [], 0
        return held

    def limit(self, read: int) -> float:
        if self.max_skipped >= 1:
            return self.max_skipped
        return self.max_skipped * max(read, SHARE_BASE)

    def check(self, skipped: int, read: int) -> None:
        """Raise once skips pass `data.max_skipped`, with the first reasons."""
        if skipped <= self.limit(read):
            return
        reasons = []
        if self.path.is_file():  # on another node of a run without a shared disk, the list is not here
            with open(self.path, newline="") as f:
                reasons = [r["reason"] for r in csv.DictReader(f)][:5]
        what = (f"{int(self.max_skipped)}" if self.max_skipped >= 1
                else f"{100 * self.max_skipped:g}% of the {max(read, SHARE_BASE)} samples")
        listed = "".join(f"\n  - {r}" for r in reasons)
        raise DataError(f"data.max_skipped: {skipped} training samples could not be read, more than {what}. "
                        f"All are listed in {self.path}; the first:{listed}\nFix or remove those files (or "
                        f"raise data.max_skipped), then continue with --resume.")
