"""The architecture spec: plain JSON data, versioned, enough on its own to rebuild a model.

Shape (schema 1)::

    {"schema": 1, "input": [C, H, W], "classes": N,
     "stem":   [block, ...],
     "stages": [{"body": [block, ...], "attention": [block, ...],
                 "shortcut": null | "auto", "down": block | null}, ...],
     "head":   [block, ...]}

A block is ``{"type": name, option: value, ...}``; option values are scalars, lists of
scalars or lists of blocks. A stage computes ``down(attention(body(x)) [+ shortcut(x)])``.

The one-line form writes blocks as ``type(key=value,...)`` and lists as ``[a,b]``; it is
exact: ``decode(encode(spec)) == spec``, and anything the grammar does not know is refused.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

from searchcore.errors import SpecError

SCHEMA = 1
TOP_KEYS = ("schema", "input", "classes", "stem", "stages", "head")
STAGE_KEYS = ("body", "attention", "shortcut", "down")
SHORTCUTS = (None, "auto")


def copy_spec(spec: dict) -> dict:
    """A deep copy, so a transformation never mutates its input. A spec is JSON-shaped: dicts and lists
    are copied by hand (5x faster than ``copy.deepcopy``, run by every plugin for every trial), anything
    else but immutable scalars by ``copy.deepcopy``."""
    return _copy_json(spec)


def _copy_json(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _copy_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy_json(x) for x in v]
    if v is None or isinstance(v, (str, int, float)):  # bool is an int
        return v
    return copy.deepcopy(v)


# --- validation ---------------------------------------------------------------------------


def validate(spec: Any, source: str = "spec") -> dict:
    """Check the shape of a spec; raise :class:`SpecError` naming the key path and what is allowed."""
    if not isinstance(spec, dict):
        raise SpecError(f"{source}: expected a JSON object, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(TOP_KEYS))
    if unknown:
        raise SpecError(f"{source}: unknown key {unknown[0]!r}; allowed: {', '.join(TOP_KEYS)}")
    missing = [k for k in TOP_KEYS if k not in spec]
    if missing:
        raise SpecError(f"{source}: missing key {missing[0]!r}")
    if spec["schema"] != SCHEMA:
        raise SpecError(f"{source}: schema: version {spec['schema']!r} is not supported; this searchcore reads schema {SCHEMA}")
    shape = spec["input"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) and v > 0 for v in shape)):
        raise SpecError(f"{source}: input: expected [channels, height, width] of positive integers, got {shape!r}")
    if not (_is_int(spec["classes"]) and spec["classes"] >= 2):
        raise SpecError(f"{source}: classes: expected an integer >= 2, got {spec['classes']!r}")
    _blocks(spec["stem"], f"{source}: stem")
    _blocks(spec["head"], f"{source}: head")
    if not isinstance(spec["stages"], list):
        raise SpecError(f"{source}: stages: expected a list of stages")
    for i, stage in enumerate(spec["stages"]):
        where = f"{source}: stages[{i}]"
        if not isinstance(stage, dict):
            raise SpecError(f"{where}: expected an object with keys {', '.join(STAGE_KEYS)}")
        bad = sorted(set(stage) ^ set(STAGE_KEYS))
        if bad:
            kind = "unknown" if bad[0] in stage else "missing"
            raise SpecError(f"{where}: {kind} key {bad[0]!r}; a stage has exactly: {', '.join(STAGE_KEYS)}")
        _blocks(stage["body"], f"{where}.body")
        _blocks(stage["attention"], f"{where}.attention")
        if stage["shortcut"] not in SHORTCUTS:
            raise SpecError(f"{where}.shortcut: expected null or 'auto', got {stage['shortcut']!r}")
        if stage["down"] is not None:
            _block(stage["down"], f"{where}.down")
    return spec


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _blocks(value: Any, where: str) -> None:
    if not isinstance(value, list):
        raise SpecError(f"{where}: expected a list of blocks, got {type(value).__name__}")
    for i, block in enumerate(value):
        _block(block, f"{where}[{i}]")


def _block(block: Any, where: str) -> None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise SpecError(f"{where}: expected a block object with a string 'type'")
    for key, value in block.items():
        if key == "type":
            continue
        if not _KEY.fullmatch(key):
            raise SpecError(f"{where}.{key}: option names are identifiers")
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            _blocks(value, f"{where}.{key}")
        elif isinstance(value, list):
            if not all(_is_scalar(v) for v in value):
                raise SpecError(f"{where}.{key}: a list holds scalars or blocks, not both")
        elif not _is_scalar(value):
            raise SpecError(f"{where}.{key}: expected a scalar, list or list of blocks, got {type(value).__name__}")


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def block_types(spec: dict) -> list[str]:
    """Every block type a spec uses, in order of first appearance."""
    seen: dict[str, None] = {}

    def walk(blocks: list) -> None:
        for b in blocks:
            seen.setdefault(b["type"], None)
            for v in b.values():
                if isinstance(v, list) and v and isinstance(v[0], dict):
                    walk(v)

    walk(spec["stem"])
    for st in spec["stages"]:
        walk(st["body"])
        walk(st["attention"])
        if st["down"] is not None:
            walk([st["down"]])
    walk(spec["head"])
    return list(seen)


# --- JSON and hash ------------------------------------------------------------------------


def to_json(spec: dict, indent: int | None = 2) -> str:
    return json.dumps(spec, indent=indent, sort_keys=indent is None)


def from_json(text: str, source: str = "spec") -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{source}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    return validate(data, source)


def spec_hash(spec: dict) -> str:
    """Stable content hash: the same architecture gives the same hash on every machine."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


