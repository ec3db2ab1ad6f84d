"""`make push`: publish the training and serving images to Amazon ECR.

Creates the ECR repositories when missing, logs Docker in with an ECR authorization token
(what `aws ecr get-login-password | docker login` does, through boto3, so no AWS CLI is
needed), tags `dogbreed-{train,serve}:TAG` with their full ECR URIs and pushes them, then
writes the pushed URIs to build/images.json, where the launcher reads them.

The region is the launcher config's `[aws] region` (jobs run there, and SageMaker pulls
images only from its own region), else the standard AWS configuration; `--region`
overrides both. The account comes from the credentials (`--account` checks it).
Everything that can be checked is checked before anything is pushed: a running Docker
engine, the local images, AWS credentials. After the push, the manifest's media type is
checked: SageMaker refuses OCI manifests and indexes (what BuildKit's attestations and the
containerd image store produce), so only Docker's v2 manifest passes.

    python -m launcher.ecr_push [--tag TAG] [--region REGION] [--account ID] [--config FILE]
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

IMAGES = {"train": "dogbreed-train", "serve": "dogbreed-serve"}
IMAGES_FILE = Path("build/images.json")
DOCKER_V2_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


class PushError(RuntimeError):
    """Something to fix before images can be pushed; the message says what."""


def check_docker(tag: str) -> None:
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True)
    except FileNotFoundError:
        raise PushError("no docker command: install Docker first") from None
    if info.returncode != 0:
        raise PushError("the Docker engine is not running (start dockerd, or run make build "
                        "first, which starts it)")
    for name in IMAGES.values():
        found = subprocess.run(["docker", "image", "inspect", f"{name}:{tag}"],
                               capture_output=True)
        if found.returncode != 0:
            raise PushError(f"image {name}:{tag} not found: run `make build` first")


def aws_session(region: str | None):
    import boto3
    import botocore.exceptions
    session = boto3.session.Session(region_name=region)
    if session.get_credentials() is None:
        raise PushError("no AWS credentials: configure a profile (aws configure), or set "
                        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
    if not session.region_name:
        raise PushError("no AWS region: set AWS_DEFAULT_REGION or pass --region")
    try:
        session.client("sts").get_caller_identity()
    except botocore.exceptions.BotoCoreError as error:
        raise PushError(f"AWS credentials do not work: {error}") from None
    except botocore.exceptions.ClientError as error:
        raise PushError(f"AWS credentials do not work: {error}") from None
    return session


def ensure_repository(ecr, name: str) -> str:
    """The repository's URI, creating the repository (scan on push) when missing."""
    try:
        return ecr.describe_repositories(repositoryNames=[name])["repositories"][0]["repositoryUri"]
    except ecr.exceptions.RepositoryNotFoundException:
        created = ecr.create_repository(repositoryName=name,
                                        imageScanningConfiguration={"scanOnPush": True})
        print(f"created ECR repository {name}")
        return created["repository"]["repositoryUri"]


def docker_login(ecr) -> None:
    token = ecr.get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)
    login = subprocess.run(["docker", "login", "--username", user, "--password-stdin",
                            token["proxyEndpoint"]], input=password, capture_output=True,
                           text=True)
    if login.returncode != 0:
        raise PushError(f"docker login to {token['proxyEndpoint']} failed: "
                        f"{login.stderr.strip()}")


def push(tag: str, region: str | None, account: str | None) -> dict[str, str]:
    check_docker(tag)
    session = aws_session(region)
    ecr = session.client("ecr")
    pushed = {}
    uris = {role: ensure_repository(ecr, name) for role, name in IMAGES.items()}
    if account and not all(uri.startswith(f"{account}.") for uri in uris.values()):
        raise PushError(f"the credentials belong to another account than {account}")
    docker_login(ecr)
    for role, name in IMAGES.items():
        for remote_tag in (tag, "latest"):
            remote = f"{uris[role]}:{remote_tag}"
            subprocess.run(["docker", "tag", f"{name}:{tag}", remote], check=True)
            print(f"pushing {remote}", flush=True)
            if subprocess.run(["docker", "push", remote]).returncode != 0:
                raise PushError(f"docker push {remote} failed (see above)")
        check_manifest_media_type(ecr, name, tag)
        pushed[role] = f"{uris[role]}:{tag}"
    return pushed


def check_manifest_media_type(ecr, repository: str, tag: str) -> None:
    """SageMaker's CreateTrainingJob and CreateModel accept Docker v2 manifests only
    ("Unsupported manifest media type application/vnd.oci.image.index.v1+json")."""
    details = ecr.describe_images(repositoryName=repository,
                                  imageIds=[{"imageTag": tag}])["imageDetails"][0]
    media_type = details.get("imageManifestMediaType", DOCKER_V2_MANIFEST)
    if media_type != DOCKER_V2_MANIFEST:
        raise PushError(
            f"ECR holds {repository}:{tag} as {media_type}, which SageMaker refuses (it takes "
            f"{DOCKER_V2_MANIFEST} only). Rebuild with `make build` (it passes BuildKit "
            "--provenance=false --sbom=false --output type=docker,oci-mediatypes=false), or "
            "turn off Docker's containerd image store, then `make push` again")


def push_region(region: str | None, config_file: str | None) -> str | None:
    """--region, else the launcher config's aws.region (where the jobs run), else None
    (the AWS configuration's default)."""
    if region:
        return region
    path = Path(config_file or "launcher.toml")
    if config_file is None and not path.is_file():
        return None
    from launcher.config import load_config
    from launcher.errors import LauncherError
    try:
        return load_config(path).aws.region
    except LauncherError as error:
        raise PushError(str(error)) from None


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    except FileNotFoundError:
        return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.ecr_push", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", default=None, help="local image tag (default: the git commit)")
    parser.add_argument("--region", default=None,
                        help="AWS region (default: aws.region of --config, else AWS config)")
    parser.add_argument("--account", default=None, help="expected AWS account id (checked)")
    parser.add_argument("--config", default=None,
                        help="launcher config whose aws.region the jobs use (default: "
                             "launcher.toml when present)")
    args = parser.parse_args(argv)
    tag = args.tag or _git_commit() or "latest"
    try:
        pushed = push(tag, push_region(args.region, args.config), args.account)
    except PushError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    IMAGES_FILE.parent.mkdir(parents=True, exist_ok=True)
    IMAGES_FILE.write_text(json.dumps(
        {**pushed, "pushed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        indent=2) + "\n")
    print(f"pushed; image URIs written to {IMAGES_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
