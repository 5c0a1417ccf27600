"""Running one scenario against a tritonserver with a fresh asyncio gRPC client (integration tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import tritonclient.grpc.aio as grpcclient

T = TypeVar("T")


def with_client(url: str, scenario: Callable[[grpcclient.InferenceServerClient], Awaitable[T]]) -> T:
    """``scenario(client)`` in its own event loop; the client is closed whatever happens."""
    async def wrapper() -> T:
        client = grpcclient.InferenceServerClient(url)
        try:
            return await scenario(client)
        finally:
            await client.close()

    return asyncio.run(wrapper())