# --- one-line form ------------------------------------------------------------------------

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_NUM = re.compile(r"-?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d+|inf|nan)")
_RESERVED = {"T", "F", "~", "inf", "nan"}


def encode(spec: dict) -> str:
    """The compact one-line form: ``v1 1x8x8>10 stem[] | <stage> | ... | head[...]``."""
    validate(spec)
    c, h, w = spec["input"]
    parts = [f"v{spec['schema']} {c}x{h}x{w}>{spec['classes']} stem{_enc(spec['stem'])}"]
    for st in spec["stages"]:
        down = "~" if st["down"] is None else _enc(st["down"])
        sc = "~" if st["shortcut"] is None else st["shortcut"]
        parts.append(f"{_enc(st['body'])} att{_enc(st['attention'])} sc={sc} down={down}")
    parts.append(f"head{_enc(spec['head'])}")
    return " | ".join(parts)


def _enc(v: Any) -> str:
    if isinstance(v, dict):
        if not _BARE.fullmatch(v["type"]):
            raise SpecError(f"cannot encode block type {v['type']!r}: the one-line form needs letters, digits, '_', '.' or '-'")
        opts = ",".join(f"{k}={_enc(x)}" for k, x in v.items() if k != "type")
        return f"{v['type']}({opts})"
    if isinstance(v, list):
        return "[" + ",".join(_enc(x) for x in v) + "]"
    if v is None:
        return "~"
    if isinstance(v, bool):
        return "T" if v else "F"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        r = repr(v)
        return r if any(ch in r for ch in ".en") else r + ".0"
    if isinstance(v, str):
        return v if _BARE.fullmatch(v) and v not in _RESERVED else json.dumps(v)
    raise SpecError(f"cannot encode value of type {type(v).__name__}")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def fail(self, what: str) -> SpecError:
        near = self.text[self.pos : self.pos + 20] or "end of text"
        return SpecError(f"one-line spec: {what} at column {self.pos + 1} (near {near!r})")

    def eat(self, literal: str) -> None:
        if not self.text.startswith(literal, self.pos):
            raise self.fail(f"expected {literal!r}")
        self.pos += len(literal)

    def match(self, pattern: re.Pattern) -> str:
        m = pattern.match(self.text, self.pos)
        if not m:
            raise self.fail("unexpected token")
        self.pos = m.end()
        return m.group(0)

    def value(self) -> Any:
        ch = self.text[self.pos : self.pos + 1]
        if ch == "[":
            self.pos += 1
            items = []
            while not self.text.startswith("]", self.pos):
                if items:
                    self.eat(",")
                items.append(self.value())
            self.pos += 1
            return items
        if ch == '"':
            m = re.compile(r'"(?:[^"\\]|\\.)*"').match(self.text, self.pos)
            if not m:
                raise self.fail("unterminated string")
            self.pos = m.end()
            return json.loads(m.group(0))
        if ch == "~":
            self.pos += 1
            return None
        m = _NUM.match(self.text, self.pos)
        if m and not _BARE.match(self.text, self.pos):
            self.pos = m.end()
            tok = m.group(0)
            return float(tok) if any(c in tok for c in ".eEn") else int(tok)
        word = self.match(_BARE)
        if self.text.startswith("(", self.pos):
            return self.block(word)
        if word in ("T", "F"):
            return word == "T"
        if word in ("inf", "nan"):
            return float(word)
        return word

    def block(self, type_name: str) -> dict:
        self.eat("(")
        block: dict[str, Any] = {"type": type_name}
        while not self.text.startswith(")", self.pos):
            if len(block) > 1:
                self.eat(",")
            key = self.match(_KEY)
            if key in block:
                raise self.fail(f"duplicate option {key!r}")
            self.eat("=")
            block[key] = self.value()
        self.pos += 1
        return block

    def block_list(self) -> list:
        v = self.value() if self.text.startswith("[", self.pos) else None
        if not isinstance(v, list) or not all(isinstance(b, dict) for b in v):
            raise self.fail("expected a list of blocks")
        return v


def decode(text: str) -> dict:
    """Parse the one-line form back into a spec; unknown or malformed tokens are refused."""
    p = _Parser(text.strip())
    p.eat("v")
    schema = int(p.match(re.compile(r"\d+")))
    p.eat(" ")
    c, h, w = (int(x) for x in p.match(re.compile(r"\d+x\d+x\d+")).split("x"))
    p.eat(">")
    classes = int(p.match(re.compile(r"\d+")))
    p.eat(" stem")
    spec: dict[str, Any] = {"schema": schema, "input": [c, h, w], "classes": classes, "stem": p.block_list(), "stages": []}
    while True:
        p.eat(" | ")
        if p.text.startswith("head", p.pos):
            p.pos += 4
            spec["head"] = p.block_list()
            break
        body = p.block_list()
        p.eat(" att")
        attention = p.block_list()
        p.eat(" sc=")
        shortcut = p.value()
        p.eat(" down=")
        down = p.value()
        if down is not None and not isinstance(down, dict):
            raise p.fail("down must be a block or ~")
        spec["stages"].append({"body": body, "attention": attention, "shortcut": shortcut, "down": down})
    if p.pos != len(p.text):
        raise p.fail("unexpected trailing text")
    return validate(spec, "one-line spec")
