"""What a command reads and writes besides its arguments: standard streams, the environment
variables and the working directory.

The command line receives them as one object instead of reaching for `sys` and `os.environ`,
so that a whole command runs in-process against stand-ins (the test suite does), and so that a
run's checks see the environment the command was given, not the one the process happens to hold.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


@dataclass
class Environment:
    stdin: IO[bytes]
    stdout: IO[str]
    stderr: IO[str]
    environ: Mapping[str, str] = field(default_factory=dict)
    cwd: Path = field(default_factory=Path.cwd)
    stdin_tty: bool = False
    stdout_tty: bool = False
    stderr_tty: bool = False

    @classmethod
    def from_process(cls) -> Environment:
        """This process's own streams, variables and directory."""

        def tty(stream: object) -> bool:
            isatty = getattr(stream, "isatty", None)
            try:
                return bool(isatty()) if callable(isatty) else False
            except (OSError, ValueError):
                return False

        stdin = getattr(sys.stdin, "buffer", None)
        if stdin is None:
            stdin = open(os.devnull, "rb")  # noqa: SIM115 - lives as long as the process
        return cls(
            stdin=stdin,
            stdout=sys.stdout,
            stderr=sys.stderr,
            environ=dict(os.environ),
            cwd=Path.cwd(),
            stdin_tty=tty(sys.stdin),
            stdout_tty=tty(sys.stdout),
            stderr_tty=tty(sys.stderr),
        )

    def out(self, text: str = "", nl: bool = True) -> None:
        self.stdout.write(text + ("\n" if nl else ""))

    def err(self, text: str) -> None:
        self.stderr.write(text + "\n")

    def which(self, name: str) -> str | None:
        """A program on this environment's PATH (not necessarily the process's)."""
        import shutil

        return shutil.which(name, path=self.environ.get("PATH", os.defpath))
