"""`catchup keygen`: a new key-encryption key file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from catchup.cli.options import JsonOption
from catchup.cli.output import out, print_json
from catchup.codec.keys import generate_key_file


def keygen(
    out_file: Annotated[Path, typer.Argument(help="Where to write the new key file (mode 0600).")],
    json_output: JsonOption = False,
) -> None:
    """Create a key-encryption key file for `encryption.key_files`."""
    key = generate_key_file(out_file)
    if json_output:
        print_json({"key_id": key.key_id, "path": str(out_file)})
        return
    out.print(
        f"Wrote key {key.key_id} to {out_file} (mode 0600). Keep a copy somewhere safe: "
        "backups encrypted with it cannot be restored without it.\n"
        "Use it by listing it first in encryption.key_files; keep older key files listed "
        "after it for as long as backups made with them exist."
    )
