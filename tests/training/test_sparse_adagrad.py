"""RowSparseAdagrad against torch's Adagrad, and its fixed-size row summation against a plain
per-id sum: same updates, same state (checkpoints interchange), no host synchronisation."""

from __future__ import annotations

import io

import pytest
import torch

from lm1b.training.sparse_adagrad import RowSparseAdagrad, sum_rows_by_id

V, D = 40, 6


def _through_a_file(state: dict) -> dict:
    """The state as a checkpoint gives it back: saved, then loaded with weights_only."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _sparse_grad(ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return torch.sparse_coo_tensor(ids.unsqueeze(0), rows, (V, D), check_invariants=False)


def _steps(generator: torch.Generator, count: int, dyadic: bool) -> list[torch.Tensor]:
    """`count` uncoalesced gradients of 30 rows over V ids (many repeats). Dyadic rows (k / 4)
    sum exactly in any order, so two optimizers must then agree bit for bit."""
    grads = []
    for _ in range(count):
        ids = torch.randint(0, V, (30,), generator=generator)
        if dyadic:
            rows = torch.randint(-8, 9, (30, D), generator=generator) / 4
        else:
            rows = torch.randn(30, D, generator=generator)
        grads.append(_sparse_grad(ids, rows))
    return grads


def test_sum_rows_by_id_sums_each_ids_rows_and_pads_with_nothing():
    ids = torch.tensor([7, 3, 7, 0, 3, 7])
    rows = torch.arange(12.0).view(6, 2)
    slot_ids, sums = sum_rows_by_id(ids, rows, num_ids=8)
    assert slot_ids.tolist() == [0, 3, 7, 3, 4, 5]  # sorted distinct ids, then padding: j mod 8
    expected = torch.zeros(6, 2)
    expected[0] = rows[3]
    expected[1] = rows[1] + rows[4]
    expected[2] = rows[0] + rows[2] + rows[5]
    assert torch.equal(sums, expected)
    # Scattered back, the slots give the dense gradient exactly: the padding adds zeros.
    dense = torch.zeros(8, 2).index_add_(0, slot_ids, sums)
    assert torch.equal(dense, torch.zeros(8, 2).index_add_(0, ids, rows))


def test_sum_rows_by_id_never_waits_for_the_device():
    """It runs on the meta device, where any data-dependent operation (unique, nonzero, item)
    raises: every size is known on the host."""
    ids = torch.empty(100, dtype=torch.long, device="meta")
    slot_ids, sums = sum_rows_by_id(ids, torch.empty(100, 1024, device="meta"), num_ids=50)
    assert slot_ids.shape == (100,) and sums.shape == (100, 1024)


@pytest.mark.parametrize("dyadic", [True, False])
def test_updates_equal_torchs_sparse_adagrad(dyadic):
    """Five steps of uncoalesced gradients: the same tables and accumulators as torch.optim.
    Adagrad, bit for bit when the per-id sums are exact, else to rounding of those sums;
    rows never touched are never changed."""
    torch.manual_seed(0)
    ours = torch.nn.Parameter(torch.randn(V, D))
    theirs = torch.nn.Parameter(ours.detach().clone())
    before = ours.detach().clone()
    mine = RowSparseAdagrad([ours], lr=0.2, initial_accumulator_value=1.0)
    reference = torch.optim.Adagrad([theirs], lr=0.2, initial_accumulator_value=1.0)
    touched = torch.zeros(V, dtype=torch.bool)
    for grad in _steps(torch.Generator().manual_seed(1), 5, dyadic):
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        mine.step()
        reference.step()
        touched[grad._indices()[0]] = True
    if dyadic:
        assert torch.equal(ours, theirs)
        assert torch.equal(mine.state[ours]["sum"], reference.state[theirs]["sum"])
    else:
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    assert not touched.all() and torch.equal(ours[~touched], before[~touched])
    assert float(mine.state[ours]["step"]) == float(reference.state[theirs]["step"]) == 5


def test_checkpoints_interchange_with_torchs_adagrad():
    """A torch Adagrad state loads into RowSparseAdagrad and the next steps match (and back)."""
    grads = _steps(torch.Generator().manual_seed(2), 4, dyadic=True)
    torch.manual_seed(0)
    ours = torch.nn.Parameter(torch.randn(V, D))
    theirs = torch.nn.Parameter(ours.detach().clone())
    reference = torch.optim.Adagrad([theirs], lr=0.2, initial_accumulator_value=0.5)
    for grad in grads[:2]:
        theirs.grad = grad.clone()
        reference.step()
    with torch.no_grad():
        ours.copy_(theirs)
    mine = RowSparseAdagrad([ours], lr=0.2, initial_accumulator_value=0.5)
    mine.load_state_dict(_through_a_file(reference.state_dict()))
    for grad in grads[2:]:
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        mine.step()
        reference.step()
    assert torch.equal(ours, theirs)
    # Back into torch's Adagrad, which then steps as ours does.
    again = torch.nn.Parameter(ours.detach().clone())
    back = torch.optim.Adagrad([again], lr=0.2)
    back.load_state_dict(_through_a_file(mine.state_dict()))
    assert torch.equal(back.state[again]["sum"], mine.state[ours]["sum"])
    grad = grads[0]
    ours.grad, again.grad = grad.clone(), grad.clone()
    mine.step()
    back.step()
    assert torch.equal(ours, again)


def test_an_embeddings_own_sparse_gradient():
    """nn.Embedding(sparse=True)'s gradient (repeated ids, as in a batch) updates exactly the
    looked-up rows, as torch's Adagrad does."""
    tables = [torch.nn.Embedding(V, D, sparse=True) for _ in range(2)]
    tables[1].load_state_dict(tables[0].state_dict())
    mine = RowSparseAdagrad(tables[0].parameters(), lr=0.1, initial_accumulator_value=1.0)
    reference = torch.optim.Adagrad(tables[1].parameters(), lr=0.1, initial_accumulator_value=1.0)
    ids = torch.tensor([[1, 5, 1], [5, 5, 9]])
    for table in tables:
        table(ids).pow(2).sum().backward()
    mine.step()
    reference.step()
    torch.testing.assert_close(tables[0].weight, tables[1].weight, rtol=1e-6, atol=0)


