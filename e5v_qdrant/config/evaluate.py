"""The evaluation options."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import E5VConfigError
from ..options import Options, option

__all__ = ["EvalConfig"]


@dataclass
class EvalConfig(Options):
    """Options shared by the `e5v-qdrant eval` commands (the data options are each command's own)."""

    report: str | None = option(None, help="also write the numbers and run facts as JSON to this file")
    limit: int | None = option(
        None, help="evaluate only the first N images / queries / pairs / rows (quick checks; flagged in the report)"
    )
    via_qdrant: bool = option(
        False,
        help="also rank by exact search in a temporary Qdrant collection (local mode, or --qdrant-url) to catch storage-side loss",
    )
    progress: bool = option(True, help="show tqdm progress bars while embedding")

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise E5VConfigError(f"limit must be >= 1, got {self.limit}")
