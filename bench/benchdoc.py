"""What every bench/ script needs to write its section of
docs/BENCHMARKS.md: the machine in words, and the section put in place
(between its `<!-- tag:begin` and `<!-- tag:end -->` lines) or appended.
Imported by bench/scale.py and by the Python inside the bench/*.sh scripts."""

import os
import pathlib
import platform
import re

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\nNumbers here are written by the scripts in `bench/`; "
    "rerun them rather than editing by hand.\n\n"
)


def machine() -> str:
    """'AMD EPYC, 2 cores, Linux 6.1.0'."""
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}"


def write_section(tag: str, section: str) -> None:
    """Replaces the `tag` section of docs/BENCHMARKS.md with `section`
    (which carries its own begin and end lines), or appends it."""
    text = DOC.read_text() if DOC.exists() else HEADER
    if f"<!-- {tag}:begin" in text:
        pattern = rf"<!-- {tag}:begin.*?<!-- {tag}:end -->\n"
        text = re.sub(pattern, lambda _: section, text, flags=re.S)
    else:
        text += ("" if text.endswith("\n\n") else "\n") + section
    DOC.write_text(text)
    print(section)


def read_rounds(path: str) -> dict:
    """`test who requests/s p99-ms` lines (one per round) → {(test, who):
    [(requests/s, p99), …]} in round order."""
    rows: dict = {}
    for line in open(path):
        test, who, rps, p99 = line.split()
        rows.setdefault((test, who), []).append((float(rps), float(p99)))
    return rows


def medians(rows: dict) -> dict:
    """{key: (median requests/s, median p99)} of read_rounds' rows."""
    import statistics

    return {k: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v)) for k, v in rows.items()}


def spread(values: list) -> float:
    """Half the range of the rounds' requests/s, in % of their median."""
    import statistics

    v = [r for r, _ in values]
    return (max(v) - min(v)) / statistics.median(v) * 100 / 2
