"""Validated option dataclasses: the single source of options, defaults and help text for the CLI and Python API.

Each field is declared once with ``options.option`` (help text, choices, whether it changes vectors, …);
``cli.arguments.add_arguments`` turns a dataclass into argparse options and ``from_namespace`` builds the validated
dataclass back from parsed arguments, so the CLI cannot drift from the API. Declared choices are validated by the
``Options`` base; each class's ``validate`` checks the rest.
"""

from __future__ import annotations

from ..collection_names import COLLECTION_NAME_FORBIDDEN, COLLECTION_NAME_MAX, check_collection_name
from ..options import Options, from_namespace, namespace_options, option
from .encoder import DEFAULT_MODEL, DTYPE_NAMES, EncoderConfig
from .evaluate import EvalConfig
from .finetune import LORA_TARGETS, FinetuneConfig
from .ingest import IngestConfig, SearchConfig
from .serve import ServeConfig
from .store import CREATE, SEARCH, WRITE, StoreConfig

__all__ = [
    "EncoderConfig",
    "StoreConfig",
    "IngestConfig",
    "SearchConfig",
    "FinetuneConfig",
    "EvalConfig",
    "ServeConfig",
    "Options",
    "option",
    "from_namespace",
    "namespace_options",
    "check_collection_name",
    "COLLECTION_NAME_FORBIDDEN",
    "COLLECTION_NAME_MAX",
    "DEFAULT_MODEL",
    "DTYPE_NAMES",
    "LORA_TARGETS",
    "CREATE",
    "WRITE",
    "SEARCH",
]
