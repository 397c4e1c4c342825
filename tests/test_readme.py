"""The README's shell examples run as written.

Every command line of the README's ```bash blocks is either run here or skipped for a stated
reason (real data, network, an image the reader must supply, or ``make``). Placeholders get
concrete values: ``DIR``/``OUTDIR`` a fresh folder, ``N`` 2, ``S`` 0, ``PX`` 96, ``FOLDER`` the
scene folders that ``thinkingearth synth --format native`` writes (made first). ``a|b|c`` runs
each choice; an optional ``[--flag VALUE]`` is run with its value, an optional bare ``[--flag]``
(``--resume``, ``--print-config``) is left out, and so is one whose value is a placeholder list
(``A,B,...``). Each command runs in its own empty working directory, as a user would run it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDERS = {"DIR": "out-dir", "OUTDIR": "maps", "N": "2", "S": "0", "PX": "96"}
SCENES = "scenes"  # what FOLDER becomes: made by synth --format native before the command
#: Commands that take minutes (the full demo, 300 fine-tuning steps, a 3-seed benchmark): marked
#: ``readme_long``, run by ``make check-readme`` (and CI) rather than ``make test``, which stays
#: under 15 minutes on 2 cores.
SLOW = ("demo", "finetune", "bench")
#: Commands that use what earlier lines of their block made (a model, a world, an index).
IN_ORDER = ("patch", "embed", "search", "zeroshot")
_PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(?:,[A-Z.]+)*(?:,\.\.\.)?$")


def _blocks() -> list[list[str]]:
    """Command lines of each ```bash block (continuations joined, comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    return [
        [
            line.strip()
            for line in block.replace("\\\n", " ").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        for block in blocks
    ]


def _lines() -> list[str]:
    return [line for block in _blocks() for line in block]


def _skip_reason(tokens: list[str]) -> str | None:
    if tokens[0] == "make":
        return "make installs the package and runs the demo or the whole suite"
    if tokens[:3] == ["thinkingearth", "weights", "fetch"]:
        return "downloads published weights (network)"
    if tokens[0] == "qgis":
        return "opens the QGIS desktop application"
    for token in tokens:
        if token.startswith("/data/"):
            return f"needs real data ({token})"
        if re.fullmatch(r"[A-Z][A-Z0-9]*\.tif", token):
            return f"needs an image of the reader's own ({token})"
    if tokens[1] in IN_ORDER:
        return "needs the model and world of the lines before it: run in order by test_vl_block"
    return None


def _expand(tokens: list[str]) -> list[list[str]]:
    """Placeholders made concrete, optional groups resolved, one list per ``a|b`` choice."""
    variants: list[list[str]] = [[]]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("["):  # an optional group, up to the token that closes it
            j = i
            while not tokens[j].endswith("]"):
                j += 1
            group = [t.strip("[]") for t in tokens[i : j + 1]]
            i = j + 1
            values = [_value(t) for t in group[1:]]
            if len(group) < 2 or any(v is None for v in values):
                continue  # a bare flag, or a value that is only a placeholder
            variants = [[*v, group[0], *values] for v in variants]  # type: ignore[list-item]
            continue
        i += 1
        if "|" in token:
            variants = [[*v, choice] for v in variants for choice in token.split("|")]
            continue
        value = _value(token)
        if value is None:
            raise AssertionError(f"README placeholder {token!r} has no value in {PLACEHOLDERS}")
        variants = [[*v, value] for v in variants]
    return variants


def _value(token: str) -> str | None:
    if token == "FOLDER":
        return SCENES
    if token in PLACEHOLDERS:
        return PLACEHOLDERS[token]
    if _PLACEHOLDER.match(token) and not token.startswith("-"):
        return None
    return token


def _cases() -> tuple[list[object], list[tuple[str, str]]]:
    run: list[object] = []
    skipped: list[tuple[str, str]] = []
    for line in _lines():
        tokens = shlex.split(line, comments=True)
        reason = _skip_reason(tokens)
        if reason is not None:
            skipped.append((line, reason))
            continue
        for argv in _expand(tokens):
            slow = argv[1] in SLOW and "--print-config" not in argv
            marks = [pytest.mark.slow, pytest.mark.readme_long] if slow else []
            run.append(pytest.param(argv, id=" ".join(argv[1:]), marks=marks))
    return run, skipped


RUN, SKIPPED = _cases()


def _thinkingearth() -> list[str]:
    script = Path(sys.executable).with_name("thinkingearth")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "thinkingearth.cli"]


def test_every_readme_command_is_run_or_skipped_for_a_reason() -> None:
    commands = {p.values[0][1] for p in RUN}  # type: ignore[attr-defined]
    assert {"synth", "demo", "pretrain", "finetune", "bench", "weights", "predict"} <= commands
    assert any("--scenes" in p.values[0] for p in RUN)  # type: ignore[attr-defined]
    for line, reason in SKIPPED:
        assert reason, line


@pytest.mark.parametrize("argv", RUN)
def test_readme_command_runs_as_written(argv: list[str], tmp_path: Path) -> None:
    assert argv[0] == "thinkingearth"
    command = [*_thinkingearth(), *argv[1:]]
    if SCENES in argv:
        synth = ["synth", "--out", SCENES, "--format", "native", "--n", "2", "--size", "96"]
        made = subprocess.run(
            [*_thinkingearth(), *synth],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert made.returncode == 0, made.stderr
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr


def test_the_scenes_example_names_the_files_synth_writes(tmp_path: Path) -> None:
    from thinkingearth.data.export import export_world

    (argv,) = [
        p.values[0]  # type: ignore[attr-defined]
        for p in RUN
        if "--scenes" in p.values[0] and p.values[0][1] == "predict"  # type: ignore[attr-defined]
    ]
    scene = export_world(tmp_path / SCENES, "native", n=1, size=96) / "scene_00000"
    names = {p.name for p in scene.iterdir()}
    given = [argv[argv.index(flag) + 1] for flag in ("--pre", "--post") if flag in argv]
    assert given and set(given) <= names, f"{given} not among {sorted(names)}"


@pytest.mark.slow
@pytest.mark.readme_long
def test_vl_block_runs_in_order(tmp_path: Path) -> None:
    """The vision-language block: pretrain (2 steps), patch, synth, embed, search, zeroshot (one
    scene, then every scene folder), in order."""
    (block,) = [b for b in _blocks() if any(" embed " in f" {line} " for line in b)][:1]
    ran = []
    for line in block:
        tokens = shlex.split(line, comments=True)
        assert not any(t.startswith("/data/") for t in tokens), line
        argv = _expand(tokens)[0]
        done = subprocess.run(
            [*_thinkingearth(), *argv[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr
        ran.append(argv[1])
    assert ran == ["pretrain", "patch", "synth", "embed", "search", "zeroshot", "zeroshot"]
    assert (tmp_path / "runs" / "tiny-vl" / "vl_model.safetensors").is_file()
    assert (tmp_path / "floods.html").is_file() and (tmp_path / "zeroshot.tif").is_file()
    assert (tmp_path / "runs" / "patch" / "patching.md").is_file()
    assert len(list((tmp_path / "zeroshot-maps").rglob("*.tif"))) >= 40
