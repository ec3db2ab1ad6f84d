"""`tune`/`train` options for the debugger, its rules and the profiler, turned into the
training program's hyperparameters (which validate them): the job carries all three
itself, on every backend, so SageMaker's closed Debugger service is never asked for."""

from __future__ import annotations

import argparse

from dogbreed.rule_specs import RULE_NAMES

from launcher.errors import LauncherError


def add_debugging_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "debugging and profiling",
        "Saved with the job's output (output/data/: debug/ trace, rules.json, profiler/, "
        "report.html). Rules: " + ", ".join(RULE_NAMES) + ".")
    group.add_argument("--no-debugger", action="store_true",
                       help="save no tensors (rules still save what they read)")
    group.add_argument("--debugger-collections", metavar="LIST",
                       help="collections to save, e.g. losses,metrics,weights,gradients "
                            "(default losses,metrics)")
    group.add_argument("--debugger-save-interval", type=int, metavar="N",
                       help="save every N training steps (default 10)")
    group.add_argument("--rule", action="append", default=[], metavar="RULE[:ACTION]",
                       help="evaluate a built-in rule during training; ACTION is log "
                            "(default) or stop (ends the job, reason in its failure) "
                            "(repeatable)")
    group.add_argument("--rule-parameter", action="append", default=[],
                       metavar="RULE.PARAM=VALUE",
                       help="override a rule's default, debugger or profiler rule, e.g. "
                            "LossNotDecreasing.num_steps=50 or LowGPUUtilization.patience=100 "
                            "(repeatable)")
    group.add_argument("--no-profiler", action="store_true",
                       help="no system sampling or step timeline")
    group.add_argument("--profiler-window", metavar="START:STEPS",
                       help="torch.profiler trace over STEPS steps from global step START, "
                            "e.g. 5:10 (default: none)")
    group.add_argument("--profiler-interval-ms", type=int, metavar="MS",
                       help="system sampling period (default 500)")


def debugging_settings(args: argparse.Namespace) -> dict[str, str]:
    """The hyperparameters the options ask for (only those given)."""
    settings: dict[str, str] = {}
    if args.no_debugger:
        settings["debugger"] = "off"
    if args.debugger_collections is not None:
        settings["debugger-collections"] = args.debugger_collections
    if args.debugger_save_interval is not None:
        settings["debugger-save-interval"] = str(args.debugger_save_interval)
    if args.rule:
        settings["rules"] = ",".join(args.rule)
    if args.rule_parameter:
        settings["rule-parameters"] = ",".join(args.rule_parameter)
    if args.no_profiler:
        settings["profiler"] = "off"
    if args.profiler_window is not None:
        start, colon, steps = args.profiler_window.partition(":")
        if not (colon and start.strip().isdigit() and steps.strip().isdigit()):
            raise LauncherError(f"--profiler-window {args.profiler_window!r}: use START:STEPS "
                                "with whole numbers, e.g. 5:10")
        settings["profiler-start-step"], settings["profiler-num-steps"] = \
            start.strip(), steps.strip()
    if args.profiler_interval_ms is not None:
        settings["profiler-interval-ms"] = str(args.profiler_interval_ms)
    return settings
