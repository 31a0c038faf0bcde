"""Engines: how a publication reaches its recipients and where shared state lives.

``base`` declares the interfaces (``Broker``, ``Publication``, ``Target``) and the local
delivery every broker ends in; ``memory`` is the single-process default; ``redis/`` makes many
nodes one server (``[broker] kind = "redis"``).
"""
