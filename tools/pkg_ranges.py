"""Julia Pkg version ranges, as the General registry and Project.toml files write them.

Two syntaxes exist and they differ on a bare version:

* registry syntax (Compat.toml keys and values, WeakCompat.toml, Deps.toml keys): a
  `VersionRange` string. "1.4" is every 1.4.x, "0.26.1-0" and "1.4.6 - 2" are hyphen
  ranges whose upper end is a wildcard in its missing parts, a TOML array is a union.
* project syntax (the [compat] table of a Project.toml): Pkg's semver specs. "1.2" is
  caret [1.2.0, 2.0.0), "0.9" is [0.9.0, 0.10.0), "0.0.3" is [0.0.3, 0.0.4), "~" is
  tilde, "=" is equality, ">=", "<" etc. are inequalities, "a - b" is a hyphen range,
  commas make a union.

Every range here is a half-open interval [lo, hi) of (major, minor, patch) tuples; the
build suffix of a version ("0.9.2+0") is dropped, as Pkg's compat matching does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Version = tuple[int, int, int]
INFINITY: Version = (1 << 62, 0, 0)
_BOUND = re.compile(r"\d+(\.\d+){0,2}")


class RangeSyntaxError(ValueError):
    """A version or range string that Pkg would not accept."""


@dataclass(frozen=True)
class Interval:
    """A half-open interval [lo, hi) of versions."""

    lo: Version
    hi: Version

    def __contains__(self, version: Version) -> bool:
        return self.lo <= version < self.hi

    def __str__(self) -> str:
        hi = "inf" if self.hi == INFINITY else ".".join(map(str, self.hi))
        return f"[{'.'.join(map(str, self.lo))}, {hi})"


@dataclass(frozen=True)
class VersionSet:
    """A union of intervals; `text` is the range as its source wrote it."""

    intervals: tuple[Interval, ...]
    text: str

    def __contains__(self, version: Version) -> bool:
        return any(version in interval for interval in self.intervals)

    def __str__(self) -> str:
        return " or ".join(map(str, self.intervals)) or "(empty)"


def parse_version(text: str) -> Version:
    """Returns (major, minor, patch) of a full version such as "1.10.12" or "0.9.2+0"."""
    core = text.strip().split("+")[0]
    if not re.fullmatch(r"\d+\.\d+\.\d+", core):
        raise RangeSyntaxError(f"not a full version: {text!r}")
    major, minor, patch = (int(p) for p in core.split("."))
    return (major, minor, patch)


def _bound(text: str) -> tuple[int, ...]:
    """Returns the 1 to 3 numeric parts of a partial version such as "1", "0.9", "1.4.2"."""
    text = text.strip()
    if not _BOUND.fullmatch(text):
        raise RangeSyntaxError(f"not a version bound: {text!r}")
    return tuple(int(p) for p in text.split("."))


def _low(parts: tuple[int, ...]) -> Version:
    """Returns the smallest version a partial bound admits ("1.4" -> 1.4.0)."""
    padded = parts + (0,) * (3 - len(parts))
    return (padded[0], padded[1], padded[2])


def _above(parts: tuple[int, ...]) -> Version:
    """Returns the first version past a wildcard bound ("1.4" -> 1.5.0, "2" -> 3.0.0)."""
    bumped = parts[:-1] + (parts[-1] + 1,)
    return _low(bumped)


def _registry_interval(text: str) -> Interval:
    """Returns one registry-syntax range: "1.4", "0.26.1-0", "1.4.6 - 2", "*"."""
    text = text.strip()
    if text == "*":
        return Interval((0, 0, 0), INFINITY)
    if "-" in text:
        lo_text, _, hi_text = text.partition("-")
        hi_text = hi_text.strip()
        hi = INFINITY if hi_text == "*" else _above(_bound(hi_text))
        return Interval(_low(_bound(lo_text)), hi)
    parts = _bound(text)
    return Interval(_low(parts), _above(parts))


def parse_registry_range(value: str | list[str]) -> VersionSet:
    """Returns the union a registry Compat/WeakCompat value or table key stands for."""
    texts = [value] if isinstance(value, str) else list(value)
    if not texts:
        raise RangeSyntaxError("empty range list")
    intervals = tuple(_registry_interval(t) for t in texts)
    return VersionSet(intervals, value if isinstance(value, str) else ", ".join(texts))


def _caret(parts: tuple[int, ...]) -> Interval:
    """Returns Pkg's caret range: the first nonzero part (or the last part given) may not grow."""
    first = next((i for i, p in enumerate(parts) if p != 0), len(parts) - 1)
    return Interval(_low(parts), _above(parts[: first + 1]))


def _tilde(parts: tuple[int, ...]) -> Interval:
    """Returns Pkg's tilde range: "~1.2.3" [1.2.3, 1.3.0), "~1" [1, 2), "~0.0.3" [0.0.3, 0.0.4)."""
    if len(parts) == 1:
        keep = 1
    elif len(parts) == 3 and parts[0] == 0 and parts[1] == 0:
        keep = 3
    else:
        keep = 2
    return Interval(_low(parts), _above(parts[:keep]))


def _inequality(op: str, parts: tuple[int, ...]) -> Interval:
    """Returns the range of "<", "<=", ">", ">=" (and "≤", "≥") applied to a bound."""
    op = {"≥": ">=", "≤": "<="}.get(op, op)
    if op == ">=":
        return Interval(_low(parts), INFINITY)
    if op == ">":
        return Interval(_above(parts), INFINITY)
    if op == "<":
        return Interval((0, 0, 0), _low(parts))
    return Interval((0, 0, 0), _above(parts))


def _project_interval(text: str) -> Interval:
    """Returns one comma-free project-syntax spec as an interval."""
    text = text.strip()
    hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", text)
    if hyphen:
        hi_text = hyphen.group(2)
        hi = INFINITY if hi_text == "*" else _above(_bound(hi_text))
        return Interval(_low(_bound(hyphen.group(1))), hi)
    inequality = re.fullmatch(r"(>=|<=|≥|≤|<|>)\s*(\S+)", text)
    if inequality:
        return _inequality(inequality.group(1), _bound(inequality.group(2)))
    if text.startswith("="):
        parts = _bound(text[1:])
        return Interval(_low(parts), _above(parts))
    if text.startswith("~"):
        return _tilde(_bound(text[1:]))
    return _caret(_bound(text.removeprefix("^")))


def parse_project_spec(text: str) -> VersionSet:
    """Returns the union a Project.toml [compat] value ("1, 2", "^1", "~0.3") stands for."""
    pieces = [p for p in text.split(",") if p.strip()]
    if not pieces:
        raise RangeSyntaxError(f"empty compat spec: {text!r}")
    return VersionSet(tuple(_project_interval(p) for p in pieces), text)


def parse_range(value: str | list[str], syntax: str) -> VersionSet:
    """Returns `value` parsed in `syntax` ("registry" or "project")."""
    if syntax == "registry":
        return parse_registry_range(value)
    if syntax == "project":
        if not isinstance(value, str):
            raise RangeSyntaxError(f"a project compat value is a string, got {value!r}")
        return parse_project_spec(value)
    raise RangeSyntaxError(f"syntax must be 'registry' or 'project', got {syntax!r}")
