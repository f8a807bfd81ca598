"""``check_endpoint``: what an endpoint says its vectors are and, optionally, whether a local model agrees."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import EncoderConfig
from ..identity import vector_options
from .config import EndpointConfig

__all__ = ["EndpointCheck", "check_endpoint", "PROBE_TEXT", "probe_image"]

PROBE_TEXT = "a photo of a dog running on a beach"
#: Cosine a probe must reach against the local model (numerical noise between devices and kernels stays far above).
AGREEMENT = 0.999


def probe_image():
    """The probe picture: 500x333 (a non-square anyres grid, where image layouts differ), fixed shapes on a gradient."""
    from PIL import Image, ImageDraw

    image = Image.linear_gradient("L").resize((500, 333)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 60, 220, 250), fill=(200, 60, 40))
    draw.rectangle((300, 40, 470, 300), fill=(30, 90, 200))
    return image


@dataclass
class EndpointCheck:
    """The result of ``check_endpoint``: the identity and, with a local model, the probes' cosines."""

    url: str
    identity: str
    fingerprint: str
    dim: int
    served_model: str | None
    options: dict[str, Any]
    cosines: dict[str, float] | None = field(default=None)

    @property
    def agrees(self) -> bool | None:
        """Whether every probe matched the local model (``None``: not compared)."""
        return None if self.cosines is None else min(self.cosines.values()) >= AGREEMENT

    def summary(self) -> str:
        lines = [
            f"endpoint      {self.url} (serves {self.served_model})",
            f"identity      {self.identity} ({'by the server' if self.identity == 'advertised' else 'by you'})",
            f"fingerprint   {self.fingerprint} (dim {self.dim})",
            *(f"  {name:<12}{value!r}" for name, value in self.options.items()),
        ]
        if self.cosines is None:
            lines.append("probes        not compared (pass --compare where the model is available locally)")
        else:
            lines += [f"probe {name:<8}cos {cos:.6f} vs the local model" for name, cos in self.cosines.items()]
            lines.append(
                "agrees        yes"
                if self.agrees
                else f"agrees        NO (below {AGREEMENT}): the endpoint's vectors are not the declared ones; check the "
                "model, --image-layout and the chat template it serves"
            )
        return "\n".join(lines)


def check_endpoint(
    endpoint: EndpointConfig, config: EncoderConfig, *, required: Mapping[str, Any], compare: bool = False
) -> EndpointCheck:
    """Handshake with the endpoint; with ``compare``, embed a fixed text, image and composed query there and with the
    local model of the same identity, and report their cosines.

    Raises:
        E5VConfigError: as ``RemoteEncoder`` (the endpoint serves other vectors than ``required``).
        RemoteEncoderError: the endpoint cannot be reached.
        E5VModelError: ``compare`` and the model cannot be loaded here.
    """
    from .encoder import RemoteEncoder

    with RemoteEncoder(endpoint, config=config, required=required) as remote:
        check = EndpointCheck(
            url=remote.url,
            identity=remote.fingerprint["endpoint"]["identity"],
            fingerprint=remote.fingerprint["id"],
            dim=remote.dim,
            served_model=remote.served_model,
            options=vector_options(remote.config),
        )
        if compare:
            from ..encoder import E5VEncoder

            local = E5VEncoder(config=remote.config)
            image = probe_image()
            pairs = {
                "text": (remote.embed_texts([PROBE_TEXT]), local.embed_texts([PROBE_TEXT])),
                "image": (remote.embed_images([image]), local.embed_images([image])),
                "composed": (
                    remote.embed_composed([image], ["make it a cat"]),
                    local.embed_composed([image], ["make it a cat"]),
                ),
            }
            check.cosines = {name: _cos(a[0], b[0]) for name, (a, b) in pairs.items()}
    return check


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
