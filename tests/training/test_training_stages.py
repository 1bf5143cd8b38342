"""Each stage on the tiny Llama: trained parameters change, the adapter has the expected form, metrics are sane."""

from __future__ import annotations

import math
import shutil

import pytest
from training_helpers import adapter_tensors, tiny_overrides

from training.common import RecipeError, load_recipe
from training.data import DatasetError


def lora_b(tensors: dict) -> dict:
    return {k: v for k, v in tensors.items() if "lora_B" in k}


@pytest.fixture(scope="module")
def sft_result(tiny_base, datasets, tmp_path_factory):
    from training import sft

    recipe = load_recipe(sft.SFTRecipe, overrides=tiny_overrides(save_steps=1), stage="sft")
    return sft.run(recipe, base_model=tiny_base, train=datasets["sft"], out_dir=tmp_path_factory.mktemp("sft"),
                   progress=False)


@pytest.fixture(scope="module")
def reward_result(tiny_base, datasets, tmp_path_factory):
    from training import reward

    recipe = load_recipe(reward.RewardRecipe, overrides=tiny_overrides(), stage="reward")
    return reward.run(recipe, base_model=tiny_base, train=datasets["pairs"],
                      out_dir=tmp_path_factory.mktemp("reward"), progress=False)


def test_sft_trains_a_lora_adapter_on_the_answers(sft_result, tiny_base):
    from peft import PeftConfig

    tensors = adapter_tensors(sft_result.adapter)
    # LoRA B starts at zero: any non-zero value was learned.
    assert lora_b(tensors) and all(t.abs().sum() > 0 for t in lora_b(tensors).values())
    config = PeftConfig.from_pretrained(str(sft_result.adapter))
    assert config.peft_type == "LORA" and config.r == 4 and config.task_type == "CAUSAL_LM"
    assert sft_result.metrics["steps"] == 2 and math.isfinite(sft_result.metrics["train_loss"])
    assert sft_result.metrics["examples"] == 12 and sft_result.metrics["num_tokens"] > 0
    assert not (sft_result.adapter.parent / "adapter.tmp").exists()


def test_lora_layers_adapts_only_the_last_layers(tiny_base, datasets, tmp_path):
    """`lora_layers = 1` on the 2-layer model: every linear of layer 1 is adapted and learns, layer 0 has no adapter."""
    from peft import PeftConfig

    from training import sft

    recipe = load_recipe(sft.SFTRecipe, overrides=tiny_overrides(lora_layers=1), stage="sft")
    result = sft.run(recipe, base_model=tiny_base, train=datasets["sft"], out_dir=tmp_path, progress=False)
    tensors = lora_b(adapter_tensors(result.adapter))
    assert tensors and all(".layers.1." in name for name in tensors)
    assert {name.split(".")[-3] for name in tensors} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                         "up_proj", "down_proj"}
    assert all(t.abs().sum() > 0 for t in tensors.values())
    assert PeftConfig.from_pretrained(str(result.adapter)).layers_to_transform == [1]
    with pytest.raises(RecipeError, match="lora_layers"):
        load_recipe(sft.SFTRecipe, overrides={"lora_layers": -1}, stage="sft")


