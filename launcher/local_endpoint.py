"""Holds one SageMaker local-mode endpoint until SIGTERM (the `local` backend's endpoint).

Local mode keeps an endpoint alive only while the Python process that deployed it runs, so
`deploy --backend local` starts this module in the background; `cleanup` sends it SIGTERM,
and it deletes the model and endpoint the SDK's way (which stops the container).

    python -m launcher.local_endpoint CONFIG NAME MODEL_DATA PORT WORKDIR READY_FILE
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from launcher.config import load_config
from launcher.local_mode_job import remove_containers
from launcher.sagemaker_sdk import ENDPOINT_VARIABLE, deploy_endpoint, local_session


def main(argv: list[str]) -> int:
    config_path, name, model_data, port, workdir, ready_file = argv
    config = load_config(config_path)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    session = local_session(Path(workdir), serving_port=int(port))
    predictor = None
    try:
        predictor = deploy_endpoint(config, session, model_data, name, local=True)
        print(f"local-mode endpoint {name} is in service on port {port}", flush=True)
        Path(ready_file).touch()
        while not stop.wait(1):
            pass
    finally:
        print(f"deleting local-mode endpoint {name}", flush=True)
        try:
            if predictor is not None:
                predictor.delete_model()  # needs the endpoint config: before the endpoint
                predictor.delete_endpoint()
        finally:
            # Also after a failed deploy: its container would keep the port.
            remove_containers(config.image("serve", local=True), f"{ENDPOINT_VARIABLE}={name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
