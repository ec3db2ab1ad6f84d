"""`launcher predict` names each file's Content-Type from its bytes: the formats phones and
browsers write (WebP, HEIC) as well as JPEG and PNG, and refuses anything else up front."""

from __future__ import annotations

import pillow_heif
import pytest
from PIL import Image

from launcher.errors import LauncherError
from launcher.predict import content_type_of

pillow_heif.register_heif_opener()


@pytest.mark.parametrize("image_format, suffix, content_type", [
    ("JPEG", "photo.jpg", "image/jpeg"), ("PNG", "photo.png", "image/png"),
    ("WEBP", "photo.webp", "image/webp"), ("HEIF", "IMG_0001.HEIC", "image/heic"),
    # The name does not decide: a WebP saved as .jpg is sent as what it is.
    ("WEBP", "misnamed.jpg", "image/webp")])
def test_the_content_type_comes_from_the_files_bytes(tmp_path, image_format, suffix,
                                                     content_type):
    path = tmp_path / suffix
    Image.new("RGB", (64, 48), (120, 60, 30)).save(path, format=image_format)
    assert content_type_of(path) == content_type


def test_other_files_are_refused_before_anything_is_sent(tmp_path):
    gif = tmp_path / "anim.gif"
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    with pytest.raises(LauncherError, match="anim.gif is not a JPEG, PNG, WebP or HEIC image"):
        content_type_of(gif)
    large = tmp_path / "large.webp"
    large.write_bytes(b"RIFF\x00\x00\x00\x00WEBP" + b"\x00" * (7 * 2**20))
    with pytest.raises(LauncherError, match="large.webp is 7.0 MiB; an endpoint takes at most"):
        content_type_of(large)
    with pytest.raises(LauncherError, match="image .*missing.heic not found"):
        content_type_of(tmp_path / "missing.heic")
