"""Test-wide settings."""

import os

# Before torch loads OpenMP (as the CLI does): idle threads sleep instead of spinning, which on
# a 2-core machine shared with DataLoader workers and subprocesses avoids 10x slowdowns.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
