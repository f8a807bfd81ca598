"""Upsert request sizes for E5-V points: measured REST JSON / gRPC protobuf bytes vs the Ray writer's estimate.

Prints, per vector size and payload size, the bytes one point takes in the request qdrant-client actually builds
(REST: the model's JSON; gRPC: the serialized protobuf ``PointStruct``), ``ray_engine.estimate_point_bytes`` (which
must never be below the measurement: the writer packs requests by it), and how many such points fit in Qdrant's
default 32 MiB REST limit and in the writer's default 4 MiB budget. No server needed.

    python benchmarks/qdrant_request_sizes.py
"""

from __future__ import annotations

import json

import numpy as np
from qdrant_client import models
from qdrant_client.conversions.conversion import RestToGrpc

from e5v_qdrant.ingest.ray_data import REST_MAX_REQUEST_BYTES, estimate_point_bytes
from e5v_qdrant.sources import text_item
from e5v_qdrant.store import VECTOR_NAME

WRITER_BUDGET = 4 * 1024 * 1024


def measure(dim: int, text_chars: int) -> dict:
    rng = np.random.default_rng(0)
    vector = rng.normal(size=dim).astype(np.float32)
    vector /= np.linalg.norm(vector)
    item = text_item(
        "/data/docs/report.md", 3, ("Quarterly revenue grew 4%. " * 200)[:text_chars] if text_chars else "x"
    )
    payload = dict(item.payload, model_fingerprint="0123456789abcdef")
    payload_json = json.dumps(payload, ensure_ascii=False)
    point = models.PointStruct(id=item.id, vector={VECTOR_NAME: vector.tolist()}, payload=payload)
    rest = len(point.model_dump_json().encode())
    grpc = len(RestToGrpc.convert_point_struct(point).SerializeToString())
    est_rest = estimate_point_bytes(dim, payload_json, grpc=False)
    est_grpc = estimate_point_bytes(dim, payload_json, grpc=True)
    return {
        "dim": dim,
        "text": text_chars,
        "rest": rest,
        "est_rest": est_rest,
        "grpc": grpc,
        "est_grpc": est_grpc,
        "rest_per_32MiB": REST_MAX_REQUEST_BYTES // rest,
        "rest_per_4MiB": WRITER_BUDGET // est_rest,
        "grpc_per_4MiB": WRITER_BUDGET // est_grpc,
        "ok": est_rest >= rest and est_grpc >= grpc,
    }


def main() -> None:
    rows = [measure(dim, chars) for dim in (64, 1024, 4096) for chars in (0, 2000)]
    header = [
        "dim",
        "text",
        "rest",
        "est_rest",
        "grpc",
        "est_grpc",
        "rest_per_32MiB",
        "rest_per_4MiB",
        "grpc_per_4MiB",
        "ok",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")
    if not all(row["ok"] for row in rows):
        raise SystemExit("the estimate is below a measured size: the writer could exceed its request budget")


if __name__ == "__main__":
    main()
