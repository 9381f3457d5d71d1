"""Entities botbuilder's schema cannot express: `Entity` serializes only `type` and a plain dict
in `entities` raises, so each shape we send is an `Entity` subclass with its own attribute map."""

from __future__ import annotations

from typing import Any, ClassVar

from botbuilder.schema import Entity


class AIGeneratedLabel(Entity):  # type: ignore[misc]
    """Teams' "AI generated" label: one schema.org Message root entity per message."""

    _attribute_map: ClassVar[dict[str, dict[str, str]]] = {
        "type": {"key": "type", "type": "str"},
        "at_type": {"key": "@type", "type": "str"},
        "at_context": {"key": "@context", "type": "str"},
        "at_id": {"key": "@id", "type": "str"},
        "additional_type": {"key": "additionalType", "type": "[str]"},
        "citation": {"key": "citation", "type": "[object]"},
        # Web Chat shows thumbs up/down when these are present (bot/webchat_shapes.py).
        "potential_action": {"key": "potentialAction", "type": "[object]"},
    }

    def __init__(self, citation: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(type="https://schema.org/Message", **kwargs)
        self.at_type = "Message"
        self.at_context = "https://schema.org"
        self.at_id = ""
        self.additional_type = ["AIGeneratedContent"]
        self.citation = citation or None
        self.potential_action: list[dict[str, Any]] | None = None


class StreamInfo(Entity):  # type: ignore[misc]
    """Teams/Web Chat streaming: informative and streaming updates carry a sequence; the final
    message carries the stream id and `streamType: final` and no sequence."""

    _attribute_map: ClassVar[dict[str, dict[str, str]]] = {
        "type": {"key": "type", "type": "str"},
        "stream_id": {"key": "streamId", "type": "str"},
        "stream_type": {"key": "streamType", "type": "str"},
        "stream_sequence": {"key": "streamSequence", "type": "int"},
    }

    def __init__(
        self,
        stream_type: str,
        stream_id: str | None = None,
        stream_sequence: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(type="streaminfo", **kwargs)
        self.stream_type = stream_type
        self.stream_id = stream_id
        self.stream_sequence = stream_sequence


class Mention(Entity):  # type: ignore[misc]
    """Teams' @mention of a person in a message the bot sends: the text holds `<at>name</at>`
    and this entity says whom it names."""

    _attribute_map: ClassVar[dict[str, dict[str, str]]] = {
        "type": {"key": "type", "type": "str"},
        "text": {"key": "text", "type": "str"},
        "mentioned": {"key": "mentioned", "type": "object"},
    }

    def __init__(self, text: str, user_id: str, name: str, **kwargs: Any) -> None:
        super().__init__(type="mention", **kwargs)
        self.text = text
        self.mentioned = {"id": user_id, "name": name}
