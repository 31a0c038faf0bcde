"""Loading settings: a TOML file read from disk, secrets from the environment."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rtcore.config.model import Config, ConfigError
from rtcore.config.reader import Reader


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML config file (``env``: where ``*_env`` keys look; os.environ)."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return from_dict(raw, env=os.environ if env is None else env, base=Path(path).parent)


def from_dict(
    raw: dict[str, Any], env: Mapping[str, str] | None = None, base: Path | None = None
) -> Config:
    """Validate a parsed config (the TOML document as a dict)."""
    reader = Reader(os.environ if env is None else env, base or Path("."))
    conf = reader.attempt(lambda: reader.config(raw), None)
    if reader.errors:
        raise ConfigError(*reader.errors)
    assert conf is not None
    return conf
