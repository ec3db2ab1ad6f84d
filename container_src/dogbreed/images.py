"""Decoding images the same way in training and serving (no torch here: the serving front
process imports this and must stay small)."""

from __future__ import annotations

from PIL import Image, ImageOps


def open_rgb(source, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode fully, apply EXIF rotation, convert palette/gray/CMYK/alpha to RGB.
    `draft_size`: a JPEG may decode at 1/2, 1/4 or 1/8 scale (DCT scaling), never below
    that size; faster, but not the pixels of a full decode."""
    image = Image.open(source)
    if draft_size is not None:
        image.draft("RGB", draft_size)
    image.load()
    image = ImageOps.exif_transpose(image)
    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image.convert("RGBA"), mask=image.convert("RGBA").split()[-1])
            image = background
        else:
            image = image.convert("RGB")
    return image


def is_readable_image(path: str) -> bool:
    """True when the whole file decodes; JPEGs decode at 1/8 scale, which is fast."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))
            image.load()
        return True
    except Exception:  # PIL raises many types for broken files; all mean "skip it"
        return False
