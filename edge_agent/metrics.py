"""Prometheus metrics of the gateway, read at scrape time.

:class:`GatewayCollector` reads the gateway's counters and state through its services when
Prometheus scrapes, so the hot paths keep plain integer counters and pay nothing for metrics. The
exceptions are latency histograms, which must see every observation: the gate path calls
``DECISION_SECONDS.observe``, the camera workers ``MODEL_SECONDS.labels(camera, stage).observe``
and the inference service ``INFERENCE_LAG_SECONDS``.
They are created unregistered; each app registers them into its own
:class:`~prometheus_client.CollectorRegistry`, so tests can run several gateways in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_agent import __version__

if TYPE_CHECKING:
    # Type-only: gates import this module for DECISION_SECONDS, and services refer to gates.
    from edge_agent.services import Services

log = logging.getLogger(__name__)

DECISION_SECONDS = Histogram(
    "edge_gate_decision_seconds",
    "Card read to gate decision (and open command handed over), seconds.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
    registry=None,
)
MODEL_SECONDS = Histogram(
    "edge_model_seconds",
    "Time per vision stage (detect, embed, match, ...) per camera, seconds.",
    ["camera", "stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=None,
)

INFERENCE_LAG_SECONDS = Histogram(
    "edge_inference_lag_seconds",
    "Frame capture to analysis done, per analysis (security, faces), seconds.",
    ["analysis"],
    buckets=(0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0),
    registry=None,
)

MQTT_STATES = ("starting", "connecting", "connected", "disconnected", "refused", "stopped")
_LINK_COUNTERS = {
    "published": "Messages published (QoS 1).",
    "acked": "Publishes acknowledged by the broker (PUBACK).",
    "connects": "Successful connections.",
    "connect_failures": "Failed connection attempts.",
    "auth_failures": "Connections refused for credentials.",
    "refused_publishes": "Publishes the broker refused.",
    "republished_after_reconnect": "In-flight messages published again after a reconnect.",
    "received": "Messages received (roster, commands).",
    "handler_errors": "Received messages whose handler failed.",
    "drain_throttle_waits": "Times the backlog replay waited for the drain rate limit.",
    "drain_throttled_s": "Seconds the backlog replay spent waiting for the drain rate limit.",
}


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class GatewayCollector(Collector):
    """Reads one gateway's state at scrape time. A failing section is logged and left out, never
    fails the whole scrape."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def describe(self) -> Iterable[Metric]:
        # Returning nothing makes the registry skip calling collect() at registration, before the
        # gateway has started what the sections read.
        return []

    def collect(self) -> Iterator[Metric]:
        sections: list[Callable[[], Iterable[Metric]]] = [
            self._agent,
            self._outbox,
            self._link,
            self._devices,
            self._gates,
            self._cameras,
            self._security,
            self._inference,
            self._commands,
            self._alerts,
        ]
        for section in sections:
            try:
                yield from list(section())
            except Exception:
                log.exception("metrics section %s failed", section.__name__)

    def _agent(self) -> Iterable[Metric]:
        services = self.services
        identity = services.config.current().gateway
        info = InfoMetricFamily("edge_agent", "Agent build and identity.")
        info.add_metric([], {"version": __version__, "site": identity.site, "gateway": identity.id})
        yield info
        counters = CounterMetricFamily(
            "edge_agent_events",
            "Agent-level counters (failed handlers, unassigned readers, ...).",
            labels=["name"],
        )
        for name, value in services.counters.items():
            counters.add_metric([name], value)
        yield counters
        yield GaugeMetricFamily(
            "edge_agent_healthy", "1 while every agent loop runs.", value=float(services.report.healthy())
        )
        yield GaugeMetricFamily(
            "edge_roster_version", "Roster version the gates decide from.", value=services.roster.version
        )

    def _outbox(self) -> Iterable[Metric]:
        outbox = self.services.outbox
        pending = GaugeMetricFamily("edge_outbox_pending", "Undelivered events per lane.", labels=["lane"])
        age = GaugeMetricFamily(
            "edge_outbox_oldest_age_seconds",
            "Age of the oldest undelivered event per lane (0 when none).",
            labels=["lane"],
        )
        for lane, backlog in outbox.backlog().items():
            pending.add_metric([lane.name.lower()], backlog.pending)
            age.add_metric([lane.name.lower()], backlog.oldest_age_s or 0.0)
        yield pending
        yield age
        stats = outbox.stats
        yield _counter("edge_outbox_appended", "Events committed to the outbox.", stats.appended)
        yield _counter("edge_outbox_delivered", "Events marked delivered after PUBACK.", stats.delivered)
        yield _counter("edge_outbox_commits", "Outbox transactions (group commits).", stats.commits)
        yield _counter("edge_outbox_commit_failures", "Failed outbox commits.", stats.commit_failures)
        yield _counter("edge_outbox_purged_delivered", "Delivered rows purged.", stats.purged_delivered)
        dropped = CounterMetricFamily(
            "edge_outbox_dropped", "Events dropped undelivered (telemetry only), by type.", labels=["type"]
        )
        for event_type, count in sorted(stats.dropped_undelivered.items()):
            dropped.add_metric([event_type], count)
        yield dropped
        never = CounterMetricFamily(
            "edge_outbox_never_committed",
            "Events lost before they got a seq (full disk, memory queue overflow), by type.",
            labels=["type"],
        )
        for event_type, count in sorted(stats.never_committed.items()):
            never.add_metric([event_type], count)
        yield never
        yield _counter(
            "edge_outbox_space_failures", "Outbox commits that failed for space.", stats.space_failures
        )
        storage = outbox.storage
        state = GaugeMetricFamily(
            "edge_outbox_storage_state", "Outbox disk state (1 for the current one).", labels=["state"]
        )
        for name in ("ok", "reserve", "critical"):
            state.add_metric([name], 1.0 if storage.state == name else 0.0)
        yield state
        yield GaugeMetricFamily(
            "edge_outbox_memory_queue",
            "Events held in memory while the disk is full.",
            value=storage.memory_queue,
        )
        yield GaugeMetricFamily(
            "edge_outbox_free_bytes",
            "Free bytes of the data directory's file system.",
            value=storage.free_bytes,
        )
        yield GaugeMetricFamily("edge_outbox_last_seq", "Highest seq committed.", value=outbox.last_seq)

    def _link(self) -> Iterable[Metric]:
        link = self.services.link
        state = link.state
        gauge = GaugeMetricFamily(
            "edge_mqtt_state", "MQTT link state (1 for the current one).", labels=["state"]
        )
        for name in MQTT_STATES:
            gauge.add_metric([name], 1.0 if name == state else 0.0)
        yield gauge
        yield GaugeMetricFamily(
            "edge_mqtt_connected", "1 while connected to the broker.", value=float(state == "connected")
        )
        for field, doc in _LINK_COUNTERS.items():
            yield _counter(f"edge_mqtt_{field}", doc, getattr(link.stats, field, 0))
        yield GaugeMetricFamily(
            "edge_mqtt_drain_throttled",
            "1 while the drain rate limit holds the backlog replay back (new alerts bypass it).",
            value=float(link.stats.drain_throttled),
        )
        yield GaugeMetricFamily(
            "edge_mqtt_inflight_window",
            "Unacknowledged publishes allowed on this connection (ours or the broker's Receive Maximum).",
            value=link.stats.window,
        )

    def _devices(self) -> Iterable[Metric]:
        devices = self.services.devices
        online = GaugeMetricFamily(
            "edge_device_online", "1 while the device reports online.", labels=["device", "kind"]
        )
        for dev_id, state in sorted(devices.state.items()):
            online.add_metric([dev_id, str(state.get("kind", "device"))], float(bool(state.get("online"))))
        yield online
        counters = CounterMetricFamily(
            "edge_device_events",
            "Per-device driver counters (frames, reads, errors, drops).",
            labels=["device", "name"],
        )
        skews = GaugeMetricFamily(
            "edge_device_clock_skew_seconds",
            "A network device's clock minus the gateway's, at its last check (terminals, cameras).",
            labels=["device"],
        )
        for dev_id, driver in sorted(devices.drivers.items()):
            values: dict[str, Any] = dict(getattr(driver, "counters", {}))
            for name, value in sorted(values.items()):
                counters.add_metric([dev_id, str(name)], float(value))
            skew = getattr(driver, "clock_skew_s", None)
            if isinstance(skew, int | float):
                skews.add_metric([dev_id], float(skew))
        yield counters
        yield skews

    def _gates(self) -> Iterable[Metric]:
        decisions = CounterMetricFamily(
            "edge_gate_decisions", "Card decisions per gate.", labels=["gate", "result"]
        )
        passages = CounterMetricFamily("edge_gate_passages", "Passages reported per gate.", labels=["gate"])
        timeouts = CounterMetricFamily(
            "edge_gate_timeouts", "Granted passages not taken in time.", labels=["gate"]
        )
        failures = CounterMetricFamily(
            "edge_gate_open_failures", "Open commands that failed.", labels=["gate"]
        )
        last = GaugeMetricFamily(
            "edge_gate_last_decision_seconds", "Duration of the latest decision.", labels=["gate"]
        )
        for gate_id, gate in sorted(self.services.gates.items()):
            s = gate.stats
            decisions.add_metric([gate_id, "granted"], s.granted)
            decisions.add_metric([gate_id, "denied"], s.denied)
            passages.add_metric([gate_id], s.passages)
            timeouts.add_metric([gate_id], s.timeouts)
            failures.add_metric([gate_id], s.open_failures)
            last.add_metric([gate_id], s.last_decision_us / 1e6)
        yield from (decisions, passages, timeouts, failures, last)

    def _cameras(self) -> Iterable[Metric]:
        pipeline = CounterMetricFamily(
            "edge_camera_pipeline",
            "Per-camera analysis counters (frames, skipped, analysed, faces, ...).",
            labels=["camera", "name"],
        )
        errors = CounterMetricFamily(
            "edge_camera_analysis_errors", "Frames that failed analysis.", labels=["camera"]
        )
        for cam_id, worker in sorted(self.services.cameras.face_workers.items()):
            counts = getattr(getattr(worker, "pipeline", None), "counters", {})
            for name, value in sorted(counts.items()):
                pipeline.add_metric([cam_id, str(name)], float(value))
            errors.add_metric([cam_id], float(getattr(worker, "errors", 0)))
        yield pipeline
        yield errors
        faces = self.services.cameras.faces
        if faces is not None:
            yield GaugeMetricFamily(
                "edge_faces_templates", "Face templates in the gallery.", value=faces.gallery.template_count
            )
            fc = CounterMetricFamily("edge_faces_events", "Face service counters.", labels=["name"])
            for name, value in sorted(faces.counters.items()):
                fc.add_metric([name], value)
            yield fc

    def _security(self) -> Iterable[Metric]:
        workers = self.services.cameras.security_workers
        if not workers:
            return
        family = CounterMetricFamily(
            "edge_person_pipeline",
            "Per-camera person detection: frames, detector runs (others skipped by motion), bad frames.",
            labels=["camera", "name"],
        )
        errors = CounterMetricFamily(
            "edge_person_analysis_errors", "Frames whose person analysis failed.", labels=["camera"]
        )
        for cam_id, worker in sorted(workers.items()):
            pipeline = getattr(worker, "pipeline", None)
            for name in ("frames", "detector_runs", "bad_frames"):
                family.add_metric([cam_id, name], float(getattr(pipeline, name, 0)))
            errors.add_metric([cam_id], float(getattr(worker, "errors", 0)))
        yield family
        yield errors

    def _inference(self) -> Iterable[Metric]:
        cameras = self.services.cameras
        frames = CounterMetricFamily(
            "edge_inference_frames",
            "Frames per camera and analysis by outcome: analysed, replaced (a newer frame came before "
            "a thread was free: skipped), failed, closed.",
            labels=["camera", "analysis", "outcome"],
        )
        lag = GaugeMetricFamily(
            "edge_inference_last_lag_seconds",
            "Capture to analysis done of the newest analysed frame, per camera and analysis.",
            labels=["camera", "analysis"],
        )
        for lane in sorted(cameras.inference.lanes, key=lambda lane: (lane.camera_id, lane.analysis)):
            for outcome in ("analysed", "replaced", "failed", "closed"):
                frames.add_metric([lane.camera_id, lane.analysis, outcome], lane.counters[outcome])
            lag.add_metric([lane.camera_id, lane.analysis], lane.last_lag_s)
        yield frames
        yield lag
        batches = CounterMetricFamily(
            "edge_inference_batches",
            "Batched runs of the inference service, and the frames in them.",
            labels=["name"],
        )
        for name in ("batches", "batched_frames"):
            batches.add_metric([name], cameras.inference.counters[name])
        yield batches
        providers = GaugeMetricFamily(
            "edge_model_execution_provider",
            "1 for the ONNX Runtime execution provider each loaded model runs on.",
            labels=["model", "provider"],
        )
        for model in cameras.models():
            providers.add_metric([model.model_id, model.provider], 1)
        yield providers

    def _commands(self) -> Iterable[Metric]:
        processor = self.services.commands
        if processor is None:
            return
        stats = processor.stats
        results = CounterMetricFamily(
            "edge_commands", "Remote commands received over MQTT, by result.", labels=["result"]
        )
        for result in ("received", "ok", "refused", "failed", "reply_not_sent"):
            results.add_metric([result], float(getattr(stats, result)))
        yield results
        codes = CounterMetricFamily(
            "edge_commands_by_code",
            "Remote command outcomes by code (replayed, expired, bad_signature, ...).",
            labels=["code"],
        )
        for code, count in sorted(processor.by_code.items()):
            codes.add_metric([str(code)], float(count))
        yield codes

    def _alerts(self) -> Iterable[Metric]:
        book = self.services.alerts.book
        open_alerts = GaugeMetricFamily(
            "edge_alerts_open",
            "Unacknowledged alerts in the local alert book (counted up to 1000).",
            labels=["severity"],
        )
        counts = dict.fromkeys(("info", "warning", "critical"), 0)
        for record in book.list(acknowledged=False, limit=1000):
            counts[record.severity] = counts.get(record.severity, 0) + 1
        for severity, count in counts.items():
            open_alerts.add_metric([severity], count)
        yield open_alerts


def gateway_registry(services: Services) -> CollectorRegistry:
    """A fresh registry with the gateway's collector and the latency histograms."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(GatewayCollector(services))
    registry.register(DECISION_SECONDS)
    registry.register(MODEL_SECONDS)
    registry.register(INFERENCE_LAG_SECONDS)
    return registry


__all__ = [
    "DECISION_SECONDS",
    "INFERENCE_LAG_SECONDS",
    "MODEL_SECONDS",
    "GatewayCollector",
    "gateway_registry",
]
