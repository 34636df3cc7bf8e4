"""The house rules, checked on the code itself: one installed namespace, rooms that import
only what the layout table allows, and a gateway-only install that works without the others."""
from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ratingctr.cli import COMMANDS, GROUPS, build_parser

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("training", "export", "serving", "loadtest", "online")
# room -> the rooms it may import (the namespace root `ratingctr` itself is always allowed).
MAY_IMPORT = {
    "root": set(),
    "training": set(),
    "export": {"training"},
    "serving": set(),
    "loadtest": {"serving", "export"},
    "online": {"training", "export", "serving"},
}
# Third-party packages a torch-free room must never import, even lazily.
FORBIDDEN_THIRD_PARTY = {"root": {"torch", "onnx"}, "serving": {"torch", "onnx", "pandas"}}


def _source_files(room: str) -> list[Path]:
    folder = ROOT / ("ratingctr" if room == "root" else room)
    return sorted(folder.rglob("*.py"))


def _imports(path: Path) -> list[str]:
    """Every absolute module name imported anywhere in the file (lazy imports included)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("room", ["root", *ROOMS])
def test_rooms_import_only_what_the_layout_allows(room: str) -> None:
    bad = []
    for path in _source_files(room):
        for name in _imports(path):
            parts = name.split(".")
            top = parts[0]
            if top in ROOMS:
                bad.append(f"{path.relative_to(ROOT)}: bare `{name}` (import through ratingctr.{top})")
            elif top == "ratingctr" and len(parts) > 1 and parts[1] in ROOMS:
                target = parts[1]
                if target != room and target not in MAY_IMPORT[room]:
                    bad.append(f"{path.relative_to(ROOT)}: {room} imports {name}")
            elif top in FORBIDDEN_THIRD_PARTY.get(room, set()):
                bad.append(f"{path.relative_to(ROOT)}: {room} imports {name}")
    assert bad == []


def test_rooms_are_not_importable_under_their_folder_names(tmp_path: Path) -> None:
    """Outside the checkout only `ratingctr` exists: no generic top-level `training`, `serving`, …"""
    code = ("import importlib.util, json; print(json.dumps({n: importlib.util.find_spec(n) is not None for n in "
            f"{[*ROOMS, 'ratingctr', 'ratingctr.serving', 'ratingctr.training']!r}}}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {**{room: False for room in ROOMS},
                                      "ratingctr": True, "ratingctr.serving": True, "ratingctr.training": True}


def _choices(usage: str) -> set[str]:
    return set(re.search(r"\{([a-z,-]+)\}", usage).group(1).split(","))


def test_cli_registry_lists_exactly_the_registered_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    """The registry table is the truth: every verb it names parses, and the parser offers no other."""
    parser = build_parser()
    registered = _choices(parser.format_usage()) - set(GROUPS)
    for group in GROUPS:
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([group, "--help"])
        assert exc.value.code == 0
        registered |= {f"{group} {verb}" for verb in _choices(capsys.readouterr().out)}
    assert registered == {v for names in COMMANDS.values() for v in names}


def _wheel_top_levels(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return {n.split("/")[0] for n in zf.namelist() if not n.split("/")[0].endswith((".dist-info", ".data"))}


@pytest.mark.slow
def test_gateway_build_context_installs_serving_alone(tmp_path: Path) -> None:
    """What the gateway image copies (root + serving) builds a wheel with no training, export or loadtest."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, context / name)
    for folder in ("ratingctr", "serving"):
        shutil.copytree(ROOT / folder, context / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(tmp_path / "dist"), str(context)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert _wheel_top_levels(wheel) == {"ratingctr"}
    with zipfile.ZipFile(wheel) as zf:
        packages = {Path(n).parent.as_posix() for n in zf.namelist() if n.endswith("__init__.py")}
    assert packages == {"ratingctr", "ratingctr/serving"}
