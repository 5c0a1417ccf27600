"""Speakers of incidents (docs/INCIDENTS.md): repeat offenders found and sorted, one speaker's
history, and erasure of a speaker's incidents and clips."""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.dependencies import HttpPrincipalDep, IncidentsDep, SettingsDep
from edge.routers.incidents import PAGE_MAX, bad_request, first_error, may_decide
from moderation.incidents import SpeakerHistory
from moderation.protocol import short_id

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/speakers")


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sort: Literal["confirmed", "incidents"] = "confirmed"
    limit: int = Field(50, ge=1, le=PAGE_MAX)
    offset: int = Field(0, ge=0)


class SpeakerPage(BaseModel):
    speakers: list[SpeakerHistory]
    total: int
    limit: int
    offset: int


class Erased(BaseModel):
    speaker_id: str
    incidents_erased: int


def checked_speaker(speaker_id: str) -> str:
    if not short_id(speaker_id):
        raise bad_request("bad_speaker", "a speaker id is 1-64 printable characters without spaces")
    return speaker_id


@router.get("", response_model=SpeakerPage)
async def list_speakers(request: Request, incidents: IncidentsDep, _principal: HttpPrincipalDep) -> SpeakerPage:
    """Speakers with incidents, most confirmed offences first (``sort=incidents``: most incidents)."""
    try:
        query = Query.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise bad_request("bad_filter", first_error(exc)) from exc
    found, total = await incidents.store.speakers(query.sort, query.limit, query.offset)
    return SpeakerPage(speakers=found, total=total, limit=query.limit, offset=query.offset)


@router.get("/{speaker_id}", response_model=SpeakerHistory)
async def get_speaker(speaker_id: str, incidents: IncidentsDep, _principal: HttpPrincipalDep) -> SpeakerHistory:
    """The speaker's incidents and confirmed offences, in all and day by day (30 days)."""
    history = await incidents.store.speaker(checked_speaker(speaker_id))
    if history is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, {"code": "speaker_not_found",
                                                        "message": f"no incidents of speaker {speaker_id!r}"})
    return history


@router.delete("/{speaker_id}", response_model=Erased)
async def erase_speaker(speaker_id: str, incidents: IncidentsDep, settings: SettingsDep,
                        principal: HttpPrincipalDep) -> Erased:
    """Erases the speaker's incidents and clips (a data-protection request); moderators only."""
    if not may_decide(principal, settings):
        raise HTTPException(status.HTTP_403_FORBIDDEN, {"code": "not_moderator",
                                                        "message": "erasing a speaker needs the moderator role"})
    erased = await incidents.erase_speaker(checked_speaker(speaker_id))
    logger.info("speaker %s erased: %d incidents, by %s", speaker_id, erased, principal.name if principal else "-")
    return Erased(speaker_id=speaker_id, incidents_erased=erased)
