"""Offline, learnable stand-in for the Udacity dogImages set.

The real set cannot be downloaded on CI machines, so demo and tests train on this one.
It has the same layout (`train/ valid/ test/`, `NNN.Breed_Name/*.jpg`, class index =
folder number - 1) and the same sharp edges (a truncated JPEG, a file that is not an
image). Each class has a visual signature a CNN can learn — a background hue and a stripe
angle of its own — under per-image noise, so accuracy well above chance means the
pipeline learns. Output is deterministic for a given seed.

    python -m dogbreed.sample_data OUT_DIR --classes 5 --images-per-class 30 --seed 0
"""

from __future__ import annotations

import argparse
import colorsys
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

# The first breeds of dogImages, spelled as its folders are.
BREED_FOLDER_NAMES = (
    "Affenpinscher", "Afghan_hound", "Airedale_terrier", "Akita", "Alaskan_malamute",
    "American_eskimo_dog", "American_foxhound", "American_staffordshire_terrier",
    "American_water_spaniel", "Anatolian_shepherd_dog", "Australian_cattle_dog",
    "Australian_shepherd", "Australian_terrier", "Basenji", "Basset_hound", "Beagle",
    "Bearded_collie", "Beauceron", "Bedlington_terrier", "Belgian_malinois",
    "Belgian_sheepdog", "Belgian_tervuren", "Bernese_mountain_dog", "Bichon_frise",
    "Black_and_tan_coonhound", "Black_russian_terrier", "Bloodhound", "Bluetick_coonhound",
    "Border_collie", "Border_terrier", "Borzoi", "Boston_terrier", "Bouvier_des_flandres",
    "Boxer", "Boykin_spaniel", "Briard", "Brittany", "Brussels_griffon", "Bull_terrier",
    "Bulldog",
)

# Share of images per class in each split, roughly the real set's 80/10/10.
SPLIT_FRACTIONS = {"train": 0.8, "valid": 0.1, "test": 0.1}
TRUNCATED_FILE = "truncated_0000.jpg"
NOT_AN_IMAGE_FILE = "not_an_image_0000.jpg"


def class_folder(index: int) -> str:
    """Folder name of class `index` (0-based), e.g. `001.Affenpinscher`."""
    return f"{index + 1:03d}.{BREED_FOLDER_NAMES[index]}"


def split_counts(images_per_class: int) -> dict[str, int]:
    """How many images of one class go to each split; every split gets at least one."""
    valid = max(1, round(images_per_class * SPLIT_FRACTIONS["valid"]))
    test = max(1, round(images_per_class * SPLIT_FRACTIONS["test"]))
    train = images_per_class - valid - test
    if train < 1:
        raise ValueError(f"images-per-class must be at least 3, got {images_per_class}")
    return {"train": train, "valid": valid, "test": test}


def draw_image(class_index: int, num_classes: int, rng: random.Random) -> Image.Image:
    """One image of a class: its hue and stripe angle, random size, distractors and noise."""
    width, height = rng.randint(160, 420), rng.randint(160, 420)
    hue = (class_index / num_classes + rng.uniform(-0.02, 0.02)) % 1.0
    background = _rgb(hue, rng.uniform(0.55, 0.8), rng.uniform(0.55, 0.8))
    stripes = _rgb((hue + 0.5) % 1.0, rng.uniform(0.5, 0.9), rng.uniform(0.2, 0.45))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)

    angle = math.pi * class_index / num_classes + rng.uniform(-0.08, 0.08)
    spacing = rng.uniform(14, 22)
    reach = width + height
    dx, dy = math.cos(angle), math.sin(angle)
    offset = -reach
    while offset < reach:
        cx, cy = width / 2 - dy * offset, height / 2 + dx * offset
        draw.line([(cx - dx * reach, cy - dy * reach), (cx + dx * reach, cy + dy * reach)],
                  fill=stripes, width=max(2, int(spacing / 3)))
        offset += spacing

    for _ in range(rng.randint(1, 4)):  # distractors: blobs of any colour, like a dog or a sofa
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(10, width / 4), rng.uniform(10, height / 4)
        colour = _rgb(rng.random(), rng.uniform(0, 0.6), rng.uniform(0.2, 0.9))
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=colour)

    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))


def write_sample_data(out_dir: str | Path, classes: int = 5, images_per_class: int = 30,
                      seed: int = 0, quality: int = 90) -> dict[str, int]:
    """Write the tree and return the number of valid images per split."""
    if not 2 <= classes <= len(BREED_FOLDER_NAMES):
        raise ValueError(f"classes must be between 2 and {len(BREED_FOLDER_NAMES)}, got {classes}")
    counts = split_counts(images_per_class)
    out = Path(out_dir)
    rng = random.Random(seed)
    written = {split: 0 for split in counts}
    for class_index in range(classes):
        folder = class_folder(class_index)
        for split, count in counts.items():
            class_dir = out / split / folder
            class_dir.mkdir(parents=True, exist_ok=True)
            for number in range(count):
                image = draw_image(class_index, classes, rng)
                image.save(class_dir / f"{BREED_FOLDER_NAMES[class_index]}_{number + 1:05d}.jpg",
                           quality=quality)
                written[split] += 1
    _write_broken_files(out / "train" / class_folder(0), classes, rng)
    return written


def _write_broken_files(class_dir: Path, classes: int, rng: random.Random) -> None:
    """The real set has a truncated JPEG; scraped sets also carry HTML saved as .jpg."""
    whole = class_dir / "whole.tmp.jpg"
    draw_image(0, classes, rng).save(whole, quality=90)
    data = whole.read_bytes()
    whole.unlink()
    (class_dir / TRUNCATED_FILE).write_bytes(data[: len(data) // 2])
    (class_dir / NOT_AN_IMAGE_FILE).write_text("<html><body>404 Not Found</body></html>\n")


def _rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return int(r * 255), int(g * 255), int(b * 255)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreed.sample_data",
        description="Write a small dogImages-shaped data set that a CNN can learn, offline.")
    parser.add_argument("out_dir", help="folder to create train/, valid/ and test/ in")
    parser.add_argument("--classes", type=int, default=5,
                        help=f"number of breeds, 2..{len(BREED_FOLDER_NAMES)} (default 5)")
    parser.add_argument("--images-per-class", type=int, default=30,
                        help="images per breed over all splits, split 80/10/10 (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    args = parser.parse_args(argv)
    try:
        written = write_sample_data(args.out_dir, args.classes, args.images_per_class, args.seed)
    except ValueError as error:
        parser.error(str(error))
    summary = ", ".join(f"{split}={count}" for split, count in written.items())
    print(f"wrote {args.classes} classes to {args.out_dir}: {summary} images "
          f"(+2 broken files in train/{class_folder(0)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
