"""libbpf from Python (ctypes on Debian's libbpf.so.1): for what bcc cannot do.

bcc cannot build struct_ops (congestion controllers) nor CO-RE programs that read kernel
structs through BTF (the TCP-INT switch reads the qdisc). Those are compiled by
testbed.bpf.build and loaded here, following libbpf's order:
open → configure (`const volatile` rodata) → load → attach → run → destroy.

Classes:
- BpfObject: one loaded object file; its programs, maps and rodata settings.
- Map: a loaded map's fd with lookup/update/delete/keys on raw bytes.
- Link: an attachment (struct_ops, cgroup) that ends when destroyed. A struct_ops
  registration held by a kernel bpf_link (kernels with struct_ops links, 6.4+) also ends
  when the process dies; without them it is a plain map update that outlives the process
  until its map's element is deleted (unregister_pinned_struct_ops, for leftovers).
- RingBuffer: events from a BPF ring buffer to a Python callback.
"""
from __future__ import annotations

import ctypes as C
import errno
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from ..errors import MissingFeature, RunError

try:
    _lib = C.CDLL("libbpf.so.1", use_errno=True)
except OSError as e:  # pragma: no cover - depends on the machine
    _lib = None
    _load_error = e

_P = C.c_void_p


def _fn(name: str, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype, f.argtypes = restype, list(argtypes)
    return f


if _lib is not None:
    _open_file = _fn("bpf_object__open_file", _P, C.c_char_p, _P)
    _obj_load = _fn("bpf_object__load", C.c_int, _P)
    _obj_close = _fn("bpf_object__close", None, _P)
    _find_prog = _fn("bpf_object__find_program_by_name", _P, _P, C.c_char_p)
    _next_prog = _fn("bpf_object__next_program", _P, _P, _P)
    _prog_name = _fn("bpf_program__name", C.c_char_p, _P)
    _prog_fd = _fn("bpf_program__fd", C.c_int, _P)
    _prog_pin = _fn("bpf_program__pin", C.c_int, _P, C.c_char_p)
    _prog_set_autoload = _fn("bpf_program__set_autoload", C.c_int, _P, C.c_bool)
    _next_map = _fn("bpf_object__next_map", _P, _P, _P)
    _map_name = _fn("bpf_map__name", C.c_char_p, _P)
    _map_fd = _fn("bpf_map__fd", C.c_int, _P)
    _map_init = _fn("bpf_map__initial_value", _P, _P, C.POINTER(C.c_size_t))
    _map_reuse_fd = _fn("bpf_map__reuse_fd", C.c_int, _P, C.c_int)
    _map_set_autocreate = _fn("bpf_map__set_autocreate", C.c_int, _P, C.c_bool)
    _map_key_size = _fn("bpf_map__key_size", C.c_uint32, _P)
    _map_value_size = _fn("bpf_map__value_size", C.c_uint32, _P)
    _map_pin = _fn("bpf_map__pin", C.c_int, _P, C.c_char_p)
    _attach_struct_ops = _fn("bpf_map__attach_struct_ops", _P, _P)
    _map_type = _fn("bpf_map__type", C.c_int, _P)
    _map_flags = _fn("bpf_map__map_flags", C.c_uint32, _P)
    _map_set_flags = _fn("bpf_map__set_map_flags", C.c_int, _P, C.c_uint32)
    _link_create = _fn("bpf_link_create", C.c_int, C.c_int, C.c_int, C.c_int, _P)
    _attach_cgroup = _fn("bpf_program__attach_cgroup", _P, _P, C.c_int)
    _link_destroy = _fn("bpf_link__destroy", C.c_int, _P)
    _link_fd = _fn("bpf_link__fd", C.c_int, _P)
    _btf_vmlinux = _fn("btf__load_vmlinux_btf", _P)
    _btf_find = _fn("btf__find_by_name_kind", C.c_int, _P, C.c_char_p, C.c_uint32)
    _btf_size = _fn("btf__resolve_size", C.c_int64, _P, C.c_uint32)
    _btf_free = _fn("btf__free", None, _P)
    _btf_new_empty = _fn("btf__new_empty", _P)
    _btf_add_int = _fn("btf__add_int", C.c_int, _P, C.c_char_p, C.c_size_t, C.c_int)
    _btf_load = _fn("btf__load_into_kernel", C.c_int, _P)
    _btf_fd = _fn("btf__fd", C.c_int, _P)
    _map_create = _fn("bpf_map_create", C.c_int, C.c_int, C.c_char_p, C.c_uint32,
                      C.c_uint32, C.c_uint32, _P)
    _lookup = _fn("bpf_map_lookup_elem", C.c_int, C.c_int, _P, _P)
    _update = _fn("bpf_map_update_elem", C.c_int, C.c_int, _P, _P, C.c_uint64)
    _delete = _fn("bpf_map_delete_elem", C.c_int, C.c_int, _P)
    _next_key = _fn("bpf_map_get_next_key", C.c_int, C.c_int, _P, _P)
    _obj_get = _fn("bpf_obj_get", C.c_int, C.c_char_p)
    _obj_info = _fn("bpf_obj_get_info_by_fd", C.c_int, C.c_int, _P, C.POINTER(C.c_uint32))
    RB_CB = C.CFUNCTYPE(C.c_int, _P, _P, C.c_size_t)
    _rb_new = _fn("ring_buffer__new", _P, C.c_int, RB_CB, _P, _P)
    _rb_poll = _fn("ring_buffer__poll", C.c_int, _P, C.c_int)
    _rb_free = _fn("ring_buffer__free", None, _P)
    _num_cpus = _fn("libbpf_num_possible_cpus", C.c_int)

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
BPF_MAP_TYPE_STRUCT_OPS = 26
BPF_STRUCT_OPS = 44  # enum bpf_attach_type
BPF_F_LINK = 1 << 13
BTF_KIND_STRUCT = 4


class _MapCreateOpts(C.Structure):
    """struct bpf_map_create_opts up to map_ifindex (libbpf accepts an older, shorter one)."""
    _fields_ = [("sz", C.c_size_t), ("btf_fd", C.c_uint32), ("btf_key_type_id", C.c_uint32),
                ("btf_value_type_id", C.c_uint32), ("btf_vmlinux_value_type_id", C.c_uint32),
                ("inner_map_fd", C.c_uint32), ("map_flags", C.c_uint32),
                ("map_extra", C.c_uint64), ("numa_node", C.c_uint32),
                ("map_ifindex", C.c_uint32)]


_links_probe: bool | None = None


def struct_ops_links() -> bool:
    """Whether this kernel registers struct_ops through a bpf_link (BPF_F_LINK maps, 6.4+).

    Probed, not read from the version: an empty tcp_congestion_ops struct_ops map is made
    without, then with BPF_F_LINK; an older kernel refuses the flag (EINVAL)."""
    global _links_probe
    if _links_probe is not None:
        return _links_probe
    available()
    btf = _btf_vmlinux()
    if not btf:
        raise MissingFeature("kernel BTF (/sys/kernel/btf/vmlinux) not loadable: no "
                             "struct_ops", "a kernel with CONFIG_DEBUG_INFO_BTF=y")
    try:
        tid = _btf_find(btf, b"bpf_struct_ops_tcp_congestion_ops", BTF_KIND_STRUCT)
        size = _btf_size(btf, tid) if tid > 0 else -1
    finally:
        _btf_free(btf)
    if tid <= 0 or size <= 0:
        raise MissingFeature("kernel lacks struct_ops congestion control (no "
                             "bpf_struct_ops_tcp_congestion_ops in BTF)",
                             "a kernel with CONFIG_BPF_JIT and CONFIG_BPF_SYSCALL (>= 5.6)")

    # the kernel wants a BTF object with every struct_ops map (a program's own): a minimal one
    own = _btf_new_empty()
    if not own:
        raise _err("btf__new_empty")
    try:
        if _btf_add_int(own, b"int", 4, 1) < 0 or _btf_load(own) != 0:
            raise _err("loading a BTF object")

        def create(flags: int) -> int:
            opts = _MapCreateOpts(sz=C.sizeof(_MapCreateOpts), btf_fd=_btf_fd(own),
                                  btf_vmlinux_value_type_id=tid, map_flags=flags)
            fd = _map_create(BPF_MAP_TYPE_STRUCT_OPS, b"tb_probe", 4, size, 1, C.byref(opts))
            err = C.get_errno()
            if fd >= 0:
                os.close(fd)
            return 0 if fd >= 0 else err
        plain = create(0)
        if plain:
            raise RunError(f"creating a struct_ops map failed: {os.strerror(plain)}")
        _links_probe = create(BPF_F_LINK) == 0
    finally:
        _btf_free(own)
    return _links_probe


def available() -> None:
    if _lib is None:
        raise MissingFeature(f"libbpf.so.1 not loadable ({_load_error})", "apt-get install libbpf1")


def num_possible_cpus() -> int:
    available()
    return _num_cpus()


def _err(what: str) -> RunError:
    e = C.get_errno()
    return RunError(f"{what}: {os.strerror(e) if e else 'failed'}")


class _StderrCapture:
    """libbpf prints the verifier log to fd 2: keep it for the error message."""

    def __enter__(self):
        self._tmp = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._tmp.fileno(), 2)
        return self

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._tmp.seek(0)
        self.text = self._tmp.read().decode(errors="replace")
        self._tmp.close()


