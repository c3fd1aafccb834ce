"""Makes pytorch-16bit.npz, the fixture of the 16-bit storage tests
(Tests/NormKitTests/ReducedPrecisionTests.swift).

Run once with PyTorch and NumPy installed (python3 make_reduced_fixture.py);
the output is committed, so the tests need neither.

For each storage dtype (bfloat16, float16) and each shape ((5, 13): NormKit's
row blocks; (6, 67): its one-row-at-a-time path), PyTorch's layer_norm and
rms_norm on a 16-bit input with float32 weight and bias (eps 1e-5), forward
and backward with a 16-bit output gradient. NumPy has no bfloat16, so every
16-bit array is saved as its bit patterns (uint16):
  {dtype}_{shape}_x, _dy                 the 16-bit input and output gradient
  {dtype}_{shape}_weight, _bias          float32
  {dtype}_{shape}_ln_y, _ln_dx           layer_norm's output and input gradient (bits)
  {dtype}_{shape}_ln_dweight, _ln_dbias  float32
  {dtype}_{shape}_rms_y, _rms_dx, _rms_dweight   the same for rms_norm (weight only)
BatchNorm (functional batch_norm, momentum 0.1, eps 1e-5) on (37, 13) and
(3, 5, 7, 9) 16-bit inputs, float32 parameters and running statistics:
  {dtype}_bn_{shape}_x, _dy, _weight, _bias, _running_mean0, _running_var0
  {dtype}_bn_{shape}_{train,eval}_y, _dx (bits), _dweight, _dbias (float32)
  {dtype}_bn_{shape}_running_mean, _running_var   after the training call
npy_float16 (a float16 array, 3x4) and npy_float16_bits (its uint16 view),
and the conversions: conv_float32 (ties, the largest finite values, subnormals,
infinities and 4000 random patterns; no NaN, whose bits PyTorch's paths
disagree on), conv_bfloat16 and conv_float16 (the bits of .to(dtype)).
"""
import numpy as np
import torch

torch.manual_seed(3)
arrays = {}


def bits(t):
    return t.detach().contiguous().view(torch.int16).numpy().view(np.uint16).copy()


for dtype, name in ((torch.bfloat16, "bfloat16"), (torch.float16, "float16")):
    for rows, cols in ((5, 13), (6, 67)):
        key = f"{name}_{rows}x{cols}"
        x = (torch.randn(rows, cols) * 2.3 + 100.1).to(dtype)
        dy = (torch.randn(rows, cols) * 0.7 + 0.1).to(dtype)
        weight = torch.randn(cols) * 0.4 + 1.0
        bias = torch.randn(cols) * 0.3 - 0.1
        arrays[f"{key}_x"] = bits(x)
        arrays[f"{key}_dy"] = bits(dy)
        arrays[f"{key}_weight"] = weight.numpy()
        arrays[f"{key}_bias"] = bias.numpy()
        for op in ("ln", "rms"):
            xi = x.clone().requires_grad_(True)
            w = weight.clone().requires_grad_(True)
            b = bias.clone().requires_grad_(True)
            if op == "ln":
                y = torch.nn.functional.layer_norm(xi, (cols,), w, b, 1e-5)
            else:
                y = torch.nn.functional.rms_norm(xi, (cols,), w, 1e-5)
            assert y.dtype == dtype, (op, y.dtype)
            y.backward(dy)
            arrays[f"{key}_{op}_y"] = bits(y)
            arrays[f"{key}_{op}_dx"] = bits(xi.grad)
            arrays[f"{key}_{op}_dweight"] = w.grad.numpy().astype(np.float32)
            if op == "ln":
                arrays[f"{key}_{op}_dbias"] = b.grad.numpy().astype(np.float32)

# BatchNorm (training, then the running statistics' inference) on a 16-bit
# input with float32 weight, bias and running statistics: BatchNorm1d on
# (37, 13) and BatchNorm2d on (3, 5, 7, 9), momentum 0.1, eps 1e-5.
for dtype, name in ((torch.bfloat16, "bfloat16"), (torch.float16, "float16")):
    for shape in ((37, 13), (3, 5, 7, 9)):
        key = f"{name}_bn_{'x'.join(map(str, shape))}"
        channels = shape[1]
        x = (torch.randn(*shape) * 2.3 + 100.1).to(dtype)
        dy = (torch.randn(*shape) * 0.7 + 0.1).to(dtype)
        weight = torch.randn(channels) * 0.4 + 1.0
        bias = torch.randn(channels) * 0.3 - 0.1
        mean0 = torch.randn(channels) * 0.5 + 99.0
        var0 = torch.rand(channels) + 3.0
        arrays[f"{key}_x"] = bits(x)
        arrays[f"{key}_dy"] = bits(dy)
        arrays[f"{key}_weight"] = weight.numpy()
        arrays[f"{key}_bias"] = bias.numpy()
        arrays[f"{key}_running_mean0"] = mean0.numpy()
        arrays[f"{key}_running_var0"] = var0.numpy()
        for mode in ("train", "eval"):
            xi = x.clone().requires_grad_(True)
            w = weight.clone().requires_grad_(True)
            b = bias.clone().requires_grad_(True)
            rm, rv = mean0.clone(), var0.clone()
            y = torch.nn.functional.batch_norm(xi, rm, rv, w, b, training=mode == "train",
                                               momentum=0.1, eps=1e-5)
            assert y.dtype == dtype, (mode, y.dtype)
            y.backward(dy)
            arrays[f"{key}_{mode}_y"] = bits(y)
            arrays[f"{key}_{mode}_dx"] = bits(xi.grad)
            arrays[f"{key}_{mode}_dweight"] = w.grad.numpy().astype(np.float32)
            arrays[f"{key}_{mode}_dbias"] = b.grad.numpy().astype(np.float32)
            if mode == "train":
                arrays[f"{key}_running_mean"] = rm.numpy()
                arrays[f"{key}_running_var"] = rv.numpy()

# A float16 .npy entry (NormKit's NumPyArray.float16Values) and its bit patterns.
npy16 = np.array([[1.0, -2.5, 65504.0, 6.1e-5], [5.96e-8, 0.1, np.inf, -0.0],
                  [1000.1, -7.3e-3, 3.14159, 2.0 ** -14]], dtype=np.float16)
arrays["npy_float16"] = npy16
arrays["npy_float16_bits"] = npy16.view(np.uint16)

special = np.array([1.00390625, 1.01171875, 1.0 + 2**-9 + 2**-23, -2.5, 3.3895314e38,
                    3.4028235e38, 65504.0, 65519.99, 65520.0, 6.1e-5, 5.96e-8, 2.98e-8,
                    2.9802326e-08, 1e-40, -0.0, 0.1, float("inf"), float("-inf")], dtype=np.float32)
rng = np.random.default_rng(5)
patterns = rng.integers(0, 2**32, size=4000, dtype=np.uint64).astype(np.uint32).view(np.float32)
patterns = patterns[np.isfinite(patterns)]
conv = np.concatenate([special, patterns, (rng.standard_normal(2000) * 30).astype(np.float32)])
arrays["conv_float32"] = conv
arrays["conv_bfloat16"] = bits(torch.from_numpy(conv).to(torch.bfloat16))
arrays["conv_float16"] = bits(torch.from_numpy(conv).to(torch.float16))

np.savez("pytorch-16bit.npz", **arrays)
print(torch.__version__, sorted(arrays))
