"""Operators' overrides (docs/contracts.md §7): facts of their own that the policy reads beside the inquiries.

An override is never a counter and never edits an inquiry: it is recorded once, with its reason and
operator, and the policy applies it to whatever the inquiries say, so it survives every replay and a
later negative event still counts as usual. Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from domain.events import MAX_TEXT_LENGTH, text_problem

LIFT_BLOCK = "lift_block"  # the block in force ends now; its strikes stay
FORGIVE_INQUIRY = "forgive_inquiry"  # that inquiry's failure or decline is no longer a strike
CLEAR_DUPLICATE = "clear_duplicate"  # the operator confirmed this is the person's main account: enroll
RESYNC = "resync"  # sync Verisoul now; changes nothing the policy reads
ACTIONS = (LIFT_BLOCK, FORGIVE_INQUIRY, CLEAR_DUPLICATE, RESYNC)


@dataclass(frozen=True)
class Overrides:
    """A user's overrides as the policy reads them (forgiven inquiries are a fact of each inquiry)."""

    block_lifted_at: datetime | None = None  # the latest lift: the block in force then ends then
    duplicate_cleared: bool = False  # Verisoul's "linked to other accounts" no longer holds this user back
    # The start of the block that lift ended. A block that began later is another one and stands, even when its
    # decision was made before the lift and recorded after it (Persona delivers late). None: the lift's own time.
    block_lifted_since: datetime | None = None

    def lifted(self, since: datetime) -> datetime | None:
        """When a block that began at `since` was lifted, if it was (a lift ends no block that began after the
        one it lifted)."""
        if self.block_lifted_at is None or since > (self.block_lifted_since or self.block_lifted_at):
            return None
        return self.block_lifted_at


NO_OVERRIDES = Overrides()


# An override's reason is the operator's words for the audit trail: room for a sentence or two, not a file.
MAX_REASON_LENGTH = 500


@dataclass(frozen=True)
class OverrideRequest:
    """An operator's request, validated: the action, why, who, and the inquiry `forgive_inquiry` names."""

    action: str
    reason: str
    operator: str
    inquiry_id: str | None = None


# Bidirectional controls would make an audit line read other than it is written (U+202E reverses the rest).
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


def _blank(value: str) -> bool:
    """Nothing a reader could see: spaces, and format characters such as U+200B (zero-width space)."""
    return all(character.isspace() or unicodedata.category(character) == "Cf" for character in value)


def audit_text(max_length: int = MAX_TEXT_LENGTH):
    """An audit field's check (overrides, erasures): the rule of kept text, not blank, no bidirectional controls."""

    def check(value: str) -> None:
        problem = text_problem(value, max_length)
        if problem is None and _blank(value):
            problem = "must not be blank"
        if problem is None and _BIDI_CONTROLS.search(value):
            problem = "must not contain bidirectional control characters"
        if problem:
            raise ValidationError(problem)

    return check


class OverrideRequestSchema(Schema):
    """`{"action", "reason", "operator", "inquiry_id"?}`; unknown fields are refused, so a typo is not ignored."""

    class Meta:
        unknown = RAISE

    action = fields.String(required=True, validate=validate.OneOf(ACTIONS))
    reason = fields.String(required=True, validate=audit_text(MAX_REASON_LENGTH))
    operator = fields.String(required=True, validate=audit_text())
    inquiry_id = fields.String(load_default=None, validate=audit_text())

    @validates_schema
    def _inquiry_named_when_forgiving(self, data: dict, **kwargs) -> None:
        """Only forgive_inquiry is about an inquiry, and it must say which."""
        if data["action"] == FORGIVE_INQUIRY and not data.get("inquiry_id"):
            raise ValidationError("forgive_inquiry names the inquiry to forgive", "inquiry_id")
        if data["action"] != FORGIVE_INQUIRY and data.get("inquiry_id"):
            raise ValidationError(f"{data['action']} is about the user, not an inquiry", "inquiry_id")


def load_override_request(document: object) -> OverrideRequest:
    """A request body (or the CLI's options) as an OverrideRequest; raises ValidationError naming the field."""
    if not isinstance(document, dict):
        raise ValidationError("expected a JSON object with action, reason and operator")
    return OverrideRequest(**OverrideRequestSchema().load(document))
