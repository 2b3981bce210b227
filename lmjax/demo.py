"""`make demo`: the main job on the embedded corpus.

Trains configs/train/shakespeare_char.py (nanoGPT's CPU baby setting) into runs/shakespeare_char
and prints the final validation loss. Re-running reuses (or resumes) the run.
"""

from __future__ import annotations

import os
import sys

from lmjax.cli import main as cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    workdir = os.path.join(ROOT, "runs", "shakespeare_char")
    config = os.path.join(ROOT, "configs", "train", "shakespeare_char.py")
    rc = cli_main(["train", "--config", config, "--workdir", workdir])
    if rc == 0:
        from lmjax.train.rundir import read_summary

        s = read_summary(workdir)
        print(f"final validation loss: {s['final_val_loss']:.4f} nats/char "
              f"({s['final_val_bpb']:.4f} bits/byte) after {s['steps']} steps; run in {workdir}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
