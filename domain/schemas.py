"""The Persona event envelope, validated with marshmallow after key normalisation (snake case): of the
whole document (`normalise_keys`) or of just the parts read here and by minimisation (`normalise_envelope`).

Only the fields the service relies on are declared; everything else is excluded, not rejected,
because Persona adds attributes over time. `load_envelope` and `load_event` then check what minimisation
keeps (domain/events.py) with the worker's and the database's rules, so every loader (the webhook, events
fetched from Persona) refuses the same events, each with the field at fault.
"""

from __future__ import annotations

from datetime import UTC, datetime

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from domain.events import InvalidEvent, QueuedEvent, minimise, text_problem
from domain.times import MAX_YEAR, MIN_YEAR


def _kept_text(value: str) -> None:
    """The rule for ids and names the worker stores: 1..255 characters, no controls or lone surrogates."""
    problem = text_problem(value)
    if problem:
        raise ValidationError(problem)


class UtcDateTime(fields.AwareDateTime):
    """An aware datetime, converted to UTC here so that one beyond UTC's range (year 1 or 9999 with an
    offset) is a validation error instead of an OverflowError later; and within MIN_YEAR..MAX_YEAR, the
    range the worker's date arithmetic is safe in (domain/events.py)."""

    def _deserialize(self, value, attr, data, **kwargs) -> datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE) from None
        if not MIN_YEAR <= moment.year <= MAX_YEAR:
            raise ValidationError(f"must be within the years {MIN_YEAR} to {MAX_YEAR}")
        return moment


class _Lenient(Schema):
    class Meta:
        unknown = EXCLUDE


class ObjectSchema(_Lenient):
    """The object the event is about: an inquiry, a verification, or anything else Persona sends."""

    type = fields.String(required=True, validate=_kept_text)
    id = fields.String(required=True, validate=_kept_text)
    attributes = fields.Dict(load_default=dict)
    relationships = fields.Dict(load_default=dict)


class PayloadSchema(_Lenient):
    data = fields.Nested(ObjectSchema, required=True)
    included = fields.List(fields.Dict(), load_default=list)


class EventAttributesSchema(_Lenient):
    name = fields.String(required=True, validate=_kept_text)
    created_at = UtcDateTime(required=True)
    payload = fields.Nested(PayloadSchema, required=True)


class EventSchema(_Lenient):
    type = fields.String(required=True, validate=validate.Equal("event"))
    id = fields.String(required=True, validate=_kept_text)
    attributes = fields.Nested(EventAttributesSchema, required=True)


class EnvelopeSchema(_Lenient):
    data = fields.Nested(EventSchema, required=True)


_ENVELOPE = EnvelopeSchema()


def first_error(messages: dict | list | str, path: str = "") -> str:
    """Flatten marshmallow's nested messages to `data.attributes.name: Missing data ...`."""
    if isinstance(messages, dict):
        key, value = next(iter(messages.items()))
        if key == "_schema":
            return first_error(value, path)
        return first_error(value, f"{path}.{key}" if path else str(key))
    if isinstance(messages, list) and messages:
        return first_error(messages[0], path)
    return f"{path or 'body'}: {messages}"


def load_envelope(document: object) -> dict:
    """Validate a normalised document and what minimising it keeps; raise ValidationError naming the
    first field at fault (`data.attributes.payload.data.attributes.created_at: ...`)."""
    envelope, _event = _load(document, "")
    return envelope


def load_event(document: object, body_hash: str) -> QueuedEvent:
    """`load_envelope`, returning the envelope's queued form (`minimise`) instead of the envelope."""
    _envelope, event = _load(document, body_hash)
    return event


def _load(document: object, body_hash: str) -> tuple[dict, QueuedEvent]:
    if not isinstance(document, dict):
        raise ValidationError("expected a JSON object with a `data` event")
    envelope = _ENVELOPE.load(document)
    try:
        # minimise first, then check what is kept: dropped fields are never checked
        return envelope, minimise(envelope, body_hash)
    except InvalidEvent as error:
        raise ValidationError({error.field: [error.problem]}) from None
