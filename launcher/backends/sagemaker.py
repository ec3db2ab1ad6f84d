"""The `sagemaker` backend: training jobs, tuning jobs and endpoints in the AWS account,
through the SageMaker SDK (`launcher.sagemaker_sdk`) on our images in ECR."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from launcher import jobs
from launcher.backends.base import Backend, Invoker, again
from launcher.config import Config
from launcher.errors import LauncherError
from launcher.state import remember_endpoint, update_state


class SageMakerBackend(Backend):
    name = "sagemaker"
    remote = True

    def tuning_name(self) -> str:
        # Unique per account and at most 32 characters.
        return f"dogbreed-tune-{time.strftime('%m%d-%H%M%S')}-{secrets.token_hex(2)}"

    def tune(self, args, config: Config, workdir: Path, name: str, study_dir: Path,
             static: dict[str, str]):
        from launcher import sagemaker_sdk
        session = sagemaker_sdk.sagemaker_session(config, workdir)
        if not args.attach:
            sagemaker_sdk.start_tuning(config, session, name, static)
            print(f"started tuning job {name}")
            update_state(workdir, last_tuning={"backend": self.name, "name": name})
        if args.no_wait:
            print("not waiting (--no-wait); see it in the SageMaker console, and run `tune "
                  f"--backend sagemaker --name {name} --attach` for its results")
            return None
        described = sagemaker_sdk.wait_for_tuning(session, name)
        rows = sagemaker_sdk.tuning_training_jobs(session, name)
        best_job = described.get("BestTrainingJob")
        if not best_job:
            raise LauncherError(f"tuning job {name} ended "
                                f"{described['HyperParameterTuningJobStatus']} with no "
                                "completed training job: "
                                f"{described.get('FailureReason', 'see the jobs above')}")
        tuned = best_job.get("TunedHyperParameters", {})
        best = {"job": best_job["TrainingJobName"], "status": "Completed",
                "hyperparameters": dict(static, **{k: v.strip('"') for k, v in tuned.items()}),
                "objective": best_job.get("FinalHyperParameterTuningJobObjectiveMetric", {})
                .get("Value"), "seconds": None, "epochs": None, "failure": None}
        return rows or [best], best

    def train(self, args, config: Config, workdir: Path, name: str,
              hyperparameters: dict[str, str]) -> str | None:
        from launcher import sagemaker_sdk
        session = sagemaker_sdk.sagemaker_session(config, workdir)
        sagemaker_sdk.start_training(config, session, name, hyperparameters)
        update_state(workdir, last_training={"backend": self.name, "job": name,
                                             "artifact": None})
        if args.no_wait:
            print("not waiting (--no-wait)")
            return None
        described = sagemaker_sdk.wait_for_training(session, name)
        if described["TrainingJobStatus"] != "Completed":
            raise LauncherError(f"training job {name} {described['TrainingJobStatus'].lower()}"
                                f": {described.get('FailureReason', 'no reason given')}")
        return described["ModelArtifacts"]["S3ModelArtifacts"]

    def deploy(self, args, config: Config, workdir: Path, name: str, artifact: str,
               record: dict[str, Any]) -> str:
        from launcher import sagemaker_sdk
        if not artifact.startswith("s3://"):
            raise LauncherError(f"the sagemaker backend deploys a model.tar.gz in S3, not "
                                f"{artifact}")
        session = sagemaker_sdk.sagemaker_session(config, workdir)
        # Recorded first: if a later create fails, cleanup still deletes what was made.
        record.update(model_name=name, endpoint_config=name)
        remember_endpoint(workdir, name, record)
        sagemaker_sdk.deploy_endpoint(config, session, artifact, name, wait=False)
        described = sagemaker_sdk.wait_for_endpoint(session, name)
        if described["EndpointStatus"] != "InService":
            raise LauncherError(f"endpoint {name} is {described['EndpointStatus']}: "
                                f"{described.get('FailureReason', 'no reason given')}")
        return (f"endpoint {name} is in service\n"
                f"next: python -m launcher predict{again(args)} IMAGE...")

    def invoker(self, config: Config, name: str, record: dict[str, Any]) -> Invoker:
        from launcher import sagemaker_sdk

        def invoke(body: bytes, content_type: str, top_k: int):
            return sagemaker_sdk.invoke_endpoint(config, name, body, content_type, top_k)
        return invoke

    def transform(self, args, config: Config, workdir: Path, artifact: str, plan, top_k: int):
        """A Batch Transform job over the plan's files in S3 (`launcher.s3_transform`):
        answers earlier jobs left are fetched, the rest uploaded once and listed in the
        job's manifest; the answers come back into the output folder. A job an earlier run
        stopped waiting for is waited for again, not started twice; once it has ended, its
        model is deleted."""
        from launcher import s3_sync, s3_transform, sagemaker_sdk
        from launcher.transform import finish_job_answers
        if not artifact.startswith("s3://"):
            raise LauncherError(f"a transform job on the sagemaker backend reads a model.tar.gz "
                                f"in S3, not {artifact}: pass --model s3://...")
        most = sagemaker_sdk.TRANSFORM_MAX_CONCURRENCY
        if args.concurrency and args.concurrency > most:
            raise LauncherError(f"--concurrency {args.concurrency}: a transform job takes at "
                                f"most {most} requests in flight per instance (AWS: "
                                "MaxConcurrentTransforms x MaxPayloadInMB <= 100, at "
                                f"{sagemaker_sdk.TRANSFORM_MAX_PAYLOAD_MB} MB each)")
        session = sagemaker_sdk.sagemaker_session(config, workdir)
        s3 = s3_sync.client(session.boto_session)
        base = s3_transform.base_uri(config.s3_prefix(), plan)
        name = s3_transform.recorded_job(plan.output_dir)
        described = sagemaker_sdk.describe_transform(session, name) if name else None
        if described and described["TransformJobStatus"] in ("InProgress", "Stopping"):
            print(f"transform job {name} (started by an earlier run) is still running: "
                  "waiting for it")
            to_score, fetched = list(plan.pending), {}
        else:
            if name:  # it ended while no run waited for it: its answers are in output/
                sagemaker_sdk.delete_model(session, name)
                s3_transform.record_job(plan.output_dir, None)
            name = jobs.job_name("dogbreed-transform")
            prepared = s3_transform.prepare(plan, base, s3, name)
            to_score, fetched = prepared.to_score, prepared.fetched
            if fetched:
                print(f"{len(fetched)} answer(s) fetched from an earlier job in "
                      f"{prepared.output}")
            if not to_score:
                return finish_job_answers(plan, fetched, None, top_k)
            if sagemaker_sdk.is_gpu_instance(config.serving.instance_type):
                print("note: a transform job takes no InferenceAmiVersion: on a GPU instance "
                      "the image's CUDA compatibility libraries must bridge the default "
                      "driver (serve stops with the reason if the GPU is unusable)")
            s3_transform.record_job(plan.output_dir, name)  # before it exists: never lost
            try:
                sagemaker_sdk.start_transform_job(config, session, artifact, name,
                                                  prepared.manifest, prepared.output, top_k,
                                                  args.concurrency)
            except Exception:  # AWS refused the job: its model would be left behind
                s3_transform.record_job(plan.output_dir, None)
                sagemaker_sdk.delete_model(session, name, quiet=True)
                raise
            print(f"started transform job {name}: {len(to_score)} image(s) on "
                  f"{config.serving.instance_count} x {config.serving.instance_type}")
        try:
            described = sagemaker_sdk.wait_for_transform(session, name)
            answers = {**fetched, **s3_transform.fetch_answers(plan, base, s3, to_score)}
        except KeyboardInterrupt:
            raise LauncherError(f"stopped waiting; transform job {name} goes on in SageMaker: "
                                "run the same command again to wait for it and fetch its "
                                "answers") from None
        sagemaker_sdk.delete_model(session, name)
        s3_transform.record_job(plan.output_dir, None)
        status = described["TransformJobStatus"]
        reason = described.get("FailureReason")
        missing = (f"transform job {name} {status.lower()} without an answer for it"
                   f"{': ' + reason if reason else ''}")
        return finish_job_answers(plan, answers, missing, top_k)

    def remove_endpoint(self, config: Config, name: str, record: dict[str, Any]) -> str:
        from launcher import sagemaker_sdk
        deleted = sagemaker_sdk.delete_endpoint(config, name, record.get("model_name"))
        return f"deleted {', '.join(deleted) or 'nothing (already gone)'}"

    def job_sources(self, config: Config, workdir: Path,
                    job: str) -> tuple[str | None, str | None]:
        """From DescribeTrainingJob: model.tar.gz, and output.tar.gz beside it (JOB/output/)."""
        from launcher import sagemaker_sdk
        session = sagemaker_sdk.sagemaker_session(config, workdir)
        described = session.sagemaker_client.describe_training_job(TrainingJobName=job)
        artifact = described.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        if artifact and artifact.endswith("/model.tar.gz"):
            output = artifact.removesuffix("model.tar.gz") + "output.tar.gz"
        else:
            output = (f"{described['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job}/"
                      "output/output.tar.gz")
        return artifact, output
