"""The Python API on plain timm models (no Hydra, no Lightning), adapters saved from a training run, and exports that
carry their evaluation preprocessing in timm's own terms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import peftlab
from peftlab.api import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from peftlab.methods.layers import AdapterLayer
from tests.data_fixtures import write_vtab_task

TINY = dict(img_size=32, patch_size=8, depth=2)
NAME = "vit_tiny_patch16_224"


def fresh_model(num_classes: int = 5, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)  # the same frozen weights every time, as a pretrained checkpoint would give
    return timm.create_model(NAME, pretrained=False, num_classes=num_classes, **TINY).eval()


def trained(model: torch.nn.Module) -> torch.nn.Module:
    """Moves every trainable tensor away from its init, as training would."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    return model


def test_the_readme_snippet_runs_and_prints_what_the_readme_shows(tmp_path, monkeypatch, capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    shown = section.split("Output:\n\n```\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out == shown


def test_options_are_validated_as_on_the_cli():
    with pytest.raises(ValueError, match="unknown method 'rlr'; did you mean rlrr"):
        peftlab.get_peft_model(fresh_model(), "rlr")
    with pytest.raises(ValueError, match="lora has no option 'rnak'; its options: .*rank"):
        peftlab.get_peft_model(fresh_model(), "lora", rnak=4)
    with pytest.raises(ValueError, match="rank"):
        peftlab.get_peft_model(fresh_model(), "lora", rank=0)


def test_the_shipped_defaults_apply_and_only_the_method_and_head_train(capsys):
    model = peftlab.get_peft_model(fresh_model(), "lora", rank=2)
    counts = peftlab.print_trainable_parameters(model)
    assert model.peft_config.rank == 2 and model.peft_config.targets  # targets from method/lora.yaml
    head = sum(p.numel() for p in model.get_classifier().parameters())
    added = counts["total"] - sum(p.numel() for p in fresh_model().parameters())  # the method's parameters
    assert counts["trainable"] == head + added > head
    assert f"trainable params: {counts['trainable']:,} || all params: {counts['total']:,}" in capsys.readouterr().out


def test_an_adapter_reloads_onto_a_fresh_model_exactly(tmp_path):
    model = trained(peftlab.get_peft_model(fresh_model(), "rlrr"))
    x = torch.randn(3, 3, 32, 32)
    peftlab.save_adapter(model, tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / ADAPTER_WEIGHTS)
    assert set(saved) == {n for n, p in model.named_parameters() if p.requires_grad}  # method tensors + head only
    assert json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())["method"] == "rlrr"
    loaded = peftlab.load_adapter(fresh_model(), tmp_path / "adapter")
    assert torch.equal(loaded(x), model(x))


def test_loading_is_strict(tmp_path):
    peftlab.save_adapter(trained(peftlab.get_peft_model(fresh_model(), "rlrr")), tmp_path / "adapter")
    with pytest.raises(ValueError, match="5-class head but the model has 3: create it with num_classes=5"):
        peftlab.load_adapter(fresh_model(num_classes=3), tmp_path / "adapter")
    state = load_file(tmp_path / "adapter" / ADAPTER_WEIGHTS)
    save_file(dict(list(state.items())[1:]), tmp_path / "adapter" / ADAPTER_WEIGHTS)
    with pytest.raises(KeyError, match="missing 1"):
        peftlab.load_adapter(fresh_model(), tmp_path / "adapter")


def test_merge_and_unload_gives_a_plain_timm_model():
    model = trained(peftlab.get_peft_model(fresh_model(), "rlrr"))
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    plain = peftlab.merge_and_unload(model)
    assert not any(isinstance(m, AdapterLayer) for m in plain.modules()) and not hasattr(plain, "peft_config")
    torch.testing.assert_close(plain(x), expected, rtol=1e-4, atol=1e-4)
    assert set(plain.state_dict()) == set(fresh_model().state_dict())


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    """One short training run on a small task of your own (VTAB layout), shared by the tests below."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from peftlab.train import train

    out = tmp_path_factory.mktemp("api_run")
    write_vtab_task(out / "mine" / "shapes", num_classes=3, counts={"train800": 48, "val200": 16, "test": 24})
    GlobalHydra.instance().clear()
    with initialize_config_module("peftlab.conf", version_base="1.3"):
        cfg = compose("train", overrides=["data=vtab_layout", "data.task=shapes", "data.num_classes=3",
                                          f"data.root={out / 'mine'}", "data.image_size=32", "trainer.max_epochs=1",
                                          "data.cache=none"])  # fmt: skip
    with open_dict(cfg):
        cfg.paths.output_dir, cfg.paths.log_dir = str(out / "run"), str(out)
    GlobalHydra.instance().clear()
    assert train(cfg).status == "complete"
    return cfg, out / "run" / "checkpoints" / "last.ckpt"


def trained_model(cfg, ckpt):
    from peftlab.build import build
    from peftlab.checkpoint import load_checkpoint, model_state
    from peftlab.methods.state import load_trainable_state_dict

    model = build(cfg, loggers=False).model.eval()
    load_trainable_state_dict(model, model_state(load_checkpoint(ckpt)))
    return model


def timm_model(cfg, **kwargs):
    torch.manual_seed(cfg.seed)  # the run's random-init backbone; a pretrained one needs no seed
    size = {"img_size": cfg.data.image_size, **cfg.backbone.model_kwargs}  # the backbone is built at the task's size
    return timm.create_model(cfg.backbone.name, num_classes=cfg.data.num_classes, **size, **kwargs)


@pytest.mark.slow
def test_an_adapter_exported_from_a_training_run_reproduces_it(run, make_cfg, tmp_path):
    from peftlab.export import export

    cfg, ckpt = run
    export(make_cfg(f"ckpt_path={ckpt}", f"out={tmp_path / 'adapter'}", "adapter=true", config_name="export"))
    loaded = peftlab.load_adapter(timm_model(cfg).eval(), tmp_path / "adapter")
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(loaded(x), trained_model(cfg, ckpt)(x))


@pytest.mark.slow
def test_an_export_evaluates_through_timms_own_transform(run, make_cfg, tmp_path):
    from PIL import Image

    from peftlab.build import build_datamodule
    from peftlab.export import export

    cfg, ckpt = run
    out = tmp_path / "merged.safetensors"
    export(make_cfg(f"ckpt_path={ckpt}", f"out={out}", config_name="export"))
    info = json.loads(out.with_suffix(".json").read_text())
    overlay = dict(info["pretrained_cfg"], file=str(out), custom_load=False)
    model = timm_model(cfg, pretrained=True, pretrained_cfg_overlay=overlay).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    data = build_datamodule(cfg)
    data.use_normalization(*(timm.data.resolve_data_config(model=trained_model(cfg, ckpt))[k] for k in ("mean", "std")))
    data.setup()
    images = [Image.open(p).convert("RGB") for p in data.eval_data.paths]
    ours = torch.cat([x for x, _ in data.test_dataloader()])
    theirs = torch.stack([transform(image) for image in images])
    torch.testing.assert_close(theirs, ours)  # the training-time evaluation transform, reproduced by timm
    with torch.no_grad():
        torch.testing.assert_close(model(theirs), trained_model(cfg, ckpt)(ours), rtol=1e-4, atol=1e-4)
