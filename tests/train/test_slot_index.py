"""The masked batch's slot index: the model selects each modality's slots by number, with counts the host knows,
so a training step on a GPU never waits for the device to say how many slots a boolean mask selected."""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from train_stage.batch import IGNORE, MODALITY_INDEX
from train_stage.data import PackedBatch
from train_stage.model import FourM

from .conftest import TINY_MODALITIES
from .test_model import masked_batch

# aten ops whose output size depends on tensor values: on CUDA each copies a result to the host and waits
DATA_DEPENDENT = {"nonzero", "masked_select", "_local_scalar_dense", "item", "is_nonzero", "unique", "_unique2",
                  "repeat_interleave"}


class _Syncs(TorchDispatchMode):
    """Counts the data-dependent ops a block dispatches, boolean-mask indexing included."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in DATA_DEPENDENT:
            self.seen[name] += 1
        if name in ("index", "index_put", "index_put_") and len(args) > 1 and isinstance(args[1], (list, tuple)):
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]):
                self.seen[f"{name} with a boolean mask"] += 1
        return func(*args, **(kwargs or {}))


def _without_index(batch):
    return dataclasses.replace(batch, enc_order=None, dec_order=None, loss_order=None, slot_counts=None)


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    return FourM(tiny_config)


def test_the_masker_indexes_its_batches_and_a_device_move_keeps_the_counts_on_the_host():
    batch = masked_batch(TINY_MODALITIES)
    assert batch.slot_counts is not None and batch.enc_order is not None
    moved = batch.to("meta")  # any device: the counts must stay where the host can read them without a sync
    assert moved.enc_tokens.device.type == "meta" and moved.enc_order.device.type == "meta"
    assert moved.slot_counts.device.type == "cpu"


@pytest.mark.parametrize("side", ["enc", "dec", "loss"])
def test_each_modality_gets_the_slots_its_boolean_mask_selects_in_the_same_order(side):
    batch = masked_batch(TINY_MODALITIES, B=5, seed=3)
    modality = {"enc": batch.enc_modality, "dec": batch.dec_modality,
                "loss": torch.where(batch.dec_labels == IGNORE, -1, batch.dec_modality)}[side]
    for slots in (batch.slots(side), _without_index(batch).slots(side)):
        for name, i in MODALITY_INDEX.items():
            expected = (modality.reshape(-1) == i).nonzero().flatten()
            assert torch.equal(slots[i], expected), (side, name)


def test_loss_and_gradients_are_bit_identical_with_the_maskers_index_and_one_computed_in_the_model(model):
    """Batches built without the masker (generation, evaluation) get their index in ``slots``: same numbers.
    (Against the boolean-mask model this replaced, the selection test above shows the same slots in the same
    order; loss and gradients were compared with the old code once, at the change: bit-identical, 3 seeds.)"""
    batch = masked_batch(TINY_MODALITIES, seed=1)
    results = []
    for b in (batch, _without_index(batch)):
        model.zero_grad()
        out = model(b)
        out.loss.backward()
        results.append((out.loss.detach(), out.modality_losses, out.modality_counts,
                        {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (la, ma, ca, ga), (lb, mb, cb, gb) = results
    assert torch.equal(la, lb) and torch.equal(ma, mb) and torch.equal(ca, cb)
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)


def test_a_training_step_on_an_indexed_batch_dispatches_no_data_dependent_op(model):
    """The proxy, on a CPU, for 'no host-device sync in a GPU step': before the index, a 4M-21 B step dispatched
    354 boolean-mask selections, each a sync on CUDA."""
    batch = masked_batch(TINY_MODALITIES, seed=2)
    with _Syncs() as syncs:
        model(batch).loss.backward()
    assert not syncs.seen, dict(syncs.seen)
    with _Syncs() as masked:  # the detector does see boolean selections (generation's API still returns them)
        model.logits(batch)
    assert masked.seen["index with a boolean mask"] == len(model.decoder_embeddings)


def test_the_index_survives_the_loader_workers_packing():
    batch = masked_batch(TINY_MODALITIES, seed=4)
    back = PackedBatch.pack(batch).unpack()
    for f in ("enc_order", "dec_order", "loss_order", "slot_counts"):
        assert torch.equal(getattr(back, f), getattr(batch, f)), f
    bare = PackedBatch.pack(_without_index(batch)).unpack()
    assert bare.slot_counts is None and bare.enc_order is None and bare.loss_order is None


def test_a_map_that_is_not_a_move_drops_the_index_and_slots_follow_the_new_batch():
    batch = masked_batch(TINY_MODALITIES, B=4, seed=5)
    half = batch.map(lambda t: t[:2])  # e.g. a micro-batch: the old index would point past the new tensors
    assert half.slot_counts is None and half.enc_order is None
    expected = (half.dec_modality.reshape(-1) == 0).nonzero().flatten()
    assert torch.equal(half.slots("dec")[0], expected)


def test_an_index_that_no_longer_fits_the_batch_is_refused_by_name():
    batch = masked_batch(TINY_MODALITIES, B=4, seed=6)
    stale = dataclasses.replace(batch, dec_modality=batch.dec_modality[:2], dec_labels=batch.dec_labels[:2])
    with pytest.raises(ValueError, match=r"dec slot index .* needs \.with_slot_index\(\) again"):
        stale.slots("dec")
