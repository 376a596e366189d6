"""A small YAML reader for compose files: block mappings and sequences, plain/quoted scalars, flow
sequences, comments (what compose files are written with; anything else is a :class:`YamlError`)."""

from __future__ import annotations

import json
import re
from typing import Any


class YamlError(ValueError):
    pass


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'" and (i == 0 or line[i - 1] in " [,:-"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _split_flow(text: str, lineno: int) -> list[str]:
    items, cur, quote = [], "", ""
    for ch in text:
        if quote:
            cur += ch
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            cur += ch
        elif ch == ",":
            items.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if quote:
        raise YamlError(f"line {lineno}: unterminated quote")
    if cur.strip():
        items.append(cur.strip())
    return items


def _scalar(text: str, lineno: int) -> Any:
    text = text.strip()
    if text.startswith('"'):
        if not text.endswith('"') or len(text) < 2:
            raise YamlError(f"line {lineno}: unterminated double-quoted string")
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise YamlError(f"line {lineno}: bad double-quoted string: {exc}") from None
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise YamlError(f"line {lineno}: unterminated single-quoted string")
        return text[1:-1].replace("''", "'")
    if text.startswith("["):
        if not text.endswith("]"):
            raise YamlError(f"line {lineno}: multi-line flow sequences are not supported")
        return [_scalar(item, lineno) for item in _split_flow(text[1:-1], lineno)]
    if text.startswith("{"):
        if text.replace(" ", "") == "{}":
            return {}
        raise YamlError(f"line {lineno}: flow mappings are not supported")
    if text[:1] in "|>":
        raise YamlError(f"line {lineno}: block scalars are not supported")
    if text in ("~", "null", "Null", "NULL"):
        return None
    return text


_KEY_RE = re.compile(r"""^("(?:[^"\\]|\\.)*"|'[^']*'|[^\s"'#:][^:]*?)\s*:(?:\s+(.*))?$""")


def parse_yaml(text: str) -> Any:
    """Block mappings and sequences of scalars, plain/quoted scalars, flow sequences, comments."""
    lines: list[tuple[int, str, int]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not line.strip() or line.strip() in ("---", "..."):
            continue
        lead = line[: len(line) - len(line.lstrip())]
        if "\t" in lead:
            raise YamlError(f"line {lineno}: tabs are not allowed in indentation")
        lines.append((len(lead), line.strip(), lineno))
    if not lines:
        return None
    value, pos = _parse_block(lines, 0, lines[0][0])
    if pos != len(lines):
        raise YamlError(f"line {lines[pos][2]}: bad indentation")
    return value


def _is_item(content: str) -> bool:
    return content == "-" or content.startswith("- ")


def _parse_block(lines: list[tuple[int, str, int]], pos: int, indent: int) -> tuple[Any, int]:
    if _is_item(lines[pos][1]):
        return _parse_seq(lines, pos, indent)
    return _parse_map(lines, pos, indent)


def _parse_map(lines: list[tuple[int, str, int]], pos: int, indent: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while pos < len(lines) and lines[pos][0] == indent and not _is_item(lines[pos][1]):
        _, content, lineno = lines[pos]
        match = _KEY_RE.match(content)
        if not match:
            raise YamlError(f"line {lineno}: expected `key: value`, got {content!r}")
        key = _scalar(match.group(1), lineno)
        rest = match.group(2)
        pos += 1
        if rest:
            out[key] = _scalar(rest, lineno)
        elif pos < len(lines) and lines[pos][0] > indent:
            out[key], pos = _parse_block(lines, pos, lines[pos][0])
        elif pos < len(lines) and lines[pos][0] == indent and _is_item(lines[pos][1]):
            out[key], pos = _parse_seq(lines, pos, indent)
        else:
            out[key] = None
    if pos < len(lines) and lines[pos][0] > indent:
        raise YamlError(f"line {lines[pos][2]}: bad indentation")
    return out, pos


def _parse_seq(lines: list[tuple[int, str, int]], pos: int, indent: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    while pos < len(lines) and lines[pos][0] == indent and _is_item(lines[pos][1]):
        _, content, lineno = lines[pos]
        item = content[1:].strip()
        pos += 1
        if not item:
            if pos < len(lines) and lines[pos][0] > indent:
                value, pos = _parse_block(lines, pos, lines[pos][0])
                out.append(value)
            else:
                out.append(None)
        elif re.match(r"^[\w.-]+:(\s|$)", item):
            raise YamlError(f"line {lineno}: mappings inside sequences are not supported")
        else:
            out.append(_scalar(item, lineno))
    return out, pos
