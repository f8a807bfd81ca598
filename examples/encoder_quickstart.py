"""Embed texts, images and a composed query with E5VEncoder.

Runs on a tiny random replica by default (no download, seconds on a CPU) — the scores are meaningless, the code path
is the real one. Pass --model royokong/e5-v (or a local folder) for real embeddings.

    python examples/encoder_quickstart.py [--model royokong/e5-v]
"""

import argparse
import tempfile

from e5v_qdrant import E5VEncoder
from e5v_qdrant.testing import build_replica, draw_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="hub id or folder; default: a freshly built tiny replica")
    args = parser.parse_args()
    model = args.model or build_replica(tempfile.mkdtemp(prefix="e5v-tiny-"))

    enc = E5VEncoder(model)
    texts = ["A red square on a blue background.", "Minutes of the quarterly budget meeting."]
    images = [draw_image(640, 480, seed=1), draw_image(300, 900, seed=2)]
    t = enc.embed_texts(texts)
    i = enc.embed_images(images)
    c = enc.embed_composed(images[:1], ["make the background green"])
    print(f"dim={enc.dim} dtype={enc.describe()['dtype']} device={enc.describe()['device']}")
    print("text x image cosine:\n", (t @ i.T).round(3))
    print("composed x image cosine:", (c @ i.T).round(3))


if __name__ == "__main__":
    main()
