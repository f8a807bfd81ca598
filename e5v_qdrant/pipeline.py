"""Ingestion stages shared by the local executor (``ingest.local``), the Ray executor (``ingest.ray_data``) and
``reingest``: turning files into points. What a run does around them (the stored id index, re-stamps, deletes,
``sync``) is the driver's, ``ingest.run``.

One place for each rule, so the executors cannot drift apart:

- ``plan_file``: one discovered file → its ``FileWork`` or a ``SkippedInput``. A file whose ``os.stat`` (size,
  mtime, inode) equals what its stored points record is unchanged without being opened (unless ``verify``, or
  ``rechunk`` and its points record another chunker than this run's: ``earlier_chunking``); a file larger than
  ``max_file_bytes`` is skipped unread; any exception while reading or chunking skips that file only, with a reason
  naming the exception;
- ``plan``: a read ``Document`` against the ids stored for its source → the ``FileWork`` to do;
- ``decode_images``: image bytes → validated ``PIL`` images, just before embedding;
- ``embed_points``: items → ``PointStruct``s (through ``points.make_point``, the one place a point is built);
- ``IngestReport``: the outcome both engines return.

Point ids and the LlamaIndex payload of an item are made in ``points`` (``sources`` reads files into them), from the
content only.
"""

from __future__ import annotations

import logging
import os
import signal
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .chunking import Chunker
from .errors import E5VImageError, E5VInputError
from .media import load_image
from .points import FILE_STAT, make_point
from .sources import Document, Item, SkippedInput, SourceFile, read_source, supported_types

__all__ = [
    "EncoderFacts",
    "FileWork",
    "IngestReport",
    "plan",
    "plan_file",
    "is_unchanged",
    "earlier_chunking",
    "too_large",
    "stat_record",
    "decode_images",
    "embed_points",
]

logger = logging.getLogger(__name__)

#: ``skip(source, reason)``: how a stage reports a file it gives up on.
Skip = Callable[[str, str], None]


class EncoderFacts:
    """What a store needs of an encoder that is not loaded (yet): its config, fingerprint and dimension.

    ``EncoderFacts.of(config)`` computes them with ``identity.fingerprint`` — no weights are read — so a run can create
    or check its collection, and decide whether anything needs embedding, before paying for a model load.
    """

    def __init__(self, config, fingerprint: dict[str, Any]):
        self.config, self.fingerprint, self.dim = config, fingerprint, int(fingerprint["dim"])

    @classmethod
    def of(cls, config) -> EncoderFacts:
        from .identity import fingerprint

        return cls(config, fingerprint(config))


#: source → {point id: the ``file_stat`` payload it was written with (``None`` if written without)}.


@dataclass
class FileWork:
    """What one file needs: items to embed and write, stored ids to re-stamp with its current ``file_stat``, then
    stale ids to delete. ``status`` is ``new``, ``replaced``, ``unchanged`` or ``deleted``; ``kind`` (``text``,
    ``pdf``, ``image``) and ``points`` (how many points the file has once written) feed the per-type counts."""

    source: str
    status: str
    items: list[Item]
    stale_ids: set[str]
    failed: bool = False
    restamp_ids: set[str] = field(default_factory=set)
    file_stat: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    kind: str = ""
    points: int = 0


#: How ``SkippedInput.outcome`` values are shown, in summary order; only ``failed`` makes the exit code 1.
OUTCOMES = ("failed", "ignored", "duplicate", "loop")


