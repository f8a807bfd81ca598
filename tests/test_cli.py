"""The CLI skeleton: --help teaches, `info` loads through the encoder path, errors exit 2 with a readable message."""

import json
import subprocess
import sys

import pytest

from e5v_qdrant.cli import main


def test_help_lists_commands_and_defaults():
    out = subprocess.run([sys.executable, "-m", "e5v_qdrant.cli", "--help"], capture_output=True, text=True, check=True)
    assert "info" in out.stdout and "royokong/e5-v" in out.stdout and "qdrant_data" in out.stdout


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_info_json_reports_the_model_facts(replica_path, capsys):
    assert main(["info", "--model", str(replica_path), "--device", "cpu", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["dim"] == 64 and facts["dtype"] == "float32" and facts["device"] == "cpu"
    assert facts["prompts"]["image"] == "<image>\nSummary above image in one word: "
    (count,) = facts["image_tokens"].values()
    assert count > 64  # base tile plus anyres tiles


def test_info_table_with_an_image(replica_path, tmp_path, capsys):
    from e5v_qdrant.testing import draw_image

    draw_image(300, 900).save(tmp_path / "tall.png")
    assert main(["info", "--model", str(replica_path), "--image", str(tmp_path / "tall.png")]) == 0
    out = capsys.readouterr().out
    assert "tall.png" in out and "fingerprint" in out


def test_bad_model_exits_2_with_message(tmp_path, capsys):
    assert main(["info", "--model", str(tmp_path)]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_invalid_option_value_is_a_usage_error():
    with pytest.raises(SystemExit) as info:
        main(["info", "--dtype", "float8"])
    assert info.value.code == 2


# ---------------------------------------------------------------- help text: each command lists only its own options
def _help(command: str) -> str:
    """What `e5v-qdrant COMMAND --help` prints."""
    out = subprocess.run(
        [sys.executable, "-m", "e5v_qdrant.cli", command, "--help"], capture_output=True, text=True, check=True
    )
    return out.stdout


def _options(command: str) -> set[str]:
    """The option flags `e5v-qdrant COMMAND --help` lists (first column of its option lines)."""
    import re

    text = _help(command)
    found = set()
    for line in text.splitlines():
        match = re.match(r"^  (-[-\w]+(?: [A-Z_,.{}\w-]+)?(?:, -[-\w]+(?: [A-Z_,.{}\w-]+)?)*)", line)
        if match:
            found |= set(re.findall(r"(?<![\w-])(--?[a-z][-\w]*)", match.group(1)))
    return found


CREATE_OR_WRITE = {
    "--embedded",
    "--on-disk-vectors",
    "--vector-datatype",
    "--quantization",
    "--shard-number",
    "--replication-factor",
    "--write-consistency-factor",
    "--write-batch-size",
    "--write-batch-bytes",
}
SEARCH_TIME = {"--rescore", "--oversampling"}
CONNECT = {
    "--qdrant-path",
    "--qdrant-url",
    "--api-key-env",
    "--prefer-grpc",
    "--no-prefer-grpc",
    "--timeout",
    "--retries",
    "--retry-wait",
}


def test_collections_lists_only_listing_options():
    assert _options("collections") == {"-h", "--help", "--json"} | CONNECT


def test_search_and_serve_offer_no_collection_creation_or_write_options():
    search, serve = _options("search"), _options("serve")
    assert not search & CREATE_OR_WRITE and not serve & CREATE_OR_WRITE
    assert SEARCH_TIME <= search and SEARCH_TIME <= serve
    # serve: its own key and Qdrant's key have names that say which is which; the old flag is not listed
    assert {"--server-api-key-env", "--qdrant-api-key-env"} <= serve and "--api-key-env" not in serve


def test_ingest_offers_creation_options_not_search_time_ones():
    ingest = _options("ingest")
    assert CREATE_OR_WRITE <= ingest and CONNECT <= ingest and not ingest & SEARCH_TIME


def test_defaults_are_shown_where_they_apply():
    ingest = " ".join(_help("ingest").split())
    assert "(default: as recorded in the collection, else royokong/e5-v)" in ingest
    assert "(default: as recorded in the collection, else paper)" in ingest  # --image-layout
    assert "info --help" not in ingest
    assert "(default: 128)" in ingest and "(default: 64)" in ingest  # --chunk-size, --write-batch-size
    search = " ".join(_help("search").split())
    assert "default: as recorded in the collection, else no limit" in search  # --max-text-tokens
    assert "(default: 2.0)" in search and "(default: 10)" in search  # --oversampling, --top-k
    serve = " ".join(_help("serve").split())
    assert "(default: 127.0.0.1)" in serve and "(default: 8000)" in serve


def test_serve_old_api_key_flag_is_a_deprecated_alias(capsys):
    from e5v_qdrant.cli import build_parser

    with pytest.warns(FutureWarning, match="--server-api-key-env"):
        args = build_parser().parse_args(["serve", "--api-key-env", "MY_SERVER_KEY"])
    assert args.api_key_env == "MY_SERVER_KEY"  # ServeConfig.api_key_env: the server's own key
    rc = main(["serve", "--model", "/nonexistent/e5v", "--api-key-env", "E5V_NO_SUCH_KEY_SET"])
    assert rc == 2
    assert "e5v-qdrant: warning: --api-key-env is deprecated here, use --server-api-key-env" in capsys.readouterr().err


# ---------------------------------------------------------------- one collection-name rule; read-only commands
@pytest.mark.parametrize(
    "command",
    [
        ["ingest", "."],
        ["search", "query"],
        ["reingest", "--model", "m"],
        ["migrate", "--to-path", "x"],
    ],
)
def test_every_command_refuses_the_same_bad_collection_names(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for bad in ("a/b", "what?", "tab\tname", "x" * 300):
        with pytest.raises(SystemExit) as info:
            main([*command, "--collection", bad])
        assert info.value.code == 2
        assert "argument --collection: " in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # refused while parsing: nothing created


@pytest.mark.parametrize(
    "command",
    [
        ["search", "query", "--collection", "docs"],
        ["collections"],
        ["reingest", "--collection", "docs", "--model", "m"],
        ["migrate", "--collection", "docs", "--to-path", "elsewhere"],
    ],
)
@pytest.mark.parametrize("where", [[], ["--qdrant-path", "missing"], ["--qdrant-path", "empty"]])
def test_commands_on_a_missing_store_exit_2_and_create_nothing(command, where, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert main([*command, *where]) == 2
    err = capsys.readouterr().err
    folder = where[-1] if where else "qdrant_data"
    assert f"no store at {str(tmp_path / folder)!r}: ingest into it first, or pass --qdrant-path" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["empty"]  # no store folder, lock, manifest


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_serve_on_a_missing_store_exits_2_and_creates_nothing(folder, tmp_path, monkeypatch, capsys):
    """Checked before the model loads (``m`` is no model) or a port is bound; without --qdrant-path search is off."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert main(["serve", "--model", "m", "--qdrant-path", folder]) == 2
    assert f"no store at {str(tmp_path / folder)!r}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["empty"]


def test_offline_hub_model_fails_fast_once_naming_a_local_folder(tmp_path):
    import os

    env = {
        **os.environ,
        "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens on the discard port: like no network
        "HF_HOME": str(tmp_path / "hf"),  # an empty hub cache
    }
    env.pop("HF_HUB_OFFLINE", None)
    out = subprocess.run(
        [sys.executable, "-m", "e5v_qdrant.cli", "info", "--device", "cpu"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 2
    assert "cannot download 'royokong/e5-v'" in out.stderr and "Pass --model /path/to/e5-v" in out.stderr
    # before: each hub request retried 5 times (1-8 s back-off, ~23 s of sleeping), every warning printed twice
    assert "Retrying" not in out.stderr and out.stderr.count("error:") == 1 and len(out.stderr.splitlines()) == 1
