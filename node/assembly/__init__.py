"""Stage 2, assembly: stable-window study completion."""

from node.assembly.tracker import StudyTracker

__all__ = ["StudyTracker"]
