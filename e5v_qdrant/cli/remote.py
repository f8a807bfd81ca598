"""The command line of remote encoders: the encoder a command embeds with (``--encoder-url``) and
``e5v-qdrant check-endpoint``. Parsing and printing only, as every ``cli`` module."""

from __future__ import annotations

import json
from collections.abc import Callable

from ..config import EncoderConfig, from_namespace, namespace_options
from ..errors import E5VConfigError
from ..remote.config import EndpointConfig
from .arguments import add_arguments

__all__ = ["EndpointConfig", "encoder_from", "add_check_endpoint"]


def encoder_from(args, config: EncoderConfig, *, load: bool = True):
    """The encoder of a command: through the endpoint ``--encoder-url`` names, else in-process (``load=False``: its
    config, for commands that load the model only when needed). ``config`` is the command's full encoder options."""
    from ..remote import open_encoder

    endpoint = from_namespace(EndpointConfig, args)
    if endpoint.encoder_url and getattr(args, "engine", None) == "ray":
        raise E5VConfigError(
            "--engine ray loads the model on its workers and --encoder-url embeds through an endpoint; pass one of them"
        )
    return open_encoder(config, endpoint, typed=namespace_options(EncoderConfig, args), load=load)


def add_check_endpoint(sub) -> Callable:
    p = sub.add_parser(
        "check-endpoint",
        help="show which vectors an embedding endpoint makes (e5v-qdrant serve or vLLM) and probe it",
        description="Connect to URL and print the vector identity it advertises (`e5v-qdrant serve`) or that the model "
        "options declare for it (vLLM: e.g. --image-layout llava-next). With --compare, a fixed text, image and "
        "composed query are embedded there and with the same model loaded here, and their cosines printed. Exit 0 "
        "when it agrees (or nothing was compared), 2 otherwise.",
    )
    p.add_argument("encoder_url", metavar="URL", help="the endpoint, e.g. http://gpu-box:8000")
    p.add_argument("--compare", action="store_true", help="also embed the probes with the model loaded locally")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_arguments(p, EncoderConfig, group="declared model (for an endpoint that advertises no identity)")
    add_arguments(p, EndpointConfig, exclude=("encoder_url",), group="endpoint")
    return _run_check_endpoint


def _run_check_endpoint(args) -> int:
    from dataclasses import asdict

    from ..remote.probe import check_endpoint

    endpoint = from_namespace(EndpointConfig, args)
    check = check_endpoint(
        endpoint,
        from_namespace(EncoderConfig, args),
        required=namespace_options(EncoderConfig, args),
        compare=args.compare,
    )
    if args.json:
        print(json.dumps({**asdict(check), "agrees": check.agrees}, indent=2, default=str))
    else:
        print(check.summary())
    return 0 if check.agrees in (None, True) else 2
