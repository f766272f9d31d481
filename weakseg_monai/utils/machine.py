"""What machine a benchmark ran on (for the tables the scripts write)."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """CPU model from /proc/cpuinfo where there is one, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
