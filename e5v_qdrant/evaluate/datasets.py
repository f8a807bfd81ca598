"""Data-set readers: evaluation files into small dataclasses, with typed errors naming the file, line and remedy."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import E5VInputError
from ..triplets import load_triplets

__all__ = [
    "RetrievalSet",
    "ComposedSet",
    "FashionIQSet",
    "FASHIONIQ_CATEGORIES",
    "PairSet",
    "TripletSet",
    "read_retrieval",
    "read_composed",
    "read_fashioniq",
    "read_sts",
    "read_triplets",
]


@dataclass
class RetrievalSet:
    """Images with their captions. ``caption_image[j]`` is the index in ``images`` of caption ``j``'s image."""

    images: list[str]
    captions: list[str]
    caption_image: list[int]
    files: list[str] = field(default_factory=list)
    dataset: str | None = None  # "flickr30k" / "coco" when a Karpathy file names it
    split: str | None = None


@dataclass
class ComposedSet:
    """Composed queries (reference image + modification text → target image) and the candidate images."""

    references: list[str]
    texts: list[str]
    targets: list[str]
    candidates: list[str]
    files: list[str] = field(default_factory=list)


@dataclass
class FashionIQSet:
    """FashionIQ composed queries of one category: a reference image and two relative captions → a target image."""

    category: str
    references: list[str]
    captions: list[tuple[str, str]]
    targets: list[str]
    candidates: list[str]
    files: list[str] = field(default_factory=list)


@dataclass
class PairSet:
    """Sentence pairs with gold similarity scores."""

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]
    files: list[str] = field(default_factory=list)


@dataclass
class TripletSet:
    """Anchors, their positives and (optional) hard negatives; ``negatives[i]`` is ``None`` when a row has none."""

    anchors: list[str]
    positives: list[str]
    negatives: list[str | None]
    files: list[str] = field(default_factory=list)


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise E5VInputError(
                    f"{path}:{number}", f"not valid JSON ({exc.msg}); expected one JSON object per line"
                ) from None
            if not isinstance(row, dict):
                raise E5VInputError(f"{path}:{number}", f"expected a JSON object, got {type(row).__name__}")
            rows.append((number, row))
    return rows


def _field(row: dict, names: Sequence[str], where: str, *, required: bool = True):
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    if required:
        raise E5VInputError(
            where, f"missing field {names[0]!r} (accepted names: {', '.join(names)}); found {sorted(row)}"
        )
    return None


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise E5VInputError(str(path), f"{what} not found; check the path")
    return path


def _image_path(name: str, images_dir: Path | None, where: str, *extra_dirs: str) -> str:
    candidate = Path(name)
    if not candidate.is_absolute() and images_dir is not None:
        for sub in (*extra_dirs, ""):
            trial = images_dir / sub / name if sub else images_dir / name
            if trial.is_file():
                return str(trial)
        candidate = images_dir / name
    if not candidate.is_file():
        raise E5VInputError(
            where, f"image {str(candidate)!r} not found; pass --images DIR with the folder holding the images"
        )
    return os.path.abspath(candidate)  # one spelling per file: references, targets and candidates match by path


def read_retrieval(
    captions: str | os.PathLike, images_dir: str | os.PathLike, *, split: str = "test", limit: int | None = None
) -> RetrievalSet:
    """Read an image–caption retrieval set.

    Formats: Karpathy-split JSON (``{"images": [{"filename", "split", "sentences": [{"raw"}], "filepath"?}]}``;
    only images whose ``split`` equals ``split`` unless ``split="all"``) or JSONL with one
    ``{"image": "name.jpg", "captions": ["...", ...]}`` per line (``split`` ignored).

    Args:
        captions: the JSON / JSONL file.
        images_dir: folder the image names are relative to (Karpathy ``filepath`` sub-folders are tried first).
        split: Karpathy split to keep (``test``, ``val``, ``train``, ``restval``, ``all``).
        limit: keep only the first ``limit`` images (quick checks; numbers then differ from the paper's).

    Raises:
        E5VInputError: a file or image is missing, a row is malformed, or nothing is left to evaluate.
    """
    path = _existing(Path(captions), "captions file")
    root = Path(images_dir)
    if not root.is_dir():
        raise E5VInputError(str(root), "images folder not found; pass --images DIR")
    text = path.read_text(encoding="utf-8")
    data = RetrievalSet([], [], [], files=[str(path)])
    entries: list[tuple[str, str, list[str], str]] = []  # (name, subdir, captions, where)
    doc = None
    if path.suffix.lower() != ".jsonl":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None  # not one JSON document: read as JSONL below
    if isinstance(doc, dict):
        if not isinstance(doc.get("images"), list):
            raise E5VInputError(str(path), "expected a Karpathy-split JSON with an 'images' list, or JSONL lines")
        data.dataset = doc.get("dataset")
        data.split = split
        for i, img in enumerate(doc["images"]):
            where = f"{path} images[{i}]"
            if split != "all" and img.get("split") != split:
                continue
            name = _field(img, ("filename",), where)
            sentences = _field(img, ("sentences",), where)
            raws = [s["raw"] if isinstance(s, dict) else str(s) for s in sentences]
            entries.append((name, img.get("filepath") or "", raws, where))
    else:
        for number, row in _read_jsonl(path):
            where = f"{path}:{number}"
            caps = _field(row, ("captions", "texts", "caption"), where)
            caps = [caps] if isinstance(caps, str) else list(caps)
            entries.append((_field(row, ("image", "filename", "path"), where), "", caps, where))
    if limit is not None:
        entries = entries[:limit]
    for name, sub, caps, where in entries:
        if not caps or not all(isinstance(c, str) for c in caps):
            raise E5VInputError(where, "needs a non-empty list of caption strings")
        data.images.append(_image_path(name, root, where, *([sub] if sub else [])))
        for caption in caps:
            data.captions.append(caption)
            data.caption_image.append(len(data.images) - 1)
    if not data.images:
        hint = f" with split {split!r} (try --split all)" if data.split else ""
        raise E5VInputError(str(path), f"no images to evaluate{hint}")
    return data


