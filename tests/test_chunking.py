"""Chunking: the model's tokens, never over its context, deterministic; recorded with points; file limits."""

from __future__ import annotations

import json
import random
import shutil
import string
import time

import pytest
from transformers import AutoTokenizer

from e5v_qdrant.chunking import SENTENCE_PIECE_CHARS, Chunker, ChunkerSpec, load_chunker
from e5v_qdrant.config import EncoderConfig, IngestConfig, StoreConfig
from e5v_qdrant.errors import E5VConfigError
from e5v_qdrant.ingest import ingest
from e5v_qdrant.prompts import get_prompts
from e5v_qdrant.store import QdrantStore

PROMPTS = get_prompts()  # E5-V's text prompt in the Llama-3 chat wrapper, as the encoder uses it


@pytest.fixture(scope="module")
def tokenizer(replica_path):
    return AutoTokenizer.from_pretrained(replica_path)


def prompted(tokenizer, chunk: str) -> int:
    """Tokens the encoder feeds the model for ``chunk`` (written out here: E5VEncoder._prepare_text's recipe)."""
    return len(tokenizer(PROMPTS.for_text(chunk), verbose=False)["input_ids"])


# ---------------------------------------------------------------- random texts of the kinds that broke chunking
def _code(rng):
    names = ["value", "items", "config", "x", "result", "self", "os.path.join", "buffer"]
    lines = []
    for _ in range(rng.randint(20, 200)):
        a, b = rng.choice(names), rng.choice(names)
        lines.append(" " * rng.choice((0, 4, 8)) + rng.choice([f"{a} = {b}({rng.randint(0, 99)})", f"if {a}:", "}"]))
    return "\n".join(lines)


def _cjk(rng):
    out = []
    for _ in range(rng.randint(200, 3000)):
        out.append(chr(rng.randint(0x4E00, 0x9FFF)))
        if rng.random() < 0.03:
            out.append(rng.choice("。，！？"))
    return "".join(out)


def _unbroken(rng):
    return "".join(rng.choice(string.ascii_letters + string.digits + "+/=._") for _ in range(rng.randint(500, 30000)))


def _minified_html(rng):
    parts = []
    for i in range(rng.randint(50, 600)):
        parts.append(
            f'<div class="c{i}" data-x="{rng.randint(0, 10**6)}"><span>{rng.choice(["a", "b.", "Go!"])}</span>'
        )
    return "".join(parts) + "<script>var a=1;function f(b){return b*2}</script>"


def _prose(rng):
    words = "the ferry leaves at noon and e.g. Dr. Smith said i.e. nothing about the timetable".split()
    sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) + "." for _ in range(200)]
    return rng.choice([" ", "\n", "\n\n\n"]).join(sentences)


def _emoji(rng):
    return " ".join("".join(chr(rng.randint(0x1F300, 0x1F64F)) for _ in range(rng.randint(1, 40))) for _ in range(80))


GENERATORS = [_code, _cjk, _unbroken, _minified_html, _prose, _emoji]
CASES = [(g, seed) for g in GENERATORS for seed in range(4)]


def _covers_in_order(text: str, chunks: list[str]) -> bool:
    """Whitespace aside, each chunk is a piece of ``text`` that starts no later than the text covered so far ends
    (chunks overlap; no gap) and ends no earlier than the previous chunk (in order), and together they reach the end.
    With repeated content the latest such placement is taken."""
    flat = "".join(text.split())
    previous_end = end = 0
    for chunk in chunks:
        piece = "".join(chunk.split())
        at = flat.rfind(piece, max(0, previous_end - len(piece)), end + len(piece)) if piece else -1
        if at < 0:
            return False
        previous_end = at + len(piece)
        end = max(end, previous_end)
    return end == len(flat)


@pytest.mark.parametrize(("generate", "seed"), CASES, ids=[f"{g.__name__[1:]}-{s}" for g, s in CASES])
def test_every_chunk_fits_the_context_covers_the_text_in_order_and_is_deterministic(tokenizer, generate, seed):
    text = generate(random.Random(seed))
    context = 64  # chunk_size == context: the splitter's additive counts overshoot, so cutting at tokens is exercised
    prompt = PROMPTS.for_text("{text}")
    chunks = Chunker(context, 8, tokenizer, prompt=prompt, context=context).split(text)
    assert chunks
    assert max(prompted(tokenizer, c) for c in chunks) <= context
    assert _covers_in_order(text, chunks)
    assert Chunker(context, 8, tokenizer, prompt=prompt, context=context).split(text) == chunks


