"""Validated option dataclasses: the single source of options, defaults and help text for the CLI and Python API.

Each field is declared once with ``options.option`` (help text, choices, whether it changes vectors, …);
``cli.arguments.add_arguments`` turns a dataclass into argparse options and ``from_namespace`` builds the validated
dataclass back from parsed arguments, so the CLI cannot drift from the API. Declared choices are validated by the
``Options`` base; each class's ``validate`` checks the rest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .anyres import DEFAULT_LAYOUT, LAYOUTS
from .chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE
from .collection_names import COLLECTION_NAME_FORBIDDEN, COLLECTION_NAME_MAX, check_collection_name
from .errors import E5VConfigError
from .media import DEFAULT_MAX_IMAGE_PIXELS
from .options import Options, at_least_1, from_namespace, namespace_options, option
from .points import SPARSE_ENCODERS

__all__ = [
    "EncoderConfig",
    "StoreConfig",
    "IngestConfig",
    "SearchConfig",
    "FinetuneConfig",
    "EvalConfig",
    "ServeConfig",
    "Options",
    "option",
    "from_namespace",
    "namespace_options",
    "check_collection_name",
    "COLLECTION_NAME_FORBIDDEN",
    "COLLECTION_NAME_MAX",
    "DEFAULT_MODEL",
    "DTYPE_NAMES",
]

DEFAULT_MODEL = "royokong/e5-v"
DTYPE_NAMES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class EncoderConfig(Options):
    """How to load and run E5-V. Everything that changes the vectors lives here."""

    model: str = option(DEFAULT_MODEL, help="hub id or local folder of an E5-V / LLaVA-NeXT checkpoint", vectors=True)
    revision: str | None = option(
        None, help="hub revision (branch, tag or commit) to pin; reaches every from_pretrained call", vectors=True
    )
    adapter: str | None = option(
        None,
        help="folder of a PEFT LoRA adapter from `e5v-qdrant finetune`, applied to the language model",
        vectors=True,
    )
    device: str | None = option(
        None, help="torch device (cpu, cuda, cuda:1, mps); default: cuda if available, else cpu"
    )
    dtype: str = option(
        "auto", help="weights dtype; auto = bfloat16 (or float16) on CUDA, float32 on CPU", choices=DTYPE_NAMES
    )
    batch_size: int = option(8, help="most items per forward pass")
    max_batch_tokens: int | None = option(
        None,
        help="token budget per forward pass (batch rows × longest row); default: 1024 on CPU, batch_size × 512 on GPU",
    )
    prompts: str = option(
        "e5v", help="prompt preset (e5v = the authors' exact strings; e5v-typofix fixes 'desribe')", vectors=True
    )
    query_prompt: str | None = option(
        None,
        help="body for search queries with a {text} placeholder; default: queries use the document text prompt",
        vectors=True,
        query_time=True,
    )
    max_text_tokens: int | None = option(
        None,
        help="truncate user text to this many tokens before prompting (paper training used 32); default: no limit",
        vectors=True,
    )
    max_image_pixels: int | None = option(
        DEFAULT_MAX_IMAGE_PIXELS, help="refuse images with more pixels (decompression bombs)"
    )
    preprocess_workers: int = option(
        2, help="threads decoding and tiling images ahead of the model (0 = in the calling thread)"
    )
    attn_implementation: str = option(
        "sdpa", help="transformers attention implementation", choices=("sdpa", "eager", "flash_attention_2")
    )
    reuse_cpu_memory: bool = option(
        False,
        help="on CPU with glibc, keep memory freed between forward passes in the heap for the length of an embed "
        "call instead of unmapping it and page-faulting it back in (sets glibc's process-wide mmap/trim thresholds "
        "for the call, then returns the memory to the OS); vectors are unchanged. Default: on for the command line, "
        "off for the Python API (it changes allocator settings of the whole host process)",
        cli_default=True,
    )
    image_layout: str = option(
        DEFAULT_LAYOUT,
        help="how images become tokens: paper = the authors' environment (transformers 4.41.2), where every published "
        "E5-V image number was measured; llava-next = today's transformers, the original LLaVA-NeXT code and vLLM. "
        "They differ for images whose best anyres grid is non-square (3:2 photos such as 500x333, small squares, "
        "documents, panoramas); a collection holds one layout",
        choices=LAYOUTS,
        vectors=True,
    )

    def validate(self) -> None:
        if self.batch_size < 1:
            raise E5VConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_batch_tokens is not None and self.max_batch_tokens < 1:
            raise E5VConfigError(f"max_batch_tokens must be >= 1, got {self.max_batch_tokens}")
        if self.max_text_tokens is not None and self.max_text_tokens < 1:
            raise E5VConfigError(f"max_text_tokens must be >= 1, got {self.max_text_tokens}")
        if self.preprocess_workers < 0:
            raise E5VConfigError(f"preprocess_workers must be >= 0, got {self.preprocess_workers}")
        if not self.model:
            raise E5VConfigError("model must be a hub id or a local folder")
        if self.adapter is not None and not os.path.isdir(self.adapter):
            raise E5VConfigError(
                f"adapter folder {self.adapter!r} does not exist (pass the --output folder of `e5v-qdrant finetune`)"
            )
        from .prompts import get_prompts

        get_prompts(self.prompts, query=self.query_prompt)  # validates preset name and placeholders


#: ``scope`` of the ``StoreConfig`` options used only to create collections, to write points, or to search; a command
#: offers the scopes it uses (``add_arguments(..., scopes=...)``); options without one (where the store is, how to
#: reach it) are offered by every command that opens a store.
CREATE, WRITE, SEARCH = "create", "write", "search"


@dataclass
class StoreConfig(Options):
    """Where vectors go: embedded Qdrant in a folder (default) or a Qdrant server / cluster by URL."""

    qdrant_path: str | None = option(
        None,
        help="folder of the embedded Qdrant store; default ./qdrant_data when no --qdrant-url is given",
    )
    qdrant_url: str | None = option(None, help="URL of a Qdrant server or cluster, e.g. http://localhost:6333")
    embedded: str | None = option(
        None,
        help="engine of the embedded store folder: edge = Qdrant Edge (the Qdrant engine in-process: HNSW, "
        "quantization, mmap; scales past 100k points) or local = qdrant-client local mode (pure Python, all in RAM); "
        "default: the engine of an existing folder (never converted), edge for a new one",
        choices=("edge", "local"),
        scope=CREATE,
    )
    api_key_env: str = option(
        "QDRANT_API_KEY",
        help="name of the environment variable holding the Qdrant server's API key (keys are never taken from argv)",
    )
    prefer_grpc: bool = option(False, help="talk gRPC to the server (port 6334) instead of REST")
    timeout: float = option(60.0, help="seconds before a Qdrant request times out")
    write_batch_size: int = option(
        64, help="points per upsert request (Qdrant advises 64-256 points, under ~5 MB)", scope=WRITE, check=at_least_1
    )
    retries: int = option(
        6, help="attempts per Qdrant request on transient errors (timeouts, resets, 5xx, lock contention)"
    )
    retry_wait: float = option(0.5, help="first back-off in seconds between retries; doubles each attempt (max 30 s)")
    on_disk_vectors: bool = option(
        False, help="server and Edge: keep vectors on disk (memmap) instead of RAM; ignored by local mode", scope=CREATE
    )
    vector_datatype: str = option(
        "float32",
        help="server and Edge: stored vector precision (float16 halves memory); ignored by local mode",
        choices=("float32", "float16"),
        scope=CREATE,
    )
    quantization: str = option(
        "none",
        help="server and Edge: int8 = scalar quantization (4x smaller), binary = 1 bit per dimension (32x smaller), "
        "both kept in RAM and rescored with the original vectors at search time; ignored by local mode",
        choices=("none", "int8", "binary"),
        scope=CREATE,
    )
    shard_number: int | None = option(
        None, help="server/cluster only: shards of a new collection (default: server's)", scope=CREATE
    )
    replication_factor: int | None = option(
        None, help="server/cluster only: replicas of each shard of a new collection", scope=CREATE
    )
    write_consistency_factor: int | None = option(
        None,
        help="server/cluster only: replicas that must acknowledge each write of a new collection (<= replication_factor)",
        scope=CREATE,
    )
    rescore: bool = option(
        True,
        help="with quantization: re-rank the quantized candidates with the original vectors at search time",
        scope=SEARCH,
    )
    oversampling: float = option(
        2.0, help="with quantization: fetch top_k x this many quantized candidates before rescoring", scope=SEARCH
    )
    #: HNSW (server and Edge); None = the store's measured defaults (store/hnsw.py), recorded in each collection
    hnsw_m: int | None = option(None, help="HNSW edges per node of a new collection", scope=CREATE, check=at_least_1)
    hnsw_ef_construct: int | None = option(None, help="HNSW build candidates", scope=CREATE, check=at_least_1)
    hnsw_ef: int | None = option(None, help="HNSW search candidates (recall vs speed)", scope=SEARCH, check=at_least_1)
    write_batch_bytes: int = option(
        4 * 1024 * 1024,
        help="most estimated bytes per upsert request of the Ray engine's writer (REST servers refuse bodies over 32 MiB)",
        scope=WRITE,
    )

    def validate(self) -> None:
        if self.qdrant_path and self.qdrant_url:
            raise E5VConfigError("give either --qdrant-path (embedded store) or --qdrant-url (server), not both")
        if self.timeout <= 0:
            raise E5VConfigError(f"timeout must be > 0, got {self.timeout}")
        if self.retries < 1:
            raise E5VConfigError(f"retries must be >= 1 (1 = no retry), got {self.retries}")
        if self.retry_wait < 0:
            raise E5VConfigError(f"retry_wait must be >= 0, got {self.retry_wait}")
        if self.oversampling < 1:
            raise E5VConfigError(f"oversampling must be >= 1, got {self.oversampling}")
        if self.write_batch_bytes < 1024:
            raise E5VConfigError(f"write_batch_bytes must be >= 1024, got {self.write_batch_bytes}")
        if (
            self.write_consistency_factor is not None
            and self.replication_factor is not None
            and self.write_consistency_factor > self.replication_factor
        ):
            raise E5VConfigError(
                f"write_consistency_factor ({self.write_consistency_factor}) cannot exceed replication_factor "
                f"({self.replication_factor}): a write would wait for replicas that do not exist"
            )
        for name in ("shard_number", "replication_factor", "write_consistency_factor"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise E5VConfigError(f"{name} must be >= 1, got {value}")

    @property
    def api_key(self) -> str | None:
        """The API key read from ``api_key_env`` (never logged)."""
        return os.environ.get(self.api_key_env) or None

    @property
    def resolved_path(self) -> str | None:
        """The embedded store folder, or ``None`` for a server."""
        if self.qdrant_url:
            return None
        return self.qdrant_path or "qdrant_data"


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


#: LoRA targets of the paper: every attention and MLP projection of the Llama text model.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class FinetuneConfig(Options):
    """Text-only LoRA fine-tuning of E5-V's language model. Defaults are the paper's recipe (arXiv 2407.12580 §4).

    Feeds both ``e5v-qdrant finetune`` and ``e5v_qdrant.finetune.finetune(config)``.
    """

    train: str | None = option(
        None,
        help="training file: JSONL with anchor, positive and optional negative keys, or CSV with header sent0,sent1[,hard_neg]",
        required=True,
        metavar="FILE",
    )
    output: str | None = option(
        None,
        help="output folder: PEFT adapter, manifest.json, metrics.json, checkpoints/ (and merged/)",
        required=True,
        metavar="DIR",
    )
    model: str = option(DEFAULT_MODEL, help="hub id or local folder of the E5-V / LLaVA-NeXT checkpoint to adapt")
    revision: str | None = option(None, help="hub revision of --model to pin (recorded in the manifest)")
    eval: str | None = option(
        None, help="held-out triplet file (same formats); recall@1 of anchor→positive is measured before and after"
    )
    prompts: str = option("e5v", help="prompt preset to train with; use the same preset at inference")
    epochs: int = option(2, help="passes over the training file (ignored when --max-steps is given)")
    max_steps: int | None = option(
        None, help="stop after this many optimizer steps (overrides --epochs; the paper quotes 1000)"
    )
    batch_size: int = option(
        768,
        help="global contrastive batch (rows per step, summed over all GPUs); every row sees all others as negatives",
    )
    gradcache_chunk_size: int | None = option(
        24,
        help="GradCache: inputs per forward pass, so a large batch fits in small memory (0 = whole local batch in one pass)",
    )
    lr: float = option(4e-4, help="peak AdamW learning rate")
    warmup_steps: int = option(100, help="linear warmup steps, then linear decay to 0")
    weight_decay: float = option(0.0, help="AdamW weight decay")
    max_grad_norm: float | None = option(
        1.0, help="clip the LoRA gradient norm (transformers Trainer default; 0 = off)"
    )
    temperature: float = option(0.05, help="InfoNCE temperature τ (logits = cosine / τ)")
    lora_r: int = option(64, help="LoRA rank")
    lora_alpha: int = option(16, help="LoRA alpha (scale = alpha / r)")
    lora_dropout: float = option(0.05, help="dropout on the LoRA input")
    lora_targets: list[str] = option(
        help="language-model modules that get LoRA (the paper: all attention and MLP projections)",
        default_factory=lambda: list(LORA_TARGETS),
    )
    max_length: int = option(
        32, help="truncate each sentence to this many tokens before the prompt is added (paper: 32)"
    )
    seed: int = option(42, help="seed for LoRA init, data order and dropout")
    dtype: str = option(
        "auto", help="base weights dtype; auto = bfloat16 (or float16) on CUDA, float32 on CPU", choices=DTYPE_NAMES
    )
    device: str | None = option(
        None, help="torch device; default cuda (cuda:LOCAL_RANK under torchrun) if available, else cpu"
    )
    load_in_4bit: bool = option(
        False, help="QLoRA: 4-bit NF4 base weights (needs CUDA and bitsandbytes), as the paper trained"
    )
    grad_checkpointing: bool = option(
        False, help="recompute activations in the backward pass (less memory, slower steps)"
    )
    checkpoint_every: int = option(
        200, help="save adapter + optimizer + scheduler + RNG state every N steps (0 = only at the end)"
    )
    keep_checkpoints: int = option(
        2, help="how many most recent checkpoints to keep under OUTPUT/checkpoints (0 = all)"
    )
    resume: str | None = option(
        None, help="continue from a checkpoint folder, or 'latest' for the newest under OUTPUT/checkpoints"
    )
    merge: bool = option(
        False, help="also write a full merged LLaVA-NeXT checkpoint (vision tower included) to OUTPUT/merged"
    )
    eval_batch_size: int = option(32, help="texts per forward pass when measuring recall@1")
    show_progress: bool = option(True, help="tqdm progress bar", cli=False)

    def validate(self) -> None:
        if not self.train:
            raise E5VConfigError("a training file is required (--train FILE, JSONL or CSV)")
        if not self.output:
            raise E5VConfigError("an output folder is required (--output DIR)")
        positive = {
            "epochs": self.epochs,
            "lr": self.lr,
            "temperature": self.temperature,
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "max_length": self.max_length,
            "eval_batch_size": self.eval_batch_size,
        }
        for name, value in positive.items():
            if value <= 0:
                raise E5VConfigError(f"{name} must be > 0, got {value}")
        if self.batch_size < 2:
            raise E5VConfigError(
                f"batch_size must be >= 2 (a contrastive batch needs negatives), got {self.batch_size}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise E5VConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        for name in ("warmup_steps", "checkpoint_every", "keep_checkpoints", "weight_decay"):
            if getattr(self, name) < 0:
                raise E5VConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.gradcache_chunk_size is not None and self.gradcache_chunk_size < 0:
            raise E5VConfigError(f"gradcache_chunk_size must be >= 1 (or 0 = off), got {self.gradcache_chunk_size}")
        if not 0 <= self.lora_dropout < 1:
            raise E5VConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_targets:
            raise E5VConfigError("lora_targets must name at least one module (e.g. q_proj v_proj)")
        self.lora_targets = list(self.lora_targets)
        from .prompts import get_prompts

        get_prompts(self.prompts)


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


@dataclass
class ServeConfig(Options):
    """How `e5v-qdrant serve` listens, batches and limits requests (feeds ``e5v_qdrant.server.create_app`` too)."""

    host: str = option(
        "127.0.0.1",
        help="interface to bind; 0.0.0.0 exposes the server to the network (then also set --server-api-key-env)",
    )
    port: int = option(8000, help="TCP port to listen on")
    api_key_env: str | None = option(
        None,
        help="name of an environment variable holding a key clients must send as 'Authorization: Bearer KEY' "
        "(the key is never logged or taken from argv); default: no key. Qdrant's own key: --qdrant-api-key-env",
        flag="--server-api-key-env",
        deprecated_flags=("--api-key-env",),
    )
    served_model_name: str | None = option(
        None, help="model name listed by /v1/models and echoed in responses; default: the --model value"
    )
    max_batch_size: int = option(32, help="most inputs coalesced from concurrent requests into one encoder call")
    max_wait_ms: float = option(
        5.0, help="how long the first waiting request holds its batch open for others to join (milliseconds)"
    )
    max_coalesced_tokens: int = option(
        16384,
        help="token budget of one coalesced encoder call (prompted text tokens + image tokens); a single larger "
        "request still runs, alone",
    )
    max_items: int = option(256, help="most inputs in one request (more gets 413)")
    max_body_bytes: int = option(
        32 * 1024 * 1024, help="largest request body in bytes (more gets 413); base64 images count here"
    )
    max_queue: int = option(4096, help="most inputs waiting for the model; beyond it requests get 503 (back-pressure)")
    max_top_k: int = option(100, help="largest top_k a /v1/search request may ask for")
    # hardening (issue 28): cheap limits before expensive work, no unauthenticated exposure by accident
    max_input_tokens: int | None = option(
        None,
        help="most tokens one input may have (the prompted text; with an image, its tokens too); more gets 400 "
        "naming the limit. Default: the model's context (max_position_embeddings)",
    )
    max_input_chars: int | None = option(
        None,
        help="most characters one text may have, checked before any tokenizing; more gets 400 naming the limit. "
        "Default: 16 x max_input_tokens",
    )
    allow_unauthenticated: bool = option(
        False,
        help="serve without an API key on a --host other than loopback (a warning is logged); without it such a "
        "server refuses to start",
    )

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise E5VConfigError(f"port must be in 0..65535, got {self.port}")
        if self.max_wait_ms < 0:
            raise E5VConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        for name in ("max_batch_size", "max_coalesced_tokens", "max_items", "max_body_bytes", "max_queue", "max_top_k",
                     "max_input_tokens", "max_input_chars"):  # fmt: skip
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise E5VConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.api_key_env is not None and not self.api_key_env:
            raise E5VConfigError("api_key_env must name an environment variable, e.g. E5V_API_KEY")

    @property
    def api_key(self) -> str | None:
        """The bearer key read from ``api_key_env`` (never logged).

        Raises:
            E5VConfigError: ``api_key_env`` names a variable that is unset or empty.
        """
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise E5VConfigError(
                f"--server-api-key-env {self.api_key_env}: that environment variable is unset or empty; export the "
                "key in it, or drop --server-api-key-env to serve without a key"
            )
        return key
