"""Writes a released-width RPL checkpoint with random weights (672 MB) in torch.save's zip format,
from the shapes in tests/fixtures/official_state_dict.json: for loading the paper's size in the
page by hand (tests/browser/released_width.mjs). Needs torch (a throwaway venv), so not CI.
Usage: python3 make_released_pth.py OUT.pth"""
import json
import sys
from collections import OrderedDict
from pathlib import Path

import torch

entries = json.loads((Path(__file__).parents[1] / "fixtures" / "official_state_dict.json").read_text())["entries"]
generator = torch.Generator().manual_seed(0)
state = OrderedDict()
for entry in entries:
    key, shape = entry["key"], entry["shape"]
    if key.endswith("num_batches_tracked"):
        state[key] = torch.tensor(1000, dtype=torch.int64)
    elif key.endswith("running_var"):
        state[key] = torch.rand(shape, generator=generator) + 0.5
    else:
        fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
        state[key] = torch.randn(shape, generator=generator) / fan_in ** 0.5
torch.save(state, sys.argv[1])
print(f"{sys.argv[1]}: {len(state)} entries, {Path(sys.argv[1]).stat().st_size / 1e6:.1f} MB")
