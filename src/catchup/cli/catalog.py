"""`catchup list` and `catchup show`: what the repository holds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from catchup.cli.options import ConfigOption, JsonOption
from catchup.cli.output import human_bytes, new_table, out, print_json, quoted
from catchup.config import load_config
from catchup.pitr import restorable_windows
from catchup.repository import DamagedBackup, Manifest, open_repository
from catchup.repository.retention import future_dated


def list_backups(
    shard: Annotated[str | None, typer.Argument(help="Only this keyspace/shard.")] = None,
    config_path: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """List complete backups, oldest first; damaged and future-dated ones are marked."""
    config = load_config(config_path)
    repository = open_repository(config)
    if shard:
        selected = config.shard(shard)
        catalog = repository.catalog(selected.keyspace, selected.shard)
    else:
        catalog = repository.catalog()
    now = datetime.now(UTC)
    rows: list[tuple[str, str, Manifest | DamagedBackup, str]] = [
        (m.shard_name, m.backup_id, m, "future-dated" if future_dated(m, now) else "ok")
        for m in catalog.backups
    ]
    rows += [(d.shard_name, d.backup_id, d, "damaged") for d in catalog.damaged]
    rows.sort(key=lambda row: row[:2])
    windows = restorable_windows(repository, catalog.backups)
    if json_output:
        print_json(
            [
                {**entry.summary(), "state": state}
                | ({"pitr_window": windows.get(entry.backup_id)} if state != "damaged" else {})
                for _, _, entry, state in rows
            ]
        )
        return
    table = new_table(
        f"Backups in {quoted(repository.url)}",
        ["shard", "id", "kind", "parent", "position", "from source", "data", "stored", "created"],
    )
    for name, backup_id, m, state in rows:
        if isinstance(m, DamagedBackup):
            table.add_row(quoted(name), quoted(backup_id), "[red]DAMAGED", *["-"] * 6)
            continue
        table.add_row(
            quoted(name),
            quoted(backup_id),
            quoted(m.kind) if state == "ok" else f"{quoted(m.kind)} [yellow](future-dated)",
            quoted(m.parent or "-"),
            quoted(m.position),
            human_bytes(m.bytes_from_source),
            human_bytes(m.data_bytes),
            human_bytes(m.stored_bytes),
            m.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    out.print(table)
    for name, stretches in sorted(shard_windows(catalog.backups, windows).items()):
        for stretch in stretches:
            out.print(
                f"point-in-time window {quoted(name)}: {quoted(stretch['from_time'])} to "
                f"{quoted(stretch['to_time'] or stretch['to_position'])}"
            )
    for damaged in catalog.damaged:
        out.print(
            f"[red]damaged[/red] {quoted(damaged.shard_name)} {quoted(damaged.backup_id)}: "
            f"{quoted(damaged.reason)}"
        )


def show(
    backup_id: Annotated[str, typer.Argument(help="A backup id from `catchup list`.")],
    config_path: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show one backup's manifest."""
    manifest = open_repository(load_config(config_path)).find_any(backup_id)
    if json_output:
        print_json(manifest.model_dump(mode="json"))
        return
    summary = manifest.summary()

    def field(label: str, value: object) -> None:
        out.print(f"{label:>18}: {quoted(value)}")

    for key in ("id", "shard", "engine", "kind", "parent", "position", "created_at"):
        field(key, summary[key])
    field("server", manifest.server_version)
    field("source", f"{manifest.source.endpoint} ({manifest.source.role})")
    field("from source", human_bytes(manifest.bytes_from_source))
    field(
        "data / stored",
        f"{human_bytes(manifest.data_bytes)} / {human_bytes(manifest.stored_bytes)} in "
        f"{len(manifest.files)} files",
    )
    if manifest.chunked:
        field(
            "format 3",
            f"{human_bytes(manifest.new_stored_bytes or 0)} new, "
            f"{manifest.chunk_table.records if manifest.chunk_table else 0} chunks in "
            f"{len(manifest.packs or [])} packs shared with the shard's other backups",
        )
    field("compression", manifest.compression)
    encryption = manifest.encryption or {"none": "not encrypted"}
    field("encryption", ", ".join(f"{k} {v}" for k, v in encryption.items()))
    field("steps", ", ".join(f"{k} {v:.2f}s" for k, v in manifest.durations.items()))
    if manifest.rebootstrap_reason:
        field("re-bootstrapped", manifest.rebootstrap_reason)


def shard_windows(
    backups: list[Manifest], windows: dict[str, dict[str, Any] | None]
) -> dict[str, list[dict[str, Any]]]:
    by_shard: dict[str, list[dict[str, Any]]] = {}
    for manifest in backups:
        stretch = windows.get(manifest.backup_id)
        if stretch and stretch not in by_shard.setdefault(manifest.shard_name, []):
            by_shard[manifest.shard_name].append(stretch)
    return by_shard
