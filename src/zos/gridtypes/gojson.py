"""Reading and writing gridtypes JSON by Go's `encoding/json` rules.

zos nodes decode deployments with Go's `encoding/json`, so we accept exactly what it
accepts and read it the same way:

- unknown object keys are ignored (the TypeScript client sends `__type` in data);
- keys match struct fields case-insensitively (Go's folding), an exact match first;
  when several keys land on one field the last one wins;
- `null` leaves a plain field as it was (its zero value) and clears an optional one;
- numbers for integer fields must be integer literals within the Go type's range
  (uint8/uint16/uint32/uint64/int64); `1.0`, `1e3`, `true` or `"1"` are refused;
- timestamps are an int64 or an RFC 3339 date string;
- IP networks, IP addresses and hex byte strings are parsed as Go parses them and kept
  in the form Go prints them (that printed form is what goes into the challenge).

Every problem becomes a `GridTypeError` naming the JSON path and the rule.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import re
import types
import typing
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Field

from zos.gridtypes.errors import GridTypeError

# A deployment is small (a node's bus messages are far smaller); refuse more before parsing.
MAX_JSON_BYTES = 4 * 1024 * 1024
# Deployments nest about 8 levels; result data a little more. Deeper input is refused.
MAX_JSON_DEPTH = 64


class Pairs:
    """A JSON object as it was written: its (key, value) pairs in order."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs

    def __iter__(self):
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)


@dataclass(frozen=True)
class GoInt:
    """An integer field with Go's type name and range."""

    name: str
    lo: int
    hi: int


@dataclass(frozen=True)
class GoKind:
    """A string or value field with a special Go decoding (ipnet, ip, hex, timestamp, raw)."""

    name: str


@dataclass(frozen=True)
class OmitEmpty:
    """Written only when not empty (Go's `omitempty`)."""


def _int_type(name: str, lo: int, hi: int) -> Any:
    return Annotated[int, GoInt(name, lo, hi), Field(ge=lo, le=hi)]


Uint8 = _int_type("uint8", 0, 2**8 - 1)
Uint16 = _int_type("uint16", 0, 2**16 - 1)
Uint32 = _int_type("uint32", 0, 2**32 - 1)
Uint64 = _int_type("uint64", 0, 2**64 - 1)
Int64 = _int_type("int64", -(2**63), 2**63 - 1)
Timestamp = Annotated[int, GoKind("timestamp"), Field(ge=-(2**63), le=2**63 - 1)]
IPNetStr = Annotated[str, GoKind("ipnet")]
IPStr = Annotated[str, GoKind("ip")]
HexBytes = Annotated[str, GoKind("hex")]
RawJSON = Annotated[Any, GoKind("raw")]


# --- parsing ---------------------------------------------------------------------------


