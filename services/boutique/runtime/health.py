"""The gRPC health service (grpc.health.v1.Health) of every service.

Like grpcio-health-checking's asyncio servicer (Check, Watch, set,
enter_graceful_shutdown), plus `end_watches()`: the server calls it when it
stops taking calls, so every open Watch stream (a load balancer's, a sidecar's)
has seen NOT_SERVING and then ends with OK, instead of holding the shutdown
until the grace period runs out, as any open call does.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2 as pb
from grpc_health.v1 import health_pb2_grpc

SERVICE_NAME = "grpc.health.v1.Health"
SERVING = pb.HealthCheckResponse.SERVING
NOT_SERVING = pb.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = pb.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self) -> None:
        self._status: dict[str, pb.HealthCheckResponse.ServingStatus] = {"": SERVING}
        self._changed = asyncio.Condition()
        self._shutting_down = False
        self._ending = False

    async def Check(self, request: pb.HealthCheckRequest, context: grpc.aio.ServicerContext):
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"service: {request.service!r} is not known here")
        return pb.HealthCheckResponse(status=status)

    async def Watch(self, request: pb.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        """Sends the status now and on every change; ends (OK) once end_watches() was called."""
        sent = None

        def news() -> bool:
            return self._ending or self._status.get(request.service, SERVICE_UNKNOWN) != sent

        while True:
            status = self._status.get(request.service, SERVICE_UNKNOWN)
            if status != sent:
                await context.write(pb.HealthCheckResponse(status=status))
                sent = status
            if self._ending:
                return
            async with self._changed:
                await self._changed.wait_for(news)

    async def set(self, service: str, status: pb.HealthCheckResponse.ServingStatus) -> None:
        """Set a service's status (ignored once the graceful shutdown has begun)."""
        if not self._shutting_down:
            await self._update(lambda: self._status.__setitem__(service, status))

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING, for good."""
        self._shutting_down = True
        await self._update(lambda: self._status.update(dict.fromkeys(self._status, NOT_SERVING)))

    async def end_watches(self) -> None:
        """End every open Watch stream (after it has sent the current status), and any later one at once."""
        self._ending = True
        await self._update(lambda: None)

    async def _update(self, change) -> None:  # type: ignore[no-untyped-def]
        async with self._changed:
            change()
            self._changed.notify_all()
