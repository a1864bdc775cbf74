#!/usr/bin/env python3
"""Writes a safetensors checkpoint as a PyTorch zip checkpoint (pytorch_model.bin) without torch,
optionally stripping the `model.` prefix from keys, as facebook/opt-* checkpoints have them.

  write_pth.py IN.safetensors OUT.bin [--strip-model-prefix]

The pickle names torch._utils._rebuild_tensor_v2 and torch.<Type>Storage through stand-in
modules, which is all a reader that rebuilds tensors only (such as candle's) looks at."""
import collections, json, pickle, struct, sys, types, zipfile

DTYPES = {"F16": ("HalfStorage", 2), "F32": ("FloatStorage", 4), "BF16": ("BFloat16Storage", 2)}

torch_mod = types.ModuleType("torch")
utils_mod = types.ModuleType("torch._utils")


def _rebuild_tensor_v2(*args):
    raise RuntimeError("stand-in, never called")


_rebuild_tensor_v2.__module__ = "torch._utils"
utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
storages = {}
for name, _ in DTYPES.values():
    cls = type(name, (), {"__module__": "torch"})
    setattr(torch_mod, name, cls)
    storages[name] = cls
sys.modules["torch"] = torch_mod
sys.modules["torch._utils"] = utils_mod


class StorageRef:
    def __init__(self, key, cls, numel):
        self.key, self.cls, self.numel = key, cls, numel


class TensorRef:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, shape

    def __reduce_ex__(self, proto):
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.insert(0, acc)
            acc *= d
        return (_rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), tuple(stride), False, collections.OrderedDict()))


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def main():
    src, dst = sys.argv[1], sys.argv[2]
    strip = "--strip-model-prefix" in sys.argv
    raw = open(src, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    state = collections.OrderedDict()
    blobs = []
    for i, (name, info) in enumerate(sorted((k, v) for k, v in header.items() if k != "__metadata__")):
        cls_name, size = DTYPES[info["dtype"]]
        a, b = info["data_offsets"]
        numel = (b - a) // size
        key = name[len("model."):] if strip and name.startswith("model.") else name
        state[key] = TensorRef(StorageRef(str(i), storages[cls_name], numel), info["shape"])
        blobs.append((str(i), body[a:b]))
    import io
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(state)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        for key, data in blobs:
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", "3\n")


if __name__ == "__main__":
    main()
