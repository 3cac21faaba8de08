"""Every `python -m recsys.<entry> …` command in the README's and docs/' shell blocks and inline
code composes as
written: its config groups, options and keys exist (commands with placeholders such as `<name>`,
`…` or `[optional]` are left out, as are `tuned/*` experiments before a study wrote them)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, compose_config

ENTRY = re.compile(r"python -m recsys\.(prepare|train|evaluate|export|serve)\b(.*)")
PLACEHOLDER = re.compile(r"[<>\[\]…]|\.\.\.|\bPATH\b|\bDIR\b")


def shell_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(entry, arguments) of each recsys command in the file's fenced shell blocks and code spans."""
    commands, block, inside = [], [], False
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            if inside:
                text = re.sub(r"\\\n\s*", " ", "\n".join(block))
                for command in text.splitlines():
                    match = ENTRY.search(command.split("#", 1)[0])
                    if match:
                        commands.append((match.group(1), shlex.split(match.group(2))))
                block = []
            inside = not inside and line.strip() in ("```", "```bash", "```sh")
            continue
        if inside:
            block.append(line)
        else:  # inline code spans in prose and tables
            for span in re.findall(r"`(python -m recsys\.[^`]*)`", line):
                match = ENTRY.search(span)
                if match:
                    commands.append((match.group(1), shlex.split(match.group(2).replace("\\|", "|"))))
    return commands


def documented() -> list[tuple[str, str, list[str]]]:
    files = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    out = []
    for path in files:
        for entry, args in shell_commands(path):
            args = [a for a in args if a != "-m"]
            tuned = [a for a in args if a.startswith("experiment=tuned/")]
            missing = any(
                not (REPO_ROOT / "configs" / "experiment" / f"{a.split('=', 1)[1]}.yaml").is_file()
                for a in tuned
            )
            if not any(PLACEHOLDER.search(a) for a in args) and not missing:
                out.append((path.name, entry, args))
    return out


COMMANDS = documented()


def test_the_docs_hold_commands_to_check():
    assert len(COMMANDS) >= 8 and {entry for _, entry, _ in COMMANDS} >= {"train", "prepare"}


@pytest.mark.parametrize(
    ("page", "entry", "args"), COMMANDS, ids=[f"{p}:{' '.join(a)}" for p, _, a in COMMANDS]
)
def test_documented_command_composes(page, entry, args):
    cfg = compose_config(entry, args)
    for arg in args:
        key, _, value = arg.partition("=")
        key = key.lstrip("+")
        if "/" not in key and "." in key and not key.startswith("hydra."):
            from omegaconf import OmegaConf

            assert str(OmegaConf.select(cfg, key)) == value or OmegaConf.select(cfg, key) is not None, arg
