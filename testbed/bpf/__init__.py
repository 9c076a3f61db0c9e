"""Python side of the BPF programs: build (clang/libbpf), load, attach, read maps."""
