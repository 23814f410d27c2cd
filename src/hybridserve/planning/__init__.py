"""Dataflow planner: place model parts on devices for throughput (or energy)."""

from hybridserve.planning.plan import DeviceAssignment, Placement, Plan

__all__ = ["DeviceAssignment", "Placement", "Plan"]
