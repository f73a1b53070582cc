"""Regenerate the sample photographs shipped in this folder (run once by a maintainer, not at run time).

Source: scikit-image's bundled data (`pip install scikit-image` in a throwaway venv), whose README lists
these as public domain (NASA: astronaut, rocket) or CC0 (chelsea, coffee). Each is stored as a JPEG with its
longer side at most 640 px, which is what the YOLO-style recipes letterbox to.

    python models/samples/make_samples.py /path/to/site-packages/skimage/data
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
MAX_SIDE = 640


def main(skimage_data: Path) -> None:
    here = Path(__file__).parent
    for name in PHOTOS:
        image = Image.open(skimage_data / name).convert("RGB")
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        image.save(here / (Path(name).stem + ".jpg"), quality=88, optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
