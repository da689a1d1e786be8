"""Request bodies of /v1/webhook_endpoints (bounded, control characters refused)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from api.input_guard import SafeStr
from db.webhook_events import EVENT_TYPES, JobWebhookEvent
from db.webhook_targets import MAX_URL_LENGTH

Url = Annotated[SafeStr, Field(min_length=1, max_length=MAX_URL_LENGTH)]
Events = Annotated[list[JobWebhookEvent], Field(min_length=1, max_length=len(EVENT_TYPES))]
Description = Annotated[SafeStr, Field(max_length=200)]


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url
    # Left out: every event type.
    events: Events | None = None
    enabled: bool = True
    description: Description | None = None


class WebhookEndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    events: Events | None = None
    enabled: bool | None = None
    description: Description | None = None
