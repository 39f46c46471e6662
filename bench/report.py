"""Writing a benchmark's results into its own section of docs/benchmarks.md."""

import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_section(name: str, body: str) -> None:
    """Replace (or add) `## <name>` in docs/benchmarks.md, keeping the other sections."""
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nProduced by the scripts in `bench/`.\n"
    header = f"## {name}\n"
    machine = subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip()
    section = f"{header}\n`bench/{name}.py`, {time.strftime('%Y-%m-%d')}, {machine}:\n\n{body}\n"
    if header in text:
        start = text.index(header)
        end = text.find("\n## ", start + len(header))
        text = text[:start] + section + ("\n" + text[end + 1 :] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
