"""Test harness shared by every suite: paths, pinned tools, rendering, validation."""
