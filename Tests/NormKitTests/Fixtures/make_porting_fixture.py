"""Makes pytorch-running.npz and pytorch-layers.npz, the fixtures of
Tests/NormKitTests/RunningStatisticsTests.swift and PyTorchLayersTests.swift,
and checks NormKit's exported state_dicts the other way.

    python3 make_porting_fixture.py            # writes both .npz files (committed)
    python3 make_porting_fixture.py --check D  # loads D/*.npz, written by the Swift tests
                                               # with NORMKIT_PYTORCH_STATE=D, into PyTorch

Modules, float64, eps 1e-5, random weight and bias, three training batches
(inputs 3.7 * randn + 10.1):
  cumulative.*  BatchNorm1d(5, momentum=None) on (7, 5): the state_dict after
                the three batches; cumulative_x{1,2,3} the batches,
                cumulative_y{1,2,3} the training outputs, cumulative_dx3,
                cumulative_dweight3, cumulative_dbias3 the gradients of the
                third batch's output against cumulative_dy3;
                cumulative_eval_input / _output one eval batch.
  untracked.*   BatchNorm2d(3, track_running_stats=False) on (2, 3, 4, 5): the
                state_dict (weight and bias only); untracked_eval_input /
                _output an eval batch (batch statistics) and untracked_eval_dx
                its input gradient against untracked_eval_dy.
pytorch-layers.npz, float64, random weight and bias (inputs 3.7 * randn + 10.1):
  <name>.*                 the state_dict of layernorm (nn.LayerNorm(6) on (4, 6)),
                           rmsnorm (nn.RMSNorm(6, eps=1e-5)), groupnorm (nn.GroupNorm(2, 6) on
                           (2, 6, 3, 4)), instancenorm (nn.InstanceNorm2d(3, affine=True) on
                           (2, 3, 4, 5)), layernorm2d (nn.LayerNorm([3, 4]) on (2, 5, 3, 4)),
                           rmsnorm3d (nn.RMSNorm(6, eps=1e-5) on (batch, tokens, D) = (2, 4, 6))
  bn1d_ncl.*, _x1.._x3, _y1.._y3, _eval_x, _eval_y, _weight0, _bias0
                           nn.BatchNorm1d(3, momentum=None) on (4, 3, 5): three training steps
                           and an eval batch, the state after them
  bn3d.*, groupnorm3d.*, _x, _y, _dy, _dx, _dweight, _dbias
                           nn.BatchNorm3d(2, track_running_stats=False) on (2, 2, 3, 4, 5) in
                           eval mode, and nn.GroupNorm(2, 4) on (2, 4, 3, 2, 5)
  instancenorm_tracked0.*, instancenorm_tracked.*, _x1.._x3, _y1.._y3, _dy3, _dx3, _dweight3,
  _dbias3, _eval_x, _eval_y, _eval_dy, _eval_dx, _eval_dweight, _eval_dbias
                           nn.InstanceNorm2d(3, affine=True, track_running_stats=True) on
                           (2, 3, 4, 5): the state before and after three training steps, the
                           third's gradients, and an eval batch (running statistics) with its
                           gradients
  layernorm_nobias.*, _x, _y, _dy, _dx, _dweight   nn.LayerNorm(6, bias=False) on (4, 6)
  groupnorm_noaffine_x, _y, _dy, _dx               nn.GroupNorm(2, 6, affine=False) on (2, 6, 3, 4)
  bn2d_noaffine.*, _x1.._x3, _y1.._y3, _dy3, _dx3, _eval_x, _eval_y, _eval_dy, _eval_dx
                           nn.BatchNorm2d(3, affine=False) on (2, 3, 4, 5): three training steps,
                           the state after them, an eval batch with its gradient
  <name>_x, _y, _dy, _dx, _dweight, _dbias   a training forward, an upstream gradient and
                           the gradients (no _dbias for rmsnorm)
Check mode: each D/<name>.npz holds a NormKit layer's pytorchState() and
D/<name>_input.npy, D/<name>_output.npy its inference input and output;
PyTorch's load_state_dict must accept the state (strict) and compute the
same output to 1e-6 relative.
"""
import sys

import numpy as np
import torch