@dataclass
class IngestReport:
    """Counts and per-input outcomes of one ingest run (``to_dict`` is the ``--json`` / ``--report`` format,
    ``summary`` the text the CLI prints).

    File counts: ``discovered`` (supported files found), ``new``, ``unchanged``, ``replaced``, ``deleted`` (vanished
    sources removed by ``sync``), ``skipped`` (inputs not ingested, listed in ``skipped_inputs`` with an outcome:
    ``failed``, ``ignored``, ``duplicate`` or ``loop``, also counted per outcome). Point counts: ``embedded`` (vectors
    computed), ``points_written``, ``points_deleted``. ``model_loaded`` tells whether the run needed the model.
    ``by_type``: kind (``text``, ``pdf``, ``image``) -> files and points now stored for the new, replaced and
    unchanged files. ``roots``: the ingested paths (absolute). ``interrupted``: the signal that stopped the run
    (``SIGINT``, ``SIGTERM``), empty when it ran to the end.
    """

    collection: str
    physical_collection: str = ""
    model_fingerprint: str = ""
    discovered: int = 0
    new: int = 0
    unchanged: int = 0
    replaced: int = 0
    deleted: int = 0
    skipped: int = 0
    embedded: int = 0
    points_written: int = 0
    points_deleted: int = 0
    seconds: float = 0.0
    model_loaded: bool = False
    skipped_inputs: list[SkippedInput] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)
    interrupted: str = ""

    def count_file(self, work: FileWork) -> None:
        """Count a file whose outcome is known (its status, and its kind and points unless it was deleted)."""
        setattr(self, work.status, getattr(self, work.status) + 1)
        if work.status != "deleted" and work.kind:
            counts = self.by_type.setdefault(work.kind, {"files": 0, "points": 0})
            counts["files"] += 1
            counts["points"] += work.points

    @property
    def outcomes(self) -> dict[str, int]:
        """Skipped inputs per outcome (every outcome present, zeros included)."""
        counts = Counter(s.outcome for s in self.skipped_inputs)
        return {outcome: counts.get(outcome, 0) for outcome in OUTCOMES}

    @property
    def exit_code(self) -> int:
        """0 when every supported input was ingested (ignored, duplicate and loop entries do not count), 1 when some
        failed, 128 + the signal number when interrupted (130 Ctrl-C, 143 SIGTERM; the shell's convention)."""
        if self.interrupted:
            return 128 + int(getattr(signal, self.interrupted, signal.SIGINT))
        return 1 if self.outcomes["failed"] else 0

    def to_dict(self) -> dict[str, Any]:
        counts = {
            k: getattr(self, k)
            for k in (
                "discovered",
                "new",
                "unchanged",
                "replaced",
                "deleted",
                "skipped",
                "embedded",
                "points_written",
                "points_deleted",
            )
        }
        return {
            "collection": self.collection,
            "physical_collection": self.physical_collection,
            "model_fingerprint": self.model_fingerprint,
            "paths": self.roots,
            "interrupted": self.interrupted or None,
            "counts": {**counts, **self.outcomes},
            "by_type": self.by_type,
            "model_loaded": self.model_loaded,
            "seconds": round(self.seconds, 3),
            "skipped_inputs": [s.to_dict() for s in self.skipped_inputs],
            "warnings": self.warnings,
        }

    def summary(self, *, examples: int = 3, reasons: int = 8, width: int = 100) -> str:
        """Human-readable summary on lines of at most ``width`` characters (a path longer than that is not cut):
        totals, what is stored per file type, then skipped inputs and warnings grouped by their whole reason (cause
        and remedy), most frequent first, with a few example files each, as paths relative to the ingested folder
        (the full list, with absolute paths, is in ``to_dict``)."""
        base = _common_folder(self.roots)
        outcomes = self.outcomes
        lines = []
        if self.interrupted:
            lines.append(
                f"interrupted ({self.interrupted}) after finishing the write in progress: the counts below are what "
                "was done; run the same command again to resume (it embeds only what is not stored yet)"
            )
        lines += [
            f"collection {self.collection} -> {self.physical_collection or '(not created: nothing to write)'}"
            + (f" (model fingerprint {self.model_fingerprint})" if self.model_fingerprint else ""),
            f"files: discovered {self.discovered}, new {self.new}, unchanged {self.unchanged}, "
            f"replaced {self.replaced}, deleted {self.deleted}",
            "skipped: " + ", ".join(f"{outcome} {outcomes[outcome]}" for outcome in OUTCOMES),
        ]
        if self.by_type:
            lines.append("stored (new, replaced or unchanged): " + ", ".join(_type_counts(self.by_type)))
        lines.append(
            f"points: embedded {self.embedded}, written {self.points_written}, deleted {self.points_deleted} "
            f"in {self.seconds:.1f}s" + ("" if self.model_loaded else " (model not loaded: nothing to embed)")
        )
        groups = []
        for outcome in OUTCOMES:
            entries = [(s.source, s.reason) for s in self.skipped_inputs if s.outcome == outcome]
            groups += _grouped(outcome, entries, base, examples, reasons)
            if outcome == "ignored" and any(reason.startswith("unsupported file type") for _, reason in entries):
                groups.append(f"  supported: {supported_types()}")
        groups += _grouped("warnings", [(w["source"], w["warning"]) for w in self.warnings], base, examples, reasons)
        if groups and base:
            lines.append(f"paths below are relative to {base}")
        out = []
        for line in lines + groups:
            indent = line[: len(line) - len(line.lstrip())]
            out += textwrap.wrap(
                line.lstrip(),
                width=width,
                initial_indent=indent,
                subsequent_indent=indent + "    ",
                break_long_words=False,  # paths stay whole
                break_on_hyphens=False,
            )
        return "\n".join(out)


