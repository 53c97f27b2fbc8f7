"""Which templates exist, without loading jinja2: the names the template loaders would list
(a user's folders, then the built-ins as builtin/NAME), and whether a template name has a
file among them. `relay run` checks every feed's template before doing anything, and most
runs have nothing else to do: that check must not cost the template engine's import."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

BUILTIN_TEMPLATES = Path(__file__).parent / "templates"


def exists(names: Iterable[str], name: str) -> bool:
    """NAME.j2, or a variant of it for some platform (NAME.PLATFORM.j2), own or built in."""
    wanted = re.compile(rf"(?:builtin/)?{re.escape(name)}(?:\.[a-z0-9_-]+)?\.j2")
    return any(wanted.fullmatch(found) for found in names)


def available(template_dirs: Sequence[Path]) -> frozenset[str]:
    """Every template file name under the folders, as jinja2's FileSystemLoader lists them
    (relative, with '/'), and the built-ins as builtin/NAME."""
    names = set(_listed(BUILTIN_TEMPLATES, "builtin/"))
    for folder in template_dirs:
        names.update(_listed(folder, ""))
    return frozenset(names)


def _listed(folder: Path, prefix: str) -> Iterable[str]:
    for root, _, files in os.walk(folder):
        relative = Path(root).relative_to(folder).as_posix()
        for file in files:
            yield prefix + (file if relative == "." else f"{relative}/{file}")
