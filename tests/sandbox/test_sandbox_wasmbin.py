"""The wasm section rewriter that turns a module + memory image into a snapshot module."""

from __future__ import annotations

import wasmtime as wt

from soar_async.sandbox import _wasmbin as wb

WAT = """(module
  (memory (export "memory") 1)
  (global $sp (mut i32) (i32.const 1024))
  (global $k i32 (i32.const 7))
  (data (i32.const 16) "hello")
  (data $p "passive!")
  (func (export "bump") (result i32)
    (global.set $sp (i32.add (global.get $sp) (i32.const 1)))
    (i32.store (i32.const 70000) (i32.const 42))
    (global.get $sp))
  (func (export "sp") (result i32) (global.get $sp))
  (func (export "init") (memory.init $p (i32.const 100) (i32.const 0) (i32.const 8))))
"""


def test_leb_round_trip() -> None:
    for n in (0, 1, 63, 64, 127, 128, 2**20, 2**31 - 1):
        assert wb.read_uleb(wb.uleb(n), 0) == (n, len(wb.uleb(n)))
    for n in (0, -1, 63, -64, 64, -65, 2**31 - 1, -(2**31)):
        assert wb.read_sleb(wb.sleb(n), 0, 32)[0] == n


def test_nonzero_runs_are_sparse() -> None:
    mem = bytearray(65536 * 2)
    mem[10:13] = b"abc"
    mem[70000:70001] = b"z"
    runs = wb.nonzero_runs(bytes(mem))
    assert [(off, data) for off, data in runs] == [(8, b"\0\0abc"), (70000, b"z")]


def test_snapshot_module_restores_memory_globals_and_keeps_passive_segments() -> None:
    engine = wt.Engine()
    original = wt.wat2wasm(WAT)
    probe, mutable = wb.with_global_exports(original, "g_")
    assert [g.index for g in mutable] == [0]
    store = wt.Store(engine)
    inst = wt.Instance(store, wt.Module(engine, probe), [])
    ex = inst.exports(store)
    ex["memory"].grow(store, 1)
    assert ex["bump"](store) == 1025
    memory = bytes(ex["memory"].read(store, 0, ex["memory"].data_len(store)))
    snap = wb.snapshot_module(original, memory, {0: ex["g_0"].value(store)})

    store2 = wt.Store(engine)
    ex2 = wt.Instance(store2, wt.Module(engine, snap), []).exports(store2)
    mem2 = ex2["memory"]
    assert mem2.data_len(store2) == 2 * 65536  # min pages raised to the snapshot's size
    assert bytes(mem2.read(store2, 16, 21)) == b"hello"
    assert bytes(mem2.read(store2, 70000, 70001)) == b"*"
    assert ex2["sp"](store2) == 1025  # the mutable global's value was captured
    ex2["init"](store2)  # the passive segment kept its index
    assert bytes(mem2.read(store2, 100, 108)) == b"passive!"
