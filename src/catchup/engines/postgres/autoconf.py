"""The source's `postgresql.auto.conf` (ALTER SYSTEM), made safe to run and to store.

pg_basebackup copies it with the data dir, and it overrides the config file catchup
starts its instance with. A source that is, or once was, a standby carries
`primary_conninfo` (often with a password) and `primary_slot_name`: the ephemeral
standby would stream from that upstream instead of through catchup's own connection,
and every backup would store the password. Settings naming libraries, files,
sockets or memory of the source's host stop a server elsewhere.

So catchup keeps the source's tuning (work_mem, autovacuum, …) and drops, leaving a
comment with the name only (never the value):
- anything that connects to or is fed by another server (replication, archiving,
  recovery, synchronous standbys), and any value that mentions a password;
- anything the catchup or restore host may lack: preloaded libraries, SSL files,
  paths, huge pages, shared_buffers;
- anything catchup's own config must decide: port, sockets, listen addresses,
  authentication files, logging destination, hot_standby.
"""

from __future__ import annotations

import re
from pathlib import Path

DROPPED = re.compile(
    r"^(primary_conninfo|primary_slot_name|restore_command|archive_.*|recovery_.*"
    r"|promote_trigger_file|synchronous_standby_names"
    r"|.*_preload_libraries|dynamic_library_path|ssl.*|krb_.*|.*_file|.*_directory"
    r"|.*_directories|listen_addresses|port|unix_socket_.*|data_directory"
    r"|logging_collector|log_destination|log_filename|event_source|hot_standby"
    r"|shared_buffers|huge_pages|huge_page_size|shared_memory_type"
    r"|wal_receiver_.*|allow_in_place_tablespaces|include.*)$"
)
SETTING = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=?\s*(.*)$")
HEADER = "# catchup dropped from the source's postgresql.auto.conf (values not kept):\n"


def sanitize(text: str) -> tuple[str, list[str]]:
    """The file with every unsafe setting replaced by a comment naming it; and those names."""
    kept: list[str] = []
    dropped: list[str] = []
    for line in text.splitlines():
        found = SETTING.match(line)
        if found is None or line.lstrip().startswith("#"):
            kept.append(line)  # comments, earlier notes of ours included, and blank lines
            continue
        name, value = found.group(1).lower(), found.group(2)
        if DROPPED.match(name) or "password" in value.lower():
            dropped.append(name)
        else:
            kept.append(line)
    body = "".join(line + "\n" for line in kept)
    if dropped and HEADER not in body:
        body += HEADER
    return body + "".join(f"#   dropped: {name}\n" for name in dropped), dropped


def sanitize_file(data_dir: Path) -> list[str]:
    """Rewrite the data dir's postgresql.auto.conf in place (same owner and mode)."""
    path = data_dir / "postgresql.auto.conf"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    clean, dropped = sanitize(text)
    if clean != text:
        with open(path, "w") as stream:  # truncates in place: owner and 0600 stay
            stream.write(clean)
    return dropped