class Map:
    """A loaded map (by fd). Keys and values are bytes of the map's declared sizes.

    Per-CPU maps: values are `value_size` rounded up to 8, times the possible CPUs.
    """

    def __init__(self, fd: int, key_size: int, value_size: int, name: str = "", percpu=False):
        self.fd, self.key_size, self.value_size, self.name = fd, key_size, value_size, name
        self.percpu = percpu

    @property
    def _vsize(self) -> int:
        if self.percpu:
            return ((self.value_size + 7) // 8 * 8) * num_possible_cpus()
        return self.value_size

    def lookup(self, key: bytes) -> bytes | None:
        v = C.create_string_buffer(self._vsize)
        if _lookup(self.fd, C.c_char_p(bytes(key)), v) != 0:
            if C.get_errno() == errno.ENOENT:
                return None
            raise _err(f"lookup in map {self.name}")
        return v.raw

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        if _update(self.fd, C.c_char_p(bytes(key)), C.c_char_p(bytes(value)), flags) != 0:
            raise _err(f"update of map {self.name}")

    def delete(self, key: bytes) -> bool:
        if _delete(self.fd, C.c_char_p(bytes(key))) != 0:
            if C.get_errno() == errno.ENOENT:
                return False
            raise _err(f"delete from map {self.name}")
        return True

    def keys(self) -> Iterator[bytes]:
        prev = None
        nxt = C.create_string_buffer(self.key_size)
        while _next_key(self.fd, prev, nxt) == 0:
            k = nxt.raw
            yield k
            prev = C.c_char_p(k)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for k in list(self.keys()):
            v = self.lookup(k)
            if v is not None:
                yield k, v


class Link:
    """An attachment held by this process; destroy() detaches it.

    `fd`: a kernel bpf_link of our own (struct_ops in link mode with a libbpf that only
    writes the map) closed on destroy. `dies_with_process`: the kernel also ends the
    attachment when the process dies (every link but a struct_ops map without BPF_F_LINK).
    """

    def __init__(self, ptr: int, what: str, fd: int = -1, dies_with_process: bool = True):
        self._ptr, self.what, self.fd = ptr, what, fd
        self.dies_with_process = dies_with_process

    def destroy(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._ptr:
            _link_destroy(self._ptr)
            self._ptr = None


class RingBuffer:
    """Calls `callback(bytes)` for each event; poll() from the reading thread."""

    def __init__(self, m: Map, callback: Callable[[bytes], None]):
        def _cb(_ctx, data, size):
            callback(C.string_at(data, size))
            return 0
        self._cb = RB_CB(_cb)  # keep a reference: libbpf calls it later
        self._rb = _rb_new(m.fd, self._cb, None, None)
        if not self._rb:
            raise _err("ring_buffer__new")

    def poll(self, timeout_ms: int = 100) -> int:
        n = _rb_poll(self._rb, timeout_ms)
        if n < 0 and -n != errno.EINTR:
            raise RunError(f"ring_buffer__poll: {os.strerror(-n)}")
        return max(n, 0)

    def free(self) -> None:
        if self._rb:
            _rb_free(self._rb)
            self._rb = None


def _elf_rodata_symbols(path: Path) -> dict[str, tuple[int, int]]:
    """name → (offset, size) of every `const volatile` global in .rodata."""
    from elftools.elf.elffile import ELFFile  # pyelftools

    out: dict[str, tuple[int, int]] = {}
    with open(path, "rb") as f:
        elf = ELFFile(f)
        idx = next((i for i, s in enumerate(elf.iter_sections()) if s.name == ".rodata"), None)
        symtab = elf.get_section_by_name(".symtab")
        if idx is None or symtab is None:
            return out
        for sym in symtab.iter_symbols():
            if sym["st_shndx"] == idx and sym["st_info"]["type"] == "STT_OBJECT":
                out[sym.name] = (sym["st_value"], sym["st_size"])
    return out


class BpfObject:
    """One BPF object file: open() → set_rodata() → load() → programs/maps → close()."""

    def __init__(self, path: Path | str):
        available()
        self.path = Path(path)
        self._obj = _open_file(str(self.path).encode(), None)
        if not self._obj:
            raise _err(f"opening {self.path.name}")
        self._rodata_syms = _elf_rodata_symbols(self.path)
        self.loaded = False
        self._links: list[Link] = []

    # -- before load ---------------------------------------------------------
    def _maps(self) -> Iterator[tuple[str, int]]:
        m = None
        while True:
            m = _next_map(self._obj, m)
            if not m:
                return
            yield _map_name(m).decode(), m

    def _map_ptr(self, name: str) -> int:
        for n, m in self._maps():
            if n == name or (name.startswith(".") and n.endswith(name)):
                return m
        raise RunError(f"{self.path.name}: no map {name!r}")

    def set_rodata(self, **values: int | bytes) -> None:
        """Set `const volatile` globals before load (integers little-endian, by size)."""
        if self.loaded:
            raise RunError("rodata must be set before load")
        size = C.c_size_t()
        base = _map_init(self._map_ptr(".rodata"), C.byref(size))
        if not base:
            raise RunError(f"{self.path.name}: no .rodata")
        for name, value in values.items():
            if name not in self._rodata_syms:
                raise RunError(f"{self.path.name}: no const volatile {name!r}; "
                               f"has {sorted(self._rodata_syms)}")
            off, sz = self._rodata_syms[name]
            raw = value if isinstance(value, bytes) else int(value).to_bytes(
                sz, "little", signed=int(value) < 0)
            if len(raw) != sz:
                raise RunError(f"{name}: {len(raw)} bytes given, {sz} expected")
            C.memmove(base + off, raw, sz)

    def reuse_map(self, name: str, fd: int) -> None:
        """Share an already loaded map (e.g. a pinned one) instead of creating a new one."""
        if _map_reuse_fd(self._map_ptr(name), fd) != 0:
            raise _err(f"reuse of map {name}")

    def set_autoload(self, prog: str, on: bool) -> None:
        _prog_set_autoload(self._prog_ptr(prog), on)

    def load(self) -> "BpfObject":
        # libbpf 1.1 predates `.struct_ops.link`: create struct_ops maps in link mode
        # ourselves where the kernel has it, so registration lives in a link fd that dies
        # with this process (a plain struct_ops map stays registered after a crash).
        has_struct_ops = any(_map_type(m) == BPF_MAP_TYPE_STRUCT_OPS for _n, m in self._maps())
        if has_struct_ops and struct_ops_links():
            for _name, m in self._maps():
                if _map_type(m) == BPF_MAP_TYPE_STRUCT_OPS:
                    _map_set_flags(m, _map_flags(m) | BPF_F_LINK)
        with _StderrCapture() as cap:
            rc = _obj_load(self._obj)
        if rc != 0:
            log = "\n".join(cap.text.strip().splitlines()[-25:])
            raise RunError(f"loading {self.path.name} failed ({os.strerror(-rc)}):\n{log}")
        self.loaded = True
        return self

    # -- after load ----------------------------------------------------------
    def _prog_ptr(self, name: str) -> int:
        p = _find_prog(self._obj, name.encode())
        if not p:
            raise RunError(f"{self.path.name}: no program {name!r}")
        return p

    def programs(self) -> list[str]:
        names, p = [], None
        while True:
            p = _next_prog(self._obj, p)
            if not p:
                return names
            names.append(_prog_name(p).decode())

    def prog_fd(self, name: str) -> int:
        return _prog_fd(self._prog_ptr(name))

    def pin_program(self, name: str, path: Path) -> Path:
        """Pin so tc/ip in a node's namespace can attach it by path (bpffs is shared)."""
        if _prog_pin(self._prog_ptr(name), str(path).encode()) != 0:
            raise _err(f"pinning {name} at {path}")
        return path

    def map(self, name: str) -> Map:
        m = self._map_ptr(name)
        fd = _map_fd(m)
        if fd < 0:
            raise RunError(f"map {name} has no fd (not loaded?)")
        return Map(fd, _map_key_size(m), _map_value_size(m), name)

    def pin_map(self, name: str, path: Path) -> Path:
        if _map_pin(self._map_ptr(name), str(path).encode()) != 0:
            raise _err(f"pinning map {name} at {path}")
        return path

    def attach_struct_ops(self, map_name: str) -> Link:
        """Register a struct_ops map (e.g. a tcp_congestion_ops) until the link is destroyed.

        A BPF_F_LINK map is registered by a kernel bpf_link: libbpf >= 1.2 makes it here,
        libbpf 1.1 only writes the programs into the map's value (its link's fd is the
        map's) and the link is made here. Without BPF_F_LINK the map update registers it
        and deleting the element (on destroy) unregisters it."""
        m = self._map_ptr(map_name)
        ptr = _attach_struct_ops(m)
        if not ptr:
            raise _err(f"registering struct_ops {map_name}")
        fd = -1
        link_mode = bool(_map_flags(m) & BPF_F_LINK)
        if link_mode and _link_fd(ptr) == _map_fd(m):
            fd = _link_create(_map_fd(m), 0, BPF_STRUCT_OPS, None)
            if fd < 0:
                e = _err(f"registering struct_ops {map_name}")
                _link_destroy(ptr)
                raise e
        link = Link(ptr, f"struct_ops {map_name}", fd, dies_with_process=link_mode)
        self._links.append(link)
        return link

    def attach_cgroup(self, prog: str, cgroup: Path) -> Link:
        fd = os.open(str(cgroup), os.O_RDONLY | os.O_DIRECTORY)
        try:
            ptr = _attach_cgroup(self._prog_ptr(prog), fd)
        finally:
            os.close(fd)
        if not ptr:
            raise _err(f"attaching {prog} to cgroup {cgroup}")
        link = Link(ptr, f"{prog} on {cgroup}")
        self._links.append(link)
        return link

    def close(self) -> None:
        """Detach every link made through this object, then free it (unpinned programs go)."""
        for link in reversed(self._links):
            link.destroy()
        self._links.clear()
        if self._obj:
            _obj_close(self._obj)
            self._obj = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def map_id(fd: int) -> int:
    """The kernel's id of the map behind `fd` (struct bpf_map_info: type, id, …)."""
    buf = C.create_string_buffer(96)   # ≥ sizeof(struct bpf_map_info) of this kernel's era
    n = C.c_uint32(len(buf))
    if _obj_info(fd, buf, C.byref(n)) != 0:
        raise _err("bpf_obj_get_info_by_fd")
    return int.from_bytes(buf.raw[4:8], "little")


def unregister_pinned_struct_ops(path: Path) -> bool:
    """Unregister the struct_ops map pinned at `path` (a registration without a link, left
    by a process that died); True if it was registered."""
    fd = _obj_get(str(path).encode())
    if fd < 0:
        raise _err(f"opening pinned map {path}")
    try:
        return Map(fd, 4, 0, path.name).delete(b"\0\0\0\0")
    finally:
        os.close(fd)


def pinned_map(path: Path, key_size: int, value_size: int, percpu=False) -> Map:
    fd = _obj_get(str(path).encode())
    if fd < 0:
        raise _err(f"opening pinned map {path}")
    return Map(fd, key_size, value_size, path.name, percpu)
