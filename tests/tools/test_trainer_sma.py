"""SMA with what the train extra brings: transformers' `Trainer` (gradient accumulation, the mask-noise callback,
save and reload) and accelerate's empty-weight initialisation."""

import pytest
import torch
from conftest import tiny_config
from datasets import Dataset
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from sma_hf import (
    SMAFeatureExtractor,
    SMAForMaskedModeling,
    SMAForSequenceClassification,
    SMAMaskNoiseCallback,
    cosine_noise_scale,
    create_byte_tokenizer,
)


SMILES = ["CCO", "c1ccccc1", "CC(=O)O", "CCN(CC)CC", "O=C=O", "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "C1CCCCC1", "ClCCl"]


def byte_dataset():
    tokenizer = create_byte_tokenizer(model_max_length=64)
    rows = {"text": SMILES, "label": [i % 2 for i in range(len(SMILES))]}
    return tokenizer, Dataset.from_dict(rows).map(
        lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text"]
    )


def train_one_step(output_dir, batch_size, accumulation):
    tokenizer, dataset = byte_dataset()
    torch.manual_seed(0)
    model = SMAForSequenceClassification(tiny_config(num_labels=2))
    args = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
        max_steps=1, learning_rate=0.1, optim="sgd", lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1e9, seed=3, use_cpu=True, report_to="none", save_strategy="no", logging_steps=1,
        dataloader_drop_last=True,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    return model


def test_trainer_gradient_accumulation_matches_one_large_batch(tmp_path):
    """With mean-reduced losses, 2 micro-batches of 4 must update the weights exactly as one batch of 8."""
    accumulated = train_one_step(tmp_path / "a", batch_size=4, accumulation=2)
    single = train_one_step(tmp_path / "b", batch_size=8, accumulation=1)
    for (name, a), b in zip(accumulated.named_parameters(), single.parameters()):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5, msg=name)
    torch.manual_seed(0)
    initial = SMAForSequenceClassification(tiny_config(num_labels=2))
    assert any(not torch.equal(a, b) for a, b in zip(initial.parameters(), single.parameters()))


def test_trainer_fine_tunes_and_evaluates_continuous_inputs(tmp_path):
    extractor = SMAFeatureExtractor(input_channels=1)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(32, 6, generator=generator)
    targets = (features[:, :3].sum(dim=1)).tolist()
    dataset = Dataset.from_dict({"row": features.tolist(), "label": targets})

    def collate(rows):
        batch = extractor([row["row"] for row in rows], return_tensors="pt")
        batch["labels"] = torch.tensor([row["label"] for row in rows])
        return batch

    config = tiny_config(input_type="continuous", input_channels=1, num_labels=1, encoder_type="self_attention")
    model = SMAForSequenceClassification(config)
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, gradient_accumulation_steps=2, num_train_epochs=8,
        learning_rate=3e-3, use_cpu=True, report_to="none", save_strategy="no", eval_strategy="epoch",
        remove_unused_columns=False, logging_steps=1,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset, data_collator=collate)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert model.config.problem_type == "regression"
    assert after < 0.5 * before, (before, after)


def test_pretraining_with_trainer_decays_the_mask_noise(tmp_path):
    tokenizer, dataset = byte_dataset()
    model = SMAForMaskedModeling(tiny_config(masking_ratio=0.3))
    seen = []
    original = model.set_mask_noise_scale

    def record(scale):
        seen.append(scale)
        original(scale)

    model.set_mask_noise_scale = record
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=8, learning_rate=1e-3, use_cpu=True,
        report_to="none", save_strategy="no", remove_unused_columns=False,
    )  # fmt: skip
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset.remove_columns(["label"]),
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[SMAMaskNoiseCallback(0.5)],
    )
    trainer.train()
    # set before step 1, then after each of the 8 steps; noise over the first 4 steps
    assert seen == [cosine_noise_scale(step, 4) for step in range(9)]
    assert seen[0] == 1.0 and seen[-1] == 0.0
    first_attention = model.sma.encoder.input_layer.attention
    assert first_attention.mask_noise_scale == 0.0


@pytest.mark.parametrize("model_class", [SMAForMaskedModeling, SMAForSequenceClassification])
def test_builds_with_accelerate_init_empty_weights(model_class):
    from accelerate import init_empty_weights

    config = tiny_config(num_labels=3)
    with init_empty_weights():
        empty = model_class(config)
    assert {parameter.device.type for parameter in empty.parameters()} == {"meta"}
    built = model_class(config)
    assert {n: tuple(t.shape) for n, t in empty.state_dict().items()} == {
        n: tuple(t.shape) for n, t in built.state_dict().items()
    }
