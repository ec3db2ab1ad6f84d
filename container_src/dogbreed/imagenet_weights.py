"""Put torchvision's ImageNet ResNet50 weights into the torch cache at image build time.

Training jobs run under network isolation, so `pretrained=imagenet` reads only this cache
(`dogbreed.model.imagenet_weights_path()`).

    python -m dogbreed.imagenet_weights download          # fetch (needs the internet)
    python -m dogbreed.imagenet_weights copy WEIGHTS_DIR  # the .pth file found there
    python -m dogbreed.imagenet_weights skip              # none: pretrained=none or a path
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from dogbreed.model import IMAGENET_WEIGHTS, imagenet_weights_path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    mode = args[0] if args else ""
    target = imagenet_weights_path()
    if mode == "skip":
        print(f"ImageNet weights skipped: {target} stays empty; jobs need pretrained=none or "
              "a path to a state_dict")
        return 0
    if mode == "download":
        IMAGENET_WEIGHTS.get_state_dict(progress=False, check_hash=True)
    elif mode == "copy" and len(args) == 2:
        files = sorted(Path(args[1]).glob("*.pth"))
        if len(files) != 1:
            print(f"error: expected one .pth file in {args[1]}, found {len(files)}",
                  file=sys.stderr)
            return 1
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files[0], target)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    state = torch.load(target, map_location="cpu", weights_only=True)
    if state.get("fc.weight") is None or tuple(state["fc.weight"].shape) != (1000, 2048):
        print(f"error: {target} is not an ImageNet ResNet50 state_dict", file=sys.stderr)
        return 1
    print(f"ImageNet weights in {target} ({target.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
