"""Split document text into chunks sized in the model's own tokens, prompt included, never longer than its context.

``Chunker`` wraps LlamaIndex's ``SentenceSplitter`` (sentences, then clauses, words, characters) and adds what an
E5-V collection needs:

- **The model's tokenizer counts.** ``load_chunker(ChunkerSpec(...))`` loads the checkpoint's tokenizer files with
  ``AutoTokenizer.from_pretrained(model, revision=...)`` (no weights, no remote code) and the context
  (``max_position_embeddings`` of its text config, the limit ``E5VEncoder`` enforces). ``chunk_size`` counts the whole
  prompted input: the prompt around a chunk (chat wrapper + text prompt, counted once as ``prompt_tokens``) plus the
  chunk's text tokens. Without a spec (``Chunker(size, overlap)``) LlamaIndex's default tiktoken ``cl100k_base``
  counts and nothing is known about a context.
- **Never over the context.** A chunk whose prompted token count (counted exactly as the encoder counts it) exceeds
  the context is cut further at token boundaries, so one long chunk never fails its file.
- **Deterministic, bounded work.** The same text and settings give the same chunks on any machine and under any
  load: no time budget decides anything. nltk's sentence tokenizer gets pieces of at most ``SENTENCE_PIECE_CHARS``
  characters (cut at a line break, else a space): its regular expressions run under nltk's own wall-clock guard (5 s
  per ``finditer``, consumer included), and punkt's time grows with the sentence ends in a piece: 1.6 M characters
  of ``"e.g. Dr. Smith i.e. "`` trip it even on an idle machine, while a 4,000-character piece of that text takes
  about 25 ms (a 200x margin). Runs without whitespace longer than
  ``LONG_RUN_CHARS`` (minified code, base64, a 20 MB single line) are cut by tokens in one tokenizer call instead of
  being split character by character. If nltk's guard still fires, the piece is retried; it never silently changes
  how the text is split.
- **An identity.** ``Chunker.identity`` (splitting-rule version, tokenizer digest, prompt tokens, size/overlap) is
  recorded with every point (``pipeline.stat_record``), so a re-run knows which chunker made the stored chunks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import E5VConfigError, E5VModelError
from .hub import hub_options

__all__ = [
    "Chunker",
    "ChunkerSpec",
    "load_chunker",
    "CHUNKER_VERSION",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_CHUNK_OVERLAP",
    "SENTENCE_PIECE_CHARS",
    "LONG_RUN_CHARS",
]

#: Version of the splitting rules; part of ``Chunker.identity``. Bump it when the same text and settings would give
#: other chunks (tiktoken-counted chunks with a time budget, recorded as ``"512/64"``, were version 1).
CHUNKER_VERSION = 2
#: Tokens per chunk, prompt included. E5-V was trained on NLI sentences cut to 32 tokens (arXiv 2407.12580 §4; the
#: authors' training script): its one-word summary is fitted to sentence-sized inputs, so chunks are a few sentences
#: (about 100 text tokens after E5-V's ~25-token prompt) rather than LlamaIndex's 1024 / this package's former 512.
DEFAULT_CHUNK_SIZE = 128
DEFAULT_CHUNK_OVERLAP = 16
#: Largest piece of text given to nltk's sentence tokenizer in one call.
SENTENCE_PIECE_CHARS = 4_000
#: Runs of non-whitespace at least this long are cut by tokens when they exceed a chunk.
LONG_RUN_CHARS = 256
#: Clause splitting that keeps every character (LlamaIndex's default regex drops repeated punctuation: "a,,b").
_CLAUSES = r"[^,.;。？！]+[,.;。？！]*|[,.;。？！]+"
_LONG_RUN = re.compile(rf"\S{{{LONG_RUN_CHARS},}}")
_NLTK_RETRIES = 3


@dataclass(frozen=True)
class ChunkerSpec:
    """What builds a ``Chunker`` (picklable: Ray tasks build theirs from it).

    Attributes:
        chunk_size: tokens per chunk, prompt included.
        chunk_overlap: tokens shared by consecutive chunks.
        model: hub id or local folder whose tokenizer counts; ``None`` = tiktoken ``cl100k_base``, no context.
        revision: hub revision of ``model``.
        prompt: the full prompt a chunk is embedded in, with ``{text}`` where the chunk goes
            (``PromptSet.for_text("{text}")``).
    """

    chunk_size: int = DEFAULT_CHUNK_SIZE
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
    model: str | None = None
    revision: str | None = None
    prompt: str = "{text}"

    @classmethod
    def for_encoder(cls, encoder_config, chunk_size: int, chunk_overlap: int) -> ChunkerSpec:
        """The spec for chunks embedded by an encoder with ``encoder_config`` (its model and text prompt)."""
        from .prompts import get_prompts

        prompts = get_prompts(encoder_config.prompts, query=encoder_config.query_prompt)
        return cls(chunk_size, chunk_overlap, encoder_config.model, encoder_config.revision, prompts.for_text("{text}"))


@functools.lru_cache(maxsize=8)
def load_chunker(spec: ChunkerSpec) -> Chunker:
    """The ``Chunker`` of ``spec``, its tokenizer and context loaded once per process.

    Raises:
        E5VModelError: no tokenizer or config can be read from ``spec.model``.
        E5VConfigError: ``chunk_size`` does not fit the prompt or the context.
    """
    if spec.model is None:
        return Chunker(spec.chunk_size, spec.chunk_overlap, prompt=spec.prompt)
    from transformers import AutoConfig, AutoTokenizer

    where = f"{spec.model!r}" + (f" at revision {spec.revision!r}" if spec.revision else "")
    try:
        hub = hub_options(spec.model, spec.revision)  # offline: the cached copy, or one clear error at once
        tokenizer = AutoTokenizer.from_pretrained(spec.model, revision=spec.revision, **hub)
        config = AutoConfig.from_pretrained(spec.model, revision=spec.revision, **hub)
    except (OSError, ValueError) as exc:
        raise E5VModelError(
            f"cannot read the tokenizer of {where} to size chunks: {str(exc).rstrip('.')}. Pass a hub id or a local "
            "folder holding config.json and the tokenizer files."
        ) from exc
    text_config = getattr(config, "text_config", config)
    context = getattr(text_config, "max_position_embeddings", None)
    return Chunker(spec.chunk_size, spec.chunk_overlap, tokenizer, prompt=spec.prompt, context=context)


class Chunker:
    """Text → chunks in order; the same text always gives the same chunks (see the module docstring).

    Args:
        chunk_size: tokens per chunk, the prompt's included (a target: the splitter adds up its pieces' counts, so a
            merged chunk can differ by a token or two; the context is a hard limit).
        chunk_overlap: tokens shared by consecutive chunks.
        tokenizer: the model's (Hugging Face) tokenizer; ``None`` = tiktoken ``cl100k_base`` (no prompt, no context).
        prompt: the full prompt around a chunk, ``{text}`` where it goes.
        context: the model's context in tokens (prompted chunks never exceed it); ``None`` = unknown.

    Raises:
        E5VConfigError: the prompt leaves no room for ``chunk_overlap`` + 1 text tokens in ``chunk_size``, or
            ``chunk_size`` exceeds ``context``.
    """

    def __init__(
        self,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
        tokenizer: Any = None,
        *,
        prompt: str = "{text}",
        context: int | None = None,
    ):
        from llama_index.core.node_parser import SentenceSplitter
        from llama_index.core.node_parser.text.utils import split_by_sentence_tokenizer

        if "{text}" not in prompt:
            raise E5VConfigError(f"chunk prompt {prompt!r} lacks the {{text}} placeholder")
        self.chunk_size, self.chunk_overlap, self.context = chunk_size, chunk_overlap, context
        self.tokenizer = tokenizer
        self._head, self._tail = prompt.split("{text}", 1)
        if tokenizer is None:
            from llama_index.core.utils import get_tokenizer

            self._encode: Callable[[str], list] = get_tokenizer()
            self.prompt_tokens = 0
            self._tokenizer_id = "tiktoken-cl100k_base"
        else:
            self._encode = functools.partial(tokenizer.encode, add_special_tokens=False, verbose=False)
            self.prompt_tokens = self.prompted_tokens("")
            self._tokenizer_id = tokenizer_digest(tokenizer)
        self.text_budget = chunk_size - self.prompt_tokens
        if self.text_budget <= chunk_overlap:
            raise E5VConfigError(
                f"chunk_size {chunk_size} leaves {self.text_budget} tokens for text after the {self.prompt_tokens}-token "
                f"prompt, not more than chunk_overlap {chunk_overlap}: use --chunk-size "
                f"{self.prompt_tokens + chunk_overlap + 16} or more (or a smaller --chunk-overlap)"
            )
        if context is not None and chunk_size > context:
            raise E5VConfigError(
                f"chunk_size {chunk_size} exceeds the model's context of {context} tokens: use --chunk-size {context} "
                "or less"
            )
        self._punkt = split_by_sentence_tokenizer()
        self._splitter = SentenceSplitter(
            chunk_size=self.text_budget,
            chunk_overlap=chunk_overlap,
            tokenizer=self._encode,
            chunking_tokenizer_fn=self._sentences,
            secondary_chunking_regex=_CLAUSES,
        )

    @property
    def identity(self) -> str:
        """What decides the chunks: rule version, tokenizer, prompt tokens, size/overlap (recorded with points)."""
        return f"v{CHUNKER_VERSION} {self._tokenizer_id} prompt+{self.prompt_tokens} {self.chunk_size}/{self.chunk_overlap}"

    def prompted_tokens(self, chunk: str) -> int:
        """Tokens the encoder feeds the model for ``chunk``: the prompt around it, special tokens included."""
        if self.tokenizer is None:
            return len(self._encode(chunk))
        return len(self.tokenizer(self._head + chunk + self._tail, verbose=False)["input_ids"])

    # ------------------------------------------------------------------ splitting
    def split_document(self, text: str) -> tuple[list[str], list[str]]:
        """Non-blank chunks of ``text`` in order, and warnings (chunks cut to fit the context)."""
        chunks: list[str] = []
        cut = 0
        for chunk in self._splitter.split_text(text):
            if not chunk.strip():
                continue
            pieces = self._fit(chunk)
            cut += len(pieces) > 1
            chunks.extend(pieces)
        warnings = []
        if cut:
            warnings.append(
                f"{cut} chunk(s) longer than the model's {self.context} positions were cut at token boundaries"
            )
        return chunks, warnings

    def split(self, text: str) -> list[str]:
        """Non-blank chunks of ``text`` in order."""
        return self.split_document(text)[0]

    def _fit(self, chunk: str) -> list[str]:
        """``chunk`` as is, or cut at token boundaries into pieces whose prompted count fits the context."""
        if self.context is None or self.prompted_tokens(chunk) <= self.context:
            return [chunk]
        budget = self.context - self.prompt_tokens
        while True:
            pieces = [p for p in self._token_windows(chunk, budget) if p.strip()]
            if budget == 1 or all(self.prompted_tokens(p) <= self.context for p in pieces):
                return [p.strip() for p in pieces]
            budget = max(1, budget - max(1, budget // 8))  # a piece re-tokenized across a cut can count more

    def _token_windows(self, text: str, budget: int) -> list[str]:
        """``text`` cut into consecutive pieces of at most ``budget`` tokens (character offsets of one encoding)."""
        if self.tokenizer is None or not getattr(self.tokenizer, "is_fast", False):
            ids = self._encode(text)
            if len(ids) <= budget:
                return [text]
            step = max(1, len(text) * budget // len(ids))  # no offsets: cut by the average characters per token
            return [text[i : i + step] for i in range(0, len(text), step)]
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = offsets["offset_mapping"]
        starts = [start for start, _ in offsets[budget::budget]]
        bounds = [0, *[s for s in starts if s > 0], len(text)]
        return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]

    def _sentences(self, text: str) -> list[str]:
        """nltk punkt sentences of ``text`` split piece by piece; runs without whitespace too long for a chunk are
        cut by tokens. The pieces concatenate to ``text``."""
        out: list[str] = []
        for piece in bounded_pieces(text, SENTENCE_PIECE_CHARS):
            for sentence in _retrying(self._punkt, piece):
                out.extend(self._cut_long_runs(sentence))
        return out

    def _cut_long_runs(self, sentence: str) -> list[str]:
        parts, start = [], 0
        for match in _LONG_RUN.finditer(sentence):
            run = match.group()
            if len(self._encode(run)) <= self.text_budget:
                continue
            if match.start() > start:
                parts.append(sentence[start : match.start()])
            parts.extend(self._token_windows(run, self.text_budget))
            start = match.end()
        if start < len(sentence):
            parts.append(sentence[start:])
        return parts


def _retrying(split: Callable[[str], list[str]], piece: str) -> list[str]:
    """``split(piece)``, retried when nltk's wall-clock regex guard fires (a stalled process, not the input: pieces
    are small), so the output is always the splitter's own."""
    for attempt in range(_NLTK_RETRIES):
        try:
            return split(piece)
        except TimeoutError:
            if attempt == _NLTK_RETRIES - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def bounded_pieces(text: str, limit: int) -> list[str]:
    """``text`` cut into consecutive pieces of at most ``limit`` characters, at line breaks or else spaces."""
    pieces, start = [], 0
    while len(text) - start > limit:
        end = start + limit
        cut = text.rfind("\n", start + 1, end)
        if cut < 0:
            cut = text.rfind(" ", start + 1, end)
        cut = end if cut < 0 else cut + 1
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def tokenizer_digest(tokenizer) -> str:
    """A short hash of what a Hugging Face tokenizer does (its full serialization, or its vocabulary)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        data = backend.to_str()
    else:
        data = json.dumps(sorted(tokenizer.get_vocab().items()))
    return "tok:" + hashlib.sha256(data.encode("utf-8")).hexdigest()[:12]
