"""Profiles: one notebook, two sizes (explained in chapter 00, "The two profiles").

``COURSE_PROFILE=full`` (the default) trains the real model on a GPU; ``COURSE_PROFILE=smoke`` runs
the same code on tiny settings on a CPU in about a minute. A chapter declares both in one config cell::

    CFG = choose(full=dict(epochs=10, batch=512), smoke=dict(epochs=1, batch=64))

and no other cell looks at the profile.
"""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import Any, Mapping

PROFILES = ("full", "smoke")
ENV_VAR = "COURSE_PROFILE"


def current_profile() -> str:
    """Return the active profile from ``$COURSE_PROFILE`` (default ``"full"``; chapter 00).

    Raises ``ValueError`` naming the offending value and the allowed ones.
    """
    value = os.environ.get(ENV_VAR, "full").strip().lower() or "full"
    if value not in PROFILES:
        raise ValueError(
            f"{ENV_VAR}={os.environ.get(ENV_VAR)!r} is not a profile; allowed values: {', '.join(PROFILES)}"
        )
    return value


def check_profile(name: str) -> str:
    """``name`` if it is one of :data:`PROFILES`, else ``ValueError`` naming it (chapter 00): a misspelt
    profile must not start an orphan run folder or label a results file."""
    if name not in PROFILES:
        raise ValueError(f"profile {name!r} is not one of {', '.join(PROFILES)}")
    return name


def check_chapter(chapter: str) -> str:
    """``chapter`` if it is a file stem such as ``"00_toolkit"``, else ``ValueError`` naming it (chapter 00):
    it names a run folder and a results file, so it must not be empty or contain a path separator."""
    if not chapter or "/" in chapter:
        raise ValueError(f"chapter must be a file stem such as '00_toolkit', got {chapter!r}")
    return chapter


class Config:
    """Read-only attribute access to one profile's settings (``cfg.epochs``), plus ``cfg.profile`` (chapter 00)."""

    def __init__(self, profile: str, values: Mapping[str, Any]):
        object.__setattr__(self, "profile", profile)
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"config has no setting {name!r}; it has {sorted(self._values)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Config is read-only: change the config cell instead")

    def asdict(self) -> dict[str, Any]:
        """The settings as a plain dict (what goes into the results JSON)."""
        return dict(self._values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"Config(profile={self.profile!r}, {inner})"


def choose(*, full: Mapping[str, Any], smoke: Mapping[str, Any], profile: str | None = None) -> Config:
    """Return the settings of the active profile. Both profiles must declare the same keys (chapter 00).

    >>> cfg = choose(full=dict(epochs=10), smoke=dict(epochs=1), profile="smoke")
    >>> cfg.epochs, cfg.profile
    (1, 'smoke')
    """
    if set(full) != set(smoke):
        missing = sorted(set(full) ^ set(smoke))
        raise ValueError(f"full and smoke profiles must declare the same settings; differing keys: {missing}")
    name = current_profile() if profile is None else check_profile(profile)
    return Config(name, full if name == "full" else smoke)