def test_without_a_model_short_prose_chunks_like_a_stock_sentence_splitter():
    from llama_index.core.node_parser import SentenceSplitter

    text = " ".join(f"The harbour master counted {i} boats before the storm." for i in range(60))
    assert len(text) < SENTENCE_PIECE_CHARS  # one piece for nltk, as the stock splitter gives it
    stock = [c for c in SentenceSplitter(chunk_size=64, chunk_overlap=8).split_text(text) if c.strip()]
    assert Chunker(64, 8).split(text) == stock and len(stock) > 5


def test_chunk_size_counts_the_prompt(tokenizer):
    overhead = prompted(tokenizer, "")
    chunker = Chunker(overhead + 40, 0, tokenizer, prompt=PROMPTS.for_text("{text}"))
    assert chunker.prompt_tokens == overhead
    chunks = chunker.split(_prose(random.Random(0)))
    sizes = [prompted(tokenizer, c) for c in chunks]
    assert len(chunks) > 10 and max(sizes) <= overhead + 40 + 2  # a merged chunk may differ by a token or two
    assert sum(sizes) / len(sizes) > overhead + 20  # chunks are filled, not cut tiny


def test_a_chunk_size_the_prompt_or_context_cannot_hold_is_refused(tokenizer):
    prompt = PROMPTS.for_text("{text}")
    with pytest.raises(E5VConfigError, match="leaves .* tokens for text"):
        Chunker(prompted(tokenizer, "") + 4, 4, tokenizer, prompt=prompt)
    with pytest.raises(E5VConfigError, match="exceeds the model's context of 100"):
        Chunker(128, 16, tokenizer, prompt=prompt, context=100)


def test_the_model_spec_loads_the_checkpoints_tokenizer_and_context(replica_path, tokenizer):
    spec = ChunkerSpec.for_encoder(EncoderConfig(model=str(replica_path)), 96, 8)
    chunker = load_chunker(spec)
    config = json.loads((replica_path / "config.json").read_text())
    assert chunker.context == config["text_config"]["max_position_embeddings"]
    assert chunker.prompt_tokens == prompted(tokenizer, "")
    assert load_chunker(spec) is chunker  # once per process (and per Ray worker)
    other = load_chunker(ChunkerSpec.for_encoder(EncoderConfig(model=str(replica_path)), 97, 8))
    assert other.identity != chunker.identity and other.identity.split()[:3] == chunker.identity.split()[:3]


# ---------------------------------------------------------------- nltk's wall-clock guard
def test_text_that_trips_nltks_regex_guard_is_chunked_and_the_guard_never_changes_the_output(monkeypatch, tokenizer):
    from llama_index.core.node_parser.text.utils import split_by_sentence_tokenizer
    from nltk import redos

    text = "e.g. Dr. Smith i.e. " * 10_000  # 200 K characters, 30 K potential sentence ends, no line break
    monkeypatch.setattr(redos, "DEFAULT_TIMEOUT", 0.5)  # nltk's 5 s guard, scaled down with the text
    with pytest.raises(TimeoutError):
        split_by_sentence_tokenizer()(text)  # the whole text in one call trips it
    chunker = Chunker(96, 8, tokenizer, prompt=PROMPTS.for_text("{text}"))
    started = time.perf_counter()
    chunks = chunker.split(text)
    assert time.perf_counter() - started < 60 and _covers_in_order(text, chunks)
    assert max(len(p) for p in _pieces(text)) <= SENTENCE_PIECE_CHARS

    calls = {"n": 0}
    punkt = chunker._punkt

    def stalls_once(piece):  # a process stalled past the guard once (a busy machine), then fine
        calls["n"] += 1
        if calls["n"] == 3:
            raise TimeoutError("regular-expression match exceeded its 5.0s time limit")
        return punkt(piece)

    monkeypatch.setattr(chunker, "_punkt", stalls_once)
    assert chunker.split(text) == chunks and calls["n"] > 3


def _pieces(text):
    from e5v_qdrant.chunking import bounded_pieces

    pieces = bounded_pieces(text, SENTENCE_PIECE_CHARS)
    assert "".join(pieces) == text
    return pieces


