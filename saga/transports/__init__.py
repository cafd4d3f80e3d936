"""Transports carry tasks to workers and results back; see :mod:`saga.transports.base`."""

from __future__ import annotations

from saga.transports.base import Subscription, Transport, open_transport

__all__ = ["Subscription", "Transport", "open_transport"]
