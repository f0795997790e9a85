"""ONVIF camera events through ``onvif-zeep-async``: a PullPoint subscription
(``CreatePullPointSubscription``, long-polling ``PullMessages``, ``Renew`` at half the termination
time, ``Unsubscribe`` on the way out), motion and tamper topics turned into
:class:`~device_drivers.readings.MotionDetected` / :class:`~device_drivers.readings.DeviceTamper`.

One session = one login + one subscription; any failure ends it, the device goes offline with the
reason and the driver starts a new session after the shared :class:`Backoff`. Wrong credentials
(SOAP fault ``NotAuthorized``, HTTP 401), malformed SOAP and dropped links each have a counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import aiohttp
import zeep.exceptions
from onvif import ONVIFCamera
from onvif.exceptions import ONVIFError

from device_drivers._io.backoff import Backoff
from device_drivers._io.probe import ProbeResult
from device_drivers._io.source import AttachedSimulator, ReadingSource
from device_drivers.errors import DeviceError
from device_drivers.onvif.codec import EventMessage, TopicEvent, classify, normalize_topic, read_message
from device_drivers.onvif.config import OnvifConfig
from device_drivers.readings import DeviceTamper, MotionDetected, utc_now
from device_drivers.secrets import load_password

logger = logging.getLogger(__name__)

PULLPOINT_NS = "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription"


class OnvifAuthError(DeviceError):
    """The camera refused the login (``NotAuthorized`` fault, HTTP 401)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="not_authorized")


