"""One SageMaker local-mode transform job as its own process (the `local` backend's
transform), so that its container's output goes to a log file while the launcher shows a
progress bar, and SIGTERM (Ctrl-C in the launcher) removes the container.

    python -m launcher.local_transform CONFIG NAME MODEL_TARBALL INPUT_DIR OUTPUT_DIR SCRATCH TOP_K
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

from launcher.config import load_config
from launcher.local_mode_job import remove_containers
from launcher.sagemaker_sdk import ENDPOINT_VARIABLE, transform_locally


def main(argv: list[str]) -> int:
    config_path, name, tarball, input_dir, output_dir, scratch, top_k = argv
    config = load_config(config_path)

    def stop(signum, frame):
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, stop)
    # "RootlessDocker not detected" once per request says nothing here
    logging.getLogger("sagemaker.local.utils").setLevel(logging.ERROR)
    try:
        transform_locally(config, Path(scratch), name, Path(tarball), Path(input_dir),
                          Path(output_dir), int(top_k))
    except Exception as error:
        print(f"ERROR the local-mode transform job failed: {error}", flush=True)
        return 1
    finally:
        # Local mode stops its container only when the job finished; never leave one.
        remove_containers(config.image("serve", local=True), f"{ENDPOINT_VARIABLE}={name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
