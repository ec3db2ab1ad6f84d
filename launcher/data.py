"""`launcher data`: get the dog-breed images, check them, and put them where jobs read them.

Download `dogImages.zip` (resuming a partial download, checking the size and, when
configured, the SHA-256), unzip it (refusing members that escape the folder or expand
like a zip bomb), validate the three splits (images per split and class, classes that
agree, unreadable files listed); uploading to S3 is `launcher.s3_sync`. `--synthetic`
writes the small generated sample set instead, which is what runs offline.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from launcher.errors import LauncherError

SPLITS = ("train", "valid", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
CHUNK = 1 << 16  # what a broken-off download can lose at most
# Zip bombs: a member over MAX_RATIO_FROM bytes may expand at most MAX_RATIO times. JPEGs
# barely compress (about 1:1); text files stay far below 100:1 and small ones are exempt.
MAX_RATIO = 100
MAX_RATIO_FROM = 1 << 20


def download(url: str, target: Path, expected_size: int | None,
             sha256: str | None = None) -> Path:
    """Fetch url to target; a `.part` file from an interrupted run is continued (HTTP Range).

    With sha256, the finished file (also one already here) must have that digest: the size
    alone does not catch a corrupted or substituted archive."""
    import requests
    if target.is_file() and (expected_size is None or target.stat().st_size == expected_size):
        print(f"{target} is already here ({target.stat().st_size:,} bytes)")
        return check_sha256(target, sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    have = partial.stat().st_size if partial.is_file() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = requests.get(url, headers=headers, stream=True, timeout=60)
    except requests.RequestException as error:
        raise LauncherError(f"cannot download {url}: {error}") from None
    with response:
        if response.status_code == 416 and expected_size == have:
            partial.replace(target)
            return target
        if response.status_code not in (200, 206):
            raise LauncherError(f"cannot download {url}: HTTP {response.status_code}")
        if response.status_code == 200 and have:
            print("the server does not resume downloads: starting over")
            have = 0
        total = expected_size or (have + int(response.headers.get("Content-Length", 0))) or None
        mode = "ab" if response.status_code == 206 else "wb"
        with open(partial, mode) as out, tqdm(total=total, initial=have, unit="B",
                                               unit_scale=True, desc=target.name) as bar:
            try:
                for chunk in response.iter_content(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            except requests.RequestException as error:
                raise LauncherError(f"the download broke off ({error}); run the same command "
                                    f"again to continue from {partial.stat().st_size:,} "
                                    "bytes") from None
    size = partial.stat().st_size
    if expected_size is not None and size != expected_size:
        raise LauncherError(f"downloaded {size:,} bytes but expected {expected_size:,}: run "
                            f"again to continue, or delete {partial} to start over")
    partial.replace(target)
    return check_sha256(target, sha256)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as opened:
        return hashlib.file_digest(opened, "sha256").hexdigest()


def check_sha256(path: Path, expected: str | None) -> Path:
    """path when its digest is `expected` (or none is expected); otherwise the file is
    moved aside to `NAME.bad-sha256` (kept for inspection, never deleted) and refused."""
    if expected is None:
        return path
    actual = file_sha256(path)
    if actual == expected.lower():
        return path
    aside = path.with_name(path.name + ".bad-sha256")
    path.replace(aside)
    raise LauncherError(f"{path.name} has SHA-256 {actual}, but data.sha256 is "
                        f"{expected.lower()}: refused and moved to {aside}; run again to "
                        "download it afresh")


def refuse_unsafe_members(archive: Path, members: list[zipfile.ZipInfo]) -> None:
    """Before anything is extracted: no member may land outside the target folder (an
    absolute path, a drive, `..`) or expand like a zip bomb. zipfile itself enforces the
    declared sizes (it stops at file_size and checks the CRC), so checking them is enough."""
    for member in members:
        name = member.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts:
            raise LauncherError(f"{archive} is refused: member {name!r} would be written "
                                "outside the target folder")
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > MAX_RATIO_FROM and ratio > MAX_RATIO:
            raise LauncherError(f"{archive} is refused: member {name!r} expands "
                                f"{member.compress_size:,} bytes to {member.file_size:,} "
                                f"({ratio:,.0f}:1, more than {MAX_RATIO}:1), like a zip bomb")


def unzip(archive: Path, into: Path) -> Path:
    """Extract the data folder of the archive (the one holding train/) into `into`.

    Unpacked beside the target first and renamed when complete, so an interrupted unzip
    never leaves a half-filled data folder that looks finished. Every member is checked
    first (`refuse_unsafe_members`), so a bad one means nothing is extracted; macOS
    resource forks are skipped.
    """
    try:
        with zipfile.ZipFile(archive) as opened:
            refuse_unsafe_members(archive, opened.infolist())
            members = [m for m in opened.infolist() if not m.is_dir()
                       and not m.filename.startswith("__MACOSX/")]
            roots = {m.filename.split("/")[0] for m in members
                     if m.filename.split("/")[1:2] == ["train"]}
            top_level = any(m.filename.startswith("train/") for m in members)
            if len(roots) + top_level != 1:
                raise LauncherError(f"{archive} does not hold one folder with train/valid/test")
            root = "" if top_level else roots.pop()
            final = into / (root or archive.stem)
            if final.exists():
                raise LauncherError(f"{final} exists already: remove it to unzip again, or "
                                    "pass it as --dest to use it")
            staging = into / f".{final.name}.unzipping"
            shutil.rmtree(staging, ignore_errors=True)
            chosen = [m for m in members if not root or m.filename.startswith(root + "/")]
            for member in tqdm(chosen, desc=f"unzipping {archive.name}", unit="file"):
                opened.extract(member, staging)
    except zipfile.BadZipFile as error:
        raise LauncherError(f"{archive} is not a valid zip file ({error}): delete it and "
                            "download again") from None
    (staging / root if root else staging).rename(final)
    shutil.rmtree(staging, ignore_errors=True)
    return final


def validate(root: Path) -> dict[str, Any]:
    """Images per split and class, unreadable files, and classes that disagree across splits."""
    from dogbreed.images import is_readable_image
    report: dict[str, Any] = {"root": str(root), "splits": {}, "problems": [], "unreadable": []}
    classes_by_split = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            if split != "test":
                report["problems"].append(f"no {split} folder under {root}")
            continue
        classes = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
        files = [path for name in classes for path in sorted((folder / name).iterdir())
                 if path.is_file()]
        with ThreadPoolExecutor() as pool:
            readable = list(tqdm(pool.map(lambda p: p.suffix.lower() in IMAGE_SUFFIXES and
                                          is_readable_image(str(p)), files),
                                 total=len(files), desc=f"checking {split}", unit="image"))
        bad = [str(path.relative_to(root)) for path, ok in zip(files, readable) if not ok]
        per_class = {name: 0 for name in classes}
        for path, ok in zip(files, readable):
            per_class[path.parent.name] += ok
        empty = [name for name, count in per_class.items() if count == 0]
        if empty:
            report["problems"].append(f"{split}: no readable image in {', '.join(empty[:5])}"
                                      f"{' ...' if len(empty) > 5 else ''}")
        classes_by_split[split] = set(classes)
        report["unreadable"] += bad
        report["splits"][split] = {"classes": len(classes), "images": sum(per_class.values()),
                                   "unreadable": len(bad), "per_class": per_class}
    train = classes_by_split.get("train", set())
    for split in ("valid", "test"):
        extra = classes_by_split.get(split, set()) - train
        if extra:
            report["problems"].append(f"{split} has classes that train lacks: "
                                      f"{', '.join(sorted(extra)[:5])}")
    return report


def validation_summary(report: dict[str, Any]) -> str:
    lines = [f"{'split':<6} {'classes':>7} {'images':>7} {'unreadable':>10}  per class "
             "(min / median / max)"]
    for split, facts in report["splits"].items():
        counts = sorted(facts["per_class"].values())
        spread = (f"{counts[0]} / {counts[len(counts) // 2]} / {counts[-1]}" if counts else "-")
        lines.append(f"{split:<6} {facts['classes']:>7} {facts['images']:>7} "
                     f"{facts['unreadable']:>10}  {spread}")
    if report["unreadable"]:
        lines.append("unreadable (training skips them):")
        lines += [f"  {path}" for path in report["unreadable"][:20]]
        if len(report["unreadable"]) > 20:
            lines.append(f"  ... and {len(report['unreadable']) - 20} more (see validation.json)")
    lines += [f"PROBLEM: {problem}" for problem in report["problems"]]
    return "\n".join(lines)


def write_validation(report: dict[str, Any], root: Path) -> Path:
    path = root / "validation.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
