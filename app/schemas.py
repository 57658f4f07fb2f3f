"""The Persona event envelope, validated with marshmallow after key normalisation (snake case).

Only the fields the service relies on are declared; everything else is excluded, not rejected,
because Persona adds attributes over time.
"""

from __future__ import annotations

from datetime import datetime, timezone

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

_NON_EMPTY = validate.Length(min=1, max=255)


class UtcDateTime(fields.AwareDateTime):
    """An aware datetime, converted to UTC here so that one beyond UTC's range (year 1 or 9999 with an
    offset) is a validation error instead of an OverflowError later."""

    def _deserialize(self, value, attr, data, **kwargs) -> datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(timezone.utc)
        except OverflowError:
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE) from None


class _Lenient(Schema):
    class Meta:
        unknown = EXCLUDE


class ObjectSchema(_Lenient):
    """The object the event is about: an inquiry, a verification, or anything else Persona sends."""

    type = fields.String(required=True, validate=_NON_EMPTY)
    id = fields.String(required=True, validate=_NON_EMPTY)
    attributes = fields.Dict(load_default=dict)
    relationships = fields.Dict(load_default=dict)


class PayloadSchema(_Lenient):
    data = fields.Nested(ObjectSchema, required=True)
    included = fields.List(fields.Dict(), load_default=list)


class EventAttributesSchema(_Lenient):
    name = fields.String(required=True, validate=_NON_EMPTY)
    created_at = UtcDateTime(required=True)
    payload = fields.Nested(PayloadSchema, required=True)


class EventSchema(_Lenient):
    type = fields.String(required=True, validate=validate.Equal("event"))
    id = fields.String(required=True, validate=_NON_EMPTY)
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
    """Validate a normalised document; raise ValidationError naming the first field at fault."""
    if not isinstance(document, dict):
        raise ValidationError("expected a JSON object with a `data` event")
    return _ENVELOPE.load(document)
