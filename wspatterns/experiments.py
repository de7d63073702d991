"""Experiments the lessons run to show where a pattern bends: one short call each.

Each experiment starts its own servers and clients with the kit, bounds every
wait, cleans up after itself, and returns numbers (or a DataFrame) for the
lesson to show.
"""

from __future__ import annotations
