"""Activities to and from their JSON wire form, without msrest's per-call machinery.

msrest's generic `Model.deserialize` / `Model.serialize` cost about a tenth of the app's CPU per
turn: a new (De)Serializer per call, `is_xml_model` probes, per-attribute `attr_desc.copy()`,
key extractors, type-string parsing. This module walks a plan built once per model class from its
`_attribute_map` (wire key, attribute, type string) and produces exactly what msrest produces.

It is exact by construction: the fast path accepts only the shapes it can convert the way msrest
does (well-typed JSON, ISO timestamps in the common form, models without flattened keys, XML,
discriminators or read-only fields). Anything else, including everything msrest would reject,
goes to msrest itself, so odd input gives msrest's result and malformed input msrest's exception
(`DeserializationError`, which `bot/routes.py` answers with a 400).

What msrest does that the plans keep (msrest 0.7.1, `msrest/serialization.py`):
- inbound, keys unknown to a model (at any level) go to its `additional_properties` (the raw
  values, not copies); outbound they are dropped, since botbuilder never enables
  `additional_properties` sending;
- `object` fields (channelData, value, attachment content) are copied container by container;
- `iso-8601` strings become datetimes with isodate's tzinfo (UTC, or a FixedOffset named after the
  offset), and datetimes go out in UTC as `YYYY-MM-DDTHH:MM:SS.fffZ` (at least three digits);
- `str` fields go out as `value.value` when there is one (enums such as `ActivityTypes`), else
  `str(value)`; None fields are left out.

Plans are built on first use and kept: a model class whose `_attribute_map` changes at run time
(msrest's `enable_additional_properties_sending`) must do so before its first activity.
"""

from __future__ import annotations

import datetime
import decimal
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from botbuilder.schema import Activity
from isodate.tzinfo import UTC as ISODATE_UTC  # type: ignore[import-untyped]  # msrest's parser
from isodate.tzinfo import FixedOffset
from msrest.serialization import Model, Serializer

log = logging.getLogger(__name__)

# Deeper `object` values are left to msrest, so that a structure deep enough to exhaust the
# recursion limit fails (or not) exactly as msrest decides.
MAX_OBJECT_DEPTH = 100

Reader = Callable[[Any], Any]
Writer = Callable[[Any], Any]
ModelT = TypeVar("ModelT")


class Unsupported(Exception):
    """The fast path does not convert this value the way msrest would: msrest converts the whole
    activity instead."""


# --- inbound: wire dict -> model ----------------------------------------------------------------


@dataclass(slots=True)
class _ReadPlan:
    cls: Any  # an msrest Model class
    # wire key -> (attribute name, reader); filled after registration (models may nest).
    fields: dict[str, tuple[str, Reader]]
    # Every attribute the constructor sets, in its order, all None (additional_properties
    # included as a placeholder); None when the constructor does more than assign its arguments.
    template: dict[str, Any] | None
    supported: bool


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _read_str(value: Any) -> Any:
    if type(value) is str:
        return value
    raise Unsupported("str")  # msrest would str() it


def _read_int(value: Any) -> Any:
    if type(value) is int:
        return value
    raise Unsupported("int")


def _read_bool(value: Any) -> Any:
    if type(value) is bool:
        return value
    raise Unsupported("bool")


def _read_float(value: Any) -> Any:
    if type(value) is float:
        return value
    raise Unsupported("float")


# The form channels send (Teams and Azure's Direct Line write .NET's seven fraction digits, which
# msrest cuts to six); anything else (lower case, comma fractions, basic format, 24:00...) goes
# through msrest's own parser. [0-9], not \d: \d matches digits of other scripts too.
_ISO_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.([0-9]+))?(Z|[+-][0-9]{2}:[0-9]{2})?"
)
_OFFSETS: dict[str, Any] = {}


def _offset(name: str) -> Any:
    """isodate's tzinfo for `+hh:mm` (`build_tzinfo`): a FixedOffset named after the text.
    FixedOffset is never mutated, so one instance per offset is shared."""
    tz = _OFFSETS.get(name)
    if tz is None:
        hours, minutes = int(name[1:3]), int(name[4:6])
        if hours > 23 or minutes > 59:
            raise Unsupported("offset")
        sign = -1 if name[0] == "-" else 1
        tz = _OFFSETS.setdefault(name, FixedOffset(sign * hours, sign * minutes, name))
    return tz


