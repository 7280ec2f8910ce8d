"""The protein preset at 2,048 residues: per-residue outputs of a long protein padded beside a short one."""

import torch
from conftest import random_inputs

from sma_hf import SMAForMaskedModeling, SMAForTokenClassification
from sma_hf.tools.common import load_sma_config


def test_per_residue_outputs_of_a_protein_of_2048_residues_beside_a_short_one():
    """The protein preset (`cross_attention`, selection by position, 3 inputs per sampled position) read up to 2,048
    residues and [SEP]: per-residue logits and element embeddings of every real element, each protein's the same as
    alone; the pretraining forward masks exactly its ratio of the long protein and its loss is finite."""
    long_length, short_length = 2049, 30
    config = load_sma_config(None, "sma-protein-small")
    assert config.max_position_embeddings == long_length
    config.num_labels = 3
    long, short = random_inputs(config, 1, long_length, seed=1), random_inputs(config, 1, short_length, seed=2)
    batch = torch.full((2, long_length), config.pad_token_id)
    batch[0], batch[1, :short_length] = long["input_ids"][0], short["input_ids"][0]
    attention_mask = torch.zeros(2, long_length, dtype=torch.long)
    attention_mask[0], attention_mask[1, :short_length] = 1, 1

    torch.manual_seed(0)
    classifier = SMAForTokenClassification(config).eval()
    logits = classifier(input_ids=batch, attention_mask=attention_mask).logits
    assert logits.shape == (2, long_length, 3) and torch.isfinite(logits).all()
    torch.testing.assert_close(logits[:1], classifier(**long).logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[1:, :short_length], classifier(**short).logits, atol=1e-5, rtol=0)

    pretrained = SMAForMaskedModeling(config).eval()
    embeddings = pretrained.element_embeddings(input_ids=batch, attention_mask=attention_mask)
    assert embeddings.shape == (2, long_length, config.decoder_hidden_size)
    torch.testing.assert_close(embeddings[:1], pretrained.element_embeddings(**long), atol=1e-5, rtol=0)
    alone = pretrained.element_embeddings(**short)
    torch.testing.assert_close(embeddings[1:, :short_length], alone, atol=1e-5, rtol=0)

    output = pretrained.train()(input_ids=batch, attention_mask=attention_mask)
    assert output.mask.sum(dim=1).tolist() == [round(0.15 * long_length), round(0.15 * short_length)]
    assert not (output.mask & ~attention_mask.bool()).any() and torch.isfinite(output.loss)