def _parse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(data: bytes | bytearray | str, what: str = "JSON") -> Any:
    """Parse JSON text into Python values with objects as `Pairs` and non-integers as Decimal."""
    if isinstance(data, bytes | bytearray):
        if len(data) > MAX_JSON_BYTES:
            raise GridTypeError(f"{what}: larger than {MAX_JSON_BYTES} bytes")
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise GridTypeError(f"{what}: not valid UTF-8 (byte {e.start})") from None
    elif isinstance(data, str):
        if len(data) > MAX_JSON_BYTES:
            raise GridTypeError(f"{what}: larger than {MAX_JSON_BYTES} bytes")
        text = data
    else:
        raise GridTypeError(f"{what}: expected bytes or str, got {type(data).__name__}")
    try:
        value = json.loads(
            text,
            object_pairs_hook=Pairs,
            parse_float=Decimal,
            parse_constant=_parse_constant,
        )
    except json.JSONDecodeError as e:
        raise GridTypeError(
            f"{what}: invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        raise GridTypeError(f"{what}: invalid JSON: nested too deeply") from None
    except ValueError as e:  # integer with too many digits, NaN/Infinity
        raise GridTypeError(f"{what}: invalid JSON: {_short(str(e))}") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise GridTypeError(f"{what}: invalid JSON: nested more than {MAX_JSON_DEPTH} levels")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Pairs):
            children = [v for _k, v in item.pairs]
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _short(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe(raw: Any) -> str:
    """How a JSON value looks, for error messages (never the whole value)."""
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        text = str(raw) if abs(raw) < 10**30 else f"a {len(str(abs(raw)))}-digit number"
        return f"number {text}"
    if isinstance(raw, Decimal | float):
        return f"number {_short(str(raw), 40)}"
    if isinstance(raw, str):
        return f"string {_short(repr(raw), 40)}"
    if isinstance(raw, Pairs | dict):
        return "object"
    if isinstance(raw, list):
        return "array"
    return type(raw).__name__


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _fail(path: str, rule: str) -> GridTypeError:
    return GridTypeError(f"{path or 'value'}: {rule}", field=path or None)


_SURROGATES = re.compile("[\ud800-\udfff]")


def _clean_str(value: str) -> str:
    # Go turns escaped lone surrogates into U+FFFD; so do we (they cannot be UTF-8 encoded).
    return _SURROGATES.sub("\ufffd", value) if _SURROGATES.search(value) else value


# --- Go's printed forms ------------------------------------------------------------------


def go_ip_string(text: str, path: str) -> str:
    """Parse an IP address as Go's net.ParseIP does and print it as net.IP.String()."""
    if text == "":
        return ""
    if "%" in text or text.strip() != text:
        raise _fail(path, f"invalid IP address {_short(repr(text), 60)}")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise _fail(path, f"invalid IP address {_short(repr(text), 60)}") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def go_ipnet_string(text: str, path: str) -> str:
    """Parse a CIDR as gridtypes.ParseIPNet does (host bits kept) and print it as Go does."""
    if text == "":
        return ""
    bad = _fail(path, f"invalid CIDR address {_short(repr(text), 60)}")
    if "/" not in text or "%" in text or text.strip() != text:
        raise bad
    addr, _, bits = text.partition("/")
    if not bits.isascii() or not bits.isdigit() or len(bits) > 3:
        raise bad
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise bad from None
    prefix = int(bits)
    if prefix > ip.max_prefixlen:
        raise bad
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"{ip.ipv4_mapped}/{max(0, prefix - 96)}"
    return f"{ip}/{prefix}"


def go_ipnet_challenge(value: str) -> str:
    """IPNet.String() as it goes into a challenge: an empty network prints `<nil>`."""
    return value if value else "<nil>"


def go_ip_challenge(value: str) -> str:
    """net.IP.String() as it goes into a challenge: an empty address prints `<nil>`."""
    return value if value else "<nil>"


def go_hex(text: str, path: str) -> str:
    """Hex bytes as Go's hex.DecodeString accepts them, kept as lowercase hex."""
    if len(text) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", text):
        raise _fail(path, f"invalid hex string {_short(repr(text), 60)}")
    return text.lower()


def _timestamp(raw: Any, path: str) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not -(2**63) <= raw <= 2**63 - 1:
            raise _fail(path, f"out of range for int64: {describe(raw)}")
        return raw
    if isinstance(raw, str):
        try:
            when = _dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            when = None
        if when is not None and when.tzinfo is not None and "T" in raw.upper():
            return int(when.timestamp() // 1)
    raise _fail(path, f"expected a timestamp (int64 seconds or RFC 3339 date), got {describe(raw)}")


# --- decoding ---------------------------------------------------------------------------


def to_plain(raw: Any) -> Any:
    """Parsed JSON (Pairs, Decimal) as plain dict/list/int/float/str values."""
    if isinstance(raw, Pairs):
        out: dict[str, Any] = {}
        for k, v in raw:
            out[_clean_str(k)] = to_plain(v)
        return out
    if isinstance(raw, dict):
        return {k: to_plain(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [to_plain(v) for v in raw]
    if isinstance(raw, Decimal):
        return int(raw) if raw == raw.to_integral_value() and abs(raw) < 2**63 else float(raw)
    if isinstance(raw, str):
        return _clean_str(raw)
    return raw


def _items(raw: Any) -> list[tuple[Any, Any]]:
    if isinstance(raw, Pairs):
        return raw.pairs
    return list(raw.items())


def _split(tp: Any) -> tuple[Any, list[Any]]:
    """(base type, metadata) of an annotation, unwrapping Annotated."""
    meta: list[Any] = []
    while get_origin(tp) is Annotated:
        args = get_args(tp)
        tp = args[0]
        meta.extend(args[1:])
    return tp, meta


def _optional_inner(tp: Any) -> Any | None:
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0]
    return None


def zero_value(tp: Any) -> Any:
    base, _meta = _split(tp)
    if _optional_inner(base) is not None:
        return None
    origin = get_origin(base)
    if origin is list:
        return []
    if origin is dict:
        return {}
    if isinstance(base, type) and issubclass(base, BaseModel):
        return base()
    if base is bool:
        return False
    if base is int:
        return 0
    if base is str:
        return ""
    return None


def decode_value(tp: Any, raw: Any, path: str, meta: list[Any] | None = None) -> Any:
    """Decode a parsed JSON value into the Python value for annotation `tp`."""
    base, more = _split(tp)
    meta = [*(meta or []), *more]
    kind = next((m.name for m in meta if isinstance(m, GoKind)), None)
    if kind == "raw":
        return to_plain(raw)
    inner = _optional_inner(base)
    if inner is not None:
        return None if raw is None else decode_value(inner, raw, path)
    if raw is None:
        return zero_value(tp)
    if kind == "timestamp":
        return _timestamp(raw, path)
    origin = get_origin(base)
    if origin is list:
        if not isinstance(raw, list):
            raise _fail(path, f"expected an array, got {describe(raw)}")
        (elem,) = get_args(base)
        return [decode_value(elem, v, f"{path}[{i}]") for i, v in enumerate(raw)]
    if origin is dict:
        if not isinstance(raw, Pairs | dict):
            raise _fail(path, f"expected an object, got {describe(raw)}")
        _key_tp, val_tp = get_args(base)
        out: dict[str, Any] = {}
        for k, v in _items(raw):
            k = _clean_str(k)
            out[k] = decode_value(val_tp, v, f"{path}[{k!r}]")
        return out
    if isinstance(base, type) and issubclass(base, BaseModel):
        return decode_model(base, raw, path)
    if base is bool:
        if not isinstance(raw, bool):
            raise _fail(path, f"expected true or false, got {describe(raw)}")
        return raw
    if base is int:
        go = next((m for m in meta if isinstance(m, GoInt)), None)
        name = go.name if go else "integer"
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise _fail(path, f"expected a {name} integer, got {describe(raw)}")
        if go and not go.lo <= raw <= go.hi:
            raise _fail(path, f"out of range for {name}: {describe(raw)}")
        return raw
    if base is str:
        if not isinstance(raw, str):
            raise _fail(path, f"expected a string, got {describe(raw)}")
        value = _clean_str(raw)
        if kind == "ipnet":
            return go_ipnet_string(value, path)
        if kind == "ip":
            return go_ip_string(value, path)
        if kind == "hex":
            return go_hex(value, path)
        return value
    if base is Any or base is object:
        return to_plain(raw)
    raise TypeError(f"gridtypes decoder: unsupported annotation {tp!r}")  # programming error


def fold_key(key: str) -> str:
    """A key folded as Go's encoding/json folds names: ASCII upper-cased, other letters
    mapped to the upper case of their lower case (so the Kelvin sign matches k and
    the long s matches s)."""
    if key.isascii():
        return key.upper()
    out = []
    for c in key:
        low = c.lower()
        low = low if len(low) == 1 else c
        up = low.upper()
        out.append(up if len(up) == 1 else low)
    return "".join(out)


def _json_name(name: str, info: Any) -> str:
    return info.alias or name


def decode_model(cls: type[BaseModel], raw: Any, path: str = "") -> Any:
    """Decode a JSON object into model `cls` with Go's rules (see the module docstring)."""
    if raw is None:
        return cls()
    if not isinstance(raw, Pairs | dict):
        raise _fail(path, f"expected an object, got {describe(raw)}")
    fields = cls.model_fields
    exact: dict[str, str] = {}
    folded: dict[str, str] = {}
    for name, info in fields.items():
        if name.startswith("_") or info.exclude:
            continue
        jname = _json_name(name, info)
        exact[jname] = name
        folded.setdefault(fold_key(jname), name)
    values: dict[str, Any] = {}
    raw_values: dict[str, Any] = {}
    for key, value in _items(raw):
        if not isinstance(key, str):
            continue
        name = exact.get(key) or folded.get(fold_key(key))
        if name is None:
            continue  # unknown keys are ignored, as Go does
        info = fields[name]
        jpath = _join(path, _json_name(name, info))
        if value is None and _optional_inner(_split(info.annotation)[0]) is None:
            kind = next((m.name for m in info.metadata if isinstance(m, GoKind)), None)
            if kind not in ("raw", "timestamp"):
                continue  # null leaves a non-pointer Go field as it was
        raw_values[name] = value
        values[name] = decode_value(info.annotation, value, jpath, list(info.metadata))
    hook = getattr(cls, "_go_decoded", None)
    if hook is not None:
        values = hook(values, raw_values, path)
    try:
        return cls.model_validate(values)
    except GridTypeError:
        raise
    except ValueError as e:  # pydantic ValidationError: should not happen after decoding
        raise _fail(path, _short(str(e).replace("\n", " "), 300)) from None


# --- writing ----------------------------------------------------------------------------


def encode_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return encode_model(value)
    if isinstance(value, list | tuple):
        return [encode_value(v) for v in value]
    if isinstance(value, dict):
        return {k: encode_value(v) for k, v in value.items()}
    if isinstance(value, Decimal):
        return to_plain(value)
    return value


def encode_model(model: BaseModel) -> dict[str, Any]:
    """A model as the dict Go would marshal (field names as zos writes them)."""
    custom = getattr(model, "_go_encode", None)
    if custom is not None:
        return custom()
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        if info.exclude:
            continue
        value = getattr(model, name)
        if any(isinstance(m, OmitEmpty) for m in info.metadata) and (
            value is None or value == [] or value == {} or value == "" or value is False
        ):
            continue
        out[_json_name(name, info)] = encode_value(value)
    return out


def dumps(value: Any, indent: int | None = None) -> str:
    if indent is None:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(value, ensure_ascii=False, indent=indent)


def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)
