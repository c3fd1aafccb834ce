"""Makes pytorch-batchnorm.npz, the fixture of Tests/NormKitTests/NumPyTests.swift.

Run once with PyTorch and NumPy installed (python3 make_pytorch_fixture.py);
the output is committed, so the tests need neither.

It trains a BatchNorm1d(5) in float64 and a BatchNorm2d(3) in float32, PyTorch
defaults (momentum 0.1, eps 1e-5), for three batches (inputs 3.7 * randn + 10000.1 and 10.1) with random weight and
bias, and saves with numpy.savez:
  bn1d.* / bn2d.*          the state_dict (weight, bias, running_mean,
                           running_var, num_batches_tracked)
  bn1d_eval_input/_output  a batch and the module's output in eval mode
  bn1d_train_input/_output one more training batch, the module's output, and
  bn1d_next_running_mean/_var the running statistics after it
and the same for bn2d.
"""
import numpy as np
import torch

torch.manual_seed(1)
arrays = {}


def record(name, module, shape, dtype, shift):
    module = module.to(dtype)
    with torch.no_grad():
        module.weight.copy_(torch.randn(module.weight.shape, dtype=dtype) * 0.7 + 1.1)
        module.bias.copy_(torch.randn(module.bias.shape, dtype=dtype) * 0.5 - 0.3)
    module.train()
    for _ in range(3):
        module(torch.randn(shape, dtype=dtype) * 3.7 + shift)
    for key, value in module.state_dict().items():
        arrays[f"{name}.{key}"] = value.detach().numpy().copy()  # not a view of the live buffer
    module.eval()
    x = torch.randn(shape, dtype=dtype) * 2.9 + shift + 0.2
    arrays[f"{name}_eval_input"] = x.numpy()
    arrays[f"{name}_eval_output"] = module(x).detach().numpy()
    module.train()
    x = torch.randn(shape, dtype=dtype) * 4.1 + shift - 0.4
    arrays[f"{name}_train_input"] = x.numpy()
    arrays[f"{name}_train_output"] = module(x).detach().numpy()
    arrays[f"{name}_next_running_mean"] = module.running_mean.numpy().copy()
    arrays[f"{name}_next_running_var"] = module.running_var.numpy().copy()


record("bn1d", torch.nn.BatchNorm1d(5), (7, 5), torch.float64, 10000.1)
# In float32 a mean of 1e4 leaves each centred value one ulp (1e-3) of
# round-off, more than the 1e-5 the comparison asks; 10.1 does not.
record("bn2d", torch.nn.BatchNorm2d(3), (2, 3, 5, 3), torch.float32, 10.1)
np.savez("pytorch-batchnorm.npz", **arrays)
np.save("numpy-float32-2x3.npy", np.arange(6, dtype=np.float32).reshape(2, 3) / 10 + 0.1)
print(sorted(arrays))