def _read_iso(value: Any) -> Any:
    """msrest's `deserialize_iso` (isodate underneath) for the common form."""
    if type(value) is not str:
        raise Unsupported("iso-8601")
    match = _ISO_DATETIME.fullmatch(value)
    if match is None or value.startswith(("0001", "9999")):
        # Other forms, and msrest's year-range check in UTC: msrest decides.
        raise Unsupported("iso-8601")
    fraction, zone = match.groups()
    # msrest keeps six fraction digits (cut, not rounded); isodate reads them as microseconds.
    end = 19 if fraction is None else 20 + min(len(fraction), 6)
    try:
        parsed = datetime.datetime.fromisoformat(value[:end])
    except ValueError as exc:  # month 13, second 60...: msrest raises DeserializationError
        raise Unsupported("iso-8601") from exc
    if zone is None:
        return parsed
    return parsed.replace(tzinfo=ISODATE_UTC if zone == "Z" else _offset(zone))


def _copy_json(value: Any, depth: int) -> Any:
    """msrest's `deserialize_object`: new dicts and lists, the same scalars."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if depth > MAX_OBJECT_DEPTH:
        raise Unsupported("depth")
    if kind is dict:
        return {k: v if type(v) in _SCALARS else _copy_json(v, depth + 1) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _SCALARS else _copy_json(v, depth + 1) for v in value]
    raise Unsupported("object")


def _read_object(value: Any) -> Any:
    return _copy_json(value, 0)


def _read_list(item: Reader) -> Reader:
    def read(value: Any) -> Any:
        if type(value) is not list:
            raise Unsupported("list")
        return [None if v is None else item(v) for v in value]

    return read


def _read_dict(item: Reader) -> Reader:
    def read(value: Any) -> Any:
        if type(value) is not dict:
            raise Unsupported("dict")  # msrest also takes a list of {key, value} pairs
        return {k: None if v is None else item(v) for k, v in value.items()}

    return read


def _unsupported_reader(value: Any) -> Any:
    raise Unsupported("type")


_BASIC_READERS: dict[str, Reader] = {
    "str": _read_str,
    "int": _read_int,
    "bool": _read_bool,
    "float": _read_float,
    "iso-8601": _read_iso,
    "object": _read_object,
}


def _model_supported(cls: Any) -> bool:
    """Models the plans convert as msrest does; others (none in botbuilder.schema) go to msrest."""
    if hasattr(cls, "_xml_map") or cls.__dict__.get("_subtype_map"):
        return False
    if any(rule.get("readonly") or rule.get("constant") for rule in cls._validation.values()):
        return False
    keys = [
        desc["key"] for attr, desc in cls._attribute_map.items() if attr != "additional_properties"
    ]
    if any(not key or "." in key for key in keys) or len(set(keys)) != len(keys):
        return False  # flattened or duplicate keys
    extra = cls._attribute_map.get("additional_properties")
    return extra is None or extra["key"] == ""


def _template(cls: Any, attrs: list[str]) -> dict[str, Any] | None:
    """The instance dict msrest's `cls(**all_attributes)` builds, if the constructor only assigns
    its keyword arguments (true of every botbuilder.schema model; some Teams models do more)."""
    marks = {attr: object() for attr in attrs}
    try:
        blank = vars(cls())
        marked = vars(cls(**marks))
    except Exception:
        return None
    if list(blank) != list(marked) or not set(marks) <= set(blank):
        return None
    for name, value in blank.items():
        if name == "additional_properties":
            if type(value) is not dict or value:
                return None
        elif name not in marks or value is not None or marked[name] is not marks[name]:
            return None
    return dict(blank)


class _Deps:
    """One msrest dependency table (the models of the top-level class's package) and the read
    plans of every model reached from it."""

    def __init__(self, classes: dict[str, type]) -> None:
        self.classes = classes
        self.plans: dict[type, _ReadPlan] = {}

    def plan(self, cls: Any) -> _ReadPlan:
        plan = self.plans.get(cls)
        if plan is not None:
            return plan
        attrs = [a for a, d in cls._attribute_map.items() if a != "additional_properties"]
        supported = _model_supported(cls)
        plan = _ReadPlan(cls, {}, _template(cls, attrs) if supported else None, supported)
        self.plans[cls] = plan
        if supported:
            for attr in attrs:
                desc = cls._attribute_map[attr]
                plan.fields[desc["key"]] = (attr, self.reader(desc["type"]))
        return plan

    def reader(self, type_name: str) -> Reader:
        # The order of msrest's `deserialize_data`.
        basic = _BASIC_READERS.get(type_name)
        if basic is not None:
            return basic
        if len(type_name) > 2 and type_name[0] + type_name[-1] == "[]":
            return _read_list(self.reader(type_name[1:-1]))
        if len(type_name) > 2 and type_name[0] + type_name[-1] == "{}":
            return _read_dict(self.reader(type_name[1:-1]))
        target = self.classes.get(type_name)
        if isinstance(target, type) and issubclass(target, Model):
            nested = self.plan(target)
            return lambda value: _read_model(nested, value)
        return _unsupported_reader  # enums, long, date, bytes...: msrest


def _read_model(plan: _ReadPlan, data: Any) -> Any:
    if type(data) is not dict or not plan.supported:
        raise Unsupported("model")
    fields = plan.fields
    extra: dict[str, Any] | None = None
    template = plan.template
    values: dict[str, Any] = template.copy() if template is not None else {}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            if extra is None:
                extra = {}
            extra[key] = value
        elif value is not None:
            values[field[0]] = field[1](value)
    if template is None:
        kwargs = dict.fromkeys(attr for attr, _ in fields.values())
        kwargs.update(values)
        built = plan.cls(**kwargs)
        if extra:
            built.additional_properties = extra
        return built
    values["additional_properties"] = extra if extra is not None else {}
    instance: Any = object.__new__(plan.cls)
    instance.__dict__ = values
    return instance


_DEPS: dict[Any, tuple[_Deps, Any]] = {}


def _deps_for(cls: Any) -> tuple[_Deps, Any]:
    found = _DEPS.get(cls)
    if found is None:
        classes = cls._infer_class_models()  # what `cls.deserialize` resolves type names with
        found = _DEPS.setdefault(cls, (_Deps(classes), classes.get(cls.__name__, cls)))
    return found


def fast_model_from_wire(cls: type[ModelT], raw: Any) -> ModelT:
    """The fast path alone: raises `Unsupported` where msrest must decide."""
    deps, target = _deps_for(cls)
    result: ModelT = _read_model(deps.plan(target), raw)
    return result


def model_from_wire(cls: type[ModelT], raw: Any) -> ModelT:
    """`cls.deserialize(raw)`, fast for the shapes channels send."""
    try:
        return fast_model_from_wire(cls, raw)
    except Exception:  # Unsupported, or anything msrest must judge: msrest decides
        log.debug("model read by msrest", extra={"model": cls.__name__})
    result: ModelT = cls.deserialize(raw)  # type: ignore[attr-defined]
    return result


def activity_from_wire(raw: Any) -> Activity:
    """`Activity().deserialize(raw)`: same result, same DeserializationError for bad shapes."""
    return model_from_wire(Activity, raw)


# --- outbound: model -> wire dict ---------------------------------------------------------------


def _write_str(value: Any) -> Any:
    """msrest's `serialize_unicode`: an enum's value, else str()."""
    if type(value) is str:
        return value
    try:
        return value.value
    except AttributeError:
        return str(value)


def _write_iso(value: Any) -> Any:
    """msrest's `serialize_iso` for aware datetimes; naive ones (msrest logs a warning) and
    strings (msrest parses them) go to msrest."""
    if type(value) is not datetime.datetime or not value.tzinfo:
        raise Unsupported("iso-8601")
    utc = value.utctimetuple()
    if utc.tm_year > 9999 or utc.tm_year < 1:
        raise Unsupported("iso-8601")
    fraction = str(value.microsecond).rjust(6, "0").rstrip("0").ljust(3, "0")
    return "%04d-%02d-%02dT%02d:%02d:%02d.%sZ" % (  # noqa: UP031 (msrest's exact layout)
        utc.tm_year,
        utc.tm_mon,
        utc.tm_mday,
        utc.tm_hour,
        utc.tm_min,
        utc.tm_sec,
        fraction,
    )


# msrest's `serialize_object` for the other standard types it knows.
_OBJECT_SPECIALS: dict[type, Callable[[Any], Any]] = {
    datetime.date: Serializer.serialize_date,
    datetime.time: Serializer.serialize_time,
    datetime.timedelta: Serializer.serialize_duration,
    decimal.Decimal: Serializer.serialize_decimal,
}


def _write_json(value: Any, depth: int) -> Any:
    """msrest's `serialize_object`, for JSON values, models and the standard types."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if depth > MAX_OBJECT_DEPTH:
        raise Unsupported("depth")
    if kind is dict:
        return {
            (k if type(k) is str else _write_str(k)): (
                v if type(v) in _SCALARS else _write_json(v, depth + 1)
            )
            for k, v in value.items()
        }
    if kind is list:
        return [v if type(v) in _SCALARS else _write_json(v, depth + 1) for v in value]
    if kind is datetime.datetime:
        return _write_iso(value)
    special = _OBJECT_SPECIALS.get(kind)
    if special is not None:
        return special(value)
    if isinstance(value, Model):
        return _write_model(value)
    raise Unsupported("object")  # msrest would str() it, or fail


def _write_object(value: Any) -> Any:
    return _write_json(value, 0)


def _write_list(item: Writer) -> Writer:
    def write(value: Any) -> Any:
        if type(value) is not list and type(value) is not tuple:
            raise Unsupported("list")
        return [None if v is None else item(v) for v in value]

    return write


def _write_dict(item: Writer) -> Writer:
    def write(value: Any) -> Any:
        if type(value) is not dict:
            raise Unsupported("dict")
        return {_write_str(k): None if v is None else item(v) for k, v in value.items()}

    return write


def _write_nested(value: Any) -> Any:
    # msrest serializes a model-typed attribute by the value's own class (`_serialize`).
    if isinstance(value, Model):
        return _write_model(value)
    raise Unsupported("model")


def _unsupported_writer(value: Any) -> Any:
    raise Unsupported("type")


_BASIC_WRITERS: dict[str, Writer] = {
    "str": _write_str,
    "int": int,
    "bool": bool,
    "float": float,
    "iso-8601": _write_iso,
    "object": _write_object,
}
_MSREST_SPECIAL_TYPES = frozenset(
    {"rfc-1123", "unix-time", "duration", "date", "time", "decimal", "long", "bytearray", "base64"}
)


def _writer(type_name: str) -> Writer:
    basic = _BASIC_WRITERS.get(type_name)
    if basic is not None:
        return basic
    if type_name in _MSREST_SPECIAL_TYPES:
        return _unsupported_writer
    if len(type_name) > 2 and type_name[0] + type_name[-1] == "[]":
        return _write_list(_writer(type_name[1:-1]))
    if len(type_name) > 2 and type_name[0] + type_name[-1] == "{}":
        return _write_dict(_writer(type_name[1:-1]))
    return _write_nested


_MISSING = object()
# class -> (attribute, wire key, writer) in attribute-map order; None: msrest serializes it.
_WRITE_PLANS: dict[type, tuple[tuple[str, str, Writer], ...] | None] = {}


def _write_plan(cls: Any) -> tuple[tuple[str, str, Writer], ...] | None:
    if cls in _WRITE_PLANS:
        return _WRITE_PLANS[cls]
    plan: tuple[tuple[str, str, Writer], ...] | None = None
    if _model_supported(cls):
        plan = tuple(
            (attr, desc["key"], _writer(desc["type"]))
            for attr, desc in cls._attribute_map.items()
            if attr != "additional_properties"
        )
    _WRITE_PLANS[cls] = plan
    return plan


def _write_model(model: Any) -> dict[str, Any]:
    kind = type(model)
    plan = _WRITE_PLANS[kind] if kind in _WRITE_PLANS else _write_plan(kind)
    if plan is None:
        raise Unsupported("model")
    out: dict[str, Any] = {}
    for attr, key, write in plan:
        value = getattr(model, attr, _MISSING)
        if value is None:
            continue
        if value is _MISSING:
            raise Unsupported("attribute")  # msrest raises SerializationError
        out[key] = write(value)
    return out


def fast_model_to_wire(model: Any) -> dict[str, Any]:
    """The fast path alone: raises `Unsupported` (or the error of a value that cannot be
    converted) where msrest must decide."""
    if not isinstance(model, Model):
        raise Unsupported("not a model")
    return _write_model(model)


def model_to_wire(model: Any) -> Any:
    """`model.serialize()`, fast for the models the bot sends."""
    try:
        return fast_model_to_wire(model)
    except Exception:  # Unsupported, or a value msrest must judge: msrest decides
        log.debug("model written by msrest", extra={"model": type(model).__name__})
    return model.serialize()


def activity_to_wire(activity: Activity) -> dict[str, Any]:
    """`activity.serialize()`: same dict, same SerializationError for values msrest refuses."""
    result: dict[str, Any] = model_to_wire(activity)
    return result
