"""Writes the fuzzers' seed corpus into corpus/<target>/ from the project's own files, plus a
tiny hand-made PyTorch checkpoint (no torch needed: its pickle is written with stand-ins for
torch's rebuild function and storage class). Run from fuzz/: python3 make_seeds.py"""
import collections
import io
import math
import pickle
import shutil
import struct
import sys
import types
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "corpus"

# Stand-ins that pickle under torch's names.
torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")


def _rebuild_tensor_v2(*args):
    raise NotImplementedError


class FloatStorage:
    pass


_rebuild_tensor_v2.__module__ = "torch._utils"
FloatStorage.__module__ = "torch"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2
torch.FloatStorage = FloatStorage
torch._utils = utils
sys.modules.update({"torch": torch, "torch._utils": utils})


class StorageRef:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class Tensor:
    def __init__(self, key, shape):
        self.storage = StorageRef(key, math.prod(shape))
        self.shape = shape

    def __reduce__(self):
        stride = tuple(math.prod(self.shape[i + 1:]) for i in range(len(self.shape)))
        return (_rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), stride, False, collections.OrderedDict()))


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
        return None


def tiny_checkpoint(shapes):
    state = collections.OrderedDict((name, Tensor(str(i), shape)) for i, (name, shape) in enumerate(shapes.items()))
    buffer = io.BytesIO()
    TorchPickler(buffer, protocol=2).dump(state)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("tiny/data.pkl", buffer.getvalue())
        for tensor in state.values():
            archive.writestr(f"tiny/data/{tensor.storage.key}", struct.pack(f"<{tensor.storage.numel}f", *range(tensor.storage.numel)))
        archive.writestr("tiny/version", "3\n")
    return out.getvalue()


def seed(target, name, data):
    (CORPUS / target).mkdir(parents=True, exist_ok=True)
    (CORPUS / target / name).write_bytes(data)


bad = ROOT / "tests" / "bad_inputs"
seed("pth_checkpoint", "tiny.pth", tiny_checkpoint({"branch1.mod1.conv1.weight": (8, 3, 3, 3), "branch1.final.6.weight": (19, 32, 1, 1)}))
seed("pth_checkpoint", "calls_os_system.pth", (bad / "calls_os_system.pth").read_bytes())
with zipfile.ZipFile(ROOT / "tests" / "fixtures" / "rpl_w8" / "rpl_w8_wrapped.pth") as archive:
    pickle_only = io.BytesIO()
    with zipfile.ZipFile(pickle_only, "w") as out:
        out.writestr("w/data.pkl", archive.read("rpl_w8_wrapped/data.pkl"))
    seed("pth_checkpoint", "fixture_pickle_only.pth", pickle_only.getvalue())
for case in ["case_A", "case_B"]:
    seed("safetensors_checkpoint", f"{case}.safetensors", (ROOT / "tests" / "fixtures" / "metrics" / f"{case}.safetensors").read_bytes())
# The demo model's header and its first tensors only: small, still shaped like a real model.
demo = (ROOT / "models" / "rpl-demo.safetensors").read_bytes()
header_len = struct.unpack("<Q", demo[:8])[0]
seed("safetensors_checkpoint", "demo_head.safetensors", demo[: 8 + header_len + 4096])
for name in ["scene_64x48.png", "exif_rotated.jpg", "cmyk.jpg", "rgb16.png", "palette.png", "alpha.png", "grey.png", "truncated.jpg", "three_pixels.png"]:
    seed("image_decode", name, (bad / name).read_bytes())
seed("image_decode", "case_64x128.png", (ROOT / "tests" / "fixtures" / "rpl_w8" / "case_64x128.png").read_bytes())
for name in ["mask_unknown_values.png", "mask_wrong_size.png"]:
    seed("mask_decode", name, (bad / name).read_bytes())
seed("mask_decode", "scene_0000_ood.png", (ROOT / "models" / "samples" / "scene_0000_ood.png").read_bytes())
print("\n".join(sorted(str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file())))
