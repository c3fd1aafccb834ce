"""Makes numpy-layouts.npz, a fixture of Tests/NormKitTests/NumPyTests.swift.

Run once with NumPy installed (python3 make_numpy_layout_fixture.py); the
output is committed, so the tests need no NumPy.

Arrays in Fortran order next to the same values in C order, float32 and
float16 arrays for widening, a float64 array with a value beyond float32's
range, an int64 array, and NumPy's own transposes (what Tensor.permuted must
reproduce).
"""
import numpy as np

values = (np.arange(2 * 3 * 4, dtype=np.float64) * 0.1 + 10000.1).reshape(2, 3, 4)
arrays = {
    "c_2x3x4": values,
    "f_2x3x4": np.asfortranarray(values),
    "f_5x3_f4": np.asfortranarray((np.arange(15, dtype=np.float32) * 0.3 - 2.2).reshape(5, 3)),
    "f_7": np.asfortranarray(np.arange(7, dtype=np.float64) + 0.1),
    "f_2x3x2_i8": np.asfortranarray(np.arange(12, dtype=np.int64).reshape(2, 3, 2)),
    "float32_2x3": (np.arange(6, dtype=np.float32) / 10 + 0.1).reshape(2, 3),
    "float16_4": np.array([0.1, 6e4, -2.5, 6e-8], dtype=np.float16),
    "float64_big": np.array([1.0, 1e300, -3.5]),
    "int64_3": np.arange(3, dtype=np.int64),
    "t_201": np.ascontiguousarray(values.transpose(2, 0, 1)),
    "t_10": np.ascontiguousarray(values[0].T),
}
assert arrays["f_2x3x4"].flags.f_contiguous and not arrays["f_2x3x4"].flags.c_contiguous
np.savez("numpy-layouts.npz", **arrays)
print("numpy", np.__version__)
