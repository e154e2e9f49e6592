"""mapshell: every command listed with a line of help; erd draws one image per schema."""

from __future__ import annotations

import os
import subprocess
import sys

from pipeline.shell import COMMANDS, build_parser, main

SHELL = [sys.executable, "-m", "pipeline.shell"]


def test_help_lists_every_command_with_a_line():
    result = subprocess.run([*SHELL, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    build_parser()
    for name in ("config", "db", "erd", "load-subjects", "shell"):
        assert name in COMMANDS
    for name, command in COMMANDS.items():
        assert name in result.stdout
        assert command.help.split()[0] in result.stdout


def test_console_script_and_wrapper_agree():
    wrapper = subprocess.run([sys.executable, "scripts/mapshell.py", "--help"], capture_output=True, text=True, timeout=60,
                             cwd=os.path.dirname(os.path.dirname(__file__)))
    assert wrapper.returncode == 0 and "load-subjects" in wrapper.stdout


def test_erd_writes_an_image_per_schema(modules, tmp_path, capsys):
    assert main(["erd", "--out", str(tmp_path)]) == 0
    for name in modules:
        images = [p for p in tmp_path.iterdir() if p.stem == name and p.suffix in (".png", ".svg")]
        assert len(images) == 1, f"no image for {name}"
        head = images[0].read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n" or head.startswith(b"<?xml") or head.startswith(b"<svg")
        assert images[0].stat().st_size > 2000
        mermaid = (tmp_path / f"{name}.mmd").read_text()
        assert mermaid.startswith("flowchart")
    assert "Session" in (tmp_path / "experiment.mmd").read_text()
    assert "WaterRestriction" in (tmp_path / "lab.mmd").read_text()


def test_shell_imports_every_schema_module(modules):
    code = "print(sorted(k for k in dir() if k in ('lab', 'experiment', 'ephys', 'ccf', 'histology', 'tracking', 'psth', 'publication')))\n"
    result = subprocess.run([*SHELL, "shell"], input=code, capture_output=True, text=True, timeout=180, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-2000:]
    assert "['ccf', 'ephys', 'experiment', 'histology', 'lab', 'psth', 'publication', 'tracking']" in result.stdout