#: How the points of each file type are called in the summary (one, many).
_POINTS_OF = {"text": ("chunk", "chunks"), "pdf": ("chunk/page", "chunks/pages")}


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _type_counts(by_type: Mapping[str, Mapping[str, int]]) -> list[str]:
    """``text 120 files (830 chunks)``, ``image 40 files``, ... most files first."""
    out = []
    for kind, counts in sorted(by_type.items(), key=lambda kv: (-kv[1]["files"], kv[0])):
        files = f"{kind} {_count(counts['files'], 'file', 'files')}"
        label = _POINTS_OF.get(kind)
        out.append(f"{files} ({_count(counts['points'], *label)})" if label else files)
    return out


def _common_folder(roots: Iterable[str]) -> str:
    """The folder the ingested paths share (a file's own folder for a file), or "" if there is none."""
    folders = [root if os.path.isdir(root) else os.path.dirname(root) for root in roots]
    try:
        return os.path.commonpath(folders) if folders else ""
    except ValueError:  # paths on different drives
        return ""


def _relative(text: str, base: str) -> str:
    """``text`` with paths under ``base`` written relative to it."""
    if not base or base == os.sep:
        return text
    return text.replace(base.rstrip(os.sep) + os.sep, "")


def _grouped(title: str, entries: list[tuple[str, str]], base: str, examples: int, reasons: int) -> list[str]:
    """``title (N):`` then one line per distinct reason, whole (cause and remedy), most frequent first, with its file
    count and up to ``examples`` files."""
    if not entries:
        return []
    groups: dict[str, list[str]] = {}
    for source, reason in entries:
        groups.setdefault(_relative(reason, base), []).append(_relative(source, base))
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    lines = [f"{title} ({len(entries)}):"]
    for reason, sources in ordered[:reasons]:
        shown = ", ".join(sources[:examples]) + (", ..." if len(sources) > examples else "")
        lines.append(f"  {reason} ({_count(len(sources), 'file', 'files')}): {shown}")
    if len(ordered) > reasons:
        rest = sum(len(sources) for _, sources in ordered[reasons:])
        lines.append(f"  ... {len(ordered) - reasons} more reasons for {rest} files (see --report FILE / --json)")
    return lines


def stat_record(entry: SourceFile, chunker: Chunker, items: int, pdf_pages: str = "auto") -> dict[str, Any] | None:
    """The ``file_stat`` payload of a file's points: its stat when discovered, the chunker that made its chunks
    (``Chunker.identity``) and its item count (and for PDFs the ``pdf_pages`` mode, which changes the items as
    chunking does)."""
    if entry.stat is None:
        return None
    record = {
        "size": entry.stat.size,
        "mtime_ns": entry.stat.mtime_ns,
        "inode": entry.stat.inode,
        "chunking": chunker.identity,
        "items": items,
    }
    if entry.kind == "pdf":
        record["pdf_pages"] = pdf_pages
    return record


