"""The fenced code blocks of a Markdown page, for tests that run what the docs show.

Conventions (docs/clients/README.md tells readers):
- A block whose info string has `file=PATH` is a file the reader writes at PATH.
- A block preceded by `<!-- doc-test: skip: REASON -->` is not run; the reason is required.
"""

from __future__ import annotations

import pathlib
import re

FENCE = re.compile(r"^```(\S*)(.*)$")
SKIP = re.compile(r"^<!-- doc-test: skip: (.+\S) -->$")


class Block:
    def __init__(self, lang: str, file: str | None, text: str, skip: str | None, line: int):
        self.lang, self.file, self.text, self.skip, self.line = lang, file, text, skip, line

    @property
    def runnable(self) -> bool:
        return self.lang == "sh" and self.skip is None


def parse_blocks(path: pathlib.Path) -> list[Block]:
    """The fenced blocks of a Markdown page, with their file= targets and skip reasons."""
    blocks, skip, current, lines = [], None, None, []
    for number, line in enumerate(pathlib.Path(path).read_text().splitlines(), start=1):
        if current is None:
            if m := SKIP.match(line.strip()):
                skip = m.group(1)
                continue
            if m := FENCE.match(line):
                attrs = dict(a.split("=", 1) for a in m.group(2).split() if "=" in a)
                current, lines = (m.group(1), attrs.get("file"), skip, number), []
                skip = None
            elif line.strip():
                skip = None  # a marker applies to the block right after it only
        elif line.startswith("```"):
            lang, file, block_skip, start = current
            blocks.append(Block(lang, file, "\n".join(lines) + "\n", block_skip, start))
            current = None
        else:
            lines.append(line)
    if current is not None:
        raise ValueError(f"{path}: unterminated code block at line {current[3]}")
    return blocks
