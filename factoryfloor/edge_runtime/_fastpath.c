/* The edge hot path, compiled: the FFEP/2 stream gate and encoder, and the safety layer's
 * command limits. Built at install time through cffi (factoryfloor/edge_runtime/_fastpath_build.py);
 * fastpath.py holds the pure-Python reference of each function, and the tests hold both to the
 * same results on the golden frames and on fuzzed inputs. Nothing here allocates or keeps state.
 *
 * Frames are little-endian (docs/protocol.md); this file is built only on little-endian hosts.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the compiled FFEP path assumes a little-endian host; the pure-Python path serves others"
#endif

#define FFEP_HEADER 48
#define FFEP_FIXED_HEAD 16
#define FFEP_NOT_STREAM -1
#define FFEP_STALE -2
#define FFEP_NONFINITE -3

static int finite_bits(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return (bits & 0x7f800000u) != 0x7f800000u;
}

/* A frame of one session's OBSERVATION or ACTION stream, checked and unpacked.
 *
 * heads: n_heads fixed 16-byte header starts (magic .. session id); head i carries flags i.
 * field: which of the four header u64 (seq, ack_seq, t_send_ns, t_echo_ns) must lie in (lo, hi].
 * tail: receives those four u64; out: receives the payload's (frame_bytes - 48) / 4 floats.
 * Returns the flags, or FFEP_NOT_STREAM (size or head), FFEP_STALE (field outside (lo, hi]),
 * FFEP_NONFINITE (a NaN or Inf value; out holds the values all the same).
 */
int ffep_gate(const char *frame, size_t len, const char *heads, int n_heads, size_t frame_bytes,
              int field, uint64_t lo, uint64_t hi, uint64_t *tail, float *out) {
    int flags = -1;
    if (len != frame_bytes || len < FFEP_HEADER) return FFEP_NOT_STREAM;
    for (int i = 0; i < n_heads; i++) {
        if (memcmp(frame, heads + FFEP_FIXED_HEAD * i, FFEP_FIXED_HEAD) == 0) {
            flags = i;
            break;
        }
    }
    if (flags < 0) return FFEP_NOT_STREAM;
    memcpy(tail, frame + FFEP_FIXED_HEAD, 4 * sizeof(uint64_t));
    if (tail[field] <= lo || tail[field] > hi) return FFEP_STALE;
    size_t n = (len - FFEP_HEADER) / 4;
    memcpy(out, frame + FFEP_HEADER, 4 * n);
    for (size_t i = 0; i < n; i++) {
        if (!finite_bits(out[i])) return FFEP_NONFINITE;
    }
    return flags;
}

/* One stream frame into dst (48 + 4 n bytes): the 16-byte head, the four u64, the floats. */
void ffep_encode(char *dst, const char *head, uint64_t seq, uint64_t ack_seq, uint64_t t_send_ns,
                 uint64_t t_echo_ns, const float *values, size_t n) {
    uint64_t tail[4] = {seq, ack_seq, t_send_ns, t_echo_ns};
    memcpy(dst, head, FFEP_FIXED_HEAD);
    memcpy(dst + FFEP_FIXED_HEAD, tail, sizeof tail);
    memcpy(dst + FFEP_HEADER, values, 4 * n);
}

/* The safety layer's command for a fresh action (safety.SafetyLayer; fastpath.limit_reference).
 *
 * Each value is clipped to [low, high], then to last +- max_change (float32 arithmetic); then
 * each group's Euclidean norm (summed in double, in index order) is scaled down to its bound.
 * groups: for each of n_groups groups, its size and then its indices. Writes out[0..n).
 * Returns 1 when the command differs from the action, 0 when not, -1 for a non-finite action
 * (out untouched).
 */
int ffep_limit(const float *action, const float *low, const float *high, const float *last,
               const float *max_change, size_t n, const int32_t *groups, const double *bounds,
               size_t n_groups, float *out) {
    for (size_t i = 0; i < n; i++) {
        if (!finite_bits(action[i])) return -1;
    }
    for (size_t i = 0; i < n; i++) {
        float value = action[i] < low[i] ? low[i] : action[i];
        value = value > high[i] ? high[i] : value;
        float below = last[i] - max_change[i];
        float above = last[i] + max_change[i];
        value = value < below ? below : value;
        out[i] = value > above ? above : value;
    }
    const int32_t *group = groups;
    for (size_t g = 0; g < n_groups; g++) {
        int32_t size = group[0];
        const int32_t *index = group + 1;
        double sum = 0.0;
        for (int32_t j = 0; j < size; j++) {
            double x = (double)out[index[j]];
            sum += x * x;
        }
        double norm = sqrt(sum);
        if (norm > bounds[g]) {
            float scale = (float)(bounds[g] / norm);
            for (int32_t j = 0; j < size; j++) out[index[j]] = out[index[j]] * scale;
        }
        group = index + size;
    }
    for (size_t i = 0; i < n; i++) {
        if (out[i] != action[i]) return 1;
    }
    return 0;
}
