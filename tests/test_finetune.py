"""End-to-end fine-tuning on a tiny replica (CPU): learning a synthetic domain, merged export, resume, options.

The synthetic domain: 12 "products", each with an anchor code word and a *different* positive code word (random
letter strings). Rows wrap the codes in random filler words; the held-out split uses new filler combinations. The
base model cannot relate the two code words (recall@1 near chance, 1/12); a LoRA that learned the pairing can.
"""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from served import free_port

from e5v_qdrant.cli import main
from e5v_qdrant.config import FinetuneConfig
from e5v_qdrant.errors import E5VConfigError
from e5v_qdrant.evaluate import file_sha256
from e5v_qdrant.finetune import finetune, read_manifest
from e5v_qdrant.testing import ReplicaSpec, build_replica, draw_image

TOPICS = 12
FILLER = "cat dog river street bread ticket park snow cabin flour table city ball field bench".split()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead (and the CPU is shared)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(scope="module")
def train_replica(tmp_path_factory):
    return build_replica(tmp_path_factory.mktemp("ft") / "e5v-tiny", ReplicaSpec(legacy_weight_names=True))


def _domain(seed: int = 0):
    rng = random.Random(seed)
    letters = "bcdfghjklmnpqrstvwxz"

    def code():
        return "".join(rng.choice(letters) for _ in range(4))

    topics = [(code(), code()) for _ in range(TOPICS)]

    def row(k):
        a, b = topics[k]
        return {
            "anchor": f"{' '.join(rng.sample(FILLER, 2))} {a}",
            "positive": f"{b} {' '.join(rng.sample(FILLER, 2))}",
        }

    train = [row(k) for k in range(TOPICS) for _ in range(8)]
    held_out = [row(k) for k in range(TOPICS)]
    seen = {(r["anchor"], r["positive"]) for r in train}
    held_out = [r for r in held_out if (r["anchor"], r["positive"]) not in seen]
    return train, held_out


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(train_replica, tmp_path_factory):
    """One CLI run on the synthetic domain (GradCache chunks, merge) shared by the tests below."""
    root = tmp_path_factory.mktemp("ft-run")
    train, held_out = _domain()
    train_file, eval_file = _write_jsonl(root / "train.jsonl", train), _write_jsonl(root / "eval.jsonl", held_out)
    out = root / "out"
    code = main(
        [
            "finetune",
            "--train",
            str(train_file),
            "--eval",
            str(eval_file),
            "--output",
            str(out),
            "--model",
            str(train_replica),
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--max-steps",
            "80",
            "--batch-size",
            "12",
            "--gradcache-chunk-size",
            "8",
            "--lr",
            "3e-3",
            "--warmup-steps",
            "5",
            "--lora-r",
            "8",
            "--lora-alpha",
            "16",
            "--checkpoint-every",
            "0",
            "--seed",
            "0",
            "--merge",
        ]
    )
    assert code == 0
    return {"out": out, "train": train_file, "held_out": held_out}


def _encoder(model, **kw):
    from e5v_qdrant import E5VEncoder

    return E5VEncoder(model, device="cpu", dtype="float32", batch_size=8, **kw)


def _recall_at_1(enc, rows) -> float:
    q = enc.embed_texts([r["anchor"] for r in rows])
    d = enc.embed_texts([r["positive"] for r in rows])
    return float(np.mean((q @ d.T).argmax(1) == np.arange(len(rows))))


def test_adapter_beats_base_on_held_out_domain(trained, train_replica):
    held_out = trained["held_out"]
    assert len(held_out) >= 10
    base = _recall_at_1(_encoder(train_replica), held_out)
    adapted = _recall_at_1(_encoder(train_replica, adapter=str(trained["out"])), held_out)
    print(f"held-out recall@1 over {len(held_out)} queries: base {base:.3f}, adapted {adapted:.3f}")
    assert adapted >= base + 0.3 and adapted >= 0.5

    metrics = json.loads((trained["out"] / "metrics.json").read_text())
    losses = [s["loss"] for s in metrics["steps"]]
    assert [s["step"] for s in metrics["steps"]] == list(range(1, 81))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    # the trainer's own eval (training-side embedding path) agrees with the encoder's
    assert metrics["eval_before"]["recall@1"] == pytest.approx(base, abs=1e-6)
    assert metrics["eval_after"]["recall@1"] == pytest.approx(adapted, abs=1e-6)
    lrs = [s["lr"] for s in metrics["steps"]]
    assert lrs[0] == 0 < lrs[4] < lrs[5] and lrs[5] == pytest.approx(3e-3)  # 5 warmup steps
    assert lrs[5] > lrs[10] > lrs[-1] > 0  # then linear decay


