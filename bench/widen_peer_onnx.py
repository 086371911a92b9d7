"""Makes the released-width peer ONNX file from the width-1/8 one, without torch or the paper's code.

Usage: python bench/widen_peer_onnx.py ../shared/peer/onnx/rpl_w8.onnx rpl_full.onnx
(needs `pip install onnx numpy`; benchmarks only, as `rpl bench --peer` and bench.mjs
--peer-released take it.)

The width-1/8 network is the released one with every channel count but 3 (RGB) and 19 (classes)
divided by 8, so every weight of the released graph is the small one's with those axes 8 times
longer. The small weights are tiled along them (input axes scaled by 1/8), so the activations
keep the fixture network's range: for timing only, its outputs are not the paper's.
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper

KEEP = {3, 19}
WIDER = 8

model = onnx.load(sys.argv[1])
for init in model.graph.initializer:
    small = numpy_helper.to_array(init)
    if small.dtype != np.float32 or small.ndim == 0:
        continue
    # Channel axes only: a convolution's kernel axes (2 and 3) keep their size.
    reps = [1 if size in KEEP or (small.ndim == 4 and axis >= 2) else WIDER for axis, size in enumerate(small.shape)]
    wide = np.tile(small, reps)
    if small.ndim == 4 and reps[1] == WIDER:
        wide = wide / WIDER
    init.CopyFrom(numpy_helper.from_array(wide.astype(np.float32), init.name))
# The small graph's inferred intermediate shapes no longer hold.
del model.graph.value_info[:]
onnx.save(model, sys.argv[2])
print(f"{sys.argv[2]}: {sum(numpy_helper.to_array(i).size for i in model.graph.initializer)} parameters")
