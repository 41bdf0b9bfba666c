#!/usr/bin/env python3
"""Model-file conversions for scripts/fetch-models, in pure Python (no torch, no numpy).

Subcommands:
  pth-to-safetensors IN.pth OUT.safetensors
      Reads a legacy (non-zip) PyTorch checkpoint holding a state_dict and writes its tensors
      to a safetensors file.
  imagenet-classes SYNSETS.txt SYNSET_TO_TEXT.txt OUT.txt
      Writes one line per ImageNet-1k class in class-index order, each the synset's text in
      the second file: its synonym list ("tench, Tinca tinca") from the lemma file, or its
      WordNet definition from the definition file.

Legacy checkpoint layout (torch.save with _use_new_zipfile_serialization=False): five
pickles in a row — magic number, protocol version, system info, the object itself (whose
tensors point at storages through persistent ids), the list of storage keys — then, for each
key in that list, an 8-byte little-endian element count and the storage's raw bytes.
"""

import json
import os
import pickle
import struct
import sys

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# torch storage class name -> (safetensors dtype, bytes per element)
STORAGE_TYPES = {
    "FloatStorage": ("F32", 4),
    "DoubleStorage": ("F64", 8),
    "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2),
    "LongStorage": ("I64", 8),
    "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2),
    "CharStorage": ("I8", 1),
    "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1),
}


class Fail(Exception):
    """A conversion error with a message for the user."""


class StorageType:
    """Stands in for torch.FloatStorage etc. inside the pickle."""

    def __init__(self, name):
        if name not in STORAGE_TYPES:
            raise Fail(f"unsupported tensor storage type torch.{name}")
        self.name = name
        self.dtype, self.itemsize = STORAGE_TYPES[name]


class Storage:
    """A storage referenced by the pickle; its bytes come after the pickles."""

    def __init__(self, key, stype, numel):
        self.key = key
        self.stype = stype
        self.numel = numel
        self.data = None


class TensorRef:
    """What _rebuild_tensor_v2 returns here: a view into a storage."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)

    def contiguous_bytes(self):
        item = self.storage.stype.itemsize
        data = self.storage.data
        numel = 1
        for d in self.size:
            numel *= d
        # Row-major strides of this shape: if they match, one slice is enough.
        expect, acc = [], 1
        for d in reversed(self.size):
            expect.append(acc)
            acc *= d
        expect.reverse()
        if numel == 0:
            return b""
        if all(s == e or d == 1 for s, e, d in zip(self.stride, expect, self.size)):
            start = self.offset * item
            return bytes(data[start : start + numel * item])
        # Non-contiguous view: gather element by element (rare in state_dicts).
        out = bytearray()
        idx = [0] * len(self.size)
        for _ in range(numel):
            pos = self.offset + sum(i * s for i, s in zip(idx, self.stride))
            out += data[pos * item : (pos + 1) * item]
            for k in range(len(idx) - 1, -1, -1):
                idx[k] += 1
                if idx[k] < self.size[k]:
                    break
                idx[k] = 0
        return bytes(out)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_rest):
    return TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_rest):
    return data


class CheckpointUnpickler(pickle.Unpickler):
    """Resolves torch classes to the stand-ins above and refuses everything else."""

    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name.endswith("Storage"):
            return StorageType(name)
        raise Fail(f"checkpoint refers to {module}.{name}, which this converter does not allow")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise Fail(f"unexpected persistent id {pid!r}")
        _, stype, key, _location, numel = pid[:5]
        if len(pid) > 5 and pid[5] is not None:
            raise Fail("storage views are not supported")
        if key not in self.storages:
            self.storages[key] = Storage(key, stype, numel)
        return self.storages[key]


def read_legacy_checkpoint(path):
    """Returns {name: TensorRef} from a legacy-format checkpoint."""
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(0)
        if head == b"PK":
            raise Fail(f"{path} is a zip-format checkpoint; only the legacy format is handled")
        magic = pickle.load(f)
        if magic != LEGACY_MAGIC:
            raise Fail(f"{path} is not a legacy PyTorch checkpoint (bad magic number)")
        pickle.load(f)  # protocol version
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", True):
            raise Fail("big-endian checkpoints are not supported")
        storages = {}
        obj = CheckpointUnpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            st = storages.get(key)
            if st is None:
                raise Fail(f"storage {key} is listed but never used")
            (numel,) = struct.unpack("<q", f.read(8))
            nbytes = numel * st.stype.itemsize
            st.data = memoryview(f.read(nbytes))
            if len(st.data) != nbytes:
                raise Fail(f"{path} is truncated (storage {key})")
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise Fail(f"{path} does not hold a state_dict")
    tensors = {}
    for name, value in obj.items():
        if isinstance(value, TensorRef):
            tensors[name] = value
    return tensors


def write_safetensors(tensors, path):
    """Writes {name: TensorRef} as safetensors: u64 LE header length, JSON header, data."""
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        raw = t.contiguous_bytes()
        header[name] = {
            "dtype": t.storage.stype.dtype,
            "shape": list(t.size),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # keep the data 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


def imagenet_classes(synsets_path, lemmas_path, out_path):
    lemmas = {}
    with open(lemmas_path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if "\t" in line:
                wnid, names = line.split("\t", 1)
                lemmas[wnid] = names.strip()
    with open(synsets_path, encoding="utf-8") as f:
        synsets = [s.strip() for s in f if s.strip()]
    if len(synsets) != 1000:
        raise Fail(f"{synsets_path} has {len(synsets)} synsets, expected 1000")
    missing = [s for s in synsets if s not in lemmas]
    if missing:
        raise Fail(f"no names for synsets {missing[:5]}")
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for s in synsets:
            f.write(lemmas[s] + "\n")
    os.replace(tmp, out_path)


def main(argv):
    try:
        if len(argv) == 4 and argv[1] == "pth-to-safetensors":
            tensors = read_legacy_checkpoint(argv[2])
            if not tensors:
                raise Fail(f"{argv[2]} holds no tensors")
            write_safetensors(tensors, argv[3])
        elif len(argv) == 5 and argv[1] == "imagenet-classes":
            imagenet_classes(argv[2], argv[3], argv[4])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (Fail, OSError, pickle.UnpicklingError, EOFError, struct.error) as e:
        print(f"model_files: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
