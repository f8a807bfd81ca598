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
