"""`vlexp export-model format=open_clip`: a stock open_clip loads the trained model.

open_clip is the oracle: it builds its own model from the exported folder (``local-dir:``)
or from the weights file under an architecture name, and its embeddings must equal
vlexp's to 1e-5. No test opens a network connection.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from vlexp.config import ConfigError
from vlexp.encoders import ENCODERS
from vlexp.encoders.open_clip_tower import tiny_open_clip_config

ROOT = Path(__file__).resolve().parents[2]
TINY_NAME = "vlexp-export-tiny"
CAPTIONS = ["a red cube", "two dogs on the grass", "a small blue star", "x"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory) -> str:
    """A small architecture registered in open_clip's model-config registry."""
    folder = tmp_path_factory.mktemp("oc_cfg")
    cfg = tiny_open_clip_config(
        embed_dim=24, image_size=32, vision_width=32, vision_layers=2, vision_head_width=16,
        text_width=32, text_layers=2, text_heads=2, context_length=16,
    )  # fmt: skip
    (folder / f"{TINY_NAME}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(str(folder))
    return TINY_NAME


def _trained(encoder: dict) -> torch.nn.Module:
    """The model after two AdamW steps on a CLIP loss (weights away from their init)."""
    torch.manual_seed(0)
    model = ENCODERS.build(encoder).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    tokens = model.tokenize(CAPTIONS)
    images = torch.randn(len(CAPTIONS), 3, model.image_size, model.image_size)
    for _ in range(2):
        image = model.encode_image(images)
        text = model.encode_text(tokens["input_ids"], tokens["attention_mask"])
        logits = model.logit_scale() * image @ text.T
        target = torch.arange(len(CAPTIONS))
        loss = F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _checkpoint(model: torch.nn.Module, encoder: dict, path: Path) -> Path:
    """A checkpoint laid out as training writes it (weights + the run's config)."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    config = {"encoder": encoder, "seed": 0}
    torch.save(
        {"state_dict": state, "global_step": 2, "hyper_parameters": {"config": config}}, path
    )
    return path


def _export_cfg(ckpt: Path, out: Path, **extra: object):
    base = {"ckpt": str(ckpt), "config": None, "run_dir": None, "out_dir": str(out)}
    return OmegaConf.create({**base, "format": "open_clip", "overwrite": False, **extra})


@pytest.fixture(scope="module")
def exported(tiny_name, tmp_path_factory):
    """A trained open_clip-encoder model (last text block and image tower training),
    its checkpoint and its export."""
    from vlexp.cli.export_model import check_options, export_model

    work = tmp_path_factory.mktemp("export")
    encoder = {"name": "open_clip", "model": tiny_name, "text": {"freeze": "last_n"}}
    model = _trained(encoder)
    ckpt = _checkpoint(model, encoder, work / "last.ckpt")
    cfg = _export_cfg(ckpt, work / "out")
    check_options(cfg)
    written = export_model(cfg)
    return model, ckpt, written


def _embeddings(encode_image, encode_text, tokens) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return encode_image(images), encode_text(tokens)


def test_open_clip_loads_the_folder_with_vlexp_embeddings(exported):
    model, _, written = exported
    ref, _, preprocess = open_clip.create_model_and_transforms(
        f"local-dir:{written['config'].parent}"
    )
    ref.eval()
    ids = open_clip.get_tokenizer(TINY_NAME)(CAPTIONS)
    torch.testing.assert_close(model.tokenize(CAPTIONS)["input_ids"], ids)
    want = _embeddings(model.encode_image, lambda t: model.encode_text(t), ids)
    got = _embeddings(lambda x: ref.encode_image(x, True), lambda t: ref.encode_text(t, True), ids)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5)
    assert float(ref.logit_scale) == pytest.approx(float(model.log_logit_scale), abs=1e-6)
    normalize = [t for t in preprocess.transforms if type(t).__name__ == "Normalize"][0]
    assert tuple(normalize.mean) == pytest.approx(model.image_mean)


def test_weights_file_loads_under_the_architecture_name(exported):
    model, _, written = exported
    ref = open_clip.create_model(TINY_NAME, pretrained=str(written["weights"])).eval()
    ids = open_clip.get_tokenizer(TINY_NAME)(CAPTIONS)
    with torch.no_grad():
        torch.testing.assert_close(
            ref.encode_text(ids, True), model.encode_text(ids), atol=1e-5, rtol=0
        )


def test_training_from_the_export_logs_what_matched_and_starts_where_it_ended(exported, caplog):
    model, _, written = exported
    with caplog.at_level(logging.INFO, logger="vlexp"):
        again = ENCODERS.build(
            {"name": "open_clip", "model": TINY_NAME, "pretrained": str(written["weights"])}
        ).eval()
    lines = [r.getMessage() for r in caplog.records if "matched" in r.getMessage()]
    n = len(open_clip.create_model(TINY_NAME).state_dict())
    assert len(lines) == 1 and f"{n} tensors matched, 0 missing, 0 unexpected" in lines[0]
    ids = model.tokenize(CAPTIONS)["input_ids"]
    want = _embeddings(model.encode_image, lambda t: model.encode_text(t), ids)
    got = _embeddings(again.encode_image, lambda t: again.encode_text(t), ids)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6)


def test_options_and_encoders_are_checked_in_one_line(exported, tmp_path):
    from vlexp.cli.export_model import check_options, export_model

    _, ckpt, written = exported
    with pytest.raises(ConfigError, match=r"format=onnx: expected one of open_clip, hf"):
        check_options(_export_cfg(ckpt, tmp_path, format="onnx"))
    with pytest.raises(ConfigError, match=r"format=hf: .*has no Hugging Face text tower"):
        export_model(_export_cfg(ckpt, tmp_path / "h", format="hf"))
    with pytest.raises(ConfigError, match=r"already holds open_clip_config\.json.*overwrite=true"):
        check_options(_export_cfg(ckpt, written["config"].parent))
    check_options(_export_cfg(ckpt, written["config"].parent, overwrite=True))
    with pytest.raises(ConfigError, match=r"^ckpt is required: give it on the command line"):
        check_options(_export_cfg(Path("???"), tmp_path))
    tiny = {"name": "tiny", "embed_dim": 16, "image_size": 16, "vision_depth": 1, "text_depth": 1}
    other = _checkpoint(ENCODERS.build(tiny), tiny, tmp_path / "tiny.ckpt")
    with pytest.raises(
        ConfigError, match=r"trained with encoder=tiny; only encoder=open_clip"
    ) as e:
        export_model(_export_cfg(other, tmp_path / "o"))
    assert "\n" not in str(e.value) and not (tmp_path / "o").exists()


def test_the_command_exports_and_refuses_in_one_line(exported, tmp_path):
    _, ckpt, _ = exported
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "vlexp.cli.main", "export-model", f"ckpt={ckpt}"]
    hydra_dir = f"hydra.run.dir={tmp_path / 'hydra'}"
    bad = subprocess.run([*cmd, f"out_dir={tmp_path}", "format=onnx", hydra_dir], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "error: format=onnx: expected one of open_clip, hf"
    )


def test_hf_format_text_tower_loads_with_transformers(tmp_path):
    """transformers' AutoModel + AutoTokenizer on DIR/text, vlexp's mean pooling and the
    exported projection give vlexp's text embeddings."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from vlexp.cli.export_model import export_model

    tiny = {"name": "tiny", "embed_dim": 16, "image_size": 16, "vision_depth": 1, "text_depth": 1}
    model = _trained(tiny)
    ckpt = _checkpoint(model, tiny, tmp_path / "tiny.ckpt")
    written = export_model(_export_cfg(ckpt, tmp_path / "hf", format="hf"))
    bert = AutoModel.from_pretrained(str(written["text"]), local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(str(written["text"]), local_files_only=True)
    heads = load_file(str(written["heads"]))
    batch = tok(CAPTIONS, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden.last_hidden_state * mask).sum(1) / mask.sum(1)
        got = F.normalize(pooled @ heads["text_proj.weight"].T, dim=-1)
        want = model.encode_text(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert float(heads["logit_scale"]) == float(model.log_logit_scale)
    towers = json.loads(written["towers"].read_text())
    assert towers["text"]["pooling"] == "mean" and towers["image"]["size"] == 16
