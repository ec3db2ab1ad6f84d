"""The verbs every backend provides, and what the commands expect of each.

Failures are `LauncherError`s whose message says what to do; a verb that waits may be
interrupted with Ctrl-C, which it turns into a LauncherError that says how to go on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # `--help` imports the registry: nothing heavy here
    from launcher.config import Config
    from launcher.transform import Plan as TransformPlan
    from launcher.transform import TransformResult

# predict's transport: (body, content type, top k) -> (status, answer)
Invoker = Callable[[bytes, str, int], Any]


def again(args) -> str:
    """The options to repeat in a suggested next command (same config, same workdir)."""
    return "".join(f" --{key} {value}" for key, value in
                   (("config", args.config), ("workdir", args.workdir)) if value)


def effective_config_file(config: Config, workdir: Path) -> Path:
    """The config as one file that child processes (trials, endpoints) load the same way."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "effective-config.yaml"
    path.write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
    return path


class Backend:
    name: str
    # Jobs, models and endpoints live in an AWS account rather than on this machine: a
    # model trained on one side cannot be deployed on the other.
    remote: bool = False

    def tuning_name(self) -> str:
        """The tuning job's name when the user gives none."""
        raise NotImplementedError

    def tune(self, args, config: Config, workdir: Path, name: str, study_dir: Path,
             static: dict[str, str]) -> tuple[list[dict], dict | None] | None:
        """Run (or attach to) the tuning job: its rows and its best row (None when no job
        completed); None when the user asked not to wait."""
        raise NotImplementedError

    def train(self, args, config: Config, workdir: Path, name: str,
              hyperparameters: dict[str, str]) -> str | None:
        """Run one training job to its end: where its model is; None when the user asked
        not to wait. A failed job is a LauncherError with its reason."""
        raise NotImplementedError

    def deploy(self, args, config: Config, workdir: Path, name: str, artifact: str,
               record: dict[str, Any]) -> str:
        """Start the endpoint and wait until it answers, recording it in the state
        (`state.remember_endpoint`) before anything exists that cleanup would have to
        remove; `record` gains what predict and cleanup need. Returns what to tell the
        user (how to call it)."""
        raise NotImplementedError

    def invoker(self, config: Config, name: str, record: dict[str, Any]) -> Invoker:
        raise NotImplementedError

    def transform(self, args, config: Config, workdir: Path, artifact: str,
                  plan: TransformPlan, top_k: int) -> TransformResult:
        """Score the plan's pending files with the model `artifact` in a transform of this
        backend's own (a server, a local-mode or a SageMaker transform job); the answers
        land in `plan.output_dir` (`transform.keep_answer`), with the CSV."""
        raise NotImplementedError

    def remove_endpoint(self, config: Config, name: str, record: dict[str, Any]) -> str:
        """Stop and delete the endpoint; what was done, for the user."""
        raise NotImplementedError

    def job_sources(self, config: Config, workdir: Path,
                    job: str) -> tuple[str | None, str | None]:
        """(model, output data) of a finished or failed job, as paths or S3 URIs."""
        raise NotImplementedError
