"""Closed sets of values that options and settings files share."""

from __future__ import annotations

from enum import StrEnum


class FailOn(StrEnum):
    error = "error"
    warn = "warn"


class Need(StrEnum):
    pull = "pull"
    push = "push"