class OnvifProtocolError(DeviceError):
    """The camera answered something that is not the SOAP it should be."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="malformed_soap")


def explain(err: BaseException) -> DeviceError:
    """One of our errors for what onvif-zeep-async / zeep / aiohttp raised."""
    if isinstance(err, DeviceError):
        return err
    if isinstance(err, zeep.exceptions.Fault):
        codes = [str(getattr(q, "localname", q)) for q in (err.subcodes or [])]
        text = f"{err.message} ({', '.join(codes) or err.code})"
        if "NotAuthorized" in codes or "not authorized" in str(err.message).lower():
            return OnvifAuthError(f"camera refused the login: {text}")
        return DeviceError(f"SOAP fault: {text}", code="soap_fault")
    if isinstance(err, zeep.exceptions.TransportError):
        if err.status_code == 401:
            return OnvifAuthError("camera refused the login: HTTP 401")
        return DeviceError(f"HTTP {err.status_code}: {str(err.message)[:120]}", code="http_error")
    if isinstance(err, zeep.exceptions.XMLSyntaxError | zeep.exceptions.XMLParseError):
        return OnvifProtocolError(f"malformed SOAP answer: {str(err)[:160]}")
    if isinstance(err, TimeoutError):
        return DeviceError("timed out", code="timeout")
    if isinstance(err, aiohttp.ClientError | OSError):
        return DeviceError(f"connection: {type(err).__name__}: {err}", code="connection")
    if isinstance(err, AttributeError | TypeError | KeyError | ValueError):
        # zeep parsed it, but an element we need is missing or of the wrong type
        return OnvifProtocolError(f"unexpected SOAP answer: {type(err).__name__}: {err}")
    if isinstance(err, ONVIFError):
        cause = err.__cause__
        if cause is not None and cause is not err:
            return explain(cause)
        return DeviceError(f"ONVIF: {err}", code="onvif_error")
    return DeviceError(f"{type(err).__name__}: {err}", code="unexpected")


RECOVERABLE = (
    DeviceError,
    ONVIFError,
    zeep.exceptions.Error,
    aiohttp.ClientError,
    OSError,
    TimeoutError,
    ValueError,
    AttributeError,
    TypeError,
    KeyError,
)
"""What a broken camera or link can make the client raise: the session ends, the driver goes on."""


def camera_clock(answer: Any) -> datetime | None:
    """The UTC time in a ``GetSystemDateAndTime`` answer (None when the camera gives none)."""
    utc = getattr(answer, "UTCDateTime", None)
    if utc is None:
        return None
    d, t = utc.Date, utc.Time
    return datetime(d.Year, d.Month, d.Day, t.Hour, t.Minute, t.Second, tzinfo=UTC)


def message_of(notification: Any) -> EventMessage:
    """The data items of a ``wsnt:NotificationMessage``'s ``tt:Message`` as zeep gives it: a typed
    object when the schema matched, else the raw lxml element."""
    payload = getattr(getattr(notification, "Message", None), "_value_1", None)
    if payload is None:
        return EventMessage()
    if hasattr(payload, "tag"):
        return read_message(payload)
    message = EventMessage(operation=str(getattr(payload, "PropertyOperation", "") or ""))
    data = getattr(payload, "Data", None)
    for item in getattr(data, "SimpleItem", None) or []:
        if item.Name is not None:
            message.data[str(item.Name)] = str(item.Value or "")
    return message


def topic_of(notification: Any) -> str:
    topic = getattr(notification, "Topic", None)
    return str(getattr(topic, "_value_1", None) or "")


class OnvifEventsDriver(ReadingSource):
    """Motion and tamper events of one ONVIF camera; yields :class:`MotionDetected`,
    :class:`DeviceTamper`, :class:`DeviceOnline` and :class:`DeviceOffline`.

    ``counters``: ``sessions``, ``notifications``, ``motion``, ``tamper``, ``ignored_topics``,
    ``filtered_topics``, ``malformed_events``, ``malformed_soap``, ``auth_failures``,
    ``connection_errors``, ``soap_faults``, ``credential_errors``, ``renewals``, ``renew_failures``,
    ``unsubscribes``, ``initial_states``, ``dropped_readings``, ``clock_skew_warnings``. The last
    measured skew is the attribute ``clock_skew_s`` (signed seconds; a metrics gauge, not a counter).
    """

    def __init__(
        self,
        config: OnvifConfig,
        *,
        simulator: AttachedSimulator | None = None,
        state_dir: Path | None = None,
    ) -> None:
        super().__init__(config.id, noise_log_interval_s=config.noise_log_interval_s)
        self.config = config
        self.simulator = simulator
        self.state_dir = state_dir
        self.topics = {normalize_topic(t) for t in config.topics}
        self.last_error: DeviceError | None = None
        self.clock_skew_s: float | None = None

    @classmethod
    def from_config(
        cls, config: OnvifConfig, *, simulator: AttachedSimulator | None = None, state_dir: Path | None = None
    ) -> Self:
        return cls(config, simulator=simulator, state_dir=state_dir)

    async def __aenter__(self) -> Self:
        if self.simulator is not None:
            await self.simulator.__aenter__()
        self._start(self._run())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._stop()
        finally:
            if self.simulator is not None:
                await self.simulator.__aexit__(None, None, None)
            self._close_readings()

    def acknowledge(self, reading: object) -> None:
        """Camera events keep no high-water mark: nothing to do."""

    def _address(self) -> tuple[str, int]:
        if self.simulator is not None:
            parts = urlsplit(self.simulator.url)
            return parts.hostname or "127.0.0.1", parts.port or 80
        return self.config.host or "", self.config.effective_port

    async def _run(self) -> None:
        backoff = Backoff(self.config.backoff)
        while True:
            try:
                await self._session(backoff)
                reason = "subscription ended"
            except asyncio.CancelledError:
                raise
            except RECOVERABLE as raw:
                err = explain(raw)
                self.last_error = err
                reason = self._failed(err)
            except Exception as raw:  # a client-library surprise must not end the device's loop
                logger.exception("device %s: unexpected error in the ONVIF session", self.device_id)
                self._count("unexpected_errors")
                reason = f"unexpected: {type(raw).__name__}: {raw}"
            self._went_offline(reason)
            await asyncio.sleep(backoff.next_delay())

    def _failed(self, err: DeviceError) -> str:
        key = {
            "not_authorized": "auth_failures",
            "malformed_soap": "malformed_soap",
            "soap_fault": "soap_faults",
            "no_password": "credential_errors",
        }.get(err.code, "connection_errors")
        self._count(key)
        self.drops.dropped(key, 0, str(err))
        if err.code == "not_authorized":
            return f"not authorized: check username and password_credential ({err})"
        return str(err)

    async def _session(self, backoff: Backoff) -> None:
        host, port = self._address()
        config = self.config
        # Read per session: a credential rotated (or installed late) is picked up at the next login.
        password = load_password(config.password_credential) if config.password_credential else None
        # onvif-zeep-async signs every request; with no login configured it signs an empty one
        # (which a camera without authentication ignores), since it cannot sign None.
        camera = ONVIFCamera(
            host,
            port,
            config.username or "",
            password or "",
            no_cache=True,
            adjust_time=config.adjust_time,
        )
        subscription: Any = None
        try:
            await self._measure_clock(camera)
            await asyncio.wait_for(camera.update_xaddrs(), config.timeout_s)
            events = await camera.create_events_service()
            result = await asyncio.wait_for(
                events.CreatePullPointSubscription(
                    {"InitialTerminationTime": f"PT{int(config.subscription_s)}S"}
                ),
                config.timeout_s,
            )
            address = result.SubscriptionReference.Address._value_1
            if not address:
                raise OnvifProtocolError("CreatePullPointSubscription gave no subscription address")
            camera.xaddrs[PULLPOINT_NS] = camera.rewrite_url(address)
            pullpoint = await camera.create_pullpoint_service()
            subscription = await camera.create_subscription_service("PullPointSubscription")
            self._count("sessions")
            backoff.reset()
            self._went_online(f"subscribed to events at {host}:{port}")
            await self._pull(pullpoint, subscription)
        finally:
            if subscription is not None:
                with contextlib.suppress(*RECOVERABLE):
                    await asyncio.wait_for(subscription.Unsubscribe(), min(2.0, config.timeout_s))
                    self._count("unsubscribes")
            with contextlib.suppress(*RECOVERABLE):
                await camera.close()

    async def _measure_clock(self, camera: ONVIFCamera) -> None:
        devicemgmt = await camera.create_devicemgmt_service()
        answer = await asyncio.wait_for(devicemgmt.authless_GetSystemDateAndTime(), self.config.timeout_s)
        theirs = camera_clock(answer)
        if theirs is None:
            return
        skew = (theirs - datetime.now(UTC)).total_seconds()
        self.clock_skew_s = skew
        if abs(skew) > self.config.max_clock_skew_s:
            self._count("clock_skew_warnings")
            self.drops.dropped(
                "clock_skew",
                0,
                f"camera clock is {skew:+.0f} s off the gateway's"
                + (" (digests signed with its clock: adjust_time)" if self.config.adjust_time else ""),
            )

    async def _pull(self, pullpoint: Any, subscription: Any) -> None:
        config = self.config
        renew_every = config.subscription_s / 2
        renew_at = time.monotonic() + renew_every
        while True:
            answer = await asyncio.wait_for(
                pullpoint.PullMessages(
                    {"Timeout": timedelta(seconds=config.pull_timeout_s), "MessageLimit": 100}
                ),
                config.pull_timeout_s + config.timeout_s,
            )
            # zeep's lenient parsing (onvif's settings: strict=False) turns a body that is not a
            # PullMessagesResponse into an empty one; its required CurrentTime tells them apart.
            if answer is None or getattr(answer, "CurrentTime", None) is None:
                raise OnvifProtocolError("unexpected SOAP answer: PullMessages gave no PullMessagesResponse")
            self._handle(answer.NotificationMessage or [])
            if time.monotonic() >= renew_at:
                try:
                    await asyncio.wait_for(
                        subscription.Renew({"TerminationTime": f"PT{int(config.subscription_s)}S"}),
                        config.timeout_s,
                    )
                except RECOVERABLE:
                    self._count("renew_failures")
                    raise
                self._count("renewals")
                renew_at = time.monotonic() + renew_every

    def _handle(self, notifications: Iterable[Any]) -> None:
        for notification in notifications:
            self._count("notifications")
            topic = topic_of(notification)
            try:
                event = classify(topic, message_of(notification))
            except ValueError as err:
                self._count("malformed_events")
                self.drops.dropped("malformed_events", 0, f"event {topic!r}: {err}")
                continue
            if event is None:
                self._count("ignored_topics")
                continue
            if self.topics and event.topic not in self.topics:
                self._count("filtered_topics")
                continue
            if event.initial and not event.active:
                self._count("initial_states")
                continue
            self._emit_event(event)

    def _emit_event(self, event: TopicEvent) -> None:
        now = utc_now()
        if event.kind == "motion":
            self._count("motion")
            self._emit(MotionDetected(self.device_id, event.active, now, topic=event.topic))
        else:
            self._count("tamper")
            self._emit(DeviceTamper(self.device_id, event.active, False, now))


async def probe_onvif(config: OnvifConfig) -> list[ProbeResult]:
    """Doctor checks of a real camera: reachable (GetSystemDateAndTime, which needs no login),
    clock skew, authenticated (GetDeviceInformation), events (a PullPoint subscription, at once
    removed)."""
    host, port = config.host or "", config.effective_port
    results: list[ProbeResult] = []
    try:
        password = load_password(config.password_credential) if config.password_credential else None
    except DeviceError as err:
        return [ProbeResult("authenticated", "fail", str(err))]
    camera = ONVIFCamera(
        host, port, config.username or "", password or "", no_cache=True, adjust_time=config.adjust_time
    )
    try:
        try:
            devicemgmt = await camera.create_devicemgmt_service()
            answer = await asyncio.wait_for(devicemgmt.authless_GetSystemDateAndTime(), config.timeout_s)
        except RECOVERABLE as raw:
            return [ProbeResult("reachable", "fail", f"{host}:{port}: {explain(raw)}")]
        results.append(ProbeResult("reachable", "ok", f"ONVIF device service at {host}:{port}"))
        theirs = camera_clock(answer)
        if theirs is None:
            results.append(ProbeResult("clock", "warn", "the camera gives no UTC time"))
        else:
            skew = (theirs - datetime.now(UTC)).total_seconds()
            status: Literal["ok", "warn"] = "ok" if abs(skew) <= config.max_clock_skew_s else "warn"
            note = "" if status == "ok" else "; set NTP on the camera (digests are signed with its clock)"
            results.append(
                ProbeResult("clock", status, f"camera clock {skew:+.1f} s off the gateway's{note}")
            )
        try:
            await asyncio.wait_for(camera.update_xaddrs(), config.timeout_s)
            devicemgmt = await camera.create_devicemgmt_service()
            info = await asyncio.wait_for(devicemgmt.GetDeviceInformation(), config.timeout_s)
        except RECOVERABLE as raw:
            results.append(ProbeResult("authenticated", "fail", str(explain(raw))))
            return results
        results.append(
            ProbeResult(
                "authenticated", "ok", f"{info.Manufacturer} {info.Model}, firmware {info.FirmwareVersion}"
            )
        )
        try:
            events = await camera.create_events_service()
            result = await asyncio.wait_for(
                events.CreatePullPointSubscription({"InitialTerminationTime": "PT10S"}), config.timeout_s
            )
            camera.xaddrs[PULLPOINT_NS] = camera.rewrite_url(result.SubscriptionReference.Address._value_1)
            subscription = await camera.create_subscription_service("PullPointSubscription")
            with contextlib.suppress(*RECOVERABLE):
                await asyncio.wait_for(subscription.Unsubscribe(), config.timeout_s)
            results.append(ProbeResult("events", "ok", "PullPoint subscription accepted"))
        except RECOVERABLE as raw:
            results.append(ProbeResult("events", "fail", f"no PullPoint subscription: {explain(raw)}"))
    finally:
        with contextlib.suppress(*RECOVERABLE):
            await camera.close()
    return results


__all__ = ["OnvifAuthError", "OnvifConfig", "OnvifEventsDriver", "OnvifProtocolError", "probe_onvif"]
