"""A minimal WebAssembly binary reader/rewriter: just enough to turn a module plus a memory image
into a new module whose data segments *are* that image (a "snapshot", as wizer does).

Why hand-rolled: the only operations needed are re-encoding four sections (memory, global, export,
data/datacount), and no wasm tooling package is installed here. Everything else is copied byte for
byte, so the function bodies, and therefore their compiled code, are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

MAGIC = b"\x00asm\x01\x00\x00\x00"
SEC_CUSTOM, SEC_IMPORT, SEC_MEMORY, SEC_GLOBAL, SEC_EXPORT = 0, 2, 5, 6, 7
SEC_DATA, SEC_DATACOUNT = 11, 12
PAGE = 65536

# Section ids in the order the spec requires them (datacount sits between import-ish and code).
_ORDER = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13}


def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if (n == 0 and not b & 0x40) or (n == -1 and b & 0x40):
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def read_uleb(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


def read_sleb(buf: bytes | memoryview, pos: int, bits: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            if b & 0x40 and shift < bits + 7:
                result -= 1 << shift
            return result, pos


@dataclass
class Section:
    id: int
    body: bytes


def parse_sections(wasm: bytes) -> list[Section]:
    if wasm[:8] != MAGIC:
        raise ValueError("not a core wasm module (bad magic/version)")
    pos, out = 8, []
    while pos < len(wasm):
        sid = wasm[pos]
        size, pos = read_uleb(wasm, pos + 1)
        out.append(Section(sid, wasm[pos : pos + size]))
        pos += size
    return out


def encode(sections: list[Section]) -> bytes:
    parts = [MAGIC]
    for s in sections:
        parts += [bytes([s.id]), uleb(len(s.body)), s.body]
    return b"".join(parts)


def _find(sections: list[Section], sid: int) -> Section | None:
    return next((s for s in sections if s.id == sid), None)


def _insert(sections: list[Section], new: Section) -> None:
    """Insert or replace a non-custom section at its spec position."""
    for i, s in enumerate(sections):
        if s.id == new.id:
            sections[i] = new
            return
    rank = _ORDER[new.id]
    for i, s in enumerate(sections):
        if s.id != SEC_CUSTOM and _ORDER[s.id] > rank:
            sections.insert(i, new)
            return
    sections.append(new)


def _skip_const_expr(body: bytes, pos: int) -> int:
    """Skip a constant expression (i32/i64/f32/f64.const, global.get, ref.null/func ... end)."""
    while True:
        op = body[pos]
        pos += 1
        if op == 0x0B:
            return pos
        if op in (0x41, 0x42):
            pos = read_sleb(body, pos, 64)[1]
        elif op == 0x43:
            pos += 4
        elif op == 0x44:
            pos += 8
        elif op in (0x23, 0xD2):
            pos = read_uleb(body, pos)[1]
        elif op == 0xD0:
            pos += 1
        else:
            raise ValueError(f"unsupported opcode 0x{op:02x} in a constant expression")


def imported_globals(sections: list[Section]) -> int:
    s = _find(sections, SEC_IMPORT)
    if s is None:
        return 0
    b = s.body
    n, pos = read_uleb(b, 0)
    count = 0
    for _ in range(n):
        for _ in range(2):
            ln, pos = read_uleb(b, pos)
            pos += ln
        kind = b[pos]
        pos += 1
        if kind == 0:  # func
            pos = read_uleb(b, pos)[1]
        elif kind == 1:  # table: reftype + limits
            pos += 1
            pos = _skip_limits(b, pos)
        elif kind == 2:  # memory
            pos = _skip_limits(b, pos)
        elif kind == 3:  # global
            pos += 2
            count += 1
        elif kind == 4:  # tag
            pos += 1
            pos = read_uleb(b, pos)[1]
        else:
            raise ValueError(f"unknown import kind {kind}")
    return count


def _skip_limits(b: bytes, pos: int) -> int:
    flags = b[pos]
    pos = read_uleb(b, pos + 1)[1]
    if flags & 1:
        pos = read_uleb(b, pos)[1]
    return pos


@dataclass
class Global:
    index: int  # in the global index space (imports first)
    valtype: int  # 0x7F i32, 0x7E i64, 0x7D f32, 0x7C f64
    mutable: bool
    init: bytes  # the constant expression, including its final `end`


def parse_globals(sections: list[Section]) -> list[Global]:
    s = _find(sections, SEC_GLOBAL)
    if s is None:
        return []
    base = imported_globals(sections)
    b = s.body
    n, pos = read_uleb(b, 0)
    out = []
    for i in range(n):
        vt, mut = b[pos], b[pos + 1]
        start = pos + 2
        pos = _skip_const_expr(b, start)
        out.append(Global(base + i, vt, bool(mut), b[start:pos]))
    return out


def with_global_exports(wasm: bytes, prefix: str) -> tuple[bytes, list[Global]]:
    """The module with every defined mutable global exported as `prefix<index>`, so the host can
    read their values after running the prelude (non-exported globals are otherwise invisible)."""
    sections = parse_sections(wasm)
    muts = [g for g in parse_globals(sections) if g.mutable]
    exp = _find(sections, SEC_EXPORT)
    n, pos = (0, 0) if exp is None else read_uleb(exp.body, 0)
    rest = b"" if exp is None else exp.body[pos:]
    extra = b"".join(
        uleb(len(name)) + name + b"\x03" + uleb(g.index) for g in muts for name in [f"{prefix}{g.index}".encode()]
    )
    _insert(sections, Section(SEC_EXPORT, uleb(n + len(muts)) + rest + extra))
    return encode(sections), muts


def const_expr(valtype: int, value: int | float) -> bytes:
    import struct

    if valtype == 0x7F:
        return b"\x41" + sleb(_signed(int(value), 32)) + b"\x0b"
    if valtype == 0x7E:
        return b"\x42" + sleb(_signed(int(value), 64)) + b"\x0b"
    if valtype == 0x7D:
        return b"\x43" + struct.pack("<f", value) + b"\x0b"
    if valtype == 0x7C:
        return b"\x44" + struct.pack("<d", value) + b"\x0b"
    raise ValueError(f"cannot snapshot a global of type 0x{valtype:02x}")


def _signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >= 1 << (bits - 1) else v


def nonzero_runs(mem: bytes, gap: int = 4096, align: int = 8) -> list[tuple[int, bytes]]:
    """(offset, bytes) for each run of memory that is not all zeros; zero gaps shorter than `gap`
    stay inside a run, so the segment count stays small while the image stays sparse."""
    view = memoryview(mem)
    zero = bytes(gap)
    runs: list[tuple[int, int]] = []
    pos, n = 0, len(mem)
    start = None
    # Walk in `gap`-sized blocks: a block that is all zero ends the current run.
    while pos < n:
        block = view[pos : pos + gap]
        if block == zero[: len(block)]:
            if start is not None:
                runs.append((start, pos))
                start = None
        elif start is None:
            start = pos
        pos += gap
    if start is not None:
        runs.append((start, n))
    out = []
    for s, e in runs:
        chunk = mem[s:e]
        # trim zero edges (keep `align` alignment of the start)
        lead = (len(chunk) - len(chunk.lstrip(b"\0"))) // align * align
        trail = len(chunk) - len(chunk.rstrip(b"\0"))
        out.append((s + lead, chunk[lead : len(chunk) - trail]))
    return out


def snapshot_module(wasm: bytes, memory: bytes, global_values: dict[int, int | float]) -> bytes:
    """The module `wasm` with its memory initialised to `memory` (min pages raised to fit) and the
    given defined globals' initial values replaced."""
    sections = parse_sections(wasm)
    # --- data: active segments are emptied in place (their memory is in the image) and passive
    # ones kept byte for byte, so every segment index that memory.init/data.drop use stays valid;
    # the image's segments are appended after them.
    data = _find(sections, SEC_DATA)
    kept = bytearray()
    n_old = 0
    if data is not None:
        db = data.body
        n_old, pos = read_uleb(db, 0)
        for _ in range(n_old):
            start = pos
            flag, pos = read_uleb(db, pos)
            if flag == 2:
                pos = read_uleb(db, pos)[1]
            if flag != 1:
                pos = _skip_const_expr(db, pos)
            ln, pos = read_uleb(db, pos)
            pos += ln
            kept += db[start:pos] if flag == 1 else b"\x00\x41\x00\x0b\x00"
    segs = nonzero_runs(memory)
    body = bytearray(uleb(n_old + len(segs))) + kept
    for off, chunk in segs:
        body += b"\x00\x41" + sleb(_signed(off, 32)) + b"\x0b" + uleb(len(chunk)) + chunk
    _insert(sections, Section(SEC_DATA, bytes(body)))
    if _find(sections, SEC_DATACOUNT) is not None:
        _insert(sections, Section(SEC_DATACOUNT, uleb(n_old + len(segs))))
    # --- memory: min pages = current size
    mem = _find(sections, SEC_MEMORY)
    if mem is None:
        raise ValueError("module defines no memory")
    b = mem.body
    count, pos = read_uleb(b, 0)
    if count != 1:
        raise ValueError("expected exactly one memory")
    flags = b[pos]
    _, p2 = read_uleb(b, pos + 1)
    mx = b""
    if flags & 1:
        mxv, p3 = read_uleb(b, p2)
        mx = uleb(mxv)
        p2 = p3
    pages = len(memory) // PAGE
    _insert(sections, Section(SEC_MEMORY, uleb(1) + bytes([flags]) + uleb(pages) + mx + b[p2:]))
    # --- globals
    if global_values:
        gs = parse_globals(sections)
        out = bytearray(uleb(len(gs)))
        for g in gs:
            init = const_expr(g.valtype, global_values[g.index]) if g.index in global_values else g.init
            out += bytes([g.valtype, int(g.mutable)]) + init
        _insert(sections, Section(SEC_GLOBAL, bytes(out)))
    return encode(sections)
