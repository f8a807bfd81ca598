"""Search filters: the one place that turns modality, folder and payload-field conditions into a Qdrant ``Filter``.

Qdrant keyword matches are exact, so "everything under a folder" cannot be a prefix match on ``source``. Instead each
point stores ``folders``: every folder that contains its source (``ancestor_folders``), and ``under=PATH`` matches
points whose ``folders`` list contains PATH (or whose ``source`` is PATH itself). A condition on a payload field no
point has matches nothing — filters never widen a search.

Example:
    >>> f = build_filter(modality="text", under="/data/notes", where={"page": "2"})   # doctest: +SKIP
    >>> store.query(collection, vector, query_filter=f)                                # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import E5VConfigError
from .points import FOLDERS as FOLDERS_KEY
from .points import INDEXED_FIELDS, MODALITY, SOURCE, ancestor_folders

__all__ = ["FOLDERS_KEY", "INDEXED_FIELDS", "ancestor_folders", "parse_where", "build_filter", "combine"]


_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


def parse_where(items: Sequence[str] | None) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (repeatable ``--where``) → ``{KEY: VALUE}``.

    Raises:
        E5VConfigError: an item without ``=``, an empty key, or a key given twice.
    """
    where: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise E5VConfigError(f"--where takes KEY=VALUE (a payload field and its value), got {item!r}")
        if key in where:
            raise E5VConfigError(f"--where {key}= given twice; a point has one value per field")
        where[key] = value
    return where


def _match(key: str, value: Any):
    """The condition "payload[key] equals value"; a string also matches the number / boolean it spells."""
    from qdrant_client import models

    def equal(v):
        if isinstance(v, (bool, int, str)):
            return models.FieldCondition(key=key, match=models.MatchValue(value=v))
        if isinstance(v, float):
            return models.FieldCondition(key=key, range=models.Range(gte=v, lte=v))
        raise E5VConfigError(
            f"cannot filter {key!r} on a {type(v).__name__} value {v!r}; use text, numbers or booleans"
        )

    if isinstance(value, (list, tuple, set)):
        alternatives = [c for v in value for c in _alternatives(v)]
    else:
        alternatives = _alternatives(value)
    conditions = [equal(v) for v in alternatives]
    return conditions[0] if len(conditions) == 1 else models.Filter(should=conditions)


def _alternatives(value: Any) -> list[Any]:
    if not isinstance(value, str):
        return [value]
    out: list[Any] = [value]
    text = value.strip()
    if _INT.fullmatch(text):
        out.append(int(text))
    elif _FLOAT.fullmatch(text):
        out.append(float(text))
    elif text.lower() in ("true", "false"):
        out.append(text.lower() == "true")
    return out


def build_filter(
    *,
    modality: str | None = None,
    under: str | os.PathLike | None = None,
    where: Mapping[str, Any] | None = None,
):
    """A Qdrant ``Filter`` that every result must satisfy, or ``None`` when nothing is asked.

    Args:
        modality: ``text`` or ``image``; ``None`` / ``any``: no condition.
        under: a folder (its sources at any depth) or a file (that source); made absolute like ingested sources.
        where: payload field → value (all must hold). A string value also matches the integer, float or boolean it
            spells (``"2"`` matches ``page: 2``); a list matches any of its values. Nested fields: ``a.b``.

    Raises:
        E5VConfigError: an unknown modality, or a value type Qdrant cannot match.
    """
    from qdrant_client import models

    must: list[Any] = []
    if modality not in (None, "any"):
        if modality not in ("text", "image"):
            raise E5VConfigError(f"modality must be text, image or any, got {modality!r}")
        must.append(models.FieldCondition(key=MODALITY, match=models.MatchValue(value=modality)))
    if under is not None and os.fspath(under) != "":
        path = os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(under))))
        must.append(
            models.Filter(
                should=[
                    models.FieldCondition(key=FOLDERS_KEY, match=models.MatchValue(value=path)),
                    models.FieldCondition(key=SOURCE, match=models.MatchValue(value=path)),
                ]
            )
        )
    for key, value in (where or {}).items():
        if not key:
            raise E5VConfigError("a where condition needs a payload field name")
        must.append(_match(key, value))
    return models.Filter(must=must) if must else None


def combine(*filters):
    """One ``Filter`` requiring all the given ones (``None``s ignored), or ``None``."""
    from qdrant_client import models

    present = [f for f in filters if f is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return models.Filter(must=present)
