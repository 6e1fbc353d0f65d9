"""Zero-shot `recurvlm-eval model=<config>` on the pretrained-model configs (clip_l14_336,
siglip_b16, recurrent_clip_l14_336, llava_1_5_7b), each pointed by `model.name_or_path` at a
tiny random checkpoint with a tiny tokenizer saved beside it and loaded offline; scores equal
the Hugging Face models' own on the same items and prompts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    CLIPConfig,
    CLIPModel,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipModel,
)

from recurvlm.data.interchange import sample_id, write_folder
from recurvlm.data.stimuli import generate
from recurvlm.eval import evaluate
from recurvlm.models.clip import CLIPPair
from recurvlm.models.tokenizer import HFTokenizer, WordTokenizer

TASKS = {"maze": ("easy", "hard"), "counting": ("easy", "hard")}
N_PER_LEVEL = 2
VISION = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64)  # 32 px: the 64-px stimuli are resized, as for real towers
TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
PROMPT_WORDS = ["user", "assistant", "answer", "the", "question", "using", "a", "single", "word", "or", "phrase"]


def fast_tokenizer(path, *, specials: list[str], template: str, pad: str, bos: str | None, eos: str,
                   image: str | None = None) -> PreTrainedTokenizerFast:
    """A word-level HF fast tokenizer over the task words (lowercased, punctuation split off),
    written to `path`: enough of a real tokenizer for HFTokenizer and AutoTokenizer offline."""
    words = [w for w in WordTokenizer.for_tasks(extra_words=PROMPT_WORDS).tokens[4:] if w not in specials]
    vocab = {w: i for i, w in enumerate(["[UNK]", *words, *specials])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    special_in_template = [s for s in (bos, eos) if s and s in template]
    tok.post_processor = processors.TemplateProcessing(single=template,
                                                       special_tokens=[(s, vocab[s]) for s in special_in_template])
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token=pad, bos_token=bos,
                                   eos_token=eos, extra_special_tokens={"image_token": image} if image else None)
    fast.save_pretrained(path)
    return fast


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Random offsets on every weight, so no layernorm is an identity and no bias zero."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """config name -> (directory holding a tiny random checkpoint and its tokenizer, HF model)."""
    torch.manual_seed(0)
    out = {}
    path = tmp_path_factory.mktemp("clip")
    tok = fast_tokenizer(path, specials=["<|startoftext|>", "<|endoftext|>"], template="<|startoftext|> $A <|endoftext|>",
                         pad="<|endoftext|>", bos="<|startoftext|>", eos="<|endoftext|>")
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = CLIPConfig(text_config=dict(TEXT, vocab_size=len(tok), max_position_embeddings=77, eos_token_id=eos,
                                      bos_token_id=tok.bos_token_id, pad_token_id=eos),
                     vision_config=VISION, projection_dim=16)
    out["clip"] = (path, perturbed(CLIPModel(cfg)))
    out["clip"][1].save_pretrained(path)

    path = tmp_path_factory.mktemp("siglip")
    tok = fast_tokenizer(path, specials=["</s>"], template="$A </s>", pad="</s>", bos=None, eos="</s>")
    eos = tok.convert_tokens_to_ids("</s>")
    cfg = SiglipConfig(text_config=dict(TEXT, vocab_size=len(tok), max_position_embeddings=64, eos_token_id=eos,
                                        pad_token_id=eos), vision_config=VISION)
    out["siglip"] = (path, perturbed(SiglipModel(cfg)))
    out["siglip"][1].save_pretrained(path)

    path = tmp_path_factory.mktemp("llava")
    tok = fast_tokenizer(path, specials=["<s>", "</s>", "<pad>", "<image>"], template="<s> $A", pad="<pad>",
                         bos="<s>", eos="</s>", image="<image>")
    vc = dict(VISION, model_type="clip_vision_model", projection_dim=16)
    tc = LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=256,
                     pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg = LlavaConfig(vision_config=vc, text_config=tc, image_token_index=tok.convert_tokens_to_ids("<image>"),
                      projector_hidden_act="gelu", vision_feature_layer=-2, vision_feature_select_strategy="default",
                      image_seq_length=16)
    out["llava"] = (path, perturbed(LlavaForConditionalGeneration(cfg)))
    out["llava"][1].save_pretrained(path)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny interchange folder: two tasks at two levels, as recurvlm-stimuli writes them."""
    samples = [(sample_id(task, 7, i + 100 * j), generate(task, 7, i, level))
               for task, levels in TASKS.items() for j, level in enumerate(levels) for i in range(N_PER_LEVEL)]
    return write_folder(samples, tmp_path_factory.mktemp("data") / "folder")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


