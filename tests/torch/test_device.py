"""Where the PyTorch port computes (``ptycho.torch.device``): names, missing GPUs, and a forward
and backward pass that creates no tensor on a fixed device.

No GPU is needed: PyTorch's ``meta`` device stands in for a GPU. Every op of the model's step
runs there, and an op that made a tensor on the CPU would fail with "Tensor on device meta
is not on the expected device cpu" (the translation's sampling grid once did).
"""
import pytest
import torch

from ptycho import determinism
from ptycho.spec import ModelSpec
from ptycho.torch import device as torch_device
from ptycho.torch import optim, training
from ptycho.torch.model import build_model, load_model, save_weights
from runners.bench import quality as bench_quality


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:0", "cuda:12", "auto"])
def test_device_names_of_every_form_pass_the_check(name):
    assert torch_device.check_device_name(name) == name


@pytest.mark.parametrize("name", ["gpu", "CPU", "cuda:", "cuda:x", "cuda 0", "", None, 0, "meta"])
def test_other_device_names_are_refused_with_the_choices(name):
    with pytest.raises(ValueError, match=r"device: expected one of cpu, cuda, cuda:<index>, auto; got"):
        torch_device.check_device_name(name)


def test_a_missing_gpu_is_an_error_never_a_silent_cpu_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert torch_device.resolve_device(None) == torch.device("cpu")
    assert torch_device.resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=rf"device '{name}': this torch build .* sees no CUDA GPU"):
            torch_device.resolve_device(name)


def test_a_gpu_index_past_the_machines_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert torch_device.resolve_device("auto") == torch.device("cuda")
    assert torch_device.resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"device 'cuda:2': this machine has 2 CUDA GPU\(s\), numbered 0..1"):
        torch_device.resolve_device("cuda:2")


def test_build_model_places_the_model_and_refuses_a_missing_gpu(probe, monkeypatch):
    spec = ModelSpec(gridsize=1, n_filters_scale=1)
    assert build_model(spec, probe, "cpu").device == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        build_model(spec, probe, "cuda")


def test_a_training_step_runs_wholly_on_the_models_device(probe):
    """Forward, loss, backward and the Adam step on the meta device, gridsize 2 with the canvas
    (the translations, the reassembly and the diffraction)."""
    spec = ModelSpec(gridsize=2, n_filters_scale=1, canvas_size=80)
    model = build_model(spec, probe).to("meta")
    assert model.device == torch.device("meta")
    inputs = {"diffraction": torch.ones(2, 64, 64, 4, device="meta"),
              "coords_relative": torch.zeros(2, 1, 2, 4, device="meta")}
    outputs = model(**inputs)
    assert {value.device.type for value in outputs.values()} == {"meta"}
    loss = training.loss_for(model)({"intensity": torch.ones(2, 64, 64, 4, device="meta")}, outputs)["loss"]
    adam = optim.KerasAdam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss.backward()
    adam.step()
    assert all(p.device.type == "meta" for p in model.parameters())


def test_batches_go_to_the_device_asked_for(small_dataset, groups_by_gridsize, intensity_scale):
    from ptycho.data.batches import group_data

    data = group_data(small_dataset[0], groups_by_gridsize[2], intensity_scale, with_object=True)
    inputs, targets = training.batch_tensors(data, slice(0, 2), torch.device("meta"))
    assert {t.device.type for t in (*inputs.values(), *targets.values())} == {"meta"}
    inputs, targets = training.batch_tensors(data, slice(0, 2))
    assert {t.device.type for t in (*inputs.values(), *targets.values())} == {"cpu"}


def test_saved_weights_are_cpu_tensors_and_load_onto_the_device_asked_for(probe, tmp_path):
    spec = ModelSpec(gridsize=1, n_filters_scale=1)
    model = build_model(spec, probe, "cpu")
    path = save_weights(model, tmp_path)
    assert {value.device.type for value in torch.load(path, weights_only=True).values()} == {"cpu"}
    loaded = load_model(spec, probe, path, "cpu")
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_configure_torch_reports_the_device_and_strict_determinism_on_the_cpu():
    state = determinism.configure_torch(1, "cpu")
    assert state["device"] == "cpu" and state["op_determinism"] == "on"
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    with pytest.raises(ValueError, match="device: expected one of"):
        determinism.configure_torch(1, "tpu")


@pytest.mark.parametrize("argv, message", [
    (["--device", "gpu"], "--device: device: expected one of cpu, cuda, cuda:<index>, auto; got 'gpu'"),
    (["--backend", "tensorflow", "--device", "cuda"], "--device cuda applies to --backend pytorch"),
])
def test_the_quality_study_refuses_a_bad_device_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        bench_quality.parse_args(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_the_quality_study_trains_on_the_loss_asked_for():
    assert bench_quality.parse_args([]).loss == ["poisson_nll"] and bench_quality.parse_args([]).device == "cpu"
    (loss,) = bench_quality.parse_args(["--loss", "diffraction_mae"]).loss
    spec = ModelSpec(gridsize=1, **bench_quality.LOSSES[loss])
    assert (spec.nll_weight, spec.diffraction_mae_weight) == (0.0, 1.0)


def test_the_quality_study_stops_before_any_work_when_the_gpu_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_quality.main(["--device", "cuda", "--out", str(tmp_path / "out")]) == 2
    assert "bench_quality: device 'cuda': this torch build" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
