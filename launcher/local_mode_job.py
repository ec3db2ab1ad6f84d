"""One SageMaker local-mode training job as its own process (the `local` backend's job).

The tuner runs each local-mode trial through this module so that it can read the job's
output line by line and stop it early, as it does a `process` job: SIGTERM here stops the
job's containers with `docker stop` (the training program checkpoints and exits 143).

    python -m launcher.local_mode_job CONFIG JOB_NAME HYPERPARAMETERS_JSON DATA_DIR OUTPUT_DIR
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from launcher.config import load_config
from launcher.jobs import data_channels
from launcher.sagemaker_sdk import fit_local


def containers_with(image: str, variable: str, every: bool = False) -> list[str]:
    """Containers of `image` whose environment has `variable` (NAME=value); running ones,
    or all of them with `every`."""
    ids = subprocess.run(["docker", "ps", "-q", *(["-a"] if every else []), "--filter",
                          f"ancestor={image}"], capture_output=True, text=True).stdout.split()
    found = []
    for container in ids:
        env = subprocess.run(["docker", "inspect", "--format", "{{range .Config.Env}}"
                              "{{println .}}{{end}}", container],
                             capture_output=True, text=True).stdout.splitlines()
        if variable in env:
            found.append(container)
    return found


def remove_containers(image: str, variable: str) -> None:
    """Local mode never removes its containers; this does, once they are done with."""
    leftovers = containers_with(image, variable, every=True)
    if leftovers:
        subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)


def main(argv: list[str]) -> int:
    config_path, name, hyperparameters_file, data_dir, output_dir = argv
    config = load_config(config_path)
    image = config.image("train", local=True)

    def stop(signum, frame):
        containers = containers_with(image, f"TRAINING_JOB_NAME={name}")
        print(f"stopping local-mode job {name} ({len(containers)} container(s))", flush=True)
        if containers:
            subprocess.run(["docker", "stop", "--time", "60", *containers], capture_output=True)

    signal.signal(signal.SIGTERM, stop)
    hyperparameters = json.loads(Path(hyperparameters_file).read_text())
    try:
        fit_local(config, Path(config.workdir), name, hyperparameters,
                  data_channels(data_dir), Path(output_dir))
    except Exception as error:  # the SDK's error for a failed job: its reason is in the log
        print(f"local-mode job {name} failed: {error}", flush=True)
        return 1
    finally:
        remove_containers(image, f"TRAINING_JOB_NAME={name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
