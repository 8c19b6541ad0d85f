"""Masks per second for each annotation-export format against reading the same masks as id PNGs.

For each format the tests' fixture writer (tests/test_exports.py) makes an export of N images; the
first `load_source` rasterises it (timed: "first load"), a second one finds the cache ("cached
load"), then every mask is decoded the way training decodes it ("decode"), next to the id PNGs
`segkit convert` writes from the same source ("id PNGs"). The cached decode should match the PNGs:
both read one single-channel PNG per mask (RGB masks pay a colour lookup).

    python bench/bench_decode.py            # the fixtures' 4 images per format, at 512x512
    python bench/bench_decode.py --smoke    # the same at 32x32, a few seconds
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, parser, record, table  # noqa: I001  (bench/ is on the path)


def _decode_all(source) -> float:
    """Seconds to decode every mask of every split, as training reads them."""
    from segkit.data.decode import location, read_label, undecoded

    start = time.perf_counter()
    for split, rows in source.splits.items():
        for i, row in enumerate(undecoded(rows)):
            read_label(row["label"], location(row["label"], split, i), source.palette)
    return time.perf_counter() - start


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="side of the fixture images")
    args = ap.parse_args()
    size = 32 if args.smoke else args.size
    work = Path(tempfile.mkdtemp(prefix="bench-decode-"))
    os.environ["SEGKIT_CACHE"] = str(work / "cache")
    sys.path.insert(0, str(ROOT))
    import tests.test_exports as fx
    from segkit.config.sections import DataConfig
    from segkit.data.convert import convert
    from segkit.data.sources.hub_datasets import load_source

    fx.S = size
    rows = []
    for fmt, (write, extra, _) in sorted(fx.WRITERS.items()):
        folder = work / fmt
        path = write(folder)
        cfg = DataConfig(format=fmt, path=str(path), val_fraction=0, **extra)
        t0 = time.perf_counter()
        source = load_source(cfg)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        source = load_source(cfg)
        cached = time.perf_counter() - t0
        count = sum(len(s) for s in source.splits.values())
        decode = _decode_all(source)
        pngs = convert(cfg, folder / "ids")
        ids = load_source(DataConfig(format="folder", path=str(pngs), val_fraction=0,
                                     class_names=str(pngs / "id2label.json")))
        png = _decode_all(ids)
        row = record(args.jsonl, "decode", smoke=args.smoke, format=fmt, masks=count, size=size,
                     first_load_s=round(first, 4), cached_load_s=round(cached, 4),
                     masks_per_s=round(count / decode, 1), id_png_masks_per_s=round(count / png, 1))
        rows.append([fmt, count, row["first_load_s"], row["cached_load_s"], row["masks_per_s"], row["id_png_masks_per_s"]])
    print(table(["format", "masks", "first load s", "cached load s", "masks/s", "id PNG masks/s"], rows))


if __name__ == "__main__":
    main()
