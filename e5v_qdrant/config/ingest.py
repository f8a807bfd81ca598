"""The ingestion and search options."""

from __future__ import annotations

from dataclasses import dataclass

from ..chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE
from ..collection_names import check_collection_name
from ..errors import E5VConfigError
from ..options import Options, option
from ..points import SPARSE_ENCODERS

__all__ = ["IngestConfig", "SearchConfig"]


@dataclass
class IngestConfig(Options):
    """What `e5v-qdrant ingest` reads and how: the collection (an alias), chunking and sync behaviour."""

    collection: str = option(
        "",
        help="collection name to ingest into (an alias over a physical collection named after the model)",
        check=check_collection_name,
        required=True,
    )
    paths: list[str] = option(default_factory=list, help="files or folders to ingest", cli=False)
    sync: bool = option(False, help="delete points of files under the given folders that no longer exist")
    follow_symlinks: bool = option(
        False,
        help="also follow symlinks whose target is outside the ingested folders (links inside them are always "
        "followed, each file taken once; loops are detected and reported)",
    )
    # ---- chunking and file limits (chunking.Chunker; pipeline.plan_file)
    chunk_size: int = option(
        DEFAULT_CHUNK_SIZE,
        help="tokens per chunk by the model's tokenizer, its prompt included (small: E5-V was trained on sentences)",
    )
    chunk_overlap: int = option(DEFAULT_CHUNK_OVERLAP, help="tokens shared by consecutive chunks (model tokenizer)")
    rechunk: bool = option(
        False, help="re-chunk and re-embed unchanged files whose points another chunker made (default: keep, warn)"
    )
    max_file_bytes: int | None = option(64 << 20, help="skip larger files unread (reported as ignored); 0 = no limit")
    max_chunks_per_file: int | None = option(2000, help="warn about a file making more chunks; 0 = never warn")
    include: list[str] = option(
        default_factory=list,
        help="only take files whose name or path relative to the given folder matches one of these globs ('*.md')",
    )
    exclude: list[str] = option(
        default_factory=list, help="skip files and folders whose name or relative path matches one of these globs"
    )
    verify: bool = option(
        False,
        help="re-read and re-hash every file; by default a file whose size, mtime and inode equal what its points "
        "record is unchanged without being opened",
    )
    queue_size: int = option(
        4, help="batches buffered between the reading, embedding and writing threads (bounds memory)"
    )
    bulk_load: bool = option(
        False,
        help="server and Edge: defer HNSW index building during the run (hnsw m=0) and build it once at the end, even on failure",
    )
    hybrid: bool = option(
        False,
        help="also store a BM25 keyword (sparse) vector per text chunk for `search --hybrid` (exact codes, ids, "
        "names); recorded in the collection, so later ingests and reingest keep it",
    )
    sparse_encoder: str | None = option(
        None,
        help="keyword encoder of a --hybrid collection (implies --hybrid): e5v-bm25 (default; keeps codes whole) or "
        "qdrant-bm25 (Qdrant's own). Recorded; reingest --sparse-encoder switches it without the model",
        choices=SPARSE_ENCODERS,
    )
    pdf_pages: str = option(
        "auto",
        help="how PDFs are ingested: text = chunks of the text layer; images = every page as an image; both; "
        "auto = text chunks plus a page image for pages with little or no text (scans, slides)",
        choices=("auto", "images", "text", "both"),
    )
    engine: str = option(
        "local",
        help="local = threads in this process; ray = a Ray cluster (pip install 'e5v-qdrant[ray]')",
        choices=("local", "ray"),
    )
    ray_address: str | None = option(
        None, help="ray engine: cluster to join (auto = the running cluster); default: a local Ray instance"
    )
    replicas: int = option(1, help="ray engine: encoder replicas (actors), one model load each")
    gpus_per_replica: float | None = option(
        None, help="ray engine: GPUs per encoder replica (0 = CPU); default 1 when the cluster has GPUs, else 0"
    )
    write_concurrency: int = option(
        2, help="ray engine: parallel Qdrant write tasks (server only; the embedded store is written by the driver)"
    )

    def validate(self) -> None:
        check_collection_name(self.collection)
        if self.chunk_size < 16:
            raise E5VConfigError(f"chunk_size must be >= 16 tokens, got {self.chunk_size}")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise E5VConfigError(f"chunk_overlap must be in [0, chunk_size), got {self.chunk_overlap}")
        for name in ("max_file_bytes", "max_chunks_per_file"):  # 0 = no limit = None
            if (getattr(self, name) or 0) < 0:
                raise E5VConfigError(f"{name} must be >= 0 (0 = no limit), got {getattr(self, name)}")
            setattr(self, name, getattr(self, name) or None)
        if self.queue_size < 1:
            raise E5VConfigError(f"queue_size must be >= 1, got {self.queue_size}")
        if self.replicas < 1 or self.write_concurrency < 1:
            raise E5VConfigError(
                f"replicas and write_concurrency must be >= 1, got {self.replicas} and {self.write_concurrency}"
            )
        if self.gpus_per_replica is not None and self.gpus_per_replica < 0:
            raise E5VConfigError(f"gpus_per_replica must be >= 0, got {self.gpus_per_replica}")


@dataclass
class SearchConfig(Options):
    """How `e5v-qdrant search` ranks and filters (the query itself is its TEXT and --image)."""

    top_k: int = option(10, help="number of results", metavar="K")
    modality: str = option("any", help="only return this modality", choices=("text", "image", "any"))
    under: str | None = option(None, help="only results from files under this folder (or this file)", metavar="PATH")
    where: list[str] = option(
        default_factory=list,
        help="only results whose payload field KEY equals VALUE (repeatable, all must hold; e.g. --where page=2 "
        "--where file_name=report.pdf). A field no result has matches nothing.",
        metavar="KEY=VALUE",
        repeatable=True,
    )
    score_threshold: float | None = option(
        None, help="only results with a cosine similarity of at least S", metavar="S"
    )
    hybrid: bool = option(
        False,
        help="fuse dense results with BM25 keyword results: finds exact codes, ids and names; needs a collection "
        "ingested with --hybrid and a text query",
    )
    fusion: str = option(
        "rrf",
        help="how --hybrid fuses: rrf = reciprocal rank fusion (ranks only); dbsf = distribution-based score fusion "
        "(normalized scores summed; a strong keyword hit wins even when the dense side does not know the token, "
        "e.g. part numbers that share prefixes)",
        choices=("rrf", "dbsf"),
    )

    def validate(self) -> None:
        if self.top_k < 1:
            raise E5VConfigError(f"--top-k must be >= 1, got {self.top_k}")
