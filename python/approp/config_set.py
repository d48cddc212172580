"""The `--set section.key=value` parser: strings to values typed by the config dataclasses.

It knows nothing of approp's sections: `parse_assignments` takes the {section: dataclass}
table and raises ValueError with a one-line message, which approp.config.parse_set turns
into ConfigError (this module sits below config, so it cannot name that type).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any, Literal, get_args, get_origin, get_type_hints


def fraction(text: str) -> float:
    """Returns float(text), or num/den for a fraction "num/den"."""
    num, sep, den = text.partition("/")
    return float(num) / float(den) if sep else float(num)


BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
# Declared type → (parser of the text, what the error message says the value must be).
PARSERS: dict[type, tuple[Any, str]] = {
    int: (int, "an integer"),
    float: (fraction, "a number (or a fraction such as 2/255)"),
    bool: (lambda text: BOOLS[text.lower()], "true or false"),
    str: (str, "text"),
}


def parse_value(name: str, declared: Any, text: str) -> Any:
    """Returns text parsed as the declared type of field `name`; ValueError naming it otherwise."""
    optional = type(None) in get_args(declared)
    if optional:
        if text.lower() in ("none", "null"):
            return None
        (declared,) = [t for t in get_args(declared) if t is not type(None)]
    if get_origin(declared) is Literal:
        choices = get_args(declared)
        if text not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {text!r}")
        return text
    parse, what = PARSERS[declared]
    try:
        return parse(text)
    except (ValueError, KeyError, ZeroDivisionError):
        unset = " or none" if optional else ""
        raise ValueError(f"{name} must be {what}{unset}; got {text!r}") from None


def parse_assignments(items: Iterable[str], sections: Mapping[str, type]) -> dict[str, dict[str, Any]]:
    """Returns {section: {key: value}} from "section.key=value" strings (a later one wins), each
    value parsed by the declared type of its field in the dataclass `sections[section]`;
    ValueError naming the item and the known sections or keys otherwise."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        section, _, key = name.strip().partition(".")
        if not (sep and section and key):
            raise ValueError(f"--set expects SECTION.KEY=VALUE, e.g. train.epochs=5; got {item!r}")
        if section not in sections:
            raise ValueError(f"--set {item!r}: unknown config section {section!r}; known: {', '.join(sections)}")
        hints = get_type_hints(sections[section])
        declared = {f.name: hints[f.name] for f in fields(sections[section])}
        if key not in declared:
            raise ValueError(f"--set {item!r}: unknown key {key!r} in [{section}]; known: {', '.join(declared)}")
        value = parse_value(f"{section}.{key}", declared[key], text.strip())
        out.setdefault(section, {})[key] = value
    return out
