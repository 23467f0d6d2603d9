"""MariaDB GTID positions (`domain-server-seqno,…`) and how two of them relate.

Pure logic: the coverage and divergence decisions of the precheck live here so
they can be tested without a server.
"""

from __future__ import annotations

from dataclasses import dataclass

from catchup.engines import Coverage, Verdict


@dataclass(frozen=True, order=True)
class Gtid:
    domain: int
    server: int
    seqno: int

    def __str__(self) -> str:
        return f"{self.domain}-{self.server}-{self.seqno}"


class Position(dict[int, Gtid]):
    """The last GTID per replication domain."""

    @classmethod
    def parse(cls, text: str | None) -> Position:
        position = cls()
        for item in (text or "").replace(" ", "").split(","):
            if not item:
                continue
            parts = item.split("-")
            if len(parts) != 3 or not all(p.isdigit() for p in parts):
                raise ValueError(f"{item!r} is not a MariaDB GTID (domain-server-seqno)")
            gtid = Gtid(*map(int, parts))
            position[gtid.domain] = gtid
        return position

    def __str__(self) -> str:
        return ",".join(str(self[d]) for d in sorted(self))

    def transactions(self) -> int:
        """Sum of sequence numbers: a measure of progress between two positions."""
        return sum(g.seqno for g in self.values())


def parse_state(text: str | None) -> list[Gtid]:
    """@@gtid_binlog_state: the last GTID of every (domain, server) pair in the history."""
    gtids: list[Gtid] = []
    for item in (text or "").replace(" ", "").split(","):
        if item:
            gtids.extend(Position.parse(item).values())
    return gtids


def judge_coverage(
    backup: Position, current: Position, oldest: Position, history: list[Gtid] | None = None
) -> Verdict:
    """Can the source send what comes after `backup`?

    `current` is the source's @@gtid_binlog_pos; `oldest` is the state before
    its oldest binary log (BINLOG_GTID_POS(first file, 4)); `history` is its
    @@gtid_binlog_state, which remembers every server's last GTID per domain.
    """
    for domain, gtid in sorted(backup.items()):
        now = current.get(domain)
        if now is None:
            return Verdict(
                Coverage.FOREIGN,
                f"backup has GTID domain {domain} ({gtid}) which the source has never logged",
            )
        if gtid.seqno > now.seqno:
            return Verdict(
                Coverage.AHEAD,
                f"backup is at {gtid}, ahead of the source's {now} in domain {domain}",
            )
        if gtid.seqno == now.seqno and gtid.server != now.server:
            return Verdict(
                Coverage.FOREIGN,
                f"backup's {gtid} and the source's {now} are different transactions",
            )
    for gtid in sorted(backup.values()):
        if history is not None and not any(
            h.domain == gtid.domain and h.server == gtid.server and h.seqno >= gtid.seqno
            for h in history
        ):
            return Verdict(
                Coverage.FOREIGN,
                f"backup's last transaction {gtid} is not in the source's binlog history",
            )
    for domain, before in sorted(oldest.items()):
        have = backup.get(domain)
        if have is None or have.seqno < before.seqno:
            needed = f"after {have}" if have else f"of domain {domain} from the start"
            return Verdict(
                Coverage.PURGED,
                f"source's binlogs start after {before}; the backup needs transactions {needed}",
            )
    return Verdict(Coverage.COVERED, "source's binlogs cover the delta")


def compare_positions(a: Position, b: Position) -> int | None:
    """-1, 0 or 1 as `a` is before, at or after `b`; None when neither contains the other.

    Sequence numbers grow within a domain over the whole history, whichever server
    wrote them (gtid_strict_mode), so a domain compares by seqno; the same seqno from
    two servers is two different transactions. A domain one side lacks counts as
    behind on that side.
    """
    signs = set()
    for domain in a.keys() | b.keys():
        mine, theirs = a.get(domain), b.get(domain)
        if mine is None or theirs is None:
            signs.add(1 if theirs is None else -1)
        elif mine.seqno == theirs.seqno:
            if mine.server != theirs.server:
                return None
        else:
            signs.add(1 if mine.seqno > theirs.seqno else -1)
    if len(signs) > 1:
        return None
    return signs.pop() if signs else 0


def parse_position(text: str) -> Position:
    """A GTID position typed by an operator: `0-1-100` or `0-1-100,1-2-5`, one per domain."""
    expected = "a GTID position: domain-server-seqno, one per domain, e.g. 0-1-100 or 0-1-100,1-2-5"
    items = [item for item in text.replace(" ", "").split(",") if item]
    if not items:
        raise ValueError(f"{text!r} is not {expected}")
    try:
        position = Position.parse(text)
    except ValueError:
        raise ValueError(f"{text!r} is not {expected}") from None
    if len(position) != len(items):
        raise ValueError(f"{text!r} names a domain twice; give {expected}")
    return position
