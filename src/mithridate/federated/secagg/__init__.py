"""Secure aggregation: the protocol (:mod:`.protocol`), Shamir sharing (:mod:`.shamir`), an in-process
round for the simulator (:mod:`.simulate`) and the Flower server loop and client mod (:mod:`.flower`)."""

from mithridate.federated.secagg.protocol import (
    Plan,
    ProtocolAbort,
    SecAggClient,
    SecAggServer,
    plan,
)

__all__ = ["Plan", "ProtocolAbort", "SecAggClient", "SecAggServer", "plan"]
