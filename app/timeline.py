"""The console's timeline of a user: each inquiry a lane through its statuses over time, blocks and overrides
marked. Geometry only (SVG units), from the user record (docs/contracts.md §4) and the user's block; the
template draws it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from domain.policy import Block
from domain.times import iso_millis, parse_time

WIDTH = 960  # SVG units; the picture scales to the page
LABELS = 150  # room on the left for the inquiry ids
RIGHT = 110  # room on the right for the last time's label
LANE = 30
TOP = 10
AXIS = 24
# Outcomes whose `to` is not the inquiry's status from then on (docs/contracts.md §4 history).
NO_CHANGE = frozenset({"stale", "ignored", "duplicate", "override"})


@dataclass(frozen=True)
class Segment:
    x: float
    width: float
    status: str
    since: str


@dataclass(frozen=True)
class Lane:
    inquiry_id: str
    y: float
    segments: list[Segment]


@dataclass(frozen=True)
class Mark:
    x: float
    width: float
    label: str


@dataclass
class Timeline:
    width: int = WIDTH
    height: int = TOP + AXIS
    lanes: list[Lane] = field(default_factory=list)
    blocks: list[Mark] = field(default_factory=list)
    overrides: list[Mark] = field(default_factory=list)
    ticks: list[Mark] = field(default_factory=list)


def _changes(record: dict) -> dict[str, list[tuple[datetime, str]]]:
    """Per inquiry, the times its status changed and what to, oldest first."""
    changes: dict[str, list[tuple[datetime, str]]] = {i["id"]: [] for i in record["inquiries"]}
    for entry in record["history"]:
        inquiry, to = entry["inquiry_id"], entry["to"]
        if inquiry in changes and to and entry["outcome"] not in NO_CHANGE:
            runs = changes[inquiry]
            if not runs or runs[-1][1] != to:
                runs.append((parse_time(entry["at"]), to))
    return changes


def timeline(record: dict, block: Block | None, now: datetime) -> Timeline:
    """The picture of `record` at `now`; `block` is the user's latest block (domain/policy.py), if any."""
    changes = _changes(record)
    moments = [at for runs in changes.values() for at, _ in runs]
    moments += [parse_time(o["at"]) for o in record["overrides"]] + ([block.since] if block else [])
    if not moments:
        return Timeline()
    start, end = min(moments), max([now, *moments])
    span = max((end - start).total_seconds(), 1.0)

    def x(moment: datetime) -> float:
        return round(LABELS + (WIDTH - LABELS - RIGHT) * (moment - start).total_seconds() / span, 1)

    picture = Timeline(height=TOP + LANE * len(changes) + AXIS)
    for row, (inquiry_id, runs) in enumerate(changes.items()):
        ends = [at for at, _ in runs[1:]] + [end]
        segments = [
            Segment(x(at), max(x(until) - x(at), 2.0), status, iso_millis(at))
            for (at, status), until in zip(runs, ends, strict=True)
        ]
        picture.lanes.append(Lane(inquiry_id, TOP + LANE * row, segments))
    if block is not None:
        until = min(block.until, end) if block.until else end
        label = f"blocked {iso_millis(block.since)} to " + (iso_millis(block.until) if block.until else "for good")
        picture.blocks.append(Mark(x(block.since), max(x(until) - x(block.since), 2.0), label))
    for override in record["overrides"]:
        picture.overrides.append(
            Mark(x(parse_time(override["at"])), 0, f"{override['action']} by {override['operator']}")
        )
    picture.ticks = [Mark(x(start), 0, iso_millis(start)[:16]), Mark(x(end), 0, iso_millis(end)[:16])]
    return picture
