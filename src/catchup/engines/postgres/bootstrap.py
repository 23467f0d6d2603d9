"""The first backup of a chain: a new physical slot, then `pg_basebackup -X
stream` of the source through the relay, in tar format, unpacked with the
tablespaces inside the data dir (basebackup.py)."""

from __future__ import annotations

import subprocess

from catchup.cancel import CancelToken
from catchup.engines import StepProgress
from catchup.engines.environment import child_environment
from catchup.engines.postgres import basebackup
from catchup.engines.postgres.server import PostgresServer, give_to_server_user
from catchup.engines.postgres.source import PostgresSource, conninfo_value, pgpass_line
from catchup.errors import SourceError
from catchup.files import write_private


def bootstrap(
    server: PostgresServer, source: PostgresSource, cancel: CancelToken, progress: StepProgress
) -> None:
    """Fill the instance's data dir with a base backup of the source."""
    files = server.files
    source.session.create_slot()  # before the base backup: it holds the WAL from here
    files.root.mkdir(parents=True, exist_ok=True)
    passfile = files.root / "pgpass"
    write_private(passfile, pgpass_line(source.session.password or ""))
    archives = files.root / "basebackup"
    archives.mkdir(mode=0o700)
    give_to_server_user(files.root)
    command = [
        *server.tool("pg_basebackup"),
        "-d",
        f"host=127.0.0.1 port={source.relay.port} user={conninfo_value(source.session.user)}",
        "-D",
        str(archives),
        "-F",
        "tar",  # every tablespace into `archives`, none to the source's paths
        "-X",
        "stream",
        "-c",
        "fast",
        "--no-sync",
        "--no-manifest",
    ]
    estimate = max(1, source.estimated_data_bytes())
    env = child_environment(PGPASSFILE=str(passfile))
    with open(files.root / "basebackup.err", "wb") as errors:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=env)
        try:
            while process.poll() is None:
                cancel.check()
                progress(min(source.bytes_sent, estimate), estimate)
                cancel.sleep(0.2)
        except BaseException:
            process.kill()
            process.wait()
            raise
    passfile.unlink(missing_ok=True)
    if process.returncode != 0:
        tail = (files.root / "basebackup.err").read_text(errors="replace").strip()
        raise SourceError(f"pg_basebackup of the source failed: {tail.splitlines()[-1:]}")
    basebackup.unpack(archives, files.data_dir)
    archives.rmdir()
    give_to_server_user(files.root)
