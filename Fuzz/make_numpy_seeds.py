"""Writes the seeds of the file readers' fuzz target (make fuzz-numpy) into
Fuzz/CorpusNumPy: valid .npy and .npz files as numpy writes them, and the
hostile files that once trapped, hung or took gigabytes (a zip64 locator
pointing at Int.max, directory records that all point at one entry, a header
declaring more data than the file holds). Run once; the files are committed."""
import io
import os
import struct

import numpy as np

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "CorpusNumPy")
os.makedirs(out, exist_ok=True)


def save(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def npy(array, version=None):
    buffer = io.BytesIO()
    if version is None:
        np.save(buffer, array)
    else:
        np.lib.format.write_array(buffer, array, version=version)
    return buffer.getvalue()


def npz(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


save("f4-2x3.npy", npy(np.arange(6, dtype=np.float32).reshape(2, 3) / 10 + 0.1))
save("f8-odd.npy", npy(np.full((3, 1), 10000.1)))
save("i8-scalar.npy", npy(np.array(7, dtype=np.int64)))
save("f4-empty.npy", npy(np.zeros((0, 3), dtype=np.float32)))
save("f4-version2.npy", npy(np.ones(3, dtype=np.float32), version=(2, 0)))
save("fortran.npy", npy(np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))))
two = npz(weight=np.ones(3, dtype=np.float32), num_batches_tracked=np.array(3, dtype=np.int64))
save("state.npz", two)
save("empty.npz", npz())
save("truncated.npz", two[: len(two) // 2])

# A header declaring a billion float32 values, with 16 bytes of data.
small = npy(np.arange(4, dtype=np.float32))
header = small[10:-16].replace(b"(4,), }", b"(1000000000,), }")
save("declared-too-large.npy", small[:8] + struct.pack("<H", len(header)) + header + small[-16:])

# A zip64 end-of-central-directory locator whose record offset is Int.max.
locator = struct.pack("<IIQI", 0x07064B50, 0, 2**63 - 1, 1)
end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
save("zip64-int-max.npz", locator + end)

# Twenty directory records, all pointing at one entry.
one = npz(**{"0000": np.ones(16, dtype=np.float32)})
directory_at = struct.unpack("<I", one[-6:-2])[0]
record = one[directory_at:-22]
records = b"".join(record[:46] + b"%04d" % k + record[50:] for k in range(20))
tail = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 20, 20, len(records), directory_at, 0)
save("overlapping.npz", one[:directory_at] + records + tail)
