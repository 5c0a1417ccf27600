"""The training loop's batches: every row once per epoch, the same for the same seed and epoch,
and rows of similar length together when lengths are given."""

from __future__ import annotations

import random

from scripts.train.loop import BUCKET_BATCHES, epoch_order


def test_length_bucketed_batches_cover_every_row_once_and_repeat_for_the_same_seed():
    rng = random.Random(0)
    lengths = [rng.randint(2, 300) for _ in range(1000)]
    batches = epoch_order(len(lengths), seed=42, epoch=1, batch_size=16, lengths=lengths)
    rows = sorted(i for batch in batches for i in batch.tolist())
    assert rows == list(range(1000))
    again = epoch_order(len(lengths), seed=42, epoch=1, batch_size=16, lengths=lengths)
    assert [b.tolist() for b in again] == [b.tolist() for b in batches]
    other = epoch_order(len(lengths), seed=42, epoch=2, batch_size=16, lengths=lengths)
    assert [b.tolist() for b in other] != [b.tolist() for b in batches]


def test_a_bucketed_batch_pads_to_far_less_than_a_random_one():
    rng = random.Random(1)
    lengths = [rng.randint(2, 300) for _ in range(16 * BUCKET_BATCHES * 2)]

    def padding(batches) -> int:
        return sum(max(lengths[i] for i in b.tolist()) * len(b) - sum(lengths[i] for i in b.tolist())
                   for b in batches)

    bucketed = padding(epoch_order(len(lengths), 7, 1, 16, lengths))
    shuffled = padding(epoch_order(len(lengths), 7, 1, 16))
    assert bucketed < shuffled / 5, (bucketed, shuffled)
