"""soundlens.cli: the `soundlens` command."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from soundlens.cli import app
from soundlens.models import EMBEDDED


def test_models_lists_every_embedded_model_with_its_facts() -> None:
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for m in EMBEDDED.values():
        line = next(ln for ln in result.output.splitlines() if ln.startswith(m.name + " "))
        assert m.family in line and str(m.sample_rate) in line and m.packages[0] in line
        assert str(m.installed()) in line


def test_models_json_is_machine_readable() -> None:
    result = CliRunner().invoke(app, ["models", "--json"])
    data = json.loads(result.stdout)
    assert {r["name"] for r in data["embedded"]} == set(EMBEDDED)
    assert "musicgen" in data["families"]
    assert all(set(r) >= {"licence", "package", "installed", "sample_rate"} for r in
               data["embedded"])


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "soundlens.cli", "models"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "whisper-tiny.en" in out.stdout
