"""Schemathesis against the OpenAPI document of a running gateway: generated requests (valid and
invalid) to every operation must never get a server error (5xx), and every answer must have a
documented status code, content type and body schema."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest

from tests.api.conftest import FACE_CAMERA, Tokens, jpeg, raise_test_alert, running_api, until
from tests.conftest import MosquittoBroker

SCHEMATHESIS = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
# Fuzzing cases per operation. The run's time is schemathesis generating cases (the gateway answered
# 1187 requests in 8 s of a 40 s run), and fuzzing is most of it; the coverage and stateful phases
# do not depend on this. 25 keeps every operation fuzzed; set SCHEMATHESIS_MAX_EXAMPLES=200 for a
# deeper run.
MAX_EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25")


async def openapi_paths(base_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url) as client:
        paths: dict[str, Any] = (await client.get("/api/openapi.json")).json()["paths"]
    return paths


def test_no_server_errors_on_generated_requests(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens, face_key: str, artifact_dir: Path
) -> None:
    if not Path(SCHEMATHESIS).exists():
        pytest.fail("schemathesis is needed (pip install schemathesis)")

    async def scenario() -> None:
        # With face recognition on, so generated photos go through the real face models.
        async with running_api(tmp_path, mosquitto.url, extra_config=FACE_CAMERA) as gate:
            await until(lambda: gate.agent.cameras.faces is not None, "face service")
            # Something to find: alerts with and without a snapshot, events of several areas.
            gate.turnstile.raise_event("forced", "entry")
            raise_test_alert(gate.agent, "fuzzing", attachment=jpeg())
            gate.reader.present("0012AB34CD")
            report = artifact_dir / "schemathesis-junit.xml"
            proc = await asyncio.create_subprocess_exec(
                SCHEMATHESIS,
                "run",
                f"{gate.base_url}/api/openapi.json",
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
                "--max-examples",
                MAX_EXAMPLES,
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--seed",
                "20261129",
                "--workers",
                "1",
                "--request-timeout",
                "10",
                # The live stream never ends by design; it has its own test.
                "--exclude-path",
                "/api/v1/alerts/stream",
                "--header",
                f"Authorization: Bearer {tokens.admin}",
                "--report",
                "junit",
                "--report-junit-path",
                str(report),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "NO_COLOR": "1"},
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 90)
            text = out.decode(errors="replace")
            (artifact_dir / "schemathesis.txt").write_text(text)
            assert proc.returncode == 0, f"exit {proc.returncode}\n{text[-6000:]}"
            # The run really exercised every operation (not an empty selection).
            suite = ElementTree.parse(report).getroot()
            tested = {case.get("name") for case in suite.iter("testcase")}
            paths = {
                f"{method.upper()} {path}"
                for path, ops in (await openapi_paths(gate.base_url)).items()
                for method in ops
                if path != "/api/v1/alerts/stream"
            }
            assert "Stateful tests" in tested  # the run through links between operations
            assert tested - {"Stateful tests"} == paths, (tested ^ paths, text[-3000:])
            assert suite.get("failures") == "0" and suite.get("errors") == "0"

    asyncio.run(scenario())
