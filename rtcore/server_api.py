"""Kept for compatibility: the server library is :mod:`rtcore.backend` (``rtcore.ServerAPI``,
``rtcore.AsyncServerAPI``, ``rtcore.ServerAPIError``); ``from rtcore.server_api import ...``
goes on working for existing users."""

from __future__ import annotations

from rtcore.backend import AsyncServerAPI, ServerAPI, ServerAPIError

__all__ = ["AsyncServerAPI", "ServerAPI", "ServerAPIError"]
