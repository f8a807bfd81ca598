"""``eval``: the paper's benchmarks and fine-tune checks."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable

from ..config import CREATE, SEARCH, WRITE, EncoderConfig, from_namespace
from .arguments import add_arguments
from .common import (
    EXIT_ERROR,
    EXIT_OK,
)
from .remote import EndpointConfig, encoder_from

__all__ = ["add_eval"]


_EVAL_DESCRIPTION = """\
Measure quality through the same encoder ingestion uses, print a table and (with --report FILE) write the same
numbers as JSON together with everything that changes them: model, revision, adapter, dtype, device, prompts,
transformers/torch versions, image-token counts, data file hashes, counts, timings, and warnings for settings that
explain a gap to the paper (non-default prompts or dtype, unpinned revision, subsets, truncation).
"""


def add_eval(sub) -> Callable:
    p = sub.add_parser(
        "eval",
        help="evaluate retrieval / composed retrieval / image-to-image / STS / triplets and write a diagnosable report",
        description=_EVAL_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = p.add_subparsers(dest="eval_task", metavar="TASK")
    from ..config import EvalConfig, StoreConfig
    from ..evaluate import TASKS

    for task in TASKS.values():
        tp = tasks.add_parser(task.name, help=task.help, description=task.description)
        for spec in task.inputs:
            tp.add_argument(
                f"--{spec.name.replace('_', '-')}",
                required=spec.required,
                default=spec.default,
                choices=spec.choices,
                help=spec.help,
            )
        add_arguments(tp, EvalConfig, exclude=() if task.via_qdrant else ("via_qdrant",), group="evaluation")
        add_arguments(tp, EncoderConfig, group="model")
        add_arguments(tp, EndpointConfig, group="remote encoder")
        if task.via_qdrant:
            store_group = "qdrant (used with --via-qdrant)"
            add_arguments(tp, StoreConfig, exclude=("qdrant_path",), group=store_group, scopes=(CREATE, WRITE, SEARCH))
    return _run_eval


def _run_eval(args) -> int:
    import time

    from ..config import EvalConfig, StoreConfig
    from ..evaluate import TASKS

    task = TASKS.get(getattr(args, "eval_task", None) or "")
    if not task:
        print(f"e5v-qdrant eval: choose a task: {', '.join(TASKS)} (see `e5v-qdrant eval --help`)", file=sys.stderr)
        return EXIT_ERROR
    options = from_namespace(EvalConfig, args)
    store = from_namespace(StoreConfig, args) if options.via_qdrant else None
    limited = options.limit is not None
    # Read and check the data before loading the model: a typo in a path must not cost a 16 GB load.
    inputs = {
        stage: {s.name: getattr(args, s.name) for s in task.inputs if s.stage in (stage, "both")}
        for stage in ("read", "evaluate")
    }
    data = task.read(limit=options.limit, **inputs["read"])
    config = from_namespace(EncoderConfig, args)
    preset = task.prompts(inputs["read"]) if task.prompts else None
    if preset and config.prompts == EncoderConfig.__dataclass_fields__["prompts"].default:
        config = dataclasses.replace(config, prompts=preset)  # the task's own prompts unless --prompts was given
    start = time.perf_counter()
    encoder = encoder_from(args, config)
    load_s = time.perf_counter() - start
    common = {"show_progress": options.progress, "limited": limited}
    qdrant = {"via_qdrant": options.via_qdrant, "store": store} if task.via_qdrant else {}
    report = task.evaluate(encoder, data, **common, **qdrant, **inputs["evaluate"])
    report.model["load_warnings"] = list(encoder.load_fixes)
    report.timings = {"model_load_s": round(load_s, 4), **report.timings}
    print(report.format_table())
    if options.report:
        report.write(options.report)
        print(f"report written to {options.report}")
    return EXIT_OK
