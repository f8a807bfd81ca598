"""Qdrant's rule for collection names, checked before anything is loaded or created."""

from __future__ import annotations

from .errors import E5VConfigError

__all__ = ["check_collection_name", "COLLECTION_NAME_FORBIDDEN", "COLLECTION_NAME_MAX"]


#: Characters Qdrant refuses in collection names (qdrant/qdrant ``validate_collection_name``, lib/api/src/grpc/validate.rs).
COLLECTION_NAME_FORBIDDEN = '<>:"/\\|?*\0\x1f'
#: Qdrant's limit is 255 characters; the physical collection adds ``-e5v-`` and a 16-character fingerprint id.
COLLECTION_NAME_MAX = 255 - len("-e5v-") - 16


def check_collection_name(name: str) -> None:
    """Refuse a collection name Qdrant would refuse (checked before anything is loaded or created).

    Qdrant's rule: no ``< > : " / \\ | ? *``, NUL or U+001F; we also refuse other non-printable characters (they
    make unreadable folder names in the embedded store) and names too long for the physical collection's suffix.

    Raises:
        E5VConfigError: naming the offending character or the length limit.

    Example:
        >>> check_collection_name("docs-2024.v1")
    """
    if not name:
        raise E5VConfigError("a collection name is required: pass --collection NAME")
    bad = sorted({c for c in name if c in COLLECTION_NAME_FORBIDDEN or not c.isprintable()})
    if bad:
        raise E5VConfigError(
            f"invalid collection name {name!r}: it contains {', '.join(repr(c) for c in bad)}; Qdrant refuses "
            f"{' '.join(repr(c) for c in COLLECTION_NAME_FORBIDDEN)} in names (use letters, digits, '-', '_', '.')"
        )
    if len(name) > COLLECTION_NAME_MAX:
        raise E5VConfigError(
            f"collection name {name[:40]!r}... is {len(name)} characters; at most {COLLECTION_NAME_MAX} fit Qdrant's "
            "255-character limit once the model suffix is added"
        )
