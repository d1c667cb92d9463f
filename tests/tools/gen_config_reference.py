"""Generate config/reference.md from the pydantic settings model.

python -m tests.tools.gen_config_reference          # rewrite the file
python -m tests.tools.gen_config_reference --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from bgp_speaker.settings import ENV_PREFIX, Settings

TARGET = Path(__file__).resolve().parents[2] / "config" / "reference.md"


def _type_name(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin is tuple:
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return f"list of {_type_name(args[0])}" if args else "list"
    if annotation is type(None):
        return "null"
    name = getattr(annotation, "__name__", str(annotation))
    return {
        "IPv4Address": "IPv4",
        "IPv6Address": "IPv6",
        "str": "string",
        "int": "integer",
        "float": "number",
        "bool": "boolean",
        "Path": "path",
        "IPvAnyAddress": "IP address",
    }.get(name, name)


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return "(section)"
    if info.default is PydanticUndefined:
        return "**required**"
    value = info.default
    if isinstance(value, tuple):
        value = list(value)
    return f"`{value!r}`" if value not in (None, "") else ("`null`" if value is None else '`""`')


def _model_of(annotation: object) -> type[BaseModel] | None:
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _model_of(info.annotation)
        if sub is not None and typing.get_origin(info.annotation) is not tuple:
            rows.append((key, "section", _default(info), info.description or ""))
            rows.extend(_rows(sub, key + "."))
            continue
        rows.append((key, _type_name(info.annotation), _default(info), info.description or ""))
        if sub is not None:
            rows.extend(_rows(sub, key + "[]."))
    return rows


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the settings model (`bgp_speaker/settings/`); do not edit by hand.",
        "A commented example is in `config/bgp-speaker.example.yaml`. Validate a file with",
        "`bgp-speaker check --config FILE`: every error names the field and the value.",
        "",
        f"Every key can be set from the environment as `{ENV_PREFIX}<KEY>`, nested keys joined",
        f"with `__` (for example `{ENV_PREFIX}HTTP__LISTEN=127.0.0.1:10667`). The environment",
        "wins over the file.",
        "",
        "| Key | Type | Default | Description |",
        "| --- | --- | --- | --- |",
    ]
    for key, kind, default, description in _rows(Settings, ""):
        escaped = description.replace("|", "\\|")
        lines.append(f"| `{key}` | {kind} | {default} | {escaped} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(
                f"{TARGET.name} is out of date: run python -m tests.tools.gen_config_reference",
                file=sys.stderr,
            )
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