def test_refuses_dense_gradients_and_bad_settings():
    param = torch.nn.Parameter(torch.zeros(V, D))
    param.grad = torch.ones(V, D)
    with pytest.raises(TypeError, match="dense gradient for a \\(40, 6\\) parameter"):
        RowSparseAdagrad([param], lr=0.1).step()
    with pytest.raises(ValueError, match="eps > 0"):
        RowSparseAdagrad([param], lr=0.1, eps=0.0)


def test_a_false_device_flag_changes_nothing_even_for_a_nan_gradient():
    """step(apply) with apply False leaves the table and its sums bitwise as they were (a
    skipped step's gradient may be NaN); with apply True it is the ordinary step."""
    torch.manual_seed(0)
    table = torch.nn.Parameter(torch.randn(V, D))
    twin = torch.nn.Parameter(table.detach().clone())
    flagged = RowSparseAdagrad([table], lr=0.2, initial_accumulator_value=1.0)
    plain = RowSparseAdagrad([twin], lr=0.2, initial_accumulator_value=1.0)
    before, sums = table.detach().clone(), flagged.state[table]["sum"].clone()
    ids = torch.tensor([0, 3, 3, 7])
    table.grad = _sparse_grad(ids, torch.full((4, D), float("nan")))
    flagged.step(torch.tensor(False))
    assert torch.equal(table, before) and torch.equal(flagged.state[table]["sum"], sums)
    grad = _sparse_grad(ids, torch.randn(4, D))
    table.grad, twin.grad = grad.clone(), grad.clone()
    flagged.step(torch.tensor(True))
    plain.step()
    assert torch.equal(table, twin) and not torch.equal(table, before)
