"""Write the parameter table (generated from ExperimentConfig) into README.md and README.fa.md,
between the `parameters:start` / `parameters:end` markers. Run by `make notebooks`."""

import re
from pathlib import Path

from fedprune_core.config import parameters_markdown

ROOT = Path(__file__).resolve().parents[1]
PATTERN = re.compile(r"(<!-- parameters:start -->\n).*?(<!-- parameters:end -->)", re.S)


def sync(path: Path) -> bool:
    text = path.read_text()
    new = PATTERN.sub(lambda m: m.group(1) + parameters_markdown() + "\n" + m.group(2), text)
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    for name in ("README.md", "README.fa.md"):
        if (ROOT / name).exists():
            print(f"{name}: {'updated' if sync(ROOT / name) else 'up to date'}")
