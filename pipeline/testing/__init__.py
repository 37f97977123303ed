"""Test seams shipped with Rubot: a scripted in-process model, a local Messages API stand-in for the real SDK,
and the switch that forbids real model calls (re-exported from :mod:`pipeline.models.guard`)."""

from __future__ import annotations

from pipeline.models.guard import allow_network_models, forbid_network_models, network_models_forbidden
from pipeline.testing.replies import ErrorReply, Reply, ToolUse, error, reply
from pipeline.testing.scripted import ScriptedModel
from pipeline.testing.stand_in import Charge, MessagesStandIn, RecordedRequest

__all__ = [
    "Charge",
    "ErrorReply",
    "MessagesStandIn",
    "RecordedRequest",
    "Reply",
    "ScriptedModel",
    "ToolUse",
    "allow_network_models",
    "error",
    "forbid_network_models",
    "network_models_forbidden",
    "reply",
]