def is_unchanged(
    entry: SourceFile, chunker: Chunker, have: Mapping[str, Any], pdf_pages: str = "auto", *, rechunk: bool = False
) -> bool:
    """Whether every stored point of ``entry`` (``have``: id → ``file_stat``) records the file's current stat and as
    many items as are stored — then reading the file again would change nothing. Points made by another chunker
    (``earlier_chunking``) count as unchanged unless ``rechunk``: a new chunker re-chunks a file when it changes, or
    every file when asked, never by itself."""
    current = stat_record(entry, chunker, len(have), pdf_pages) if have else None
    if current is None:
        return False
    if not rechunk:
        current.pop("chunking")
    return all(isinstance(r, dict) and {k: r.get(k) for k in current} == current for r in have.values())


def earlier_chunking(chunker: Chunker, have: Mapping[str, Any]) -> str | None:
    """A warning when the stored points of a file (``have``) record another chunker than ``chunker``, else ``None``."""
    recorded = sorted({str((r or {}).get("chunking")) for r in have.values()} - {chunker.identity})
    if not recorded:
        return None
    return (
        "chunks made by another chunker, kept as they are (--rechunk re-chunks them): "
        f"recorded {', '.join(recorded)}; this run {chunker.identity}"
    )


def too_large(entry: SourceFile, max_file_bytes: int | None) -> SkippedInput | None:
    """A ``SkippedInput`` for a file above ``max_file_bytes`` (by its discovered size; it is not opened)."""
    if max_file_bytes is None or entry.stat is None or entry.stat.size <= max_file_bytes:
        return None
    return SkippedInput(
        entry.source,
        f"larger than --max-file-bytes, not read: {entry.stat.size} > {max_file_bytes} bytes (raise the limit to "
        "ingest it)",
        "ignored",
    )


def plan_file(
    entry: SourceFile,
    chunker: Chunker,
    have: Mapping[str, Any],
    *,
    verify: bool = False,
    data: bytes | None = None,
    pdf_pages: str = "auto",
    rechunk: bool = False,
    max_file_bytes: int | None = None,
    max_chunks: int | None = None,
) -> FileWork | SkippedInput:
    """Plan one discovered file against its stored points ``have`` (id → ``file_stat``); never raises for one file.

    Returns an ``unchanged`` ``FileWork`` without opening the file when every stored point records the file's
    current stat and item count (unless ``verify``; with ``rechunk`` also the same chunker: ``is_unchanged``), with
    a warning when its chunks were made by another chunker. A file larger than ``max_file_bytes`` is ``ignored``
    without being read. Otherwise reads, chunks and hashes it (``plan``); more than ``max_chunks`` items add a
    warning. Any exception while doing so becomes a ``failed`` ``SkippedInput`` naming the exception type.
    ``pdf_pages``: how PDFs become items (``sources.PDF_PAGES_MODES``).
    """
    kind = "text" if entry.kind == "sniff" else entry.kind
    if not verify and is_unchanged(entry, chunker, have, pdf_pages, rechunk=rechunk):
        note = earlier_chunking(chunker, have)
        return FileWork(
            entry.source, "unchanged", [], set(), warnings=[note] if note else [], kind=kind, points=len(have)
        )
    skipped = too_large(entry, max_file_bytes) if data is None else None
    if skipped is not None:
        return skipped
    try:
        doc = read_source(entry, chunker, data=data, pdf_pages=pdf_pages)
        if isinstance(doc, SkippedInput):
            return doc
        work = plan(doc, have, stat_record(entry, chunker, len(doc.items), pdf_pages))
    except Exception as exc:  # noqa: BLE001 - one bad file never stops a run
        return SkippedInput(entry.source, f"{type(exc).__name__} while reading or chunking: {exc}")
    work.warnings, work.kind, work.points = doc.warnings, doc.kind, len(doc.items)
    if max_chunks is not None and len(doc.items) > max_chunks:
        note = (
            "more chunks than --max-chunks-per-file, embedding it takes long (exclude it, or lower --max-file-bytes "
            f"to skip such files): {len(doc.items)} > {max_chunks}"
        )
        logger.warning("%s: %s", entry.source, note)
        work.warnings.append(note)
    return work


