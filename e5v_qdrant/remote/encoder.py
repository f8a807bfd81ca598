"""``RemoteEncoder``: the ``E5VEncoder`` interface over an E5-V endpoint (``e5v-qdrant serve`` or vLLM).

Texts go as OpenAI ``/v1/embeddings`` ``input`` lists, images and composed inputs as vLLM-style chat ``messages``
with the image inline as a base64 ``data:`` URL. Requests run in worker threads (``encoder_concurrency`` in flight,
which keeps a remote batcher full); each worker reads and encodes its own image, so local decoding overlaps the
remote calls. An advertising server prompts inputs itself (its prompts are part of the identity it advertises); a
foreign endpoint gets the prompts already applied: texts as full prompt strings, images and composed inputs as the
prompt body around the image, inside the E5-V chat template the endpoint is started with
(``e5v_qdrant/vllm/e5v_chat_template.jinja``).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import io
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..config import EncoderConfig
from ..errors import E5VConfigError, E5VInputError
from ..media import ImageInput, describe_source, load_image
from ..prompts import LLAMA3_CHAT, PromptSet, get_prompts
from .client import EndpointClient
from .config import EndpointConfig
from .handshake import resolve_identity

__all__ = ["RemoteEncoder"]

_PROBE_TEXT = "a photo of a dog"


class RemoteEncoder:
    """Embed texts, images and composed queries through an E5-V endpoint; the same interface as ``E5VEncoder``.

    Args:
        endpoint: the endpoint URL, or an ``EndpointConfig`` (key variable, concurrency, timeout, retries).
        config: the full options; for a foreign endpoint (vLLM) they declare which vectors it makes.
        required: options asked for explicitly (default: the keyword ``options``); an ``e5v-qdrant serve`` endpoint
            must serve each of them, else ``E5VConfigError`` names the option.
        options: ``EncoderConfig`` fields, instead of ``config``.

    Raises:
        E5VConfigError: the endpoint serves other vectors than asked, or cannot serve the declared ones.
        RemoteEncoderError: the endpoint is unreachable or refuses the key.

    Example:
        >>> enc = RemoteEncoder("http://gpu-box:8000")                                   # doctest: +SKIP
        >>> vllm = RemoteEncoder("http://gpu-box:8001", image_layout="llava-next")        # doctest: +SKIP
        >>> enc.embed_texts(["a dog on a beach"]) @ enc.embed_images(["dog.jpg"]).T      # doctest: +SKIP
    """

    def __init__(
        self,
        endpoint: str | EndpointConfig,
        *,
        config: EncoderConfig | None = None,
        required: Mapping[str, Any] | None = None,
        **options: Any,
    ):
        if config is not None and options:
            raise TypeError("pass either config= or keyword options, not both")
        self.endpoint = EndpointConfig(encoder_url=endpoint) if isinstance(endpoint, str) else endpoint
        if not self.endpoint.encoder_url:
            raise E5VConfigError("RemoteEncoder needs an endpoint URL (--encoder-url)")
        config = config or EncoderConfig.from_options(options)
        required = dict(options if required is None else required)
        self.http = EndpointClient(self.endpoint)
        self.url = self.endpoint.public_url
        self._pool = ThreadPoolExecutor(self.endpoint.encoder_concurrency, thread_name_prefix="e5v-remote")
        try:
            models = self.http.get("/v1/models")
            self.served_model = None
            self.advertised = False
            self.prompts: PromptSet = get_prompts(config.prompts, query=config.query_prompt)
            found = resolve_identity(
                models, config=config, required=required, url=self.url, probe_dim=lambda: self._probe_dim(models)
            )
        except BaseException:
            self.close()
            raise
        self.config = found.config
        self.fingerprint = found.fingerprint
        self.served_model = found.served_model
        self.advertised = found.advertised
        self.prompts = get_prompts(self.config.prompts, query=self.config.query_prompt)
        self.dim = int(self.fingerprint["dim"])
        #: an endpoint loads its own checkpoint; nothing is fixed here (``E5VEncoder.load_fixes``)
        self.load_fixes: list[str] = []
        self.torch_dtype = "remote"
        if not self.advertised and self.prompts.chat != LLAMA3_CHAT:
            raise E5VConfigError(
                f"prompt preset {self.config.prompts!r} uses another chat wrapper than the E5-V chat template a "
                "foreign endpoint renders; use a preset with the Llama-3 wrapper or serve with `e5v-qdrant serve`"
            )

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop the worker threads and close the connections."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.http.close()

    def __enter__(self) -> RemoteEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ facts
    def describe(self) -> dict[str, Any]:
        """Everything that changes the numbers: the options, the fingerprint and the endpoint that makes them."""
        return {
            "model": self.config.model,
            "revision": self.config.revision,
            "adapter": self.config.adapter,
            "dim": self.dim,
            "dtype": "as served",
            "device": "remote",
            "prompts": dataclasses.asdict(self.prompts),
            "prompt_preset": self.config.prompts,
            "image_layout": self.config.image_layout,
            "fingerprint": self.fingerprint["id"],
            "endpoint": self.fingerprint["endpoint"],
        }

    @functools.cached_property
    def geometry(self):
        """The checkpoint's anyres geometry, read from its config files (no weights), for token counts."""
        from transformers import AutoImageProcessor, LlavaNextConfig

        from ..anyres import AnyresGeometry
        from ..hub import hub_options

        hub = hub_options(self.config.model, self.config.revision)
        model_config = LlavaNextConfig.from_pretrained(self.config.model, revision=self.config.revision, **hub)
        processor = AutoImageProcessor.from_pretrained(self.config.model, revision=self.config.revision, **hub)
        return AnyresGeometry.from_configs(model_config, processor)

    def count_image_tokens(self, image: ImageInput) -> int:
        """How many ``<image>`` tokens this image becomes (computed here from its size and the checkpoint's config)."""
        from ..anyres import image_token_count

        pil = load_image(image, max_pixels=self.config.max_image_pixels, name=describe_source(image))
        return image_token_count((pil.height, pil.width), self.geometry, self.config.image_layout)

    # ------------------------------------------------------------------ embedding
    def embed_texts(self, texts: Sequence[str], *, show_progress: bool = False, normalize: bool = True) -> np.ndarray:
        """Embed documents with the text prompt (as ``E5VEncoder.embed_texts``)."""
        return self._texts(_check_texts(texts), query=False, normalize=normalize)

    def embed_queries(self, texts: Sequence[str], *, show_progress: bool = False, normalize: bool = True) -> np.ndarray:
        """Embed search queries: the query prompt if configured, else exactly as ``embed_texts``."""
        texts = _check_texts(texts)
        if self.prompts.query is not None and self.advertised:
            raise E5VConfigError(
                f"{self.url} embeds texts with the text prompt only; a query prompt is applied by in-process or "
                "foreign-endpoint encoders (drop --query-prompt, or embed queries in-process)"
            )
        return self._texts(texts, query=True, normalize=normalize)

    def embed_images(
        self, images: Sequence[ImageInput], *, show_progress: bool = False, normalize: bool = True
    ) -> np.ndarray:
        """Embed images (paths, bytes, BytesIO or PIL images), one request each, ``encoder_concurrency`` in flight."""
        images = _as_list(images, "images")
        return self._each([(image, None, f"image {i}") for i, image in enumerate(images)], normalize)

    def embed_composed(
        self,
        images: Sequence[ImageInput],
        texts: Sequence[str],
        *,
        show_progress: bool = False,
        normalize: bool = True,
    ) -> np.ndarray:
        """Embed composed queries: each image with its modification text."""
        images, texts = _as_list(images, "images"), _check_texts(texts)
        if len(images) != len(texts):
            raise E5VInputError(
                "embed_composed", f"got {len(images)} images but {len(texts)} texts; pass one text per image"
            )
        return self._each(
            [(im, t, f"image {i}") for i, (im, t) in enumerate(zip(images, texts, strict=True))], normalize
        )

    def embed_composed_pairs(self, images, captions, *, show_progress: bool = False) -> np.ndarray:
        """Not available remotely: it sums un-normalised vectors, and endpoints return normalised ones."""
        raise E5VConfigError(
            "embed_composed_pairs (FashionIQ's two-caption queries) needs un-normalised vectors, which endpoints do "
            "not return; run it in-process (without --encoder-url)"
        )

    # ------------------------------------------------------------------ requests
    def _texts(self, texts: list[str], *, query: bool, normalize: bool) -> np.ndarray:
        _check_normalize(normalize)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        size = self.endpoint.texts_per_request
        chunks = [texts[start : start + size] for start in range(0, len(texts), size)]
        parts = list(self._pool.map(lambda chunk: self._text_request(chunk, query), chunks))
        return np.concatenate(parts)

    def _text_request(self, texts: list[str], query: bool) -> np.ndarray:
        if self.advertised:
            if all(texts):
                return self.http.embeddings(self._body(input=texts), f"{len(texts)} texts")
            # the OpenAI input form refuses empty strings; a chat message of "" embeds the prompt alone, as in-process
            return np.concatenate([self.http.embeddings(self._message([_text(t)]), "a text") for t in texts])
        prompt = self.prompts.for_query if query else self.prompts.for_text
        return self.http.embeddings(self._body(input=[prompt(t) for t in texts]), f"{len(texts)} texts")

    def _each(self, items: list[tuple[ImageInput, str | None, str]], normalize: bool) -> np.ndarray:
        _check_normalize(normalize)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(list(self._pool.map(lambda item: self._image_request(*item), items)))

    def _image_request(self, image: ImageInput, text: str | None, position: str) -> np.ndarray:
        name = f"{position} ({describe_source(image)})"
        if self.advertised:  # the server decodes, orients and checks the file's own bytes, and prompts it
            parts = [{"type": "image_url", "image_url": {"url": _data_url(self._bytes_of(image, name))}}]
            return self.http.embeddings(self._message(parts + ([_text(text)] if text is not None else [])), name)
        pil = load_image(image, max_pixels=self.config.max_image_pixels, name=name)
        buffer = io.BytesIO()
        pil.save(buffer, format="PNG", compress_level=1)  # lossless: the endpoint decodes exactly these pixels
        body = self.prompts.image if text is None else self.prompts.composed.replace("{text}", text, 1)
        before, after = body.split("<image>", 1)
        image_part = {"type": "image_url", "image_url": {"url": _data_url(buffer.getvalue())}}
        parts = ([_text(before)] if before else []) + [image_part] + ([_text(after)] if after else [])
        return self.http.embeddings(self._message(parts), name)

    def _bytes_of(self, image: ImageInput, name: str) -> bytes:
        if isinstance(image, (bytes, bytearray)):
            return bytes(image)
        if isinstance(image, io.IOBase):
            return image.read()
        if isinstance(image, str) or hasattr(image, "__fspath__"):
            try:
                with open(image, "rb") as fh:
                    return fh.read()
            except OSError as exc:
                raise E5VInputError(name, f"cannot read the image ({exc.strerror or exc})") from None
        buffer = io.BytesIO()
        load_image(image, max_pixels=self.config.max_image_pixels, name=name).save(buffer, format="PNG")
        return buffer.getvalue()

    def _body(self, **fields: Any) -> dict[str, Any]:
        # our server answers base64 float32 (4x smaller than JSON floats); foreign endpoints get the plain default
        encoding = {"encoding_format": "base64"} if self.advertised else {}
        return {"model": self.served_model, **encoding, **fields}

    def _message(self, content: list[dict[str, Any]]) -> dict[str, Any]:
        return self._body(messages=[{"role": "user", "content": content}])

    def _probe_dim(self, models: Mapping[str, Any]) -> int:
        entries = models.get("data") or [{}]
        self.served_model = entries[0].get("id")
        body = self._body(input=[self.prompts.for_text(_PROBE_TEXT)])
        return int(self.http.embeddings(body, "the probe text").shape[1])


def _text(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


def _data_url(data: bytes) -> str:
    from PIL import Image

    try:
        kind = (Image.open(io.BytesIO(data)).format or "png").lower()
    except Exception:  # noqa: BLE001 - the endpoint names what is wrong with the bytes
        kind = "png"
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _check_normalize(normalize: bool) -> None:
    if not normalize:
        raise E5VConfigError("endpoints return L2-normalised vectors only; normalize=False needs an in-process encoder")


def _as_list(values, name: str) -> list:
    if isinstance(values, (str, bytes)):
        raise E5VInputError(name, f"expected a list of inputs, got a single {type(values).__name__}; wrap it in a list")
    return list(values)


def _check_texts(texts) -> list[str]:
    texts = _as_list(texts, "texts")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise E5VInputError(f"texts[{i}]", f"expected str, got {type(text).__name__}")
    return texts