CONFIGS = {"clip_l14_336": "clip", "siglip_b16": "siglip", "recurrent_clip_l14_336": "clip",
           "llava_1_5_7b": "llava", "recurrent_llava_1_5_7b": "llava"}
# the tiny towers have 2 blocks, not ViT-L's 24: feedback enters the second
SIZE = {"recurrent_clip_l14_336": ["model.net.top_down.layers=[1]", "model.net.top_down.state_dim=16"],
        "recurrent_llava_1_5_7b": ["model.net.top_down.layers=[0]", "model.net.top_down.state_dim=16"]}


def run_zero_shot(compose_cfg, model: str, path, folder, out, *extra: str) -> dict:
    cfg = compose_cfg("eval", [f"model={model}", f"model.name_or_path={path}", f"data.path={folder}",
                               "data.batch_size=3", "trainer.enable_progress_bar=false", *extra], out)
    out.mkdir(parents=True, exist_ok=True)
    return evaluate(cfg)


def predictions(out) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}


@pytest.mark.parametrize("model", CONFIGS)
def test_zero_shot_eval_writes_metrics_for_every_item(model, checkpoints, folder, compose_cfg, tmp_path, capsys):
    path, _ = checkpoints[CONFIGS[model]]
    metrics = run_zero_shot(compose_cfg, model, path, folder, tmp_path / "eval", *SIZE.get(model, []))
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["accuracy"] == metrics["accuracy"]
    assert set(written["per_task"]) == set(TASKS)
    assert set(written["per_difficulty"]) == {f"{t}/{lv}" for t, levels in TASKS.items() for lv in levels}
    assert all(v["n"] == N_PER_LEVEL for v in written["per_difficulty"].values())
    n_items = len((folder / "annotations.jsonl").read_text().splitlines())
    assert written["n"] == n_items == len(predictions(tmp_path / "eval"))
    assert written["checkpoint"].startswith("zero-shot") and str(path) in written["checkpoint"]
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"accuracy: {metrics['accuracy']:.4f}"


def folder_items(folder):
    for line in (folder / "annotations.jsonl").read_text().splitlines():
        rec = json.loads(line)
        image = torch.from_numpy(np.asarray(Image.open(folder / rec["image"]).convert("RGB"))).permute(2, 0, 1)
        yield rec, image[None]


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_zero_shot_clip_scores_equal_hugging_face(family, checkpoints, folder, compose_cfg, tmp_path):
    """predictions.jsonl's choice probabilities are the softmax of HF's logits_per_image over
    the choice texts "<question> <answer>", tokenized by the checkpoint's own tokenizer."""
    path, hf = checkpoints[family]
    model = "clip_l14_336" if family == "clip" else "siglip_b16"
    run_zero_shot(compose_cfg, model, path, folder, tmp_path / "eval")
    got = predictions(tmp_path / "eval")
    pair = CLIPPair.from_pretrained(str(path))  # only for its pixel preprocessing
    tok = HFTokenizer(str(path))
    context = 77 if family == "clip" else 64
    for rec, image in folder_items(folder):
        ids, mask = tok.encode([f"{rec['question']} {c}" for c in rec["choices"]], context_length=context)
        with torch.no_grad():  # SigLIP was trained without a padding mask
            logits = hf(input_ids=ids, pixel_values=pair.preprocess(image),
                        attention_mask=mask if family == "clip" else None).logits_per_image[0]
        want = logits.softmax(-1).tolist()
        assert got[rec["id"]]["probs"] == pytest.approx(want, abs=2e-6)
        assert got[rec["id"]]["prediction"] == rec["choices"][int(logits.argmax())]


