"""The optional LLM summary of a job's report, from an OpenAI-compatible chat endpoint (Ollama, vLLM,
Triton's OpenAI frontend) named by ``SUMMARY_LLM_URL``.

The summary is a convenience on top of a complete report: whatever goes wrong with the LLM (down,
slow, misconfigured, answering nonsense) becomes a short ``error`` in ``LlmSummary`` and a warning in
the log, never a failed job.
"""

from __future__ import annotations

import asyncio
import json
import logging

import httpx

from jobs.models import LlmSummary
from jobs.settings import JobSettings

logger = logging.getLogger(__name__)

ERROR_BODY_CHARS = 200
"""Most characters of an error response's body quoted in the error: enough for the server's reason
(an unknown model, a context overflow), short enough for the report."""


class LlmError(Exception):
    """Why no summary came back, in words fit for the report's ``llm_summary.error``."""


def chat_url(base_url: str) -> str:
    """The chat-completions endpoint under a base URL given with or without a trailing ``/``."""
    return base_url.rstrip("/") + "/chat/completions"


def request_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def response_text(response: httpx.Response) -> str:
    """The summary in a chat-completions response; LlmError when the response is not one."""
    if not response.is_success:
        body = " ".join(response.text.split())[:ERROR_BODY_CHARS]
        raise LlmError(f"HTTP {response.status_code} from the LLM endpoint" + (f": {body}" if body else ""))
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LlmError("malformed response: the body is not JSON") from None
    except (KeyError, IndexError, TypeError):
        raise LlmError("malformed response: no choices[0].message.content") from None
    if not isinstance(content, str) or not content.strip():
        raise LlmError("malformed response: choices[0].message.content is empty or not text")
    return content.strip()


async def post_chat(client: httpx.AsyncClient, url: str, payload: dict, headers: dict[str, str],
                    timeout_s: float) -> httpx.Response:
    """POST the request within ``timeout_s`` in all: httpx's timeout bounds each phase (connect, each
    read) only, so a server that trickles its answer is cut off by the overall deadline too."""
    try:
        async with asyncio.timeout(timeout_s):
            return await client.post(url, json=payload, headers=headers, timeout=timeout_s)
    except (TimeoutError, httpx.TimeoutException):
        raise LlmError(f"no answer within {timeout_s:g} s (SUMMARY_LLM_TIMEOUT_S)") from None
    except httpx.ConnectError as exc:
        raise LlmError(f"cannot connect to the LLM endpoint: {str(exc) or type(exc).__name__}") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise LlmError(f"request failed: {type(exc).__name__}: {exc}") from None


async def complete(settings: JobSettings, messages: list[dict], client: httpx.AsyncClient | None) -> str:
    """The LLM's answer to ``messages``, with a client of its own unless one is given."""
    if not settings.summary_llm_model:
        raise LlmError("SUMMARY_LLM_MODEL is not set")
    url = chat_url(settings.summary_llm_url or "")
    payload = {"model": settings.summary_llm_model, "messages": messages, "temperature": 0}
    headers = request_headers(settings.summary_llm_api_key)
    if client is not None:
        response = await post_chat(client, url, payload, headers, settings.summary_llm_timeout_s)
    else:
        async with httpx.AsyncClient() as own_client:
            response = await post_chat(own_client, url, payload, headers, settings.summary_llm_timeout_s)
    return response_text(response)


async def summarize(settings: JobSettings, messages: list[dict],
                    client: httpx.AsyncClient | None = None) -> LlmSummary | None:
    """The LLM's summary of a report (``jobs.report.llm_prompt`` makes ``messages``); None when no
    ``SUMMARY_LLM_URL`` is set. Never raises (except on cancellation): a failure is the summary's
    ``error``, so the report goes out complete without it."""
    if not settings.summary_llm_url:
        return None
    model = settings.summary_llm_model or ""
    try:
        return LlmSummary(model=model, text=await complete(settings, messages, client))
    except LlmError as exc:
        reason = str(exc)
    except Exception as exc:  # the summary is optional: no bug of the LLM path may fail the job
        logger.warning("LLM summary from %s failed unexpectedly", settings.summary_llm_url, exc_info=True)
        return LlmSummary(model=model, error=f"unexpected error: {type(exc).__name__}: {exc}")
    logger.warning("LLM summary from %s failed: %s", settings.summary_llm_url, reason)
    return LlmSummary(model=model, error=reason)