# ---------------------------------------------------------------- ingest: no file lost for length, records, limits
@pytest.fixture
def short_context_replica(replica_path, tmp_path):
    """The replica with a 512-position context: a 512-token tiktoken chunk of unbroken text is longer than that."""
    folder = tmp_path / "replica-512"
    shutil.copytree(replica_path, folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 512
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_file_with_one_huge_unbroken_line_still_ingests(short_context_replica, tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    rng = random.Random(7)
    (root / "bundle.min.js").write_text("x", encoding="utf-8")  # not a text type: ignored
    (root / "minified.txt").write_text(_unbroken(rng) * 4 + _minified_html(rng), encoding="utf-8")
    (root / "notes.md").write_text("The ferry leaves at noon. " * 50, encoding="utf-8")
    encoder = EncoderConfig(model=str(short_context_replica), device="cpu", dtype="float32", batch_size=8)
    config = IngestConfig(collection="docs", paths=[str(root)], chunk_size=512, chunk_overlap=32)
    with QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "qd"))) as store:
        report = ingest(config, encoder, store, progress=False)
        assert report.exit_code == 0, report.summary()
        assert report.new == 2 and report.embedded > 20
        again = ingest(config, encoder, store, progress=False)
    assert again.embedded == 0 and not again.model_loaded and again.unchanged == 2


def test_a_changed_chunker_is_recorded_reported_and_rechunks_only_when_asked(replica_path, tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text(_prose(random.Random(1)), encoding="utf-8")
    (root / "b.txt").write_text(_code(random.Random(2)), encoding="utf-8")
    encoder = EncoderConfig(model=str(replica_path), device="cpu", dtype="float32", batch_size=8)
    config = IngestConfig(collection="docs", paths=[str(root)], chunk_size=96, chunk_overlap=8)
    with QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "qd"))) as store:
        first = ingest(config, encoder, store, progress=False)
        physical = store.resolve("docs")
        records = [p.payload["file_stat"]["chunking"] for p in store.scroll(physical, with_payload=["file_stat"])]
        identity = load_chunker(ChunkerSpec.for_encoder(encoder, 96, 8)).identity
        assert first.embedded == len(records) and set(records) == {identity}

        # a collection chunked before this version: its points record "512/64"
        ids = [str(p.id) for p in store.scroll(physical, with_payload=False)]
        for record in store.scroll(physical, with_payload=["file_stat"]):
            stat = {**record.payload["file_stat"], "chunking": "512/64"}
            store.client.set_payload(physical, payload={"file_stat": stat}, points=[record.id], wait=True)
        kept = ingest(config, encoder, store, progress=False)
        assert kept.embedded == 0 and not kept.model_loaded and kept.unchanged == 2
        assert len(kept.warnings) == 2 and all("recorded 512/64" in w["warning"] for w in kept.warnings)
        assert "--rechunk" in kept.summary()

        smaller = IngestConfig(collection="docs", paths=[str(root)], chunk_size=64, chunk_overlap=8, rechunk=True)
        redone = ingest(smaller, encoder, store, progress=False)
        assert redone.replaced == 2 and redone.embedded > len(ids) and not redone.warnings
        assert redone.points_deleted == len(ids)
        assert ingest(smaller, encoder, store, progress=False).embedded == 0


def test_max_file_bytes_skips_unread_and_max_chunks_warns(replica_path, tmp_path, monkeypatch):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "big.txt").write_text("word " * 3000, encoding="utf-8")  # 15 000 bytes
    (root / "small.txt").write_text("The ferry leaves at noon. " * 40, encoding="utf-8")
    opened = []
    real_open = open

    def spy(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    encoder = EncoderConfig(model=str(replica_path), device="cpu", dtype="float32", batch_size=8)
    config = IngestConfig(
        collection="docs", paths=[str(root)], chunk_size=64, max_file_bytes=10_000, max_chunks_per_file=3
    )
    with QdrantStore(StoreConfig(qdrant_path=str(tmp_path / "qd"))) as store:
        report = ingest(config, encoder, store, progress=False)
    assert report.exit_code == 0 and report.new == 1
    [skipped] = report.skipped_inputs
    assert skipped.source.endswith("big.txt") and skipped.outcome == "ignored"
    assert "15000 > 10000 bytes" in skipped.reason and str(root / "big.txt") not in opened
    [warning] = report.warnings
    assert warning["source"].endswith("small.txt") and "more chunks than --max-chunks-per-file" in warning["warning"]
    assert warning["warning"].endswith(" > 3")
    with pytest.raises(E5VConfigError):
        IngestConfig(collection="docs", max_file_bytes=-1)
