"""Records <-> JSON bytes, driven by the dataclass type hints.

``encode`` writes every field except ``etag`` (the etag is the key's
``mod_revision`` and comes back from etcd, never from the value), keys in
field order.  Enums are
stored by value, tuples as lists, nested dataclasses as objects.  ``decode``
walks the type hints of the target class and ignores unknown keys, so an
older replica reads records written by a newer one; missing keys take the
field default.  Encoder and decoder of a class are generated once as Python
source (a dict display / a constructor call with every field spelled out)
and compiled: the hot path of every store read, write and watch event has
no per-field loop, ``getattr`` or type inspection.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Decoder = Callable[[Any], Any]
_CLASS_DECODERS: dict[type, Callable[[dict[str, Any], str], Any]] = {}


_Encoder = Callable[[Any], Any]
_CLASS_ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = {}


def _encoder_for(hint: Any) -> _Encoder:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is tuple:
        item = _encoder_for(args[0])
        return lambda v: [item(x) for x in v]
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        enc = _encoder_for(inner[0]) if len(inner) == 1 else _to_json
        return lambda v: None if v is None else enc(v)
    if origin is dict:
        val = _encoder_for(args[1])
        return lambda v: {k: val(x) for k, x in v.items()}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return lambda v: v.value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _class_encoder(hint)
    return _identity


def _class_encoder(cls: type) -> Callable[[Any], dict[str, Any]]:
    cached = _CLASS_ENCODERS.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    env: dict[str, Any] = {}
    items = []
    for i, f in enumerate(dataclasses.fields(cls)):
        if f.name == "etag":
            continue
        enc = _encoder_for(hints[f.name])
        if enc is _identity:
            items.append(f"{f.name!r}: o.{f.name}")
        else:
            env[f"e{i}"] = enc
            items.append(f"{f.name!r}: e{i}(o.{f.name})")
    # one dict display per class: no per-field loop or getattr at run time
    src = "def encode_obj(o):\n    return {" + ", ".join(items) + "}\n"
    exec(compile(src, f"<codec encoder of {cls.__qualname__}>", "exec"), env)
    encode_obj = typing.cast(Callable[[Any], dict[str, Any]], env["encode_obj"])
    _CLASS_ENCODERS[cls] = encode_obj
    return encode_obj


def _to_json(value: Any) -> Any:
    """Untyped fallback (values of ``Any``-typed fields)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _class_encoder(type(value))(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def to_dict(obj: object) -> dict[str, Any]:
    return _class_encoder(type(obj))(obj)


#: one encoder for every record: compact, no circular-reference bookkeeping
#: (records are trees), keys in dataclass field order (deterministic without
#: sorting)
_JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False)
_JSON_DECODE = json.JSONDecoder().decode


def encode(obj: object) -> bytes:
    return _JSON.encode(to_dict(obj)).encode()


def _identity(value: Any) -> Any:
    return value


def _decoder_for(hint: Any) -> _Decoder:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is tuple:
        item = _decoder_for(args[0])
        return lambda v: tuple(item(x) for x in v)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        dec = _decoder_for(inner[0]) if len(inner) == 1 else _identity
        return lambda v: None if v is None else dec(v)
    if origin is dict:
        val = _decoder_for(args[1])
        return lambda v: {k: val(x) for k, x in v.items()}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        by_value = dict(hint._value2member_map_)
        return lambda v: by_value[v] if v in by_value else hint(v)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        cls_dec = _class_decoder(hint)
        return lambda v: cls_dec(v, "")
    if hint is float:
        return float
    return _identity


def _class_decoder(cls: type) -> Callable[[dict[str, Any], str], Any]:
    cached = _CLASS_DECODERS.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    has_etag = "etag" in names
    fields = {name: _decoder_for(hints[name]) for name in names if name != "etag"}

    def decode_partial(data: dict[str, Any], etag: str = "") -> Any:
        """Any record: missing keys take the field default."""
        kwargs = {name: dec(data[name]) for name, dec in fields.items() if name in data}
        if has_etag and etag:
            kwargs["etag"] = etag
        return cls(**kwargs)

    # Fast path, compiled once per class: every field present (records written
    # by this version); a KeyError falls back to ``decode_partial``.
    env: dict[str, Any] = {"cls": cls, "partial": decode_partial}
    args = []
    for i, (name, dec) in enumerate(fields.items()):
        if dec is _identity:
            args.append(f"{name}=d[{name!r}]")
        else:
            env[f"d{i}"] = dec
            args.append(f"{name}=d{i}(d[{name!r}])")
    if has_etag:
        args.append("etag=etag")
    src = (
        "def decode_obj(d, etag=''):\n"
        "    try:\n"
        f"        return cls({', '.join(args)})\n"
        "    except KeyError:\n"
        "        return partial(d, etag)\n"
    )
    exec(compile(src, f"<codec decoder of {cls.__qualname__}>", "exec"), env)
    decode_obj = typing.cast(Callable[[dict[str, Any], str], Any], env["decode_obj"])
    _CLASS_DECODERS[cls] = decode_obj
    return decode_obj


def from_dict(cls: type[T], data: dict[str, Any], *, etag: str = "") -> T:
    return typing.cast(T, _class_decoder(cls)(data, etag))


def decode(cls: type[T], raw: bytes, *, etag: str = "") -> T:
    return typing.cast(T, _class_decoder(cls)(_JSON_DECODE(raw.decode()), etag))
