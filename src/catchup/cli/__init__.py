"""The `catchup` command: parse input, call the layers below, present output.

Every command that prints data takes `--json`. Errors a user can act on are
one line on stderr and an exit code (see `ExitCode`), never a traceback.

One module per command (or small group: `catalog` is list and show), registered in
`app.py`; `output.py` is what they print with. A command module imports what only it
needs (the daemon, the demo sandboxes) when it runs, so `catchup list` never loads them.
"""

from catchup.cli.app import app, main

__all__ = ["app", "main"]