def made(kind):
    if kind == "cumulative":
        return torch.nn.BatchNorm1d(5, momentum=None)
    if kind == "untracked":
        return torch.nn.BatchNorm2d(3, track_running_stats=False)
    if kind == "exponential1d":
        return torch.nn.BatchNorm1d(5)
    if kind == "layernorm":
        return torch.nn.LayerNorm(6)
    if kind == "rmsnorm":
        return torch.nn.RMSNorm(6, eps=1e-5)
    if kind == "groupnorm":
        return torch.nn.GroupNorm(2, 6)
    if kind == "instancenorm":
        return torch.nn.InstanceNorm2d(3, affine=True)
    if kind == "layernorm2d":
        return torch.nn.LayerNorm([3, 4])
    if kind == "rmsnorm3d":
        return torch.nn.RMSNorm(6, eps=1e-5)
    if kind == "bn1d_ncl":
        return torch.nn.BatchNorm1d(3, momentum=None)
    if kind == "bn3d":
        return torch.nn.BatchNorm3d(2, track_running_stats=False)
    if kind == "groupnorm3d":
        return torch.nn.GroupNorm(2, 4)
    if kind == "instancenorm_tracked":
        return torch.nn.InstanceNorm2d(3, affine=True, track_running_stats=True)
    if kind == "layernorm_nobias":
        return torch.nn.LayerNorm(6, bias=False)
    if kind == "groupnorm_noaffine":
        return torch.nn.GroupNorm(2, 6, affine=False)
    if kind == "bn2d_noaffine":
        return torch.nn.BatchNorm2d(3, affine=False)
    raise SystemExit(f"unknown module {kind}")


