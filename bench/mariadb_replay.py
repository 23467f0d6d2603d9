"""How to replay archived MariaDB binlogs on a restored backup: two mechanisms timed.

Usage: .venv/bin/python bench/mariadb_replay.py [--transactions 20000] [--rows 1] [--workdir DIR]
       [--json]

1. A sandbox source with the demo schema; a backup of it by the real cycle.
2. The source's binlog streamed by the engine's archive stream (mariadb-binlog --raw)
   while a procedure commits --transactions small transactions (insert, update, delete).
3. On the same restored backup, twice, timing only the replay (the server is up):
   - pipe: `mariadb-binlog --start-position --stop-position FILES | mariadb` (replay.py);
   - relay: the files copied into the data dir as relay logs, applied by the replica's
     SQL thread (`START SLAVE SQL_THREAD UNTIL RELAY_LOG_FILE/POS`), copy included;
   and checks that both end with the source's table checksums.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import benchlib  # noqa: F401  (puts src/ on the import path)
from benchlib import dir_bytes, machine, say
from catchup.cancel import CancelToken
from catchup.config import Config, parse_config
from catchup.cycle import CycleOptions, LogReporter
from catchup.demo.mariadb import MariaDBSandbox
from catchup.demo.run import demo_config
from catchup.engines import LogTarget
from catchup.engines.mariadb import MariaDBEngine
from catchup.engines.mariadb.binaries import find_binary
from catchup.engines.mariadb.gtid import Position
from catchup.engines.mariadb.instance import MariaDBInstance
from catchup.engines.mariadb.replay import Piece, archived_files, plan_replay, replay_log
from catchup.fleet.run import backup_fleet
from catchup.repository import open_repository

WORKLOAD = """
CREATE PROCEDURE shop.bench_workload(IN n INT, IN r INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  WHILE i < n DO
    CASE i % 3
      WHEN 0 THEN INSERT INTO shop.orders (customer_id, status, total, note, created_at)
                  SELECT 1 + (i + seq) % 50, 'new', i % 500, 'bench', NOW()
                  FROM shop.seq_1_to_1000 WHERE seq <= r;
      WHEN 1 THEN UPDATE shop.orders SET total = total + 1
                  WHERE id BETWEEN 1 + i % 1000 AND i % 1000 + r;
      ELSE DELETE FROM shop.event_log ORDER BY happened_at LIMIT r;
    END CASE;
    SET i = i + 1;
  END WHILE;
END
"""


def archive(
    engine: MariaDBEngine,
    config: Config,
    source: MariaDBSandbox,
    start: str,
    root: Path,
    n: int,
    rows: int,
) -> tuple[Path, str]:
    """Stream while the workload runs; the settled bytes of each file into `root/logs`."""
    logs = root / "logs"
    logs.mkdir()
    shard = config.shards[0]
    with engine.stream_log(config, shard, root / "spool", start) as stream:
        source.execute(WORKLOAD)
        began = time.monotonic()
        source.execute("CALL shop.bench_workload(%s, %s)", (n, rows))
        say(f"{n} transactions in {time.monotonic() - began:.1f}s")
        end = source.position()
        while True:
            settled = stream.poll()
            name, length = settled[-1]
            if stream.mark(name, length).position == end:
                break
            time.sleep(0.1)
        for name, length in settled:
            with open(stream.path(name), "rb") as spool_file:
                (logs / name).write_bytes(spool_file.read(length))
    return logs, end


def pipe(instance: MariaDBInstance, pieces: list[Piece]) -> None:
    """`mariadb-binlog --start-position --stop-position FILES | mariadb`, the manual way."""
    reader = [find_binary("mariadb-binlog")]
    if pieces[0].start is not None:
        reader.append(f"--start-position={pieces[0].start}")  # applies to the first file
    if pieces[-1].stop is not None:
        reader.append(f"--stop-position={pieces[-1].stop}")  # applies to the last file
    reader += [str(p.path) for p in pieces]
    client = [
        find_binary("mariadb"),
        f"--defaults-extra-file={instance.server.files.client_config}",
        "--binary-mode",
    ]
    producer = subprocess.Popen(reader, stdout=subprocess.PIPE, env={"TZ": "UTC"})
    subprocess.run(client, stdin=producer.stdout, check=True)
    assert producer.wait() == 0


def replay_pipe(instance: MariaDBInstance, start: str, logs: Path, end: str) -> float:
    plan = plan_replay(Position.parse(start), archived_files(logs), LogTarget(position=end))
    instance.server.start()
    began = time.monotonic()
    pipe(instance, plan.pieces)
    return time.monotonic() - began


def replay_relay(instance: MariaDBInstance, start: str, logs: Path, end: str) -> float:
    """replay.py's way, timed without the server's start (the pipe's is not timed either)."""
    server = instance.server
    start_server = server.start
    starting: list[float] = []

    def timed_start(**options: object) -> None:
        began = time.monotonic()
        start_server(**options)  # type: ignore[arg-type]
        starting.append(time.monotonic() - began)

    server.start = timed_start  # type: ignore[method-assign]
    began = time.monotonic()
    replay_log(server, start, logs, LogTarget(position=end), CancelToken())
    return time.monotonic() - began - sum(starting)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=20000)
    parser.add_argument("--rows", type=int, default=1, help="rows per transaction (≤ 1000)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/catchup-bench-replay"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = args.workdir
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    source = MariaDBSandbox(root / "sandbox" / "src", 1)
    source.start()
    try:
        source.load_demo_data(5)
        (root / "catchup.toml").write_text(demo_config(root, [source], 1))
        config = parse_config(tomllib.loads((root / "catchup.toml").read_text()), "catchup.toml")
        repository = open_repository(config)
        [result] = backup_fleet(
            config, config.shards, repository, CycleOptions(), LogReporter(), CancelToken()
        )
        assert result.ok, result.error
        manifest = repository.latest(config.shards[0].keyspace, config.shards[0].shard)
        assert manifest is not None
        engine = MariaDBEngine()
        logs, end = archive(
            engine, config, source, manifest.position, root, args.transactions, args.rows
        )
        expected = source.checksums()
        results = {
            "transactions": args.transactions,
            "rows": args.rows,
            "log_bytes": dir_bytes(logs),
        }
        for name, mechanism in (("pipe", replay_pipe), ("relay", replay_relay)):
            with engine.provision_for_checks(config, config.shards[0], "") as instance:
                repository.restore(manifest, instance.data_dir, config.jobs)
                seconds = mechanism(instance, manifest.position, logs, end)
                assert instance.table_checksums() == expected, f"{name}: not the source's data"
                results[f"{name}_seconds"] = round(seconds, 2)
                say(f"{name}: {seconds:.2f}s")
    finally:
        source.kill()
    if args.json:
        print(json.dumps(results))
        return
    print(
        f"{machine()}; {args.transactions} transactions of {args.rows} rows, "
        f"{results['log_bytes']} log bytes"
    )
    for name in ("pipe", "relay"):
        seconds = results[f"{name}_seconds"]
        print(f"{name:6} {seconds:6.2f} s  {args.transactions / seconds:8.0f} transactions/s")


if __name__ == "__main__":
    main()
