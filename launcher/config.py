"""The launcher's one configuration file (TOML or YAML), validated on load.

Every section has defaults that run the `process` backend offline, so a missing file is
fine there; the `sagemaker` backend additionally needs a role, a bucket and the pushed
image URIs (from `make push`'s build/images.json unless given). Unknown keys and bad
values are refused with the dotted key that is wrong, before anything is started.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator,
                      model_validator)

from dogbreed.hyperparameters import HyperparameterError, parse_hyperparameters
from dogbreed.metrics import METRIC_DEFINITIONS
from launcher.errors import LauncherError
from launcher.ranges import HyperparameterRange

DEFAULT_CONFIG = Path("launcher.toml")
IMAGES_FILE = Path("build/images.json")
METRIC_NAMES = tuple(definition["Name"] for definition in METRIC_DEFINITIONS)
STRATEGIES = ("Bayesian", "Random", "Grid", "Hyperband")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AwsSection(_Section):
    region: str | None = None
    role_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")
    bucket: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = "dogbreed"


class ImagesSection(_Section):
    """Image URIs; empty means build/images.json (sagemaker) or the local build (local)."""
    train: str | None = None
    serve: str | None = None


class DataSection(_Section):
    local_dir: str = "data/dogImages"
    s3_uri: str | None = Field(None, pattern=r"^s3://.+")
    url: str = "https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip"
    size_bytes: int = Field(1_132_023_110, gt=0)
    # SHA-256 of the archive, checked after the download when set (64 hex digits).
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")


# Each form: (pattern, what a value must be: said when it is not).
SUBNET_ID = (re.compile(r"subnet-[0-9a-f]{8,17}"), "a subnet id (subnet- and 8 to 17 hex digits)")
SECURITY_GROUP_ID = (re.compile(r"sg-[0-9a-f]{8,17}"),
                     "a security group id (sg- and 8 to 17 hex digits)")
_KMS_KEY_ID = r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})"
_KMS_ALIAS = r"alias/[A-Za-z0-9/_-]{1,250}"
_KMS_ARN = r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:"
# The forms SageMaker documents for each KMS field: a training volume key (ResourceConfig)
# by key id or key ARN only; the output key and the endpoint's key also by alias.
KMS_KEY = (re.compile(rf"{_KMS_KEY_ID}|{_KMS_ARN}key/{_KMS_KEY_ID}"),
           "a KMS key id or key ARN (SageMaker takes no alias here)")
KMS_KEY_OR_ALIAS = (re.compile(rf"{KMS_KEY[0].pattern}|{_KMS_ALIAS}|{_KMS_ARN}{_KMS_ALIAS}"),
                    "a KMS key id, key ARN, alias/NAME or alias ARN")


def has_local_storage(instance_type: str) -> bool:
    """Instance types whose storage is local NVMe, encrypted by the instance itself:
    SageMaker refuses a volume KMS key for them (CreateTrainingJob, CreateEndpointConfig).
    The SDK's own rule (sagemaker.utils.volume_size_supported): a "d" in the family
    (ml.g4dn, ml.p4d, ml.m5d), or g5, g6, p5, trn1 and their variants."""
    family = instance_type.removeprefix("ml.").split(".")[0]
    return "d" in family or family.startswith(("g5", "g6", "p5", "trn1"))


def _refuse_unless(form: tuple[re.Pattern, str], values: list[str | None]) -> None:
    pattern, what = form
    bad = [value for value in values if value is not None and not pattern.fullmatch(value)]
    if bad:
        raise ValueError(f"{', '.join(map(repr, bad))} is not {what}")


class _LockedDownSection(_Section):
    """What security teams require of SageMaker jobs and endpoints. The `sagemaker` backend
    only: local mode runs on the user's own Docker, with no VPC, KMS or isolation to set."""
    VOLUME_KEY_FORM: ClassVar[tuple[re.Pattern, str]] = KMS_KEY

    instance_type: str
    # The images need no network at run time (weights baked in, no pip, no downloads), so
    # by default the containers get none: no outbound calls, no AWS credentials.
    network_isolation: StrictBool = True  # true or false: no "yes" to misread
    # A VPC to run in: both or neither; SageMaker takes at most 16 subnets and 5 groups.
    subnets: list[str] = Field(default_factory=list, max_length=16)
    security_group_ids: list[str] = Field(default_factory=list, max_length=5)
    # Encrypts the instances' storage volume (not for instance types with local NVMe).
    volume_kms_key: str | None = None

    @field_validator("subnets")
    @classmethod
    def _subnet_ids(cls, values: list[str]) -> list[str]:
        _refuse_unless(SUBNET_ID, values)
        return values

    @field_validator("security_group_ids")
    @classmethod
    def _security_group_ids(cls, values: list[str]) -> list[str]:
        _refuse_unless(SECURITY_GROUP_ID, values)
        return values

    @field_validator("volume_kms_key")
    @classmethod
    def _volume_key(cls, value: str | None) -> str | None:
        _refuse_unless(cls.VOLUME_KEY_FORM, [value])
        return value

    @model_validator(mode="after")
    def _vpc_and_volume_fit(self):
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError("subnets and security_group_ids make one VPC config: set both "
                             "(at least one of each) or neither")
        if self.volume_kms_key and has_local_storage(self.instance_type):
            raise ValueError(f"volume_kms_key cannot be used with {self.instance_type}: its "
                             "local NVMe storage is encrypted by the instance and SageMaker "
                             "refuses a KMS key for it; leave volume_kms_key out or pick an "
                             "instance type with EBS storage")
        return self

    @property
    def vpc_config(self) -> dict[str, list[str]] | None:
        """As CreateTrainingJob and CreateModel take it (None: no VPC)."""
        if not self.subnets:
            return None
        return {"Subnets": list(self.subnets), "SecurityGroupIds": list(self.security_group_ids)}


