"""`python -m launcher <command>`: the arguments of every command, and error reporting.

Imports nothing heavy: `--help` answers at once, and torch is never imported here (the
`sagemaker` backend must work on a laptop without it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launcher.backends import NAMES as BACKENDS
from launcher.debugging import add_debugging_options

BACKEND_HELP = ("where it runs: process (local processes, no Docker or AWS; default), local "
                "(our images under SageMaker local mode; needs Docker), sagemaker (AWS)")

DESCRIPTION = """Drive the dog-breed project end to end on one of three backends.

  data      download, unzip, validate (and upload) the images; --synthetic for sample data
  tune      hyperparameter tuning: SageMaker's tuner, or Optuna on the local backends
  train     one training job, with given or the tuner's best hyperparameters
  deploy    an endpoint on the serving image (or a local serve process)
  predict   top-k breeds for image files, from the deployed endpoint
  transform score a whole folder of photos (Batch Transform): JSON per image + CSV
  evaluate  how good the model is on a labelled split: metrics page, consistency check
  report    a training job's report (HTML with plots)
  cleanup   stop/delete what deploy created

Settings come from a config file (TOML or YAML; --config, default ./launcher.toml if
present); see config/demo.toml and config/sagemaker.example.toml."""


def add_scoring_options(command: argparse.ArgumentParser) -> None:
    """What `transform` and `evaluate` score with, and how many requests at once."""
    command.add_argument("--model", help="a model/ folder or model.tar.gz; default: the last "
                         "model `train` made")
    command.add_argument("--endpoint", help="score through this deployed endpoint instead "
                         "of a transform of --model")
    command.add_argument("--concurrency", type=int, choices=range(1, 257), metavar="N",
                         help="requests in flight, 1..256 (default: what the server's "
                         "/execution-parameters says; 4 through --endpoint)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m launcher", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, backend: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", help="config file (.toml, .yaml); default ./launcher.toml "
                         "if present, else built-in defaults")
        sub.add_argument("--workdir", help="where jobs, endpoints and state live (default: the "
                         "config's workdir, `runs`)")
        if backend:
            sub.add_argument("--backend", choices=BACKENDS, default="process", help=BACKEND_HELP)
        return sub

    data = command("data", "Get the dog images: download, unzip, validate, optionally upload "
                   "to S3; or write synthetic sample data.", backend=False)
    data.add_argument("--dest", help="folder for the images (default: data.local_dir)")
    data.add_argument("--synthetic", action="store_true",
                      help="write generated sample data instead (offline, seconds)")
    data.add_argument("--classes", type=int, default=5, help="--synthetic: breeds (2..40)")
    data.add_argument("--images-per-class", type=int, default=30,
                      help="--synthetic: images per breed over all splits")
    data.add_argument("--seed", type=int, default=0, help="--synthetic: same seed, same files")
    data.add_argument("--url", help="download from here instead of data.url (no size check)")
    data.add_argument("--zip", help="use this dogImages.zip instead of downloading")
    data.add_argument("--upload", action="store_true",
                      help="upload the splits to S3 (data.s3_uri, else s3://BUCKET/PREFIX/data)")
    data.add_argument("--delete", action="store_true",
                      help="--upload: also remove objects under the data URI that have no "
                      "local file (without it they are listed, and channels still read them)")

    tune = command("tune", "Tune hyperparameters: ranges, objective, strategy and early "
                   "stopping from the config, overridable here.")
    tune.add_argument("--name", help="tuning job / study name (local default: dogbreed-tune; "
                      "the same name resumes an interrupted local study)")
    tune.add_argument("--data", help="data folder for the local backends (default: "
                      "data.local_dir)")
    tune.add_argument("--objective", help="metric to optimise, e.g. valid_accuracy, valid_loss")
    tune.add_argument("--direction", choices=("Maximize", "Minimize"))
    tune.add_argument("--strategy", choices=("Bayesian", "Random", "Grid", "Hyperband"))
    tune.add_argument("--early-stopping", choices=("Auto", "Off"))
    tune.add_argument("--max-jobs", type=int)
    tune.add_argument("--max-parallel-jobs", type=int)
    tune.add_argument("--range", action="append", default=[], metavar="NAME=SPEC",
                      help="add or replace a range: NAME=continuous:MIN:MAX[:SCALING], "
                      "NAME=integer:MIN:MAX[:SCALING], NAME=categorical:A,B,...; SCALING is "
                      "Auto, Linear, Logarithmic or ReverseLogarithmic (repeatable)")
    tune.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                      help="a static hyperparameter for every job (repeatable)")
    tune.add_argument("--seed", type=int, help="local: the sampler's seed (the same "
                      "hyperparameters in the same order; Bayesian also depends on which "
                      "parallel job finishes first)")
    tune.add_argument("--fresh", action="store_true",
                      help="local: start the study over instead of resuming it")
    tune.add_argument("--no-wait", action="store_true", help="sagemaker: start and return")
    tune.add_argument("--attach", action="store_true", help="sagemaker: do not start a job; "
                      "wait for the one named --name and show its results")
    add_debugging_options(tune)

    train = command("train", "Run one training job and print where its model is (pass a "
                    "tuner's best.json as --hyperparameters to train with what it found).")
    train.add_argument("--hyperparameters", metavar="FILE", help="JSON: a tuner's best.json or "
                       "a plain object of hyperparameters (over the config's)")
    train.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="a hyperparameter, over the file and config (repeatable)")
    train.add_argument("--name", help="job name (default: dogbreed-DATE-TIME-XXXX); an "
                       "interrupted process job resumes under the same name")
    train.add_argument("--data", help="data folder for the local backends (default: "
                       "data.local_dir)")
    train.add_argument("--no-wait", action="store_true", help="sagemaker: start and return")
    add_debugging_options(train)

    deploy = command("deploy", "Deploy a model on the serving image and print how to reach it.")
    deploy.add_argument("--model", help="a model/ folder or model.tar.gz (s3:// for "
                        "sagemaker); default: the last model `train` made")
    deploy.add_argument("--name", help="endpoint name (default: dogbreed-BACKEND)")
    deploy.add_argument("--port", type=int, help="local backends: port (default: a free one)")

    predict = command("predict", "Send images to the deployed endpoint and print the top-k "
                      "breeds for each.", backend=False)
    predict.add_argument("images", nargs="+", metavar="IMAGE",
                         help="JPEG, PNG, WebP or HEIC files")
    predict.add_argument("--endpoint", help="endpoint name (default: the last deployed)")
    predict.add_argument("--top-k", type=int, choices=range(1, 134), metavar="K",
                         help="breeds per image, 1..133 (default: serving.top_k, 5)")
    predict.add_argument("--json", metavar="FILE", help="also write the answers as JSON")

    transform = command("transform", "Score every image of a folder, as SageMaker Batch "
                        "Transform does: INPUT/x.jpg -> OUTPUT/x.jpg.out (JSON), plus "
                        "OUTPUT/predictions.csv. process: the serving program on this "
                        "machine; local: a local-mode transform job on the serving image; "
                        "sagemaker: a transform job (images uploaded once to S3). A second "
                        "run sends only the files without an answer.")
    transform.add_argument("input", metavar="INPUT", help="folder of images (sub-folders too)")
    transform.add_argument("--output", help="answers folder (default: WORKDIR/transform/NAME)")
    add_scoring_options(transform)
    transform.add_argument("--top-k", type=int, choices=range(1, 134), metavar="K",
                           help="breeds per image, 1..133 (default: serving.top_k, 5)")

    evaluate = command("evaluate", "Score a labelled split (its folder names are the truth) "
                       "and write a page: top-1/top-5 accuracy, macro F1, per-breed precision "
                       "and recall, confusions, calibration, the worst mistakes; the accuracy "
                       "is compared with the training job's own test_accuracy.")
    evaluate.add_argument("--split", default="test", help="train, valid or test (default: test)")
    evaluate.add_argument("--data", help="folder with the splits (default: data.local_dir)")
    add_scoring_options(evaluate)
    evaluate.add_argument("--out", help="folder for evaluation.html, evaluation.json and the "
                          "answers (default: WORKDIR/evaluations/MODEL-SPLIT); a second run "
                          "sends only the photos without an answer")

    report = command("report", "Build a training job's report (HTML with plots).")
    report.add_argument("--job", help="job name (default: the last `train` job)")
    report.add_argument("--model", help="its model/ folder or model.tar.gz (local or s3://)")
    report.add_argument("--output", help="its output data: the job's folder, output/data, or "
                        "output.tar.gz (local or s3://); with --job or after `train` it is "
                        "found by itself")
    report.add_argument("--out", help="HTML file (default: WORKDIR/reports/JOB.html)")

    cleanup = command("cleanup", "Stop and delete the endpoints that deploy created (SageMaker:"
                      " endpoint, endpoint config and model).", backend=False)
    cleanup.add_argument("--endpoint", action="append", help="only this one (repeatable; "
                         "default: all of them)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from launcher import commands
    from launcher.config import load_config
    from launcher.errors import LauncherError
    try:
        config = load_config(args.config)
        workdir = Path(args.workdir or config.workdir)
        if workdir.exists() and not workdir.is_dir():
            raise LauncherError(f"the workdir {workdir} is a file, not a folder")
        if args.workdir:
            config = config.model_copy(update={"workdir": args.workdir})
        return getattr(commands, args.command)(args, config, workdir)
    except LauncherError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        # AWS said no (a name taken, a missing permission, a quota): its message is the
        # answer; a traceback through the SDK would only hide it.
        if not type(error).__module__.startswith(("botocore", "boto3")):
            raise
        print(f"error: AWS refused: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