def test_manifest_records_model_prompt_data_and_config(trained, train_replica):
    manifest = read_manifest(trained["out"])
    enc = _encoder(train_replica)
    assert manifest["base_model"] == str(train_replica)
    assert manifest["prompt"]["text"] == enc.prompts.for_text("{text}")
    assert manifest["data"]["train"]["sha256"] == file_sha256(trained["train"])
    assert manifest["data"]["train"]["rows"] == TOPICS * 8
    assert manifest["config"]["lora_r"] == 8 and manifest["config"]["max_length"] == 32
    assert manifest["merged"] == "merged" and manifest["metrics"]["eval_after"]["recall@1"] > 0
    assert manifest["image_layout"] == "paper"  # images are not trained; the inference default is recorded
    adapter_config = json.loads((trained["out"] / "adapter_config.json").read_text())
    assert set(adapter_config["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }


def test_merged_checkpoint_equals_adapter_for_text_and_images(trained, train_replica):
    merged_dir = trained["out"] / "merged"
    adapter = _encoder(train_replica, adapter=str(trained["out"]))
    merged = _encoder(merged_dir)
    base = _encoder(train_replica)
    texts = [r["anchor"] for r in trained["held_out"][:4]] + ["", "A cat sits on the warm windowsill."]
    images = [draw_image(500, 300, seed=1), draw_image(300, 640, seed=2)]
    for name, embed in (
        ("text", lambda e: e.embed_texts(texts)),
        ("image", lambda e: e.embed_images(images)),
        ("composed", lambda e: e.embed_composed(images, ["make it red", "at night"])),
    ):
        a, m, b = embed(adapter), embed(merged), embed(base)
        cos = np.sum(a * m, axis=1)
        assert cos.min() >= 0.9999, f"{name}: merged vs adapter cosine {cos}"
        assert np.sum(a * b, axis=1).min() < 0.999, f"{name}: the adapter changed nothing, the comparison is void"

    # A full LLaVA-NeXT checkpoint: vision tower, projector, lm_head untouched; vocabulary sizes consistent.
    from transformers import LlavaNextForConditionalGeneration

    orig = LlavaNextForConditionalGeneration.from_pretrained(train_replica).state_dict()
    new = LlavaNextForConditionalGeneration.from_pretrained(merged_dir)
    new_sd = new.state_dict()
    assert set(orig) == set(new_sd)
    for key in orig:
        same = torch.equal(orig[key], new_sd[key])
        if (
            key.startswith(("model.vision_tower", "model.multi_modal_projector", "model.image_newline", "lm_head"))
            or "embed_tokens" in key
        ):
            assert same, f"{key} changed"
        if "language_model" in key and key.endswith(("q_proj.weight", "down_proj.weight")):
            assert not same, f"{key} did not get the LoRA update"
    rows = new.get_input_embeddings().num_embeddings
    assert rows == new.lm_head.out_features == new.config.text_config.vocab_size
    assert any(f.name.endswith(".safetensors") for f in merged_dir.iterdir())
    assert (merged_dir / "processor_config.json").exists() or (merged_dir / "preprocessor_config.json").exists()


def _small_config(replica, data_file, out, **kw) -> FinetuneConfig:
    options = dict(
        train=str(data_file),
        output=str(out),
        model=str(replica),
        device="cpu",
        dtype="float32",
        max_steps=6,
        batch_size=6,
        gradcache_chunk_size=5,
        lr=5e-3,
        warmup_steps=2,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.1,
        checkpoint_every=2,
        keep_checkpoints=1,
        seed=3,
        show_progress=False,
    )
    options.update(kw)
    return FinetuneConfig(**options)


def test_resume_continues_and_matches_uninterrupted_run(train_replica, tmp_path):
    """Interrupted after step 5 (checkpoint at 4), resumed with --resume latest: steps continue at 5 and the final
    adapter equals the uninterrupted run's (bitwise on CPU; asserted to 1e-6 absolute)."""
    train, _ = _domain(seed=1)
    negatives = [dict(r, negative=train[(i + 7) % len(train)]["positive"]) for i, r in enumerate(train[:24])]
    data = _write_jsonl(tmp_path / "train.jsonl", negatives)
    full = finetune(_small_config(train_replica, data, tmp_path / "a"))

    class Stop(Exception):
        pass

    def interrupt(step, loss):
        if step == 5:
            raise Stop

    with pytest.raises(Stop):
        finetune(_small_config(train_replica, data, tmp_path / "b"), on_step=interrupt)
    assert [p.name for p in sorted((tmp_path / "b" / "checkpoints").iterdir())] == ["step-0000004"]  # keep 1
    assert not (tmp_path / "b" / "adapter_model.safetensors").exists()

    seen = []
    resumed = finetune(
        _small_config(train_replica, data, tmp_path / "b", resume="latest"),
        on_step=lambda step, loss: seen.append(step),
    )
    assert seen == [5, 6]
    assert [s["step"] for s in resumed.metrics["steps"]] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(
        [s["loss"] for s in resumed.metrics["steps"]], [s["loss"] for s in full.metrics["steps"]], rtol=0, atol=1e-6
    )
    a = load_file(tmp_path / "a" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)
    start = load_file(tmp_path / "b" / "checkpoints" / "step-0000004" / "adapter_model.safetensors")
    assert any(not torch.equal(start[k], a[k]) for k in a)  # steps 5-6 really trained

    with pytest.raises(E5VConfigError, match="options differ"):
        finetune(_small_config(train_replica, data, tmp_path / "b", resume="latest", lr=1e-3))


def test_gradient_checkpointing_gives_the_same_training(train_replica, tmp_path):
    train, _ = _domain(seed=2)
    data = _write_jsonl(tmp_path / "train.jsonl", train[:12])
    runs = [
        finetune(
            _small_config(
                train_replica, data, tmp_path / f"gc{flag}", max_steps=2, checkpoint_every=0, grad_checkpointing=flag
            )
        )
        for flag in (False, True)
    ]
    np.testing.assert_allclose(
        [s["loss"] for s in runs[1].metrics["steps"]], [s["loss"] for s in runs[0].metrics["steps"]], rtol=1e-5
    )
    a, b = (load_file(r.adapter / "adapter_model.safetensors") for r in runs)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6)


def test_qlora_without_cuda_is_a_clear_error(train_replica, tmp_path):
    train, _ = _domain()
    data = _write_jsonl(tmp_path / "train.jsonl", train[:12])
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the 4-bit path is available here")
    with pytest.raises(E5VConfigError, match="needs CUDA and bitsandbytes"):
        finetune(_small_config(train_replica, data, tmp_path / "q", load_in_4bit=True))


def test_batch_larger_than_data_is_refused(train_replica, tmp_path):
    data = _write_jsonl(tmp_path / "train.jsonl", _domain()[0][:4])
    with pytest.raises(E5VConfigError, match="fewer than one batch"):
        finetune(_small_config(train_replica, data, tmp_path / "x", batch_size=8))


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(train_replica, tmp_path):
    """`torchrun --nproc-per-node 2 ... finetune` (gloo on CPU): each rank embeds half of every global batch; the
    gathered loss and summed gradients must give the single-process adapter (float32 noise: 1e-6 absolute)."""
    import os
    import subprocess
    import sys

    train, _ = _domain(seed=4)
    data = _write_jsonl(tmp_path / "train.jsonl", train[:32])
    args = ["--train", str(data), "--model", str(train_replica), "--device", "cpu", "--dtype", "float32",
            "--max-steps", "3", "--batch-size", "8", "--gradcache-chunk-size", "5", "--lora-r", "4",
            "--lora-dropout", "0", "--warmup-steps", "1", "--lr", "5e-3", "--checkpoint-every", "2", "--seed", "5"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "e5v_qdrant.cli", "finetune", *args, "--output", str(tmp_path / "ddp")]  # fmt: skip
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sum(line.startswith("adapter") for line in run.stdout.splitlines()) == 1  # only rank 0 reports
    assert {p.name for p in (tmp_path / "ddp" / "checkpoints" / "step-0000002").iterdir()} >= {
        "rng-rank0.pt",
        "rng-rank1.pt",
        "training_state.pt",
        "adapter_model.safetensors",
    }
    assert main(["finetune", *args, "--output", str(tmp_path / "one")]) == 0
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())["steps"]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())["steps"]
    np.testing.assert_allclose([s["loss"] for s in ddp], [s["loss"] for s in one], rtol=1e-5)
    a = load_file(tmp_path / "ddp" / "adapter_model.safetensors")
    b = load_file(tmp_path / "one" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
