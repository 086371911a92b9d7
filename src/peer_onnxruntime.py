"""The peer yardstick for `rpl bench --peer FILE.onnx`: ONNX Runtime's CPU provider on the same
network and size, with the thread count given, its runs alternating with ours. Run by the command
line with the Python named by RPL_PEER_PYTHON (default python3); needs onnxruntime and numpy
(benchmarks only: `pip install onnxruntime numpy`).
Usage: python3 peer_onnxruntime.py FILE.onnx HEIGHT WIDTH THREADS
After a first run it prints one JSON line ({"version", "threads", "first_ms"}, or {"error"});
then for each line N read from its input it runs the network N times and prints {"times_ms": [...]}.
It ends at the end of its input."""
import json
import sys
import time

try:
    import numpy as np
    import onnxruntime as ort
except ImportError as error:
    print(json.dumps({"error": f"{error}: the peer needs `pip install onnxruntime numpy` for {sys.executable}"}))
    sys.exit(0)

path, height, width, threads = sys.argv[1], *map(int, sys.argv[2:5])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
try:
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
except Exception as error:  # ONNX Runtime raises its own classes for unreadable models
    print(json.dumps({"error": f"ONNX Runtime cannot open {path}: {error}"}))
    sys.exit(0)
name = session.get_inputs()[0].name
image = np.random.default_rng(0).standard_normal((1, 3, height, width), dtype=np.float32)


def run():
    started = time.perf_counter()
    session.run(None, {name: image})
    return (time.perf_counter() - started) * 1000


print(json.dumps({"version": ort.__version__, "threads": threads, "first_ms": run()}), flush=True)
for line in sys.stdin:
    print(json.dumps({"times_ms": [run() for _ in range(int(line))]}), flush=True)