def test_zero_shot_llava_scores_equal_hugging_face_llava(checkpoints, folder, compose_cfg, tmp_path):
    """With the llava_1_5_7b prompt template, each choice's score is the log-likelihood that
    LlavaForConditionalGeneration gives its answer tokens after "USER: <image>\\n<question> ...
    ASSISTANT:", the <image> placeholder expanded in place to the image features."""
    path, hf = checkpoints["llava"]
    run_zero_shot(compose_cfg, "llava_1_5_7b", path, folder, tmp_path / "eval")
    got = predictions(tmp_path / "eval")
    prompt = compose_cfg("eval", ["model=llava_1_5_7b"], tmp_path).model.prompt
    assert prompt.startswith("USER: <image>\n")
    tok = HFTokenizer(str(path), require_eos=False).tokenizer
    image_id = hf.config.image_token_index
    pair = instantiate(compose_cfg("eval", ["model=llava_1_5_7b", f"model.name_or_path={path}"], tmp_path).model.net)
    n_image = pair.num_image_tokens

    def expand(ids: list[int]) -> list[int]:  # what LlavaProcessor does to "<image>"
        at = ids.index(image_id)
        return ids[:at] + [image_id] * n_image + ids[at + 1 :]

    for rec, image in folder_items(folder):
        question = expand(tok(prompt.replace("{question}", rec["question"]))["input_ids"])
        scores = []
        for choice in rec["choices"]:
            ids = expand(tok(prompt.replace("{question}", rec["question"]) + " " + choice)["input_ids"])
            assert ids[: len(question)] == question
            with torch.no_grad():
                logp = hf(input_ids=torch.tensor([ids]), pixel_values=pair.preprocess(image)).logits[0].log_softmax(-1)
            scores.append(sum(float(logp[i - 1, ids[i]]) for i in range(len(question), len(ids))))
        want = torch.tensor(scores).softmax(-1).tolist()
        assert got[rec["id"]]["probs"] == pytest.approx(want, abs=1e-5)


def test_prompt_with_an_image_token_the_tokenizer_does_not_make_fails(checkpoints, folder, compose_cfg, tmp_path):
    path, _ = checkpoints["clip"]  # a word-level tokenizer without "<image>", paired with a llava checkpoint
    llava_path, _ = checkpoints["llava"]
    with pytest.raises(ValueError, match="does not encode it as the model's image token"):
        run_zero_shot(compose_cfg, "llava_1_5_7b", llava_path, folder, tmp_path / "eval",
                      f"model.tokenizer.name_or_path={path}")


def test_eval_needs_exactly_one_of_checkpoint_and_model(checkpoints, folder, compose_cfg, tmp_path):
    path, _ = checkpoints["clip"]
    for overrides in ([f"data.path={folder}"],
                      [f"data.path={folder}", "model=clip_l14_336", f"model.name_or_path={path}", "ckpt_path=x.ckpt"]):
        with pytest.raises(SystemExit, match="exactly one of ckpt_path=<checkpoint>.*or model=<config>"):
            evaluate(compose_cfg("eval", overrides, tmp_path))


def test_prompt_template_needs_one_question_slot(checkpoints, folder, compose_cfg, tmp_path):
    path, _ = checkpoints["clip"]
    with pytest.raises(ValueError, match=r"model.prompt='a picture' must contain \{question\} exactly once"):
        run_zero_shot(compose_cfg, "clip_l14_336", path, folder, tmp_path / "eval", "model.prompt='a picture'")


