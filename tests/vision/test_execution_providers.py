"""Execution provider choice: config validation, CPU default and the CPU fallback with a warning."""

from __future__ import annotations

import logging

import onnxruntime as ort
import pytest
from pydantic import ValidationError

from vision.config import RuntimeConfig
from vision.face_detect import MODEL_ID
from vision.runtime import OnnxModel


def test_default_is_cpu() -> None:
    assert RuntimeConfig().execution_providers == ("cpu",)
    model = OnnxModel(MODEL_ID, config=RuntimeConfig(warmup_runs=0))
    assert model.provider == "cpu"
    assert model.fallback_reason is None


@pytest.mark.skipif(
    "OpenVINOExecutionProvider" in ort.get_available_providers(), reason="this build has OpenVINO"
)
def test_missing_openvino_falls_back_to_cpu_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    config = RuntimeConfig(warmup_runs=0, execution_providers=("openvino", "cpu"))
    with caplog.at_level(logging.WARNING, logger="vision.runtime"):
        model = OnnxModel(MODEL_ID, config=config)
    assert model.provider == "cpu"
    assert model.fallback_reason == "openvino not available"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "openvino" in warnings[0] and "CPU is the last resort" in warnings[0]
    assert "CPUExecutionProvider" in warnings[0]


@pytest.mark.parametrize("providers", [[], ["cpu", "cpu"], ["gpu"]])
def test_config_refuses_bad_provider_lists(providers: list[str]) -> None:
    with pytest.raises(ValidationError):
        RuntimeConfig(execution_providers=providers)  # type: ignore[arg-type]


def test_gateway_setting_is_the_models_runtime() -> None:
    """The `vision:` section of the agent's config is the runtime every gateway model is built with;
    a list the runtime refuses is a config error at load."""
    from edge_agent.config.loader import ConfigFileError, parse_config

    config = parse_config("gateway: {id: gw-1, site: s}\nvision: {execution_providers: [openvino, cpu]}\n")
    assert config.vision.runtime().execution_providers == ("openvino", "cpu")
    with pytest.raises(ConfigFileError, match="twice"):
        parse_config("gateway: {id: gw-1, site: s}\nvision: {execution_providers: [cpu, cpu]}\n")