class TrainingSection(_LockedDownSection):
    instance_type: str = "ml.g5.xlarge"
    instance_count: int = Field(1, ge=1, le=64)
    volume_size_gb: int = Field(50, ge=1, le=16384)
    max_run_seconds: int = Field(86_400, ge=60)
    spot: bool = False
    max_wait_seconds: int | None = Field(None, ge=60)
    checkpoint_s3_uri: str | None = Field(None, pattern=r"^s3://.+")
    # Encrypts the model and output SageMaker writes to S3; key id, key ARN, alias or alias
    # ARN.
    output_kms_key: str | None = None
    # Encrypts the traffic between the hosts of a multi-host job (instance_count > 1);
    # off by default, as on SageMaker: it slows distributed training down.
    encrypt_inter_container_traffic: StrictBool = False
    hyperparameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("output_kms_key")
    @classmethod
    def _output_key(cls, value: str | None) -> str | None:
        _refuse_unless(KMS_KEY_OR_ALIAS, [value])
        return value

    @field_validator("hyperparameters")
    @classmethod
    def _known_hyperparameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            parse_hyperparameters({key: str(item) for key, item in value.items()})
        except HyperparameterError as error:
            raise ValueError(str(error)) from None
        return value

    @model_validator(mode="after")
    def _spot_wait(self) -> "TrainingSection":
        if self.spot and self.max_wait_seconds is not None and \
                self.max_wait_seconds < self.max_run_seconds:
            raise ValueError("max_wait_seconds must be at least max_run_seconds for spot "
                             "training")
        return self


