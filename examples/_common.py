"""Shared by the examples: fast mode (used by the test suite) and an output folder."""

import argparse
import os
from pathlib import Path


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--fast", action="store_true", default=os.environ.get("RAGIM_EXAMPLES_FAST") == "1",
                        help="small, quick settings (what the test suite runs)")
    parser.add_argument("--out", type=Path, default=Path("runs/examples"), help="output folder")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    return args