def test_sft_labels_cover_only_the_answer(tiny_base, datasets):
    """The loss is on the assistant's tokens (prompt tokens masked with -100), exactly where trl's own
    prompt/completion rows put it; of a correction, only on what the person changed and the end of the turn."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from training.common import load_tokenizer
    from training.data import check, to_tokenized

    tokenizer = load_tokenizer(tiny_base)

    def labelled(rows):
        args = SFTConfig(output_dir="/tmp/unused-sft", max_length=128, completion_only_loss=True, report_to=[],
                         use_cpu=True, bf16=False, per_device_train_batch_size=1)
        trainer = SFTTrainer(model=tiny_base, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer)
        batch = next(iter(trainer.get_train_dataloader()))
        return batch["labels"][0][batch["labels"][0] != -100].tolist()

    row = datasets["sft"][0]
    trl_way = labelled([{"prompt": row["messages"][:-1], "completion": row["messages"][-1:]}])
    assert tokenizer.decode(trl_way).startswith("Open the portal, section 0. [1]<|im_end|>")
    assert labelled(to_tokenized([row], tokenizer)) == trl_way

    # A correction that kept the model's first words: "kept" (feedback's export) leaves them out of the loss.
    fix = {"messages": row["messages"][:-1] + [{"role": "assistant", "content": "Open the portal. If stuck, ask."}],
           "origin": "correction", "kept": len("Open the portal.")}
    assert tokenizer.decode(labelled(to_tokenized([fix], tokenizer))) == " If stuck, ask.<|im_end|>\n"
    assert tokenizer.decode(labelled(to_tokenized([fix], tokenizer, skip_kept=False))).startswith("Open the portal.")
    with pytest.raises(DatasetError, match="row 1: 'kept' must be a count of the answer's characters, got 99"):
        check([fix | {"kept": 99}], "sft")


def test_sft_resumes_from_its_last_checkpoint(sft_result, tiny_base, datasets):
    from training import sft

    # A crash after the last checkpoint: the adapter and the done-marker are gone, the checkpoints are not.
    out = sft_result.adapter.parent
    shutil.rmtree(sft_result.adapter)
    (out / "stage.json").unlink()
    recipe = load_recipe(sft.SFTRecipe, overrides=tiny_overrides(save_steps=1), stage="sft")
    again = sft.run(recipe, base_model=tiny_base, train=datasets["sft"], out_dir=out, progress=False)
    assert again.resumed_from is not None and again.resumed_from.endswith("checkpoint-2")
    assert (again.adapter / "adapter_config.json").is_file()
    # Finished now: a third call does nothing and returns the same result.
    assert sft.run(recipe, base_model=tiny_base, train=datasets["sft"], out_dir=out).to_dict() == again.to_dict()


def test_reward_model_scores_and_reports_pairwise_accuracy(reward_result, tiny_base, datasets):
    from peft import PeftConfig

    from training.reward import load_reward_model, score

    config = PeftConfig.from_pretrained(str(reward_result.adapter))
    assert config.task_type == "SEQ_CLS" and "score" in config.modules_to_save
    tensors = adapter_tensors(reward_result.adapter)
    assert any("score" in k for k in tensors) and all(t.abs().sum() > 0 for t in lora_b(tensors).values())
    m = reward_result.metrics
    assert 0.0 <= m["pairwise_accuracy"] <= 1.0 and m["eval_on"] == "held-out"
    assert m["eval_pairs"] + m["examples"] == 12 and m["eval_pairs"] >= 1
    model, tokenizer = load_reward_model(tiny_base, reward_result.adapter)
    rows = datasets["pairs"][:3]
    scores = score(model, tokenizer, [r["prompt"] for r in rows], [r["chosen"][0]["content"] for r in rows])
    assert len(scores) == 3 and all(isinstance(s, float) and math.isfinite(s) for s in scores)


def test_rl_updates_the_policy_against_the_reward_model(sft_result, reward_result, tiny_base, datasets, tmp_path):
    from training import rl

    recipe = load_recipe(rl.RLRecipe, overrides=tiny_overrides(batch_size=4, num_generations=2,
                                                               max_completion_length=8, learning_rate=5e-2),
                         stage="rl")
    result = rl.run(recipe, base_model=tiny_base, prompts=datasets["prompts"], reward_adapter=reward_result.adapter,
                    out_dir=tmp_path / "rl", init_adapter=sft_result.adapter, progress=False)
    before, after = adapter_tensors(sft_result.adapter), adapter_tensors(result.adapter)
    assert before.keys() == after.keys()  # the same adapter, continued (no "ref" copy saved alongside)
    assert any((after[k] - before[k]).abs().sum() > 0 for k in before)
    assert not (result.adapter / "ref").exists()
    assert {"reward", "reward_first", "kl", "steps"} <= result.metrics.keys()


def test_dpo_continues_an_adapter(sft_result, tiny_base, datasets, tmp_path):
    from training import dpo

    recipe = load_recipe(dpo.DPORecipe, overrides=tiny_overrides(), stage="dpo")
    result = dpo.run(recipe, base_model=tiny_base, train=datasets["pairs"], out_dir=tmp_path / "dpo",
                     init_adapter=sft_result.adapter, progress=False)
    before, after = adapter_tensors(sft_result.adapter), adapter_tensors(result.adapter)
    assert any((after[k] - before[k]).abs().sum() > 0 for k in before)
    assert "rewards_margins" in result.metrics and math.isfinite(result.metrics["train_loss"])


def test_kto_learns_from_unpaired_votes(tiny_base, datasets, tmp_path):
    from training import kto

    recipe = load_recipe(kto.KTORecipe, overrides=tiny_overrides(), stage="kto")
    result = kto.run(recipe, base_model=tiny_base, train=datasets["kto"], out_dir=tmp_path / "kto", progress=False)
    assert all(t.abs().sum() > 0 for t in lora_b(adapter_tensors(result.adapter)).values())
    assert result.metrics["liked"] == 12 and result.metrics["disliked"] == 12
    assert result.metrics["desirable_weight"] == 1.0


def test_bad_datasets_are_rejected_before_training(tiny_base, datasets, tmp_path):
    from training import dpo, kto

    recipe = load_recipe(dpo.DPORecipe, overrides=tiny_overrides(), stage="dpo")
    same = [{**r, "rejected": r["chosen"]} for r in datasets["pairs"]]
    with pytest.raises(DatasetError, match="no usable pairs examples.*12 chosen equals rejected"):
        dpo.run(recipe, base_model=tiny_base, train=same, out_dir=tmp_path / "dpo")
    with pytest.raises(DatasetError, match="'label' must be true or false"):
        kto.run(load_recipe(kto.KTORecipe, overrides=tiny_overrides(), stage="kto"), base_model=tiny_base,
                train=[{**datasets["kto"][0], "label": "yes"}], out_dir=tmp_path / "kto")
    assert not (tmp_path / "dpo" / "adapter").exists() and not (tmp_path / "kto" / "adapter").exists()
    with pytest.raises(RecipeError, match="num_generations"):
        from training import rl

        load_recipe(rl.RLRecipe, overrides={"num_generations": 1}, stage="rl")


def test_the_gate_scores_serving_and_asks_the_judge_about_the_pairs_once_a_night(reward_result, sft_result, tiny_base,
                                                                                datasets, monkeypatch):
    """Judging several candidates against one serving policy (the nightly pull-back, with a shared `memo`): the
    reward model scores serving's sampled answers and ranks the held-out pairs once; every report is the same."""
    from training import gate, reward

    scored: list[int] = []
    real = reward.score
    monkeypatch.setattr(reward, "score", lambda model, tok, prompts, answers, **kw: (
        scored.append(len(answers)) or real(model, tok, prompts, answers, **kw)))
    cfg = gate.GateConfig(max_new_tokens=4, judge_samples=2)
    memo: dict = {}
    prompts = [r["prompt"] for r in datasets["prompts"][:3]]
    reports = [gate.evaluate(cfg, base_model=tiny_base, candidate=sft_result.adapter,
                             reward_adapter=reward_result.adapter, prompts=prompts, pairs=datasets["pairs"][:3],
                             memo=memo) for _ in range(2)]
    assert reports[0].metrics == reports[1].metrics and reports[0].metrics["prompts"] == 3
    # First: the candidate's 6 answers, serving's 6, the pairs' chosen and rejected; then the candidate's alone.
    assert scored == [6, 6, 3, 3, 6]
