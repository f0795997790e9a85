"""The gateway's status and its devices' health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from edge_agent.api.deps import AUTH_RESPONSES, ApiContext, Ctx, Viewer
from edge_agent.api.models import (
    BrokerStatus,
    Device,
    DeviceList,
    GatewayStatus,
    LaneStatus,
    OutboxStatus,
)

router = APIRouter(prefix="/api/v1", tags=["status"], responses=AUTH_RESPONSES)


def device_list(ctx: ApiContext, status_doc: dict[str, Any] | None = None) -> DeviceList:
    """Every device and its health; ``status_doc`` saves reading the status a second time."""
    services = ctx.services
    gate_of: dict[str, str] = {}
    for gate in services.config.current().gates:
        for reader in gate.readers:
            gate_of[reader.device] = gate.id
        if gate.turnstile:
            gate_of[gate.turnstile] = gate.id
    raw = status_doc if status_doc is not None else services.report.status()
    drivers, face_workers = services.devices.drivers, services.cameras.face_workers
    devices = []
    for dev_id, state in sorted(raw["devices"].items()):
        counters: dict[str, int] = {}
        driver = drivers.get(dev_id)
        if driver is not None:
            counters.update({str(k): int(v) for k, v in getattr(driver, "counters", {}).items()})
        worker = face_workers.get(dev_id)
        if worker is not None:
            counters["analysis_errors"] = int(worker.errors)
        online = bool(state.get("online", state.get("running", False)))
        devices.append(
            Device(
                id=dev_id,
                kind=str(state.get("kind", "device")),
                online=online,
                counters=counters,
                gate=gate_of.get(dev_id),
            )
        )
    return DeviceList(devices=devices, offline=[d.id for d in devices if not d.online])


@router.get("/status", response_model=GatewayStatus, summary="Gateway status")
async def status(ctx: Ctx, _: Viewer) -> GatewayStatus:
    services = ctx.services
    raw: dict[str, Any] = services.report.status()
    box = raw["outbox"]
    lanes = {
        lane.name.lower(): LaneStatus(pending=b.pending, oldest_age_s=b.oldest_age_s)
        for lane, b in services.outbox.backlog().items()
    }
    devices = device_list(ctx, raw).devices
    online = sum(d.online for d in devices)
    return GatewayStatus(
        version=raw["version"],
        site=raw["site"],
        gateway=raw["gateway"],
        uptime_s=raw["uptime_s"],
        broker=BrokerStatus(**{k: raw["broker"][k] for k in BrokerStatus.model_fields}),
        outbox=OutboxStatus(
            last_seq=box["last_seq"],
            pending=box["pending"],
            appended=box["appended"],
            delivered=box["delivered"],
            dropped_undelivered=dict(box["dropped_undelivered"]),
            commit_failures=box["commit_failures"],
            lanes=lanes,
        ),
        roster_version=raw.get("roster_version", 0),
        devices_online=online,
        devices_offline=len(devices) - online,
        faces=raw.get("faces"),
    )


@router.get("/devices", response_model=DeviceList, summary="Devices and their health")
async def devices(ctx: Ctx, _: Viewer) -> DeviceList:
    return device_list(ctx)
