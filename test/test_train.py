"""Training end to end on a tiny synthetic dataset: outputs, resume equals uninterrupted, evaluation CLI."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch", reason="torch is in the [train] extra")

from geoloc_ros.core.errors import OutputExists  # noqa: E402
from geoloc_ros.models.config import ModelConfig  # noqa: E402
from geoloc_ros.models.crossview import read_checkpoint_manifest  # noqa: E402
from geoloc_ros.training.trainer import TrainConfig, Trainer  # noqa: E402

TINY = ModelConfig(name="tiny", freeze_blocks=15, ground_size=(64, 128), aerial_size=(64, 64), dim=64, layouts=4,
                   layout_channels=16, temporal_layers=1, temporal_heads=4, temporal_ff=64, max_frames=8)
CFG = TrainConfig(epochs=2, batch=8, max_train_sequences=48, max_val_sequences=40, variants=2, warmup_steps=2,
                  device="cpu")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, small_world):
    from geoloc_ros.sim.dataset import DatasetConfig, export_dataset

    out = tmp_path_factory.mktemp("train") / "ds"
    export_dataset(out, [("w11", small_world)], [], DatasetConfig(
        seq_len=4, drives_per_world=3, drive_length_m=500.0, tile_m=40.0, tile_px=64, cell_m=100.0, width=128,
        height=64, fractions=(0.6, 0.2, 0.2), seed=1), progress=False)
    return out


def fingerprint(p):
    return read_checkpoint_manifest(p)["manifest"]["fingerprint"]


def test_training_writes_checkpoints_history_and_resumes_exactly(tiny_dataset, tmp_path):
    torch.set_num_threads(1)
    a = Trainer(TINY, CFG, tiny_dataset, tmp_path / "a", progress=False).run("test")
    assert not a["paused"] and (tmp_path / "a" / "last.pt").is_file()
    hist = json.loads((tmp_path / "a" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2] and all("val" in h for h in hist)
    man = read_checkpoint_manifest(a["checkpoint"])["manifest"]
    assert man["preset"] == "tiny" and man["command"] == "test" and man["train"]["batch"] == 8
    # interrupted after the first step, then resumed: the same weights as the uninterrupted run
    b = Trainer(TINY, CFG, tiny_dataset, tmp_path / "b", progress=False).run("test", stop_after_s=0.0)
    assert b["paused"] and not (tmp_path / "b" / "last.pt").exists()
    b = Trainer(TINY, CFG, tiny_dataset, tmp_path / "b", progress=False).run("test")
    assert fingerprint(tmp_path / "b" / "last.pt") == fingerprint(tmp_path / "a" / "last.pt")


def test_a_run_directory_with_other_settings_is_not_overwritten(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    Trainer(TINY, CFG, tiny_dataset, out, progress=False).run("test", stop_after_s=0.0)
    other = TrainConfig(**{**CFG.__dict__, "batch": 4})
    with pytest.raises(OutputExists, match="other settings"):
        Trainer(TINY, other, tiny_dataset, out, progress=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    with pytest.raises(OutputExists, match="not a training run"):
        Trainer(TINY, CFG, tiny_dataset, mine, progress=False)


def test_cli_train_and_eval_retrieval(tiny_dataset, tmp_path, capsys):
    from geoloc_ros import cli

    preset = tmp_path / "tiny.yaml"
    preset.write_text("\n".join(f"{k}: {list(v) if isinstance(v, tuple) else v}" for k, v in TINY.to_dict().items()))
    out = tmp_path / "run"
    assert cli.main(["train", "--preset", str(preset), "--data", str(tiny_dataset), "--out", str(out), "--epochs", "1",
                     "--batch", "8", "--max-train-sequences", "32", "--device", "cpu"]) == 0
    assert "train: tiny on 32 sequences" in capsys.readouterr().out
    ck = out / ("best.pt" if (out / "best.pt").exists() else "last.pt")
    assert cli.main(["eval", "retrieval", "--checkpoint", str(ck), "--data", str(tiny_dataset), "--splits", "train",
                     "--max-sequences", "30",
                     "--lengths", "1", "2"]) == 0
    text = capsys.readouterr().out
    assert "centre frame" in text and "mean of frames" in text and text.strip().splitlines()[-1].startswith("eval:")
    rows = json.loads(ck.with_name(ck.stem + "_retrieval.json").read_text())["rows"]
    assert {r["frames"] for r in rows} == {1, 2, 4}
    assert all(0.0 <= r["R@1"] <= r["R@5"] <= r["R@10"] <= 100.0 for r in rows)
    assert cli.main(["eval", "retrieval", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(tiny_dataset)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_trains_every_encoder_family_and_a_second_stage_from_the_first(tiny_dataset, tmp_path, capsys):
    """Hybrid ViT (self-cross), multi-scale fusion (per-scale losses) and the pure ViT in two stages,
    through `geoloc train` with the GeoDTR switches, a shared feature cache and --init."""
    from geoloc_ros import cli
    from geoloc_ros.models.crossview import load_checkpoint

    torch.set_num_threads(1)
    common = dict(ground_size=[64, 128], dim=64, temporal_layers=1, temporal_heads=4, temporal_ff=64, max_frames=8,
                  vit_dim=32, vit_depth=2, vit_heads=4, vit_mlp=64)
    presets = {
        "t_sc": dict(encoder="hybrid_vit", freeze_blocks=15, attention="self_cross", aerial_size=[64, 64]),
        "t_ms": dict(encoder="multiscale", freeze_blocks=11, aerial_size=[64, 64], scale_loss_weights=[0.5, 0.5, 0.5]),
        "t_vit1": dict(encoder="vit", freeze_blocks=0, patch=16, aerial_size=[96, 96], aerial_view="tile"),
        "t_vit2": dict(encoder="vit", freeze_blocks=0, patch=16, aerial_size=[128, 128], aerial_view="tile",
                       zoom_keep=0.5625),
    }
    args = ["--data", str(tiny_dataset), "--epochs", "1", "--batch", "8", "--max-train-sequences", "16",
            "--device", "cpu", "--cache", str(tmp_path / "cache")]
    cks = {}
    for name, extra in presets.items():
        y = tmp_path / f"{name}.yaml"
        y.write_text("\n".join(f"{k}: {v}" for k, v in {"name": name, **common, **extra}.items()))
        flags = ["--counterfactual-weight", "0", "--mirror-prob", "0"] if name == "t_sc" else []
        if name == "t_vit2":
            flags += ["--init", str(cks["t_vit1"])]
        out = tmp_path / name
        assert cli.main(["train", "--preset", str(y), "--out", str(out)] + args + flags) == 0
        assert f"train: {name} on 16 sequences" in capsys.readouterr().out
        cks[name] = out / ("best.pt" if (out / "best.pt").exists() else "last.pt")
        model, man = load_checkpoint(cks[name])
        assert man["config"]["encoder"] == extra["encoder"] and not (out / "cache").exists()
    assert read_checkpoint_manifest(cks["t_sc"])["manifest"]["train"]["counterfactual_weight"] == 0.0
    assert read_checkpoint_manifest(cks["t_vit2"])["manifest"]["init"] == str(cks["t_vit1"])
    # the shared cache holds one train entry per distinct trunk (15 blocks, 11 blocks, raw with 96 / 128 tiles)
    assert len([p for p in (tmp_path / "cache").iterdir() if p.name.startswith("train_")]) == 4
    # a second stage from another family's checkpoint is refused with the reason
    assert cli.main(["train", "--preset", str(tmp_path / "t_vit2.yaml"), "--out", str(tmp_path / "bad"),
                     "--init", str(cks["t_sc"])] + args) == 2
    assert "does not fit preset t_vit2" in capsys.readouterr().err