def read_composed(
    data_file: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    *,
    candidates: str | os.PathLike | None = None,
    limit: int | None = None,
) -> ComposedSet:
    """Read composed-retrieval queries: JSONL with ``reference``, ``text`` and ``target`` per line.

    Accepted names: ``reference`` / ``reference_image`` / ``ref``; ``text`` / ``caption`` / ``modification``;
    ``target`` / ``target_image`` / ``target_hard`` (CIRR's names). Relative image paths are resolved against
    ``images_dir`` (default: the data file's folder).

    Args:
        candidates: a text file with one image path per line, or a folder of images; default: every distinct image
            named in the file (references and targets).
        limit: keep only the first ``limit`` queries.
    """
    from ..media import IMAGE_SUFFIXES

    path = _existing(Path(data_file), "composed data file")
    root = Path(images_dir) if images_dir else path.parent
    out = ComposedSet([], [], [], [], files=[str(path)])
    rows = _read_jsonl(path)
    if limit is not None:
        rows = rows[:limit]
    for number, row in rows:
        where = f"{path}:{number}"
        out.references.append(
            _image_path(str(_field(row, ("reference", "reference_image", "ref"), where)), root, where)
        )
        text = _field(row, ("text", "caption", "modification"), where)
        if isinstance(text, list):
            text = ", ".join(map(str, text))
        out.texts.append(str(text))
        out.targets.append(_image_path(str(_field(row, ("target", "target_image", "target_hard"), where)), root, where))
    if not out.references:
        raise E5VInputError(str(path), "no queries to evaluate")
    if candidates is None:
        out.candidates = list(dict.fromkeys(out.references + out.targets))
    else:
        cand = Path(candidates)
        if cand.is_dir():
            names = sorted(os.path.abspath(p) for p in cand.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            out.candidates = names
        else:
            lines = [ln.strip() for ln in _existing(cand, "candidates file").read_text(encoding="utf-8").splitlines()]
            out.candidates = list(
                dict.fromkeys(_image_path(ln, root, f"{cand}:{i}") for i, ln in enumerate(lines, 1) if ln)
            )
            out.files.append(str(cand))
        missing = sorted(set(out.targets) - set(out.candidates))
        if missing:
            raise E5VInputError(
                str(cand), f"{len(missing)} target image(s) are not among the candidates, e.g. {missing[0]!r}"
            )
    return out


FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
_FASHIONIQ_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _fashioniq_image(image_id: str, root: Path, where: str) -> str:
    for suffix in ("", *_FASHIONIQ_SUFFIXES):
        trial = root / f"{image_id}{suffix}"
        if trial.is_file():
            return os.path.abspath(trial)
    raise E5VInputError(
        where, f"image {image_id!r} not found as {root}/{image_id}.png (or .jpg/.jpeg/.webp); pass --images DIR"
    )


def _json_list(path: Path, what: str) -> list:
    try:
        doc = json.loads(_existing(path, what).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise E5VInputError(
            str(path), f"not valid JSON ({exc.msg}); expected FashionIQ's {what} (a JSON list)"
        ) from None
    if not isinstance(doc, list):
        raise E5VInputError(str(path), f"expected a JSON list (FashionIQ's {what}), got {type(doc).__name__}")
    return doc


def read_fashioniq(
    captions: str | os.PathLike,
    images_dir: str | os.PathLike,
    candidates: str | os.PathLike,
    *,
    category: str,
    limit: int | None = None,
) -> FashionIQSet:
    """Read FashionIQ's own files for one category.

    Args:
        captions: ``captions/cap.CATEGORY.SPLIT.json``: a list of ``{"candidate": ref id, "target": id,
            "captions": [two relative captions]}``.
        images_dir: folder holding ``ID.png`` (or ``.jpg``/``.jpeg``/``.webp``) for every image id.
        candidates: ``image_splits/split.CATEGORY.SPLIT.json``: the list of image ids searched (the reference image
            stays a candidate, as in the authors' evaluation).
        category: ``dress``, ``shirt`` or ``toptee``.
        limit: keep only the first ``limit`` queries (the candidates stay complete).

    Raises:
        E5VInputError: unknown category, a missing file or image, a malformed entry, or a target not among the
            candidates.
    """
    if category not in FASHIONIQ_CATEGORIES:
        raise E5VInputError(
            "fashioniq", f"unknown category {category!r}; choose one of {', '.join(FASHIONIQ_CATEGORIES)}"
        )
    cap_path, split_path, root = Path(captions), Path(candidates), Path(images_dir)
    if not root.is_dir():
        raise E5VInputError(str(root), "images folder not found; pass --images DIR")
    entries = _json_list(cap_path, "caption file cap.CATEGORY.SPLIT.json")
    ids = _json_list(split_path, "split file split.CATEGORY.SPLIT.json")
    out = FashionIQSet(category, [], [], [], [], files=[str(cap_path), str(split_path)])
    if limit is not None:
        entries = entries[:limit]
    for i, entry in enumerate(entries):
        where = f"{cap_path} [{i}]"
        if not isinstance(entry, dict):
            raise E5VInputError(
                where, f"expected an object with candidate, target, captions; got {type(entry).__name__}"
            )
        pair = _field(entry, ("captions",), where)
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(c, str) for c in pair):
            raise E5VInputError(where, f"'captions' must be a list of two strings, got {pair!r}")
        out.references.append(_fashioniq_image(str(_field(entry, ("candidate",), where)), root, where))
        out.targets.append(_fashioniq_image(str(_field(entry, ("target",), where)), root, where))
        out.captions.append((pair[0], pair[1]))
    if not out.references:
        raise E5VInputError(str(cap_path), "no queries to evaluate")
    out.candidates = list(dict.fromkeys(_fashioniq_image(str(x), root, f"{split_path}") for x in ids))
    missing = sorted(set(out.targets) - set(out.candidates))
    if missing:
        raise E5VInputError(
            str(split_path), f"{len(missing)} target image(s) are not in the split file, e.g. {missing[0]!r}"
        )
    return out


def read_sts(data_file: str | os.PathLike, *, limit: int | None = None) -> PairSet:
    """Read sentence pairs with gold scores: JSONL (``sentence1``, ``sentence2``, ``score``) or TSV.

    A TSV either has a header naming ``sentence1``, ``sentence2`` and ``score`` columns (as STS-B's files do) or no
    header and exactly three columns in that order.
    """
    path = _existing(Path(data_file), "STS data file")
    out = PairSet([], [], [], files=[str(path)])

    def add(s1, s2, score, where):
        try:
            value = float(score)
        except (TypeError, ValueError):
            raise E5VInputError(where, f"score {score!r} is not a number") from None
        if not np.isfinite(value):
            raise E5VInputError(where, f"score {score!r} is not finite")
        out.sentences1.append(str(s1))
        out.sentences2.append(str(s2))
        out.scores.append(value)

    if path.suffix.lower() in (".jsonl", ".json"):
        for number, row in _read_jsonl(path):
            where = f"{path}:{number}"
            add(
                _field(row, ("sentence1", "text1", "s1"), where),
                _field(row, ("sentence2", "text2", "s2"), where),
                _field(row, ("score", "label", "gold"), where),
                where,
            )
    else:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
        if not rows:
            raise E5VInputError(str(path), "empty file")
        header = [h.strip().lower() for h in rows[0]]
        if {"sentence1", "sentence2", "score"} <= set(header):
            cols = (header.index("sentence1"), header.index("sentence2"), header.index("score"))
            body = list(enumerate(rows[1:], 2))
        else:
            cols = (0, 1, 2)
            body = list(enumerate(rows, 1))
        for number, row in body:
            if not row or not "".join(row).strip():
                continue
            where = f"{path}:{number}"
            if len(row) <= max(cols):
                raise E5VInputError(
                    where, f"has {len(row)} tab-separated columns; expected sentence1, sentence2, score"
                )
            add(row[cols[0]], row[cols[1]], row[cols[2]], where)
    if limit is not None:
        out.sentences1, out.sentences2, out.scores = out.sentences1[:limit], out.sentences2[:limit], out.scores[:limit]
    if len(out.scores) < 2:
        raise E5VInputError(str(path), f"needs at least 2 sentence pairs, found {len(out.scores)}")
    return out


def read_triplets(data_file: str | os.PathLike, *, limit: int | None = None) -> TripletSet:
    """Read (anchor, positive[, negative]) rows with the fine-tuning reader (``triplets.load_triplets``): JSONL
    ``anchor``/``positive``/``negative`` or CSV ``sent0``/``sent1``/``hard_neg``, every bad line reported at once.

    Raises:
        FinetuneDataError: (an ``E5VInputError``) the file is missing, empty or has bad rows.
    """
    loaded = load_triplets(data_file)
    rows = loaded.rows[:limit] if limit is not None else loaded.rows
    return TripletSet(
        anchors=[r.anchor for r in rows],
        positives=[r.positive for r in rows],
        negatives=[r.negative for r in rows],
        files=[loaded.path],
    )
