"""The review API: incidents (harmful segments kept with their clips), decisions on them, and the
export of decided ones for retraining (docs/INCIDENTS.md). Same credentials as the other
endpoints; a decision needs the moderator role."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.auth import Principal
from edge.dependencies import HttpPrincipalDep, IncidentsDep, SettingsDep
from edge.settings import EdgeSettings
from moderation.incidents import DecisionConflict, Incident, IncidentFilter, IncidentStatus, clip_path
from moderation.protocol import MAX_ID_CHARS

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/incidents")

PAGE_MAX = 100
"""Most incidents one page returns."""
MAX_NOTE_CHARS = 2000
MODERATOR_ROLE = "moderator"


class Query(BaseModel):
    """``GET /v1/incidents``'s query string."""

    model_config = ConfigDict(extra="forbid")

    status: IncidentStatus | None = None
    min_severity: float | None = Field(None, ge=0, le=1)
    category: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS)
    speaker_id: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS)
    channel_id: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS)
    since: datetime | None = None
    until: datetime | None = None
    sort: Literal["severity", "time"] = "severity"
    limit: int = Field(50, ge=1, le=PAGE_MAX)
    offset: int = Field(0, ge=0)


class Page(BaseModel):
    incidents: list[Incident]
    total: int
    limit: int
    offset: int


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["confirm", "dismiss"]
    category: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS)
    """The right category, when the incident's is wrong."""
    note: str | None = Field(None, max_length=MAX_NOTE_CHARS)
    override: bool = False
    """Replace an earlier decision (otherwise a second decision is a 409)."""


def bad_request(code: str, message: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, {"code": code, "message": message})


def not_found(incident_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, {"code": "incident_not_found",
                                                     "message": f"no incident {incident_id!r}"})


def first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"


def checked_id(incident_id: str) -> str:
    """The id as stored (a UUID); 404 for anything else, as for an unknown one."""
    try:
        return str(uuid.UUID(incident_id))
    except ValueError:
        raise not_found(incident_id) from None


def may_decide(principal: Principal | None, settings: EdgeSettings) -> bool:
    if principal is None:  # authentication is off
        return True
    if principal.kind == "api_key":
        return principal.name in {k.strip() for k in settings.moderator_keys.split(",") if k.strip()}
    return MODERATOR_ROLE in principal.roles


@router.get("", response_model=Page)
async def list_incidents(request: Request, incidents: IncidentsDep, _principal: HttpPrincipalDep) -> Page:
    """Filtered by status, min_severity, category, speaker_id, channel_id, since/until (ISO 8601),
    sorted by severity (default) or time, paginated (limit, offset)."""
    try:
        query = Query.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise bad_request("bad_filter", first_error(exc)) from exc
    items, total = await incidents.store.page(IncidentFilter(**query.model_dump()))
    return Page(incidents=items, total=total, limit=query.limit, offset=query.offset)


@router.get("/export")
async def export(incidents: IncidentsDep, _principal: HttpPrincipalDep, format: str = "csv") -> PlainTextResponse:  # noqa: A002
    """Decided incidents as ``text,label`` CSV (confirmed 1, dismissed 0), which
    ``scripts.train.finetune_koelectra --train`` reads as it is."""
    if format != "csv":
        raise bad_request("bad_format", "format must be csv")
    return PlainTextResponse(await incidents.store.export_csv(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="incidents.csv"'})


@router.get("/{incident_id}", response_model=Incident)
async def get_incident(incident_id: str, incidents: IncidentsDep, _principal: HttpPrincipalDep) -> Incident:
    found = await incidents.store.get(checked_id(incident_id))
    if found is None:
        raise not_found(incident_id)
    return found


@router.get("/{incident_id}/clip")
async def get_clip(incident_id: str, incidents: IncidentsDep, settings: SettingsDep,
                   _principal: HttpPrincipalDep) -> FileResponse:
    """The evidence clip, Ogg Opus; 404 when the incident or its clip is unknown."""
    found = await incidents.store.get(checked_id(incident_id))
    path = clip_path(settings.clips_dir, found.id) if found else None
    if found is None or found.clip_start_s is None or path is None or not path.exists():
        raise HTTPException(status.HTTP_404_NOT_FOUND, {"code": "clip_not_found",
                                                        "message": f"incident {incident_id!r} has no clip"})
    return FileResponse(path, media_type="audio/ogg")


@router.post("/{incident_id}/decision", response_model=Incident)
async def decide(incident_id: str, request: Request, incidents: IncidentsDep, settings: SettingsDep,
                 principal: HttpPrincipalDep) -> Incident:
    """Confirm or dismiss, with an optional corrected category and note; the moderator and the
    time are recorded. 409 when decided already, unless ``override``."""
    if not may_decide(principal, settings):
        raise HTTPException(status.HTTP_403_FORBIDDEN, {"code": "not_moderator",
                                                        "message": "deciding incidents needs the moderator role"})
    try:
        body = DecisionRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise bad_request("bad_decision", first_error(exc)) from exc
    outcome = IncidentStatus.CONFIRMED if body.decision == "confirm" else IncidentStatus.DISMISSED
    moderator = principal.name if principal else "anonymous"
    try:
        decided = await incidents.store.decide(checked_id(incident_id), outcome, moderator, body.category, body.note,
                                               body.override)
    except DecisionConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, {"code": "already_decided", "message": str(exc)}) from exc
    if decided is None:
        raise not_found(incident_id)
    logger.info("incident %s %s by %s", decided.id, decided.status, moderator)
    return decided