def test_every_pretrained_model_config_is_tested_here():
    """test_configs.py leaves configs with `name_or_path` to this file: all must be in CONFIGS."""
    from test_configs import GROUPS, pretrained

    assert {o for o in GROUPS["model"] if pretrained(o)} == set(CONFIGS)


def test_checkpoints_carry_the_prompt_and_recurvlm_eval_reads_questions_alike(checkpoints, folder, compose_cfg,
                                                                                train_cfg, tmp_path):
    """A model trained with a prompt template (recurvlm-train stores model.prompt in the
    checkpoint) is evaluated with it: the checkpoint of an untrained llava_1_5_7b scores every
    item exactly as the zero-shot path does."""
    from recurvlm.eval import zero_shot_module
    from recurvlm.train import build_module

    path, _ = checkpoints["llava"]
    cfg = train_cfg("model=llava_1_5_7b", f"model.name_or_path={path}", tiny=False)
    module, tokenizer, _, prompt = zero_shot_module(cfg.model)
    assert build_module(cfg, module.model, tokenizer).model_config["prompt"] == prompt == cfg.model.prompt
    ckpt = tmp_path / "untrained.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in module.model.state_dict().items()},
                "recurvlm": {"family": "clip", "model_config": module.model_config, "tokenizer": tokenizer.to_dict()}},
               ckpt)
    zero_shot = tmp_path / "zero_shot"
    run_zero_shot(compose_cfg, "llava_1_5_7b", path, folder, zero_shot)
    from_ckpt = tmp_path / "from_ckpt"
    from_ckpt.mkdir()
    evaluate(compose_cfg("eval", [f"ckpt_path={ckpt}", f"data.path={folder}", "data.batch_size=3",
                                  "trainer.enable_progress_bar=false"], from_ckpt))
    assert predictions(from_ckpt) == predictions(zero_shot)


def test_instruct_lora_wraps_a_pretrained_llava_after_its_weights_load(checkpoints, folder, train_cfg):
    """stage=instruct_lora on llava_1_5_7b: from_pretrained loads every weight, then the pair wraps
    its LM in LoRA adapters; only the projector and the adapters train, and at the start
    (lora_B = 0) the wrapped pair scores exactly as the pretrained one."""
    from hydra.utils import instantiate

    from recurvlm.train import build_model
    from recurvlm.training.matching import param_groups

    path, _ = checkpoints["llava"]
    plain_cfg = train_cfg("model=llava_1_5_7b", f"model.name_or_path={path}", tiny=False)
    lora_cfg = train_cfg("model=llava_1_5_7b", f"model.name_or_path={path}", "stage=instruct_lora", tiny=False)
    tok = instantiate(plain_cfg.model.tokenizer)
    plain = build_model(plain_cfg.model.net, tok, prompt=plain_cfg.model.get("prompt")).eval()
    wrapped = build_model(lora_cfg.model.net, tok, prompt=lora_cfg.model.get("prompt")).eval()
    groups = param_groups(wrapped, 0.0, 1e-3, dict(lora_cfg.model.lr_mult))
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    assert trainable and all(n.startswith("multi_modal_projector.") or ".lora_" in n for n in trainable)
    assert any(".lora_A." in n for n in trainable) and not any(n.startswith("vision_model.") for n in trainable)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=g)
    q_ids, q_mask = tok.encode([plain_cfg.model.prompt.format(question="Is it?")] * 2, context_length=48)
    c_ids, c_mask = tok.encode([plain_cfg.model.prompt.format(question="Is it?") + a for a in (" no", " yes")] * 2,
                               context_length=48)
    args = (images, c_ids.view(2, 2, -1), c_mask.view(2, 2, -1), torch.ones(2, 2, dtype=torch.bool), q_ids, q_mask)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(*args).logits, plain(*args).logits, rtol=0, atol=1e-5)
