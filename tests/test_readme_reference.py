"""The README's configuration reference lists every setting the code has, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from latchkey_server.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def _fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    names: set[str] = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _fields(annotation, f"{prefix}{name}.")
        else:
            names.add(prefix + name)
    return names


def test_every_setting_is_documented() -> None:
    text = README.read_text()
    section = text.split("### Configuration reference", 1)[1].split("\n### ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", section, flags=re.M))
    assert documented == _fields(Settings)
    for name in documented:
        env = "LATCHKEY_" + name.upper().replace(".", "__")
        assert f"`{env}`" in section, env