def plan(doc: Document, have: Mapping[str, Any] | set[str], file_stat: dict[str, Any] | None = None) -> FileWork:
    """The work that makes the stored ids of ``doc.source`` (``have``) equal the ids ``doc`` yields.

    Args:
        doc: the read file.
        have: its stored point ids (a set, or a mapping id → stored ``file_stat``).
        file_stat: the file's current ``file_stat`` record; stamped into the new items' payloads, and stored points
            that are kept but record another one are listed in ``restamp_ids``.

    Returns:
        ``unchanged`` (nothing to write, maybe ids to re-stamp), or ``new`` / ``replaced``: the items whose ids are
        missing and the stored ids the file no longer yields (deleted only after the new points are written).
    """
    expected = {item.id for item in doc.items}
    stored = set(have)
    restamp: set[str] = set()
    if file_stat is not None:
        for item in doc.items:
            item.payload[FILE_STAT] = file_stat
        if isinstance(have, Mapping):
            restamp = {pid for pid in expected & stored if have[pid] != file_stat}
    if expected == stored:
        return FileWork(doc.source, "unchanged", [], set(), restamp_ids=restamp, file_stat=file_stat)
    todo = [item for item in doc.items if item.id not in stored]
    status = "replaced" if stored else "new"
    return FileWork(doc.source, status, todo, stored - expected, restamp_ids=restamp, file_stat=file_stat)


def decode_images(work: FileWork, max_pixels: int | None, skip: Skip) -> bool:
    """Decode and validate ``work``'s image bytes in place; ``False`` (and ``skip`` called) if one is unusable."""
    for item in work.items:
        if item.modality == "image" and isinstance(item.content, (bytes, bytearray)):
            try:
                item.content = load_image(item.content, max_pixels=max_pixels, name=work.source)
            except E5VImageError as exc:
                work.failed = True
                skip(work.source, exc.reason)
                return False
            except Exception as exc:  # noqa: BLE001 - one bad file never stops a run
                work.failed = True
                skip(work.source, f"cannot decode image: {type(exc).__name__}: {exc}")
                return False
    return True


def embed_points(
    encoder,
    pending: list[tuple[FileWork, Item]],
    fingerprint_id: str,
    skip: Skip | None = None,
    *,
    sparse_encoder=None,
) -> list[Any]:
    """Embed a batch (texts and images in one call each) into points.

    With ``skip``, an item the encoder cannot embed (any exception) marks its file failed and reports it with the
    exception type, and the rest of the batch is embedded one by one; without, the error propagates.
    ``sparse_encoder``: a ``sparse.BM25Encoder`` for a hybrid collection (text items also get its sparse vector).
    """
    points = []
    for modality in ("text", "image"):
        group = [(w, it) for w, it in pending if it.modality == modality and not w.failed]
        if not group:
            continue
        embed = encoder.embed_texts if modality == "text" else encoder.embed_images
        try:
            vectors = embed([it.content for _, it in group])
        except Exception:
            if skip is None:
                raise
            vectors = None
        if vectors is None:  # find the culprit(s) one by one
            vectors = []
            for work, item in group:
                try:
                    vectors.append(embed([item.content])[0] if not work.failed else None)
                except E5VInputError as exc:
                    work.failed = True
                    skip(work.source, f"cannot embed: {exc.reason}")
                    vectors.append(None)
                except Exception as exc:  # noqa: BLE001 - one bad file never stops a run
                    work.failed = True
                    skip(work.source, f"cannot embed: {type(exc).__name__}: {exc}")
                    vectors.append(None)
        for (work, item), vector in zip(group, vectors, strict=True):
            if vector is not None and not work.failed:
                sparse = (
                    sparse_encoder.encode_document(item.content)
                    if sparse_encoder is not None and modality == "text"
                    else None
                )
                points.append(make_point(item.id, vector, item.payload, fingerprint_id, sparse))
    return points
