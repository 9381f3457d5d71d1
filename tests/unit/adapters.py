"""A botbuilder adapter for unit tests: it stands where the connector would, keeps what the
bot sends and answers with ids."""

from __future__ import annotations

from typing import Any

from botbuilder.core import BotAdapter, TurnContext
from botbuilder.schema import Activity, ResourceResponse


class RecordingAdapter(BotAdapter):  # type: ignore[misc]
    """The connector's place: keeps what the bot sends, answers with ids."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Activity] = []

    async def send_activities(
        self, context: TurnContext, activities: list[Activity]
    ) -> list[ResourceResponse]:
        self.sent.extend(activities)
        return [ResourceResponse(id=f"sent-{len(self.sent)}") for _ in activities]

    async def update_activity(self, context: TurnContext, activity: Activity) -> None:
        self.sent.append(activity)

    async def delete_activity(self, context: TurnContext, reference: Any) -> None:
        return None
