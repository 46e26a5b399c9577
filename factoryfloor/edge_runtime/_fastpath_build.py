"""cffi build script of the compiled edge hot path (``_fastpath.c``), run by ``setup.py``.

API mode, out of line: the module ``factoryfloor.edge_runtime._fastpath`` is compiled once at
install time (``make test`` and ``make demo`` install in editable mode, which builds it). Where no
C compiler exists the build is skipped with one warning and ``fastpath`` serves its pure-Python
reference instead.
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

CDEF = """
int ffep_gate(const char *frame, size_t len, const char *heads, int n_heads, size_t frame_bytes,
              int field, uint64_t lo, uint64_t hi, uint64_t *tail, float *out);
void ffep_encode(char *dst, const char *head, uint64_t seq, uint64_t ack_seq,
                 uint64_t t_send_ns, uint64_t t_echo_ns, const float *values, size_t n);
int ffep_limit(const float *action, const float *low, const float *high, const float *last,
               const float *max_change, size_t n, const int32_t *groups, const double *bounds,
               size_t n_groups, float *out);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "factoryfloor.edge_runtime._fastpath",
    (Path(__file__).parent / "_fastpath.c").read_text(),
    # exact IEEE arithmetic, the same as the reference's: no fused multiply-add, no fast-math
    extra_compile_args=["-O2", "-ffp-contract=off", "-fno-fast-math"],
    libraries=["m"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
