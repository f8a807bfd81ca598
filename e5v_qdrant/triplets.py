"""Text triplet files (anchor, positive, optional hard negative) from JSONL or SimCSE-style CSV: the format
fine-tuning trains on and ``eval triplets`` scores.

Files are validated as a whole before training starts: every bad row is reported with its line number and nothing
is trained on a file that was only partly understood.

Accepted layouts (the column / key names on each line are aliases of each other):

* JSONL, one object per line: ``{"anchor": ..., "positive": ..., "negative": ...}`` (``negative`` optional);
  the SimCSE names ``sent0`` / ``sent1`` / ``hard_neg`` are accepted too.
* CSV with a header row: ``sent0,sent1,hard_neg`` (the SimCSE supervised NLI file) or ``anchor,positive[,negative]``;
  without the negative column the file is a list of pairs.

Either every row has a negative or none has: a contrastive batch needs the same number of candidates per row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import E5VInputError

__all__ = ["Triplet", "TripletData", "FinetuneDataError", "load_triplets"]

#: Canonical field → accepted names, in order of preference.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "anchor": ("anchor", "sent0"),
    "positive": ("positive", "sent1"),
    "negative": ("negative", "hard_neg"),
}
_MAX_REPORTED = 20


class FinetuneDataError(E5VInputError):
    """A training or evaluation file is empty, malformed or has bad rows.

    Attributes:
        source: the file path.
        problems: ``(line number, message)`` pairs, line numbers 1-based (0 = the whole file).
    """

    def __init__(self, source: str, problems: list[tuple[int, str]]):
        self.problems = problems
        shown = [f"line {line}: {msg}" if line else msg for line, msg in problems[:_MAX_REPORTED]]
        more = f"\n  … and {len(problems) - _MAX_REPORTED} more" if len(problems) > _MAX_REPORTED else ""
        reason = (
            f"{len(problems)} problem(s), nothing was trained:\n  " + "\n  ".join(shown) + more + "\n"
            'Expected JSONL lines {"anchor": str, "positive": str, "negative": str (optional)} or a CSV with header '
            "sent0,sent1[,hard_neg] (or anchor,positive[,negative]); fix or remove the rows named above."
        )
        super().__init__(source, reason)


@dataclass(frozen=True)
class Triplet:
    """One training example. ``negative`` is ``None`` for pair data."""

    anchor: str
    positive: str
    negative: str | None = None
    line: int = 0


@dataclass(frozen=True)
class TripletData:
    """A validated file: its rows, its format and the SHA-256 of its bytes (for manifests and resume checks)."""

    path: str
    rows: tuple[Triplet, ...]
    format: str
    sha256: str

    @property
    def has_negatives(self) -> bool:
        return bool(self.rows) and self.rows[0].negative is not None

    def __len__(self) -> int:
        return len(self.rows)


def _decode_lines(raw: bytes, problems: list[tuple[int, str]]) -> list[str]:
    """Split into lines (keeping numbering) and decode each as UTF-8, recording the lines that are not."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":  # a final newline does not start another line
        lines.pop()
    out = []
    for number, line in enumerate(lines, 1):
        try:
            out.append(line.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError as exc:
            problems.append(
                (
                    number,
                    f"not valid UTF-8 (byte {exc.start}: {line[exc.start : exc.start + 1]!r}); re-save the file as UTF-8",
                )
            )
            out.append("")
    return out


def _pick(record: dict, field: str) -> tuple[str | None, object]:
    for name in FIELD_ALIASES[field]:
        if name in record:
            return name, record[name]
    return None, None


def _row(record: dict, number: int, problems: list[tuple[int, str]]) -> Triplet | None:
    values: dict[str, str | None] = {}
    ok = True
    for field in ("anchor", "positive", "negative"):
        name, value = _pick(record, field)
        if name is None:
            if field != "negative":
                problems.append((number, f"missing column {field!r} (or {FIELD_ALIASES[field][1]!r})"))
                ok = False
            values[field] = None
            continue
        if field == "negative" and value is None:
            values[field] = None
            continue
        if not isinstance(value, str):
            problems.append((number, f"{name!r} must be a string, got {type(value).__name__}"))
            ok = False
        elif not value.strip():
            problems.append((number, f"empty value in column {name!r}"))
            ok = False
        values[field] = value if isinstance(value, str) else None
    if not ok:
        return None
    return Triplet(values["anchor"], values["positive"], values["negative"], number)


def _parse_jsonl(lines: list[str], bad_lines: set[int], problems: list[tuple[int, str]]) -> list[Triplet]:
    rows = []
    for number, line in enumerate(lines, 1):
        if number in bad_lines:
            continue
        if not line.strip():
            problems.append((number, "empty line"))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((number, f"bad JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(record, dict):
            problems.append((number, f"expected a JSON object, got {type(record).__name__}"))
            continue
        row = _row(record, number, problems)
        if row is not None:
            rows.append(row)
    return rows


def _parse_csv(lines: list[str], bad_lines: set[int], problems: list[tuple[int, str]]) -> list[Triplet]:
    if not lines or not lines[0].strip():
        problems.append((1, "empty line where the CSV header (sent0,sent1[,hard_neg]) should be"))
        return []
    reader = csv.reader(io.StringIO("\n".join(lines) + "\n"))
    header = [h.strip() for h in next(reader)]
    for field in ("anchor", "positive"):
        if not any(name in header for name in FIELD_ALIASES[field]):
            problems.append((1, f"header {header} lacks column {field!r} (or {FIELD_ALIASES[field][1]!r})"))
    if problems and problems[-1][0] == 1 and "header" in problems[-1][1]:
        return []
    rows = []
    start = reader.line_num + 1
    for record in reader:
        number, start = start, reader.line_num + 1  # a quoted value may span lines: report where the row starts
        if number in bad_lines:
            continue
        if not record or not any(v.strip() for v in record):
            problems.append((number, "empty line"))
            continue
        if len(record) != len(header):
            problems.append((number, f"{len(record)} values for {len(header)} columns {header}"))
            continue
        row = _row(dict(zip(header, record, strict=True)), number, problems)
        if row is not None:
            rows.append(row)
    return rows


def _detect_format(path: Path, lines: list[str]) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    first = next((line for line in lines if line.strip()), "")
    return "jsonl" if first.lstrip().startswith("{") else "csv"


def load_triplets(path: str | os.PathLike, *, min_rows: int = 1) -> TripletData:
    """Read and validate a training / evaluation file.

    Args:
        path: a ``.jsonl`` or ``.csv`` file (other suffixes are sniffed: a first line starting with ``{`` is JSONL).
        min_rows: fewer valid rows than this is an error (a contrastive batch needs at least two).

    Returns:
        The validated rows with their format and the file's SHA-256.

    Raises:
        FinetuneDataError: the file is missing, empty, not UTF-8, has bad JSON, empty lines, missing columns or empty
            values, or mixes rows with and without negatives. Every bad line is listed with its number.
    """
    path = Path(path)
    name = os.fspath(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FinetuneDataError(name, [(0, f"cannot read the file: {exc.strerror or exc}")]) from exc
    if not raw.strip():
        raise FinetuneDataError(name, [(0, "the file is empty")])
    problems: list[tuple[int, str]] = []
    lines = _decode_lines(raw, problems)
    bad = {line for line, _ in problems}
    fmt = _detect_format(path, lines)
    rows = _parse_jsonl(lines, bad, problems) if fmt == "jsonl" else _parse_csv(lines, bad, problems)
    if not problems and rows:
        with_neg = [r for r in rows if r.negative is not None]
        if with_neg and len(with_neg) != len(rows):
            odd = [r.line for r in rows if (r.negative is None) == (rows[0].negative is not None)]
            kind = "lack" if rows[0].negative is not None else "have"
            problems.extend(
                (line, f"row {kind}s a negative unlike line {rows[0].line}; give every row a negative or none")
                for line in odd
            )
    if not problems and len(rows) < min_rows:
        problems.append((0, f"only {len(rows)} row(s); at least {min_rows} needed"))
    if problems:
        problems.sort(key=lambda p: p[0])
        raise FinetuneDataError(name, problems)
    return TripletData(name, tuple(rows), fmt, hashlib.sha256(raw).hexdigest())
