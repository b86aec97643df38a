"""The errors a command turns into an exit code, in one place (see cli.run).

Exit codes: 0 healthy; 1 a problem to act on (the report says which); 2 bad usage or bad input,
said in one line on standard error, never with a traceback.
"""

from __future__ import annotations

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """Bad usage or bad input: its message is one line, safe to print (no secret, no
    control character), naming what was wrong."""
