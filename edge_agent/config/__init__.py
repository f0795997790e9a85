"""The gateway's configuration: one YAML file, one root model composed of the components' leaf models.

Each component's settings live in a leaf module that imports no runtime code (``identity``,
``access``, ``commands``, ``api``, ``cameras`` here; the device families'
``config`` modules; sync's outbox and MQTT settings), so importing the configuration never closes an
import cycle. ``loader`` reads the YAML and points every error at its line.
"""

from edge_agent.config.access import (
    AntiPassbackConfig,
    AttendancePointConfig,
    Direction,
    GateConfig,
    GateReaderConfig,
    SessionConfig,
)
from edge_agent.config.api import ApiSettings
from edge_agent.config.cameras import CameraSetup, FaceAnalysisConfig, FaceSettings, SecurityConfig
from edge_agent.config.commands import CommandSettings, RateLimit
from edge_agent.config.edit import (
    ConfigEditError,
    install_config,
    pending_marker,
    previous_config,
    redraw_camera_zones,
    restore_previous_config,
    write_error_code,
)
from edge_agent.config.identity import AgentConfig, GatewayIdentity, SimulatedSourceConfig, check_id
from edge_agent.config.loader import (
    ConfigFileError,
    ConfigIssue,
    config_json_schema,
    load_config,
    parse_config,
)
from edge_agent.config.root import GatewayConfig
from edge_agent.config.terminals import TerminalSetup

__all__ = [
    "AgentConfig",
    "AntiPassbackConfig",
    "ApiSettings",
    "AttendancePointConfig",
    "CameraSetup",
    "CommandSettings",
    "ConfigEditError",
    "ConfigFileError",
    "ConfigIssue",
    "Direction",
    "FaceAnalysisConfig",
    "FaceSettings",
    "GateConfig",
    "GateReaderConfig",
    "GatewayConfig",
    "GatewayIdentity",
    "RateLimit",
    "SecurityConfig",
    "SessionConfig",
    "SimulatedSourceConfig",
    "TerminalSetup",
    "check_id",
    "config_json_schema",
    "install_config",
    "load_config",
    "parse_config",
    "pending_marker",
    "previous_config",
    "redraw_camera_zones",
    "restore_previous_config",
    "write_error_code",
]
