"""Settings: the model (frozen attrs), the reader (pure), loading from files and the
environment, and the settings page's editor (``rtcore.config.editor``)."""

from __future__ import annotations

from rtcore.config.load import from_dict, load
from rtcore.config.model import (
    CHANNEL_RULE_KEYS,
    AppConfig,
    BrokerConfig,
    ChannelRule,
    Config,
    ConfigError,
    Limits,
)

__all__ = [
    "AppConfig",
    "BrokerConfig",
    "CHANNEL_RULE_KEYS",
    "ChannelRule",
    "Config",
    "ConfigError",
    "Limits",
    "from_dict",
    "load",
]