def make():
    torch.manual_seed(3)
    dtype = torch.float64
    arrays = {}
    bn = made("cumulative").to(dtype)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(5, dtype=dtype) * 0.7 + 1.1)
        bn.bias.copy_(torch.randn(5, dtype=dtype) * 0.5 - 0.3)
    bn.train()
    for step in (1, 2, 3):
        x = (torch.randn(7, 5, dtype=dtype) * 3.7 + 10.1).requires_grad_()
        y = bn(x)
        arrays[f"cumulative_x{step}"] = x.detach().numpy()
        arrays[f"cumulative_y{step}"] = y.detach().numpy()
        if step == 3:
            dy = torch.randn(7, 5, dtype=dtype)
            y.backward(dy)
            arrays["cumulative_dy3"] = dy.numpy()
            arrays["cumulative_dx3"] = x.grad.numpy()
            arrays["cumulative_dweight3"] = bn.weight.grad.numpy()
            arrays["cumulative_dbias3"] = bn.bias.grad.numpy()
    for key, value in bn.state_dict().items():
        arrays[f"cumulative.{key}"] = value.detach().numpy().copy()
    bn.eval()
    x = torch.randn(7, 5, dtype=dtype) * 2.9 + 10.3
    arrays["cumulative_eval_input"] = x.numpy()
    arrays["cumulative_eval_output"] = bn(x).detach().numpy()

    sbn = made("untracked").to(dtype)
    with torch.no_grad():
        sbn.weight.copy_(torch.randn(3, dtype=dtype) * 0.7 + 1.1)
        sbn.bias.copy_(torch.randn(3, dtype=dtype) * 0.5 - 0.3)
    for key, value in sbn.state_dict().items():
        arrays[f"untracked.{key}"] = value.detach().numpy().copy()
    sbn.eval()
    x = (torch.randn(2, 3, 4, 5, dtype=dtype) * 3.7 + 10.1).requires_grad_()
    y = sbn(x)
    dy = torch.randn(2, 3, 4, 5, dtype=dtype)
    y.backward(dy)
    arrays["untracked_eval_input"] = x.detach().numpy()
    arrays["untracked_eval_output"] = y.detach().numpy()
    arrays["untracked_eval_dy"] = dy.numpy()
    arrays["untracked_eval_dx"] = x.grad.numpy()
    assert set(sbn.state_dict()) == {"weight", "bias"}
    np.savez("pytorch-running.npz", **arrays)
    print("torch", torch.__version__, sorted(arrays))

    layers = {}
    for name, shape in [("layernorm", (4, 6)), ("rmsnorm", (4, 6)), ("groupnorm", (2, 6, 3, 4)),
                        ("instancenorm", (2, 3, 4, 5)), ("layernorm2d", (2, 5, 3, 4)),
                        ("rmsnorm3d", (2, 4, 6))]:
        module = made(name).to(dtype)
        with torch.no_grad():
            module.weight.copy_(torch.randn(module.weight.shape, dtype=dtype) * 0.7 + 1.1)
            if getattr(module, "bias", None) is not None:
                module.bias.copy_(torch.randn(module.bias.shape, dtype=dtype) * 0.5 - 0.3)
        for key, value in module.state_dict().items():
            layers[f"{name}.{key}"] = value.detach().numpy().copy()
        x = (torch.randn(shape, dtype=dtype) * 3.7 + 10.1).requires_grad_()
        y = module(x)
        dy = torch.randn(shape, dtype=dtype)
        y.backward(dy)
        layers[f"{name}_x"] = x.detach().numpy()
        layers[f"{name}_y"] = y.detach().numpy()
        layers[f"{name}_dy"] = dy.numpy()
        layers[f"{name}_dx"] = x.grad.numpy()
        layers[f"{name}_dweight"] = module.weight.grad.numpy()
        if getattr(module, "bias", None) is not None:
            layers[f"{name}_dbias"] = module.bias.grad.numpy()

    # Other ranks: BatchNorm1d(momentum=None) on (N, C, L), three training
    # steps and an eval batch; BatchNorm3d(track_running_stats=False) on
    # (N, C, D, H, W), eval (batch statistics) with its gradient; GroupNorm on
    # a 5-D input.
    bn = made("bn1d_ncl").to(dtype)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(3, dtype=dtype) * 0.7 + 1.1)
        bn.bias.copy_(torch.randn(3, dtype=dtype) * 0.5 - 0.3)
    layers["bn1d_ncl_weight0"] = bn.weight.detach().numpy().copy()
    layers["bn1d_ncl_bias0"] = bn.bias.detach().numpy().copy()
    for step in (1, 2, 3):
        x = torch.randn(4, 3, 5, dtype=dtype) * 3.7 + 10.1
        layers[f"bn1d_ncl_x{step}"] = x.numpy()
        layers[f"bn1d_ncl_y{step}"] = bn(x).detach().numpy()
    for key, value in bn.state_dict().items():
        layers[f"bn1d_ncl.{key}"] = value.detach().numpy().copy()
    bn.eval()
    x = torch.randn(4, 3, 5, dtype=dtype) * 2.9 + 10.3
    layers["bn1d_ncl_eval_x"] = x.numpy()
    layers["bn1d_ncl_eval_y"] = bn(x).detach().numpy()
    for name, shape in [("bn3d", (2, 2, 3, 4, 5)), ("groupnorm3d", (2, 4, 3, 2, 5))]:
        module = made(name).to(dtype)
        with torch.no_grad():
            module.weight.copy_(torch.randn(module.weight.shape, dtype=dtype) * 0.7 + 1.1)
            module.bias.copy_(torch.randn(module.bias.shape, dtype=dtype) * 0.5 - 0.3)
        for key, value in module.state_dict().items():
            layers[f"{name}.{key}"] = value.detach().numpy().copy()
        module.eval()
        x = (torch.randn(shape, dtype=dtype) * 3.7 + 10.1).requires_grad_()
        y = module(x)
        dy = torch.randn(shape, dtype=dtype)
        y.backward(dy)
        for suffix, value in [("x", x.detach()), ("y", y.detach()), ("dy", dy), ("dx", x.grad),
                              ("dweight", module.weight.grad), ("dbias", module.bias.grad)]:
            layers[f"{name}_{suffix}"] = value.numpy()
    # InstanceNorm2d with running statistics: the state before (running_var
    # starts at ones in PyTorch), three training steps, the third's gradients,
    # the state after, and an eval batch (running statistics) with its gradients.
    module = made("instancenorm_tracked").to(dtype)
    with torch.no_grad():
        module.weight.copy_(torch.randn(3, dtype=dtype) * 0.7 + 1.1)
        module.bias.copy_(torch.randn(3, dtype=dtype) * 0.5 - 0.3)
    for key, value in module.state_dict().items():
        layers[f"instancenorm_tracked0.{key}"] = value.detach().numpy().copy()
    for step in (1, 2, 3):
        x = (torch.randn(2, 3, 4, 5, dtype=dtype) * 3.7 + 10.1).requires_grad_()
        y = module(x)
        layers[f"instancenorm_tracked_x{step}"] = x.detach().numpy()
        layers[f"instancenorm_tracked_y{step}"] = y.detach().numpy()
        if step == 3:
            dy = torch.randn(2, 3, 4, 5, dtype=dtype)
            y.backward(dy)
            for suffix, value in [("dy3", dy), ("dx3", x.grad), ("dweight3", module.weight.grad),
                                  ("dbias3", module.bias.grad)]:
                layers[f"instancenorm_tracked_{suffix}"] = value.numpy().copy()
    for key, value in module.state_dict().items():
        layers[f"instancenorm_tracked.{key}"] = value.detach().numpy().copy()
    module.eval()
    module.weight.grad = None
    module.bias.grad = None
    x = (torch.randn(2, 3, 4, 5, dtype=dtype) * 2.9 + 10.3).requires_grad_()
    y = module(x)
    dy = torch.randn(2, 3, 4, 5, dtype=dtype)
    y.backward(dy)
    for suffix, value in [("eval_x", x.detach()), ("eval_y", y.detach()), ("eval_dy", dy),
                          ("eval_dx", x.grad), ("eval_dweight", module.weight.grad),
                          ("eval_dbias", module.bias.grad)]:
        layers[f"instancenorm_tracked_{suffix}"] = value.numpy().copy()
    # Without affine parameters (appended last: the random stream of every
    # array above is unchanged). LayerNorm(bias=False): a weight only;
    # GroupNorm(affine=False): nothing to learn; BatchNorm2d(affine=False):
    # running statistics only, three training steps and an eval batch.
    module = made("layernorm_nobias").to(dtype)
    with torch.no_grad():
        module.weight.copy_(torch.randn(6, dtype=dtype) * 0.7 + 1.1)
    for key, value in module.state_dict().items():
        layers[f"layernorm_nobias.{key}"] = value.detach().numpy().copy()
    x = (torch.randn(4, 6, dtype=dtype) * 3.7 + 10.1).requires_grad_()
    y = module(x)
    dy = torch.randn(4, 6, dtype=dtype)
    y.backward(dy)
    for suffix, value in [("x", x.detach()), ("y", y.detach()), ("dy", dy), ("dx", x.grad),
                          ("dweight", module.weight.grad)]:
        layers[f"layernorm_nobias_{suffix}"] = value.numpy().copy()
    module = made("groupnorm_noaffine").to(dtype)
    x = (torch.randn(2, 6, 3, 4, dtype=dtype) * 3.7 + 10.1).requires_grad_()
    y = module(x)
    dy = torch.randn(2, 6, 3, 4, dtype=dtype)
    y.backward(dy)
    for suffix, value in [("x", x.detach()), ("y", y.detach()), ("dy", dy), ("dx", x.grad)]:
        layers[f"groupnorm_noaffine_{suffix}"] = value.numpy().copy()
    module = made("bn2d_noaffine").to(dtype)
    module.train()
    for step in (1, 2, 3):
        x = (torch.randn(2, 3, 4, 5, dtype=dtype) * 3.7 + 10.1).requires_grad_()
        y = module(x)
        layers[f"bn2d_noaffine_x{step}"] = x.detach().numpy()
        layers[f"bn2d_noaffine_y{step}"] = y.detach().numpy()
        if step == 3:
            dy = torch.randn(2, 3, 4, 5, dtype=dtype)
            y.backward(dy)
            layers["bn2d_noaffine_dy3"] = dy.numpy().copy()
            layers["bn2d_noaffine_dx3"] = x.grad.numpy().copy()
    for key, value in module.state_dict().items():
        layers[f"bn2d_noaffine.{key}"] = value.detach().numpy().copy()
    module.eval()
    x = (torch.randn(2, 3, 4, 5, dtype=dtype) * 2.9 + 10.3).requires_grad_()
    y = module(x)
    dy = torch.randn(2, 3, 4, 5, dtype=dtype)
    y.backward(dy)
    for suffix, value in [("eval_x", x.detach()), ("eval_y", y.detach()), ("eval_dy", dy),
                          ("eval_dx", x.grad)]:
        layers[f"bn2d_noaffine_{suffix}"] = value.numpy().copy()
    np.savez("pytorch-layers.npz", **layers)
    print(sorted(layers))


def check(directory):
    import pathlib
    names = sorted(p.stem for p in pathlib.Path(directory).glob("*.npz"))
    assert names, f"no .npz in {directory}"
    for name in names:
        state = np.load(f"{directory}/{name}.npz")
        floats = [state[k].dtype for k in state.files if state[k].dtype.kind == "f"]
        dtype = torch.float32 if floats and floats[0] == np.float32 else torch.float64
        module = made(name).to(dtype)
        module.load_state_dict({k: torch.from_numpy(state[k]) for k in state.files}, strict=True)
        module.eval()
        x = torch.from_numpy(np.load(f"{directory}/{name}_input.npy"))
        expected = np.load(f"{directory}/{name}_output.npy")
        got = module(x).detach().numpy()
        error = np.abs(got - expected).max() / np.abs(expected).max()
        assert error < 1e-6, f"{name}: relative error {error}"
        print(f"{name}: load_state_dict(strict=True) accepted {sorted(state.files)}; eval output within {error:.1e}")


if len(sys.argv) == 3 and sys.argv[1] == "--check":
    check(sys.argv[2])
else:
    make()