class TuningSection(_Section):
    objective: str = "valid_accuracy"
    # Left out: Minimize for a loss, Maximize for anything else.
    direction: Literal["Maximize", "Minimize"]
    strategy: Literal[STRATEGIES] = "Bayesian"  # type: ignore[valid-type]
    early_stopping: Literal["Auto", "Off"] = "Off"
    max_jobs: int = Field(8, ge=1, le=750)
    max_parallel_jobs: int = Field(2, ge=1, le=100)
    hyperband_min_resource: int | None = Field(None, ge=1)
    hyperband_max_resource: int | None = Field(None, ge=1)
    ranges: dict[str, HyperparameterRange] = Field(default_factory=lambda: {
        "lr": HyperparameterRange(type="continuous", min=1e-4, max=1e-2,
                                  scaling="Logarithmic"),
        "batch-size": HyperparameterRange(type="categorical", values=[16, 32, 64])})

    @model_validator(mode="before")
    @classmethod
    def _direction_from_objective(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("direction") is None:
            objective = str(values.get("objective", "valid_accuracy"))
            values = dict(values, direction="Minimize" if objective.endswith("_loss")
                          else "Maximize")
        return values

    @field_validator("objective")
    @classmethod
    def _objective_is_logged(cls, value: str) -> str:
        if value not in METRIC_NAMES or value == "epoch":
            raise ValueError(f"{value!r} is not a metric the training job logs; one of "
                             f"{', '.join(name for name in METRIC_NAMES if name != 'epoch')}")
        return value

    @field_validator("ranges")
    @classmethod
    def _ranges_are_hyperparameters(cls, ranges: dict[str, HyperparameterRange]):
        if not ranges:
            raise ValueError("at least one range is needed to tune")
        for name, spec in ranges.items():
            for value in spec.candidates():
                try:
                    parse_hyperparameters({name: str(value)})
                except HyperparameterError as error:
                    raise ValueError(f"{name}: {error}") from None
        return ranges

    @model_validator(mode="after")
    def _strategy_fits(self) -> "TuningSection":
        if self.strategy == "Grid":
            # As on SageMaker, so a grid that runs locally also runs there.
            other = [name for name, spec in self.ranges.items() if spec.type != "categorical"]
            if other:
                raise ValueError(f"the Grid strategy takes categorical ranges only; "
                                 f"{', '.join(other)} is not")
        if self.strategy == "Hyperband" and self.early_stopping == "Auto":
            raise ValueError("Hyperband stops jobs itself: set early_stopping = \"Off\"")
        if self.strategy != "Grid" and self.max_parallel_jobs > self.max_jobs:
            raise ValueError(f"max_parallel_jobs ({self.max_parallel_jobs}) is more than "
                             f"max_jobs ({self.max_jobs})")
        low, high = self.hyperband_min_resource, self.hyperband_max_resource
        if low is not None and high is not None and low > high:
            raise ValueError("hyperband_min_resource is more than hyperband_max_resource")
        return self

    def with_overrides(self, **overrides: Any) -> "TuningSection":
        """A copy with command-line values (None = keep), validated like the file."""
        values = self.model_dump()
        values["ranges"] = dict(self.ranges)
        if overrides.get("objective") and not overrides.get("direction"):
            values.pop("direction")  # follows the new objective
        values.update({key: value for key, value in overrides.items() if value is not None})
        try:
            return TuningSection.model_validate(values)
        except ValidationError as error:
            raise LauncherError(_describe(error, "with the command-line options",
                                          prefix="tuning.")) from None


# The first SageMaker inference AMI whose NVIDIA driver (580) runs the images' CUDA 13
# wheels; GPU endpoints default to older drivers (470 to 550).
CUDA13_INFERENCE_AMI = "al2023-ami-sagemaker-inference-gpu-4-1"


class ServingSection(_LockedDownSection):
    """The endpoint: network_isolation and the VPC go to CreateModel, volume_kms_key to
    CreateEndpointConfig (whose KmsKeyId also takes an alias)."""
    VOLUME_KEY_FORM: ClassVar[tuple[re.Pattern, str]] = KMS_KEY_OR_ALIAS

    instance_type: str = "ml.m5.xlarge"
    instance_count: int = Field(1, ge=1, le=100)
    workers: int | None = Field(None, ge=1, le=64)
    top_k: int = Field(5, ge=1, le=133)
    # auto: CUDA13_INFERENCE_AMI on GPU instance types (ml.g*, ml.p*); none: SageMaker's
    # default; or an AMI version name as CreateEndpointConfig takes it.
    inference_ami_version: str = Field("auto", pattern=r"^(auto|none|[a-z0-9][a-z0-9-]+)$")

    @property
    def ami_version(self) -> str | None:
        """What CreateEndpointConfig gets as InferenceAmiVersion (None: not sent)."""
        if self.inference_ami_version == "none":
            return None
        if self.inference_ami_version == "auto":
            return CUDA13_INFERENCE_AMI if re.match(r"^ml\.[gp]\d", self.instance_type) \
                else None
        return self.inference_ami_version


class Config(_Section):
    workdir: str = "runs"
    aws: AwsSection = AwsSection()
    images: ImagesSection = ImagesSection()
    data: DataSection = DataSection()
    training: TrainingSection = TrainingSection()
    tuning: TuningSection = TuningSection()
    serving: ServingSection = ServingSection()
    source: str = Field("(built-in defaults)", exclude=True)

    @property
    def metric_definitions(self) -> list[dict[str, str]]:
        """Built from the training program's log names; never written by hand."""
        return [dict(definition) for definition in METRIC_DEFINITIONS]

    def image(self, kind: Literal["train", "serve"], local: bool = False) -> str:
        """The image URI: the config, else what `make build` made (`local`: SageMaker
        local mode runs the image built here) or what `make push` pushed."""
        configured = getattr(self.images, kind)
        if configured:
            return configured
        if local:
            return f"dogbreed-{kind}:latest"
        if IMAGES_FILE.is_file():
            try:
                pushed = json.loads(IMAGES_FILE.read_text()).get(kind)
            except (ValueError, AttributeError):
                raise LauncherError(f"{IMAGES_FILE} is damaged: run `make push` again, or "
                                    f"set images.{kind} in {self.source}") from None
            if pushed:
                return pushed
        raise LauncherError(f"no {kind} image URI: run `make build push` (which writes "
                            f"{IMAGES_FILE}) or set images.{kind} in {self.source}")

    def s3_prefix(self) -> str:
        if not self.aws.bucket:
            raise LauncherError(f"aws.bucket is not set in {self.source}: the sagemaker "
                                "backend keeps data, checkpoints and models there")
        return f"s3://{self.aws.bucket}/{self.aws.prefix.strip('/')}"


def load_config(path: str | Path | None) -> Config:
    """Read and validate; `None` reads ./launcher.toml if present, else the defaults."""
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            return Config()
        path = DEFAULT_CONFIG
    path = Path(path)
    if not path.is_file():
        raise LauncherError(f"config file {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise LauncherError(f"config file {path} is not UTF-8 text ({error})") from None
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            raw = yaml.safe_load(text) or {}
        else:
            raise LauncherError(f"config file {path}: use .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise LauncherError(f"config file {path} is not valid {path.suffix[1:].upper()}: "
                            f"{error}") from None
    if not isinstance(raw, dict):
        raise LauncherError(f"config file {path}: the top level must be a table of sections")
    try:
        return Config.model_validate(dict(raw, source=str(path)))
    except ValidationError as error:
        raise LauncherError(_describe(error, str(path))) from None


def _describe(error: ValidationError, where: str, prefix: str = "") -> str:
    lines = []
    for problem in error.errors():
        key = prefix + ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {key}: {message}")
    return f"the config {where} is not valid:\n" + "\n".join(lines)
