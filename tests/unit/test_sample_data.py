"""The offline sample data: dogImages' layout and sharp edges, deterministic by seed."""

from __future__ import annotations

import hashlib

import pytest
from PIL import Image

from dogbreed.images import is_readable_image
from dogbreed.sample_data import NOT_AN_IMAGE_FILE, TRUNCATED_FILE, main, write_sample_data
from dogbreed.training.data import label_from_folder


def _digest(root) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_layout_counts_and_broken_files(tmp_path):
    written = write_sample_data(tmp_path, classes=3, images_per_class=20, seed=1)
    assert written == {"train": 48, "valid": 6, "test": 6}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test", "train", "valid"]
    folders = sorted(p.name for p in (tmp_path / "train").iterdir())
    assert folders == ["001.Affenpinscher", "002.Afghan_hound", "003.Airedale_terrier"]
    assert label_from_folder(folders[1]) == "Afghan hound"
    broken = tmp_path / "train" / "001.Affenpinscher"
    assert not is_readable_image(str(broken / TRUNCATED_FILE))
    assert not is_readable_image(str(broken / NOT_AN_IMAGE_FILE))
    sizes = {Image.open(p).size for p in (tmp_path / "train" / folders[2]).glob("*.jpg")}
    assert len(sizes) > 10  # varied sizes and aspect ratios, as scraped photos are


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_sample_data(tmp_path / name, classes=2, images_per_class=5, seed=seed)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_command_line_rejects_an_impossible_class_count(tmp_path, capsys):
    """`python -m dogbreed.sample_data`'s parser, from its main() in process."""
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), "--classes", "500"])
    assert exit_.value.code == 2
    assert "classes must be between 2 and 40, got 500" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
